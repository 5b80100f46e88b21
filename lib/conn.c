/*
 * conn: the connection object, the buffer pools, the timeout lists and the close.
 *
 * lib/listener.c creates connections and walks them from accept to route; lib/relay.c takes
 * them from connect to the end of the relay. Both call in here; nothing here calls them. The
 * order below follows a connection: its object, the buffers it borrows, the timeout list it
 * sits on, then its close and the record it leaves. See docs/ARCHITECTURE.md.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn_internal.h"
#include "resolver.h"

static void timer_cb(uv_timer_t *timer);
static void on_events(uv_poll_t *h, int status, int events);

int mcp__conns_init(mcp__conns_t *cs, uv_loop_t *loop, const uint64_t timeouts_ms[MCP__T_COUNT],
                    int copy_relay)
{
  memset(cs, 0, sizeof(*cs));
  cs->loop = loop;
  for (int i = 0; i < MCP__T_COUNT; i++)
    cs->tlists[i].timeout_ms = timeouts_ms[i];
  cs->relay_pool.size = MCP__RELAY_CHUNK;
  cs->slot_free = UINT32_MAX;
  cs->splice_r = cs->splice_w = -1;
  cs->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (cs->epfd < 0)
    return -errno;
  int err = uv_poll_init(loop, &cs->events, cs->epfd);
  if (err) {
    close(cs->epfd);
    return err;
  }
  int pfd[2];
  if (!copy_relay && pipe2(pfd, O_NONBLOCK | O_CLOEXEC) == 0) {
    cs->splice_r = pfd[0];
    cs->splice_w = pfd[1];
  }
  cs->events.data = cs;
  uv_poll_start(&cs->events, UV_READABLE, on_events);
  uv_unref((uv_handle_t *)&cs->events); /* referenced while a connection is live */
  uv_idle_init(loop, &cs->again);
  cs->again.data = cs;
  uv_timer_init(loop, &cs->timer);
  cs->timer.data = cs;
  return 0;
}

void mcp__conns_close_handles(mcp__conns_t *cs, uv_close_cb close_cb)
{
  uv_close((uv_handle_t *)&cs->timer, close_cb);
  uv_close((uv_handle_t *)&cs->events, close_cb);
  uv_close((uv_handle_t *)&cs->again, close_cb);
}

/* ---- connection objects ---- */

/* Live connection objects of every listener on every loop: each may hold two descriptors. */
static atomic_int_fast64_t live_total;

int64_t mcp__conn_live_total(void)
{
  return atomic_load_explicit(&live_total, memory_order_relaxed);
}

/*
 * Slots: an event set entry names its connection by slot and generation, not by pointer. A
 * socket normally leaves the set when it is closed, but not while another process still holds
 * it (a fork between fork() and exec()); an event it then reports names a slot whose
 * generation has moved on, and is ignored.
 */
struct mcp__conn_slot_s {
  mcp__conn_t *conn; /* NULL when free */
  uint32_t next_free;
};

#define SLOTS_MAX (UINT32_MAX >> 1) /* an event's data keeps the slot in 31 bits */

static int slot_take(mcp__conns_t *cs, mcp__conn_t *c)
{
  if (cs->slot_free == UINT32_MAX) {
    uint32_t n = cs->nslots ? cs->nslots * 2 : 64;
    if (cs->nslots >= SLOTS_MAX / 2)
      return -1;
    mcp__conn_slot_t *grown = realloc(cs->slots, n * sizeof(*grown));
    if (!grown)
      return -1;
    for (uint32_t i = cs->nslots; i < n; i++) {
      grown[i].conn = NULL;
      grown[i].next_free = i + 1 < n ? i + 1 : UINT32_MAX;
    }
    cs->slot_free = cs->nslots;
    cs->slots = grown;
    cs->nslots = n;
  }
  c->slot = cs->slot_free;
  c->gen = ++cs->gen;
  cs->slot_free = cs->slots[c->slot].next_free;
  cs->slots[c->slot].conn = c;
  return 0;
}

