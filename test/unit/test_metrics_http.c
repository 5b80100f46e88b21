/*
 * Unit tests of cli/metrics_http.c: a real libmicrohttpd endpoint on a loopback port chosen by
 * the kernel, asked by real curl (status codes, headers, body, HEAD, 404, 405 with Allow,
 * /healthz 200/503) and by raw sockets (a slowloris of 200 half-open connections must neither
 * stop a normal GET from another address being answered within a bound nor hold more
 * connections than the limit, and the idle ones are closed after the timeout). Also the errors
 * for an address that does not parse and a port in use, and IPv6 on [::1].
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "metrics_http.h"
#include "prom.h"

#define BODY "# HELP t_total A test counter.\n# TYPE t_total counter\nt_total 42\n"

static atomic_int renders;

static char *render_fixed(void *data, size_t *len)
{
  atomic_fetch_add(&renders, 1);
  prom_buf_t b;
  prom_buf_init(&b);
  prom_printf(&b, "%s", BODY);
  return prom_buf_take(&b, len);
}

static char *render_fail(void *data, size_t *len)
{
  return NULL;
}

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs curl with args (a URL and options); returns the whole output (headers with -i). */
static char *curl(const char *args)
{
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "curl -sS -m 5 %s 2>&1", args);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t cap = 65536, n = 0;
  char *out = malloc(cap);
  assert_non_null(out);
  size_t r;
  while (n < cap - 1 && (r = fread(out + n, 1, cap - 1 - n, p)) > 0)
    n += r;
  out[n] = '\0';
  pclose(p);
  return out;
}

/* The status code of curl -i output (first line "HTTP/1.1 NNN ..."), or -1. */
static int status_of(const char *out)
{
  int code = -1;
  if (sscanf(out, "HTTP/%*s %d", &code) != 1)
    return -1;
  return code;
}

static const char *body_of(const char *out)
{
  const char *p = strstr(out, "\r\n\r\n");
  return p ? p + 4 : "";
}

static metrics_http_t *start(metrics_http_render_fn render, const metrics_http_options_t *o)
{
  metrics_http_t *h = NULL;
  char err[256] = "";
  int rc = metrics_http_start(&h, "127.0.0.1:0", render, NULL, o, err, sizeof(err));
  if (rc != 0)
    print_message("start: %d %s\n", rc, err);
  assert_int_equal(rc, 0);
  assert_true(metrics_http_port(h) > 0);
  return h;
}

/* ---- requests ---------------------------------------------------------------------------- */

static void metrics_answers_200_with_rendered_body(void **state)
{
  metrics_http_t *h = start(render_fixed, NULL);
  char args[128];
  snprintf(args, sizeof(args), "-i http://127.0.0.1:%d/metrics", metrics_http_port(h));
  int before = atomic_load(&renders);
  char *out = curl(args);
  assert_int_equal(status_of(out), 200);
  assert_non_null(strstr(out, "Content-Type: text/plain; version=0.0.4"));
  assert_string_equal(body_of(out), BODY);
  assert_int_equal(atomic_load(&renders), before + 1);
  free(out);
  metrics_http_stop(h);
}

static void head_answers_without_body(void **state)
{
  metrics_http_t *h = start(render_fixed, NULL);
  char args[128];
  snprintf(args, sizeof(args), "-I http://127.0.0.1:%d/metrics", metrics_http_port(h));
  char *out = curl(args);
  assert_int_equal(status_of(out), 200);
  assert_string_equal(body_of(out), "");
  free(out);
  metrics_http_stop(h);
}

static void healthz_follows_serving_flag(void **state)
{
  metrics_http_t *h = start(render_fixed, NULL);
  char args[128];
  snprintf(args, sizeof(args), "-i http://127.0.0.1:%d/healthz", metrics_http_port(h));

  char *out = curl(args); /* not serving until told */
  assert_int_equal(status_of(out), 503);
  free(out);

  metrics_http_set_serving(h, true);
  out = curl(args);
  assert_int_equal(status_of(out), 200);
  assert_string_equal(body_of(out), "ok\n");
  free(out);

  metrics_http_set_serving(h, false); /* draining */
  out = curl(args);
  assert_int_equal(status_of(out), 503);
  free(out);
  metrics_http_stop(h);
}

