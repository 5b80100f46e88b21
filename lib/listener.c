/*
 * listener: a listening address and the first part of every connection's life, in the order it
 * happens: accept -> limit -> PROXY header -> firewall -> per-client limits -> ClientHello ->
 * route (exact, wildcard, fallback) -> hand-off to relay.c, which connects to the backend and
 * relays. The connection object, its buffers, its timeouts and its close are conn.c's. After the
 * life of a connection come the listener's own functions: creating, starting, publishing routes,
 * firewalls and settings, stopping and freeing.
 * See docs/ARCHITECTURE.md.
 *
 * Longer than ~600 lines on purpose: the accept path (with the descriptor reserve) and the
 * listener's own lifecycle share one private struct and its handles; splitting them would
 * expose that struct to a second file. The steps a connection takes before its backend read
 * best as one file top to bottom; the parsers they call (sni.c, proxy_protocol.c) and the
 * client table (client_limits.c) live elsewhere.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend_internal.h"
#include "conn_internal.h"
#include "mcproxy/listener.h"
#include "mcproxy/proxy_protocol.h"
#include "relay.h"

#define DEFAULT_HANDSHAKE_MS 10000
#define DEFAULT_CONNECT_MS 5000
#define DEFAULT_IDLE_MS 300000
#define LISTEN_BACKLOG 4096
#define ACCEPT_BATCH 64
#define ACCEPT_PAUSE_MS 100

/*
 * A listener. Allocated by mcp_listener_new, freed once mcp_listener_free has closed its
 * handles and its last connection has been released. Loop thread only, except the counters
 * (atomics, see conn_internal.h).
 */
struct mcp_listener_s {
  uv_loop_t *loop;
  int fd;                  /* the listening socket; -1 until started and after stop */
  uv_poll_t accept_poll;   /* readable: connections are waiting to be accepted */
  uv_timer_t accept_pause; /* accepting paused while out of descriptors */
  int listening;
  int paused_reserve; /* paused at the descriptor reserve (told once per pause) */
  int fd_limit;       /* RLIMIT_NOFILE when it started */
  int fd_line;        /* the first descriptor number inside the reserve (see fd_reserve) */
  int fd_base;        /* descriptors in use when it started: not the data plane's */
  int handles_open; /* handles whose close callback is still to come */
  int freeing;
  void (*free_done)(void *data);
  void *free_data;

  struct sockaddr_storage addr;
  char addr_text[64];
  mcp_listener_config_t cfg;

  mcp_routes_t *routes;
  mcp_firewall_t *firewall;
  int proxy_on;                  /* a PROXY header comes first (mcp_listener_set_proxy_protocol) */
  mcp_firewall_t *proxy_trusted; /* the peers that may send one */

  mcp__conns_t conns;        /* pools, timeout lists and free list of its connections */
  mcp__counters_t *counters; /* shared with the listeners on the same address, if any */
};

/* The listener a connection (or its conns) belongs to. */
#define LISTENER_OF_CONNS(cs) ((mcp_listener_t *)((char *)(cs) - offsetof(mcp_listener_t, conns)))
#define LISTENER_OF(c) LISTENER_OF_CONNS((c)->cs)

/* ---- accept ---- */

static void accepted(mcp_listener_t *l, int fd, const struct sockaddr_in6 *sa, socklen_t salen);
static void on_accept_resume(uv_timer_t *t);

