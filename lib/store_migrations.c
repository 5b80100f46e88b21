/*
 * store_migrations: the SQL of the store's numbered schema migrations (applied by lib/store.c;
 * docs/ARCHITECTURE.md, "Store").
 */
#include "mcproxy/store.h"
#include "store_internal.h"

/*
 * Numbered schema migrations, applied in order. A migration, once released, never changes:
 * databases in the field were built by it. New schema goes into a new entry.
 */
const char *const mcp__store_migrations[MCP_STORE_SCHEMA_VERSION] = {
    /* 1: listeners and their routes. */
    "CREATE TABLE listeners ("
    "  id INTEGER PRIMARY KEY,"
    "  addr TEXT NOT NULL UNIQUE"
    ");"
    "CREATE TABLE routes ("
    "  id INTEGER PRIMARY KEY,"
    "  listener_id INTEGER NOT NULL REFERENCES listeners(id) ON DELETE CASCADE,"
    "  hostname TEXT NOT NULL,"
    "  backend TEXT NOT NULL,"
    "  UNIQUE(listener_id, hostname)"
    ");",
    /* 2: the global firewall. */
    "CREATE TABLE firewall_rules ("
    "  id INTEGER PRIMARY KEY,"
    "  type TEXT NOT NULL CHECK (type IN ('ip','cidr','country')),"
    "  value TEXT NOT NULL,"
    "  UNIQUE(type, value)"
    ");",
    /* 3: per-listener connection limits (0 means unlimited). */
    "ALTER TABLE listeners ADD COLUMN max_connections INTEGER NOT NULL DEFAULT 0"
    "  CHECK (max_connections >= 0);",
    /*
     * 4: the rest of a listener's settings, proxy_from as a child table (one row per CIDR, so
     * an entry is never parsed out of a text column), and a route's send_proxy (0 none, 1 v1,
     * 2 v2). Wildcard hostnames need no schema: they are stored as written ("*.example.com").
     */
    "ALTER TABLE listeners ADD COLUMN proxy_protocol INTEGER NOT NULL DEFAULT 0"
    "  CHECK (proxy_protocol IN (0, 1));"
    "ALTER TABLE listeners ADD COLUMN fallback TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE listeners ADD COLUMN rate_limit_count INTEGER NOT NULL DEFAULT 0"
    "  CHECK (rate_limit_count >= 0);"
    "ALTER TABLE listeners ADD COLUMN rate_limit_period_ms INTEGER NOT NULL DEFAULT 0"
    "  CHECK (rate_limit_period_ms >= 0);"
    "ALTER TABLE listeners ADD COLUMN max_connections_per_client INTEGER NOT NULL DEFAULT 0"
    "  CHECK (max_connections_per_client >= 0);"
    "CREATE TABLE listener_proxy_from ("
    "  id INTEGER PRIMARY KEY,"
    "  listener_id INTEGER NOT NULL REFERENCES listeners(id) ON DELETE CASCADE,"
    "  cidr TEXT NOT NULL,"
    "  UNIQUE(listener_id, cidr)"
    ");"
    "ALTER TABLE routes ADD COLUMN send_proxy INTEGER NOT NULL DEFAULT 0"
    "  CHECK (send_proxy IN (0, 1, 2));",
    /*
     * 5: how far an outside source of desired state has been applied (cluster mode: the etcd
     * revision of a key prefix), written in the same transaction as the data.
     */
    "CREATE TABLE sync_state ("
    "  source TEXT PRIMARY KEY,"
    "  revision INTEGER NOT NULL CHECK (revision >= 0)"
    ");",
};
