/*
 * backend: where a route sends its connections. A backend is parsed once, when the route is
 * added, into a canonical text and (for IP literals) a ready socket address, so the data plane
 * connects without parsing or, for IPs, DNS.
 */
#ifndef MCPROXY_BACKEND_H
#define MCPROXY_BACKEND_H

#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "mcproxy/error.h"
#include "mcproxy/hostname.h"

/* Signals: libmcproxy never installs a signal handler or changes a signal mask. It writes to
 * sockets with send(2) (MSG_NOSIGNAL) and splice(2), and splice raises SIGPIPE when a peer has
 * gone, so a program that runs listeners must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) before
 * it starts one. */
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
 * A predicate (it cannot fail): returns 1 if connecting to backend would reach the listener bound at listen_addr (the same
 * address and port, or a wildcard listener and a loopback/unspecified/local-interface backend on
 * the same port), else 0. Hostname backends are not resolved and return 0: use
 * mcp_backend_check_loop for them.
 */
int mcp_backend_loops_to(const mcp_backend_t *backend, const struct sockaddr *listen_addr);

/*
 * The loop check for any backend, hostname backends included, when a route is added. Returns
 * MCP_ELOOP when connecting to backend could reach one of the n listen addresses listen_addrs
 * (as mcp_backend_loops_to judges it), else 0. A hostname backend is resolved first, waiting at
 * most timeout_ms (the resolution runs on the backend resolver's own threads and fills its
 * cache; 0 means MCP_BACKEND_CHECK_TIMEOUT_MS): every address it resolves to is checked. The
 * names "localhost" and "*.localhost" always mean the loopback addresses (127.0.0.1 and ::1)
 * and are checked without DNS. A name that does not resolve in time, or at all, passes: it is
 * checked again at every connect, where an address of one of this process's listeners is
 * never connected to. Blocks the calling thread for up to timeout_ms; any thread.
 */
#define MCP_BACKEND_CHECK_TIMEOUT_MS 500
int mcp_backend_check_loop(const mcp_backend_t *backend, const struct sockaddr *const *listen_addrs,
                           size_t n, unsigned timeout_ms);

/*
 * A predicate (it cannot fail): 1 if addr (address and port) is one of the addresses some
 * listener of this process listens on (every started listener, on every loop, registers its
 * bound address; wildcard listeners cover the loopback and local interface addresses on their
 * port), else 0. This is the check every backend connect makes. Any thread.
 */
int mcp_backend_is_own_listener(const struct sockaddr *addr);

/* Counters of the backend resolver since the process started. */
typedef struct mcp_backend_resolver_stats_s {
  uint64_t resolves;   /* getaddrinfo calls made */
  uint64_t cache_hits; /* connects answered from the cache */
  uint64_t queue_full; /* lookups refused because the resolver's queue was full */
} mcp_backend_resolver_stats_t;

/* Fills *out with the resolver's counters. Any thread. */
void mcp_backend_resolver_stats(mcp_backend_resolver_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif
