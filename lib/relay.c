/*
 * relay: the second part of a connection's life, in order: connect to the routed backend,
 * forward the buffered ClientHello, then move bytes both ways until both directions have ended.
 * listener.c hands the connection over with mcp__relay_connect; the connection object, its
 * buffers, its timeouts, its event set and its close are conn.c's. See docs/ARCHITECTURE.md.
 *
 * Both sockets are on the listener's event set (conn.c), edge-triggered: an event sets a
 * socket's flags (rd, wr, ...) and calls relay_io, which moves what the flags allow. A flag is
 * cleared only by what the socket itself says (EAGAIN, a short read or write), so nothing is
 * lost between edges.
 *
 * Memory per connection is bounded: each direction holds at most one pool chunk, and only while
 * a write to the other side is pending. A read is written at once; whatever the kernel does not
 * take stays pending, and the source is not read until the destination has taken it (its
 * EPOLLOUT). An idle connection holds no chunk at all.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mcproxy/proxy_protocol.h"
#include "relay.h"
#include "resolver.h"

/* ---- connect ---- */

static void relay_io(mcp__conn_t *c, mcp__sock_t *s);
static void connect_addr(mcp__conn_t *c, const struct sockaddr *addr);
static void on_resolved(mcp__lookup_t *l, int status, void *data);
static void on_dialled(mcp__lookup_t *l, int fd, void *data);
static void backend_connected(mcp__conn_t *c);
static void backend_failed(mcp__conn_t *c);

/*
 * The connect phase, bounded as a whole by the connect timeout (the connection is on that list
 * until the ClientHello is forwarded). An address that is one of this process's own listeners is
 * never connected to: a route that loops back would otherwise open connections to itself until
 * the descriptors run out. The client's events are only noted until then (relay_io).
 */
void mcp__relay_connect(mcp__conn_t *c, const mcp_backend_t *backend)
{
  memcpy(c->backend_text, backend->text, sizeof(c->backend_text));
  c->on_io = relay_io;
  c->connecting = 1;
  mcp__conn_timeout_set(c, MCP__T_CONNECT);
  if (backend->addr.sa.sa_family != AF_UNSPEC) {
    if (mcp_backend_is_own_listener(&backend->addr.sa))
      backend_failed(c);
    else
      connect_addr(c, &backend->addr.sa);
    return;
  }

  /* A hostname backend: from the resolver's cache, or its own threads (lib/resolver.c). */
  char host[MCP_HOSTNAME_MAX + 1];
  memcpy(host, backend->text, backend->host_len);
  host[backend->host_len] = '\0';
  mcp__lookup_t *l = NULL;
  int rc = mcp__lookup_start(c->cs->loop, host, backend->port, on_resolved, c, &l);
  if (rc < 0) {
    backend_failed(c);
    return;
  }
  c->gai = l;
  if (rc == 0)
    mcp__lookup_connect(l, mcp_backend_is_own_listener, on_dialled);
}

static void on_resolved(mcp__lookup_t *l, int status, void *data)
{
  mcp__conn_t *c = data;
  if (status < 0)
    backend_failed(c);
  else
    mcp__lookup_connect(l, mcp_backend_is_own_listener, on_dialled);
}

/* Every address in order, the next after a failure (lib/resolver.c); fd is now ours, connected. */
static void on_dialled(mcp__lookup_t *l, int fd, void *data)
{
  mcp__conn_t *c = data;
  c->gai = NULL;
  mcp__lookup_free(l);
  if (fd < 0) {
    backend_failed(c);
    return;
  }
  c->backend.fd = fd;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (mcp__sock_watch(c, &c->backend) != 0) {
    backend_failed(c);
    return;
  }
  mcp__conns_t *cs = c->cs;
  mcp__conns_hold(cs); /* backend_connected looks at c after what may close it */
  c->connecting = 0;
  c->backend.wr = 1;
  backend_connected(c);
  mcp__conns_unhold(cs);
}

/*
 * A non-blocking connect from a socket made non-blocking by socket(2) itself; its outcome is
 * the socket's first event (relay_io): writable, or an error or hang-up when it failed. No
 * SO_ERROR query: the outcome is backend_error either way.
 */
static void connect_addr(mcp__conn_t *c, const struct sockaddr *addr)
{
  int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) {
    backend_failed(c);
    return;
  }
  c->backend.fd = fd;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  socklen_t len = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
  if ((connect(fd, addr, len) != 0 && errno != EINPROGRESS) ||
      mcp__sock_watch(c, &c->backend) != 0)
    backend_failed(c);
}

static int pipe_write(mcp__conn_t *c, mcp__pipe_t *p, mcp__chunk_t *ch, size_t len);
static void relay_start(mcp__conn_t *c);
static void relay_run(mcp__conn_t *c);
static void pipe_run(mcp__conn_t *c, mcp__pipe_t *p);

/* What the sockets' events do: finish the connect, then relay. s is NULL for mcp__conn_again. */
static void relay_io(mcp__conn_t *c, mcp__sock_t *s)
{
  if (!c->connecting) {
    if (c->relaying)
      relay_run(c);
    else
      pipe_run(c, &c->up); /* the rest of the ClientHello, once the backend takes it */
    return;
  }
  if (s != &c->backend)
    return; /* the client's flags wait for the relay */
  if (s->err || s->hup) {
    backend_failed(c);
    return;
  }
  if (!s->wr)
    return;
  c->connecting = 0;
  backend_connected(c);
}

/*
 * The route's PROXY header (the client, and the address it connected to) followed by the
 * buffered ClientHello, in one relay chunk so that both go out in one write. Gives the hello
 * chunk back to its pool. Returns the chunk and its length in *len, or NULL (out of memory).
 */
static mcp__chunk_t *with_proxy_header(mcp__conn_t *c, size_t *len)
{
  if (!c->have_local) {
    socklen_t namelen = sizeof(c->local_addr);
    if (getsockname(c->client.fd, (struct sockaddr *)&c->local_addr, &namelen) == 0)
      c->have_local = 1;
  }
  const struct sockaddr *src = (const struct sockaddr *)&c->client_addr;
  const struct sockaddr *dst = c->have_local ? (const struct sockaddr *)&c->local_addr : NULL;
  mcp__chunk_t *ch = mcp__pool_get(&c->cs->relay_pool);
  if (!ch)
    return NULL;
  int n = c->send_proxy == 2
              ? mcp_proxy_protocol_write_v2((uint8_t *)ch->data, MCP__RELAY_CHUNK, src, dst)
              : mcp_proxy_protocol_write_v1((uint8_t *)ch->data, MCP__RELAY_CHUNK, src, dst);
  if (n < 0 || (size_t)n + c->hello_len > MCP__RELAY_CHUNK) {
    mcp__pool_put(ch);
    return NULL;
  }
  memcpy(ch->data + n, c->hello->data, c->hello_len);
  *len = (size_t)n + c->hello_len;
  mcp__pool_put(c->hello);
  return ch;
}

/*
 * Forward the ClientHello exactly as received (after a PROXY header when the route asks for
 * one); the relay starts once it is written (here, or when the backend takes the rest).
 */
static void backend_connected(mcp__conn_t *c)
{
  c->connected_ns = uv_hrtime();
  size_t len = c->hello_len;
  mcp__chunk_t *hello = c->send_proxy ? with_proxy_header(c, &len) : c->hello;
  if (!hello) {
    backend_failed(c); /* the hello chunk is still c's and goes back with the close */
    return;
  }
  c->hello = NULL;
  int rc = pipe_write(c, &c->up, hello, len);
  if (rc == 0)
    relay_start(c);
  else if (rc < 0)
    backend_failed(c);
}

static void backend_failed(mcp__conn_t *c)
{
  mcp__conn_close(c, MCP_CONN_OUTCOME_BACKEND_ERROR);
}

/* ---- relay ---- */

static int pipe_read(mcp__conn_t *c, mcp__pipe_t *p);
static int pipe_flush(mcp__conn_t *c, mcp__pipe_t *p);
static int splice_relay(mcp__conn_t *c, mcp__pipe_t *p);
static void relayed(mcp__conn_t *c, mcp__pipe_t *p, size_t n);
static void pipe_eof(mcp__conn_t *c, mcp__pipe_t *p);
static mcp__sock_t *pipe_src(mcp__conn_t *c, mcp__pipe_t *p);
static mcp__sock_t *pipe_dst(mcp__conn_t *c, mcp__pipe_t *p);
static int splice_pipe_take(mcp__conns_t *cs, mcp__chunk_t *ch, size_t len);
static void maybe_finish(mcp__conn_t *c);

