/*
 * hash: the one string hash of the project, 64-bit FNV-1a. Used by the route tables, the
 * firewall's rule index and the executable's config reader for their open-addressing tables.
 * Not for anything an attacker could exploit by choosing
 * colliding keys where it matters (route names and rules come from the operator).
 */
#ifndef MCPROXY_HASH_H
#define MCPROXY_HASH_H

#include <stddef.h>
#include <stdint.h>

/* Signals: libmcproxy never installs a signal handler or changes a signal mask. It writes to
 * sockets with send(2) (MSG_NOSIGNAL) and splice(2), and splice raises SIGPIPE when a peer has
 * gone, so a program that runs listeners must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) before
 * it starts one. */
#ifdef __cplusplus
extern "C" {
#endif

/* The FNV-1a offset basis: the h to pass for the first piece of a key. */
#define MCP_HASH_FNV1A_INIT 0xcbf29ce484222325ULL

/*
 * Folds len bytes of data into h and returns the new value. A key made of several pieces is
 * hashed by passing each result on as the next h.
 */
uint64_t mcp_hash_fnv1a(uint64_t h, const void *data, size_t len);

#ifdef __cplusplus
}
#endif

#endif
