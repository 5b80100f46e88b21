/*
 * client_limits: the per-client limit table (see include/mcproxy/client_limits.h).
 *
 * Layout: a keyed hash (SipHash-1-3 with a random per-table key) picks a stripe; each stripe
 * has a mutex, its share of the entry bound, a chained hash index allocated up front, entries
 * allocated in chunks as clients arrive (never beyond the share), a free list and an "idle"
 * list. An entry is idle when it holds no open connection; the idle list is kept in the order
 * the entries' buckets were last brought up to date, so its head is the first to become
 * forgettable and expiry only ever looks at the head.
 *
 * The bucket is exact integer arithmetic: credit is kept in units of 1/rate_period_ms of a
 * token, so a connection costs rate_period_ms units, a full bucket holds
 * rate_count * rate_period_ms, and each elapsed ms adds rate_count units. Nothing is rounded,
 * so the refill does not depend on how often it is computed.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <netinet/in.h>

#include "mcproxy/client_limits.h"

#define NIL UINT32_MAX
#define CHUNK 64       /* entries allocated at a time */
#define MAX_STRIPES 64 /* a power of two */
#define MIN_PER_STRIPE 1024

struct entry {
  mcp_client_limits_key_t key;
  uint64_t credit;  /* rate budget, see above; meaningless while the rate limit is off */
  uint64_t last_ms; /* when credit was last brought up to date */
  uint32_t open;    /* connections admitted with 0 and not yet released */
  uint32_t hnext;   /* next entry in the same hash bucket */
  uint32_t prev;    /* idle list links while idle; next is also the free list link */
  uint32_t next;
};

/*
 * One stripe. seed, cap, mask and the buckets and chunks pointers are fixed at creation; all the
 * rest is guarded by lock. Aligned so that two stripes never share a cache line.
 */
struct stripe {
  pthread_mutex_t lock;
  const uint64_t *seed; /* the table's hash key, to find an entry's bucket again */
  mcp_client_limits_settings_t set;
  uint32_t cap;       /* this stripe's share of max_entries */
  uint32_t used;      /* entries in the index */
  uint32_t allocated; /* entries allocated (in chunks) so far */
  uint32_t free_head;
  uint32_t idle_head, idle_tail;
  uint32_t mask; /* buckets - 1 */
  uint32_t *buckets;
  struct entry **chunks;
  uint64_t bytes;
  uint64_t refused_rate, refused_connections, untracked, expired;
} __attribute__((aligned(64)));

struct mcp_client_limits_s {
  uint64_t seed[2];
  uint32_t nstripes;
  uint32_t max_entries;
  struct stripe *stripes;
};

static int stripe_init(struct stripe *s, uint32_t cap, const mcp_client_limits_settings_t *set);
static void stripe_destroy(struct stripe *s);
static uint64_t hash_key(const uint64_t seed[2], const mcp_client_limits_key_t *key);
static struct stripe *stripe_of(mcp_client_limits_t *t, const mcp_client_limits_key_t *key,
                                uint32_t *bucket);
static struct entry *find(struct stripe *s, uint32_t bucket, const mcp_client_limits_key_t *key,
                          uint32_t *index);
static struct entry *insert(struct stripe *s, uint32_t bucket, const mcp_client_limits_key_t *key,
                            uint64_t now_ms, uint32_t *index);
static void refill(const struct stripe *s, struct entry *e, uint64_t now_ms);
static int forgettable(const struct stripe *s, const struct entry *e, uint64_t now_ms);
static uint32_t expire_head(struct stripe *s, uint64_t now_ms, uint32_t max);
static void idle_append(struct stripe *s, uint32_t i);
static void idle_remove(struct stripe *s, uint32_t i);
static struct entry *at(const struct stripe *s, uint32_t i);