static void other_paths_are_404(void **state)
{
  metrics_http_t *h = start(render_fixed, NULL);
  const char *paths[] = {"/", "/metricsx", "/metrics/", "/healthz/x", "/%00", "/../metrics"};
  for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
    char args[160];
    snprintf(args, sizeof(args), "-i --path-as-is 'http://127.0.0.1:%d%s'", metrics_http_port(h),
             paths[i]);
    char *out = curl(args);
    if (status_of(out) != 404)
      print_message("path %s: %s\n", paths[i], out);
    assert_int_equal(status_of(out), 404);
    free(out);
  }
  metrics_http_stop(h);
}

static void other_methods_are_405_with_allow(void **state)
{
  metrics_http_t *h = start(render_fixed, NULL);
  const char *methods[] = {"POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"};
  int before = atomic_load(&renders);
  for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
    char args[160];
    snprintf(args, sizeof(args), "-i -X %s -d x=1 http://127.0.0.1:%d/metrics", methods[i],
             metrics_http_port(h));
    char *out = curl(args);
    assert_int_equal(status_of(out), 405);
    assert_non_null(strstr(out, "Allow: GET, HEAD"));
    free(out);
  }
  assert_int_equal(atomic_load(&renders), before); /* nothing was rendered */
  metrics_http_stop(h);
}

static void render_failure_is_500(void **state)
{
  metrics_http_t *h = start(render_fail, NULL);
  char args[128];
  snprintf(args, sizeof(args), "-i http://127.0.0.1:%d/metrics", metrics_http_port(h));
  char *out = curl(args);
  assert_int_equal(status_of(out), 500);
  free(out);
  metrics_http_stop(h);
}

static void ipv6_loopback_is_served(void **state)
{
  metrics_http_t *h = NULL;
  char err[256];
  int rc = metrics_http_start(&h, "[::1]:0", render_fixed, NULL, NULL, err, sizeof(err));
  if (rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT) {
    print_message("SKIP: no IPv6 loopback here (%s)\n", err);
    skip();
  }
  assert_int_equal(rc, 0);
  char args[128];
  snprintf(args, sizeof(args), "-i -g 'http://[::1]:%d/metrics'", metrics_http_port(h));
  char *out = curl(args);
  assert_int_equal(status_of(out), 200);
  assert_string_equal(body_of(out), BODY);
  free(out);
  metrics_http_stop(h);
}

/* ---- bad input at start ------------------------------------------------------------------ */

static void unparsable_address_is_refused_with_message(void **state)
{
  const char *bad[] = {"",          "localhost:9464", "127.0.0.1", "127.0.0.1:99999",
                       "[::1]9464", "1.2.3.4:port",   "::1:9464"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    metrics_http_t *h = NULL;
    char err[256] = "";
    assert_int_equal(metrics_http_start(&h, bad[i], render_fixed, NULL, NULL, err, sizeof(err)),
                     -EINVAL);
    assert_null(h);
    assert_non_null(strstr(err, "invalid address"));
  }
}

static void port_in_use_is_refused_with_message(void **state)
{
  metrics_http_t *first = start(render_fixed, NULL);
  char addr[64], err[256] = "";
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", metrics_http_port(first));
  metrics_http_t *second = NULL;
  assert_int_equal(metrics_http_start(&second, addr, render_fixed, NULL, NULL, err, sizeof(err)),
                   -EADDRINUSE);
  assert_null(second);
  assert_non_null(strstr(err, addr));
  assert_non_null(strstr(err, "in use"));
  metrics_http_stop(first);
}

/* Start and stop leave no descriptor behind (the listening socket is closed by the stop). */
static void stop_releases_socket(void **state)
{
  int before = dup(0);
  close(before);
  metrics_http_t *h = start(render_fixed, NULL);
  char addr[64];
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", metrics_http_port(h));
  metrics_http_stop(h);
  int after = dup(0);
  close(after);
  assert_int_equal(after, before);
  /* and the port can be bound again at once */
  char err[256];
  assert_int_equal(metrics_http_start(&h, addr, render_fixed, NULL, NULL, err, sizeof(err)), 0);
  metrics_http_stop(h);
}

/* ---- slowloris --------------------------------------------------------------------------- */

