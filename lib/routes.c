/*
 * routes: per-listener route tables (SNI hostname -> backend).
 *
 * A route table is an open-addressing hash table with linear probing. Slots hold only pointers,
 * so an empty slot costs 8 bytes; each route is one allocation holding its backend and its
 * normalised hostname. The capacity is a power of two and the load factor stays at or below
 * 0.7, so a lookup probes a handful of slots on average. Removal uses backward-shift deletion,
 * which keeps probe sequences intact without tombstones, so a table edited for a long time
 * does not slowly fill with dead slots.
 *
 * Wildcard routes ("*.example.com") live in the same table under their written key. A client's
 * name never contains '*', so an exact probe cannot hit a pattern. The longest wildcard is found
 * by probing, for each dot of the name from the left, the key "*" + the rest from that dot:
 * a.b.example.com probes "*.b.example.com", "*.example.com", "*.com" in that order and stops at
 * the first hit. That is one O(1) probe per label (at most 127, usually 2-3) and no scan,
 * however many routes the table holds; the probes are skipped when the table has no wildcard.
 * The key is built in place: the '*' overwrites the last byte of the label before the dot, a
 * byte no later (shorter) probe needs.
 *
 * Lookups normalise the name into a stack buffer (mcp_hostname_normalize) and never allocate,
 * because they run on the data plane for every connection.
 *
 * Routes are shared between tables. A change clones the published table and edits the clone
 * (mcp_routes_clone), so a clone takes a reference to each route instead of copying it: with
 * 100,000 routes that is one slot array and 100,000 atomic increments rather than 100,000
 * allocations and ~35 MB copied, and both tables together hold each route once. A route is never
 * changed while another table holds it: an upsert of a shared route puts a new one in its slot.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "mcproxy/error.h"
#include "mcproxy/hash.h"
#include "mcproxy/hostname.h"
#include "mcproxy/routes.h"

#define ROUTES_MIN_CAP 16

typedef struct route_s {
  atomic_uint refs; /* the tables holding it */
  mcp_backend_t backend;
  uint64_t hash;
  uint16_t name_len;
  uint8_t send_proxy; /* mcp_send_proxy_t */
  char name[];        /* normalised hostname, NUL-terminated */
} route_t;

/*
 * Ownership: allocated by mcp_routes_new/clone, freed by the last mcp_routes_unref. The slots
 * and routes belong to the table; lookups hand out pointers into routes, valid while the
 * caller holds a reference.
 */
struct mcp_routes_s {
  atomic_uint refs;
  size_t count;
  size_t wildcards; /* how many of count are "*." patterns */
  size_t cap;       /* 0 (no slots yet) or a power of two */
  route_t **slots;
  int has_fallback;
  mcp_backend_t fallback;
};

/* ---- route tables ------------------------------------------------------------------------ */

/* FNV-1a (hash.h) over the normalised (lowercase) name. */
static uint64_t name_hash(const char *s, size_t len)
{
  uint64_t h = mcp_hash_fnv1a(MCP_HASH_FNV1A_INIT, s, len);
  /* Fold the high bits in: the slot index uses only the low bits. */
  return h ^ (h >> 32);
}

/* The slot holding name, or the empty slot where it would go. cap must be non-zero. */
static size_t find_slot(route_t *const *slots, size_t cap, const char *name, size_t len,
                        uint64_t hash)
{
  size_t mask = cap - 1;
  size_t i = (size_t)hash & mask;

  for (;;) {
    const route_t *r = slots[i];
    if (!r || (r->hash == hash && r->name_len == len && memcmp(r->name, name, len) == 0))
      return i;
    i = (i + 1) & mask;
  }
}

int mcp_routes_new(mcp_routes_t **out)
{
  mcp_routes_t *rt = calloc(1, sizeof(*rt));
  if (!rt)
    return MCP_ENOMEM;
  atomic_init(&rt->refs, 1);
  *out = rt;
  return 0;
}

static void route_unref(route_t *r)
{
  if (r && atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1)
    free(r);
}

static void routes_free(mcp_routes_t *rt)
{
  for (size_t i = 0; i < rt->cap; i++)
    route_unref(rt->slots[i]);
  free(rt->slots);
  free(rt);
}

int mcp_routes_clone(const mcp_routes_t *src, mcp_routes_t **out)
{
  mcp_routes_t *rt;
  int err = mcp_routes_new(&rt);
  if (err)
    return err;
  if (src) {
    rt->has_fallback = src->has_fallback;
    rt->fallback = src->fallback;
  }
  if (!src || src->cap == 0) {
    *out = rt;
    return 0;
  }
  rt->slots = calloc(src->cap, sizeof(*rt->slots));
  if (!rt->slots)
    goto fail;
  rt->cap = src->cap;
  /* Same capacity and hash, so every route keeps its slot and no probing is needed. */
  for (size_t i = 0; i < src->cap; i++) {
    route_t *r = src->slots[i];
    if (!r)
      continue;
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    rt->slots[i] = r;
  }
  rt->count = src->count;
  rt->wildcards = src->wildcards;
  *out = rt;
  return 0;

fail:
  routes_free(rt);
  return MCP_ENOMEM;
}

