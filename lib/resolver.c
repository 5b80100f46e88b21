/*
 * resolver: DNS for hostname backends, off the loops and off libuv's thread pool.
 *
 * Why a pool of our own: libuv's thread pool (4 threads) also runs the admin path's database
 * writes (uv_queue_work); a slow or dead DNS server would hold all four threads and stall every
 * admin change behind it. Here MCP__RESOLVE_THREADS threads take lookups from one queue of at
 * most MCP__RESOLVE_QUEUE entries; a full queue fails the lookup at once (the connection ends
 * backend_error). An answer goes back to the connection's loop through a uv_async handle of the
 * lookup's own, so no loop needs to be registered anywhere.
 *
 * The cache (shared by every loop, behind the pool's mutex) keeps up to MCP__RESOLVE_CACHE names,
 * evicting the least recently used; an answer is kept MCP__RESOLVE_TTL_MS (30 s), a failure
 * MCP__RESOLVE_NEG_TTL_MS (5 s). Lookups of a name already being resolved wait for that answer
 * instead of asking again. See docs/ARCHITECTURE.md.
 *
 * A lookup's life (all fields below the mutex unless said otherwise):
 *   QUEUED   on the queue; freeing it takes it off.
 *   RUNNING  a pool thread resolves its name (or another lookup's of the same name); freeing it
 *            marks it abandoned and closes its async handle; whichever of the thread and the
 *            close callback comes last frees the memory.
 *   DONE     answered, the async sent; the loop delivers it (DELIVERED) or frees it first.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mcproxy/hash.h"
#include "resolver.h"

enum { L_QUEUED, L_RUNNING, L_DONE, L_DELIVERED };

/* An answer: immutable once built, shared by the cache and lookups (reference counted). */
typedef struct addrs_s {
  atomic_int refs;
  int n;
  struct sockaddr_in6 a[MCP__RESOLVE_MAX_ADDRS]; /* AF_INET ones use the sockaddr_in prefix */
} addrs_t;

struct mcp__lookup_s {
  uv_async_t async; /* only when has_async; async.data is the lookup */
  mcp__lookup_cb cb;
  void *data;
  mcp__lookup_t *qnext; /* queue link, or the next waiter on the same name */
  pthread_cond_t *waiter; /* mcp__resolve_wait: signalled instead of the async */
  int state;
  int status;
  addrs_t *addrs;
  uint8_t has_async;
  uint8_t freed;       /* loop thread: mcp__lookup_free was called */
  uint8_t tcp_state;   /* loop thread: 0 none, 1 open, 2 closing */
  uint8_t connected;   /* loop thread: an attempt succeeded */
  int handles;         /* loop thread: open handles (async, tcp) */
  int last_err;        /* loop thread: the last attempt's error */
  uv_loop_t *loop;
  uv_tcp_t tcp;        /* the current connect attempt */
  uv_connect_t creq;
  mcp__lookup_connect_cb ccb;
  int (*skip)(const struct sockaddr *addr);
  uint8_t abandoned;   /* freed by its owner while RUNNING */
  uint8_t loop_closed; /* ... and its async handle has closed: the thread frees it */
  int next;            /* loop thread: index of the next address to hand out */
  uint16_t port;
  struct sockaddr_in6 cur; /* loop thread: the address last handed out */
  char name[MCP_HOSTNAME_MAX + 1];
};

typedef struct entry_s {
  char name[MCP_HOSTNAME_MAX + 1];
  uint64_t expires_ms;
  int status;
  addrs_t *addrs; /* NULL when status < 0 */
  int32_t hnext;  /* bucket chain */
  int32_t lprev, lnext; /* LRU list, most recent first */
} entry_t;

typedef struct running_s {
  mcp__lookup_t *lookup;  /* the lookup whose name this thread resolves, or NULL */
  mcp__lookup_t *waiters; /* lookups of the same name that came later */
  char name[MCP_HOSTNAME_MAX + 1];
} running_t;

#define MAX_THREADS 16

