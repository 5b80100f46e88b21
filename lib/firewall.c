/*
 * firewall: the global block list (countries are looked up in a GeoIP database, geoip.c).
 *
 * Two layers. The rules themselves live in a dense array (so clone is one copy and foreach
 * sorts pointers into it) with an open-addressing hash index over (type, canonical value), so
 * that add can be idempotent and remove O(1) even with 100,000 rules. mcp_firewall_seal() then
 * derives the lookup index the data plane uses:
 *   - single IPs: a hash set of 16-byte keys (IPv4 stored IPv4-mapped), O(1);
 *   - CIDRs: per family, sorted disjoint ranges (overlapping and adjacent ones merged), found by
 *     binary search; IPv6 CIDRs that cover part of ::ffff:0:0/96 also add the IPv4 range they
 *     cover, because IPv4-mapped clients are checked as IPv4;
 *   - countries: a 26x26 bitmap of two-letter codes.
 * Editing clears the seal; mcp_firewall_check() asserts it in debug builds, since a check
 * against a stale index would silently let a newly blocked client in.
 *
 * Longer than ~600 lines on purpose: the rules, their index, the sealed lookup index and the
 * checks are one private struct with one invariant (the seal); splitting them would put that
 * struct in an internal header that every part then edits.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcproxy/error.h"
#include "mcproxy/firewall.h"
#include "mcproxy/geoip.h"
#include "mcproxy/hash.h"

typedef unsigned __int128 u128;

/* A client address as a set key: 16 bytes, IPv4 stored IPv4-mapped. */
typedef uint8_t ipkey_t[16];

/* One rule; key holds the address bytes (4 or 16) for IP and CIDR rules. */
typedef struct fw_rule_s {
  uint64_t hash; /* of (type, value), for the rule index */
  uint8_t key[16];
  uint8_t type;
  uint8_t family; /* AF_INET or AF_INET6 for IP and CIDR rules, else 0 */
  uint8_t prefix; /* CIDR prefix length */
  char value[MCP_FIREWALL_VALUE_MAX];
} fw_rule_t;

typedef struct range4_s {
  uint32_t lo, hi;
} range4_t;

typedef struct range6_s {
  u128 lo, hi;
} range6_t;

#define COUNTRY_BITS (26 * 26)

/*
 * Ownership: allocated by mcp_firewall_new/clone, freed by the last mcp_firewall_unref, which
 * also drops the GeoIP reference. Edited by one thread before publication only; once sealed and
 * published, any thread may check() and foreach() it.
 */
struct mcp_firewall_s {
  atomic_uint refs;
  mcp_geoip_t *geoip;

  /* The rules: dense array plus a hash index of (index + 1), 0 meaning an empty slot. */
  fw_rule_t *rules;
  size_t nrules, rules_cap;
  uint32_t *rslots;
  size_t rslots_cap; /* 0 or a power of two */
  size_t ncountry;

  /* The lookup index, valid when sealed. */
  int sealed;
  ipkey_t *ips;
  size_t nips;
  uint32_t *ipslots; /* index + 1 into ips, 0 = empty */
  size_t ipslots_cap;
  range4_t *r4;
  size_t n4;
  range6_t *r6;
  size_t n6;
  uint64_t countries[(COUNTRY_BITS + 63) / 64];
};

/* ---- rule values ------------------------------------------------------------------------- */

const char *mcp_firewall_type_name(mcp_firewall_type_t type)
{
  switch (type) {
  case MCP_FIREWALL_IP:
    return "ip";
  case MCP_FIREWALL_CIDR:
    return "cidr";
  case MCP_FIREWALL_COUNTRY:
    return "country";
  }
  return NULL;
}

int mcp_firewall_type_parse(const char *name, mcp_firewall_type_t *type)
{
  static const mcp_firewall_type_t all[] = {MCP_FIREWALL_IP, MCP_FIREWALL_CIDR, MCP_FIREWALL_COUNTRY};

  if (!name || !type)
    return MCP_EINVAL;
  for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
    if (strcmp(name, mcp_firewall_type_name(all[i])) == 0) {
      *type = all[i];
      return 0;
    }
  }
  return MCP_EINVAL;
}

