/*
 * conn: the connection object, the buffer pools, the timeout lists and the close.
 *
 * lib/listener.c creates connections and walks them from accept to route; lib/relay.c takes
 * them from connect to the end of the relay. Both call in here; nothing here calls them. The
 * order below follows a connection: its object, the buffers it borrows, the timeout list it
 * sits on, then its close and the record it leaves. See docs/ARCHITECTURE.md.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn_internal.h"
#include "resolver.h"

static void timer_cb(uv_timer_t *timer);

int mcp__conns_init(mcp__conns_t *cs, uv_loop_t *loop, const uint64_t timeouts_ms[MCP__T_COUNT],
                    int copy_relay)
{
  memset(cs, 0, sizeof(*cs));
  cs->loop = loop;
  for (int i = 0; i < MCP__T_COUNT; i++)
    cs->tlists[i].timeout_ms = timeouts_ms[i];
  cs->relay_pool.size = MCP__RELAY_CHUNK;
  cs->splice_r = cs->splice_w = -1;
  int pfd[2];
  if (!copy_relay && pipe2(pfd, O_NONBLOCK | O_CLOEXEC) == 0) {
    cs->splice_r = pfd[0];
    cs->splice_w = pfd[1];
  }
  int err = uv_timer_init(loop, &cs->timer);
  if (err) {
    if (cs->splice_r >= 0) {
      close(cs->splice_r);
      close(cs->splice_w);
    }
    return err;
  }
  cs->timer.data = cs;
  return 0;
}

/* ---- connection objects ---- */

/* Live connection objects of every listener on every loop: each may hold two descriptors. */
static atomic_int_fast64_t live_total;

int64_t mcp__conn_live_total(void)
{
  return atomic_load_explicit(&live_total, memory_order_relaxed);
}

int mcp__conn_new(mcp__conns_t *cs, mcp__conn_t **out)
{
  mcp__conn_t *c = cs->free;
  if (c) {
    cs->free = c->tnext;
    cs->free_len--;
  } else {
    c = malloc(sizeof(*c));
    if (!c)
      return UV_ENOMEM;
  }
  cs->live++;
  atomic_fetch_add_explicit(&live_total, 1, memory_order_relaxed);
  memset(c, 0, offsetof(mcp__conn_t, sni));
  c->sni[0] = '\0';
  c->backend_text[0] = '\0';
  c->cs = cs;
  c->tlist = MCP__T_NONE;
  c->started_ms = uv_now(cs->loop);
  c->started_ns = uv_hrtime();
  *out = c;
  return 0;
}

/* After both handles have closed: back to the free list (or to malloc). */
static void conn_release(mcp__conn_t *c)
{
  mcp__conns_t *cs = c->cs;
  cs->live--;
  atomic_fetch_sub_explicit(&live_total, 1, memory_order_relaxed);
  if (cs->free_len < MCP__CONN_KEEP) {
    c->tnext = cs->free;
    cs->free = c;
    cs->free_len++;
  } else {
    free(c);
  }
  /* Last: on_empty may free cs itself. */
  if (cs->live == 0 && cs->on_empty)
    cs->on_empty(cs);
}

/* ---- buffer pools ---- */

mcp__chunk_t *mcp__pool_get(mcp__pool_t *pool)
{
  mcp__chunk_t *ch = pool->free;
  if (ch) {
    pool->free = ch->u.next;
    pool->len--;
    return ch;
  }
  ch = malloc(sizeof(mcp__chunk_t) + pool->size);
  if (ch)
    ch->pool = pool;
  return ch;
}

void mcp__pool_put(mcp__chunk_t *ch)
{
  if (!ch)
    return;
  mcp__pool_t *pool = ch->pool;
  if (!pool || pool->len >= MCP__POOL_KEEP) {
    free(ch);
    return;
  }
  ch->u.next = pool->free;
  pool->free = ch;
  pool->len++;
}

static void pool_drain(mcp__pool_t *pool)
{
  while (pool->free) {
    mcp__chunk_t *ch = pool->free;
    pool->free = ch->u.next;
    free(ch);
  }
  pool->len = 0;
}

/* ---- timeout lists ---- */