static struct {
  pthread_mutex_t mu;
  pthread_cond_t work; /* the queue has something, or the block was lifted */
  int threads, started, blocked;
  mcp__lookup_t *qhead, *qtail;
  int qlen, qmax;
  running_t running[MAX_THREADS];

  entry_t *entries;
  int32_t *buckets;
  int cap, used, nbuckets;
  int32_t lru_head, lru_tail;
  unsigned ttl_ms, neg_ttl_ms;

  atomic_uint_fast64_t resolves, cache_hits, queue_full;
} R = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .work = PTHREAD_COND_INITIALIZER,
    .threads = MCP__RESOLVE_THREADS,
    .qmax = MCP__RESOLVE_QUEUE,
    .cap = MCP__RESOLVE_CACHE,
    .ttl_ms = MCP__RESOLVE_TTL_MS,
    .neg_ttl_ms = MCP__RESOLVE_NEG_TTL_MS,
    .lru_head = -1,
    .lru_tail = -1,
};

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void addrs_unref(addrs_t *a)
{
  if (a && atomic_fetch_sub(&a->refs, 1) == 1)
    free(a);
}

static addrs_t *addrs_ref(addrs_t *a)
{
  if (a)
    atomic_fetch_add(&a->refs, 1);
  return a;
}

/* ---- the cache (under R.mu) ---- */

static int cache_ready(void)
{
  if (R.entries)
    return 1;
  int nb = 1;
  while (nb < 2 * R.cap)
    nb <<= 1;
  R.entries = calloc((size_t)R.cap, sizeof(*R.entries));
  R.buckets = malloc((size_t)nb * sizeof(*R.buckets));
  if (!R.entries || !R.buckets) {
    free(R.entries);
    free(R.buckets);
    R.entries = NULL;
    R.buckets = NULL;
    return 0;
  }
  for (int i = 0; i < nb; i++)
    R.buckets[i] = -1;
  R.nbuckets = nb;
  R.used = 0;
  R.lru_head = R.lru_tail = -1;
  return 1;
}

static int32_t *bucket_of(const char *name)
{
  uint64_t h = mcp_hash_fnv1a(MCP_HASH_FNV1A_INIT, name, strlen(name));
  return &R.buckets[h & (uint64_t)(R.nbuckets - 1)];
}

static void lru_unlink(int32_t i)
{
  entry_t *e = &R.entries[i];
  if (e->lprev >= 0)
    R.entries[e->lprev].lnext = e->lnext;
  else
    R.lru_head = e->lnext;
  if (e->lnext >= 0)
    R.entries[e->lnext].lprev = e->lprev;
  else
    R.lru_tail = e->lprev;
}

static void lru_push_front(int32_t i)
{
  entry_t *e = &R.entries[i];
  e->lprev = -1;
  e->lnext = R.lru_head;
  if (R.lru_head >= 0)
    R.entries[R.lru_head].lprev = i;
  R.lru_head = i;
  if (R.lru_tail < 0)
    R.lru_tail = i;
}

static int32_t cache_find(const char *name)
{
  if (!cache_ready())
    return -1;
  for (int32_t i = *bucket_of(name); i >= 0; i = R.entries[i].hnext)
    if (strcmp(R.entries[i].name, name) == 0)
      return i;
  return -1;
}

/* A fresh entry for name (moved to the front), or NULL. */
static entry_t *cache_get(const char *name)
{
  int32_t i = cache_find(name);
  if (i < 0 || R.entries[i].expires_ms <= now_ms())
    return NULL;
  lru_unlink(i);
  lru_push_front(i);
  return &R.entries[i];
}

