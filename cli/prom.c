#include "prom.h"

#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define MS 1000000ULL
#define S 1000000000ULL

const prom_buckets_t prom_buckets_latency = {
    14,
    {MS / 2, MS, 5 * MS / 2, 5 * MS, 10 * MS, 25 * MS, 50 * MS, 100 * MS, 250 * MS, 500 * MS, S,
     5 * S / 2, 5 * S, 10 * S},
};

const prom_buckets_t prom_buckets_duration = {
    14,
    {10 * MS, 100 * MS, S, 5 * S, 10 * S, 30 * S, 60 * S, 300 * S, 600 * S, 1800 * S, 3600 * S,
     4 * 3600 * S, 12 * 3600 * S, 24 * 3600 * S},
};

/* ---- the output buffer ------------------------------------------------------------------- */

void prom_buf_init(prom_buf_t *b)
{
  memset(b, 0, sizeof(*b));
}

void prom_buf_free(prom_buf_t *b)
{
  free(b->data);
  prom_buf_init(b);
}

char *prom_buf_take(prom_buf_t *b, size_t *len)
{
  if (b->failed) {
    prom_buf_free(b);
    *len = 0;
    return NULL;
  }
  if (!b->data) {
    /* An empty body is still a body: hand out an allocated "". */
    b->data = calloc(1, 1);
    if (!b->data) {
      *len = 0;
      return NULL;
    }
  }
  char *data = b->data;
  *len = b->len;
  prom_buf_init(b);
  return data;
}

/* Makes room for need more bytes plus a NUL; returns 0 or -1 (and marks b failed). */
static int reserve(prom_buf_t *b, size_t need)
{
  if (b->failed)
    return -1;
  if (b->len + need + 1 <= b->cap)
    return 0;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + need + 1) {
    if (cap > SIZE_MAX / 2)
      goto fail;
    cap *= 2;
  }
  char *data = realloc(b->data, cap);
  if (!data)
    goto fail;
  b->data = data;
  b->cap = cap;
  return 0;
fail:
  b->failed = 1;
  return -1;
}

static void append(prom_buf_t *b, const char *s, size_t n)
{
  if (reserve(b, n) != 0)
    return;
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

static void append_str(prom_buf_t *b, const char *s)
{
  append(b, s, strlen(s));
}

void prom_printf(prom_buf_t *b, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || reserve(b, (size_t)n) != 0)
    return;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* ---- families and samples ---------------------------------------------------------------- */

static const char *const type_names[] = {"counter", "gauge", "histogram", "untyped"};

/* HELP text escapes only backslash and newline (a quote stays as it is). */
static void escape_help(prom_buf_t *b, const char *s)
{
  for (; *s; s++) {
    if (*s == '\\')
      append(b, "\\\\", 2);
    else if (*s == '\n')
      append(b, "\\n", 2);
    else
      append(b, s, 1);
  }
}

void prom_escape_label(prom_buf_t *b, const char *s)
{
  for (; *s; s++) {
    if (*s == '\\')
      append(b, "\\\\", 2);
    else if (*s == '"')
      append(b, "\\\"", 2);
    else if (*s == '\n')
      append(b, "\\n", 2);
    else
      append(b, s, 1);
  }
}

void prom_family(prom_buf_t *b, const char *name, prom_type_t type, const char *help)
{
  prom_printf(b, "# HELP %s ", name);
  escape_help(b, help);
  prom_printf(b, "\n# TYPE %s %s\n", name, type_names[type]);
}

/*
 * Formats v as Prometheus reads floats: NaN, +Inf, -Inf, or the shortest of %.15g / %.17g that
 * reads back as the same double (so 0.005 stays "0.005").
 */
static void format_double(char out[40], double v)
{
  if (isnan(v)) {
    snprintf(out, 40, "NaN");
    return;
  }
  if (isinf(v)) {
    snprintf(out, 40, "%s", v > 0 ? "+Inf" : "-Inf");
    return;
  }
  snprintf(out, 40, "%.15g", v);
  if (strtod(out, NULL) != v)
    snprintf(out, 40, "%.17g", v);
}

/* Writes name suffix{a="x",b="y"[,extra_name="extra_value"]} and a space. */
static void write_series(prom_buf_t *b, const char *name, const char *suffix,
                         const prom_label_t *labels, size_t nlabels, const char *extra_name,
                         const char *extra_value)
{
  append_str(b, name);
  append_str(b, suffix);
  if (nlabels == 0 && !extra_name) {
    append(b, " ", 1);
    return;
  }
  append(b, "{", 1);
  for (size_t i = 0; i < nlabels; i++) {
    if (i)
      append(b, ",", 1);
    append_str(b, labels[i].name);
    append(b, "=\"", 2);
    prom_escape_label(b, labels[i].value);
    append(b, "\"", 1);
  }
  if (extra_name) {
    if (nlabels)
      append(b, ",", 1);
    prom_printf(b, "%s=\"%s\"", extra_name, extra_value);
  }
  append(b, "} ", 2);
}

void prom_sample(prom_buf_t *b, const char *name, const prom_label_t *labels, size_t nlabels,
                 double value)
{
  char num[40];
  format_double(num, value);
  write_series(b, name, "", labels, nlabels, NULL, NULL);
  append_str(b, num);
  append(b, "\n", 1);
}

void prom_sample_u64(prom_buf_t *b, const char *name, const prom_label_t *labels, size_t nlabels,
                     uint64_t value)
{
  write_series(b, name, "", labels, nlabels, NULL, NULL);
  prom_printf(b, "%llu\n", (unsigned long long)value);
}

/* ---- histograms -------------------------------------------------------------------------- */

void prom_hist_init(prom_hist_t *h, const prom_buckets_t *buckets)
{
  h->buckets = buckets;
  for (size_t i = 0; i <= PROM_HIST_MAX_BUCKETS; i++)
    atomic_init(&h->count[i], 0);
  atomic_init(&h->sum_ns, 0);
}

void prom_hist_snapshot_init(prom_hist_snapshot_t *s, const prom_buckets_t *buckets)
{
  memset(s, 0, sizeof(*s));
  s->buckets = buckets;
}

void prom_hist_snapshot_add(prom_hist_snapshot_t *s, const prom_hist_t *h)
{
  if (h->buckets != s->buckets)
    return;
  prom_hist_t *rh = (prom_hist_t *)h; /* relaxed loads need a non-const pointer in C11 */
  for (size_t i = 0; i <= s->buckets->n; i++)
    s->count[i] += atomic_load_explicit(&rh->count[i], memory_order_relaxed);
  s->sum_ns += atomic_load_explicit(&rh->sum_ns, memory_order_relaxed);
}

void prom_hist_render(prom_buf_t *b, const char *name, const prom_label_t *labels, size_t nlabels,
                      const prom_hist_snapshot_t *s)
{
  char le[40];
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= s->buckets->n; i++) {
    cumulative += s->count[i];
    if (i < s->buckets->n)
      format_double(le, (double)s->buckets->le_ns[i] / 1e9);
    else
      snprintf(le, sizeof(le), "+Inf");
    write_series(b, name, "_bucket", labels, nlabels, "le", le);
    prom_printf(b, "%llu\n", (unsigned long long)cumulative);
  }
  char num[40];
  format_double(num, (double)s->sum_ns / 1e9);
  write_series(b, name, "_sum", labels, nlabels, NULL, NULL);
  prom_printf(b, "%s\n", num);
  write_series(b, name, "_count", labels, nlabels, NULL, NULL);
  prom_printf(b, "%llu\n", (unsigned long long)cumulative);
}

