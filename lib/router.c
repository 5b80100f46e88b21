/*
 * router: backend parsing, loop detection and per-listener route tables.
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
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcproxy/error.h"
#include "mcproxy/router.h"
#include "mcproxy/hostname.h"

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

/* ---- backends ---------------------------------------------------------------------------- */

/*
 * Parses a port of 1-5 decimal digits with value 1-65535. A sign, a leading zero, spaces or any
 * other byte is rejected: ports are written one way only, so the canonical text is unambiguous.
 */
static int parse_port(const char *s, size_t len, uint16_t *port)
{
  uint32_t v = 0;

  if (len == 0 || len > 5 || s[0] == '0')
    return MCP_EINVAL;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return MCP_EINVAL;
    v = v * 10 + (uint32_t)(s[i] - '0');
  }
  if (v < 1 || v > 65535)
    return MCP_EINVAL;
  *port = (uint16_t)v;
  return 0;
}

/*
 * A hostname backend is resolved with getaddrinfo() at connect time, and glibc's resolver first
 * tries inet_aton(), which accepts "127.1", "2130706433" or "0x7f.1" as IP addresses. Such a
 * name would slip past the loop check (hostnames are not resolved there), so numeric-looking
 * names are refused: anything inet_aton() accepts, and any name whose last label is all digits
 * (no top-level domain is numeric, and "1.2.3.256" is a typo, not a host).
 */
static int hostname_is_numeric(const char *host, size_t len)
{
  struct in_addr tmp;
  size_t i = len;

  if (inet_aton(host, &tmp))
    return 1;
  while (i > 0 && host[i - 1] != '.')
    i--;
  for (; i < len; i++)
    if (host[i] < '0' || host[i] > '9')
      return 0;
  return 1;
}

int mcp_backend_parse(const char *in, mcp_backend_t *out)
{
  mcp_backend_t b;
  const char *colon;
  size_t len, hlen;
  char host[MCP_HOSTNAME_MAX + 2];
  char name[MCP_HOSTNAME_MAX + 1];
  char ip[INET6_ADDRSTRLEN];

  if (!in || !out)
    return MCP_EINVAL;
  len = strnlen(in, MCP_BACKEND_MAX);
  if (len == 0 || len >= MCP_BACKEND_MAX)
    return MCP_EINVAL;
  colon = memrchr(in, ':', len);
  if (!colon)
    return MCP_EINVAL;
  memset(&b, 0, sizeof(b));
  if (parse_port(colon + 1, len - (size_t)(colon + 1 - in), &b.port) != 0)
    return MCP_EINVAL;
  hlen = (size_t)(colon - in);

  if (hlen > 0 && in[0] == '[') {
    /* "[v6]:port": the bracket must close right before the port's colon. */
    if (hlen < 3 || in[hlen - 1] != ']' || hlen - 2 >= sizeof(ip))
      return MCP_EINVAL;
    size_t alen = hlen - 2;
    memcpy(ip, in + 1, alen);
    ip[alen] = '\0';
    if (inet_pton(AF_INET6, ip, &b.addr.in6.sin6_addr) != 1)
      return MCP_EINVAL;
    b.addr.in6.sin6_family = AF_INET6;
    b.addr.in6.sin6_port = htons(b.port);
    inet_ntop(AF_INET6, &b.addr.in6.sin6_addr, ip, sizeof(ip));
    snprintf(b.text, sizeof(b.text), "[%s]:%u", ip, (unsigned)b.port);
    *out = b;
    return 0;
  }

  /* A colon left in the host part is an IPv6 address without brackets, or junk. */
  if (hlen == 0 || hlen > MCP_HOSTNAME_MAX + 1 || memchr(in, ':', hlen))
    return MCP_EINVAL;
  memcpy(host, in, hlen);
  host[hlen] = '\0';
  if (inet_pton(AF_INET, host, &b.addr.in.sin_addr) == 1) {
    b.addr.in.sin_family = AF_INET;
    b.addr.in.sin_port = htons(b.port);
    inet_ntop(AF_INET, &b.addr.in.sin_addr, ip, sizeof(ip));
    snprintf(b.text, sizeof(b.text), "%s:%u", ip, (unsigned)b.port);
    *out = b;
    return 0;
  }

  int n = mcp_hostname_normalize(host, hlen, name);
  if (n < 0 || hostname_is_numeric(name, (size_t)n))
    return MCP_EINVAL;
  b.addr.sa.sa_family = AF_UNSPEC;
  b.host_len = (uint16_t)n;
  snprintf(b.text, sizeof(b.text), "%s:%u", name, (unsigned)b.port);
  *out = b;
  return 0;
}

