/* mcp-bench-load: the client side of the benchmark.
 *
 * Replays a captured ClientHello over many TCP connections to a proxy (or straight to the
 * backend for the "direct" baseline) and measures, inside a time window that starts after a
 * warm-up, what the run achieved and what it cost the processes named by --watch (the proxy),
 * using the kernel's own accounting in /proc/PID/stat and /proc/PID/status.
 *
 * Modes:
 *   rate   --conns C loops of: connect, send the hello, read the full reply, close. With
 *          --close rst (the default) the close is a RST (SO_LINGER {1,0}); with --close fin the
 *          client half-closes (shutdown SHUT_WR, a FIN), waits for the far side's FIN (EOF) and
 *          only then close()s: the normal close of a real client. A connection counts when its
 *          close completed cleanly; data or a reset after the reply is an error. Reports conn/s,
 *          latency p50/p99 (connect start to last reply byte) and proxy CPU microseconds per
 *          connection.
 *   stream --conns C connections send the hello and then read the backend's stream, checking
 *          every byte against the pattern. Reports MB/s (10^6 bytes) and proxy CPU ms per GB
 *          (10^9 bytes).
 *   idle   after --warm short connections, opens --idle N connections (at most --conns in
 *          flight), each completing the hello/reply exchange and then staying silent. Reports
 *          the proxy's RSS before and after, in KiB per idle connection.
 *   probe  one rate-style exchange (or, with --expect stream, the first stream bytes), retried
 *          until it succeeds or --duration passes: used to wait for a proxy to be ready.
 *
 * Every connection that is refused, reset, closed early, times out or gets a reply other than
 * the backend's counts as an error; the exit status is 1 when there was any error or no
 * successful work. Output is one line of key=value pairs on stdout.
 *
 * Longer than the project's ~600 lines: all modes share the slot state machine, the window and
 * /proc accounting, and the error counting; split across files they would have to share most of
 * this file's statics. */
#include "bench_common.h"

#include <math.h>
#include <signal.h>
#include <sys/epoll.h>

enum mode { M_RATE, M_STREAM, M_IDLE, M_PROBE };
enum sstate { S_FREE, S_CONNECTING, S_READING, S_CLOSING, S_IDLE, S_STREAM };

/* One client connection slot; slots are reused for the next connection in rate mode. */
typedef struct {
  int fd;
  enum sstate st;
  uint64_t t0;     /* when connect() was called */
  uint64_t t_reply; /* when the last reply byte arrived (FIN close: latency ends there) */
  size_t got;      /* reply bytes received */
  uint64_t offset; /* stream bytes received (pattern offset) */
} slot_t;

static struct {
  enum mode mode;
  struct sockaddr_in target;
  uint8_t *hello;
  size_t hello_len;
  int conns;
  double duration, warmup;
  long long max_conns;
  long idle_n, warm_n;
  size_t reply_len;
  int expect_stream;
  int close_fin; /* rate mode: close with FIN and wait for the far side's FIN */
  double conn_timeout;
  int watch[16];
  int n_watch;
} cfg = {
    .conns = 32,
    .duration = 3.0,
    .warmup = 0.5,
    .max_conns = 5000000,
    .idle_n = 1000,
    .warm_n = 200,
    .reply_len = 1024,
    .conn_timeout = 10.0,
};

static int g_ep;
static uint8_t *g_reply;   /* expected reply bytes */
static uint8_t *g_pattern; /* PERIOD + READ_CHUNK bytes of the stream pattern */
static slot_t *g_slots;
static int g_nslots;

#define READ_CHUNK (256u * 1024u)
static uint8_t g_rbuf[READ_CHUNK];

static struct {
  long long ok, refused, reset, short_eof, bad, timeout, other;
  long long started;
  long long idle_up;
  unsigned long long bytes;
} st;

/* Latency samples (nanoseconds) of connections completed inside the window. */
static uint64_t *g_lat;
static size_t g_nlat, g_caplat;
static int g_measuring;

static long long errors_total(void)
{
  return st.refused + st.reset + st.short_eof + st.bad + st.timeout + st.other;
}

static long long watch_cpu_ticks(void)
{
  long long sum = 0;
  if (cfg.n_watch == 0)
    return -1;
  for (int i = 0; i < cfg.n_watch; i++) {
    long long t = bench_proc_cpu_ticks(cfg.watch[i]);
    if (t < 0)
      return -1;
    sum += t;
  }
  return sum;
}

