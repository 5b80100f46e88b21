/*
 * libmcproxy error codes.
 *
 * Every libmcproxy function that can fail returns 0 on success and a negative code on failure:
 * one of these, or a libuv UV_E* code passed through (the errno-style codes below have the same
 * values as libuv's on Unix). Results come back through out-parameters; "already there" is
 * either MCP_EEXIST (where the caller must know) or success (where the operation is
 * idempotent), never a positive value. Predicates that cannot fail return 1 or 0. The
 * conventions are written down in docs/ARCHITECTURE.md.
 */
#ifndef MCPROXY_ERROR_H
#define MCPROXY_ERROR_H

#include <errno.h>

/* Signals: libmcproxy never installs a signal handler or changes a signal mask. It writes to
 * sockets with send(2) (MSG_NOSIGNAL) and splice(2), and splice raises SIGPIPE when a peer has
 * gone, so a program that runs listeners must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) before
 * it starts one. */
#ifdef __cplusplus
extern "C" {
#endif

#define MCP_OK 0
#define MCP_EINVAL (-EINVAL)   /* malformed argument (hostname, backend, rule, address) */
#define MCP_ENOENT (-ENOENT)   /* no such listener, route or rule */
#define MCP_EEXIST (-EEXIST)   /* already exists where a duplicate is an error */
#define MCP_ENOMEM (-ENOMEM)   /* allocation failed */
#define MCP_EBUSY (-EBUSY)     /* the database is busy or locked; nothing changed */
#define MCP_EIO (-EIO)         /* any other storage or file failure; nothing changed */
#define MCP_ELOOP (-ELOOP)     /* a route whose backend is one of this proxy's listeners */
#define MCP_ERANGE (-ERANGE)   /* a number out of range (negative limit, port 0) */
#define MCP_ENOBUFS (-ENOBUFS) /* the caller's buffer is too small for the result */

/* Codes of our own, below any errno value. */
#define MCP_ENEWER (-4100)     /* the database was written by a newer mc-proxy */
#define MCP_ENOGEOIP (-4101)   /* a country rule needs a GeoIP database and none is loaded */

/*
 * Results of the ClientHello parser, mcp_sni_parse() (include/mcproxy/sni.h). NEED_MORE is not
 * a failure: the hello is not complete yet. A positive result is the hostname's length.
 */
#define MCP_SNI_NEED_MORE 0
#define MCP_SNI_ENOTTLS (-5001)    /* first bytes are not a TLS handshake record */
#define MCP_SNI_ENOTHELLO (-5002)  /* a handshake message, but not a ClientHello */
#define MCP_SNI_EMALFORMED (-5003) /* a length that lies, a duplicate, a bad structure */
#define MCP_SNI_ENOSNI (-5004)     /* a complete, valid ClientHello without a server_name */
#define MCP_SNI_EBADNAME (-5005)   /* the host_name is not a valid DNS hostname */
#define MCP_SNI_ETOOBIG (-5006)    /* handshake message or record overhead over the caps */

/* PROXY protocol headers (proxy_protocol.h). */
#define MCP_EPROXY_NOTPROXY (-4200)  /* the input starts with neither the v1 nor the v2 signature */
#define MCP_EPROXY_MALFORMED (-4201) /* a field or length that does not parse or add up */
#define MCP_EPROXY_FAMILY (-4202)    /* a protocol or address family mc-proxy does not take */
#define MCP_EPROXY_TOOBIG (-4203)    /* v1 line over 107 bytes, v2 header over its cap */

/* Per-client limits (client_limits.h): over the rate or the concurrent connections. */
#define MCP_ERATELIMITED (-4300)

/* A short, static, human-readable description of any code above, or of a libuv code. */
const char *mcp_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif
