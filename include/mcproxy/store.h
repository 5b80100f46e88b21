/*
 * store: the SQLite database that persists listeners, routes, limits and firewall rules.
 *
 * mcp_store_open() creates the file if needed, turns on WAL with synchronous = FULL (an
 * acknowledged write survives power loss), foreign keys and a busy timeout,
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
#include "mcproxy/routes.h"

/* Signals: libmcproxy never installs a signal handler or changes a signal mask. It writes to
 * sockets with send(2) (MSG_NOSIGNAL) and splice(2), and splice raises SIGPIPE when a peer has
 * gone, so a program that runs listeners must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) before
 * it starts one. */
#ifdef __cplusplus
extern "C" {
#endif

/* The newest schema version this build knows. */
#define MCP_STORE_SCHEMA_VERSION 5

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

/*
 * A listener's settings (docs/ARCHITECTURE.md, "Store"). All zero
 * (mcp_store_listener_settings_init) is the default: no limits, proxy_protocol off, no proxy_from,
 * no fallback.
 */
typedef struct mcp_store_listener_settings_s {
  int64_t max_connections;       /* >= 0; 0 = unlimited */
  int proxy_protocol;            /* 0 off, 1 on (then proxy_from must not be empty) */
  const char *const *proxy_from; /* proxy_from_count CIDR strings, stored as given */
  size_t proxy_from_count;
  const char *fallback;               /* backend text; NULL or "" = none */
  int64_t rate_limit_count;           /* >= 0; 0 = off */
  int64_t rate_limit_period_ms;       /* >= 0 */
  int64_t max_connections_per_client; /* >= 0; 0 = unlimited */
  void *storage_;                     /* set by the store when it filled the struct; else NULL */
} mcp_store_listener_settings_t;

/* Which fields mcp_store_listener_update() writes (the others keep their stored values). */
enum {
  MCP_STORE_LS_MAX_CONNECTIONS = 1u << 0,
  MCP_STORE_LS_PROXY_PROTOCOL = 1u << 1,
  MCP_STORE_LS_PROXY_FROM = 1u << 2, /* replaces the whole list */
  MCP_STORE_LS_FALLBACK = 1u << 3,
  MCP_STORE_LS_RATE_LIMIT_COUNT = 1u << 4,
  MCP_STORE_LS_RATE_LIMIT_PERIOD_MS = 1u << 5,
  MCP_STORE_LS_MAX_CONNECTIONS_PER_CLIENT = 1u << 6,
  MCP_STORE_LS_ALL = (1u << 7) - 1
};

/* Zeroes *s (the defaults). */
void mcp_store_listener_settings_init(mcp_store_listener_settings_t *s);
/* Frees what the store allocated for a struct it filled, and zeroes it. NULL is ok. */
void mcp_store_listener_settings_free(mcp_store_listener_settings_t *s);

/*
 * Adds a listener with its settings (NULL: the defaults), proxy_from included, in one
 * transaction. MCP_EEXIST if addr exists, MCP_ERANGE for a negative number, MCP_EINVAL for a
 * NULL string, proxy_protocol not 0/1, proxy_protocol on with no proxy_from, or the same
 * proxy_from entry twice. On any error nothing is written.
 */
int mcp_store_listener_add_settings(mcp_store_t *st, const char *addr,
                                    const mcp_store_listener_settings_t *s);
/* Adds a listener with max_connections and the other settings at their defaults. */
int mcp_store_listener_add(mcp_store_t *st, const char *addr, int64_t max_connections);

/*
 * Reads a listener's settings into *out (free with mcp_store_listener_settings_free; proxy_from
 * in text order). MCP_ENOENT for an unknown listener (*out zeroed).
 */
int mcp_store_listener_get(mcp_store_t *st, const char *addr, mcp_store_listener_settings_t *out);

/*
 * Writes the fields of s named in mask, in one transaction. Errors as for
 * mcp_store_listener_add_settings (checked on the result: turning proxy_protocol on needs a
 * stored or given proxy_from), and MCP_ENOENT for an unknown listener; on error nothing changes.
 */
int mcp_store_listener_update(mcp_store_t *st, const char *addr,
                              const mcp_store_listener_settings_t *s, unsigned mask);
/* mcp_store_listener_update() with every field (MCP_STORE_LS_ALL). */
int mcp_store_listener_set_settings(mcp_store_t *st, const char *addr,
                                    const mcp_store_listener_settings_t *s);
/* MCP_ENOENT for an unknown listener, MCP_ERANGE for a negative limit. */
int mcp_store_listener_set_max_connections(mcp_store_t *st, const char *addr,
                                           int64_t max_connections);

/* Removes a listener; its routes and proxy_from entries go with it. MCP_ENOENT if unknown. */
int mcp_store_listener_remove(mcp_store_t *st, const char *addr);

/*
 * Upsert (hostname stored as written, wildcards "*.example.com" included) with send_proxy.
 * MCP_ENOENT for an unknown listener, MCP_EINVAL for a send_proxy outside the enum.
 */
int mcp_store_route_put_ex(mcp_store_t *st, const char *listener_addr, const char *hostname,
                           const char *backend, mcp_send_proxy_t send_proxy);
/* mcp_store_route_put_ex() with MCP_SEND_PROXY_NONE. */
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
 * mcp_store_load() with every listener setting and each route's send_proxy. The settings'
 * storage belongs to the store and lasts only for the call.
 */
typedef struct mcp_store_visitor_ex_s {
  int (*listener)(void *data, const char *addr, const mcp_store_listener_settings_t *s);
  int (*route)(void *data, const char *listener_addr, const char *hostname, const char *backend,
               mcp_send_proxy_t send_proxy);
  int (*rule)(void *data, mcp_firewall_type_t type, const char *value);
} mcp_store_visitor_ex_t;
int mcp_store_load_ex(mcp_store_t *st, const mcp_store_visitor_ex_t *visitor, void *data);

/*
 * Sync state (lib/store_sync.c): how far an outside source of desired state (cluster mode names
 * it "etcd:" + its key prefix) has been applied. Write it in the same transaction as the changes
 * it describes, so the database never claims a revision whose data it lacks.
 */
/* The revision recorded for source, or 0 in *revision when there is none. */
int mcp_store_sync_revision(mcp_store_t *st, const char *source, int64_t *revision);
/* Records revision for source (replacing any earlier one). */
int mcp_store_set_sync_revision(mcp_store_t *st, const char *source, int64_t revision);
/* Drops every recorded revision: the database is changed from elsewhere from now on. */
int mcp_store_sync_forget(mcp_store_t *st);
/*
 * Deletes every listener (its routes and settings with it) and every firewall rule: the first
 * step of replacing the whole state inside the caller's transaction. Sync revisions stay.
 */
int mcp_store_clear(mcp_store_t *st);

/*
 * Writes a consistent copy of the database to out_path with VACUUM INTO (safe while another
 * process writes). Fails with MCP_EEXIST if out_path exists.
 */
int mcp_store_snapshot(mcp_store_t *st, const char *out_path);

#ifdef __cplusplus
}
#endif

#endif