static void cache_put(const char *name, int status, addrs_t *addrs)
{
  int32_t i = cache_find(name);
  if (!R.entries)
    return;
  if (i < 0) {
    if (R.used < R.cap) {
      i = R.used++;
    } else {
      /* Evict the least recently used name: off its bucket chain and the list. */
      i = R.lru_tail;
      int32_t *p = bucket_of(R.entries[i].name);
      while (*p != i)
        p = &R.entries[*p].hnext;
      *p = R.entries[i].hnext;
      lru_unlink(i);
      addrs_unref(R.entries[i].addrs);
    }
    entry_t *e = &R.entries[i];
    memcpy(e->name, name, strlen(name) + 1);
    int32_t *b = bucket_of(name);
    e->hnext = *b;
    *b = i;
  } else {
    lru_unlink(i);
    addrs_unref(R.entries[i].addrs);
  }
  entry_t *e = &R.entries[i];
  e->status = status;
  e->addrs = addrs_ref(addrs);
  e->expires_ms = now_ms() + (status == 0 ? R.ttl_ms : R.neg_ttl_ms);
  lru_push_front(i);
}

static void cache_clear(void)
{
  for (int i = 0; i < R.used; i++)
    addrs_unref(R.entries[i].addrs);
  free(R.entries);
  free(R.buckets);
  R.entries = NULL;
  R.buckets = NULL;
  R.used = 0;
}

/* ---- the pool ---- */

static int gai_status(int rc)
{
  switch (rc) {
  case EAI_NONAME:
#ifdef EAI_NODATA
  case EAI_NODATA:
#endif
    return UV_EAI_NONAME;
  case EAI_AGAIN:
    return UV_EAI_AGAIN;
  case EAI_MEMORY:
    return UV_ENOMEM;
  default:
    return UV_EAI_FAIL;
  }
}

/* getaddrinfo, its answers copied (port 0), in its order. Pool threads only, without R.mu. */
static int resolve(const char *name, addrs_t **out)
{
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(name, NULL, &hints, &res);
  atomic_fetch_add(&R.resolves, 1);
  if (rc != 0)
    return gai_status(rc);
  addrs_t *a = calloc(1, sizeof(*a));
  if (!a) {
    freeaddrinfo(res);
    return UV_ENOMEM;
  }
  atomic_init(&a->refs, 1);
  for (struct addrinfo *ai = res; ai && a->n < MCP__RESOLVE_MAX_ADDRS; ai = ai->ai_next) {
    size_t len = ai->ai_family == AF_INET    ? sizeof(struct sockaddr_in)
                 : ai->ai_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                             : 0;
    if (len == 0 || ai->ai_addrlen < len)
      continue;
    memcpy(&a->a[a->n], ai->ai_addr, len);
    ((struct sockaddr_in *)&a->a[a->n])->sin_port = 0;
    a->n++;
  }
  freeaddrinfo(res);
  if (a->n == 0) {
    free(a);
    return UV_EAI_NONAME;
  }
  *out = a;
  return 0;
}

/* Hands a lookup its answer (under R.mu). May free it: see the life described at the top. */
static void complete(mcp__lookup_t *l, int status, addrs_t *addrs)
{
  if (l->abandoned) {
    l->state = L_DONE;
    if (l->loop_closed)
      free(l);
    return;
  }
  l->status = status;
  l->addrs = addrs_ref(addrs);
  l->state = L_DONE;
  if (l->waiter)
    pthread_cond_broadcast(l->waiter);
  else
    uv_async_send(&l->async);
}