/* Tells the embedder (cfg.on_error) what the listener cannot say through a return value. */
static void report(mcp_listener_t *l, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void report(mcp_listener_t *l, int err, const char *fmt, ...)
{
  if (!l->cfg.on_error)
    return;
  char msg[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  l->cfg.on_error(l->cfg.data, err, msg);
}

/*
 * The descriptor reserve: the data plane never takes the process's last descriptors, so that
 * other parts of the process (an admin API, the database, log files) can always open one. The
 * reserve is MCP_LISTENER_FD_RESERVE descriptors (half the limit when the limit is below twice
 * that). Two checks, both cheap:
 *  - an accepted descriptor's number: the kernel hands out the lowest free number, so a
 *    descriptor at or past fd_line means that at most the reserve is left; it is closed at once;
 *  - the data plane's own count (mcp__conn_live_total: every live connection may hold two, its
 *    client and its backend) against what the limit leaves after the reserve and the
 *    descriptors in use when the listener started, so the backends of connections still in
 *    their handshake cannot eat into the reserve later.
 * At the reserve accepting pauses as for EMFILE, and resumes once both are below again.
 */
static int fd_reserve(int limit)
{
  return limit < 2 * MCP_LISTENER_FD_RESERVE ? limit / 2 : MCP_LISTENER_FD_RESERVE;
}

static void fd_reserve_init(mcp_listener_t *l)
{
  struct rlimit rl;
  int limit = 1 << 20;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      rl.rlim_cur < (rlim_t)limit)
    limit = (int)rl.rlim_cur;
  l->fd_limit = limit;
  l->fd_line = limit - fd_reserve(limit);
  int probe = fcntl(l->fd, F_DUPFD_CLOEXEC, 0);
  l->fd_base = probe >= 0 ? probe : 0;
  if (probe >= 0)
    close(probe);
}

/* 1 when the data plane's connections may need more than the reserve leaves them. */
static int at_reserve_by_count(const mcp_listener_t *l)
{
  return 2 * mcp__conn_live_total() + 2 > (int64_t)(l->fd_line - l->fd_base);
}

/* 1 when the lowest free descriptor is inside the reserve. */
static int at_reserve_by_number(const mcp_listener_t *l)
{
  int probe = fcntl(l->fd, F_DUPFD_CLOEXEC, 0);
  if (probe < 0)
    return 1;
  close(probe);
  return probe >= l->fd_line;
}

static void accept_pause(mcp_listener_t *l)
{
  uv_poll_stop(&l->accept_poll);
  uv_timer_start(&l->accept_pause, on_accept_resume, ACCEPT_PAUSE_MS, 0);
}

static void reserve_reached(mcp_listener_t *l)
{
  if (!l->paused_reserve)
    report(l, UV_EMFILE,
           "listener %s: descriptor reserve reached (limit %d, reserve %d, %lld connections "
           "live); accepting paused",
           l->addr_text, l->fd_limit, l->fd_limit - l->fd_line,
           (long long)mcp__conn_live_total());
  l->paused_reserve = 1;
  accept_pause(l);
}

/*
 * Accepts what is waiting, a bounded batch per wake-up so one busy listener cannot starve the
 * loop. Out of descriptors (EMFILE, ENFILE), at the descriptor reserve, or out of kernel
 * memory, accepting pauses for ACCEPT_PAUSE_MS instead of spinning on a listening socket that
 * stays readable; the waiting connections stay queued in the kernel until then.
 * An error on the listening socket itself (status < 0: libuv has then stopped the poll handle)
 * is reported and accepting restarts after the same pause, so it never silently ends.
 */
static void refused_at_reserve(mcp_listener_t *l, int fd, const struct sockaddr_in6 *sa,
                               socklen_t salen);

static void accept_batch(mcp_listener_t *l);

static void on_acceptable(uv_poll_t *h, int status, int events)
{
  mcp_listener_t *l = h->data;
  (void)events;
  if (status < 0) {
    MCP__COUNT(l->counters, accept_errors_total, 1);
    report(l, status, "listener %s: error on the listening socket (%s); accepting again in %d ms",
           l->addr_text, uv_strerror(status), ACCEPT_PAUSE_MS);
    if (l->listening)
      accept_pause(l);
    return;
  }
  /* Closed connections are released at the unhold: accepted() may look at one after. */
  mcp__conns_hold(&l->conns);
  accept_batch(l);
  mcp__conns_unhold(&l->conns);
}

static void accept_batch(mcp_listener_t *l)
{
  for (int i = 0; i < ACCEPT_BATCH && l->listening; i++) {
    if (at_reserve_by_count(l)) {
      reserve_reached(l);
      return;
    }
    struct sockaddr_in6 sa;
    socklen_t salen = sizeof(sa);
    int fd = accept4(l->fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      if (fd >= l->fd_line) {
        /* Inside the reserve: refuse it (a normal close) and wait for descriptors. */
        refused_at_reserve(l, fd, &sa, salen);
        reserve_reached(l);
        return;
      }
      accepted(l, fd, &sa, salen);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
      continue;
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
      accept_pause(l);
    return; /* EAGAIN, or an error the next wake-up may not have */
  }
}

static void on_accept_resume(uv_timer_t *t)
{
  mcp_listener_t *l = t->data;
  if (!l->listening)
    return;
  if (l->paused_reserve) {
    if (at_reserve_by_count(l) || at_reserve_by_number(l)) {
      uv_timer_start(&l->accept_pause, on_accept_resume, ACCEPT_PAUSE_MS, 0);
      return;
    }
    l->paused_reserve = 0;
    report(l, 0, "listener %s: below the descriptor reserve again; accepting resumed",
           l->addr_text);
  }
  uv_poll_start(&l->accept_poll, UV_READABLE, on_acceptable);
}

static int take_slot(mcp_listener_t *l);
static int admit(mcp__conn_t *c);
static void proxy_error(mcp__conn_t *c);
static void hello_first_read(mcp__conn_t *c, int fd);
static void hello_io(mcp__conn_t *c, mcp__sock_t *s);

/*
 * The connection object for a descriptor just accepted, counted as accepted; NULL when it
 * could not be made (the descriptor is closed, and the connection counted under fail_outcome:
 * unrouted or limit).
 */
static mcp__conn_t *conn_open(mcp_listener_t *l, int fd, const struct sockaddr_in6 *sa,
                              socklen_t salen, mcp_conn_outcome_t fail_outcome)
{
  MCP__COUNT(l->counters, accepted_total, 1);
  mcp__conn_t *c;
  if (mcp__conn_new(&l->conns, &c) != 0) {
    /* Out of memory: it cannot be served or logged, but it was accepted and is counted. */
    if (fail_outcome == MCP_CONN_OUTCOME_LIMIT)
      MCP__COUNT(l->counters, rejected_limit_total, 1);
    else
      MCP__COUNT(l->counters, unrouted_total, 1);
    close(fd);
    return NULL;
  }
  memcpy(&c->client_addr, sa, salen < sizeof(c->client_addr) ? salen : sizeof(c->client_addr));
  c->client.fd = fd; /* non-blocking from accept4: it joins the event set when it must wait */
  c->on_io = hello_io;
  return c;
}

/*
 * A descriptor handed out inside the reserve: the connection is refused as at max_connections
 * (outcome limit, a normal close), so it leaves a log line and counts under
 * mcproxy_connections_total{outcome="limit"} as well as rejected_limit_total. At most one per
 * pause (ACCEPT_PAUSE_MS) per listener, so a flood cannot fill the log with them.
 */
static void refused_at_reserve(mcp_listener_t *l, int fd, const struct sockaddr_in6 *sa,
                               socklen_t salen)
{
  mcp__conn_t *c = conn_open(l, fd, sa, salen, MCP_CONN_OUTCOME_LIMIT);
  if (!c)
    return;
  MCP__COUNT(l->counters, rejected_limit_total, 1);
  mcp__conn_close(c, MCP_CONN_OUTCOME_LIMIT);
}

/* A connection accepted on fd, from the client at sa: limit, firewall, then the ClientHello. */
static void accepted(mcp_listener_t *l, int fd, const struct sockaddr_in6 *sa, socklen_t salen)
{
  mcp__conn_t *c = conn_open(l, fd, sa, salen, MCP_CONN_OUTCOME_UNROUTED);
  if (!c)
    return;

  if (!take_slot(l)) {
    MCP__COUNT(l->counters, rejected_limit_total, 1);
    mcp__conn_close(c, MCP_CONN_OUTCOME_LIMIT);
    return;
  }
  c->counted = 1;
  if (l->proxy_on) {
    /* The firewall and the per-client limits wait for the client address in the header. */
    if (!l->proxy_trusted ||
        !mcp_firewall_check(l->proxy_trusted, (struct sockaddr *)&c->client_addr)) {
      c->reset = 1;
      proxy_error(c);
      return;
    }
    c->proxy_pending = 1;
  } else if (!admit(c)) {
    return;
  }
  mcp__conn_timeout_set(c, MCP__T_HANDSHAKE);
  hello_first_read(c, fd);
}

/* ---- limit ---- */

/*
 * Counts the connection as active unless the listener is at its limit. Increment first, then
 * compare, so that loops sharing the counters can never together exceed the limit.
 */
static int take_slot(mcp_listener_t *l)
{
  int64_t max = atomic_load_explicit(&l->counters->max_connections, memory_order_relaxed);
  int64_t before = MCP__COUNT(l->counters, active, 1);
  if (max > 0 && before >= max) {
    MCP__COUNT(l->counters, active, -1);
    return 0;
  }
  return 1;
}

/* ---- firewall and per-client limits ---- */

/*
 * The checks on the client address (after the PROXY header, when there is one): the firewall
 * (RST), then the per-client limits (FIN). Returns 1 to go on, 0 when c has been closed.
 */
static int admit(mcp__conn_t *c)
{
  mcp_listener_t *l = LISTENER_OF(c);
  if (l->firewall && mcp_firewall_check(l->firewall, (struct sockaddr *)&c->client_addr)) {
    MCP__COUNT(l->counters, blocked_total, 1);
    mcp__conn_close(c, MCP_CONN_OUTCOME_BLOCKED);
    return 0;
  }
  if (!atomic_load_explicit(&l->counters->climits_on, memory_order_relaxed))
    return 1;
  mcp_client_limits_t *t = atomic_load(&l->counters->climits);
  mcp_client_limits_key_t key;
  if (!t || mcp_client_limits_key((struct sockaddr *)&c->client_addr, &key) != 0)
    return 1;
  int rc = mcp_client_limits_acquire(t, &key, uv_now(l->loop));
  if (rc == MCP_ERATELIMITED) {
    MCP__COUNT(l->counters, rate_limited_total, 1);
    mcp__conn_close(c, MCP_CONN_OUTCOME_RATE_LIMITED);
    return 0;
  }
  if (rc == 0) {
    c->limits_key = key;
    c->limits_held = 1;
  }
  return 1;
}

/* ---- the PROXY header ---- */

/* An untrusted peer (reset: c->reset is set), or a bad, truncated or slow header (FIN). */
static void proxy_error(mcp__conn_t *c)
{
  MCP__COUNT(c->cs->counters, proxy_error_total, 1);
  mcp__conn_close(c, MCP_CONN_OUTCOME_PROXY_ERROR);
}

static void keep_reading(mcp__conn_t *c);

/*
 * The bytes so far (c->hello) start with the PROXY header. Once it is complete, takes its
 * addresses, drops it from the buffer (what follows is the ClientHello's) and admits the client.
 * Returns 0 to go on with the hello, 1 when c waits for more bytes or has been closed.
 */
static int proxy_header(mcp__conn_t *c)
{
  mcp_proxy_protocol_t pp;
  int n = mcp_proxy_protocol_parse((const uint8_t *)c->hello->data, c->hello_len, &pp);
  if (n == MCP_PROXY_PROTOCOL_NEED_MORE) {
    keep_reading(c); /* the chunk always holds the largest header accepted */
    return 1;
  }
  if (n < 0) {
    proxy_error(c);
    return 1;
  }
  if (pp.use_addresses) {
    size_t len = pp.src.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                             : sizeof(struct sockaddr_in6);
    memset(&c->client_addr, 0, sizeof(c->client_addr));
    memcpy(&c->client_addr, &pp.src, len);
    memset(&c->local_addr, 0, sizeof(c->local_addr));
    memcpy(&c->local_addr, &pp.dst, len);
    c->have_local = 1;
  }
  c->hello_len -= (uint32_t)n;
  memmove(c->hello->data, c->hello->data + n, c->hello_len);
  c->bytes_in -= (uint64_t)n; /* the header is not forwarded */
  c->proxy_pending = 0;
  if (!admit(c))
    return 1;
  if (c->hello_len == 0) {
    keep_reading(c);
    return 1;
  }
  return 0;
}

/* ---- the ClientHello ---- */

static void hello_received(mcp__conn_t *c, size_t nread);
static void unrouted(mcp__conn_t *c);

/*
 * The ClientHello buffer grows with what has arrived: HELLO_START bytes at first, doubled when
 * full, up to MCP__HELLO_CHUNK (the parser's limit). A client that has sent one byte holds a
 * small buffer, not the largest ClientHello there could be. The buffer is a chunk of no pool
 * (mcp__pool_put frees it), so the relay can write it like any other chunk.
 */
#define HELLO_START 256

/* Makes room for at least want bytes (want <= MCP__HELLO_CHUNK); 0 or -1 (out of memory). */
static int hello_reserve(mcp__conn_t *c, size_t want)
{
  if (c->hello && want <= c->hello_cap)
    return 0;
  size_t cap = c->hello ? c->hello_cap : HELLO_START;
  while (cap < want)
    cap *= 2;
  if (cap > MCP__HELLO_CHUNK)
    cap = MCP__HELLO_CHUNK;
  mcp__chunk_t *ch = realloc(c->hello, sizeof(mcp__chunk_t) + cap);
  if (!ch)
    return -1;
  ch->pool = NULL;
  c->hello = ch;
  c->hello_cap = (uint32_t)cap;
  return 0;
}

/* The first read lands here, one buffer per thread, and is copied into a buffer of its size. */
static _Thread_local char first_read[MCP__HELLO_CHUNK];

/*
 * Reads once straight after accept: a client usually sends its ClientHello together with the
 * end of the TCP handshake, so it is often already here and can be routed without first
 * registering the socket for reading and waiting for the loop to come round.
 */
static void hello_first_read(mcp__conn_t *c, int fd)
{
  ssize_t n;
  do
    n = read(fd, first_read, sizeof(first_read));
  while (n < 0 && errno == EINTR);
  if (n > 0) {
    if (hello_reserve(c, (size_t)n) != 0) {
      unrouted(c);
      return;
    }
    memcpy(c->hello->data, first_read, (size_t)n);
    hello_received(c, (size_t)n);
    return;
  }
  if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
    unrouted(c);
    return;
  }
  /* Nothing yet: hold no buffer while waiting. */
  keep_reading(c);
}

/*
 * The client's events while its PROXY header or ClientHello is incomplete: read while it has
 * bytes, into the hello buffer (grown as needed). Bounded: every pass either grows the buffer
 * (which hello_received refuses past MCP__HELLO_CHUNK) or ends the loop.
 */
static void hello_io(mcp__conn_t *c, mcp__sock_t *s)
{
  if (s != &c->client)
    return;
  while (s->rd && c->on_io == hello_io && !c->closing) {
    if (hello_reserve(c, (size_t)c->hello_len + 1) != 0) {
      unrouted(c);
      return;
    }
    size_t room = c->hello_cap - c->hello_len;
    ssize_t n = read(s->fd, c->hello->data + c->hello_len, room);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      s->rd = 0;
      return;
    }
    if (n <= 0) {
      /* EOF or an error before a complete ClientHello. */
      unrouted(c);
      return;
    }
    if ((size_t)n < room && !s->urg)
      s->rd = s->rdhup; /* drained; a FIN already in still has to be read (relay.c) */
    hello_received(c, (size_t)n);
  }
}

static void route(mcp__conn_t *c, size_t sni_len);

/* nread more bytes arrived in the hello chunk: route once the ClientHello is complete. */
static void hello_received(mcp__conn_t *c, size_t nread)
{
  c->hello_len += (uint32_t)nread;
  c->bytes_in += nread;
  if (c->proxy_pending && proxy_header(c) != 0)
    return;

  int rc = mcp_sni_parse(&c->sni_state, (const uint8_t *)c->hello->data, c->hello_len, c->sni);
  if (rc == MCP_SNI_NEED_MORE) {
    if (c->hello_len < MCP__HELLO_CHUNK) {
      keep_reading(c);
      return;
    }
    rc = MCP_SNI_ETOOBIG;
  }
  if (rc == MCP_SNI_ENOSNI) {
    /* A valid hello without a name: the listener's fallback, if it has one. */
    c->sni[0] = '\0';
    rc = 0;
  } else if (rc < 0) {
    c->sni[0] = '\0';
    unrouted(c);
    return;
  }
  route(c, (size_t)rc);
}

/*
 * Waits for more of the PROXY header or the hello: the client joins the event set (once), and
 * hello_io reads what comes.
 */
static void keep_reading(mcp__conn_t *c)
{
  if (mcp__sock_watch(c, &c->client) != 0)
    unrouted(c);
}

/* ---- route, and the hand-off to the relay ---- */

/* The exact name, else the longest wildcard, else the fallback (also for no SNI, sni_len 0). */
static void route(mcp__conn_t *c, size_t sni_len)
{
  mcp_route_match_t m;
  int rc = mcp_routes_match(LISTENER_OF(c)->routes, c->sni, sni_len, &m);
  c->routed_ns = uv_hrtime();
  if (rc != 0) {
    unrouted(c);
    return;
  }
  if (m.kind == MCP_ROUTE_FALLBACK)
    MCP__COUNT(c->cs->counters, fallback_total, 1);
  c->send_proxy = (uint8_t)m.send_proxy;
  mcp__relay_connect(c, m.backend);
}

/* No ClientHello, a bad one, or no route for it. */
static void unrouted(mcp__conn_t *c)
{
  if (c->proxy_pending) {
    /* The connection ended (or failed) before its PROXY header was complete. */
    proxy_error(c);
    return;
  }
  MCP__COUNT(c->cs->counters, unrouted_total, 1);
  mcp__conn_close(c, MCP_CONN_OUTCOME_UNROUTED);
}

/* ---- the listener: create and start ---- */

int mcp_listener_addr_parse(const char *addr, struct sockaddr_storage *out, char *text)
{
  char host[INET6_ADDRSTRLEN];
  const char *port_str;
  size_t n = strnlen(addr, 64);
  if (n == 0 || n >= 64)
    return MCP_EINVAL;

  if (addr[0] == '[') {
    const char *end = memchr(addr, ']', n);
    if (!end || end[1] != ':' || (size_t)(end - addr - 1) >= sizeof(host))
      return MCP_EINVAL;
    memcpy(host, addr + 1, end - addr - 1);
    host[end - addr - 1] = '\0';
    port_str = end + 2;
  } else {
    const char *colon = strrchr(addr, ':');
    if (!colon || memchr(addr, ':', colon - addr) || (size_t)(colon - addr) >= sizeof(host))
      return MCP_EINVAL;
    memcpy(host, addr, colon - addr);
    host[colon - addr] = '\0';
    port_str = colon + 1;
  }

  /* Decimal digits only, 0-65535 (0: the kernel picks; see listener.h). */
  unsigned long port = 0;
  size_t digits = strlen(port_str);
  if (digits == 0 || digits > 5)
    return MCP_EINVAL;
  for (size_t i = 0; i < digits; i++) {
    if (port_str[i] < '0' || port_str[i] > '9')
      return MCP_EINVAL;
    port = port * 10 + (unsigned long)(port_str[i] - '0');
  }
  if (port > 65535)
    return MCP_EINVAL;

  memset(out, 0, sizeof(*out));
  struct sockaddr_in *in = (struct sockaddr_in *)out;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
  if (addr[0] != '[' && inet_pton(AF_INET, host, &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
  } else if (addr[0] == '[' && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
  } else {
    return MCP_EINVAL;
  }
  if (text)
    mcp__sockaddr_format((struct sockaddr *)out, text, 64);
  return 0;
}

/* The last listener of an address is gone. */
static void counters_free(mcp__counters_t *k)
{
  mcp_client_limits_free(atomic_load(&k->climits));
  free(k);
}

int mcp_listener_new(uv_loop_t *loop, const mcp_listener_config_t *cfg, mcp_listener_t **out)
{
  if (!loop || !cfg || !cfg->addr || cfg->max_connections < 0)
    return MCP_EINVAL;
  int err = MCP_ENOMEM;
  mcp_listener_t *l = calloc(1, sizeof(*l));
  if (!l)
    return MCP_ENOMEM;
  if (mcp_listener_addr_parse(cfg->addr, &l->addr, l->addr_text) != 0) {
    err = MCP_EINVAL;
    goto fail_addr;
  }
  if (mcp_routes_new(&l->routes) != 0)
    goto fail_addr;
  l->loop = loop;
  l->cfg = *cfg;
  l->cfg.addr = l->addr_text;
  if (!l->cfg.handshake_timeout_ms)
    l->cfg.handshake_timeout_ms = DEFAULT_HANDSHAKE_MS;
  if (!l->cfg.connect_timeout_ms)
    l->cfg.connect_timeout_ms = DEFAULT_CONNECT_MS;
  if (!l->cfg.idle_timeout_ms)
    l->cfg.idle_timeout_ms = DEFAULT_IDLE_MS;
  if (cfg->share_with) {
    l->counters = cfg->share_with->counters;
    atomic_fetch_add(&l->counters->refs, 1);
  } else {
    l->counters = calloc(1, sizeof(*l->counters));
    if (!l->counters)
      goto fail_counters;
    atomic_store(&l->counters->refs, 1);
    atomic_store(&l->counters->max_connections, cfg->max_connections);
  }

  const uint64_t timeouts[MCP__T_COUNT] = {
      [MCP__T_HANDSHAKE] = l->cfg.handshake_timeout_ms,
      [MCP__T_CONNECT] = l->cfg.connect_timeout_ms,
      [MCP__T_IDLE] = l->cfg.idle_timeout_ms,
  };
  err = mcp__conns_init(&l->conns, loop, timeouts, cfg->copy_relay);
  if (err)
    goto fail_conns;
  l->conns.counters = l->counters;
  l->conns.name = l->addr_text;
  l->conns.on_end = cfg->on_conn_end;
  l->conns.data = cfg->data;

  l->fd = -1;
  uv_timer_init(loop, &l->accept_pause);
  l->accept_pause.data = l;
  l->handles_open = MCP__CONNS_HANDLES + 1; /* the connections' handles and accept_pause */
  *out = l;
  return 0;

fail_conns:
  if (atomic_fetch_sub(&l->counters->refs, 1) == 1)
    counters_free(l->counters);
fail_counters:
  mcp_routes_unref(l->routes);
fail_addr:
  free(l);
  return err;
}

/*
 * SO_REUSEPORT lets every socket with the option (and the same owner) share a port, so a second
 * mc-proxy started by mistake would silently take half the traffic. The first listener of an
 * address therefore checks with a plain socket that nobody is bound there yet.
 */
static int address_taken(const struct sockaddr_storage *addr)
{
  int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return uv_translate_sys_error(errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  socklen_t len = addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                               : sizeof(struct sockaddr_in);
  int err = bind(fd, (const struct sockaddr *)addr, len) == 0 ? 0 : uv_translate_sys_error(errno);
  close(fd);
  return err;
}

/*
 * From a bound, listening descriptor to accepting: the poll, the descriptor reserve's baseline
 * and the registry of our own addresses (lib/backend.c), for a socket bound here or inherited.
 */
static int start_polling(mcp_listener_t *l, int fd)
{
  int err = uv_poll_init_socket(l->loop, &l->accept_poll, fd);
  if (err)
    return err;
  l->fd = fd;
  fd_reserve_init(l);
  l->accept_poll.data = l;
  l->handles_open++;
  l->listening = 1;
  uv_poll_start(&l->accept_poll, UV_READABLE, on_acceptable);
  mcp__backend_self_add(fd); /* never connect to it (lib/backend.c) */
  return 0;
}

/*
 * Takes over cfg.fd, a socket another process (or an earlier run) bound and listens on: nothing
 * is bound or probed, so connections queued on it stay queued and are accepted here (a reload).
 */
static int start_adopted(mcp_listener_t *l)
{
  int fd = l->cfg.fd;
  int accepting = 0;
  socklen_t optlen = sizeof(accepting);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &optlen) != 0)
    return uv_translate_sys_error(errno);
  if (!accepting)
    return UV_EINVAL;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)
    return uv_translate_sys_error(errno);
  int err = start_polling(l, fd);
  if (!err)
    l->cfg.fd = 0; /* adopted once; a later start binds */
  return err;
}

