/* mcp-bench-tls: the TLS-handshake phase of the benchmark (see bench/README.md).
 *
 * Both ends of a real TLS connection, built on OpenSSL, so that the proxy in between (which
 * only routes on the ClientHello's SNI and relays bytes) can be measured against the cost of a
 * whole connection, handshake included:
 *
 *   server  accepts connections (one thread each, blocking sockets), completes a full TLS
 *           handshake with the given certificate, checks that the first application data is
 *           exactly the request below, answers with the bench reply (--reply-bytes, 1 KiB), and
 *           on the client's close_notify sends its own and closes (a FIN). On SIGTERM/SIGINT
 *           it prints one line of counters in the format of mcp-bench-backend and exits 0.
 *   client  --conns C threads each loop: connect, full handshake (SNI app.example.com by
 *           default; the server certificate is verified against --ca and the name), send the
 *           request, read and compare the reply, send close_notify, wait for the server's,
 *           close. Inside the measurement window (after --warmup) it counts completed
 *           connections and their latency (connect start to last reply byte) and reads the CPU
 *           time of the --watch processes (the proxy), of the --watch-backend processes and of
 *           itself from /proc, so the proxy's share of a real connection's CPU cost shows.
 *   probe   one client connection, retried until it succeeds or --duration passes.
 *
 * No session resumption on either side (no tickets, no cache): every connection is a full
 * handshake. Every failure (refused, reset, handshake or verification failure, wrong reply,
 * missing close_notify, timeout after 10 s) is an error; the client's exit status is 1 when
 * there was any error or no completed connection. Output: one line of key=value pairs. */
#include "bench_common.h"

#include <math.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define TLS_REQUEST "MCPB-TLS-REQUEST 0123456789abcdef\n"
#define IO_TIMEOUT_S 10

enum { E_REFUSED, E_RESET, E_HANDSHAKE, E_BAD, E_EOF, E_TIMEOUT, E_OTHER, E_N };
static const char *const ERR_NAMES[E_N] = {"refused", "reset",   "handshake", "bad_reply",
                                           "eof",     "timeout", "other"};

static struct {
  struct sockaddr_in addr;
  const char *cert, *key, *ca, *sni;
  size_t reply_len;
  int conns;
  double duration, warmup;
  int watch[16], n_watch;
  int watch_bk[16], n_watch_bk;
} cfg = {.sni = "app.example.com", .reply_len = 1024, .conns = 8, .duration = 3, .warmup = 0.5};

static SSL_CTX *g_ctx;
static uint8_t *g_reply;
static volatile int g_measuring, g_stop;
static volatile sig_atomic_t g_sig;

static void set_timeouts(int fd)
{
  struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Reads exactly len bytes of application data. Returns 0, or an E_* code. */
static int ssl_read_full(SSL *ssl, uint8_t *buf, size_t len)
{
  size_t got = 0;
  while (got < len) {
    int n = SSL_read(ssl, buf + got, (int)(len - got));
    if (n > 0) {
      got += (size_t)n;
      continue;
    }
    int e = SSL_get_error(ssl, n);
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0))
      return E_EOF;
    if (e == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK))
      return E_TIMEOUT;
    if (e == SSL_ERROR_SYSCALL && (errno == ECONNRESET || errno == EPIPE))
      return E_RESET;
    return E_OTHER;
  }
  return 0;
}

/* ---- server ---- */

static struct {
  unsigned long accepted, hello_ok, hello_bad, hello_short, extra_data, reset, closed;
} g_bk;

#define BK_INC(f) __atomic_add_fetch(&g_bk.f, 1, __ATOMIC_RELAXED)

static void *server_conn(void *arg)
{
  int fd = (int)(intptr_t)arg, one = 1;
  set_timeouts(fd);
  /* As real TLS servers do: no Nagle delay on the small close_notify after the reply. */
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  SSL *ssl = SSL_new(g_ctx);
  uint8_t buf[sizeof(TLS_REQUEST) - 1];
  if (ssl == NULL || !SSL_set_fd(ssl, fd) || SSL_accept(ssl) != 1) {
    BK_INC(hello_bad); /* a handshake that fails is an altered or misrouted hello */
    goto out;
  }
  int rc = ssl_read_full(ssl, buf, sizeof(buf));
  if (rc == E_EOF) {
    BK_INC(hello_short);
    goto out;
  }
  if (rc != 0 || memcmp(buf, TLS_REQUEST, sizeof(buf)) != 0) {
    BK_INC(hello_bad);
    goto out;
  }
  BK_INC(hello_ok);
  if (SSL_write(ssl, g_reply, (int)cfg.reply_len) != (int)cfg.reply_len) {
    BK_INC(reset);
    goto out;
  }
  /* The client sends nothing more but its close_notify. */
  int n = SSL_read(ssl, buf, 1);
  if (n > 0) {
    BK_INC(extra_data);
    goto out;
  }
  if (SSL_get_error(ssl, n) != SSL_ERROR_ZERO_RETURN) {
    BK_INC(reset);
    goto out;
  }
  SSL_shutdown(ssl); /* our close_notify; then close() sends the FIN */
  BK_INC(closed);
out:
  SSL_free(ssl);
  close(fd);
  return NULL;
}

static void on_signal(int sig)
{
  g_sig = sig;
}

static int run_server(const char *listen_s)
{
  if (bench_parse_addr(listen_s, &cfg.addr) != 0)
    return 2;
  g_ctx = SSL_CTX_new(TLS_server_method());
  if (g_ctx == NULL || SSL_CTX_use_certificate_chain_file(g_ctx, cfg.cert) != 1 ||
      SSL_CTX_use_PrivateKey_file(g_ctx, cfg.key, SSL_FILETYPE_PEM) != 1) {
    fprintf(stderr, "mcp-bench-tls: cannot load certificate/key\n");
    ERR_print_errors_fp(stderr);
    return 2;
  }
  /* Full handshakes only: no tickets, no server-side session cache. */
  SSL_CTX_set_num_tickets(g_ctx, 0);
  SSL_CTX_set_options(g_ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_OFF);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&cfg.addr, sizeof(cfg.addr)) != 0 ||
      listen(lfd, 1024) != 0) {
    fprintf(stderr, "mcp-bench-tls: listen on %s: %s\n", listen_s, strerror(errno));
    return 1;
  }
  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  while (!g_sig) {
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    if (poll(&p, 1, 500) <= 0)
      continue;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    BK_INC(accepted);
    pthread_t t;
    if (pthread_create(&t, &attr, server_conn, (void *)(intptr_t)fd) != 0) {
      BK_INC(reset);
      close(fd);
    }
  }
  printf("backend accepted=%lu hello_ok=%lu hello_bad=%lu hello_short=%lu extra_data=%lu "
         "reset=%lu closed=%lu\n",
         g_bk.accepted, g_bk.hello_ok, g_bk.hello_bad, g_bk.hello_short, g_bk.extra_data,
         g_bk.reset, g_bk.closed);
  fflush(stdout);
  return 0;
}

/* ---- client ---- */

typedef struct {
  pthread_t tid;
  long long ok;
  long long err[E_N];
  uint64_t *lat;
  size_t nlat, caplat;
} worker_t;

/* One connection. Returns 0 and the latency, or an E_* code. */
static int client_once(uint64_t *lat_ns)
{
  uint64_t t0 = bench_now_ns();
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return E_OTHER;
  set_timeouts(fd);
  int one = 1, rc = E_OTHER;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(fd, (struct sockaddr *)&cfg.addr, sizeof(cfg.addr)) != 0) {
    rc = errno == ECONNREFUSED ? E_REFUSED : errno == EINPROGRESS ? E_TIMEOUT : E_OTHER;
    close(fd);
    return rc;
  }
  SSL *ssl = SSL_new(g_ctx);
  uint8_t buf[4096];
  if (ssl == NULL || !SSL_set_fd(ssl, fd) || !SSL_set_tlsext_host_name(ssl, cfg.sni) ||
      !SSL_set1_host(ssl, cfg.sni))
    goto out;
  if (SSL_connect(ssl) != 1) {
    rc = (errno == ECONNRESET || errno == EPIPE) ? E_RESET : E_HANDSHAKE;
    goto out;
  }
  if (SSL_write(ssl, TLS_REQUEST, sizeof(TLS_REQUEST) - 1) != (int)sizeof(TLS_REQUEST) - 1) {
    rc = E_RESET;
    goto out;
  }
  if ((rc = ssl_read_full(ssl, buf, cfg.reply_len)) != 0)
    goto out;
  if (memcmp(buf, g_reply, cfg.reply_len) != 0) {
    rc = E_BAD;
    goto out;
  }
  *lat_ns = bench_now_ns() - t0;
  /* Normal TLS close: our close_notify, then the server's (nothing else may come). */
  SSL_shutdown(ssl);
  int n = SSL_read(ssl, buf, sizeof(buf));
  if (n > 0)
    rc = E_BAD;
  else if (SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN)
    rc = 0;
  else
    rc = errno == EAGAIN ? E_TIMEOUT : errno == ECONNRESET ? E_RESET : E_EOF;
