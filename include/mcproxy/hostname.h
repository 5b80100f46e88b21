/*
 * hostname: what mc-proxy accepts as a DNS hostname, in one place.
 *
 * SNI values, route hostnames and backend hostnames all go through mcp_hostname_normalize(), so
 * the three can never disagree on what a hostname is. The rule: ASCII
 * labels of 1-63 letters, digits and hyphens, a label never starting or ending with a hyphen,
 * at most 253 bytes; one trailing dot in input is accepted and dropped; the stored form is
 * lowercase. Pure functions: no allocation, no I/O, no state; safe from any thread.
 */
#ifndef MCPROXY_HOSTNAME_H
#define MCPROXY_HOSTNAME_H

#include <stddef.h>

/* Signals: libmcproxy never installs a signal handler or changes a signal mask. It writes to
 * sockets with send(2) (MSG_NOSIGNAL) and splice(2), and splice raises SIGPIPE when a peer has
 * gone, so a program that runs listeners must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) before
 * it starts one. */
#ifdef __cplusplus
extern "C" {
#endif

/* Longest hostname: 253 bytes of ASCII, plus the terminating NUL in buffers. */
#define MCP_HOSTNAME_MAX 253

/*
 * Validates and normalises the hostname in[0..len) (in need not be NUL-terminated; bytes past
 * len are never read). Writes the lowercase form without a trailing dot, NUL-terminated, to out
 * (MCP_HOSTNAME_MAX + 1 bytes) and returns its length (1..253), or MCP_EINVAL if in is not a
 * hostname (out is then unspecified).
 */
int mcp_hostname_normalize(const char *in, size_t len, char *out);

/*
 * Like mcp_hostname_normalize(), but also accepts a wildcard route name: "*." followed by a
 * hostname, where the "*" is the whole first label ("*.example.com"). "*" alone, "*.", "*a.b"
 * and "a.*.example.com" are refused. The normalised pattern (at most MCP_HOSTNAME_MAX bytes,
 * "*." included) is written to out (MCP_HOSTNAME_MAX + 1 bytes); returns its length or
 * MCP_EINVAL. Separate from mcp_hostname_normalize() on purpose: a client's SNI is never a
 * pattern, so only route names may go through this one.
 */
int mcp_hostname_normalize_pattern(const char *in, size_t len, char *out);

#ifdef __cplusplus
}
#endif

#endif
