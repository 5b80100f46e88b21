/*
 * Unit tests of cli/prom.c: the text exposition writer (families, samples, escaping, number
 * formats), histograms summed over several owner threads, the process_* metrics, and Debian's
 * `promtool check metrics` over output holding every metric type (skipped, saying so, when
 * promtool is not installed; it comes with the prometheus package).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "prom.h"

/* ---- helpers ----------------------------------------------------------------------------- */

static int has(const prom_buf_t *b, const char *needle)
{
  return b->data && strstr(b->data, needle) != NULL;
}

/* Runs `promtool check metrics` with text on stdin; returns its exit status, -2 if absent. */
static int promtool_check(const char *text, char *out, size_t outlen)
{
  if (system("command -v promtool >/dev/null 2>&1") != 0)
    return -2;
  char path[] = "/tmp/mcp-prom-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  char cmd[256];
  snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t n = fread(out, 1, outlen - 1, p);
  out[n] = '\0';
  int status = pclose(p);
  unlink(path);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Writes one family of every type, labels that need escaping, and the process metrics. */
static void render_everything(prom_buf_t *b)
{
  prom_label_t l_ok[] = {{"listener", "127.0.0.1:443"}, {"outcome", "ok"}};
  prom_label_t l_odd[] = {{"listener", "a\\b\"c\nd"}, {"outcome", "unrouted"}};
  prom_family(b, "mcproxy_connections_total", PROM_COUNTER, "Connections by outcome.");
  prom_sample_u64(b, "mcproxy_connections_total", l_ok, 2, 12);
  prom_sample_u64(b, "mcproxy_connections_total", l_odd, 2, 3);

  prom_label_t l_listener[] = {{"listener", "[::1]:8443"}};
  prom_family(b, "mcproxy_connections_active", PROM_GAUGE, "Open connections, with a \\ and\n.");
  prom_sample(b, "mcproxy_connections_active", l_listener, 1, 7);

  prom_family(b, "mcproxy_build_info", PROM_GAUGE, "Build information.");
  prom_label_t l_version[] = {{"version", "0.1.0"}};
  prom_sample(b, "mcproxy_build_info", l_version, 1, 1);

  prom_hist_t h;
  prom_hist_init(&h, &prom_buckets_latency);
  prom_hist_observe(&h, 300000);      /* 0.3 ms */
  prom_hist_observe(&h, 20000000);    /* 20 ms */
  prom_hist_observe(&h, 60000000000); /* 60 s: +Inf */
  prom_hist_snapshot_t s;
  prom_hist_snapshot_init(&s, &prom_buckets_latency);
  prom_hist_snapshot_add(&s, &h);
  prom_family(b, "mcproxy_handshake_seconds", PROM_HISTOGRAM, "Accept to route decided.");
  prom_hist_render(b, "mcproxy_handshake_seconds", l_listener, 1, &s);
  prom_family(b, "mcproxy_connection_duration_seconds", PROM_HISTOGRAM, "Connection lifetime.");
  prom_hist_snapshot_init(&s, &prom_buckets_duration);
  prom_hist_render(b, "mcproxy_connection_duration_seconds", NULL, 0, &s);

  prom_family(b, "mcproxy_things", PROM_UNTYPED, "An untyped sample.");
  prom_sample(b, "mcproxy_things", NULL, 0, NAN);
  prom_process_metrics(b);
}

/* ---- writer ------------------------------------------------------------------------------ */

static void family_writes_help_and_type(void **state)
{
  prom_buf_t b;
  prom_buf_init(&b);
  prom_family(&b, "x_total", PROM_COUNTER, "Line one\nback\\slash \"quoted\"");
  assert_string_equal(b.data, "# HELP x_total Line one\\nback\\\\slash \"quoted\"\n"
                              "# TYPE x_total counter\n");
  prom_buf_free(&b);
}

static void label_values_are_escaped(void **state)
{
  prom_buf_t b;
  prom_buf_init(&b);
  prom_label_t l[] = {{"a", "x\\y\"z\nw"}, {"b", "plain"}};
  prom_sample_u64(&b, "m", l, 2, 5);
  assert_string_equal(b.data, "m{a=\"x\\\\y\\\"z\\nw\",b=\"plain\"} 5\n");
  prom_buf_free(&b);
}

static void numbers_use_prometheus_spelling(void **state)
{
  prom_buf_t b;
  prom_buf_init(&b);
  prom_sample(&b, "a", NULL, 0, 0.005);
  prom_sample(&b, "b", NULL, 0, INFINITY);
  prom_sample(&b, "c", NULL, 0, -INFINITY);
  prom_sample(&b, "d", NULL, 0, NAN);
  prom_sample(&b, "e", NULL, 0, 0.1 + 0.2);
  prom_sample_u64(&b, "f", NULL, 0, UINT64_MAX);
  assert_string_equal(b.data, "a 0.005\nb +Inf\nc -Inf\nd NaN\ne 0.30000000000000004\n"
                              "f 18446744073709551615\n");
  prom_buf_free(&b);
}

static void buffer_grows_past_first_allocation(void **state)
{
  prom_buf_t b;
  prom_buf_init(&b);
  for (int i = 0; i < 10000; i++)
    prom_sample_u64(&b, "mcproxy_some_long_metric_name_total", NULL, 0, (uint64_t)i);
  assert_false(b.failed);
  assert_true(b.len > 100000);
  assert_true(has(&b, "mcproxy_some_long_metric_name_total 9999\n"));
  size_t len;
  char *text = prom_buf_take(&b, &len);
  assert_non_null(text);
  assert_int_equal(strlen(text), len);
  assert_null(b.data);
  free(text);
}

static void failed_buffer_is_never_handed_out(void **state)
{
  prom_buf_t b;
  prom_buf_init(&b);
  prom_printf(&b, "partial\n");
  b.failed = 1; /* as after a failed realloc */
  prom_printf(&b, "more\n");
  assert_int_equal(b.len, strlen("partial\n"));
  size_t len = 99;
  assert_null(prom_buf_take(&b, &len));
  assert_int_equal(len, 0);
}

/* ---- histograms -------------------------------------------------------------------------- */

static void histogram_renders_cumulative_buckets(void **state)
{
  prom_hist_t h;
  prom_hist_init(&h, &prom_buckets_latency);
  prom_hist_observe(&h, 500000);         /* exactly the first bound: le is inclusive */
  prom_hist_observe(&h, 500001);         /* just above: second bucket */
  prom_hist_observe(&h, 2000000000);     /* 2 s */
  prom_hist_observe(&h, 20000000000ULL); /* 20 s, past the last bound */
  prom_hist_snapshot_t s;
  prom_hist_snapshot_init(&s, &prom_buckets_latency);
  prom_hist_snapshot_add(&s, &h);

  prom_buf_t b;
  prom_buf_init(&b);
  prom_label_t l[] = {{"listener", "x"}};
  prom_hist_render(&b, "hs", l, 1, &s);
  assert_true(has(&b, "hs_bucket{listener=\"x\",le=\"0.0005\"} 1\n"));
  assert_true(has(&b, "hs_bucket{listener=\"x\",le=\"0.001\"} 2\n"));
  assert_true(has(&b, "hs_bucket{listener=\"x\",le=\"1\"} 2\n"));
  assert_true(has(&b, "hs_bucket{listener=\"x\",le=\"2.5\"} 3\n"));
  assert_true(has(&b, "hs_bucket{listener=\"x\",le=\"10\"} 3\n"));
  assert_true(has(&b, "hs_bucket{listener=\"x\",le=\"+Inf\"} 4\n"));
  assert_true(has(&b, "hs_sum{listener=\"x\"} 22.001000001\n"));
  assert_true(has(&b, "hs_count{listener=\"x\"} 4\n"));
  prom_buf_free(&b);
}

static void histogram_snapshot_refuses_other_buckets(void **state)
{
  prom_hist_t h;
  prom_hist_init(&h, &prom_buckets_duration);
  prom_hist_observe(&h, 1);
  prom_hist_snapshot_t s;
  prom_hist_snapshot_init(&s, &prom_buckets_latency);
  prom_hist_snapshot_add(&s, &h);
  assert_int_equal(s.count[0], 0);
}

#define THREADS 4
#define PER_THREAD 200000

static void *observer(void *arg)
{
  prom_hist_t *h = arg;
  for (uint64_t i = 0; i < PER_THREAD; i++)
    prom_hist_observe(h, (i % 4) * 1000000000ULL); /* 0, 1, 2, 3 s */
  return NULL;
}

/* Four owner threads write while the main thread scrapes; every scrape is consistent
 * (count never above the total) and the final sum over threads is exact. */
static void histograms_of_several_threads_sum_exactly(void **state)
{
  static prom_hist_t h[THREADS];
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++) {
    prom_hist_init(&h[i], &prom_buckets_latency);
    assert_int_equal(pthread_create(&t[i], NULL, observer, &h[i]), 0);
  }
  for (int k = 0; k < 100; k++) {
    prom_hist_snapshot_t s;
    prom_hist_snapshot_init(&s, &prom_buckets_latency);
    for (int i = 0; i < THREADS; i++)
      prom_hist_snapshot_add(&s, &h[i]);
    uint64_t total = 0;
    for (size_t i = 0; i <= s.buckets->n; i++)
      total += s.count[i];
    assert_true(total <= (uint64_t)THREADS * PER_THREAD);
  }
  for (int i = 0; i < THREADS; i++)
    pthread_join(t[i], NULL);

  prom_hist_snapshot_t s;
  prom_hist_snapshot_init(&s, &prom_buckets_latency);
  for (int i = 0; i < THREADS; i++)
    prom_hist_snapshot_add(&s, &h[i]);
  /* 0 s falls in the first bucket, 1 s in le=1 (index 10), 2 s in le=2.5, 3 s in le=5. */
  assert_int_equal(s.count[0], THREADS * PER_THREAD / 4);
  assert_int_equal(s.count[10], THREADS * PER_THREAD / 4);
  assert_int_equal(s.count[11], THREADS * PER_THREAD / 4);
  assert_int_equal(s.count[12], THREADS * PER_THREAD / 4);
  assert_int_equal(s.sum_ns, (uint64_t)THREADS * (PER_THREAD / 4) * 6 * 1000000000ULL);
}