int mcp_listener_start(mcp_listener_t *l)
{
  if (l->listening || l->freeing)
    return UV_EINVAL;
  if (l->cfg.fd > 0)
    return start_adopted(l);
  int err = 0;
  if (l->cfg.reuseport && !l->cfg.share_with) {
    uint16_t port = l->addr.ss_family == AF_INET6
                        ? ((struct sockaddr_in6 *)&l->addr)->sin6_port
                        : ((struct sockaddr_in *)&l->addr)->sin_port;
    /* Port 0 asks the kernel for a free port; there is nothing to collide with. */
    if (port != 0 && (err = address_taken(&l->addr)) != 0)
      return err;
  }
  int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return uv_translate_sys_error(errno);
  int one = 1, zero = 0;
  socklen_t len = l->addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                 : sizeof(struct sockaddr_in);
  /* Accepted sockets inherit TCP_NODELAY, which saves a setsockopt per connection. */
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
      (l->addr.ss_family == AF_INET6 &&
       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) != 0) ||
      (l->cfg.reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
      bind(fd, (const struct sockaddr *)&l->addr, len) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
    err = uv_translate_sys_error(errno);
    close(fd);
    return err;
  }
  err = start_polling(l, fd);
  if (err)
    close(fd);
  return err;
}

/* ---- the listener: state and publication ---- */