/* Longest input worth looking at: an IPv6 address with an IPv4 tail (45) plus "/128". */
#define FW_INPUT_MAX 64

/* Whether 16 address bytes are ::ffff:a.b.c.d (bytes, so any alignment will do). */
static int is_v4mapped(const uint8_t *a)
{
  static const uint8_t prefix[12] = {[10] = 0xff, [11] = 0xff};
  return memcmp(a, prefix, sizeof(prefix)) == 0;
}

/* Parses an IPv4 or IPv6 address (no whitespace, nothing else) into key, setting *family. */
static int parse_addr(const char *s, uint8_t key[16], uint8_t *family)
{
  memset(key, 0, 16);
  if (strchr(s, ':')) {
    if (inet_pton(AF_INET6, s, key) != 1)
      return MCP_EINVAL;
    *family = AF_INET6;
    return 0;
  }
  if (inet_pton(AF_INET, s, key) != 1)
    return MCP_EINVAL;
  *family = AF_INET;
  return 0;
}

/* A CIDR prefix: "0", or 1-3 decimal digits without a leading zero, at most max. */
static int parse_prefix(const char *s, unsigned max, uint8_t *prefix)
{
  size_t len = strlen(s);
  unsigned v = 0;

  if (len == 0 || len > 3 || (s[0] == '0' && len > 1))
    return MCP_EINVAL;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return MCP_EINVAL;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (v > max)
    return MCP_EINVAL;
  *prefix = (uint8_t)v;
  return 0;
}

static uint64_t rule_hash(uint8_t type, const char *value)
{
  uint64_t h = mcp_hash_fnv1a(MCP_HASH_FNV1A_INIT, &type, 1);
  h = mcp_hash_fnv1a(h, value, strlen(value));
  return h ^ (h >> 32);
}

/* Validates value as a rule of type and fills r (binary form and canonical text). */
static int parse_rule(mcp_firewall_type_t type, const char *value, fw_rule_t *r)
{
  char buf[FW_INPUT_MAX];
  size_t len;

  if (!value)
    return MCP_EINVAL;
  len = strnlen(value, sizeof(buf));
  if (len == 0 || len >= sizeof(buf))
    return MCP_EINVAL;
  memcpy(buf, value, len + 1);
  memset(r, 0, sizeof(*r));
  r->type = (uint8_t)type;

  switch (type) {
  case MCP_FIREWALL_IP:
    if (parse_addr(buf, r->key, &r->family) != 0)
      return MCP_EINVAL;
    if (r->family == AF_INET6 && is_v4mapped(r->key)) {
      memmove(r->key, r->key + 12, 4);
      memset(r->key + 4, 0, 12);
      r->family = AF_INET;
    }
    inet_ntop(r->family, r->key, r->value, sizeof(r->value));
    break;

  case MCP_FIREWALL_CIDR: {
    char *slash = strchr(buf, '/');
    if (!slash)
      return MCP_EINVAL;
    *slash = '\0';
    if (parse_addr(buf, r->key, &r->family) != 0)
      return MCP_EINVAL;
    unsigned bits = r->family == AF_INET ? 32 : 128;
    if (parse_prefix(slash + 1, bits, &r->prefix) != 0)
      return MCP_EINVAL;
    /* Clear the host bits so that "10.1.2.3/8" and "10.0.0.0/8" are the same rule. */
    for (unsigned i = 0; i < bits / 8; i++) {
      unsigned keep = r->prefix > i * 8 ? r->prefix - i * 8 : 0;
      if (keep < 8)
        r->key[i] &= (uint8_t)(0xff00u >> keep);
    }
    char ip[INET6_ADDRSTRLEN];
    inet_ntop(r->family, r->key, ip, sizeof(ip));
    snprintf(r->value, sizeof(r->value), "%s/%u", ip, (unsigned)r->prefix);
    break;
  }

  case MCP_FIREWALL_COUNTRY:
    if (len != 2)
      return MCP_EINVAL;
    for (size_t i = 0; i < 2; i++) {
      char c = buf[i];
      if (c >= 'a' && c <= 'z')
        c = (char)(c - 'a' + 'A');
      if (c < 'A' || c > 'Z')
        return MCP_EINVAL;
      r->value[i] = c;
    }
    r->value[2] = '\0';
    break;

  default:
    return MCP_EINVAL;
  }
  r->hash = rule_hash(r->type, r->value);
  return 0;
}

int mcp_firewall_normalize(mcp_firewall_type_t type, const char *value, char *out)
{
  fw_rule_t r;

  if (!out || parse_rule(type, value, &r) != 0)
    return MCP_EINVAL;
  memcpy(out, r.value, sizeof(r.value));
  return 0;
}

/* ---- rule index -------------------------------------------------------------------------- */

/* The rule slot holding (type, value) of hash h, or the empty slot where it would go. */
static size_t rule_slot(const mcp_firewall_t *fw, const fw_rule_t *r)
{
  size_t mask = fw->rslots_cap - 1;
  size_t i = (size_t)r->hash & mask;

  for (;;) {
    uint32_t s = fw->rslots[i];
    if (s == 0)
      return i;
    const fw_rule_t *x = &fw->rules[s - 1];
    if (x->hash == r->hash && x->type == r->type && strcmp(x->value, r->value) == 0)
      return i;
    i = (i + 1) & mask;
  }
}

static int rules_grow_index(mcp_firewall_t *fw)
{
  size_t cap = fw->rslots_cap ? fw->rslots_cap * 2 : 16;
  uint32_t *slots = calloc(cap, sizeof(*slots));
  if (!slots)
    return MCP_ENOMEM;
  free(fw->rslots);
  fw->rslots = slots;
  fw->rslots_cap = cap;
  for (size_t k = 0; k < fw->nrules; k++)
    fw->rslots[rule_slot(fw, &fw->rules[k])] = (uint32_t)(k + 1);
  return 0;
}

/* Backward-shift deletion of slot i (see routes.c): keeps every probe run reachable. */
static void rules_unslot(mcp_firewall_t *fw, size_t i)
{
  size_t mask = fw->rslots_cap - 1;
  size_t hole = i;

  fw->rslots[i] = 0;
  for (size_t j = (i + 1) & mask; fw->rslots[j]; j = (j + 1) & mask) {
    size_t home = (size_t)fw->rules[fw->rslots[j] - 1].hash & mask;
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      fw->rslots[hole] = fw->rslots[j];
      fw->rslots[j] = 0;
      hole = j;
    }
  }
}

/* ---- firewalls --------------------------------------------------------------------------- */

int mcp_firewall_new(mcp_firewall_t **out)
{
  mcp_firewall_t *fw = calloc(1, sizeof(*fw));
  if (!fw)
    return MCP_ENOMEM;
  atomic_init(&fw->refs, 1);
  fw->sealed = 1; /* an empty index is a valid index of no rules */
  *out = fw;
  return 0;
}

static void index_free(mcp_firewall_t *fw)
{
  free(fw->ips);
  free(fw->ipslots);
  free(fw->r4);
  free(fw->r6);
  fw->ips = NULL;
  fw->ipslots = NULL;
  fw->r4 = NULL;
  fw->r6 = NULL;
  fw->nips = fw->ipslots_cap = fw->n4 = fw->n6 = 0;
  memset(fw->countries, 0, sizeof(fw->countries));
}

static void firewall_free(mcp_firewall_t *fw)
{
  index_free(fw);
  free(fw->rules);
  free(fw->rslots);
  mcp_geoip_unref(fw->geoip);
  free(fw);
}