static void *pool_main(void *arg)
{
  running_t *me = arg;

  pthread_mutex_lock(&R.mu);
  for (;;) {
    while (!R.qhead || R.blocked == 1)
      pthread_cond_wait(&R.work, &R.mu);
    mcp__lookup_t *l = R.qhead;
    R.qhead = l->qnext;
    if (!R.qhead)
      R.qtail = NULL;
    R.qlen--;
    l->qnext = NULL;
    l->state = L_RUNNING;

    /* Answered while it waited, or being resolved by another thread: no second question. */
    entry_t *e = cache_get(l->name);
    if (e) {
      complete(l, e->status, e->addrs);
      continue;
    }
    running_t *same = NULL;
    for (int i = 0; i < R.threads && !same; i++)
      if (R.running[i].lookup && strcmp(R.running[i].name, l->name) == 0)
        same = &R.running[i];
    if (same) {
      l->qnext = same->waiters;
      same->waiters = l;
      continue;
    }

    me->lookup = l;
    me->waiters = NULL;
    memcpy(me->name, l->name, sizeof(me->name));
    while (R.blocked == 2)
      pthread_cond_wait(&R.work, &R.mu);
    pthread_mutex_unlock(&R.mu);
    addrs_t *addrs = NULL;
    int status = resolve(me->name, &addrs);
    pthread_mutex_lock(&R.mu);

    cache_put(me->name, status, addrs);
    complete(me->lookup, status, addrs);
    for (mcp__lookup_t *w = me->waiters, *next; w; w = next) {
      next = w->qnext;
      w->qnext = NULL;
      complete(w, status, addrs);
    }
    me->lookup = NULL;
    me->waiters = NULL;
    addrs_unref(addrs);
  }
  return NULL;
}

/* Starts the pool threads once (under R.mu). Returns 0 or UV_EAGAIN. */
static int pool_start(void)
{
  if (R.started)
    return 0;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  for (int i = 0; i < R.threads; i++) {
    pthread_t t;
    if (pthread_create(&t, &attr, pool_main, &R.running[i]) != 0) {
      if (i == 0) {
        pthread_attr_destroy(&attr);
        return UV_EAGAIN;
      }
      R.threads = i;
      break;
    }
  }
  pthread_attr_destroy(&attr);
  R.started = 1;
  return 0;
}

/* Queues l (under R.mu). Returns 0 or UV_EAGAIN when the queue is full. */
static int enqueue(mcp__lookup_t *l)
{
  if (R.qlen >= R.qmax || pool_start() != 0) {
    atomic_fetch_add(&R.queue_full, 1);
    return UV_EAGAIN;
  }
  l->state = L_QUEUED;
  if (R.qtail)
    R.qtail->qnext = l;
  else
    R.qhead = l;
  R.qtail = l;
  R.qlen++;
  pthread_cond_signal(&R.work);
  return 0;
}

static void dequeue(mcp__lookup_t *l)
{
  mcp__lookup_t **p = &R.qhead, *prev = NULL;
  while (*p && *p != l) {
    prev = *p;
    p = &(*p)->qnext;
  }
  if (!*p)
    return;
  *p = l->qnext;
  if (R.qtail == l)
    R.qtail = prev;
  R.qlen--;
}

/* ---- lookups (loop thread) ---- */

static void on_async(uv_async_t *h);

int mcp__lookup_start(uv_loop_t *loop, const char *name, uint16_t port, mcp__lookup_cb cb,
                      void *data, mcp__lookup_t **out)
{
  size_t len = strlen(name);
  if (len > MCP_HOSTNAME_MAX)
    return UV_EINVAL;
  mcp__lookup_t *l = calloc(1, sizeof(*l));
  if (!l)
    return UV_ENOMEM;
  memcpy(l->name, name, len + 1);
  l->loop = loop;
  l->port = port;
  l->cb = cb;
  l->data = data;

  pthread_mutex_lock(&R.mu);
  entry_t *e = cache_get(name);
  if (e) {
    int status = e->status;
    l->addrs = addrs_ref(e->addrs);
    l->state = L_DELIVERED;
    pthread_mutex_unlock(&R.mu);
    atomic_fetch_add(&R.cache_hits, 1);
    if (status < 0) {
      free(l);
      return status;
    }
    *out = l;
    return 0;
  }
  pthread_mutex_unlock(&R.mu);

  int err = uv_async_init(loop, &l->async, on_async);
  if (err) {
    free(l);
    return err;
  }
  l->async.data = l;
  l->has_async = 1;
  l->handles = 1;
  pthread_mutex_lock(&R.mu);
  err = enqueue(l);
  pthread_mutex_unlock(&R.mu);
  if (err) {
    l->state = L_DONE;
    mcp__lookup_free(l);
    return err;
  }
  *out = l;
  return 1;
}

