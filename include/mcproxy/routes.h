/*
 * routes: per-listener route tables (SNI hostname -> backend).
 *
 * A table is built or copied by one thread, then published to a listener with
 * mcp_listener_set_routes(). From then on it is an immutable snapshot shared by reference
 * count: readers (the data plane, status calls) never see it change, and a change is made by
 * cloning, editing the clone and publishing the clone. mcp_routes_ref/unref are atomic, so a
 * snapshot may be read and released from several threads; the editing functions must only be
 * used on a table nobody else holds yet.
 *
 * A route's name is a hostname or a wildcard "*." + hostname ("*.example.com": any name ending
 * in .example.com, not example.com itself). A lookup tries, in order: the exact name
 * (case-insensitive, trailing dot ignored), the longest matching wildcard, the table's fallback
 * backend; each step is O(1) hash probes (one per label of the name at most), whatever the
 * number of routes. Each route also says whether a PROXY header is sent to its backend.
 */
#ifndef MCPROXY_ROUTES_H
#define MCPROXY_ROUTES_H

#include <stddef.h>
#include <stdint.h>

#include "mcproxy/backend.h"
#include "mcproxy/error.h"

/* Signals: libmcproxy never installs a signal handler or changes a signal mask. It writes to
 * sockets with send(2) (MSG_NOSIGNAL) and splice(2), and splice raises SIGPIPE when a peer has
 * gone, so a program that runs listeners must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) before
 * it starts one. */
#ifdef __cplusplus
extern "C" {
#endif

typedef struct mcp_routes_s mcp_routes_t;

/* Whether a PROXY protocol header is sent to a route's backend before the client's bytes. */
typedef enum mcp_send_proxy_e {
  MCP_SEND_PROXY_NONE = 0,
  MCP_SEND_PROXY_V1 = 1,
  MCP_SEND_PROXY_V2 = 2
} mcp_send_proxy_t;

/* "none", "send-proxy-v1", "send-proxy-v2" (the config's words), or NULL for another value. */
const char *mcp_send_proxy_name(mcp_send_proxy_t v);

/* How a lookup found its backend. */
typedef enum mcp_route_kind_e {
  MCP_ROUTE_EXACT = 0,
  MCP_ROUTE_WILDCARD = 1,
  MCP_ROUTE_FALLBACK = 2
} mcp_route_kind_t;

/* A lookup's result; the pointers stay valid while the caller holds a reference to the table. */
typedef struct mcp_route_match_s {
  const mcp_backend_t *backend;
  mcp_send_proxy_t send_proxy; /* always NONE for the fallback */
  mcp_route_kind_t kind;
  const char *hostname; /* the route's stored name ("*.example.com" for a wildcard); NULL for the
                           fallback */
} mcp_route_match_t;

/* Creates an empty table with reference count 1 in *out. Returns 0 or MCP_ENOMEM. */
int mcp_routes_new(mcp_routes_t **out);

/*
 * Creates a deep copy of src (NULL: an empty table) with reference count 1 in *out, to edit
 * and publish. Returns 0 or MCP_ENOMEM (*out untouched).
 */
int mcp_routes_clone(const mcp_routes_t *src, mcp_routes_t **out);

/*
 * Adds or replaces hostname -> backend (both validated and normalised; hostname may be a
 * "*." wildcard) with send_proxy. Returns 0, MCP_EINVAL for a bad hostname, backend or
 * send_proxy, or MCP_ENOMEM; on error the table is unchanged. Only on a table not yet published.
 */
int mcp_routes_put_ex(mcp_routes_t *rt, const char *hostname, const char *backend,
                      mcp_send_proxy_t send_proxy);
/* mcp_routes_put_ex() with MCP_SEND_PROXY_NONE. */
int mcp_routes_put(mcp_routes_t *rt, const char *hostname, const char *backend);

/* Removes the route named hostname (a wildcard by its "*." name). Returns 0, MCP_EINVAL for a
 * malformed name, or MCP_ENOENT. */
int mcp_routes_remove(mcp_routes_t *rt, const char *hostname);

/*
 * Sets the fallback backend (validated), used when no route matches and for a hello without
 * SNI; NULL or "" removes it. Returns 0 or MCP_EINVAL (table unchanged). Only on a table not yet
 * published. mcp_routes_fallback() returns it or NULL. The fallback is not counted as a route.
 */
int mcp_routes_set_fallback(mcp_routes_t *rt, const char *backend);
const mcp_backend_t *mcp_routes_fallback(const mcp_routes_t *rt);

/*
 * Looks up hostname (len bytes; any case, trailing dot allowed): exact, else the longest
 * wildcard, else the fallback. hostname NULL or len 0 means a hello without SNI: the fallback.
 * Fills *m and returns 0, or returns MCP_ENOENT (no match and no fallback, or a name that is not
 * a hostname). Any thread; never allocates.
 */
int mcp_routes_match(const mcp_routes_t *rt, const char *hostname, size_t len,
                     mcp_route_match_t *m);

/* mcp_routes_match() returning only the backend, or NULL. */
const mcp_backend_t *mcp_routes_lookup(const mcp_routes_t *rt, const char *hostname, size_t len);

/* The number of routes, wildcards included, the fallback not. */
size_t mcp_routes_count(const mcp_routes_t *rt);

/*
 * Calls cb for every route in hostname order; stops early and returns cb's value when it is
 * non-zero, else returns 0.
 */
typedef int (*mcp_routes_cb)(void *data, const char *hostname, const mcp_backend_t *backend);
int mcp_routes_foreach(const mcp_routes_t *rt, mcp_routes_cb cb, void *data);
/* The same walk with each route's send_proxy. */
typedef int (*mcp_routes_ex_cb)(void *data, const char *hostname, const mcp_backend_t *backend,
                                mcp_send_proxy_t send_proxy);
int mcp_routes_foreach_ex(const mcp_routes_t *rt, mcp_routes_ex_cb cb, void *data);

/* Reference counting (atomic). unref frees the table when the count reaches zero; NULL is ok. */
mcp_routes_t *mcp_routes_ref(mcp_routes_t *rt);
void mcp_routes_unref(mcp_routes_t *rt);

#ifdef __cplusplus
}
#endif

#endif
