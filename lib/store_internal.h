/*
 * store_internal: what lib/store.c shares with lib/store_listeners.c (and the store's unit
 * test): the handle's connection, its error message, and the write transaction every
 * multi-statement mutation runs in. Not installed; library files and tests only.
 */
#ifndef MCPROXY_STORE_INTERNAL_H
#define MCPROXY_STORE_INTERNAL_H

#include <sqlite3.h>

#include "mcproxy/store.h"

/* Migration n's SQL is mcp__store_migrations[n - 1] (lib/store_migrations.c). */
extern const char *const mcp__store_migrations[MCP_STORE_SCHEMA_VERSION];

/* The handle's SQLite connection. */
sqlite3 *mcp__store_db(mcp_store_t *st);

/* Sets the handle's error message (printf format). */
void mcp__store_errf(mcp_store_t *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Records SQLite's message for a failed call under what and returns the MCP_E* code for rc. */
int mcp__store_sqlfail(mcp_store_t *st, int rc, const char *what);

/*
 * Opens the transaction one mutation runs in: BEGIN IMMEDIATE on its own, or a savepoint inside
 * the caller's mcp_store_begin() transaction, so that a failed mutation is undone either way.
 * Clears the error message. Returns 0 or an MCP_E* code (then nothing is open).
 */
int mcp__store_write_begin(mcp_store_t *st, const char *what);

/*
 * Ends what mcp__store_write_begin() opened: commits (or releases the savepoint) when code is 0,
 * else undoes everything since the begin. Returns code, or the commit's error (then also undone).
 */
int mcp__store_write_end(mcp_store_t *st, int code, const char *what);

/*
 * Reads listener id's settings from a row of stmt whose columns from col on are max_connections,
 * proxy_protocol, fallback, rate_limit_count, rate_limit_period_ms, max_connections_per_client,
 * plus its proxy_from list. Fills *out (storage owned by it: mcp_store_listener_settings_free).
 */
int mcp__store_settings_from_row(mcp_store_t *st, sqlite3_stmt *stmt, int col, int64_t id,
                                 mcp_store_listener_settings_t *out);

/* The columns mcp__store_settings_from_row() reads, in its order, for SELECTs on listeners. */
#define MCP__STORE_SETTINGS_COLUMNS                                                                \
  "max_connections, proxy_protocol, fallback, rate_limit_count, rate_limit_period_ms,"             \
  " max_connections_per_client"

#endif
