/*
 * relay: the second part of a connection's life, in order: connect to the routed backend,
 * forward the buffered ClientHello, then move bytes both ways until both directions have ended.
 * listener.c hands the connection over with mcp__relay_connect; the connection object, its
 * buffers, its timeouts and its close are conn.c's. See docs/ARCHITECTURE.md.
 *
 * Memory per connection is bounded: each direction holds at most one pool chunk, and only while
 * a write to the other side is pending. A read is first written with uv_try_write; whatever the
 * kernel does not take at once is queued with uv_write, and the source side stops reading until
 * that write completes. An idle connection holds no chunk at all (libuv asks for a buffer only
 * when the socket is readable, and an EAGAIN read gives it straight back).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mcproxy/proxy_protocol.h"
#include "relay.h"
#include "resolver.h"

/* ---- connect ---- */

static void connect_addr(mcp__conn_t *c, const struct sockaddr *addr);
static void on_connect(uv_connect_t *req, int status);
static void on_resolved(mcp__lookup_t *l, int status, void *data);
static void on_dialled(mcp__lookup_t *l, int fd, void *data);
static void backend_read_start(mcp__conn_t *c);
static void backend_connected(mcp__conn_t *c);
static void backend_failed(mcp__conn_t *c);

/*
 * The connect phase, bounded as a whole by the connect timeout (the connection is on that list
 * until the ClientHello is forwarded). An address that is one of this process's own listeners is
 * never connected to: a route that loops back would otherwise open connections to itself until
 * the descriptors run out.
 */
void mcp__relay_connect(mcp__conn_t *c, const mcp_backend_t *backend)
{
  memcpy(c->backend_text, backend->text, sizeof(c->backend_text));
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

/* Every address in order, the next after a failure (lib/resolver.c); fd is now ours. */
static void on_dialled(mcp__lookup_t *l, int fd, void *data)
{
  mcp__conn_t *c = data;
  c->gai = NULL;
  mcp__lookup_free(l);
  if (fd < 0) {
    backend_failed(c);
    return;
  }
  if (uv_tcp_init(c->cs->loop, &c->backend) != 0) {
    close(fd);
    backend_failed(c);
    return;
  }
  c->backend_inited = 1;
  if (uv_tcp_open(&c->backend, fd) != 0) {
    close(fd);
    backend_failed(c);
    return;
  }
  backend_read_start(c);
  if (!c->closing)
    backend_connected(c);
}

static void pipe_read_start(mcp__conn_t *c, mcp__pipe_t *p);

/*
 * The backend is read from the start, while it still connects: its read and connect interest
 * then go to epoll together (one ADD for both, one MOD when the connect is done) instead of
 * libuv's ADD, then ADD again (EEXIST) and MOD once the connect watcher has stopped. libuv
 * reports the connect before any read, and a backend that speaks before the ClientHello is
 * forwarded is relayed to the client as it would be a moment later.
 */
static void backend_read_start(mcp__conn_t *c)
{
  pipe_read_start(c, &c->down);
}

static void connect_addr(mcp__conn_t *c, const struct sockaddr *addr)
{
  if (uv_tcp_init(c->cs->loop, &c->backend) != 0) {
    backend_failed(c);
    return;
  }
  c->backend_inited = 1;
  c->req.connect.data = c;
  if (uv_tcp_connect(&c->req.connect, &c->backend, addr, on_connect) != 0) {
    backend_failed(c);
    return;
  }
  backend_read_start(c);
}

static int pipe_write(mcp__conn_t *c, mcp__pipe_t *p, mcp__chunk_t *ch, size_t len);
static void relay_start(mcp__conn_t *c);

/*
 * The route's PROXY header (the client, and the address it connected to) followed by the
 * buffered ClientHello, in one relay chunk so that both go out in one write. Gives the hello
 * chunk back to its pool. Returns the chunk and its length in *len, or NULL (out of memory).
 */
static mcp__chunk_t *with_proxy_header(mcp__conn_t *c, size_t *len)
{
  if (!c->have_local) {
    int namelen = sizeof(c->local_addr);
    if (uv_tcp_getsockname(&c->client, (struct sockaddr *)&c->local_addr, &namelen) == 0)
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

static void on_connect(uv_connect_t *req, int status)
{
  mcp__conn_t *c = req->data;
  if (c->closing)
    return;
  if (status < 0) {
    backend_failed(c);
    return;
  }
  backend_connected(c);
}

static void backend_connected(mcp__conn_t *c)
{
  c->connected_ns = uv_hrtime();
  uv_tcp_nodelay(&c->backend, 1);
  /* Forward the ClientHello exactly as received (after a PROXY header when the route asks for
   * one), then start relaying. */
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

static void on_relay_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_relay_read(uv_stream_t *src, ssize_t nread, const uv_buf_t *buf);
static void splice_relay(mcp__conn_t *c, mcp__pipe_t *p);
static void relayed(mcp__conn_t *c, mcp__pipe_t *p, size_t n);
static void on_write(uv_write_t *req, int status);
static void pipe_eof(mcp__conn_t *c, mcp__pipe_t *p);
static uv_stream_t *pipe_src(mcp__conn_t *c, mcp__pipe_t *p);
static uv_stream_t *pipe_dst(mcp__conn_t *c, mcp__pipe_t *p);
static mcp__pipe_t *pipe_of_src(mcp__conn_t *c, uv_stream_t *src);
static int splice_pipe_take(mcp__conns_t *cs, mcp__chunk_t *ch, size_t len);
static void maybe_finish(mcp__conn_t *c);

/* The ClientHello is forwarded: relay both directions, on the idle timeout list. */
static void relay_start(mcp__conn_t *c)
{
  c->relaying = 1;
  mcp__conn_timeout_set(c, MCP__T_IDLE);
  pipe_read_start(c, &c->up); /* the backend is read since its connect (backend_read_start) */
}

static void pipe_read_start(mcp__conn_t *c, mcp__pipe_t *p)
{
  if (uv_read_start(pipe_src(c, p), on_relay_alloc, on_relay_read) != 0)
    mcp__conn_close(c, MCP_CONN_OUTCOME_ERROR);
}

/*
 * Splice relay: small transfers are copied, bulk is spliced. A 1 KiB reply through the pipe costs
 * two splices and the pipe's page bookkeeping; read into a pool chunk and written at once it is
 * one read and one write, and the chunk goes straight back to the pool. A read that fills
 * RELAY_SMALL bytes marks the direction as bulk: from then on libuv is given no buffer, and
 * splice_relay moves the bytes, until a wake-up finds less than RELAY_SMALL waiting.
 */
#define RELAY_SMALL 16384

static void on_relay_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  (void)suggested;
  mcp__conn_t *c = h->data;
  size_t want = MCP__RELAY_CHUNK;
  if (c->cs->splice_w >= 0) {
    if (pipe_of_src(c, (uv_stream_t *)h)->bulk) {
      /* No buffer: libuv then reports readiness as UV_ENOBUFS and splice_relay moves the bytes. */
      *buf = uv_buf_init(NULL, 0);
      return;
    }
    want = RELAY_SMALL;
  }
  mcp__chunk_t *ch = mcp__pool_get(&c->cs->relay_pool);
  *buf = ch ? uv_buf_init(ch->data, (unsigned int)want) : uv_buf_init(NULL, 0);
}

static void on_relay_read(uv_stream_t *src, ssize_t nread, const uv_buf_t *buf)
{
  mcp__conn_t *c = src->data;
  mcp__pipe_t *p = pipe_of_src(c, src);
  if (nread == UV_ENOBUFS && c->cs->splice_w >= 0) {
    splice_relay(c, p);
    return;
  }
  mcp__chunk_t *ch = buf->base ? MCP__CHUNK_OF(buf->base) : NULL;
  if (nread <= 0 || !ch) {
    mcp__pool_put(ch);
    if (nread == UV_EOF)
      pipe_eof(c, p);
    else if (nread < 0)
      mcp__conn_close(c, MCP_CONN_OUTCOME_ERROR);
    return;
  }
  relayed(c, p, (size_t)nread);
  if (c->cs->splice_w >= 0 && (size_t)nread == RELAY_SMALL)
    p->bulk = 1; /* the next read of this wake-up, and the ones after, are spliced */
  int rc = pipe_write(c, p, ch, (size_t)nread);
  if (rc == 1)
    uv_read_stop(src); /* backpressure: resume in on_write */
  else if (rc < 0)
    mcp__conn_close(c, MCP_CONN_OUTCOME_ERROR);
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
 * back in the pool), 1 when a write is pending (ch is held and the source must pause), or a
 * negative error (ch is back in the pool).
 */
static int pipe_write(mcp__conn_t *c, mcp__pipe_t *p, mcp__chunk_t *ch, size_t len)
{
  uv_stream_t *dst = pipe_dst(c, p);
  uv_buf_t buf = uv_buf_init(ch->data, (unsigned int)len);
  int n = uv_try_write(dst, &buf, 1);
  if (n == (int)len) {
    mcp__pool_put(ch);
    return 0;
  }
  if (n < 0 && n != UV_EAGAIN) {
    mcp__pool_put(ch);
    return n;
  }
  if (n > 0) {
    buf.base += n;
    buf.len -= (unsigned int)n;
  }
  p->pending = ch;
  ch->u.wreq.data = c;
  int err = uv_write(&ch->u.wreq, dst, &buf, 1, on_write);
  if (err) {
    p->pending = NULL;
    mcp__pool_put(ch);
    return err;
  }
  return 1;
}

static void on_write(uv_write_t *req, int status)
{
  mcp__conn_t *c = req->data;
  mcp__chunk_t *ch = (mcp__chunk_t *)req;
  mcp__pipe_t *p = c->up.pending == ch ? &c->up : &c->down;
  mcp__pool_put(ch);
  p->pending = NULL;
  if (c->closing)
    return;
  if (status < 0) {
    mcp__conn_close(c, MCP_CONN_OUTCOME_ERROR);
    return;
  }
  mcp__conn_timeout_touch(c);
  if (p == &c->up && !c->relaying) {
    relay_start(c); /* that was the ClientHello */
    return;
  }
  if (p->eof)
    pipe_eof(c, p);
  else
    pipe_read_start(c, p);
}

/*
 * Moves what src has to dst through the loop's pipe with splice(2): the bytes go from one
 * socket's receive queue to the other's send queue without being copied into user space. Up to
 * SPLICE_ROUNDS pipe-fulls per wake-up; the rest waits for the next one (epoll is level
 * triggered, so it comes). When dst cannot take everything, the rest is read out of the pipe
 * into a chunk and written by libuv, and src pauses as in the copying relay.
 */
#define SPLICE_ROUNDS 4
#define SPLICE_FLAGS (SPLICE_F_MOVE | SPLICE_F_NONBLOCK)

static void splice_relay(mcp__conn_t *c, mcp__pipe_t *p)
{
  mcp__conns_t *cs = c->cs;
  uv_stream_t *src = pipe_src(c, p);
  uv_os_fd_t sfd, dfd;
  uv_fileno((uv_handle_t *)src, &sfd);
  uv_fileno((uv_handle_t *)pipe_dst(c, p), &dfd);

  for (int round = 0; round < SPLICE_ROUNDS; round++) {
    ssize_t n = splice(sfd, NULL, cs->splice_w, NULL, MCP__RELAY_CHUNK, SPLICE_FLAGS);
    if (n == 0) {
      pipe_eof(c, p);
      return;
    }
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN)
        mcp__conn_close(c, MCP_CONN_OUTCOME_ERROR);
      return;
    }
    relayed(c, p, (size_t)n);
    if (round == 0 && (size_t)n < RELAY_SMALL)
      p->bulk = 0; /* a small transfer again: the next wake-up copies */

    size_t left = (size_t)n;
    int failed = 0;
    while (left > 0) {
      ssize_t m = splice(cs->splice_r, NULL, dfd, NULL, left, SPLICE_FLAGS);
      if (m > 0)
        left -= (size_t)m;
      else if (m < 0 && errno == EINTR)
        continue;
      else {
        failed = m < 0 && errno != EAGAIN;
        break;
      }
    }
    if (left == 0) {
      /* Less than asked for: the socket is drained; another splice would only say EAGAIN. */
      if ((size_t)n < MCP__RELAY_CHUNK)
        return;
      continue;
    }

    /* dst is full, or broken: empty the pipe either way. */
    mcp__chunk_t *ch = failed ? NULL : mcp__pool_get(&cs->relay_pool);
    if (splice_pipe_take(cs, ch, left) != 0 || !ch) {
      mcp__pool_put(ch);
      mcp__conn_close(c, MCP_CONN_OUTCOME_ERROR);
      return;
    }
    int rc = pipe_write(c, p, ch, left);
    if (rc == 1)
      uv_read_stop(src); /* backpressure: resume in on_write */
    else if (rc < 0)
      mcp__conn_close(c, MCP_CONN_OUTCOME_ERROR);
    return;
  }
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
 * src reached EOF: pass it on as a shutdown of dst's write side, after any pending write. The
 * shutdown(2) is ours, not uv_shutdown's: nothing is queued on dst (a pending write defers this
 * to its callback), and libuv's way costs an epoll change and a loop iteration per direction
 * (it arms the write watcher only to find the queue empty). Nothing is written to dst after it.
 */
static void pipe_eof(mcp__conn_t *c, mcp__pipe_t *p)
{
  p->eof = 1;
  uv_read_stop(pipe_src(c, p));
  if (p->pending)
    return; /* the write callback shuts down once the pending write is done */
  p->shut = 1;
  mcp__pipe_t *other = p == &c->up ? &c->down : &c->up;
  if (other->shut_done) {
    /* The other direction has ended too, so the pair closes now, and close(2) sends the FIN
     * itself: nothing is left unread on dst (its own EOF was read) and nothing is queued for
     * it. A shutdown(2) first would be one more system call for the same packets. */
    p->shut_done = 1;
    maybe_finish(c);
    return;
  }
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)pipe_dst(c, p), &fd) != 0 || shutdown(fd, SHUT_WR) != 0) {
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

static uv_stream_t *pipe_src(mcp__conn_t *c, mcp__pipe_t *p)
{
  return p == &c->up ? (uv_stream_t *)&c->client : (uv_stream_t *)&c->backend;
}

static uv_stream_t *pipe_dst(mcp__conn_t *c, mcp__pipe_t *p)
{
  return p == &c->up ? (uv_stream_t *)&c->backend : (uv_stream_t *)&c->client;
}

static mcp__pipe_t *pipe_of_src(mcp__conn_t *c, uv_stream_t *src)
{
  return src == (uv_stream_t *)&c->client ? &c->up : &c->down;
}
