/*
 * router: per-listener route tables (SNI hostname -> backend).
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
#ifndef MCPROXY_ROUTER_H
#define MCPROXY_ROUTER_H

#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "mcproxy/error.h"
#include "mcproxy/hostname.h"

/* Signals: libmcproxy never installs a signal handler or changes a signal mask. It writes to
 * sockets with write(2) and splice(2) (through libuv, without MSG_NOSIGNAL), which raise SIGPIPE
 * when a peer has gone, so a program that runs listeners must ignore SIGPIPE
 * (signal(SIGPIPE, SIG_IGN)) before it starts one. */
#ifdef __cplusplus
extern "C" {
#endif

/* Longest canonical backend text: "[" IPv6 "]:" port or hostname ":" port, plus NUL. */
#define MCP_BACKEND_MAX (MCP_HOSTNAME_MAX + 8)

/*
 * A parsed backend. IP literals are resolved at parse time (addr.sa.sa_family is AF_INET or
 * AF_INET6, port included, and the data plane connects without DNS); a hostname backend has
 * family AF_UNSPEC and is resolved at connect time: its hostname is text[0..host_len). text is
 * the canonical form ("10.0.0.1:443", "[2001:db8::1]:443", "backend.internal:443").
 */
typedef struct mcp_backend_s {
  union {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
  } addr;
  uint16_t port;
  uint16_t host_len; /* hostname backends: length of the hostname prefix of text; else 0 */
  char text[MCP_BACKEND_MAX];
} mcp_backend_t;

/*
 * Parses "IPv4:port", "[IPv6]:port" or "hostname:port" (port 1-65535; a trailing dot on the
 * hostname is dropped). Returns 0 or MCP_EINVAL.
 */
int mcp_backend_parse(const char *in, mcp_backend_t *out);

/*
 * Returns 1 if connecting to backend would reach the listener bound at listen_addr (the same
 * address and port, or a wildcard listener and a loopback/unspecified/local-interface backend on
 * the same port), else 0. Hostname backends are not resolved and return 0.
 */
int mcp_backend_loops_to(const mcp_backend_t *backend, const struct sockaddr *listen_addr);

typedef struct mcp_routes_s mcp_routes_t;

/* A new empty table with reference count 1, or NULL when out of memory. */
mcp_routes_t *mcp_routes_new(void);

/* A deep copy of src with reference count 1 (to edit and publish), or NULL when out of memory. */
mcp_routes_t *mcp_routes_clone(const mcp_routes_t *src);

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
typedef int (*mcp_route_cb)(void *data, const char *hostname, const mcp_backend_t *backend);
int mcp_routes_foreach(const mcp_routes_t *rt, mcp_route_cb cb, void *data);

/* Reference counting (atomic). unref frees the table when the count reaches zero; NULL is ok. */
mcp_routes_t *mcp_routes_ref(mcp_routes_t *rt);
void mcp_routes_unref(mcp_routes_t *rt);

#ifdef __cplusplus
}
#endif

#endif