/* A copy of n bytes of p (NULL for n == 0), stored in *dst; returns 0 or MCP_ENOMEM. */
static int dup_bytes(void *dst, const void *p, size_t n)
{
  void *q = NULL;
  if (n > 0) {
    q = malloc(n);
    if (!q)
      return MCP_ENOMEM;
    memcpy(q, p, n);
  }
  memcpy(dst, &q, sizeof(q));
  return 0;
}

int mcp_firewall_clone(const mcp_firewall_t *src, mcp_firewall_t **out)
{
  if (!src)
    return mcp_firewall_new(out);
  mcp_firewall_t *fw = calloc(1, sizeof(*fw));
  if (!fw)
    return MCP_ENOMEM;
  /* Copy the scalars, then give the clone its own arrays. */
  memcpy(fw, src, sizeof(*fw));
  atomic_init(&fw->refs, 1);
  fw->rules = NULL;
  fw->rslots = NULL;
  fw->ips = NULL;
  fw->ipslots = NULL;
  fw->r4 = NULL;
  fw->r6 = NULL;
  fw->geoip = mcp_geoip_ref(src->geoip);
  fw->rules_cap = src->nrules;
  if (dup_bytes(&fw->rules, src->rules, src->nrules * sizeof(*src->rules)) != 0 ||
      dup_bytes(&fw->rslots, src->rslots, src->rslots_cap * sizeof(*src->rslots)) != 0 ||
      dup_bytes(&fw->ips, src->ips, src->nips * sizeof(*src->ips)) != 0 ||
      dup_bytes(&fw->ipslots, src->ipslots, src->ipslots_cap * sizeof(*src->ipslots)) != 0 ||
      dup_bytes(&fw->r4, src->r4, src->n4 * sizeof(*src->r4)) != 0 ||
      dup_bytes(&fw->r6, src->r6, src->n6 * sizeof(*src->r6)) != 0) {
    firewall_free(fw);
    return MCP_ENOMEM;
  }
  *out = fw;
  return 0;
}

int mcp_firewall_add(mcp_firewall_t *fw, mcp_firewall_type_t type, const char *value)
{
  fw_rule_t r;

  if (!fw || parse_rule(type, value, &r) != 0)
    return MCP_EINVAL;
  if (fw->rslots_cap > 0 && fw->rslots[rule_slot(fw, &r)] != 0)
    return 0; /* already there: adding is idempotent */
  if (fw->nrules >= UINT32_MAX - 1)
    return MCP_ENOMEM;

  /* Grow first, so that a failure leaves the firewall exactly as it was. */
  if (fw->nrules == fw->rules_cap) {
    size_t cap = fw->rules_cap ? fw->rules_cap * 2 : 16;
    fw_rule_t *rules = realloc(fw->rules, cap * sizeof(*rules));
    if (!rules)
      return MCP_ENOMEM;
    fw->rules = rules;
    fw->rules_cap = cap;
  }
  if ((fw->nrules + 1) * 10 > fw->rslots_cap * 7 && rules_grow_index(fw) != 0)
    return MCP_ENOMEM;

  fw->rules[fw->nrules] = r;
  fw->rslots[rule_slot(fw, &r)] = (uint32_t)(fw->nrules + 1);
  fw->nrules++;
  if (type == MCP_FIREWALL_COUNTRY)
    fw->ncountry++;
  fw->sealed = 0;
  return 0;
}

int mcp_firewall_remove(mcp_firewall_t *fw, mcp_firewall_type_t type, const char *value)
{
  fw_rule_t r;

  if (!fw || parse_rule(type, value, &r) != 0)
    return MCP_EINVAL;
  if (fw->rslots_cap == 0)
    return MCP_ENOENT;
  size_t slot = rule_slot(fw, &r);
  if (fw->rslots[slot] == 0)
    return MCP_ENOENT;

  size_t idx = fw->rslots[slot] - 1, last = fw->nrules - 1;
  rules_unslot(fw, slot);
  /* Keep the array dense: move the last rule into the hole and repoint its slot. */
  if (idx != last) {
    fw->rslots[rule_slot(fw, &fw->rules[last])] = (uint32_t)(idx + 1);
    fw->rules[idx] = fw->rules[last];
  }
  fw->nrules--;
  if (type == MCP_FIREWALL_COUNTRY)
    fw->ncountry--;
  fw->sealed = 0;
  return 0;
}

void mcp_firewall_set_geoip(mcp_firewall_t *fw, mcp_geoip_t *geoip)
{
  if (!fw)
    return;
  mcp_geoip_t *old = fw->geoip;
  fw->geoip = mcp_geoip_ref(geoip);
  mcp_geoip_unref(old);
}

mcp_geoip_t *mcp_firewall_geoip(const mcp_firewall_t *fw)
{
  return fw ? fw->geoip : NULL;
}

/* ---- sealing ----------------------------------------------------------------------------- */

static uint64_t key_hash(const uint8_t k[16])
{
  uint64_t a, b;
  memcpy(&a, k, 8);
  memcpy(&b, k + 8, 8);
  /* A multiply-xorshift mix; client addresses are not secret, just spread them. */
  uint64_t h = (a ^ (b * 0x9e3779b97f4a7c15ULL)) * 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 31;
  h *= 0x94d049bb133111ebULL;
  return h ^ (h >> 29);
}

/* The IP slot holding key, or the empty slot where it would go. */
static size_t ip_slot(const uint32_t *slots, size_t cap, const ipkey_t *ips, const uint8_t k[16])
{
  size_t mask = cap - 1;
  size_t i = (size_t)key_hash(k) & mask;

  while (slots[i] && memcmp(ips[slots[i] - 1], k, 16) != 0)
    i = (i + 1) & mask;
  return i;
}

/* key (4 or 16 bytes) as the 16-byte set key: IPv4 goes IPv4-mapped. */
static void map_key(int family, const uint8_t *key, uint8_t out[16])
{
  if (family == AF_INET) {
    memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    memcpy(out + 12, key, 4);
  } else {
    memcpy(out, key, 16);
  }
}

static u128 load128(const uint8_t k[16])
{
  u128 v = 0;
  for (int i = 0; i < 16; i++)
    v = v << 8 | k[i];
  return v;
}

static uint32_t load32(const uint8_t k[4])
{
  return (uint32_t)k[0] << 24 | (uint32_t)k[1] << 16 | (uint32_t)k[2] << 8 | k[3];
}

static int range_cmp(const void *a, const void *b)
{
  const range6_t *x = a, *y = b;
  return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/*
 * Sorts ranges and merges overlapping or adjacent ones in place; returns the new count. IPv4
 * ranges are merged in this 128-bit form too (see mcp_firewall_seal), so there is one merge.
 */
static size_t merge_ranges(range6_t *r, size_t n)
{
  const u128 max = ~(u128)0;
  size_t out = 0;
  if (n == 0)
    return 0;
  qsort(r, n, sizeof(*r), range_cmp);
  for (size_t i = 1; i < n; i++) {
    if (r[out].hi == max || r[i].lo <= r[out].hi + 1) {
      if (r[i].hi > r[out].hi)
        r[out].hi = r[i].hi;
    } else {
      r[++out] = r[i];
    }
  }
  return out + 1;
}

static int seal_locked(mcp_firewall_t *fw);

/*
 * Listeners on several loops may be handed the same unsealed firewall and each seal it from its
 * own thread (mcp_listener_set_firewall). One process-wide lock makes that safe: the first
 * caller builds the index, the others wait for it and find it sealed. Sealing is rare (once per
 * published snapshot), so one lock for every firewall costs nothing that matters.
 */
static pthread_mutex_t seal_lock = PTHREAD_MUTEX_INITIALIZER;

int mcp_firewall_seal(mcp_firewall_t *fw)
{
  if (!fw)
    return MCP_EINVAL;
  pthread_mutex_lock(&seal_lock);
  int rc = seal_locked(fw);
  pthread_mutex_unlock(&seal_lock);
  return rc;
}

static int seal_locked(mcp_firewall_t *fw)
{
  /* The IPv4-mapped block ::ffff:0:0/96 as a 128-bit range. */
  const u128 mapped_lo = (u128)0xffff << 32, mapped_hi = mapped_lo | 0xffffffffu;
  size_t nip = 0, n4 = 0, n6 = 0, ipcap = 16;
  ipkey_t *ips = NULL;
  uint32_t *ipslots = NULL;
  range4_t *r4 = NULL;
  range6_t *w4 = NULL; /* the IPv4 ranges, widened to be merged by merge_ranges */
  range6_t *r6 = NULL;

  if (!fw)
    return MCP_EINVAL;
  if (fw->sealed)
    return 0;

  /* Size everything first; an IPv6 CIDR may add one IPv4 range as well. */
  for (size_t i = 0; i < fw->nrules; i++) {
    const fw_rule_t *r = &fw->rules[i];
    if (r->type == MCP_FIREWALL_IP)
      nip++;
    else if (r->type == MCP_FIREWALL_CIDR && r->family == AF_INET)
      n4++;
    else if (r->type == MCP_FIREWALL_CIDR)
      n4++, n6++;
  }
  while (nip * 10 > ipcap * 7)
    ipcap *= 2;
  ips = malloc((nip ? nip : 1) * sizeof(*ips));
  ipslots = calloc(ipcap, sizeof(*ipslots));
  r4 = malloc((n4 ? n4 : 1) * sizeof(*r4));
  w4 = malloc((n4 ? n4 : 1) * sizeof(*w4));
  r6 = malloc((n6 ? n6 : 1) * sizeof(*r6));
  if (!ips || !ipslots || !r4 || !w4 || !r6) {
    free(ips);
    free(ipslots);
    free(r4);
    free(w4);
    free(r6);
    return MCP_ENOMEM;
  }

  index_free(fw);
  nip = n4 = n6 = 0;
  for (size_t i = 0; i < fw->nrules; i++) {
    const fw_rule_t *r = &fw->rules[i];
    if (r->type == MCP_FIREWALL_IP) {
      map_key(r->family, r->key, ips[nip]);
      ipslots[ip_slot(ipslots, ipcap, ips, ips[nip])] = (uint32_t)(nip + 1);
      nip++;
    } else if (r->type == MCP_FIREWALL_CIDR && r->family == AF_INET) {
      uint32_t host = r->prefix == 0 ? UINT32_MAX : (uint32_t)((1ULL << (32 - r->prefix)) - 1);
      w4[n4].lo = load32(r->key);
      w4[n4].hi = w4[n4].lo | host;
      n4++;
    } else if (r->type == MCP_FIREWALL_CIDR) {
      u128 host = r->prefix == 0 ? ~(u128)0 : (((u128)1 << (128 - r->prefix)) - 1);
      u128 lo = load128(r->key), hi = lo | host;
      r6[n6].lo = lo;
      r6[n6].hi = hi;
      n6++;
      /* The part inside ::ffff:0:0/96 also blocks the IPv4 clients it maps. */
      if (lo <= mapped_hi && hi >= mapped_lo) {
        w4[n4].lo = (lo > mapped_lo ? lo : mapped_lo) & 0xffffffffu;
        w4[n4].hi = (hi < mapped_hi ? hi : mapped_hi) & 0xffffffffu;
        n4++;
      }
    } else if (r->type == MCP_FIREWALL_COUNTRY) {
      unsigned bit = (unsigned)(r->value[0] - 'A') * 26 + (unsigned)(r->value[1] - 'A');
      fw->countries[bit / 64] |= 1ULL << (bit % 64);
    }
  }

  fw->ips = ips;
  fw->nips = nip;
  fw->ipslots = ipslots;
  fw->ipslots_cap = ipcap;
  fw->n4 = merge_ranges(w4, n4);
  for (size_t i = 0; i < fw->n4; i++) {
    r4[i].lo = (uint32_t)w4[i].lo;
    r4[i].hi = (uint32_t)w4[i].hi;
  }
  free(w4);
  fw->r4 = r4;
  fw->r6 = r6;
  fw->n6 = merge_ranges(r6, n6);
  fw->sealed = 1;
  return 0;
}

/* ---- checks ------------------------------------------------------------------------------ */

static int in_ranges4(const range4_t *r, size_t n, uint32_t x)
{
  /* Find the last range starting at or before x. */
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (r[mid].lo <= x)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo > 0 && x <= r[lo - 1].hi;
}

static int in_ranges6(const range6_t *r, size_t n, u128 x)
{
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (r[mid].lo <= x)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo > 0 && x <= r[lo - 1].hi;
}

static int country_blocked(const mcp_firewall_t *fw, const struct sockaddr *client)
{
  char cc[3];

  if (mcp_geoip_country(fw->geoip, client, cc) != 0)
    return 0;
  unsigned bit = (unsigned)(cc[0] - 'A') * 26 + (unsigned)(cc[1] - 'A');
  return (fw->countries[bit / 64] >> (bit % 64)) & 1;
}

int mcp_firewall_check(const mcp_firewall_t *fw, const struct sockaddr *client)
{
  uint8_t key[16];

  if (!fw || !client)
    return 0;
  assert(fw->sealed && "mcp_firewall_check on a firewall edited since mcp_firewall_seal");

  if (client->sa_family == AF_INET) {
    map_key(AF_INET, (const uint8_t *)&((const struct sockaddr_in *)client)->sin_addr, key);
  } else if (client->sa_family == AF_INET6) {
    memcpy(key, &((const struct sockaddr_in6 *)client)->sin6_addr, 16);
  } else {
    return 0;
  }
  /* key is now IPv4-mapped for IPv4 and IPv4-mapped IPv6 clients alike. */
  if (fw->nips > 0 && fw->ipslots[ip_slot(fw->ipslots, fw->ipslots_cap, fw->ips, key)] != 0)
    return 1;
  if (is_v4mapped(key)) {
    if (in_ranges4(fw->r4, fw->n4, load32(key + 12)))
      return 1;
  } else if (in_ranges6(fw->r6, fw->n6, load128(key))) {
    return 1;
  }
  return fw->ncountry > 0 && fw->geoip && country_blocked(fw, client);
}

size_t mcp_firewall_count(const mcp_firewall_t *fw)
{
  return fw ? fw->nrules : 0;
}

size_t mcp_firewall_country_count(const mcp_firewall_t *fw)
{
  return fw ? fw->ncountry : 0;
}

static int rule_cmp(const void *a, const void *b)
{
  const fw_rule_t *x = *(const fw_rule_t *const *)a;
  const fw_rule_t *y = *(const fw_rule_t *const *)b;
  if (x->type != y->type)
    return x->type < y->type ? -1 : 1;
  return strcmp(x->value, y->value);
}

int mcp_firewall_foreach(const mcp_firewall_t *fw, mcp_firewall_rule_cb cb, void *data)
{
  const fw_rule_t **sorted;
  int rc = 0;

  if (!fw || !cb || fw->nrules == 0)
    return 0;
  sorted = malloc(fw->nrules * sizeof(*sorted));
  if (!sorted)
    return MCP_ENOMEM;
  for (size_t i = 0; i < fw->nrules; i++)
    sorted[i] = &fw->rules[i];
  qsort(sorted, fw->nrules, sizeof(*sorted), rule_cmp);
  for (size_t i = 0; i < fw->nrules && rc == 0; i++)
    rc = cb(data, (mcp_firewall_type_t)sorted[i]->type, sorted[i]->value);
  free(sorted);
  return rc;
}

mcp_firewall_t *mcp_firewall_ref(mcp_firewall_t *fw)
{
  if (fw)
    atomic_fetch_add_explicit(&fw->refs, 1, memory_order_relaxed);
  return fw;
}

void mcp_firewall_unref(mcp_firewall_t *fw)
{
  if (fw && atomic_fetch_sub_explicit(&fw->refs, 1, memory_order_acq_rel) == 1)
    firewall_free(fw);
}