/* ---- process metrics --------------------------------------------------------------------- */

/* Reads a small /proc file whole into buf (NUL-terminated); returns its length or -1. */
static ssize_t read_small(const char *path, char *buf, size_t size)
{
  FILE *f = fopen(path, "re");
  if (!f)
    return -1;
  size_t n = fread(buf, 1, size - 1, f);
  fclose(f);
  buf[n] = '\0';
  return (ssize_t)n;
}

/* The boot time in seconds since the epoch ("btime" in /proc/stat), or -1. */
static long long boot_time(void)
{
  FILE *f = fopen("/proc/stat", "re");
  if (!f)
    return -1;
  char line[256];
  long long btime = -1;
  while (fgets(line, sizeof(line), f))
    if (sscanf(line, "btime %lld", &btime) == 1)
      break;
  fclose(f);
  return btime;
}

/* The number of open descriptors, not counting the one used to list them, or -1. */
static long long open_fds(void)
{
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return -1;
  long long n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n - 1;
}

static void gauge(prom_buf_t *b, const char *name, const char *help, double v)
{
  prom_family(b, name, PROM_GAUGE, help);
  prom_sample(b, name, NULL, 0, v);
}

void prom_process_metrics(prom_buf_t *b)
{
  /* /proc/self/stat: the fields after the command name's closing parenthesis, from state on
   * (field 3); see proc(5). The name may itself hold spaces and parentheses. */
  char stat[1024];
  unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
  long long rss = 0;
  int have_stat = 0;
  if (read_small("/proc/self/stat", stat, sizeof(stat)) > 0) {
    char *p = strrchr(stat, ')');
    if (p && sscanf(p + 1,
                    " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
                    "%*d %llu %llu %lld",
                    &utime, &stime, &start, &vsize, &rss) == 5)
      have_stat = 1;
  }
  long ticks = sysconf(_SC_CLK_TCK);
  long page = sysconf(_SC_PAGESIZE);

  if (have_stat && ticks > 0) {
    prom_family(b, "process_cpu_seconds_total", PROM_COUNTER,
                "CPU time this process has used, user plus system, in seconds.");
    prom_sample(b, "process_cpu_seconds_total", NULL, 0, (double)(utime + stime) / (double)ticks);
  }
  long long fds = open_fds();
  if (fds >= 0)
    gauge(b, "process_open_fds", "File descriptors this process holds open.", (double)fds);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
    gauge(b, "process_max_fds", "The soft limit on open file descriptors (RLIMIT_NOFILE).",
          rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur);
  if (have_stat) {
    gauge(b, "process_virtual_memory_bytes",
          "Size of this process's virtual address space in bytes.", (double)vsize);
    if (page > 0)
      gauge(b, "process_resident_memory_bytes", "Memory of this process resident in RAM, in bytes.",
            (double)rss * (double)page);
  }
  long long btime = boot_time();
  if (have_stat && ticks > 0 && btime >= 0)
    gauge(b, "process_start_time_seconds",
          "When this process started, in seconds since the Unix epoch.",
          (double)btime + (double)start / (double)ticks);
}