#define SLOW_CONNS 200

/* Connects from src (a 127.0.0.x address) and sends a request line with no end of headers. */
static int half_open(const char *src, int port)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct timeval tv = {2, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  struct sockaddr_in a = {.sin_family = AF_INET};
  inet_pton(AF_INET, src, &a.sin_addr);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  a.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  const char *partial = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
  send(fd, partial, strlen(partial), MSG_NOSIGNAL);
  return fd;
}

/* Whether the server has closed fd (EOF or reset) within ms milliseconds. */
static int closed_by_server(int fd, int ms)
{
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (poll(&p, 1, ms) <= 0)
    return 0;
  char c;
  ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN);
}

static void slowloris_neither_blocks_others_nor_grows(void **state)
{
  metrics_http_options_t o = {.max_connections = 32, .per_ip_connections = 4, .timeout_s = 3};
  metrics_http_t *h = start(render_fixed, &o);
  int port = metrics_http_port(h);
  const char *attackers[] = {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"};
  int fds[SLOW_CONNS];
  for (int i = 0; i < SLOW_CONNS; i++)
    fds[i] = half_open(attackers[i % 4], port);

  /* The server holds at most per_ip connections per attacking address. */
  unsigned held = metrics_http_connections(h);
  print_message("connections held during the slowloris: %u\n", held);
  assert_true(held <= 4 * 4);

  /* A normal client from another address is answered, and quickly. */
  char args[128];
  snprintf(args, sizeof(args), "-i http://127.0.0.1:%d/metrics", port);
  double t0 = now_s();
  char *out = curl(args);
  double took = now_s() - t0;
  print_message("GET during the slowloris took %.3f s\n", took);
  assert_int_equal(status_of(out), 200);
  assert_string_equal(body_of(out), BODY);
  assert_true(took < 2.0); /* well before the slow ones time out (3 s) */
  free(out);

  /* Half-open connections are closed once idle for timeout_s (3 s): wait at most 8 s. */
  double deadline = now_s() + 8;
  while (metrics_http_connections(h) > 0 && now_s() < deadline)
    usleep(50000);
  assert_int_equal(metrics_http_connections(h), 0);
  int open_left = 0;
  for (int i = 0; i < SLOW_CONNS; i++) {
    if (fds[i] < 0)
      continue;
    if (!closed_by_server(fds[i], 100))
      open_left++;
    close(fds[i]);
  }
  assert_int_equal(open_left, 0);
  metrics_http_stop(h);
}

/* Even from many addresses at once, the total stays at max_connections. */
static void connection_limit_caps_total(void **state)
{
  metrics_http_options_t o = {.max_connections = 8, .per_ip_connections = 4, .timeout_s = 5};
  metrics_http_t *h = start(render_fixed, &o);
  int port = metrics_http_port(h);
  int fds[40];
  for (int i = 0; i < 40; i++) {
    char src[32];
    snprintf(src, sizeof(src), "127.0.1.%d", i + 1);
    fds[i] = half_open(src, port);
  }
  /* The server takes up to 8 (one per address, all idle) and closes the rest at once. */
  double deadline = now_s() + 3;
  while (metrics_http_connections(h) < 8 && now_s() < deadline)
    usleep(20000);
  usleep(100000);
  assert_int_equal(metrics_http_connections(h), 8);
  for (int i = 0; i < 40; i++)
    if (fds[i] >= 0)
      close(fds[i]);
  metrics_http_stop(h);
}

/* ---- a real Prometheus ------------------------------------------------------------------ */

/* A body with a counter, a histogram and the process metrics, as the proxy will serve. */
static char *render_rich(void *data, size_t *len)
{
  prom_buf_t b;
  prom_buf_init(&b);
  prom_printf(&b, "%s", BODY);
  prom_hist_t h;
  prom_hist_init(&h, &prom_buckets_latency);
  prom_hist_observe(&h, 1000000);
  prom_hist_observe(&h, 2000000);
  prom_hist_observe(&h, 3000000000ULL);
  prom_hist_snapshot_t s;
  prom_hist_snapshot_init(&s, &prom_buckets_latency);
  prom_hist_snapshot_add(&s, &h);
  prom_family(&b, "h_seconds", PROM_HISTOGRAM, "A test histogram.");
  prom_label_t l[] = {{"listener", "127.0.0.1:443"}};
  prom_hist_render(&b, "h_seconds", l, 1, &s);
  prom_process_metrics(&b);
  return prom_buf_take(&b, len);
}

static int free_port(void)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  close(fd);
  return ntohs(a.sin_port);
}