static void on_async(uv_async_t *h)
{
  mcp__lookup_t *l = h->data;
  pthread_mutex_lock(&R.mu);
  int done = l->state == L_DONE && !l->abandoned;
  if (done)
    l->state = L_DELIVERED;
  pthread_mutex_unlock(&R.mu);
  if (done)
    l->cb(l, l->status, l->data);
}

const struct sockaddr *mcp__lookup_next(mcp__lookup_t *l)
{
  if (!l->addrs || l->next >= l->addrs->n)
    return NULL;
  l->cur = l->addrs->a[l->next++];
  l->cur.sin6_port = htons(l->port); /* the same offset as sin_port */
  return (const struct sockaddr *)&l->cur;
}

/* A loop handle of a freed lookup has closed; the last one frees it (or leaves it to the thread). */
static void loop_release(mcp__lookup_t *l)
{
  if (--l->handles > 0)
    return;
  int thread_frees = 0;
  if (l->has_async) {
    pthread_mutex_lock(&R.mu);
    thread_frees = l->state == L_RUNNING;
    if (thread_frees)
      l->loop_closed = 1;
    pthread_mutex_unlock(&R.mu);
  }
  if (!thread_frees) {
    addrs_unref(l->addrs);
    free(l);
  }
}

static void on_handle_closed(uv_handle_t *h)
{
  loop_release(h->data);
}

static void on_attempt(uv_connect_t *req, int status);
static void on_attempt_closed(uv_handle_t *h);

/* Connects to the next address the caller does not skip (our own listeners, lib/relay.c). */
static void attempt(mcp__lookup_t *l)
{
  for (;;) {
    const struct sockaddr *a = mcp__lookup_next(l);
    if (!a) {
      l->ccb(l, l->last_err ? l->last_err : UV_ELOOP, l->data);
      return;
    }
    if (l->skip && l->skip(a))
      continue;
    int err = uv_tcp_init(l->loop, &l->tcp);
    if (err) {
      l->last_err = err;
      continue;
    }
    l->tcp.data = l;
    l->tcp_state = 1;
    l->handles++;
    l->creq.data = l;
    err = uv_tcp_connect(&l->creq, &l->tcp, a, on_attempt);
    if (err) {
      l->last_err = err;
      l->tcp_state = 2;
      uv_close((uv_handle_t *)&l->tcp, on_attempt_closed);
    }
    return;
  }
}

static void on_attempt(uv_connect_t *req, int status)
{
  mcp__lookup_t *l = req->data;
  if (l->freed)
    return; /* cancelled by the close in mcp__lookup_free */
  if (status < 0) {
    l->last_err = status;
    l->tcp_state = 2;
    uv_close((uv_handle_t *)&l->tcp, on_attempt_closed);
    return;
  }
  /* Hand over a descriptor of its own: the attempt's handle closes its copy. */
  uv_os_fd_t fd = -1;
  int nfd = uv_fileno((uv_handle_t *)&l->tcp, &fd) == 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
  int res = nfd >= 0 ? nfd : UV_EMFILE;
  l->connected = 1;
  l->tcp_state = 2;
  uv_close((uv_handle_t *)&l->tcp, on_attempt_closed);
  l->ccb(l, res, l->data);
}

static void on_attempt_closed(uv_handle_t *h)
{
  mcp__lookup_t *l = h->data;
  l->tcp_state = 0;
  if (l->freed) {
    loop_release(l);
    return;
  }
  l->handles--;
  if (!l->connected)
    attempt(l);
}

void mcp__lookup_connect(mcp__lookup_t *l, int (*skip)(const struct sockaddr *addr),
                         mcp__lookup_connect_cb cb)
{
  l->skip = skip;
  l->ccb = cb;
  attempt(l);
}

