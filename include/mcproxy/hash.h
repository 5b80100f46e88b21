/*
 * hash: the one string hash of the project, 64-bit FNV-1a. Used by the route tables, the
 * firewall's rule index and the executable's config reader for their open-addressing tables.
 * Inline, so it adds no exported symbol; not for anything an attacker could exploit by choosing
 * colliding keys where it matters (route names and rules come from the operator).
 */
#ifndef MCPROXY_HASH_H
#define MCPROXY_HASH_H

#include <stddef.h>
#include <stdint.h>

/* The FNV-1a offset basis: the h to pass for the first piece of a key. */
#define MCP_HASH_FNV1A_INIT 0xcbf29ce484222325ULL

/*
 * Folds len bytes of data into h and returns the new value. A key made of several pieces is
 * hashed by passing each result on as the next h.
 */
static inline uint64_t mcp_hash_fnv1a(uint64_t h, const void *data, size_t len)
{
  const unsigned char *p = data;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

#endif