const char *mcp_listener_addr(const mcp_listener_t *l)
{
  return l->addr_text;
}

int mcp_listener_sockname(const mcp_listener_t *l, struct sockaddr_storage *out)
{
  socklen_t len = sizeof(*out);
  if (l->fd < 0)
    return UV_EBADF;
  return getsockname(l->fd, (struct sockaddr *)out, &len) == 0 ? 0 : uv_translate_sys_error(errno);
}

int mcp_listener_fd(const mcp_listener_t *l)
{
  return l->fd;
}

void mcp_listener_set_routes(mcp_listener_t *l, mcp_routes_t *routes)
{
  mcp_routes_t *old = l->routes;
  l->routes = mcp_routes_ref(routes);
  mcp_routes_unref(old);
}

mcp_routes_t *mcp_listener_routes(const mcp_listener_t *l)
{
  return l->routes;
}

int mcp_listener_set_firewall(mcp_listener_t *l, mcp_firewall_t *fw)
{
  if (fw) {
    int err = mcp_firewall_seal(fw);
    if (err)
      return err;
  }
  mcp_firewall_t *old = l->firewall;
  l->firewall = fw ? mcp_firewall_ref(fw) : NULL;
  mcp_firewall_unref(old);
  return 0;
}

void mcp_listener_set_max_connections(mcp_listener_t *l, int64_t max_connections)
{
  if (max_connections >= 0)
    atomic_store(&l->counters->max_connections, max_connections);
}

