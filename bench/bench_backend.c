/* mcp-bench-backend: the server side of the benchmark.
 *
 * It accepts connections, checks that the first bytes of each one are exactly the ClientHello
 * the load generator sends (so a proxy that alters, truncates or misroutes the hello is caught
 * here), then either replies with a fixed-size block and waits for the client to go away
 * ("reply" mode: rate and idle benchmarks) or streams a known pattern until the peer closes
 * ("stream" mode: throughput benchmarks).
 *
 * One thread, level-triggered epoll, non-blocking sockets. On SIGTERM/SIGINT it prints one line
 * of counters ("backend accepted=... hello_ok=... hello_bad=... ...") and exits 0.
 *
 * In reply mode the connection ends when the client side closes: with --close rst (the default)
 * the backend then closes with RST, with --close fin it closes normally (a FIN), which is what a
 * real server does and what the load generator's --close fin waits for.
 *
 * Usage: mcp-bench-backend --listen ADDR:PORT --hello FILE [--mode reply|stream]
 *                          [--reply-bytes N] [--close rst|fin] */
#include "bench_common.h"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/sendfile.h>

enum bk_phase { BK_HELLO, BK_REPLY, BK_WAIT_CLOSE, BK_STREAM };

/* One accepted connection; owned by the loop, freed when the socket is closed. */
typedef struct {
  int fd;
  enum bk_phase phase;
  size_t matched; /* hello bytes received and equal so far */
  uint64_t sent;  /* reply/stream bytes written */
  int out_armed;  /* EPOLLOUT is in the interest set (a write backed up) */
} bk_conn_t;

#define STREAM_CHUNK (256u * 1024u)
/* The stream is sent with sendfile(2) from a memory file holding the pattern, so the backend
 * does not copy the bytes it streams: on loopback the generator and the backend share one core,
 * and their own copies would otherwise cap the throughput any proxy can show. The file holds a
 * whole number of pattern periods so that wrapping around it keeps the pattern continuous. */
#define STREAM_FILE_SIZE (64u * BENCH_PATTERN_PERIOD)

static volatile sig_atomic_t g_stop;
static const uint8_t *g_hello;
static size_t g_hello_len;
static uint8_t *g_reply;
static size_t g_reply_len = 1024;
static int g_stream_fd = -1; /* memfd of STREAM_FILE_SIZE pattern bytes */
static int g_stream;
static int g_close_fin; /* --close fin: the normal end of a reply connection closes with FIN */
static int g_ep;

static struct {
  unsigned long long accepted, hello_ok, hello_bad, hello_short, extra_data, reset, closed;
} g_stats;

static void on_signal(int sig)
{
  g_stop = 1;
}

static void conn_free_how(bk_conn_t *c, int fin)
{
  /* close() alone takes the socket out of the epoll set. */
  /* By default closing with RST also in the normal case: the peer (a proxy) has closed already,
   * so a FIN would only leave a TIME_WAIT socket on the proxy's side for every benchmarked
   * connection. --close fin asks for the normal close instead. */
  if (fin)
    close(c->fd);
  else
    bench_close_reset(c->fd);
  g_stats.closed++;
  free(c);
}

static void conn_free(bk_conn_t *c)
{
  conn_free_how(c, 0);
}

static void want(bk_conn_t *c, uint32_t events)
{
  struct epoll_event ev = {.events = events, .data.ptr = c};
  epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes as much of the reply or stream as the socket takes. Returns -1 when the connection
 * was closed (and freed). */
static int conn_write(bk_conn_t *c)
{
  for (;;) {
    ssize_t n;
    if (c->phase == BK_REPLY) {
      if (c->sent >= g_reply_len) {
        c->phase = BK_WAIT_CLOSE;
        if (c->out_armed)
          want(c, EPOLLIN);
        c->out_armed = 0;
        return 0;
      }
      n = send(c->fd, g_reply + c->sent, g_reply_len - (size_t)c->sent, MSG_NOSIGNAL);
    } else {
      off_t off = (off_t)(c->sent % STREAM_FILE_SIZE);
      size_t len = STREAM_FILE_SIZE - (size_t)off;
      n = sendfile(c->fd, g_stream_fd, &off, len < STREAM_CHUNK ? len : STREAM_CHUNK);
    }
    if (n > 0) {
      c->sent += (uint64_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN) {
      if (!c->out_armed)
        want(c, EPOLLOUT);
      c->out_armed = 1;
      return 0;
    }
    /* The peer went away: the normal end of a stream. */
    g_stats.reset++;
    conn_free(c);
    return -1;
  }
}

static void conn_readable(bk_conn_t *c)
{
  uint8_t buf[4096];
  if (c->phase == BK_HELLO) {
    /* Read no further than the hello: anything after it is checked separately. */
    size_t want_len = g_hello_len - c->matched;
    if (want_len > sizeof(buf))
      want_len = sizeof(buf);
    ssize_t n = recv(c->fd, buf, want_len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
      return;
    if (n <= 0) {
      g_stats.hello_short++;
      conn_free(c);
      return;
    }
    if (memcmp(buf, g_hello + c->matched, (size_t)n) != 0) {
      g_stats.hello_bad++;
      conn_free(c);
      return;
    }
    c->matched += (size_t)n;
    if (c->matched < g_hello_len)
      return;
    g_stats.hello_ok++;
    c->phase = g_stream ? BK_STREAM : BK_REPLY;
    conn_write(c);
    return;
  }
  /* After the hello the client sends nothing: data is an error, EOF or RST is the end. */
  ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  if (n > 0)
    g_stats.extra_data++;
  else if (n < 0)
    g_stats.reset++;
  conn_free_how(c, n == 0 && g_close_fin && c->phase == BK_WAIT_CLOSE);
}

static void accept_all(int lfd)
{
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
      return;
    bk_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
      close(fd);
      continue;
    }
    c->fd = fd;
    c->phase = BK_HELLO;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
      close(fd);
      free(c);
      continue;
    }
    g_stats.accepted++;
  }
}