static void counter_adds_and_reads(void **state)
{
  prom_counter_t c = 0;
  prom_counter_add(&c, 5);
  prom_counter_add(&c, 7);
  assert_int_equal(prom_counter_read(&c), 12);
}

/* ---- process metrics and promtool -------------------------------------------------------- */

static void process_metrics_are_plausible(void **state)
{
  prom_buf_t b;
  prom_buf_init(&b);
  prom_process_metrics(&b);
  assert_non_null(b.data);
  double fds = -1, rss = -1, start = -1, cpu = -1, maxfds = -1;
  const char *p;
  assert_non_null(p = strstr(b.data, "\nprocess_open_fds "));
  fds = strtod(p + strlen("\nprocess_open_fds "), NULL);
  assert_non_null(p = strstr(b.data, "\nprocess_resident_memory_bytes "));
  rss = strtod(p + strlen("\nprocess_resident_memory_bytes "), NULL);
  assert_non_null(p = strstr(b.data, "\nprocess_start_time_seconds "));
  start = strtod(p + strlen("\nprocess_start_time_seconds "), NULL);
  assert_non_null(p = strstr(b.data, "\nprocess_cpu_seconds_total "));
  cpu = strtod(p + strlen("\nprocess_cpu_seconds_total "), NULL);
  assert_non_null(p = strstr(b.data, "\nprocess_max_fds "));
  maxfds = strtod(p + strlen("\nprocess_max_fds "), NULL);
  assert_true(fds >= 3 && fds < maxfds);
  assert_true(rss > 100000);
  time_t now = time(NULL);
  assert_true(start > (double)now - 3600 && start <= (double)now + 1);
  assert_true(cpu >= 0 && cpu < 3600);
  assert_true(has(&b, "# TYPE process_cpu_seconds_total counter\n"));
  prom_buf_free(&b);
}