static long long watch_rss_kib(void)
{
  long long sum = 0;
  if (cfg.n_watch == 0)
    return -1;
  for (int i = 0; i < cfg.n_watch; i++) {
    long long r = bench_proc_rss_kib(cfg.watch[i]);
    if (r < 0)
      return -1;
    sum += r;
  }
  return sum;
}

static void slot_close(slot_t *s, int reset)
{
  /* close() alone takes the socket out of the epoll set: one syscall fewer per connection. */
  if (s->fd >= 0) {
    if (reset)
      bench_close_reset(s->fd);
    else
      close(s->fd);
  }
  s->fd = -1;
  s->st = S_FREE;
}

static void slot_fail(slot_t *s, int err)
{
  if (err == ECONNREFUSED || err == EADDRNOTAVAIL || err == ENETUNREACH)
    st.refused++;
  else if (err == ECONNRESET || err == EPIPE)
    st.reset++;
  else if (err == 0)
    st.short_eof++;
  else if (err == ETIMEDOUT)
    st.timeout++;
  else if (err == EBADMSG)
    st.bad++;
  else
    st.other++;
  slot_close(s, 1);
}

/* Starts a new connection in slot s. Returns 0, or -1 when the slot failed at once. */
static int slot_start(slot_t *s)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    st.other++;
    return -1;
  }
  s->fd = fd;
  s->got = 0;
  s->offset = 0;
  s->t0 = bench_now_ns();
  st.started++;
  if (connect(fd, (struct sockaddr *)&cfg.target, sizeof(cfg.target)) != 0 &&
      errno != EINPROGRESS) {
    slot_fail(s, errno);
    return -1;
  }
  s->st = S_CONNECTING;
  /* Edge-triggered and registered once for both directions: the connect completion arrives as
   * EPOLLOUT, the reply as EPOLLIN, with no epoll_ctl in between. Keeping the load side cheap
   * matters because it shares one core with the backend. */
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = s};
  if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
    slot_fail(s, errno);
    return -1;
  }
  return 0;
}

/* The connect finished (or failed: then send() reports the connect's error, such as
 * ECONNREFUSED, which saves a getsockopt(SO_ERROR) per connection). Returns -1 when the slot
 * failed. */
static int slot_connected(slot_t *s)
{
  /* The hello is a few hundred bytes: a fresh socket's send buffer always takes it whole. */
  ssize_t n = send(s->fd, cfg.hello, cfg.hello_len, MSG_NOSIGNAL);
  if (n != (ssize_t)cfg.hello_len) {
    slot_fail(s, n < 0 ? errno : EIO);
    return -1;
  }
  s->st = (cfg.mode == M_STREAM || cfg.expect_stream) ? S_STREAM : S_READING;
  if (s->st == S_STREAM) {
    /* A stream never drains while the backend keeps sending: level-triggered and one read per
     * event keeps the connections fair and every loop iteration short. */
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
    epoll_ctl(g_ep, EPOLL_CTL_MOD, s->fd, &ev);
  }
  return 0;
}

static void record_latency(uint64_t ns)
{
  if (g_nlat == g_caplat) {
    size_t cap = g_caplat ? g_caplat * 2 : 65536;
    uint64_t *p = realloc(g_lat, cap * sizeof(*p));
    if (p == NULL)
      return;
    g_lat = p;
    g_caplat = cap;
  }
  g_lat[g_nlat++] = ns;
}

/* Called when a full, correct reply arrived. */
static void slot_replied(slot_t *s)
{
  if (cfg.mode == M_RATE && cfg.close_fin) {
    /* Half-close and wait for the far side's FIN; the slot is counted when it arrives. */
    s->t_reply = bench_now_ns();
    if (shutdown(s->fd, SHUT_WR) != 0) {
      slot_fail(s, errno);
      return;
    }
    s->st = S_CLOSING;
    return;
  }
  if (cfg.mode == M_IDLE && g_measuring) {
    /* An idle connection: keep it open and silent. It stays in the epoll set so that a proxy
     * dropping it is noticed (as an error), at no cost while nothing happens. */
    s->st = S_IDLE;
    st.idle_up++;
    return;
  }
  if (g_measuring || cfg.mode != M_RATE) {
    st.ok++;
    if (cfg.mode == M_RATE)
      record_latency(bench_now_ns() - s->t0);
  }
  slot_close(s, 1);
}

/* Handles one read on a connected slot. Returns 1 when the caller should read again (more data
 * may be queued: the sockets are edge-triggered), 0 when the socket is drained or the slot
 * finished or failed. */