/* Rehashes into new_cap slots; on ENOMEM the table is untouched. */
static int routes_resize(mcp_routes_t *rt, size_t new_cap)
{
  route_t **slots = calloc(new_cap, sizeof(*slots));
  if (!slots)
    return MCP_ENOMEM;
  for (size_t i = 0; i < rt->cap; i++) {
    route_t *r = rt->slots[i];
    if (r)
      slots[find_slot(slots, new_cap, r->name, r->name_len, r->hash)] = r;
  }
  free(rt->slots);
  rt->slots = slots;
  rt->cap = new_cap;
  return 0;
}

/* Normalises a C-string route name (hostname or "*." pattern), refusing anything else. */
static int normalize_cstr(const char *hostname, char *out)
{
  if (!hostname)
    return MCP_EINVAL;
  /* strnlen bound: one byte over the longest accepted input (253 + trailing dot). */
  return mcp_hostname_normalize_pattern(hostname, strnlen(hostname, MCP_HOSTNAME_MAX + 2), out);
}

static int is_pattern(const char *name)
{
  return name[0] == '*';
}

int mcp_routes_put(mcp_routes_t *rt, const char *hostname, const char *backend)
{
  return mcp_routes_put_ex(rt, hostname, backend, MCP_SEND_PROXY_NONE);
}

int mcp_routes_put_ex(mcp_routes_t *rt, const char *hostname, const char *backend,
                      mcp_send_proxy_t send_proxy)
{
  char name[MCP_HOSTNAME_MAX + 1];
  mcp_backend_t b;
  int n;

  if (!rt || (send_proxy != MCP_SEND_PROXY_NONE && send_proxy != MCP_SEND_PROXY_V1 &&
              send_proxy != MCP_SEND_PROXY_V2))
    return MCP_EINVAL;
  n = normalize_cstr(hostname, name);
  if (n < 0 || mcp_backend_parse(backend, &b) != 0)
    return MCP_EINVAL;

  size_t len = (size_t)n;
  uint64_t hash = name_hash(name, len);
  route_t **slot = NULL;
  if (rt->cap > 0) {
    slot = &rt->slots[find_slot(rt->slots, rt->cap, name, len, hash)];
    route_t *r = *slot;
    if (r && atomic_load_explicit(&r->refs, memory_order_acquire) == 1) {
      r->backend = b; /* ours alone: an upsert in place, which cannot fail */
      r->send_proxy = (uint8_t)send_proxy;
      return 0;
    }
    if (!r)
      slot = NULL;
  }

  route_t *r = malloc(sizeof(*r) + len + 1);
  if (!r)
    return MCP_ENOMEM;
  atomic_init(&r->refs, 1);
  r->backend = b;
  r->hash = hash;
  r->name_len = (uint16_t)len;
  r->send_proxy = (uint8_t)send_proxy;
  memcpy(r->name, name, len + 1);
  if (slot) {
    /* An upsert of a route another table holds too: this table gets its own. */
    route_unref(*slot);
    *slot = r;
    return 0;
  }

  /* Keep the load factor at or below 0.7. */
  if ((rt->count + 1) * 10 > rt->cap * 7) {
    size_t new_cap = rt->cap ? rt->cap * 2 : ROUTES_MIN_CAP;
    if (routes_resize(rt, new_cap) != 0) {
      free(r);
      return MCP_ENOMEM;
    }
  }
  rt->slots[find_slot(rt->slots, rt->cap, name, len, hash)] = r;
  rt->count++;
  if (is_pattern(name))
    rt->wildcards++;
  return 0;
}

int mcp_routes_remove(mcp_routes_t *rt, const char *hostname)
{
  char name[MCP_HOSTNAME_MAX + 1];
  int n;

  if (!rt)
    return MCP_EINVAL;
  n = normalize_cstr(hostname, name);
  if (n < 0)
    return MCP_EINVAL;
  if (rt->cap == 0)
    return MCP_ENOENT;

  size_t mask = rt->cap - 1;
  size_t i = find_slot(rt->slots, rt->cap, name, (size_t)n, name_hash(name, (size_t)n));
  if (!rt->slots[i])
    return MCP_ENOENT;
  if (is_pattern(rt->slots[i]->name))
    rt->wildcards--;
  route_unref(rt->slots[i]);
  rt->slots[i] = NULL;
  rt->count--;

  /*
   * Backward-shift deletion: move later members of the probe run into the hole when their home
   * slot does not lie cyclically in (hole, j], so every remaining key stays reachable.
   */
  size_t hole = i;
  for (size_t j = (i + 1) & mask; rt->slots[j]; j = (j + 1) & mask) {
    size_t home = (size_t)rt->slots[j]->hash & mask;
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      rt->slots[hole] = rt->slots[j];
      rt->slots[j] = NULL;
      hole = j;
    }
  }
  return 0;
}

