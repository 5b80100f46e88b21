/*
 * store: the SQLite database that persists listeners, routes, limits and firewall rules.
 *
 * mcp_store_open() creates the file if needed, turns on WAL, foreign keys and a busy timeout,
 * and applies the numbered migrations (each in its own transaction, recorded in
 * schema_migrations). A database whose schema is newer than this binary is refused.
 *
 * Every mutation runs in a transaction of its own unless the caller has opened one with
 * mcp_store_begin() (seeding uses that to write everything in one transaction). A mutation that
 * fails leaves the database exactly as it was. Errors: MCP_EBUSY when the database is busy or
 * locked past the busy timeout, MCP_ENOENT for a missing listener/route/rule, MCP_EIO for any
 * other failure; mcp_store_errmsg() then has SQLite's message.
 *
 * Values are stored as given: callers validate and normalise them first (router and firewall
 * functions). A store handle is not thread-safe: use it from one thread at a time (the server
 * uses it from the main thread at startup, then from one libuv work thread at a time).
 */
#ifndef MCPROXY_STORE_H
#define MCPROXY_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "mcproxy/error.h"
#include "mcproxy/firewall.h"

/* Signals: libmcproxy never installs a signal handler or changes a signal mask. It writes to
 * sockets with write(2) and splice(2) (through libuv, without MSG_NOSIGNAL), which raise SIGPIPE
 * when a peer has gone, so a program that runs listeners must ignore SIGPIPE
 * (signal(SIGPIPE, SIG_IGN)) before it starts one. */
#ifdef __cplusplus
extern "C" {
#endif

/* The newest schema version this build knows. */
#define MCP_STORE_SCHEMA_VERSION 3

typedef struct mcp_store_s mcp_store_t;

/*
 * Opens (creating if needed) and migrates the database at path. busy_timeout_ms bounds how
 * long a write waits for a lock (0 picks the default, 2000 ms). On failure returns MCP_EIO,
 * MCP_EBUSY or MCP_ENEWER with a message naming the file in err.
 */
int mcp_store_open(const char *path, int busy_timeout_ms, mcp_store_t **out, char *err,
                   size_t errlen);
void mcp_store_close(mcp_store_t *st);

/* The message of the last failure on this handle ("" if none). */
const char *mcp_store_errmsg(const mcp_store_t *st);

/* Writes the highest applied migration to *version. Returns 0 or a negative code. */
int mcp_store_schema_version(mcp_store_t *st, int *version);

/*
 * Sets *empty to 1 if the database holds no listener and no firewall rule (a first run), else
 * to 0. Returns 0 or a negative code (*empty untouched).
 */
int mcp_store_is_empty(mcp_store_t *st, int *empty);

/* An explicit transaction around several mutations (BEGIN IMMEDIATE / COMMIT / ROLLBACK). */
int mcp_store_begin(mcp_store_t *st);
int mcp_store_commit(mcp_store_t *st);
void mcp_store_rollback(mcp_store_t *st);

/* Adds a listener. MCP_EEXIST if addr exists, MCP_ERANGE if max_connections < 0. */
int mcp_store_listener_add(mcp_store_t *st, const char *addr, int64_t max_connections);
/* MCP_ENOENT for an unknown listener, MCP_ERANGE for a negative limit. */
int mcp_store_listener_set_max_connections(mcp_store_t *st, const char *addr,
                                              int64_t max_connections);

/* Upsert. MCP_ENOENT for an unknown listener. */
int mcp_store_route_put(mcp_store_t *st, const char *listener_addr, const char *hostname,
                        const char *backend);
/* MCP_ENOENT for an unknown listener or route. */
int mcp_store_route_remove(mcp_store_t *st, const char *listener_addr, const char *hostname);

/* Idempotent: 0 when added and when the rule was already there. */
int mcp_store_firewall_add(mcp_store_t *st, mcp_firewall_type_t type, const char *value);
/* MCP_ENOENT for a missing rule. */
int mcp_store_firewall_remove(mcp_store_t *st, mcp_firewall_type_t type, const char *value);

/*
 * Reads everything in one read transaction (a consistent view), calling the visitor's callbacks:
 * every listener first (ordered by addr), then every route (by listener, hostname), then every
 * rule (by type, value). A callback returning non-zero stops the walk and that value is
 * returned. Callbacks may be NULL.
 */
typedef struct mcp_store_visitor_s {
  int (*listener)(void *data, const char *addr, int64_t max_connections);
  int (*route)(void *data, const char *listener_addr, const char *hostname, const char *backend);
  int (*rule)(void *data, mcp_firewall_type_t type, const char *value);
} mcp_store_visitor_t;
int mcp_store_load(mcp_store_t *st, const mcp_store_visitor_t *visitor, void *data);

/*
 * Writes a consistent copy of the database to out_path with VACUUM INTO (safe while another
 * process writes). Fails with MCP_EEXIST if out_path exists.
 */
int mcp_store_snapshot(mcp_store_t *st, const char *out_path);

#ifdef __cplusplus
}
#endif

#endif