static int slot_readable(slot_t *s)
{
  size_t room = s->st == S_READING ? cfg.reply_len - s->got : sizeof(g_rbuf);
  ssize_t n = recv(s->fd, g_rbuf, room, 0);
  if (n < 0 && errno == EINTR)
    return 1;
  if (n < 0 && errno == EAGAIN)
    return 0;
  if (n == 0 && s->st == S_CLOSING) {
    /* The far side's FIN after ours: a clean close, the connection is complete. */
    if (g_measuring) {
      st.ok++;
      record_latency(s->t_reply - s->t0);
    }
    slot_close(s, 0);
    return 0;
  }
  if (n <= 0) {
    slot_fail(s, n < 0 ? errno : 0);
    return 0;
  }
  if (s->st == S_READING) {
    /* At most the rest of the reply was read; a longer one shows up as data after it. */
    if (memcmp(g_rbuf, g_reply + s->got, (size_t)n) != 0) {
      slot_fail(s, EBADMSG);
      return 0;
    }
    s->got += (size_t)n;
    if (s->got < cfg.reply_len)
      return 1;
    slot_replied(s);
    /* FIN close: keep reading, the far side's FIN may be queued already (edge-triggered). */
    return s->st == S_CLOSING;
  }
  if (s->st == S_CLOSING) {
    /* A byte after the reply is an error (the clean EOF was handled above). */
    slot_fail(s, EBADMSG);
    return 0;
  }
  if (s->st == S_STREAM) {
    if (memcmp(g_rbuf, g_pattern + s->offset % BENCH_PATTERN_PERIOD, (size_t)n) != 0) {
      slot_fail(s, EBADMSG);
      return 0;
    }
    s->offset += (uint64_t)n;
    if (g_measuring)
      st.bytes += (unsigned long long)n;
    if (cfg.mode == M_PROBE && s->offset >= 4096) {
      st.ok++;
      slot_close(s, 1);
      return 0;
    }
    return 1;
  }
  /* Data on an idle connection: the proxy or backend misused it. (EOF and errors were
   * handled above.) */
  slot_fail(s, EBADMSG);
  return 0;
}

static void expire_slots(uint64_t now)
{
  uint64_t limit = (uint64_t)(cfg.conn_timeout * 1e9);
  for (int i = 0; i < g_nslots; i++) {
    slot_t *s = &g_slots[i];
    if ((s->st == S_CONNECTING || s->st == S_READING || s->st == S_CLOSING) &&
        now - s->t0 > limit)
      slot_fail(s, ETIMEDOUT);
  }
}

static void poll_once(int timeout_ms)
{
  struct epoll_event evs[256];
  int n = epoll_wait(g_ep, evs, 256, timeout_ms);
  for (int i = 0; i < n; i++) {
    slot_t *s = evs[i].data.ptr;
    if (s->st == S_CONNECTING) {
      if (!(evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) || slot_connected(s) != 0)
        continue;
    }
    if (s->st == S_STREAM) {
      slot_readable(s);
      continue;
    }
    /* Edge-triggered: read until the socket is drained or the slot changed state. */
    int fd = s->fd;
    while (s->st != S_FREE && s->st != S_CONNECTING && s->fd == fd && slot_readable(s) > 0) {
    }
  }
}

static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double percentile_us(double p)
{
  if (g_nlat == 0)
    return NAN;
  size_t idx = (size_t)ceil(p * (double)g_nlat) - 1;
  if (idx >= g_nlat)
    idx = g_nlat - 1;
  return (double)g_lat[idx] / 1000.0;
}

static void print_errors(FILE *out)
{
  fprintf(out,
          " errors=%lld err_refused=%lld err_reset=%lld err_eof=%lld err_bad_reply=%lld "
          "err_timeout=%lld err_other=%lld",
          errors_total(), st.refused, st.reset, st.short_eof, st.bad, st.timeout, st.other);
}

