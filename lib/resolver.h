/*
 * Internal: DNS for hostname backends (lib/resolver.c). A process-wide pool of a few threads of
 * its own (not libuv's thread pool, which the admin path's database writes use) resolves names
 * with getaddrinfo; a bounded queue feeds it; a bounded cache shared by every loop keeps answers
 * for a while. See docs/ARCHITECTURE.md ("DNS for hostname backends").
 */
#ifndef MCPROXY_RESOLVER_H
#define MCPROXY_RESOLVER_H

#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include "mcproxy/backend.h"

/* Defaults: threads, queued lookups, cached names, and how long answers are kept. */
#define MCP__RESOLVE_THREADS 4
#define MCP__RESOLVE_QUEUE 1024
#define MCP__RESOLVE_CACHE 1024
#define MCP__RESOLVE_TTL_MS 30000
#define MCP__RESOLVE_NEG_TTL_MS 5000
/* Addresses kept per name (the first ones getaddrinfo returns, in its order). */
#define MCP__RESOLVE_MAX_ADDRS 16

/*
 * One connection's resolution of a backend hostname: first pending, then the addresses to try
 * in order. Allocated by mcp__lookup_start, freed by mcp__lookup_free; loop thread only.
 */
typedef struct mcp__lookup_s mcp__lookup_t;

/* Called on the loop when a pending lookup has its answer: status 0 (addresses ready) or < 0. */
typedef void (*mcp__lookup_cb)(mcp__lookup_t *l, int status, void *data);

/*
 * Starts resolving name (normalised, NUL-terminated) for port. Returns 0 with the answer ready
 * now (from the cache; cb is never called), 1 when pending (cb runs later on loop, unless the
 * lookup is freed first), or a negative code and *out untouched: a cached failure, UV_EAGAIN
 * when the queue is full, UV_ENOMEM.
 */
int mcp__lookup_start(uv_loop_t *loop, const char *name, uint16_t port, mcp__lookup_cb cb,
                      void *data, mcp__lookup_t **out);

/* The next address to try (port set), or NULL when none is left. Only after the answer. */
const struct sockaddr *mcp__lookup_next(mcp__lookup_t *l);

/*
 * Called on the loop with a connected descriptor (>= 0, now the caller's) or a negative code:
 * UV_ELOOP when every address was skipped, else the last attempt's error.
 */
typedef void (*mcp__lookup_connect_cb)(mcp__lookup_t *l, int fd_or_err, void *data);

/*
 * Connects to the answer's addresses in order, skipping any for which skip (if not NULL)
 * returns 1 (the relay passes mcp_backend_is_own_listener), the next one after a failure, until
 * one connects or none is left; then cb (possibly at once, from inside this call). The caller
 * bounds the time (the connect timeout) by freeing l. Only after the answer, and once.
 */
void mcp__lookup_connect(mcp__lookup_t *l, int (*skip)(const struct sockaddr *addr),
                         mcp__lookup_connect_cb cb);

/*
 * Frees l in any state, also from inside its callback. A pending resolution goes on, but its
 * answer is dropped (it still fills the cache); the callback never runs after this.
 */
void mcp__lookup_free(mcp__lookup_t *l);

/*
 * Resolves name on the pool and waits at most timeout_ms. On 0, out[0..*n) holds the addresses
 * (port 0); UV_ETIMEDOUT when no answer came in time (the lookup goes on and fills the cache),
 * else the resolution's error. Any thread.
 */
int mcp__resolve_wait(const char *name, unsigned timeout_ms, struct sockaddr_in6 *out, int max,
                      int *n);

/*
 * Test hooks. mcp__resolver_configure sets the pool and cache sizes and lifetimes; it empties
 * the cache and only changes the thread count before the pool first starts.
 * mcp__resolver_block(1) keeps lookups on the queue, (2) lets a thread take one and holds it
 * just before its getaddrinfo, (0) lets everything go; mcp__resolver_running counts the lookups
 * threads have taken (the ones being resolved).
 */
void mcp__resolver_configure(int threads, int queue, int cache, unsigned ttl_ms,
                             unsigned neg_ttl_ms);
void mcp__resolver_block(int blocked);
int mcp__resolver_running(void);

#endif