static void tlist_unlink(mcp__tlist_t *t, mcp__conn_t *c)
{
  if (c->tprev)
    c->tprev->tnext = c->tnext;
  else
    t->head = c->tnext;
  if (c->tnext)
    c->tnext->tprev = c->tprev;
  else
    t->tail = c->tprev;
  c->tprev = c->tnext = NULL;
}

static void tlist_append(mcp__tlist_t *t, mcp__conn_t *c, uint64_t now)
{
  c->tkey = now;
  c->tprev = t->tail;
  c->tnext = NULL;
  if (t->tail)
    t->tail->tnext = c;
  else
    t->head = c;
  t->tail = c;
}

/* Arms the timer for the earliest deadline among the list heads. */
static void timer_rearm(mcp__conns_t *cs)
{
  uint64_t due = 0;
  for (int i = 0; i < MCP__T_COUNT; i++) {
    mcp__tlist_t *t = &cs->tlists[i];
    if (t->head && (!due || t->head->tkey + t->timeout_ms < due))
      due = t->head->tkey + t->timeout_ms;
  }
  if (!due) {
    uv_timer_stop(&cs->timer);
    cs->timer_due = 0;
    return;
  }
  if (due == cs->timer_due)
    return;
  uint64_t now = uv_now(cs->loop);
  cs->timer_due = due;
  uv_timer_start(&cs->timer, timer_cb, due > now ? due - now : 0, 0);
}

void mcp__conn_timeout_set(mcp__conn_t *c, int tlist)
{
  mcp__conns_t *cs = c->cs;
  if (c->tlist != MCP__T_NONE)
    tlist_unlink(&cs->tlists[c->tlist], c);
  c->tlist = tlist;
  tlist_append(&cs->tlists[tlist], c, uv_now(cs->loop));
  /* A new tail never moves a list's own deadline earlier, but it may be the first entry. */
  if (!cs->timer_due || c->tkey + cs->tlists[tlist].timeout_ms < cs->timer_due)
    timer_rearm(cs);
}

void mcp__conn_timeout_touch(mcp__conn_t *c)
{
  mcp__conns_t *cs = c->cs;
  uint64_t now = uv_now(cs->loop);
  /* uv_now is cached per loop iteration: many reads in one iteration move the entry once. */
  if (c->tkey == now || c->tlist == MCP__T_NONE)
    return;
  mcp__tlist_t *t = &cs->tlists[c->tlist];
  tlist_unlink(t, c);
  tlist_append(t, c, now);
}

static void timeout_clear(mcp__conn_t *c)
{
  if (c->tlist == MCP__T_NONE)
    return;
  tlist_unlink(&c->cs->tlists[c->tlist], c);
  c->tlist = MCP__T_NONE;
}

static void timer_cb(uv_timer_t *timer)
{
  mcp__conns_t *cs = timer->data;
  uint64_t now = uv_now(cs->loop);
  cs->timer_due = 0;
  for (int i = 0; i < MCP__T_COUNT; i++) {
    mcp__tlist_t *t = &cs->tlists[i];
    while (t->head && t->head->tkey + t->timeout_ms <= now) {
      mcp__conn_t *c = t->head;
      if (c->proxy_pending) {
        /* No complete PROXY header within the handshake timeout. */
        MCP__COUNT(cs->counters, proxy_error_total, 1);
        mcp__conn_close(c, MCP_CONN_OUTCOME_PROXY_ERROR);
        continue;
      }
      if (i == MCP__T_HANDSHAKE)
        MCP__COUNT(cs->counters, unrouted_total, 1);
      /* A backend that does not answer within connect_timeout is a backend error. */
      mcp__conn_close(c, i == MCP__T_CONNECT ? MCP_CONN_OUTCOME_BACKEND_ERROR
                                            : MCP_CONN_OUTCOME_TIMEOUT);
    }
  }
  timer_rearm(cs);
}

/* ---- close ---- */

static void conn_record(mcp__conn_t *c);

static void on_conn_handle_closed(uv_handle_t *h)
{
  mcp__conn_t *c = h->data;
  if (--c->handles_open > 0)
    return;
  conn_record(c);
  conn_release(c);
}

/*
 * Linux answers close() with a reset instead of a FIN when received bytes were never read. A
 * client refused before relaying (limit, unrouted, timeout) has often sent its ClientHello
 * already, so throw away what is queued to close it normally. The bytes go into one scratch
 * buffer per thread (never read back): recv with a NULL buffer and MSG_TRUNC would avoid the
 * copy, but memory checkers (valgrind) report it as a write through a bad pointer.
 */