static void promtool_accepts_every_metric_type(void **state)
{
  prom_buf_t b;
  prom_buf_init(&b);
  render_everything(&b);
  assert_false(b.failed);
  char out[4096];
  int rc = promtool_check(b.data, out, sizeof(out));
  if (rc == -2) {
    print_message("SKIP: promtool not installed (Debian package prometheus)\n");
    prom_buf_free(&b);
    skip();
  }
  if (rc != 0 || out[0])
    print_message("promtool said (exit %d):\n%s\n--- input:\n%s", rc, out, b.data);
  assert_int_equal(rc, 0);
  assert_string_equal(out, "");
  prom_buf_free(&b);
}

/* The check above must be able to fail: promtool rejects the raw newline in a label value
 * that prom_escape_label turns into \n. */
static void promtool_rejects_unescaped_label(void **state)
{
  char out[4096];
  int rc = promtool_check("# HELP g x\n# TYPE g gauge\ng{a=\"x\ny\"} 1\n", out, sizeof(out));
  if (rc == -2)
    skip();
  assert_int_not_equal(rc, 0);
  assert_non_null(strstr(out, "new-line"));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(family_writes_help_and_type),
      cmocka_unit_test(label_values_are_escaped),
      cmocka_unit_test(numbers_use_prometheus_spelling),
      cmocka_unit_test(buffer_grows_past_first_allocation),
      cmocka_unit_test(failed_buffer_is_never_handed_out),
      cmocka_unit_test(histogram_renders_cumulative_buckets),
      cmocka_unit_test(histogram_snapshot_refuses_other_buckets),
      cmocka_unit_test(histograms_of_several_threads_sum_exactly),
      cmocka_unit_test(counter_adds_and_reads),
      cmocka_unit_test(process_metrics_are_plausible),
      cmocka_unit_test(promtool_accepts_every_metric_type),
      cmocka_unit_test(promtool_rejects_unescaped_label),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