static double ticks_to_ms(long long ticks)
{
  return ticks < 0 ? NAN : (double)ticks * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

/* Runs the loop until no slot is connecting or reading, or the deadline passes. */
static void drain_inflight(uint64_t deadline)
{
  for (;;) {
    int busy = 0;
    for (int i = 0; i < g_nslots; i++)
      if (g_slots[i].st == S_CONNECTING || g_slots[i].st == S_READING ||
          g_slots[i].st == S_CLOSING)
        busy = 1;
    if (!busy || bench_now_ns() >= deadline)
      return;
    poll_once(5);
    expire_slots(bench_now_ns());
  }
}

static int run_rate(void)
{
  uint64_t t_start = bench_now_ns();
  uint64_t t_win = t_start + (uint64_t)(cfg.warmup * 1e9);
  uint64_t t_end = t_win + (uint64_t)(cfg.duration * 1e9);
  long long cpu0 = -1;
  uint64_t t_win_real = 0, now;
  while ((now = bench_now_ns()) < t_end && st.ok < cfg.max_conns) {
    if (!g_measuring && now >= t_win) {
      g_measuring = 1;
      cpu0 = watch_cpu_ticks();
      t_win_real = now;
    }
    for (int i = 0; i < g_nslots; i++)
      if (g_slots[i].st == S_FREE)
        slot_start(&g_slots[i]);
    poll_once(5);
    expire_slots(bench_now_ns());
  }
  now = bench_now_ns();
  long long cpu1 = watch_cpu_ticks();
  g_measuring = 0;
  /* Let the connections in flight finish (uncounted) instead of abandoning them half-way, so
   * the backend sees no cut-short hello that would look like a proxy error. */
  drain_inflight(now + 3000000000u);
  double win = t_win_real ? (double)(now - t_win_real) / 1e9 : 0;
  qsort(g_lat, g_nlat, sizeof(*g_lat), cmp_u64);
  double cpu_ms = cpu0 >= 0 && cpu1 >= 0 ? ticks_to_ms(cpu1 - cpu0) : NAN;
  printf("load mode=rate close=%s hello_bytes=%zu conns=%d ok=%lld window_s=%.3f "
         "conn_per_s=%.1f p50_us=%.1f p99_us=%.1f",
         cfg.close_fin ? "fin" : "rst", cfg.hello_len, cfg.conns, st.ok, win, win > 0 ? (double)st.ok / win : 0.0, percentile_us(0.50),
         percentile_us(0.99));
  printf(" proxy_cpu_ms=%.1f proxy_cpu_pct=%.1f cpu_us_per_conn=%.2f", cpu_ms,
         win > 0 ? cpu_ms / 10.0 / win : NAN, st.ok > 0 ? cpu_ms * 1000.0 / (double)st.ok : NAN);
  print_errors(stdout);
  printf("\n");
  return errors_total() == 0 && st.ok > 0 ? 0 : 1;
}

static int run_stream(void)
{
  uint64_t t_start = bench_now_ns();
  uint64_t t_win = t_start + (uint64_t)(cfg.warmup * 1e9);
  uint64_t t_end = t_win + (uint64_t)(cfg.duration * 1e9);
  for (int i = 0; i < g_nslots; i++)
    slot_start(&g_slots[i]);
  long long cpu0 = -1;
  uint64_t t_win_real = 0, now;
  while ((now = bench_now_ns()) < t_end) {
    if (!g_measuring && now >= t_win) {
      g_measuring = 1;
      cpu0 = watch_cpu_ticks();
      t_win_real = now;
    }
    poll_once(5);
    expire_slots(bench_now_ns());
    /* A stream that ended is an error; reconnecting would hide it. */
  }
  now = bench_now_ns();
  long long cpu1 = watch_cpu_ticks();
  g_measuring = 0;
  double win = t_win_real ? (double)(now - t_win_real) / 1e9 : 0;
  long long alive = 0;
  for (int i = 0; i < g_nslots; i++)
    if (g_slots[i].st == S_STREAM)
      alive++;
  double cpu_ms = cpu0 >= 0 && cpu1 >= 0 ? ticks_to_ms(cpu1 - cpu0) : NAN;
  double gb = (double)st.bytes / 1e9;
  printf("load mode=stream conns=%d alive=%lld bytes=%llu window_s=%.3f mb_per_s=%.1f "
         "proxy_cpu_ms=%.1f proxy_cpu_pct=%.1f cpu_ms_per_gb=%.1f",
         cfg.conns, alive, st.bytes, win, win > 0 ? (double)st.bytes / 1e6 / win : 0.0, cpu_ms,
         win > 0 ? cpu_ms / 10.0 / win : NAN, gb > 0 ? cpu_ms / gb : NAN);
  print_errors(stdout);
  printf("\n");
  for (int i = 0; i < g_nslots; i++)
    slot_close(&g_slots[i], 1);
  return errors_total() == 0 && alive == cfg.conns && st.bytes > 0 ? 0 : 1;
}

static slot_t *free_slot(void)
{
  for (int i = 0; i < g_nslots; i++)
    if (g_slots[i].st == S_FREE)
      return &g_slots[i];
  return NULL;
}

static int run_idle(void)
{
  uint64_t deadline = bench_now_ns() + (uint64_t)(cfg.duration * 1e9);
  /* Warm-up: short connections (opened and closed) so one-time allocations of the proxy
   * (pools, caches, lazily created structures) are in the baseline, not in the per-connection
   * figure. The first cfg.conns slots are used for it. */
  g_nslots = cfg.conns;
  long long warm_started = 0;
  while (st.ok < cfg.warm_n && bench_now_ns() < deadline && errors_total() == 0) {
    slot_t *s;
    while (warm_started < cfg.warm_n && (s = free_slot()) != NULL) {
      warm_started++;
      slot_start(s);
    }
    poll_once(5);
    expire_slots(bench_now_ns());
  }
  drain_inflight(deadline);
  /* Let the proxy finish closing the warm-up connections before the baseline. */
  uint64_t settle = bench_now_ns() + 300000000u;
  while (bench_now_ns() < settle)
    poll_once(20);
  long long rss0 = watch_rss_kib();
  long long warm_ok = st.ok;

  /* Idle connections: every slot from here on stays open once its reply arrived. */
  g_measuring = 1;
  g_nslots = cfg.conns + (int)cfg.idle_n;
  long long next = cfg.conns;
  int inflight_cap = cfg.conns;
  while (st.idle_up < cfg.idle_n && bench_now_ns() < deadline) {
    int inflight = 0;
    for (int i = cfg.conns; i < next; i++)
      if (g_slots[i].st == S_CONNECTING || g_slots[i].st == S_READING)
        inflight++;
    while (inflight < inflight_cap && next < g_nslots) {
      slot_start(&g_slots[next++]);
      inflight++;
    }
    if (next >= g_nslots && inflight == 0)
      break;
    poll_once(5);
    expire_slots(bench_now_ns());
  }
  settle = bench_now_ns() + 500000000u;
  while (bench_now_ns() < settle)
    poll_once(20);
  long long rss1 = watch_rss_kib();
  long long up = 0;
  for (int i = cfg.conns; i < g_nslots; i++)
    if (g_slots[i].st == S_IDLE)
      up++;
  double per = rss0 >= 0 && rss1 >= 0 && up > 0 ? (double)(rss1 - rss0) / (double)up : NAN;
  printf("load mode=idle warm_ok=%lld idle_target=%ld idle_up=%lld rss_before_kib=%lld "
         "rss_after_kib=%lld kib_per_conn=%.2f",
         warm_ok, cfg.idle_n, up, rss0, rss1, per);
  print_errors(stdout);
  printf("\n");
  for (int i = 0; i < g_nslots; i++)
    slot_close(&g_slots[i], 1);
  return errors_total() == 0 && up == cfg.idle_n ? 0 : 1;
}

static int run_probe(void)
{
  uint64_t deadline = bench_now_ns() + (uint64_t)(cfg.duration * 1e9);
  g_nslots = 1;
  while (bench_now_ns() < deadline) {
    if (g_slots[0].st == S_FREE) {
      if (st.ok > 0)
        return 0;
      slot_start(&g_slots[0]);
    }
    poll_once(20);
    expire_slots(bench_now_ns());
    if (g_slots[0].st == S_FREE && st.ok == 0) {
      /* Not ready yet (or an error): wait a little before retrying. */
      uint64_t pause = bench_now_ns() + 50000000u;
      while (bench_now_ns() < pause)
        poll_once(10);
    }
  }
  fprintf(stderr, "mcp-bench-load: probe failed:");
  print_errors(stderr);
  fprintf(stderr, "\n");
  return 1;
}

static int parse_watch(const char *v)
{
  char *copy = strdup(v), *save = NULL;
  for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
    if (cfg.n_watch == (int)(sizeof(cfg.watch) / sizeof(cfg.watch[0])))
      break;
    int pid = atoi(t);
    if (pid <= 0) {
      free(copy);
      return -1;
    }
    cfg.watch[cfg.n_watch++] = pid;
  }
  free(copy);
  return 0;
}