static void slot_give(mcp__conns_t *cs, const mcp__conn_t *c)
{
  cs->slots[c->slot].conn = NULL;
  cs->slots[c->slot].next_free = cs->slot_free;
  cs->slot_free = c->slot;
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
  if (slot_take(cs, c) != 0) {
    free(c); /* the free list may be full already */
    return UV_ENOMEM;
  }
  if (cs->live++ == 0)
    uv_ref((uv_handle_t *)&cs->events);
  atomic_fetch_add_explicit(&live_total, 1, memory_order_relaxed);
  uint32_t slot = c->slot, gen = c->gen;
  memset(c, 0, offsetof(mcp__conn_t, sni));
  c->slot = slot;
  c->gen = gen;
  c->sni[0] = '\0';
  c->backend_text[0] = '\0';
  c->cs = cs;
  c->tlist = MCP__T_NONE;
  c->client.fd = c->backend.fd = -1;
  c->started_ms = uv_now(cs->loop);
  c->started_ns = uv_hrtime();
  *out = c;
  return 0;
}

/* After its close: back to the free list (or to malloc). */
static void conn_release(mcp__conn_t *c)
{
  mcp__conns_t *cs = c->cs;
  slot_give(cs, c);
  if (--cs->live == 0)
    uv_unref((uv_handle_t *)&cs->events);
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

/* ---- the event set ---- */

#define EVENT_BATCH 128

static int sock_ctl(mcp__conn_t *c, mcp__sock_t *s, int op, uint32_t reading)
{
  struct epoll_event ev = {
      .events = reading | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET,
      .data.u64 = (uint64_t)c->gen << 32 | (uint64_t)c->slot << 1 | (s == &c->backend),
  };
  return epoll_ctl(c->cs->epfd, op, s->fd, &ev) == 0 ? 0 : -errno;
}

int mcp__sock_watch(mcp__conn_t *c, mcp__sock_t *s)
{
  if (s->watched)
    return 0;
  int err = sock_ctl(c, s, EPOLL_CTL_ADD, EPOLLIN);
  s->watched = err == 0;
  return err;
}

int mcp__sock_reading(mcp__conn_t *c, mcp__sock_t *s, int on)
{
  if (!s->watched || s->paused == !on)
    return 0;
  int err = sock_ctl(c, s, EPOLL_CTL_MOD, on ? EPOLLIN : 0);
  if (err == 0)
    s->paused = !on;
  return err;
}

void mcp__conns_hold(mcp__conns_t *cs)
{
  cs->dispatching++;
}

static void conn_finish(mcp__conn_t *c);

void mcp__conns_unhold(mcp__conns_t *cs)
{
  if (--cs->dispatching > 0)
    return;
  /* conn_finish may free cs along with the last connection (on_empty): nothing after it. */
  while (cs->released) {
    mcp__conn_t *c = cs->released;
    cs->released = c->tnext;
    int last = cs->released == NULL;
    conn_finish(c);
    if (last)
      return;
  }
}

/*
 * The event set has events: a batch of them, each setting its socket's flags and calling its
 * connection's on_io. More than a batch waiting keeps the set readable, so libuv calls again.
 */
static void on_events(uv_poll_t *h, int status, int events)
{
  mcp__conns_t *cs = h->data;
  (void)status;
  (void)events;
  struct epoll_event ev[EVENT_BATCH];
  int n = epoll_wait(cs->epfd, ev, EVENT_BATCH, 0);
  mcp__conns_hold(cs);
  for (int i = 0; i < n; i++) {
    uint64_t d = ev[i].data.u64;
    uint32_t slot = (uint32_t)d >> 1;
    mcp__conn_t *c = slot < cs->nslots ? cs->slots[slot].conn : NULL;
    if (!c || c->gen != (uint32_t)(d >> 32) || c->closing)
      continue; /* stale (see slots), or closed earlier in this batch */
    mcp__sock_t *s = d & 1 ? &c->backend : &c->client;
    uint32_t e = ev[i].events;
    if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
      s->rd = 1;
    if (e & EPOLLRDHUP)
      s->rdhup = 1;
    if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR))
      s->wr = 1;
    if (e & EPOLLERR)
      s->err = 1;
    if (e & EPOLLHUP)
      s->hup = 1;
    if (e & EPOLLPRI)
      s->urg = 1;
    c->on_io(c, s);
  }
  mcp__conns_unhold(cs);
}

