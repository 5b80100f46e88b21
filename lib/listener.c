/*
 * listener: accept -> limit -> firewall -> ClientHello -> route. The relay that follows (connect,
 * forward, both directions, timeouts) is in relay.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "listener_internal.h"

#define DEFAULT_HANDSHAKE_MS 10000
#define DEFAULT_CONNECT_MS 5000
#define DEFAULT_IDLE_MS 300000
#define LISTEN_BACKLOG 4096
#define ACCEPT_BATCH 64
#define ACCEPT_PAUSE_MS 100

static const char *const outcome_names[] = {
    [MCP_OUTCOME_OK] = "ok",
    [MCP_OUTCOME_LIMIT] = "limit",
    [MCP_OUTCOME_BLOCKED] = "blocked",
    [MCP_OUTCOME_UNROUTED] = "unrouted",
    [MCP_OUTCOME_TIMEOUT] = "timeout",
    [MCP_OUTCOME_BACKEND_ERROR] = "backend_error",
};

const char *mcp_outcome_name(mcp_outcome_t outcome)
{
  if ((unsigned)outcome >= sizeof(outcome_names) / sizeof(outcome_names[0]))
    return "-";
  return outcome_names[outcome];
}

int mcp_conn_record_format(const mcp_conn_record_t *r, char *buf, size_t len)
{
  return snprintf(buf, len,
                  "listener=%s client=%s sni=%s backend=%s outcome=%s bytes_in=%llu "
                  "bytes_out=%llu duration_ms=%llu",
                  r->listener, r->client, r->sni, r->backend, mcp_outcome_name(r->outcome),
                  (unsigned long long)r->bytes_in, (unsigned long long)r->bytes_out,
                  (unsigned long long)r->duration_ms);
}

/* Formats an IPv4/IPv6 socket address as "ip:port" or "[ip]:port". */
static void format_sockaddr(const struct sockaddr *sa, char *out, size_t len)
{
  char ip[INET6_ADDRSTRLEN];
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
    snprintf(out, len, "%s:%u", ip, ntohs(in->sin_port));
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
    snprintf(out, len, "[%s]:%u", ip, ntohs(in6->sin6_port));
  } else {
    snprintf(out, len, "-");
  }
}

int mcp_listen_addr_parse(const char *addr, struct sockaddr_storage *out, char *text)
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
    format_sockaddr((struct sockaddr *)out, text, 64);
  return 0;
}

static void tlists_init(mcp_listener_t *l)
{
  l->tlists[MCP__T_HANDSHAKE].timeout_ms = l->cfg.handshake_timeout_ms;
  l->tlists[MCP__T_CONNECT].timeout_ms = l->cfg.connect_timeout_ms;
  l->tlists[MCP__T_IDLE].timeout_ms = l->cfg.idle_timeout_ms;
}

int mcp_listener_new(uv_loop_t *loop, const mcp_listener_config_t *cfg, mcp_listener_t **out)
{
  if (!loop || !cfg || !cfg->addr || cfg->max_connections < 0)
    return MCP_EINVAL;
  mcp_listener_t *l = calloc(1, sizeof(*l));
  if (!l)
    return MCP_ENOMEM;
  if (mcp_listen_addr_parse(cfg->addr, &l->addr, l->addr_text) != 0) {
    free(l);
    return MCP_EINVAL;
  }
  l->routes = mcp_routes_new();
  if (!l->routes) {
    free(l);
    return MCP_ENOMEM;
  }
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
    if (!l->counters) {
      mcp_routes_unref(l->routes);
      free(l);
      return MCP_ENOMEM;
    }
    atomic_store(&l->counters->refs, 1);
    atomic_store(&l->counters->max_connections, cfg->max_connections);
  }
  tlists_init(l);

  l->fd = -1;
  l->hello_pool.size = MCP__HELLO_CHUNK;
  l->relay_pool.size = MCP__RELAY_CHUNK;
  l->splice_r = l->splice_w = -1;
  int pfd[2];
  if (!cfg->copy_relay && pipe2(pfd, O_NONBLOCK | O_CLOEXEC) == 0) {
    l->splice_r = pfd[0];
    l->splice_w = pfd[1];
  }
  uv_timer_init(loop, &l->timer);
  l->timer.data = l;
  uv_timer_init(loop, &l->accept_pause);
  l->accept_pause.data = l;
  l->handles_open = 2;
  *out = l;
  return 0;
}

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
  out->route_count = (int64_t)mcp_routes_count(l->routes);
}

/* ---- connection objects ---- */

static mcp__conn_t *conn_alloc(mcp_listener_t *l)
{
  mcp__conn_t *c = l->conn_free;
  if (c) {
    l->conn_free = c->tnext;
    l->conn_free_len--;
  } else {
    c = malloc(sizeof(*c));
    if (!c)
      return NULL;
  }
  l->conns_live++;
  memset(c, 0, offsetof(mcp__conn_t, sni));
  c->sni[0] = '\0';
  c->backend_text[0] = '\0';
  c->l = l;
  c->tlist = MCP__T_NONE;
  c->started_ms = uv_now(l->loop);
  return c;
}

static void listener_maybe_done(mcp_listener_t *l);

static void conn_release(mcp__conn_t *c)
{
  mcp_listener_t *l = c->l;
  l->conns_live--;
  if (l->conn_free_len < MCP__CONN_KEEP) {
    c->tnext = l->conn_free;
    l->conn_free = c;
    l->conn_free_len++;
  } else {
    free(c);
  }
  if (l->freeing)
    listener_maybe_done(l);
}

static void conn_log(mcp__conn_t *c)
{
  mcp_listener_t *l = c->l;
  if (!l->cfg.on_conn_end)
    return;
  char client[INET6_ADDRSTRLEN + 8];
  format_sockaddr((struct sockaddr *)&c->client_addr, client, sizeof(client));
  mcp_conn_record_t rec = {
      .listener = l->addr_text,
      .client = client,
      .sni = c->sni[0] ? c->sni : "-",
      .backend = c->backend_text[0] ? c->backend_text : "-",
      .outcome = (mcp_outcome_t)c->outcome,
      .bytes_in = c->bytes_in,
      .bytes_out = c->bytes_out,
      .duration_ms = uv_now(l->loop) - c->started_ms,
  };
  l->cfg.on_conn_end(l->cfg.data, &rec);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
  mcp__conn_t *c = h->data;
  if (--c->handles_open > 0)
    return;
  conn_log(c);
  conn_release(c);
}

/*
 * Linux answers close() with a reset instead of a FIN when received bytes were never read. A
 * client refused before relaying (limit, unrouted, timeout) has often sent its ClientHello
 * already, so throw away what is queued (MSG_TRUNC: without copying it) to close it normally.
 */
static void discard_unread(mcp__conn_t *c)
{
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->client, &fd) == 0)
    (void)recv(fd, NULL, MCP__RELAY_CHUNK, MSG_DONTWAIT | MSG_TRUNC);
}

void mcp__conn_close(mcp__conn_t *c, mcp_outcome_t outcome)
{
  if (c->closing)
    return;
  c->closing = 1;
  c->outcome = (uint8_t)outcome;
  mcp__timeout_clear(c);
  if (c->counted) {
    MCP__COUNT(c->l, active, -1);
    c->counted = 0;
  }
  if (c->hello) {
    mcp__chunk_put(c->hello);
    c->hello = NULL;
  }
  if (c->gai) {
    /* The DNS callback still runs (cancelled or not); it sees no connection and frees itself. */
    c->gai->conn = NULL;
    uv_cancel((uv_req_t *)&c->gai->req);
    c->gai = NULL;
  }

  /* Write and connect requests are cancelled by uv_close and their callbacks run (and return
   * their chunks) before the close callbacks. */
  c->handles_open = 1;
  if (outcome == MCP_OUTCOME_BLOCKED) {
    uv_tcp_close_reset(&c->client, on_conn_handle_closed);
  } else {
    if (!c->relaying)
      discard_unread(c);
    uv_close((uv_handle_t *)&c->client, on_conn_handle_closed);
  }
  if (c->backend_inited) {
    c->handles_open++;
    uv_close((uv_handle_t *)&c->backend, on_conn_handle_closed);
  }
}

/* ---- the ClientHello ---- */

static void on_hello_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_acceptable(uv_poll_t *h, int status, int events);

static void on_hello_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  mcp__conn_t *c = h->data;
  if (!c->hello)
    c->hello = mcp__chunk_get(&c->l->hello_pool);
  if (!c->hello) {
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  *buf = uv_buf_init(c->hello->data + c->hello_len, MCP__HELLO_CHUNK - c->hello_len);
}

static void unrouted(mcp__conn_t *c)
{
  MCP__COUNT(c->l, unrouted_total, 1);
  mcp__conn_close(c, MCP_OUTCOME_UNROUTED);
}