/* The route stored under key[0..len), or NULL. */
static const route_t *probe(const mcp_routes_t *rt, const char *key, size_t len)
{
  return rt->slots[find_slot(rt->slots, rt->cap, key, len, name_hash(key, len))];
}

int mcp_routes_match(const mcp_routes_t *rt, const char *hostname, size_t len, mcp_route_match_t *m)
{
  char name[MCP_HOSTNAME_MAX + 1];
  const route_t *r = NULL;
  int n;

  if (!rt || !m)
    return MCP_ENOENT;
  if (hostname && len > 0) {
    if (len > MCP_HOSTNAME_MAX + 1)
      return MCP_ENOENT;
    n = mcp_hostname_normalize(hostname, len, name);
    if (n < 0)
      return MCP_ENOENT;
    if (rt->count > 0) {
      r = probe(rt, name, (size_t)n);
      m->kind = MCP_ROUTE_EXACT;
      /* Longest wildcard first: the leftmost dot gives the longest suffix. */
      size_t len_n = (size_t)n;
      for (size_t d = 1; !r && rt->wildcards > 0 && d < len_n; d++) {
        if (name[d] != '.')
          continue;
        name[d - 1] = '*';
        r = probe(rt, name + d - 1, len_n - d + 1);
        m->kind = MCP_ROUTE_WILDCARD;
      }
    }
  }
  if (r) {
    m->backend = &r->backend;
    m->send_proxy = (mcp_send_proxy_t)r->send_proxy;
    m->hostname = r->name;
    return 0;
  }
  if (rt->has_fallback) {
    m->kind = MCP_ROUTE_FALLBACK;
    m->backend = &rt->fallback;
    m->send_proxy = MCP_SEND_PROXY_NONE;
    m->hostname = NULL;
    return 0;
  }
  return MCP_ENOENT;
}

const mcp_backend_t *mcp_routes_lookup(const mcp_routes_t *rt, const char *hostname, size_t len)
{
  mcp_route_match_t m;
  return mcp_routes_match(rt, hostname, len, &m) == 0 ? m.backend : NULL;
}

int mcp_routes_set_fallback(mcp_routes_t *rt, const char *backend)
{
  mcp_backend_t b;

  if (!rt)
    return MCP_EINVAL;
  if (!backend || backend[0] == '\0') {
    rt->has_fallback = 0;
    return 0;
  }
  if (mcp_backend_parse(backend, &b) != 0)
    return MCP_EINVAL;
  rt->fallback = b;
  rt->has_fallback = 1;
  return 0;
}

const mcp_backend_t *mcp_routes_fallback(const mcp_routes_t *rt)
{
  return rt && rt->has_fallback ? &rt->fallback : NULL;
}

size_t mcp_routes_count(const mcp_routes_t *rt)
{
  return rt ? rt->count : 0;
}

static int route_cmp(const void *a, const void *b)
{
  const route_t *x = *(const route_t *const *)a;
  const route_t *y = *(const route_t *const *)b;
  return strcmp(x->name, y->name);
}

/* Calls exactly one of cb (without send_proxy) and cb_ex for every route in name order. */
static int foreach_sorted(const mcp_routes_t *rt, mcp_routes_cb cb, mcp_routes_ex_cb cb_ex,
                          void *data)
{
  const route_t **sorted;
  size_t n = 0;
  int rc = 0;

  if (!rt || (!cb && !cb_ex) || rt->count == 0)
    return 0;
  sorted = malloc(rt->count * sizeof(*sorted));
  if (!sorted)
    return MCP_ENOMEM;
  for (size_t i = 0; i < rt->cap; i++)
    if (rt->slots[i])
      sorted[n++] = rt->slots[i];
  qsort(sorted, n, sizeof(*sorted), route_cmp);
  for (size_t i = 0; i < n && rc == 0; i++)
    rc = cb ? cb(data, sorted[i]->name, &sorted[i]->backend)
            : cb_ex(data, sorted[i]->name, &sorted[i]->backend,
                    (mcp_send_proxy_t)sorted[i]->send_proxy);
  free(sorted);
  return rc;
}

int mcp_routes_foreach(const mcp_routes_t *rt, mcp_routes_cb cb, void *data)
{
  return foreach_sorted(rt, cb, NULL, data);
}

int mcp_routes_foreach_ex(const mcp_routes_t *rt, mcp_routes_ex_cb cb, void *data)
{
  return foreach_sorted(rt, NULL, cb, data);
}

const char *mcp_send_proxy_name(mcp_send_proxy_t v)
{
  switch (v) {
  case MCP_SEND_PROXY_NONE:
    return "none";
  case MCP_SEND_PROXY_V1:
    return "send-proxy-v1";
  case MCP_SEND_PROXY_V2:
    return "send-proxy-v2";
  }
  return NULL;
}

mcp_routes_t *mcp_routes_ref(mcp_routes_t *rt)
{
  if (rt)
    atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
  return rt;
}

void mcp_routes_unref(mcp_routes_t *rt)
{
  if (rt && atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) == 1)
    routes_free(rt);
}
