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
 * A predicate (it cannot fail): returns 1 if connecting to backend would reach the listener bound at listen_addr (the same
 * address and port, or a wildcard listener and a loopback/unspecified/local-interface backend on
 * the same port), else 0. Hostname backends are not resolved and return 0.
 */
int mcp_backend_loops_to(const mcp_backend_t *backend, const struct sockaddr *listen_addr);

#ifdef __cplusplus
}
#endif

#endif