static void on_again(uv_idle_t *h)
{
  mcp__conns_t *cs = h->data;
  /* This iteration's list; what on_io asks for again goes on a new one, for the next. */
  cs->again_running = cs->again_head;
  cs->again_head = NULL;
  uv_idle_stop(&cs->again);
  mcp__conns_hold(cs);
  while (cs->again_running) {
    mcp__conn_t *c = cs->again_running;
    cs->again_running = c->again_next;
    if (c->again_next)
      c->again_next->again_prev = NULL;
    c->again = 0;
    c->again_prev = c->again_next = NULL;
    c->on_io(c, NULL); /* a closed one was taken off the list (again_remove) */
  }
  mcp__conns_unhold(cs);
}

void mcp__conn_again(mcp__conn_t *c)
{
  mcp__conns_t *cs = c->cs;
  if (c->again || c->closing)
    return;
  c->again = 1;
  c->again_prev = NULL;
  c->again_next = cs->again_head;
  if (cs->again_head)
    cs->again_head->again_prev = c;
  cs->again_head = c;
  uv_idle_start(&cs->again, on_again);
}

static void again_remove(mcp__conn_t *c)
{
  mcp__conns_t *cs = c->cs;
  if (c->again_prev)
    c->again_prev->again_next = c->again_next;
  else if (cs->again_head == c)
    cs->again_head = c->again_next;
  else if (cs->again_running == c)
    cs->again_running = c->again_next;
  if (c->again_next)
    c->again_next->again_prev = c->again_prev;
  c->again_prev = c->again_next = NULL;
  c->again = 0;
}

/* ---- buffer pools ---- */

mcp__chunk_t *mcp__pool_get(mcp__pool_t *pool)
{
  mcp__chunk_t *ch = pool->free;
  if (ch) {
    pool->free = ch->next;
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
  ch->next = pool->free;
  pool->free = ch;
  pool->len++;
}

static void pool_drain(mcp__pool_t *pool)
{
  while (pool->free) {
    mcp__chunk_t *ch = pool->free;
    pool->free = ch->next;
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
  mcp__conns_hold(cs);
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
  mcp__conns_unhold(cs);
}

/* ---- close ---- */

static void conn_record(mcp__conn_t *c);

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
  int fd = c->client.fd;
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

  mcp__pool_put(c->up.pending);
  mcp__pool_put(c->down.pending);
  c->up.pending = c->down.pending = NULL;
  if (c->again)
    again_remove(c);

  /* close(2) also takes the sockets off the event set: no EPOLL_CTL_DEL. */
  if (outcome == MCP_CONN_OUTCOME_BLOCKED || c->reset) {
    struct linger reset = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->client.fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  } else if (!c->relaying) {
    discard_unread(c);
  }
  if (c->client.fd >= 0) {
    close(c->client.fd);
    c->client.fd = -1;
  }
  if (c->backend.fd >= 0) {
    close(c->backend.fd);
    c->backend.fd = -1;
  }
  if (c->cs->dispatching) {
    /* Events of this batch may still name it: the release waits for the batch's end. */
    c->tnext = c->cs->released;
    c->cs->released = c;
    return;
  }
  conn_finish(c);
}

/* The record, then the object back to the free list. */
static void conn_finish(mcp__conn_t *c)
{
  conn_record(c);
  conn_release(c);
}

void mcp__conns_close_all(mcp__conns_t *cs)
{
  mcp__conns_hold(cs);
  for (int i = 0; i < MCP__T_COUNT; i++) {
    /* Each list is taken whole first: a close touches no connection but its own. */
    mcp__conn_t *c = cs->tlists[i].head;
    cs->tlists[i].head = cs->tlists[i].tail = NULL;
    while (c) {
      mcp__conn_t *next = c->tnext;
      c->tprev = c->tnext = NULL;
      c->tlist = MCP__T_NONE;
      mcp__conn_close(c, MCP_CONN_OUTCOME_SHUTDOWN);
      c = next;
    }
  }
  mcp__conns_unhold(cs);
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
  free(cs->slots);
  cs->slots = NULL;
  cs->nslots = 0;
  if (cs->epfd >= 0) {
    close(cs->epfd);
    cs->epfd = -1;
  }
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