int mcp_client_limits_key(const struct sockaddr *sa, mcp_client_limits_key_t *key)
{
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

  memset(key, 0, sizeof(*key));
  if (sa->sa_family == AF_INET) {
    memcpy(key->bytes, mapped, 12);
    memcpy(key->bytes + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    return 0;
  }
  if (sa->sa_family == AF_INET6) {
    const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;

    /* A mapped IPv4 address keeps all 16 bytes (it is the IPv4 key); others their /64. */
    memcpy(key->bytes, a, memcmp(a, mapped, 12) == 0 ? 16 : 8);
    return 0;
  }
  return MCP_EINVAL;
}

int mcp_client_limits_check(const mcp_client_limits_settings_t *set)
{
  if (set->rate_count == 0)
    return 0;
  if (set->rate_period_ms == 0)
    return MCP_EINVAL;
  if (set->rate_count > MCP_CLIENT_LIMITS_MAX_RATE ||
      set->rate_period_ms > MCP_CLIENT_LIMITS_MAX_PERIOD_MS)
    return MCP_ERANGE;
  return 0;
}

static void random_seed(uint64_t seed[2])
{
  struct timespec ts;

  if (getrandom(seed, 2 * sizeof(seed[0]), GRND_NONBLOCK) == (ssize_t)(2 * sizeof(seed[0])))
    return;
  /* No entropy yet (early boot): the clock and an address are better than a constant. */
  clock_gettime(CLOCK_MONOTONIC, &ts);
  seed[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15u ^ (uint64_t)ts.tv_sec;
  seed[1] = (uint64_t)(uintptr_t)seed * 0xbf58476d1ce4e5b9u ^ seed[0];
}

int mcp_client_limits_new(uint32_t max_entries, const mcp_client_limits_settings_t *settings,
                          mcp_client_limits_t **out)
{
  mcp_client_limits_t *t;
  uint32_t i, n;
  int rc;

  rc = mcp_client_limits_check(settings);
  if (rc != 0)
    return rc;
  if (max_entries == 0)
    max_entries = MCP_CLIENT_LIMITS_DEFAULT_ENTRIES;
  if (max_entries > MCP_CLIENT_LIMITS_MAX_ENTRIES)
    return MCP_ERANGE;
  t = calloc(1, sizeof(*t));
  if (t == NULL)
    return MCP_ENOMEM;
  random_seed(t->seed);
  t->max_entries = max_entries;
  for (n = 1; n < MAX_STRIPES && max_entries / (n * 2) >= MIN_PER_STRIPE; n *= 2)
    ;
  t->stripes = aligned_alloc(64, n * sizeof(struct stripe));
  if (t->stripes == NULL)
    goto fail_stripes;
  /* The shares add up to max_entries exactly: the first max_entries % n get one more. */
  for (i = 0; i < n; i++) {
    rc = stripe_init(&t->stripes[i], max_entries / n + (i < max_entries % n), settings);
    if (rc != 0)
      goto fail_stripe;
    t->stripes[i].seed = t->seed;
  }
  t->nstripes = n;
  *out = t;
  return 0;

fail_stripe:
  while (i-- > 0)
    stripe_destroy(&t->stripes[i]);
  free(t->stripes);
fail_stripes:
  free(t);
  return MCP_ENOMEM;
}

static int stripe_init(struct stripe *s, uint32_t cap, const mcp_client_limits_settings_t *set)
{
  uint32_t nb = 1, nchunks = (cap + CHUNK - 1) / CHUNK;

  memset(s, 0, sizeof(*s));
  while (nb < cap)
    nb *= 2;
  s->buckets = malloc(nb * sizeof(uint32_t));
  s->chunks = calloc(nchunks ? nchunks : 1, sizeof(struct entry *));
  if (s->buckets == NULL || s->chunks == NULL || pthread_mutex_init(&s->lock, NULL) != 0) {
    free(s->buckets);
    free(s->chunks);
    return MCP_ENOMEM;
  }
  memset(s->buckets, 0xff, nb * sizeof(uint32_t));
  s->mask = nb - 1;
  s->cap = cap;
  s->set = *set;
  s->free_head = s->idle_head = s->idle_tail = NIL;
  s->bytes = nb * sizeof(uint32_t) + (nchunks ? nchunks : 1) * sizeof(struct entry *);
  return 0;
}

static void stripe_destroy(struct stripe *s)
{
  uint32_t c;

  for (c = 0; c * CHUNK < s->allocated; c++)
    free(s->chunks[c]);
  free(s->chunks);
  free(s->buckets);
  pthread_mutex_destroy(&s->lock);
}

void mcp_client_limits_free(mcp_client_limits_t *t)
{
  uint32_t i;

  if (t == NULL)
    return;
  for (i = 0; i < t->nstripes; i++)
    stripe_destroy(&t->stripes[i]);
  free(t->stripes);
  free(t);
}

int mcp_client_limits_acquire(mcp_client_limits_t *t, const mcp_client_limits_key_t *key,
                              uint64_t now_ms)
{
  uint32_t bucket, i;
  struct stripe *s = stripe_of(t, key, &bucket);
  struct entry *e;
  int rc = 0;

  pthread_mutex_lock(&s->lock);
  /* Forgetting up to two for each one added keeps the table down to clients that matter. */
  expire_head(s, now_ms, 2);
  if (s->set.rate_count == 0 && s->set.max_connections == 0) {
    pthread_mutex_unlock(&s->lock);
    return MCP_CLIENT_LIMITS_UNTRACKED;
  }
  e = find(s, bucket, key, &i);
  if (e != NULL) {
    refill(s, e, now_ms);
    if (e->open == 0) {
      idle_remove(s, i); /* back at the tail, in the order of last_ms */
      idle_append(s, i);
    }
  } else {
    e = insert(s, bucket, key, now_ms, &i);
    if (e == NULL) {
      s->untracked++;
      pthread_mutex_unlock(&s->lock);
      return MCP_CLIENT_LIMITS_UNTRACKED;
    }
  }

  if (s->set.max_connections != 0 && e->open >= s->set.max_connections) {
    s->refused_connections++;
    rc = MCP_ERATELIMITED;
  } else if (s->set.rate_count != 0 && e->credit < s->set.rate_period_ms) {
    s->refused_rate++;
    rc = MCP_ERATELIMITED;
  } else {
    if (s->set.rate_count != 0)
      e->credit -= s->set.rate_period_ms;
    if (e->open++ == 0)
      idle_remove(s, i);
  }
  pthread_mutex_unlock(&s->lock);
  return rc;
}

void mcp_client_limits_release(mcp_client_limits_t *t, const mcp_client_limits_key_t *key,
                               uint64_t now_ms)
{
  uint32_t bucket, i;
  struct stripe *s = stripe_of(t, key, &bucket);
  struct entry *e;

  pthread_mutex_lock(&s->lock);
  e = find(s, bucket, key, &i);
  /* A key not counted (a caller error) must not take another connection's count away. */
  if (e != NULL && e->open > 0) {
    refill(s, e, now_ms);
    if (--e->open == 0)
      idle_append(s, i);
    expire_head(s, now_ms, 2);
  }
  pthread_mutex_unlock(&s->lock);
}

uint32_t mcp_client_limits_expire(mcp_client_limits_t *t, uint64_t now_ms)
{
  uint32_t i, n = 0;

  for (i = 0; i < t->nstripes; i++) {
    pthread_mutex_lock(&t->stripes[i].lock);
    n += expire_head(&t->stripes[i], now_ms, UINT32_MAX);
    pthread_mutex_unlock(&t->stripes[i].lock);
  }
  return n;
}

/* The credit c in units of a new period: the same number of tokens, fractions included. */
static uint64_t rescale(uint64_t c, uint32_t old_period, uint32_t new_period)
{
  return c / old_period * new_period + c % old_period * new_period / old_period;
}

int mcp_client_limits_set(mcp_client_limits_t *t, const mcp_client_limits_settings_t *settings)
{
  uint64_t full = (uint64_t)settings->rate_count * settings->rate_period_ms;
  uint32_t i, b, j;
  int rc = mcp_client_limits_check(settings);

  if (rc != 0)
    return rc;
  for (i = 0; i < t->nstripes; i++) {
    struct stripe *s = &t->stripes[i];

    pthread_mutex_lock(&s->lock);
    for (b = 0; b <= s->mask && settings->rate_count != 0; b++) {
      for (j = s->buckets[b]; j != NIL; j = at(s, j)->hnext) {
        struct entry *e = at(s, j);

        /* A bucket that had no meaning (the rate limit was off) starts full. */
        e->credit = s->set.rate_count == 0
                        ? full
                        : rescale(e->credit, s->set.rate_period_ms, settings->rate_period_ms);
        if (e->credit > full)
          e->credit = full;
      }
    }
    s->set = *settings;
    pthread_mutex_unlock(&s->lock);
  }
  return 0;
}

void mcp_client_limits_stats(mcp_client_limits_t *t, mcp_client_limits_stats_t *out)
{
  uint32_t i;

  memset(out, 0, sizeof(*out));
  out->max_entries = t->max_entries;
  out->bytes = sizeof(*t) + t->nstripes * sizeof(struct stripe);
  for (i = 0; i < t->nstripes; i++) {
    struct stripe *s = &t->stripes[i];

    pthread_mutex_lock(&s->lock);
    out->entries += s->used;
    out->bytes += s->bytes;
    out->refused_rate += s->refused_rate;
    out->refused_connections += s->refused_connections;
    out->untracked += s->untracked;
    out->expired += s->expired;
    pthread_mutex_unlock(&s->lock);
  }
}

/* ---- the table inside a stripe -------------------------------------------------------- */

static uint64_t rotl(uint64_t x, int b)
{
  return x << b | x >> (64 - b);
}

#define SIPROUND                                                                                   \
  do {                                                                                             \
    v0 += v1;                                                                                      \
    v1 = rotl(v1, 13) ^ v0;                                                                        \
    v0 = rotl(v0, 32);                                                                             \
    v2 += v3;                                                                                      \
    v3 = rotl(v3, 16) ^ v2;                                                                        \
    v0 += v3;                                                                                      \
    v3 = rotl(v3, 21) ^ v0;                                                                        \
    v2 += v1;                                                                                      \
    v1 = rotl(v1, 17) ^ v2;                                                                        \
    v2 = rotl(v2, 32);                                                                             \
  } while (0)

/* SipHash-1-3 of the 16 key bytes: addresses cannot be picked to collide without the seed. */
static uint64_t hash_key(const uint64_t seed[2], const mcp_client_limits_key_t *key)
{
  uint64_t v0 = seed[0] ^ 0x736f6d6570736575u, v1 = seed[1] ^ 0x646f72616e646f6du;
  uint64_t v2 = seed[0] ^ 0x6c7967656e657261u, v3 = seed[1] ^ 0x7465646279746573u;
  uint64_t m[3];
  int i;

  memcpy(m, key->bytes, 16);
  m[2] = (uint64_t)16 << 56;
  for (i = 0; i < 3; i++) {
    v3 ^= m[i];
    SIPROUND;
    v0 ^= m[i];
  }
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

static struct stripe *stripe_of(mcp_client_limits_t *t, const mcp_client_limits_key_t *key,
                                uint32_t *bucket)
{
  uint64_t h = hash_key(t->seed, key);
  struct stripe *s = &t->stripes[h & (t->nstripes - 1)];

  *bucket = (uint32_t)(h >> 8) & s->mask;
  return s;
}

static struct entry *at(const struct stripe *s, uint32_t i)
{
  return &s->chunks[i / CHUNK][i % CHUNK];
}

static struct entry *find(struct stripe *s, uint32_t bucket, const mcp_client_limits_key_t *key,
                          uint32_t *index)
{
  uint32_t i;

  for (i = s->buckets[bucket]; i != NIL; i = at(s, i)->hnext) {
    if (memcmp(at(s, i)->key.bytes, key->bytes, 16) == 0) {
      *index = i;
      return at(s, i);
    }
  }
  return NULL;
}

/* A free entry: from the free list, else a new chunk while under the share, else none. */
static int take_free(struct stripe *s, uint32_t *index)
{
  uint32_t n, i;

  if (s->free_head == NIL && s->allocated < s->cap) {
    n = s->cap - s->allocated < CHUNK ? s->cap - s->allocated : CHUNK;
    s->chunks[s->allocated / CHUNK] = malloc(n * sizeof(struct entry));
    if (s->chunks[s->allocated / CHUNK] == NULL)
      return 0; /* like a full table: admitted untracked */
    s->bytes += n * sizeof(struct entry);
    for (i = n; i-- > 0;) {
      at(s, s->allocated + i)->next = s->free_head;
      s->free_head = s->allocated + i;
    }
    s->allocated += n;
  }
  if (s->free_head == NIL)
    return 0;
  *index = s->free_head;
  s->free_head = at(s, *index)->next;
  return 1;
}

/* Adds key as a new idle client with a full bucket; NULL when the share is used up. */
static struct entry *insert(struct stripe *s, uint32_t bucket, const mcp_client_limits_key_t *key,
                            uint64_t now_ms, uint32_t *index)
{
  struct entry *e;

  if (!take_free(s, index))
    return NULL;
  e = at(s, *index);
  e->key = *key;
  e->credit = (uint64_t)s->set.rate_count * s->set.rate_period_ms;
  e->last_ms = now_ms;
  e->open = 0;
  e->hnext = s->buckets[bucket];
  s->buckets[bucket] = *index;
  s->used++;
  idle_append(s, *index);
  return e;
}

/* Brings e's credit up to now_ms. */
static void refill(const struct stripe *s, struct entry *e, uint64_t now_ms)
{
  uint64_t full = (uint64_t)s->set.rate_count * s->set.rate_period_ms, elapsed;

  if (now_ms <= e->last_ms)
    return;
  elapsed = now_ms - e->last_ms;
  e->last_ms = now_ms;
  /* elapsed is capped first so that the product cannot overflow. */
  if (elapsed >= s->set.rate_period_ms || e->credit + elapsed * s->set.rate_count > full)
    e->credit = full;
  else
    e->credit += elapsed * s->set.rate_count;
}

/* An idle entry whose bucket is full at now_ms holds nothing a fresh entry would not. */
static int forgettable(const struct stripe *s, const struct entry *e, uint64_t now_ms)
{
  struct entry copy = *e;

  if (e->open != 0)
    return 0;
  if (s->set.rate_count == 0)
    return 1;
  refill(s, &copy, now_ms);
  return copy.credit >= (uint64_t)s->set.rate_count * s->set.rate_period_ms;
}

/* Takes entry i out of its hash chain (the bucket is recomputed from its key). */
static void unlink_hash(struct stripe *s, uint32_t i)
{
  uint32_t *link = &s->buckets[(uint32_t)(hash_key(s->seed, &at(s, i)->key) >> 8) & s->mask];

  while (*link != i)
    link = &at(s, *link)->hnext;
  *link = at(s, i)->hnext;
}

/* Forgets up to max forgettable entries from the head of the idle list; returns how many. */
static uint32_t expire_head(struct stripe *s, uint64_t now_ms, uint32_t max)
{
  uint32_t n = 0, i;

  while (n < max && s->idle_head != NIL && forgettable(s, at(s, s->idle_head), now_ms)) {
    i = s->idle_head;
    idle_remove(s, i);
    unlink_hash(s, i);
    at(s, i)->next = s->free_head;
    s->free_head = i;
    s->used--;
    s->expired++;
    n++;
  }
  return n;
}

static void idle_append(struct stripe *s, uint32_t i)
{
  struct entry *e = at(s, i);

  e->prev = s->idle_tail;
  e->next = NIL;
  if (s->idle_tail != NIL)
    at(s, s->idle_tail)->next = i;
  else
    s->idle_head = i;
  s->idle_tail = i;
}

static void idle_remove(struct stripe *s, uint32_t i)
{
  struct entry *e = at(s, i);

  if (e->prev != NIL)
    at(s, e->prev)->next = e->next;
  else
    s->idle_head = e->next;
  if (e->next != NIL)
    at(s, e->next)->prev = e->prev;
  else
    s->idle_tail = e->prev;
  e->prev = e->next = NIL;
}