/* nread more bytes arrived in the hello chunk: route once the ClientHello is complete. */
static void hello_received(mcp__conn_t *c, size_t nread)
{
  c->hello_len += (uint32_t)nread;
  c->bytes_in += nread;

  int rc = mcp_sni_parse(&c->sni_state, (const uint8_t *)c->hello->data, c->hello_len, c->sni);
  if (rc == MCP_SNI_NEED_MORE) {
    if (c->hello_len < MCP__HELLO_CHUNK) {
      if (!uv_is_active((uv_handle_t *)&c->client) &&
          uv_read_start((uv_stream_t *)&c->client, on_hello_alloc, on_hello_read) != 0)
        unrouted(c);
      return;
    }
    rc = MCP_SNI_ETOOBIG;
  }
  if (rc < 0) {
    c->sni[0] = '\0';
    unrouted(c);
    return;
  }

  const mcp_backend_t *backend = mcp_routes_lookup(c->l->routes, c->sni, (size_t)rc);
  if (!backend) {
    unrouted(c);
    return;
  }
  uv_read_stop((uv_stream_t *)&c->client);
  mcp__relay_connect(c, backend);
}

static void on_hello_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
  mcp__conn_t *c = s->data;
  if (nread == 0)
    return;
  if (nread < 0) {
    /* EOF or an error (ENOBUFS when no chunk could be had) before a complete ClientHello. */
    unrouted(c);
    return;
  }
  hello_received(c, (size_t)nread);
}

/*
 * Reads once straight after accept: a client usually sends its ClientHello together with the
 * end of the TCP handshake, so it is often already here and can be routed without first
 * registering the socket for reading and waiting for the loop to come round.
 */
static void hello_first_read(mcp__conn_t *c, int fd)
{
  c->hello = mcp__chunk_get(&c->l->hello_pool);
  if (!c->hello) {
    unrouted(c);
    return;
  }
  ssize_t n;
  do
    n = read(fd, c->hello->data, MCP__HELLO_CHUNK);
  while (n < 0 && errno == EINTR);
  if (n > 0) {
    hello_received(c, (size_t)n);
    return;
  }
  if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
    unrouted(c);
    return;
  }
  /* Nothing yet: hold no buffer while waiting. */
  mcp__chunk_put(c->hello);
  c->hello = NULL;
  if (uv_read_start((uv_stream_t *)&c->client, on_hello_alloc, on_hello_read) != 0)
    unrouted(c);
}

/* ---- accept ---- */

static int client_blocked(mcp__conn_t *c)
{
  mcp_listener_t *l = c->l;
  return l->firewall && mcp_firewall_check(l->firewall, (struct sockaddr *)&c->client_addr);
}

/*
 * Counts the connection as active unless the listener is at its limit. Increment first, then
 * compare, so that loops sharing the counters can never together exceed the limit.
 */
static int take_slot(mcp_listener_t *l)
{
  int64_t max = atomic_load_explicit(&l->counters->max_connections, memory_order_relaxed);
  int64_t before = MCP__COUNT(l, active, 1);
  if (max > 0 && before >= max) {
    MCP__COUNT(l, active, -1);
    return 0;
  }
  return 1;
}

/* A connection accepted on fd, from the client at sa. */
static void accepted(mcp_listener_t *l, int fd, const struct sockaddr_in6 *sa, socklen_t salen)
{
  MCP__COUNT(l, accepted_total, 1);
  mcp__conn_t *c = conn_alloc(l);
  if (!c) {
    /* Out of memory: it cannot be served or logged, but it was accepted and is counted. */
    MCP__COUNT(l, unrouted_total, 1);
    close(fd);
    return;
  }
  memcpy(&c->client_addr, sa, salen < sizeof(c->client_addr) ? salen : sizeof(c->client_addr));
  uv_tcp_init(l->loop, &c->client);
  c->client.data = c;
  c->backend.data = c;
  if (uv_tcp_open(&c->client, fd) != 0) {
    close(fd);
    MCP__COUNT(l, unrouted_total, 1);
    c->outcome = MCP_OUTCOME_UNROUTED;
    c->handles_open = 1;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->client, on_conn_handle_closed);
    return;
  }

  if (!take_slot(l)) {
    MCP__COUNT(l, rejected_limit_total, 1);
    mcp__conn_close(c, MCP_OUTCOME_LIMIT);
    return;
  }
  c->counted = 1;
  if (client_blocked(c)) {
    MCP__COUNT(l, blocked_total, 1);
    mcp__conn_close(c, MCP_OUTCOME_BLOCKED);
    return;
  }
  mcp__timeout_set(c, MCP__T_HANDSHAKE);
  hello_first_read(c, fd);
}