static int usage(void)
{
  fprintf(stderr,
          "usage: mcp-bench-load --connect ADDR:PORT --hello FILE --mode rate|stream|idle|probe\n"
          "         [--conns C] [--duration S] [--warmup S] [--max N] [--idle N] [--warm N]\n"
          "         [--reply-bytes N] [--expect reply|stream] [--close rst|fin]\n"
          "         [--watch PID[,PID...]]\n");
  return 2;
}

int main(int argc, char **argv)
{
  const char *connect_s = NULL, *hello_path = NULL, *mode_s = NULL;
  for (int i = 1; i < argc; i += 2) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (v == NULL)
      return usage();
    if (strcmp(a, "--connect") == 0)
      connect_s = v;
    else if (strcmp(a, "--hello") == 0)
      hello_path = v;
    else if (strcmp(a, "--mode") == 0)
      mode_s = v;
    else if (strcmp(a, "--conns") == 0)
      cfg.conns = atoi(v);
    else if (strcmp(a, "--duration") == 0)
      cfg.duration = atof(v);
    else if (strcmp(a, "--warmup") == 0)
      cfg.warmup = atof(v);
    else if (strcmp(a, "--max") == 0)
      cfg.max_conns = atoll(v);
    else if (strcmp(a, "--idle") == 0)
      cfg.idle_n = atol(v);
    else if (strcmp(a, "--warm") == 0)
      cfg.warm_n = atol(v);
    else if (strcmp(a, "--reply-bytes") == 0)
      cfg.reply_len = strtoul(v, NULL, 10);
    else if (strcmp(a, "--expect") == 0)
      cfg.expect_stream = strcmp(v, "stream") == 0;
    else if (strcmp(a, "--close") == 0) {
      if (strcmp(v, "fin") == 0)
        cfg.close_fin = 1;
      else if (strcmp(v, "rst") != 0)
        return usage();
    } else if (strcmp(a, "--watch") == 0) {
      if (parse_watch(v) != 0)
        return usage();
    } else
      return usage();
  }
  if (connect_s == NULL || hello_path == NULL || mode_s == NULL)
    return usage();
  if (strcmp(mode_s, "rate") == 0)
    cfg.mode = M_RATE;
  else if (strcmp(mode_s, "stream") == 0)
    cfg.mode = M_STREAM;
  else if (strcmp(mode_s, "idle") == 0)
    cfg.mode = M_IDLE;
  else if (strcmp(mode_s, "probe") == 0)
    cfg.mode = M_PROBE;
  else
    return usage();
  if (cfg.conns < 1 || cfg.conns > 10000 || cfg.duration <= 0 || cfg.duration > 3600 ||
      cfg.warmup < 0 || cfg.idle_n < 1 || cfg.idle_n > 100000 || cfg.warm_n < 0 ||
      cfg.reply_len < strlen(BENCH_REPLY_MAGIC) || cfg.reply_len > sizeof(g_rbuf))
    return usage();
  if (bench_parse_addr(connect_s, &cfg.target) != 0) {
    fprintf(stderr, "mcp-bench-load: bad address %s\n", connect_s);
    return 2;
  }
  ssize_t hl = bench_load_file(hello_path, &cfg.hello, BENCH_HELLO_MAX);
  if (hl <= 0) {
    fprintf(stderr, "mcp-bench-load: cannot read hello %s\n", hello_path);
    return 2;
  }
  cfg.hello_len = (size_t)hl;
  g_reply = malloc(cfg.reply_len);
  g_pattern = malloc(BENCH_PATTERN_PERIOD + READ_CHUNK);
  int total_slots = cfg.mode == M_IDLE ? cfg.conns + (int)cfg.idle_n : cfg.conns;
  g_slots = calloc((size_t)total_slots, sizeof(*g_slots));
  if (g_reply == NULL || g_pattern == NULL || g_slots == NULL)
    return 1;
  for (int i = 0; i < total_slots; i++)
    g_slots[i].fd = -1;
  g_nslots = cfg.conns;
  bench_reply_fill(g_reply, cfg.reply_len);
  bench_pattern_fill(g_pattern, BENCH_PATTERN_PERIOD + READ_CHUNK);
  signal(SIGPIPE, SIG_IGN);
  g_ep = epoll_create1(EPOLL_CLOEXEC);
  if (g_ep < 0)
    return 1;

  int rc;
  switch (cfg.mode) {
  case M_RATE:
    rc = run_rate();
    break;
  case M_STREAM:
    rc = run_stream();
    break;
  case M_IDLE:
    rc = run_idle();
    break;
  default:
    rc = run_probe();
    break;
  }
  fflush(stdout);
  return rc;
}
