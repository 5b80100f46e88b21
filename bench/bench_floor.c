/* mcp-bench-floor: the least a single-threaded L4 relay can do per connection; the "floor"
 * target of bench/run.sh, a reference beside "direct".
 *
 * It makes the system calls any proxy of this kind has to make, and nothing else: accept4,
 * read the client's first bytes, socket + TCP_NODELAY + connect to the one backend, register both
 * sockets once on one edge-triggered epoll instance, send the first bytes on, relay with read
 * and send, pass an EOF on (with --half-close on, the default) as shutdown(SHUT_WR), close. No
 * ClientHello parsing, no routing, no timers, no log, no limits: what it costs per connection is
 * the kernel's own work for a relayed connection plus a minimal event loop, i.e. the floor under
 * every proxy measured here (docs/PERFORMANCE.md, "Round five").
 *
 * It relays correctly (backpressure, half-closes, resets), so every check of the harness applies
 * to it as to the proxies; it copies rather than splices, so its streaming figures are a copy
 * relay's. With --half-close off it closes both sides on the first EOF, as nginx's stream module
 * and sniproxy do.
 *
 * Usage: mcp-bench-floor --listen ADDR:PORT --backend ADDR:PORT [--half-close on|off] */
#include "bench_common.h"

#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>

#define BUF_SIZE 16384
#define EVENTS 128

/* One direction: bytes read from src not yet written to dst, and how it ended. */
typedef struct {
  uint8_t *pending; /* malloc'd BUF_SIZE, only while a write is short */
  size_t off, len;
  int eof;  /* src reached EOF */
  int shut; /* EOF passed on */
} dir_t;

/* One relayed connection. Sockets are [0] client, [1] backend; dirs[0] is client -> backend. */
typedef struct fl_conn {
  int fd[2];
  int connected; /* the backend's connect finished and the first bytes went out */
  int dead;      /* closed during this batch of events; freed after it */
  dir_t dirs[2];
  struct fl_conn *next_dead;
} fl_conn_t;

static volatile sig_atomic_t g_stop;
static int g_ep, g_half_close = 1;
static struct sockaddr_in g_backend;
static fl_conn_t *g_dead;
static uint8_t g_buf[BUF_SIZE];

static void on_signal(int sig)
{
  (void)sig;
  g_stop = 1;
}

static void conn_close(fl_conn_t *c)
{
  if (c->dead)
    return;
  c->dead = 1;
  for (int i = 0; i < 2; i++) {
    if (c->fd[i] >= 0)
      close(c->fd[i]);
    free(c->dirs[i].pending);
  }
  c->next_dead = g_dead;
  g_dead = c;
}

static int watch(fl_conn_t *c, int side)
{
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                           .data.u64 = (uint64_t)(uintptr_t)c | (uint64_t)side};
  return epoll_ctl(g_ep, EPOLL_CTL_ADD, c->fd[side], &ev);
}

/* Writes what d holds to fd. Returns 1 when all of it is out, 0 when the socket is full, -1. */
static int flush(dir_t *d, int fd)
{
  while (d->off < d->len) {
    ssize_t n = send(fd, d->pending + d->off, d->len - d->off, MSG_NOSIGNAL);
    if (n < 0 && errno == EAGAIN)
      return 0;
    if (n <= 0)
      return -1;
    d->off += (size_t)n;
  }
  free(d->pending);
  d->pending = NULL;
  d->off = d->len = 0;
  return 1;
}

/* Sends buf on, keeping what the socket does not take. Returns 0, or -1 on an error. */
static int forward(dir_t *d, int fd, const uint8_t *buf, size_t len)
{
  ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
  if (n < 0 && errno != EAGAIN)
    return -1;
  if (n < 0)
    n = 0;
  if ((size_t)n < len) {
    d->pending = malloc(BUF_SIZE);
    if (d->pending == NULL)
      return -1;
    memcpy(d->pending, buf + n, len - (size_t)n);
    d->off = 0;
    d->len = len - (size_t)n;
  }
  return 0;
}

/* Passes direction i's EOF on (nothing is pending: a source is read only when its direction has
 * nothing pending); closes the pair when both directions have ended. */
static void pass_eof(fl_conn_t *c, int i)
{
  c->dirs[i].shut = 1;
  if (!g_half_close || c->dirs[1 - i].shut) {
    conn_close(c); /* close(2) sends the FIN */
    return;
  }
  if (shutdown(c->fd[1 - i], SHUT_WR) != 0)
    conn_close(c);
}

/* Moves bytes from side i to the other side until src is drained or dst is full. */
static void pump(fl_conn_t *c, int i)
{
  dir_t *d = &c->dirs[i];
  while (!c->dead && !d->eof && d->pending == NULL) {
    ssize_t n = read(c->fd[i], g_buf, sizeof(g_buf));
    if (n < 0 && errno == EAGAIN)
      return;
    if (n < 0) {
      conn_close(c);
      return;
    }
    if (n == 0) {
      d->eof = 1;
      pass_eof(c, i);
      return;
    }
    if (forward(d, c->fd[1 - i], g_buf, (size_t)n) != 0) {
      conn_close(c);
      return;
    }
    if ((size_t)n < sizeof(g_buf))
      return; /* a short read drained the socket; the next edge says when more comes */
  }
}

static void on_event(fl_conn_t *c, int side, uint32_t events)
{
  if (side == 1 && !c->connected) {
    if (events & (EPOLLERR | EPOLLHUP)) {
      conn_close(c);
      return;
    }
    if (!(events & EPOLLOUT))
      return;
    c->connected = 1;
    if (flush(&c->dirs[0], c->fd[1]) < 0 || watch(c, 0) != 0) { /* the client's first bytes */
      conn_close(c);
      return;
    }
  }
  if (!c->connected)
    return; /* client bytes wait in the kernel until the backend is there */
  if (events & EPOLLOUT) {
    /* side's socket can take more: finish the direction writing to it, then resume its source */
    dir_t *d = &c->dirs[1 - side];
    if (d->pending != NULL) {
      int r = flush(d, c->fd[side]);
      if (r < 0) {
        conn_close(c);
        return;
      }
      if (r == 1)
        pump(c, 1 - side);
    }
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))
    pump(c, side);
}

static void on_accept(int lfd)
{
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
      return;
    fl_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
      close(fd);
      continue;
    }
    c->fd[0] = fd;
    c->fd[1] = -1;
    /* The client's first bytes (on loopback they are there already); read again only if not. */
    ssize_t n = read(fd, g_buf, sizeof(g_buf));
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
      close(fd);
      free(c);
      continue;
    }
    dir_t *d = &c->dirs[0];
    d->pending = malloc(BUF_SIZE);
    if (d->pending == NULL) {
      close(fd);
      free(c);
      continue;
    }
    d->len = n > 0 ? (size_t)n : 0;
    memcpy(d->pending, g_buf, d->len);
    int one = 1;
    c->fd[1] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd[1] < 0 || setsockopt(c->fd[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        (connect(c->fd[1], (struct sockaddr *)&g_backend, sizeof(g_backend)) != 0 &&
         errno != EINPROGRESS) ||
        watch(c, 1) != 0) {
      conn_close(c);
      continue;
    }
  }
}

int main(int argc, char **argv)
{
  struct sockaddr_in listen_addr;
  int have_listen = 0, have_backend = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--listen") && bench_parse_addr(argv[i + 1], &listen_addr) == 0)
      have_listen = 1;
    else if (!strcmp(argv[i], "--backend") && bench_parse_addr(argv[i + 1], &g_backend) == 0)
      have_backend = 1;
    else if (!strcmp(argv[i], "--half-close") && !strcmp(argv[i + 1], "on"))
      g_half_close = 1;
    else if (!strcmp(argv[i], "--half-close") && !strcmp(argv[i + 1], "off"))
      g_half_close = 0;
    else
      have_listen = -1;
  }
  if (have_listen != 1 || !have_backend || argc % 2 != 1) {
    fprintf(stderr,
            "usage: mcp-bench-floor --listen ADDR:PORT --backend ADDR:PORT [--half-close on|off]\n");
    return 2;
  }
  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  int one = 1;
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  /* Accepted sockets inherit TCP_NODELAY from the listener. */
  if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
      bind(lfd, (struct sockaddr *)&listen_addr, sizeof(listen_addr)) != 0 ||
      listen(lfd, 4096) != 0) {
    perror("mcp-bench-floor: listen");
    return 1;
  }
  g_ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event lev = {.events = EPOLLIN, .data.u64 = 0};
  if (g_ep < 0 || epoll_ctl(g_ep, EPOLL_CTL_ADD, lfd, &lev) != 0) {
    perror("mcp-bench-floor: epoll");
    return 1;
  }
  struct epoll_event evs[EVENTS];
  while (!g_stop) {
    int n = epoll_wait(g_ep, evs, EVENTS, -1);
    for (int i = 0; i < n; i++) {
      if (evs[i].data.u64 == 0) {
        on_accept(lfd);
        continue;
      }
      fl_conn_t *c = (fl_conn_t *)(uintptr_t)(evs[i].data.u64 & ~(uint64_t)1);
      if (!c->dead)
        on_event(c, (int)(evs[i].data.u64 & 1), evs[i].events);
    }
    while (g_dead != NULL) {
      fl_conn_t *c = g_dead;
      g_dead = c->next_dead;
      free(c);
    }
  }
  return 0;
}