static void on_accept_resume(uv_timer_t *t)
{
  mcp_listener_t *l = t->data;
  if (l->listening)
    uv_poll_start(&l->accept_poll, UV_READABLE, on_acceptable);
}

/*
 * Accepts what is waiting, a bounded batch per wake-up so one busy listener cannot starve the
 * loop. Out of descriptors (EMFILE, ENFILE) or kernel memory, accepting pauses for
 * ACCEPT_PAUSE_MS instead of spinning on a listening socket that stays readable; the waiting
 * connections stay queued in the kernel until then.
 */
static void on_acceptable(uv_poll_t *h, int status, int events)
{
  mcp_listener_t *l = h->data;
  for (int i = 0; i < ACCEPT_BATCH && l->listening; i++) {
    struct sockaddr_in6 sa;
    socklen_t salen = sizeof(sa);
    int fd = accept4(l->fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      accepted(l, fd, &sa, salen);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
      continue;
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
      uv_poll_stop(&l->accept_poll);
      uv_timer_start(&l->accept_pause, on_accept_resume, ACCEPT_PAUSE_MS, 0);
    }
    return; /* EAGAIN, or an error the next wake-up may not have */
  }
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

int mcp_listener_start(mcp_listener_t *l)
{
  if (l->listening || l->freeing)
    return UV_EINVAL;
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
  err = uv_poll_init_socket(l->loop, &l->accept_poll, fd);
  if (err) {
    close(fd);
    return err;
  }
  l->fd = fd;
  l->accept_poll.data = l;
  l->handles_open++;
  l->listening = 1;
  uv_poll_start(&l->accept_poll, UV_READABLE, on_acceptable);
  return 0;
}

static void on_listener_handle_closed(uv_handle_t *h);

static void on_accept_poll_closed(uv_handle_t *h)
{
  mcp_listener_t *l = h->data;
  close(l->fd);
  l->fd = -1;
  on_listener_handle_closed(h);
}

void mcp_listener_stop(mcp_listener_t *l)
{
  if (!l->listening)
    return;
  l->listening = 0;
  uv_timer_stop(&l->accept_pause);
  /* The socket is closed once libuv has stopped watching it. */
  uv_close((uv_handle_t *)&l->accept_poll, on_accept_poll_closed);
}

void mcp_listener_close_connections(mcp_listener_t *l)
{
  for (int i = 0; i < MCP__T_COUNT; i++) {
    while (l->tlists[i].head)
      mcp__conn_close(l->tlists[i].head, MCP_OUTCOME_TIMEOUT);
  }
}

/* ---- freeing ---- */

static void listener_finish(mcp_listener_t *l)
{
  mcp__pool_drain(&l->hello_pool);
  mcp__pool_drain(&l->relay_pool);
  if (l->splice_r >= 0) {
    close(l->splice_r);
    close(l->splice_w);
  }
  while (l->conn_free) {
    mcp__conn_t *c = l->conn_free;
    l->conn_free = c->tnext;
    free(c);
  }
  mcp_routes_unref(l->routes);
  mcp_firewall_unref(l->firewall);
  if (atomic_fetch_sub(&l->counters->refs, 1) == 1)
    free(l->counters);
  void (*done)(void *) = l->free_done;
  void *data = l->free_data;
  free(l);
  if (done)
    done(data);
}

static void on_listener_handle_closed(uv_handle_t *h)
{
  mcp_listener_t *l = h->data;
  l->handles_open--;
  if (l->freeing)
    listener_maybe_done(l);
}

/* Connections still closing hold chunks and conn objects: wait for the last one too. */
static void listener_maybe_done(mcp_listener_t *l)
{
  if (l->handles_open == 0 && l->conns_live == 0)
    listener_finish(l);
}

void mcp_listener_free(mcp_listener_t *l, void (*done)(void *data), void *data)
{
  if (!l || l->freeing)
    return;
  l->freeing = 1;
  l->free_done = done;
  l->free_data = data;
  mcp_listener_close_connections(l);
  mcp_listener_stop(l);
  uv_close((uv_handle_t *)&l->timer, on_listener_handle_closed);
  uv_close((uv_handle_t *)&l->accept_pause, on_listener_handle_closed);
}
