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
 * Lookups normalise the name into a stack buffer (mcp_hostname_normalize) and never allocate,
 * because they run on the data plane for every connection.
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
  mcp_backend_t backend;
  uint64_t hash;
  uint16_t name_len;
  char name[]; /* normalised hostname, NUL-terminated */
} route_t;

/*
 * Ownership: allocated by mcp_routes_new/clone, freed by the last mcp_routes_unref. The slots
 * and routes belong to the table; lookups hand out pointers into routes, valid while the
 * caller holds a reference.
 */
struct mcp_routes_s {
  atomic_uint refs;
  size_t count;
  size_t cap; /* 0 (no slots yet) or a power of two */
  route_t **slots;
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

static void routes_free(mcp_routes_t *rt)
{
  for (size_t i = 0; i < rt->cap; i++)
    free(rt->slots[i]);
  free(rt->slots);
  free(rt);
}

int mcp_routes_clone(const mcp_routes_t *src, mcp_routes_t **out)
{
  mcp_routes_t *rt;
  int err = mcp_routes_new(&rt);
  if (err)
    return err;
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
    const route_t *r = src->slots[i];
    if (!r)
      continue;
    size_t size = sizeof(*r) + r->name_len + 1;
    rt->slots[i] = malloc(size);
    if (!rt->slots[i])
      goto fail;
    memcpy(rt->slots[i], r, size);
  }
  rt->count = src->count;
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

/* Normalises a C-string hostname, refusing anything that cannot be a hostname. */
static int normalize_cstr(const char *hostname, char *out)
{
  if (!hostname)
    return MCP_EINVAL;
  /* strnlen bound: one byte over the longest accepted input (253 + trailing dot). */
  return mcp_hostname_normalize(hostname, strnlen(hostname, MCP_HOSTNAME_MAX + 2), out);
}

int mcp_routes_put(mcp_routes_t *rt, const char *hostname, const char *backend)
{
  char name[MCP_HOSTNAME_MAX + 1];
  mcp_backend_t b;
  int n;

  if (!rt)
    return MCP_EINVAL;
  n = normalize_cstr(hostname, name);
  if (n < 0 || mcp_backend_parse(backend, &b) != 0)
    return MCP_EINVAL;

  size_t len = (size_t)n;
  uint64_t hash = name_hash(name, len);
  if (rt->cap > 0) {
    route_t *r = rt->slots[find_slot(rt->slots, rt->cap, name, len, hash)];
    if (r) {
      r->backend = b; /* an upsert that cannot fail */
      return 0;
    }
  }

  route_t *r = malloc(sizeof(*r) + len + 1);
  if (!r)
    return MCP_ENOMEM;
  r->backend = b;
  r->hash = hash;
  r->name_len = (uint16_t)len;
  memcpy(r->name, name, len + 1);

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
  free(rt->slots[i]);
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

const mcp_backend_t *mcp_routes_lookup(const mcp_routes_t *rt, const char *hostname, size_t len)
{
  char name[MCP_HOSTNAME_MAX + 1];
  int n;

  if (!rt || !hostname || rt->count == 0 || len > MCP_HOSTNAME_MAX + 1)
    return NULL;
  n = mcp_hostname_normalize(hostname, len, name);
  if (n < 0)
    return NULL;
  const route_t *r =
      rt->slots[find_slot(rt->slots, rt->cap, name, (size_t)n, name_hash(name, (size_t)n))];
  return r ? &r->backend : NULL;
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

int mcp_routes_foreach(const mcp_routes_t *rt, mcp_routes_cb cb, void *data)
{
  const route_t **sorted;
  size_t n = 0;
  int rc = 0;

  if (!rt || !cb || rt->count == 0)
    return 0;
  sorted = malloc(rt->count * sizeof(*sorted));
  if (!sorted)
    return MCP_ENOMEM;
  for (size_t i = 0; i < rt->cap; i++)
    if (rt->slots[i])
      sorted[n++] = rt->slots[i];
  qsort(sorted, n, sizeof(*sorted), route_cmp);
  for (size_t i = 0; i < n && rc == 0; i++)
    rc = cb(data, sorted[i]->name, &sorted[i]->backend);
  free(sorted);
  return rc;
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