/* An address reduced for comparison: IPv4-mapped IPv6 becomes IPv4. */
typedef struct {
  int family; /* AF_INET or AF_INET6 */
  uint8_t a[16];
  uint16_t port;
} flat_addr_t;

static int flatten(const struct sockaddr *sa, flat_addr_t *f)
{
  memset(f, 0, sizeof(*f));
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    f->family = AF_INET;
    memcpy(f->a, &in->sin_addr, 4);
    f->port = ntohs(in->sin_port);
    return 0;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    f->port = ntohs(in6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      f->family = AF_INET;
      memcpy(f->a, in6->sin6_addr.s6_addr + 12, 4);
    } else {
      f->family = AF_INET6;
      memcpy(f->a, &in6->sin6_addr, 16);
    }
    return 0;
  }
  return -1;
}

static int flat_is_unspecified(const flat_addr_t *f)
{
  static const uint8_t zero[16];
  return memcmp(f->a, zero, f->family == AF_INET ? 4 : 16) == 0;
}

static int flat_is_loopback(const flat_addr_t *f)
{
  static const uint8_t v6_loopback[16] = {[15] = 1};
  if (f->family == AF_INET)
    return f->a[0] == 127;
  return memcmp(f->a, v6_loopback, 16) == 0;
}

static int flat_same_addr(const flat_addr_t *x, const flat_addr_t *y)
{
  return x->family == y->family && memcmp(x->a, y->a, x->family == AF_INET ? 4 : 16) == 0;
}

/* Whether f is one of this host's interface addresses (getifaddrs). */
static int flat_is_local(const flat_addr_t *f)
{
  struct ifaddrs *ifs, *it;
  int found = 0;

  if (getifaddrs(&ifs) != 0)
    return 0;
  for (it = ifs; it && !found; it = it->ifa_next) {
    flat_addr_t ia;
    if (!it->ifa_addr || flatten(it->ifa_addr, &ia) != 0)
      continue;
    found = flat_same_addr(&ia, f);
  }
  freeifaddrs(ifs);
  return found;
}

int mcp_backend_loops_to(const mcp_backend_t *backend, const struct sockaddr *listen_addr)
{
  flat_addr_t b, l;

  if (!backend || !listen_addr || flatten(&backend->addr.sa, &b) != 0 ||
      flatten(listen_addr, &l) != 0)
    return 0;
  if (b.port != l.port)
    return 0;
  if (flat_same_addr(&b, &l))
    return 1;
  /* Connecting to the unspecified address reaches the local host, so a loopback listener too. */
  if (flat_is_unspecified(&b) && flat_is_loopback(&l))
    return 1;
  if (!flat_is_unspecified(&l))
    return 0;
  /*
   * A wildcard listener. An IPv4 one only accepts IPv4; an IPv6 one is dual-stack on Linux by
   * default and accepts both, so any local backend address on that port reaches it.
   */
  if (l.family == AF_INET && b.family != AF_INET)
    return 0;
  return flat_is_loopback(&b) || flat_is_unspecified(&b) || flat_is_local(&b);
}

/* ---- route tables ------------------------------------------------------------------------ */

/* FNV-1a, 64-bit, over the normalised (lowercase) name. */
static uint64_t name_hash(const char *s, size_t len)
{
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)s[i];
    h *= 0x100000001b3ULL;
  }
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

mcp_routes_t *mcp_routes_new(void)
{
  mcp_routes_t *rt = calloc(1, sizeof(*rt));
  if (!rt)
    return NULL;
  atomic_init(&rt->refs, 1);
  return rt;
}

static void routes_free(mcp_routes_t *rt)
{
  for (size_t i = 0; i < rt->cap; i++)
    free(rt->slots[i]);
  free(rt->slots);
  free(rt);
}

mcp_routes_t *mcp_routes_clone(const mcp_routes_t *src)
{
  mcp_routes_t *rt = mcp_routes_new();
  if (!rt || !src || src->cap == 0)
    return rt;
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
  return rt;

fail:
  routes_free(rt);
  return NULL;
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

int mcp_routes_foreach(const mcp_routes_t *rt, mcp_route_cb cb, void *data)
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