static int usage(void)
{
  fprintf(stderr, "usage: mcp-bench-backend --listen ADDR:PORT --hello FILE "
                  "[--mode reply|stream] [--reply-bytes N] [--close rst|fin]\n");
  return 2;
}

int main(int argc, char **argv)
{
  const char *listen_s = NULL, *hello_path = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (v == NULL)
      return usage();
    if (strcmp(a, "--listen") == 0)
      listen_s = v;
    else if (strcmp(a, "--hello") == 0)
      hello_path = v;
    else if (strcmp(a, "--mode") == 0) {
      if (strcmp(v, "stream") == 0)
        g_stream = 1;
      else if (strcmp(v, "reply") != 0)
        return usage();
    } else if (strcmp(a, "--close") == 0) {
      if (strcmp(v, "fin") == 0)
        g_close_fin = 1;
      else if (strcmp(v, "rst") != 0)
        return usage();
    } else if (strcmp(a, "--reply-bytes") == 0) {
      g_reply_len = strtoul(v, NULL, 10);
      if (g_reply_len < strlen(BENCH_REPLY_MAGIC) || g_reply_len > (1u << 20))
        return usage();
    } else
      return usage();
    i++;
  }
  if (listen_s == NULL || hello_path == NULL)
    return usage();

  struct sockaddr_in addr;
  if (bench_parse_addr(listen_s, &addr) != 0) {
    fprintf(stderr, "mcp-bench-backend: bad address %s\n", listen_s);
    return 2;
  }
  uint8_t *hello;
  ssize_t hl = bench_load_file(hello_path, &hello, BENCH_HELLO_MAX);
  if (hl <= 0) {
    fprintf(stderr, "mcp-bench-backend: cannot read hello %s\n", hello_path);
    return 2;
  }
  g_hello = hello;
  g_hello_len = (size_t)hl;
  g_reply = malloc(g_reply_len);
  uint8_t *pattern = malloc(STREAM_FILE_SIZE);
  if (g_reply == NULL || pattern == NULL)
    return 1;
  bench_reply_fill(g_reply, g_reply_len);
  bench_pattern_fill(pattern, STREAM_FILE_SIZE);
  g_stream_fd = memfd_create("mcp-bench-stream", MFD_CLOEXEC);
  if (g_stream_fd < 0 || write(g_stream_fd, pattern, STREAM_FILE_SIZE) != STREAM_FILE_SIZE) {
    fprintf(stderr, "mcp-bench-backend: memfd: %s\n", strerror(errno));
    return 1;
  }
  free(pattern);

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(lfd, 4096) != 0) {
    fprintf(stderr, "mcp-bench-backend: listen on %s: %s\n", listen_s, strerror(errno));
    return 1;
  }
  g_ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(g_ep, EPOLL_CTL_ADD, lfd, &lev);

  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  struct epoll_event evs[256];
  while (!g_stop) {
    int n = epoll_wait(g_ep, evs, 256, 500);
    for (int i = 0; i < n; i++) {
      bk_conn_t *c = evs[i].data.ptr;
      if (c == NULL) {
        accept_all(lfd);
        continue;
      }
      if (evs[i].events & EPOLLOUT)
        conn_write(c);
      else
        conn_readable(c);
    }
  }
  printf("backend accepted=%llu hello_ok=%llu hello_bad=%llu hello_short=%llu extra_data=%llu "
         "reset=%llu closed=%llu\n",
         g_stats.accepted, g_stats.hello_ok, g_stats.hello_bad, g_stats.hello_short,
         g_stats.extra_data, g_stats.reset, g_stats.closed);
  fflush(stdout);
  return 0;
}