void mcp_listener_get_stats(const mcp_listener_t *l, mcp_listener_stats_t *out)
{
  mcp__counters_t *k = l->counters;
  out->active_connections = atomic_load(&k->active);
  out->max_connections = atomic_load(&k->max_connections);
  out->accepted_total = atomic_load(&k->accepted_total);
  out->rejected_limit_total = atomic_load(&k->rejected_limit_total);
  out->blocked_total = atomic_load(&k->blocked_total);
  out->unrouted_total = atomic_load(&k->unrouted_total);
  out->error_total = atomic_load(&k->error_total);
  out->timeout_total = atomic_load(&k->timeout_total);
  out->backend_error_total = atomic_load(&k->backend_error_total);
  out->shutdown_total = atomic_load(&k->shutdown_total);
  out->accept_errors_total = atomic_load(&k->accept_errors_total);
  out->route_count = (int64_t)mcp_routes_count(l->routes);
  out->proxy_error_total = atomic_load(&k->proxy_error_total);
  out->rate_limited_total = atomic_load(&k->rate_limited_total);
  out->fallback_total = atomic_load(&k->fallback_total);
}

int mcp_listener_set_proxy_protocol(mcp_listener_t *l, int on, mcp_firewall_t *trusted)
{
  if (on && !trusted)
    return MCP_EINVAL;
  if (trusted) {
    int err = mcp_firewall_seal(trusted);
    if (err)
      return err;
  }
  mcp_firewall_t *old = l->proxy_trusted;
  l->proxy_trusted = trusted ? mcp_firewall_ref(trusted) : NULL;
  l->proxy_on = on ? 1 : 0;
  mcp_firewall_unref(old);
  return 0;
}