/* Asks Prometheus at port for query until the answer holds want; bounded by deadline. */
static int query_until(int port, const char *query, const char *want, double deadline)
{
  char args[512];
  snprintf(args, sizeof(args), "-g 'http://127.0.0.1:%d/api/v1/query?query=%s'", port, query);
  while (now_s() < deadline) {
    char *out = curl(args);
    int found = strstr(out, want) != NULL;
    free(out);
    if (found)
      return 1;
    usleep(250000);
  }
  return 0;
}

/* Debian's prometheus scrapes the endpoint every second and reads back what was rendered. */
static void real_prometheus_scrapes_endpoint(void **state)
{
  if (system("command -v prometheus >/dev/null 2>&1") != 0) {
    print_message("SKIP: prometheus not installed (Debian package prometheus)\n");
    skip();
  }
  metrics_http_t *h = start(render_rich, NULL);
  char dir[] = "/tmp/mcp-prometheus-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256], arg_cfg[300], arg_data[300], arg_listen[64];
  snprintf(path, sizeof(path), "%s/prometheus.yml", dir);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fprintf(f,
          "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
          "scrape_configs:\n"
          "  - job_name: mcp\n"
          "    static_configs: [{targets: ['127.0.0.1:%d']}]\n",
          metrics_http_port(h));
  fclose(f);
  int port = free_port();
  snprintf(arg_cfg, sizeof(arg_cfg), "--config.file=%s", path);
  snprintf(arg_data, sizeof(arg_data), "--storage.tsdb.path=%s/data", dir);
  snprintf(arg_listen, sizeof(arg_listen), "--web.listen-address=127.0.0.1:%d", port);
  snprintf(path, sizeof(path), "%s/prometheus.log", dir);

  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int log = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(log, 1);
    dup2(log, 2);
    execlp("prometheus", "prometheus", arg_cfg, arg_data, arg_listen, "--log.level=warn",
           (char *)NULL);
    _exit(127);
  }
  double deadline = now_s() + 60;
  int up = query_until(port, "up%7Bjob%3D%22mcp%22%7D", "\"1\"]", deadline);
  int counter = up && query_until(port, "t_total", "\"42\"]", deadline);
  int hist = up && query_until(port, "h_seconds_count%7Blistener%3D%22127.0.0.1:443%22%7D",
                               "\"3\"]", deadline);
  int le = up && query_until(port, "h_seconds_bucket%7Ble%3D%220.0025%22%7D", "\"2\"]", deadline);
  int fds = up && query_until(port, "process_open_fds", "process_open_fds", deadline);

  kill(pid, SIGTERM);
  int status = 0;
  double stop_by = now_s() + 15;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (now_s() > stop_by) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    usleep(50000);
  }
  if (!(up && counter && hist && le && fds)) {
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "cat %s", path);
    print_message("up=%d counter=%d hist=%d le=%d fds=%d; prometheus log:\n", up, counter, hist, le,
                  fds);
    (void)system(cmd);
  }
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  (void)system(cmd);
  metrics_http_stop(h);
  assert_true(up && counter && hist && le && fds);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(metrics_answers_200_with_rendered_body),
      cmocka_unit_test(head_answers_without_body),
      cmocka_unit_test(healthz_follows_serving_flag),
      cmocka_unit_test(other_paths_are_404),
      cmocka_unit_test(other_methods_are_405_with_allow),
      cmocka_unit_test(render_failure_is_500),
      cmocka_unit_test(ipv6_loopback_is_served),
      cmocka_unit_test(unparsable_address_is_refused_with_message),
      cmocka_unit_test(port_in_use_is_refused_with_message),
      cmocka_unit_test(stop_releases_socket),
      cmocka_unit_test(slowloris_neither_blocks_others_nor_grows),
      cmocka_unit_test(connection_limit_caps_total),
      cmocka_unit_test(real_prometheus_scrapes_endpoint),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