/*
 * The ClientHello is forwarded: relay both directions, on the idle timeout list. The client
 * joins the event set now unless its ClientHello took more than one read (then it is there
 * already); until it says otherwise it can take bytes, as nothing has been written to it.
 */
static void relay_start(mcp__conn_t *c)
{
  c->relaying = 1;
  mcp__conn_timeout_set(c, MCP__T_IDLE);
  if (!c->client.watched)
    c->client.wr = 1;
  if (mcp__sock_watch(c, &c->client) != 0) {
    mcp__conn_close(c, MCP_CONN_OUTCOME_ERROR);
    return;
  }
  relay_run(c);
}

static void relay_run(mcp__conn_t *c)
{
  pipe_run(c, &c->up);
  if (!c->closing)
    pipe_run(c, &c->down);
}

/*
 * Reads per direction per call: a direction with more to read after that is run again in the
 * next loop iteration (mcp__conn_again), so one busy connection cannot hold up the others. The
 * figure trades latency beside a bulk transfer against CPU per GB (docs/ARCHITECTURE.md, "Fair").
 */
#define READS_PER_RUN 32

/*
 * Moves what p's flags allow: the pending write first, then reads while its source has bytes.
 * While a write is pending the source is not watched for reading (mcp__sock_reading): its
 * packets would only raise events that cannot be acted on.
 */
static void pipe_run(mcp__conn_t *c, mcp__pipe_t *p)
{
  mcp__sock_t *src = pipe_src(c, p);
  if (p->pending) {
    if (!pipe_dst(c, p)->wr)
      return;
    int rc = pipe_flush(c, p);
    if (rc < 0) {
      mcp__conn_close(c, MCP_CONN_OUTCOME_ERROR);
      return;
    }
    if (rc == 1)
      return;
    mcp__conn_timeout_touch(c);
    if (p == &c->up && !c->relaying) {
      relay_start(c); /* that was the ClientHello */
      return;
    }
    if (p->eof) {
      pipe_eof(c, p);
      return;
    }
    if (mcp__sock_reading(c, src, 1) != 0) {
      mcp__conn_close(c, MCP_CONN_OUTCOME_ERROR);
      return;
    }
  }
  for (int i = 0; i < READS_PER_RUN; i++) {
    if (p->eof || !src->rd || c->closing)
      return;
    int rc = pipe_read(c, p);
    if (rc == 1 && p->pending && !p->eof && mcp__sock_reading(c, src, 0) != 0)
      mcp__conn_close(c, MCP_CONN_OUTCOME_ERROR);
    if (rc != 0)
      return;
  }
  if (src->rd && !p->eof && !p->pending)
    mcp__conn_again(c);
}

/*
 * Splice relay: small transfers are copied, bulk is spliced. A 1 KiB reply through the pipe costs
 * two splices and the pipe's page bookkeeping; read into a pool chunk and written at once it is
 * one read and one write, and the chunk goes straight back to the pool. A read that fills
 * RELAY_SMALL bytes marks the direction as bulk: from then on splice_relay moves its bytes,
 * until a splice finds less than RELAY_SMALL waiting.
 */
#define RELAY_SMALL 16384

/*
 * One read from p's source, written on to its destination. Returns 0 to go on reading, 1 when
 * p stops for now (drained, EOF, or a write pending), -1 when c has been closed.
 *
 * A read that comes short has drained the socket: the kernel returns less than asked only
 * when its receive queue is empty, and bytes that arrive later raise a new edge. When the
 * peer's FIN was already in (rdhup) that short read is followed by EOF, which is passed on at
 * once instead of being read for; after an error (err) the next read reports it instead.
 * Urgent data (urg) breaks the rule: a read stops short at the urgent mark with bytes behind
 * it, so such a socket is read until EAGAIN, and never spliced (a splice at the mark finds
 * nothing).
 */
static int pipe_read(mcp__conn_t *c, mcp__pipe_t *p)
{
  mcp__conns_t *cs = c->cs;
  mcp__sock_t *src = pipe_src(c, p);
  if (cs->splice_w >= 0 && p->bulk && !src->urg)
    return splice_relay(c, p);
  size_t want = cs->splice_w >= 0 ? RELAY_SMALL : MCP__RELAY_CHUNK;
  mcp__chunk_t *ch = mcp__pool_get(&cs->relay_pool);
  if (!ch) {
    mcp__conn_close(c, MCP_CONN_OUTCOME_ERROR);
    return -1;
  }
  ssize_t n;
  do
    n = read(src->fd, ch->data, want);
  while (n < 0 && errno == EINTR);
  if (n <= 0) {
    mcp__pool_put(ch);
    if (n == 0) {
      pipe_eof(c, p);
      return 1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      src->rd = 0;
      return 1;
    }
    mcp__conn_close(c, MCP_CONN_OUTCOME_ERROR);
    return -1;
  }
  relayed(c, p, (size_t)n);
  int eof_next = 0;
  if ((size_t)n < want && !src->urg) {
    src->rd = src->rdhup;
    eof_next = src->rdhup && !src->err;
  } else if ((size_t)n == want && cs->splice_w >= 0 && !src->urg) {
    p->bulk = 1; /* the next read is spliced */
  }
  int rc = pipe_write(c, p, ch, (size_t)n);
  if (rc < 0) {
    mcp__conn_close(c, MCP_CONN_OUTCOME_ERROR);
    return -1;
  }
  if (eof_next) {
    pipe_eof(c, p);
    return 1;
  }
  return rc;
}

static void relayed(mcp__conn_t *c, mcp__pipe_t *p, size_t n)
{
  if (p == &c->up)
    c->bytes_in += n;
  else
    c->bytes_out += n;
  mcp__conn_timeout_touch(c);
}

/*
 * Writes the first len bytes of ch to p's destination. Returns 0 when written at once (ch is
 * back in the pool), 1 when some are pending (ch is held until the destination takes them, and
 * the source is not read meanwhile), or a negative error (ch is back in the pool).
 */
static int pipe_write(mcp__conn_t *c, mcp__pipe_t *p, mcp__chunk_t *ch, size_t len)
{
  p->pending = ch;
  p->pend_off = 0;
  p->pend_len = (uint32_t)len;
  if (!pipe_dst(c, p)->wr)
    return 1;
  return pipe_flush(c, p);
}

/*
 * Writes p's pending bytes; returns as pipe_write. A write that comes short means the socket's
 * buffer is full: wr is cleared and its EPOLLOUT edge comes once it has room. MSG_NOSIGNAL:
 * a peer that is gone is an error here, not a SIGPIPE for the embedding process.
 */
static int pipe_flush(mcp__conn_t *c, mcp__pipe_t *p)
{
  mcp__sock_t *dst = pipe_dst(c, p);
  mcp__chunk_t *ch = p->pending;
  size_t want = p->pend_len - p->pend_off;
  ssize_t n;
  do
    n = send(dst->fd, ch->data + p->pend_off, want, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n == (ssize_t)want) {
    p->pending = NULL;
    mcp__pool_put(ch);
    return 0;
  }
  if (n >= 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
    if (n > 0)
      p->pend_off += (uint32_t)n;
    dst->wr = 0;
    return 1;
  }
  int err = -errno;
  p->pending = NULL;
  mcp__pool_put(ch);
  return err;
}

/*
 * Moves what src has to dst through the loop's pipe with splice(2): the bytes go from one
 * socket's receive queue to the other's send queue without being copied into user space. One
 * pipe-full per call; returns as pipe_read. A splice that comes short has not necessarily
 * drained the socket (the pipe holds a bounded number of packets, whatever their size), so
 * only EAGAIN clears rd. When dst cannot take everything, the rest is read out of the pipe
 * into a chunk and stays pending, as in the copying relay.
 */
#define SPLICE_FLAGS (SPLICE_F_MOVE | SPLICE_F_NONBLOCK)

static int splice_relay(mcp__conn_t *c, mcp__pipe_t *p)
{
  mcp__conns_t *cs = c->cs;
  mcp__sock_t *src = pipe_src(c, p);
  mcp__sock_t *dst = pipe_dst(c, p);
  ssize_t n;
  do
    n = splice(src->fd, NULL, cs->splice_w, NULL, MCP__RELAY_CHUNK, SPLICE_FLAGS);
  while (n < 0 && errno == EINTR);
  if (n == 0) {
    /* EOF, or an urgent mark with the FIN behind it: a splice stops at the mark too, and says 0
     * there once the FIN is in. Only a read tells the two apart, so the next read copies. */
    src->urg = 1;
    return 0;
  }
  if (n < 0) {
    if (errno == EAGAIN) {
      src->rd = 0;
      return 1;
    }
    mcp__conn_close(c, MCP_CONN_OUTCOME_ERROR);
    return -1;
  }
  relayed(c, p, (size_t)n);
  if ((size_t)n < RELAY_SMALL)
    p->bulk = 0; /* a small transfer again: the next read copies */

  size_t left = (size_t)n;
  int failed = 0;
  while (left > 0 && dst->wr) {
    ssize_t m = splice(cs->splice_r, NULL, dst->fd, NULL, left, SPLICE_FLAGS);
    if (m < 0 && errno == EINTR)
      continue;
    if (m < 0 && errno == EAGAIN) {
      dst->wr = 0;
      break;
    }
    if (m <= 0) {
      failed = 1;
      break;
    }
    left -= (size_t)m;
    if (left > 0)
      dst->wr = 0; /* a short write: its buffer is full, EPOLLOUT comes when it has room */
  }
  if (left == 0)
    return 0;

  /* dst is full, or broken: empty the pipe either way. */
  mcp__chunk_t *ch = failed ? NULL : mcp__pool_get(&cs->relay_pool);
  if (splice_pipe_take(cs, ch, left) != 0 || !ch) {
    mcp__pool_put(ch);
    mcp__conn_close(c, MCP_CONN_OUTCOME_ERROR);
    return -1;
  }
  p->pending = ch;
  p->pend_off = 0;
  p->pend_len = (uint32_t)left;
  return 1;
}

/*
 * Reads exactly len bytes out of the loop's splice pipe into ch, or throws them away when ch is
 * NULL. The bytes are in the pipe already, so this never waits.
 */
static int splice_pipe_take(mcp__conns_t *cs, mcp__chunk_t *ch, size_t len)
{
  char scrap[4096] = {0}; /* only ever written; initialised to keep cppcheck content */
  size_t off = 0;
  while (off < len) {
    char *dst = ch ? ch->data + off : scrap;
    size_t want = ch ? len - off : (len - off < sizeof(scrap) ? len - off : sizeof(scrap));
    ssize_t n = read(cs->splice_r, dst, want);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1; /* cannot happen with the bytes already in the pipe */
    off += (size_t)n;
  }
  return 0;
}

/*
 * src reached EOF: pass it on as a shutdown of dst's write side, after any pending write (the
 * flush calls this again). Nothing is written to dst after it, and src is not read again.
 */
static void pipe_eof(mcp__conn_t *c, mcp__pipe_t *p)
{
  p->eof = 1;
  if (p->pending)
    return;
  p->shut = 1;
  mcp__pipe_t *other = p == &c->up ? &c->down : &c->up;
  if (other->shut_done) {
    /* The other direction has ended too, so the pair closes now, and close(2) sends the FIN
     * itself: nothing is left unread on dst (its own EOF has been seen) and nothing is queued for
     * it. A shutdown(2) first would be one more system call for the same packets. */
    p->shut_done = 1;
    maybe_finish(c);
    return;
  }
  if (shutdown(pipe_dst(c, p)->fd, SHUT_WR) != 0) {
    mcp__conn_close(c, MCP_CONN_OUTCOME_ERROR);
    return;
  }
  p->shut_done = 1;
  maybe_finish(c);
}

/* Both directions have ended cleanly: close the pair. */
static void maybe_finish(mcp__conn_t *c)
{
  if (c->up.shut_done && c->down.shut_done)
    mcp__conn_close(c, MCP_CONN_OUTCOME_OK);
}

static mcp__sock_t *pipe_src(mcp__conn_t *c, mcp__pipe_t *p)
{
  return p == &c->up ? &c->client : &c->backend;
}

static mcp__sock_t *pipe_dst(mcp__conn_t *c, mcp__pipe_t *p)
{
  return p == &c->up ? &c->backend : &c->client;
}