int mcp_listener_proxy_protocol(const mcp_listener_t *l, mcp_firewall_t **trusted)
{
  if (trusted)
    *trusted = l->proxy_trusted;
  return l->proxy_on;
}

int mcp_listener_set_client_limits(mcp_listener_t *l, const mcp_client_limits_settings_t *s)
{
  mcp__counters_t *k = l->counters;
  int rc = mcp_client_limits_check(s);
  if (rc)
    return rc;
  int on = s->rate_count > 0 || s->max_connections > 0;
  mcp_client_limits_t *t = atomic_load(&k->climits);
  if (!t && on) {
    mcp_client_limits_t *fresh;
    if ((rc = mcp_client_limits_new(0, s, &fresh)) != 0)
      return rc;
    /* Two threads setting the first limits at once: one table wins, the other is freed. */
    if (!atomic_compare_exchange_strong(&k->climits, &t, fresh))
      mcp_client_limits_free(fresh);
    else
      t = fresh;
  }
  if (t && (rc = mcp_client_limits_set(t, s)) != 0)
    return rc;
  atomic_store(&k->climits_on, on);
  return 0;
}

/* ---- the listener: stop and free ---- */

static void listener_handle_closed(mcp_listener_t *l);

static void on_accept_poll_closed(uv_handle_t *h)
{
  listener_handle_closed(h->data);
}

void mcp_listener_stop(mcp_listener_t *l)
{
  if (!l->listening)
    return;
  l->listening = 0;
  uv_timer_stop(&l->accept_pause);
  /*
   * uv_close stops watching the socket before it returns (only its callback waits for the next
   * loop iteration), so the socket can be closed here: the address is free the moment the
   * listener stops, and an admin change answered right after (a refused AddListener, a
   * RemoveListener) can bind it again at once.
   */
  uv_close((uv_handle_t *)&l->accept_poll, on_accept_poll_closed);
  mcp__backend_self_remove(l->fd);
  close(l->fd);
  l->fd = -1;
}

void mcp_listener_close_connections(mcp_listener_t *l)
{
  mcp__conns_close_all(&l->conns);
}

static void listener_finish(mcp_listener_t *l)
{
  mcp__conns_finish(&l->conns);
  mcp_routes_unref(l->routes);
  mcp_firewall_unref(l->firewall);
  mcp_firewall_unref(l->proxy_trusted);
  if (atomic_fetch_sub(&l->counters->refs, 1) == 1)
    counters_free(l->counters);
  void (*done)(void *) = l->free_done;
  void *data = l->free_data;
  free(l);
  if (done)
    done(data);
}

/* Connections still closing hold chunks and conn objects: wait for the last one too. */
static void listener_maybe_done(mcp_listener_t *l)
{
  if (l->handles_open == 0 && l->conns.live == 0)
    listener_finish(l);
}

static void listener_handle_closed(mcp_listener_t *l)
{
  l->handles_open--;
  if (l->freeing)
    listener_maybe_done(l);
}

static void on_accept_pause_closed(uv_handle_t *h)
{
  listener_handle_closed(h->data);
}

static void on_conns_handle_closed(uv_handle_t *h)
{
  listener_handle_closed(LISTENER_OF_CONNS(h->data));
}

static void on_conns_empty(mcp__conns_t *cs)
{
  listener_maybe_done(LISTENER_OF_CONNS(cs));
}

void mcp_listener_free(mcp_listener_t *l, void (*done)(void *data), void *data)
{
  if (!l || l->freeing)
    return;
  l->freeing = 1;
  l->free_done = done;
  l->free_data = data;
  l->conns.on_empty = on_conns_empty;
  mcp_listener_close_connections(l);
  mcp_listener_stop(l);
  mcp__conns_close_handles(&l->conns, on_conns_handle_closed);
  uv_close((uv_handle_t *)&l->accept_pause, on_accept_pause_closed);
}
