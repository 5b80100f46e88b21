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
 * Lookups are exact and case-insensitive (hostnames are stored normalised), O(1) on average.
 */
#ifndef MCPROXY_ROUTES_H
#define MCPROXY_ROUTES_H

#include <stddef.h>
#include <stdint.h>

#include "mcproxy/backend.h"
#include "mcproxy/error.h"

/* Signals: libmcproxy never installs a signal handler or changes a signal mask. It writes to
 * sockets with write(2) and splice(2) (through libuv, without MSG_NOSIGNAL), which raise SIGPIPE
 * when a peer has gone, so a program that runs listeners must ignore SIGPIPE
 * (signal(SIGPIPE, SIG_IGN)) before it starts one. */
#ifdef __cplusplus
extern "C" {
#endif

typedef struct mcp_routes_s mcp_routes_t;

/* Creates an empty table with reference count 1 in *out. Returns 0 or MCP_ENOMEM. */
int mcp_routes_new(mcp_routes_t **out);

/*
 * Creates a deep copy of src (NULL: an empty table) with reference count 1 in *out, to edit
 * and publish. Returns 0 or MCP_ENOMEM (*out untouched).
 */
int mcp_routes_clone(const mcp_routes_t *src, mcp_routes_t **out);

/*
 * Adds or replaces hostname -> backend (both validated and normalised). Returns 0, MCP_EINVAL
 * for a bad hostname or backend, or MCP_ENOMEM; on error the table is unchanged. Only on a
 * table not yet published.
 */
int mcp_routes_put(mcp_routes_t *rt, const char *hostname, const char *backend);

/* Removes hostname. Returns 0, MCP_EINVAL for a malformed hostname, or MCP_ENOENT. */
int mcp_routes_remove(mcp_routes_t *rt, const char *hostname);

/*
 * The backend for hostname (len bytes; any case, trailing dot allowed), or NULL. The pointer
 * stays valid as long as the caller holds a reference to rt. Any thread.
 */
const mcp_backend_t *mcp_routes_lookup(const mcp_routes_t *rt, const char *hostname, size_t len);

size_t mcp_routes_count(const mcp_routes_t *rt);

/*
 * Calls cb for every route in hostname order; stops early and returns cb's value when it is
 * non-zero, else returns 0.
 */
typedef int (*mcp_routes_cb)(void *data, const char *hostname, const mcp_backend_t *backend);
int mcp_routes_foreach(const mcp_routes_t *rt, mcp_routes_cb cb, void *data);

/* Reference counting (atomic). unref frees the table when the count reaches zero; NULL is ok. */
mcp_routes_t *mcp_routes_ref(mcp_routes_t *rt);
void mcp_routes_unref(mcp_routes_t *rt);

#ifdef __cplusplus
}
#endif

#endif
