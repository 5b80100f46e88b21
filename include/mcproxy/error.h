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

#define MCP_OK 0
#define MCP_EINVAL (-EINVAL)   /* malformed argument (hostname, backend, rule, address) */
#define MCP_ENOENT (-ENOENT)   /* no such listener, route or rule */
#define MCP_EEXIST (-EEXIST)   /* already exists where a duplicate is an error */
#define MCP_ENOMEM (-ENOMEM)   /* allocation failed */
#define MCP_EBUSY (-EBUSY)     /* the database is busy or locked; nothing changed */
#define MCP_EIO (-EIO)         /* any other storage or file failure; nothing changed */
#define MCP_ELOOP (-ELOOP)     /* a route whose backend is one of this proxy's listeners */
#define MCP_ERANGE (-ERANGE)   /* a number out of range (negative limit, port 0) */

/* Codes of our own, below any errno value. */
#define MCP_ENEWER (-4100)     /* the database was written by a newer mc-proxy */
#define MCP_ENOGEOIP (-4101)   /* a country rule needs a GeoIP database and none is loaded */

/* A short, static, human-readable description of any code above, or of a libuv code. */
const char *mcp_strerror(int code);

#endif