#define DISCARD_SCRATCH 4096
static _Thread_local char discard_scratch[DISCARD_SCRATCH];

static void discard_unread(mcp__conn_t *c)
{
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->client, &fd) != 0)
    return;
  /* Bounded: what a refused client can have queued before its close is the ClientHello. */
  for (int i = 0; i < MCP__RELAY_CHUNK / DISCARD_SCRATCH; i++) {
    if (recv(fd, discard_scratch, DISCARD_SCRATCH, MSG_DONTWAIT) < DISCARD_SCRATCH)
      break;
  }
}

/* The per-outcome counters of the outcomes the listener does not count itself. */
static void count_outcome(mcp__counters_t *k, mcp_conn_outcome_t outcome)
{
  switch (outcome) {
  case MCP_CONN_OUTCOME_ERROR:
    MCP__COUNT(k, error_total, 1);
    break;
  case MCP_CONN_OUTCOME_TIMEOUT:
    MCP__COUNT(k, timeout_total, 1);
    break;
  case MCP_CONN_OUTCOME_BACKEND_ERROR:
    MCP__COUNT(k, backend_error_total, 1);
    break;
  case MCP_CONN_OUTCOME_SHUTDOWN:
    MCP__COUNT(k, shutdown_total, 1);
    break;
  default:
    break;
  }
}

void mcp__conn_close(mcp__conn_t *c, mcp_conn_outcome_t outcome)
{
  if (c->closing)
    return;
  c->closing = 1;
  c->outcome = (uint8_t)outcome;
  count_outcome(c->cs->counters, outcome);
  timeout_clear(c);
  if (c->counted) {
    MCP__COUNT(c->cs->counters, active, -1);
    c->counted = 0;
  }
  if (c->limits_held) {
    mcp_client_limits_release(atomic_load(&c->cs->counters->climits), &c->limits_key,
                              uv_now(c->cs->loop));
    c->limits_held = 0;
  }
  if (c->hello) {
    mcp__pool_put(c->hello);
    c->hello = NULL;
  }
  if (c->gai) {
    /* Its answer, if still to come, is dropped; its callbacks never run after this. */
    mcp__lookup_free(c->gai);
    c->gai = NULL;
  }

  /* Write and connect requests are cancelled by uv_close and their callbacks run (and return
   * their chunks) before the close callbacks. */
  c->handles_open = 1;
  if (outcome == MCP_CONN_OUTCOME_BLOCKED || c->reset) {
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

void mcp__conns_close_all(mcp__conns_t *cs)
{
  for (int i = 0; i < MCP__T_COUNT; i++) {
    while (cs->tlists[i].head)
      mcp__conn_close(cs->tlists[i].head, MCP_CONN_OUTCOME_SHUTDOWN);
  }
}

void mcp__conns_finish(mcp__conns_t *cs)
{
  pool_drain(&cs->relay_pool);
  if (cs->splice_r >= 0) {
    close(cs->splice_r);
    close(cs->splice_w);
    cs->splice_r = cs->splice_w = -1;
  }
  while (cs->free) {
    mcp__conn_t *c = cs->free;
    cs->free = c->tnext;
    free(c);
  }
  cs->free_len = 0;
}

/* ---- the record a connection leaves ---- */

static const char *const outcome_names[] = {
    [MCP_CONN_OUTCOME_OK] = "ok",
    [MCP_CONN_OUTCOME_LIMIT] = "limit",
    [MCP_CONN_OUTCOME_BLOCKED] = "blocked",
    [MCP_CONN_OUTCOME_UNROUTED] = "unrouted",
    [MCP_CONN_OUTCOME_TIMEOUT] = "timeout",
    [MCP_CONN_OUTCOME_BACKEND_ERROR] = "backend_error",
    [MCP_CONN_OUTCOME_ERROR] = "error",
    [MCP_CONN_OUTCOME_SHUTDOWN] = "shutdown",
    [MCP_CONN_OUTCOME_PROXY_ERROR] = "proxy_error",
    [MCP_CONN_OUTCOME_RATE_LIMITED] = "rate_limited",
};

const char *mcp_conn_outcome_name(mcp_conn_outcome_t outcome)
{
  if ((unsigned)outcome >= sizeof(outcome_names) / sizeof(outcome_names[0]))
    return "-";
  return outcome_names[outcome];
}

/*
 * The connection log line is written once per connection, so it is put together by hand: one
 * memcpy per field and a digit loop per number instead of a printf format walk (about a quarter
 * of the proxy's user-space instructions per connection went into snprintf here; see
 * docs/PERFORMANCE.md). The result, truncation and return value are snprintf's.
 */
typedef struct line_s {
  char *buf;
  size_t len; /* capacity of buf */
  size_t pos; /* length of the whole line, written or not */
} line_t;

static void line_put(line_t *l, const char *s, size_t n)
{
  if (l->pos < l->len) {
    size_t room = l->len - l->pos;
    memcpy(l->buf + l->pos, s, n < room ? n : room);
  }
  l->pos += n;
}

static void line_str(line_t *l, const char *key, size_t key_len, const char *s)
{
  line_put(l, key, key_len);
  line_put(l, s, strlen(s));
}

static void line_u64(line_t *l, const char *key, size_t key_len, uint64_t v)
{
  char digits[20];
  size_t i = sizeof(digits);
  do {
    digits[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  line_put(l, key, key_len);
  line_put(l, digits + i, sizeof(digits) - i);
}

#define KEY(s) (s), sizeof(s) - 1

int mcp_conn_record_format(const mcp_conn_record_t *r, char *buf, size_t len)
{
  line_t l = {buf, len, 0};
  line_str(&l, KEY("listener="), r->listener);
  line_str(&l, KEY(" client="), r->client);
  line_str(&l, KEY(" sni="), r->sni);
  line_str(&l, KEY(" backend="), r->backend);
  line_str(&l, KEY(" outcome="), mcp_conn_outcome_name(r->outcome));
  line_u64(&l, KEY(" bytes_in="), r->bytes_in);
  line_u64(&l, KEY(" bytes_out="), r->bytes_out);
  line_u64(&l, KEY(" duration_ms="), r->duration_ms);
  if (len > 0)
    buf[l.pos < len ? l.pos : len - 1] = '\0';
  return (int)l.pos;
}

#undef KEY

/* Writes v in decimal at p and returns the end; v < 100000. */
static char *put_small(char *p, unsigned v)
{
  char tmp[5];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n)
    *p++ = tmp[--n];
  return p;
}

/*
 * "a.b.c.d:port" or "[v6]:port". Runs once per connection for its log line, so IPv4 (the
 * common case) is written by hand: inet_ntop plus snprintf cost ten times as much.
 */
void mcp__sockaddr_format(const struct sockaddr *sa, char *out, size_t len)
{
  char ip[INET6_ADDRSTRLEN];
  if (sa->sa_family == AF_INET && len >= sizeof("255.255.255.255:65535")) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    const unsigned char *b = (const unsigned char *)&in->sin_addr;
    char *p = out;
    for (int i = 0; i < 4; i++) {
      p = put_small(p, b[i]);
      *p++ = i < 3 ? '.' : ':';
    }
    p = put_small(p, ntohs(in->sin_port));
    *p = '\0';
  } else if (sa->sa_family == AF_INET) {
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

/* Hands what is known about the ended connection to the owner's on_end. */
static void conn_record(mcp__conn_t *c)
{
  mcp__conns_t *cs = c->cs;
  if (!cs->on_end)
    return;
  char client[INET6_ADDRSTRLEN + 8];
  mcp__sockaddr_format((struct sockaddr *)&c->client_addr, client, sizeof(client));
  mcp_conn_record_t rec = {
      .listener = cs->name,
      .client = client,
      .sni = c->sni[0] ? c->sni : "-",
      .backend = c->backend_text[0] ? c->backend_text : "-",
      .outcome = (mcp_conn_outcome_t)c->outcome,
      .bytes_in = c->bytes_in,
      .bytes_out = c->bytes_out,
      .duration_ms = uv_now(cs->loop) - c->started_ms,
      .handshake_us = c->routed_ns ? (c->routed_ns - c->started_ns) / 1000 + 1 : 0,
      .backend_connect_us = c->connected_ns ? (c->connected_ns - c->routed_ns) / 1000 + 1 : 0,
  };
  cs->on_end(cs->data, &rec);
}