void mcp__lookup_free(mcp__lookup_t *l)
{
  if (!l)
    return;
  l->freed = 1;
  if (l->tcp_state == 1) {
    l->tcp_state = 2;
    uv_close((uv_handle_t *)&l->tcp, on_attempt_closed);
  }
  if (l->has_async) {
    pthread_mutex_lock(&R.mu);
    if (l->state == L_QUEUED) {
      dequeue(l);
      l->state = L_DONE;
    } else if (l->state == L_RUNNING) {
      l->abandoned = 1;
    }
    pthread_mutex_unlock(&R.mu);
    uv_close((uv_handle_t *)&l->async, on_handle_closed);
    return;
  }
  if (l->handles == 0) {
    addrs_unref(l->addrs);
    free(l);
  }
}

/* ---- a blocking resolution, for the admin path ---- */

int mcp__resolve_wait(const char *name, unsigned timeout_ms, struct sockaddr_in6 *out, int max,
                      int *n)
{
  size_t len = strlen(name);
  if (len > MCP_HOSTNAME_MAX)
    return UV_EINVAL;
  pthread_condattr_t ca;
  pthread_cond_t cv;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&cv, &ca);
  pthread_condattr_destroy(&ca);

  mcp__lookup_t *l = calloc(1, sizeof(*l));
  int status = UV_ENOMEM;
  addrs_t *addrs = NULL;
  pthread_mutex_lock(&R.mu);
  entry_t *e = cache_get(name);
  if (e) {
    status = e->status;
    addrs = addrs_ref(e->addrs);
    free(l);
  } else if (l) {
    memcpy(l->name, name, len + 1);
    l->waiter = &cv;
    status = enqueue(l);
    if (status != 0) {
      free(l);
    } else {
      struct timespec dl;
      clock_gettime(CLOCK_MONOTONIC, &dl);
      dl.tv_sec += timeout_ms / 1000;
      dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
      if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
      }
      while (l->state != L_DONE && pthread_cond_timedwait(&cv, &R.mu, &dl) != ETIMEDOUT)
        ;
      if (l->state == L_DONE) {
        status = l->status;
        addrs = l->addrs;
        free(l);
      } else {
        /* Give up waiting; the thread frees it (or nobody will ever take it off the queue). */
        status = UV_ETIMEDOUT;
        if (l->state == L_QUEUED) {
          dequeue(l);
          free(l);
        } else {
          l->abandoned = 1;
          l->loop_closed = 1;
          l->waiter = NULL;
        }
      }
    }
  }
  pthread_mutex_unlock(&R.mu);
  pthread_cond_destroy(&cv);

  *n = 0;
  if (status == 0 && addrs) {
    for (int i = 0; i < addrs->n && i < max; i++)
      out[i] = addrs->a[i];
    *n = addrs->n < max ? addrs->n : max;
  }
  addrs_unref(addrs);
  return status;
}

/* ---- statistics and test hooks ---- */

void mcp_backend_resolver_stats(mcp_backend_resolver_stats_t *out)
{
  out->resolves = atomic_load(&R.resolves);
  out->cache_hits = atomic_load(&R.cache_hits);
  out->queue_full = atomic_load(&R.queue_full);
}

void mcp__resolver_configure(int threads, int queue, int cache, unsigned ttl_ms,
                             unsigned neg_ttl_ms)
{
  pthread_mutex_lock(&R.mu);
  if (!R.started && threads > 0)
    R.threads = threads < MAX_THREADS ? threads : MAX_THREADS;
  if (queue > 0)
    R.qmax = queue;
  cache_clear();
  if (cache > 0)
    R.cap = cache;
  R.ttl_ms = ttl_ms;
  R.neg_ttl_ms = neg_ttl_ms;
  pthread_mutex_unlock(&R.mu);
}

int mcp__resolver_running(void)
{
  int n = 0;
  pthread_mutex_lock(&R.mu);
  for (int i = 0; i < R.threads; i++)
    n += R.running[i].lookup != NULL;
  pthread_mutex_unlock(&R.mu);
  return n;
}

void mcp__resolver_block(int blocked)
{
  pthread_mutex_lock(&R.mu);
  R.blocked = blocked;
  pthread_cond_broadcast(&R.work);
  pthread_mutex_unlock(&R.mu);
}