out:
  if (rc != 0)
    ERR_clear_error();
  SSL_free(ssl);
  close(fd);
  return rc;
}

static void *client_worker(void *arg)
{
  worker_t *w = arg;
  while (!g_stop) {
    uint64_t lat = 0;
    int measuring = g_measuring;
    int rc = client_once(&lat);
    if (rc != 0) {
      w->err[rc]++; /* errors count whenever they happen, warm-up and drain included */
      continue;
    }
    if (!measuring || !g_measuring)
      continue; /* started before or finished after the window */
    w->ok++;
    if (w->nlat == w->caplat) {
      size_t cap = w->caplat ? w->caplat * 2 : 16384;
      uint64_t *p = realloc(w->lat, cap * sizeof(*p));
      if (p == NULL)
        continue;
      w->lat = p;
      w->caplat = cap;
    }
    w->lat[w->nlat++] = lat;
  }
  return NULL;
}

static long long ticks_of(const int *pids, int n)
{
  long long sum = 0;
  for (int i = 0; i < n; i++) {
    long long t = bench_proc_cpu_ticks(pids[i]);
    if (t < 0)
      return -1;
    sum += t;
  }
  return n > 0 ? sum : -1;
}

static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void sleep_s(double s)
{
  struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static double us_per(long long t0, long long t1, long long ok)
{
  if (t0 < 0 || t1 < 0 || ok <= 0)
    return NAN;
  return (double)(t1 - t0) * 1e6 / (double)sysconf(_SC_CLK_TCK) / (double)ok;
}

static int run_client(void)
{
  worker_t *w = calloc((size_t)cfg.conns, sizeof(*w));
  if (w == NULL)
    return 1;
  for (int i = 0; i < cfg.conns; i++)
    pthread_create(&w[i].tid, NULL, client_worker, &w[i]);
  sleep_s(cfg.warmup);
  int self = getpid();
  long long p0 = ticks_of(cfg.watch, cfg.n_watch), b0 = ticks_of(cfg.watch_bk, cfg.n_watch_bk);
  long long c0 = ticks_of(&self, 1);
  uint64_t t0 = bench_now_ns();
  g_measuring = 1;
  sleep_s(cfg.duration);
  g_measuring = 0;
  uint64_t t1 = bench_now_ns();
  long long p1 = ticks_of(cfg.watch, cfg.n_watch), b1 = ticks_of(cfg.watch_bk, cfg.n_watch_bk);
  long long c1 = ticks_of(&self, 1);
  g_stop = 1; /* connections in flight finish (bounded by the 10 s I/O timeouts) */
  long long ok = 0, err[E_N] = {0}, errors = 0;
  size_t nlat = 0;
  for (int i = 0; i < cfg.conns; i++) {
    pthread_join(w[i].tid, NULL);
    ok += w[i].ok;
    nlat += w[i].nlat;
    for (int e = 0; e < E_N; e++)
      err[e] += w[i].err[e];
  }
  uint64_t *lat = malloc((nlat + 1) * sizeof(*lat));
  size_t k = 0;
  for (int i = 0; i < cfg.conns && lat != NULL; i++) {
    memcpy(lat + k, w[i].lat, w[i].nlat * sizeof(*lat));
    k += w[i].nlat;
  }
  if (lat != NULL)
    qsort(lat, nlat, sizeof(*lat), cmp_u64);
  double win = (double)(t1 - t0) / 1e9;
  double p50 = nlat && lat ? (double)lat[(size_t)ceil(0.50 * (double)nlat) - 1] / 1e3 : NAN;
  double p99 = nlat && lat ? (double)lat[(size_t)ceil(0.99 * (double)nlat) - 1] / 1e3 : NAN;
  double px = us_per(p0, p1, ok), bk = us_per(b0, b1, ok), cl = us_per(c0, c1, ok);
  double total = (isnan(px) ? 0 : px) + (isnan(bk) ? 0 : bk) + (isnan(cl) ? 0 : cl);
  printf("load mode=tls conns=%d ok=%lld window_s=%.3f conn_per_s=%.1f p50_us=%.1f p99_us=%.1f "
         "cpu_us_per_conn=%.2f proxy_cpu_pct=%.1f backend_cpu_us_per_conn=%.2f "
         "client_cpu_us_per_conn=%.2f proxy_share_pct=%.1f",
         cfg.conns, ok, win, win > 0 ? (double)ok / win : 0.0, p50, p99, px,
         p0 >= 0 && p1 >= 0 && win > 0
             ? (double)(p1 - p0) * 100.0 / (double)sysconf(_SC_CLK_TCK) / win
             : NAN,
         bk, cl, isnan(px) || total <= 0 ? NAN : px * 100.0 / total);
  for (int e = 0; e < E_N; e++)
    errors += err[e];
  printf(" errors=%lld", errors);
  for (int e = 0; e < E_N; e++)
    printf(" err_%s=%lld", ERR_NAMES[e], err[e]);
  printf("\n");
  fflush(stdout);
  return errors == 0 && ok > 0 ? 0 : 1;
}

static int run_probe(void)
{
  uint64_t deadline = bench_now_ns() + (uint64_t)(cfg.duration * 1e9);
  int rc = E_OTHER;
  while (bench_now_ns() < deadline) {
    uint64_t lat;
    if ((rc = client_once(&lat)) == 0)
      return 0;
    sleep_s(0.05);
  }
  fprintf(stderr, "mcp-bench-tls: probe failed: %s\n", ERR_NAMES[rc]);
  return 1;
}

static int parse_pids(const char *v, int *out, int *n)
{
  char *copy = strdup(v), *save = NULL;
  for (char *t = strtok_r(copy, ",", &save); t != NULL && *n < 16; t = strtok_r(NULL, ",", &save))
    if ((out[(*n)++] = atoi(t)) <= 0) {
      free(copy);
      return -1;
    }
  free(copy);
  return 0;
}

static int usage(void)
{
  fprintf(stderr,
          "usage: mcp-bench-tls server --listen ADDR:PORT --cert PEM --key PEM [--reply-bytes N]\n"
          "       mcp-bench-tls client|probe --connect ADDR:PORT --ca PEM [--sni NAME]\n"
          "           [--conns C] [--duration S] [--warmup S] [--reply-bytes N]\n"
          "           [--watch PID,...] [--watch-backend PID,...]\n");
  return 2;
}

int main(int argc, char **argv)
{
  if (argc < 2)
    return usage();
  const char *role = argv[1], *addr_s = NULL;
  for (int i = 2; i < argc; i += 2) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (v == NULL)
      return usage();
    if (strcmp(a, "--listen") == 0 || strcmp(a, "--connect") == 0)
      addr_s = v;
    else if (strcmp(a, "--cert") == 0)
      cfg.cert = v;
    else if (strcmp(a, "--key") == 0)
      cfg.key = v;
    else if (strcmp(a, "--ca") == 0)
      cfg.ca = v;
    else if (strcmp(a, "--sni") == 0)
      cfg.sni = v;
    else if (strcmp(a, "--reply-bytes") == 0)
      cfg.reply_len = strtoul(v, NULL, 10);
    else if (strcmp(a, "--conns") == 0)
      cfg.conns = atoi(v);
    else if (strcmp(a, "--duration") == 0)
      cfg.duration = atof(v);
    else if (strcmp(a, "--warmup") == 0)
      cfg.warmup = atof(v);
    else if (strcmp(a, "--watch") == 0) {
      if (parse_pids(v, cfg.watch, &cfg.n_watch) != 0)
        return usage();
    } else if (strcmp(a, "--watch-backend") == 0) {
      if (parse_pids(v, cfg.watch_bk, &cfg.n_watch_bk) != 0)
        return usage();
    } else
      return usage();
  }
  if (addr_s == NULL || cfg.reply_len < strlen(BENCH_REPLY_MAGIC) || cfg.reply_len > 4096 ||
      cfg.conns < 1 || cfg.conns > 1024 || cfg.duration <= 0 || cfg.duration > 3600 ||
      cfg.warmup < 0)
    return usage();
  signal(SIGPIPE, SIG_IGN);
  g_reply = malloc(cfg.reply_len);
  if (g_reply == NULL)
    return 1;
  bench_reply_fill(g_reply, cfg.reply_len);
  if (strcmp(role, "server") == 0) {
    if (cfg.cert == NULL || cfg.key == NULL)
      return usage();
    return run_server(addr_s);
  }
  if (strcmp(role, "client") != 0 && strcmp(role, "probe") != 0)
    return usage();
  if (cfg.ca == NULL || bench_parse_addr(addr_s, &cfg.addr) != 0)
    return usage();
  g_ctx = SSL_CTX_new(TLS_client_method());
  if (g_ctx == NULL || SSL_CTX_load_verify_locations(g_ctx, cfg.ca, NULL) != 1) {
    fprintf(stderr, "mcp-bench-tls: cannot load CA %s\n", cfg.ca);
    return 2;
  }
  SSL_CTX_set_verify(g_ctx, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_OFF);
  return strcmp(role, "probe") == 0 ? run_probe() : run_client();
}
