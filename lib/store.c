/*
 * store: SQLite persistence for listeners, routes, limits and firewall rules (the schema and
 * its migrations: docs/ARCHITECTURE.md, "Store").
 *
 * The listener settings (add, read, update, remove) live in lib/store_listeners.c and the
 * schema migrations in lib/store_migrations.c; the files share the handle through
 * lib/store_internal.h. This file is under 800 lines, over the ~600 guideline: the
 * prepared-statement table, the transaction wrappers and the operations that use them
 * belong together.
 *
 * One mcp_store_t owns one SQLite connection and the prepared statements that every operation
 * reuses (prepared once at open, reset and unbound after each use, finalised at close). The
 * handle is used by one thread at a time, so the connection is opened without SQLite's own
 * mutexes.
 *
 * Transactions: the mutations here are single SQL statements. When the caller has not opened a
 * transaction with mcp_store_begin(), the statement is wrapped in BEGIN IMMEDIATE..COMMIT so
 * the write lock is taken up front (waiting at most the busy timeout) and any failure rolls
 * everything back. Inside the caller's transaction, SQLite's statement journal undoes a failed
 * statement on its own, which keeps the promise that a failed mutation changes nothing.
 * Mutations of several statements (store_listeners.c) use mcp__store_write_begin/end, which
 * take a savepoint inside the caller's transaction for the same promise.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "mcproxy/store.h"
#include "store_internal.h"

#define MCP_STORE_DEFAULT_BUSY_MS 2000

/* The statements every handle prepares at open; the index names each one. */
enum store_stmt_e {
  STMT_BEGIN_IMMEDIATE,
  STMT_BEGIN_DEFERRED,
  STMT_COMMIT,
  STMT_ROLLBACK,
  STMT_SCHEMA_VERSION,
  STMT_IS_EMPTY,
  STMT_ROUTE_PUT,
  STMT_ROUTE_REMOVE,
  STMT_FW_ADD,
  STMT_FW_REMOVE,
  STMT_LOAD_LISTENERS,
  STMT_LOAD_ROUTES,
  STMT_LOAD_RULES,
  STMT_SNAPSHOT,
  STMT_COUNT
};

static const char *const store_stmt_sql[STMT_COUNT] = {
    [STMT_BEGIN_IMMEDIATE] = "BEGIN IMMEDIATE",
    [STMT_BEGIN_DEFERRED] = "BEGIN DEFERRED",
    [STMT_COMMIT] = "COMMIT",
    [STMT_ROLLBACK] = "ROLLBACK",
    [STMT_SCHEMA_VERSION] = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
    [STMT_IS_EMPTY] = "SELECT NOT EXISTS (SELECT 1 FROM listeners)"
                      " AND NOT EXISTS (SELECT 1 FROM firewall_rules)",
    /*
     * One statement resolves the listener and upserts the route, so an unknown listener shows as
     * zero changed rows. The SELECT must keep a WHERE clause: without one SQLite would read
     * ON CONFLICT as part of a join.
     */
    [STMT_ROUTE_PUT] =
        "INSERT INTO routes (listener_id, hostname, backend, send_proxy)"
        " SELECT id, ?2, ?3, ?4 FROM listeners WHERE addr = ?1"
        " ON CONFLICT (listener_id, hostname) DO UPDATE SET backend = excluded.backend,"
        " send_proxy = excluded.send_proxy",
    [STMT_ROUTE_REMOVE] = "DELETE FROM routes WHERE hostname = ?2"
                          " AND listener_id = (SELECT id FROM listeners WHERE addr = ?1)",
    [STMT_FW_ADD] = "INSERT OR IGNORE INTO firewall_rules (type, value) VALUES (?1, ?2)",
    [STMT_FW_REMOVE] = "DELETE FROM firewall_rules WHERE type = ?1 AND value = ?2",
    [STMT_LOAD_LISTENERS] =
        "SELECT addr, id, " MCP__STORE_SETTINGS_COLUMNS " FROM listeners ORDER BY addr",
    [STMT_LOAD_ROUTES] = "SELECT l.addr, r.hostname, r.backend, r.send_proxy FROM routes r"
                         " JOIN listeners l ON l.id = r.listener_id ORDER BY l.addr, r.hostname",
    /* Rules come in the order of mcp_firewall_type_t (ip, cidr, country), like
       mcp_firewall_foreach. */
    [STMT_LOAD_RULES] = "SELECT type, value FROM firewall_rules ORDER BY"
                        " CASE type WHEN 'ip' THEN 1 WHEN 'cidr' THEN 2 ELSE 3 END, value",
    [STMT_SNAPSHOT] = "VACUUM INTO ?1",
};

/*
 * A store handle. Allocated by mcp_store_open(), freed by mcp_store_close(); used by one thread
 * at a time.
 */
struct mcp_store_s {
  sqlite3 *db;
  char *path;
  /* Set between mcp_store_begin() and mcp_store_commit()/mcp_store_rollback(). */
  int explicit_tx;
  sqlite3_stmt *stmt[STMT_COUNT];
  char errmsg[512];
};

static void store_set_err(mcp_store_t *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void store_set_err(mcp_store_t *st, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(st->errmsg, sizeof(st->errmsg), fmt, ap);
  va_end(ap);
}

/* Maps a failed SQLite result code (plain or extended) to an MCP_E* code. */
static int store_map_rc(int rc)
{
  switch (rc & 0xff) {
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    return MCP_EBUSY;
  case SQLITE_NOMEM:
    return MCP_ENOMEM;
  default:
    return MCP_EIO;
  }
}

/* Records SQLite's message for a failed step; call before anything else touches the handle. */
static int store_fail(mcp_store_t *st, int rc, const char *what)
{
  store_set_err(st, "%s: %s", what, sqlite3_errmsg(st->db));
  return store_map_rc(rc);
}

/*
 * Steps a statement whose rows are not needed, then resets it and clears its bindings. On
 * failure, records SQLite's message under what (unless what is NULL) and returns an MCP_E*
 * code.
 */
static int store_exec_stmt(mcp_store_t *st, sqlite3_stmt *stmt, const char *what)
{
  int code = 0;
  int rc = sqlite3_step(stmt);
  while (rc == SQLITE_ROW)
    rc = sqlite3_step(stmt);
  if (rc != SQLITE_DONE)
    code = what ? store_fail(st, rc, what) : store_map_rc(rc);
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);
  return code;
}

/* Ends whatever transaction is open on the connection, keeping the current error message. */
static void store_rollback_quiet(mcp_store_t *st)
{
  if (!sqlite3_get_autocommit(st->db))
    store_exec_stmt(st, st->stmt[STMT_ROLLBACK], NULL);
}

/*
 * Runs one mutation statement (already bound) with the transaction rules described at the top
 * of the file. *changes receives the number of rows it changed. A unique-constraint failure
 * maps to unique_code; every other failure to EBUSY/EIO as store_map_rc() decides.
 */
static int store_mutate(mcp_store_t *st, sqlite3_stmt *stmt, const char *what, int unique_code,
                        int *changes)
{
  int own = 0;
  int rc;

  *changes = 0;
  st->errmsg[0] = '\0';
  if (st->explicit_tx) {
    /* SQLite ends a transaction by itself after some errors (I/O, disk full, ...). */
    if (sqlite3_get_autocommit(st->db)) {
      sqlite3_reset(stmt);
      sqlite3_clear_bindings(stmt);
      store_set_err(st, "%s: the transaction was rolled back after an earlier error", what);
      return MCP_EIO;
    }
  } else {
    int code = store_exec_stmt(st, st->stmt[STMT_BEGIN_IMMEDIATE], what);
    if (code != 0) {
      sqlite3_reset(stmt);
      sqlite3_clear_bindings(stmt);
      return code;
    }
    own = 1;
  }

  rc = sqlite3_step(stmt);
  if (rc == SQLITE_DONE) {
    *changes = sqlite3_changes(st->db);
  } else {
    int code = store_fail(st, rc, what);
    if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
      code = unique_code;
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    if (own)
      store_rollback_quiet(st);
    return code;
  }
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);

  if (own) {
    rc = sqlite3_step(st->stmt[STMT_COMMIT]);
    if (rc != SQLITE_DONE) {
      int code = store_fail(st, rc, what);
      sqlite3_reset(st->stmt[STMT_COMMIT]);
      store_rollback_quiet(st);
      *changes = 0;
      return code;
    }
    sqlite3_reset(st->stmt[STMT_COMMIT]);
  }
  return 0;
}

/* Reads the single integer a statement returns (schema version, emptiness). */
static int store_query_int(mcp_store_t *st, sqlite3_stmt *stmt, const char *what, int64_t *out)
{
  int rc = sqlite3_step(stmt);
  if (rc != SQLITE_ROW) {
    int code = store_fail(st, rc == SQLITE_DONE ? SQLITE_ERROR : rc, what);
    sqlite3_reset(stmt);
    return code;
  }
  *out = sqlite3_column_int64(stmt, 0);
  sqlite3_reset(stmt);
  return 0;
}

/* Runs a pragma that returns one text row and copies the value (e.g. the journal mode). */
static int store_pragma_text(sqlite3 *db, const char *sql, char *out, size_t outlen, int *rc_out)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
      const unsigned char *text = sqlite3_column_text(stmt, 0);
      snprintf(out, outlen, "%s", text ? (const char *)text : "");
      rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
      out[0] = '\0';
      rc = SQLITE_OK;
    }
  }
  sqlite3_finalize(stmt);
  *rc_out = rc;
  return rc == SQLITE_OK ? 0 : -1;
}

/* The highest applied migration, read directly (statements are not prepared yet at open). */
static int store_read_version(sqlite3 *db, int64_t *version, int *rc_out)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(db, store_stmt_sql[STMT_SCHEMA_VERSION], -1, &stmt, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
      *version = sqlite3_column_int64(stmt, 0);
      rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
      rc = SQLITE_ERROR;
    }
  }
  sqlite3_finalize(stmt);
  *rc_out = rc;
  return rc == SQLITE_OK ? 0 : -1;
}

/*
 * Applies migration number version in one BEGIN IMMEDIATE transaction together with its
 * schema_migrations row. The version is checked again under the write lock so that two
 * processes opening a new database at once do not both apply it.
 */
static int store_apply_migration(mcp_store_t *st, int version, char *err, size_t errlen)
{
  sqlite3 *db = st->db;
  sqlite3_stmt *ins = NULL;
  int64_t current = 0;
  int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  if (store_read_version(db, &current, &rc) != 0)
    goto fail;
  if (current >= version)
    return sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK ? 0 : MCP_EIO;

  rc = sqlite3_exec(db, mcp__store_migrations[version - 1], NULL, NULL, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  rc = sqlite3_prepare_v2(db, "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                          -1, &ins, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  sqlite3_bind_int(ins, 1, version);
  sqlite3_bind_int64(ins, 2, (sqlite3_int64)time(NULL));
  rc = sqlite3_step(ins);
  if (rc != SQLITE_DONE)
    goto fail;
  sqlite3_finalize(ins);
  ins = NULL;
  rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  return 0;

fail:
  snprintf(err, errlen, "%s: cannot apply schema migration %d: %s", st->path, version,
           sqlite3_errmsg(db));
  sqlite3_finalize(ins);
  if (!sqlite3_get_autocommit(db))
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  return store_map_rc(rc);
}

/* Connection settings: WAL (verified), foreign keys (verified), synchronous=FULL. */
static int store_configure(mcp_store_t *st, char *err, size_t errlen)
{
  char value[32];
  int rc;

  if (store_pragma_text(st->db, "PRAGMA journal_mode=WAL", value, sizeof(value), &rc) != 0)
    goto fail;
  if (strcmp(value, "wal") != 0) {
    snprintf(err, errlen, "%s: cannot turn on WAL (journal mode is \"%s\")", st->path, value);
    return MCP_EIO;
  }
  rc = sqlite3_exec(st->db, "PRAGMA foreign_keys=ON; PRAGMA synchronous=FULL", NULL, NULL, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  if (store_pragma_text(st->db, "PRAGMA foreign_keys", value, sizeof(value), &rc) != 0)
    goto fail;
  if (strcmp(value, "1") != 0) {
    snprintf(err, errlen, "%s: this SQLite cannot enforce foreign keys", st->path);
    return MCP_EIO;
  }
  return 0;

fail:
  snprintf(err, errlen, "%s: %s", st->path, sqlite3_errmsg(st->db));
  return store_map_rc(rc);
}

/* Creates schema_migrations, refuses a newer schema, and applies what is missing. */
static int store_migrate(mcp_store_t *st, char *err, size_t errlen)
{
  int64_t version = 0;
  int rc = sqlite3_exec(st->db,
                        "CREATE TABLE IF NOT EXISTS schema_migrations ("
                        " version INTEGER PRIMARY KEY,"
                        " applied_at INTEGER NOT NULL)",
                        NULL, NULL, NULL);
  if (rc != SQLITE_OK || store_read_version(st->db, &version, &rc) != 0) {
    snprintf(err, errlen, "%s: %s", st->path, sqlite3_errmsg(st->db));
    return store_map_rc(rc);
  }
  if (version > MCP_STORE_SCHEMA_VERSION) {
    snprintf(err, errlen,
             "%s: database schema version %lld, this mc-proxy knows up to %d; upgrade mc-proxy",
             st->path, (long long)version, MCP_STORE_SCHEMA_VERSION);
    return MCP_ENEWER;
  }
  for (int v = (int)version + 1; v <= MCP_STORE_SCHEMA_VERSION; v++) {
    int code = store_apply_migration(st, v, err, errlen);
    if (code != 0)
      return code;
  }
  return 0;
}

static int store_prepare_all(mcp_store_t *st, char *err, size_t errlen)
{
  for (int i = 0; i < STMT_COUNT; i++) {
    int rc = sqlite3_prepare_v3(st->db, store_stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                &st->stmt[i], NULL);
    if (rc != SQLITE_OK) {
      snprintf(err, errlen, "%s: cannot prepare statement %d: %s", st->path, i,
               sqlite3_errmsg(st->db));
      return store_map_rc(rc);
    }
  }
  return 0;
}

void mcp_store_close(mcp_store_t *st)
{
  if (st == NULL)
    return;
  for (int i = 0; i < STMT_COUNT; i++)
    sqlite3_finalize(st->stmt[i]);
  /* Closing with a transaction open rolls it back, which is what an abandoned one deserves. */
  sqlite3_close(st->db);
  free(st->path);
  free(st);
}

int mcp_store_open(const char *path, int busy_timeout_ms, mcp_store_t **out, char *err,
                   size_t errlen)
{
  mcp_store_t *st;
  int code;
  int rc;

  if (errlen > 0)
    err[0] = '\0';
  *out = NULL;
  if (path == NULL || path[0] == '\0') {
    snprintf(err, errlen, "no database path given");
    return MCP_EINVAL;
  }
  st = calloc(1, sizeof(*st));
  if (st == NULL)
    goto fail_alloc;
  st->path = strdup(path);
  if (st->path == NULL)
    goto fail_alloc;

  rc = sqlite3_open_v2(path, &st->db,
                       SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "%s: cannot open database: %s", path,
             st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
    code = rc == SQLITE_NOMEM ? MCP_ENOMEM : MCP_EIO;
    goto fail;
  }
  sqlite3_extended_result_codes(st->db, 1);
  sqlite3_busy_timeout(st->db, busy_timeout_ms > 0 ? busy_timeout_ms : MCP_STORE_DEFAULT_BUSY_MS);

  code = store_configure(st, err, errlen);
  if (code != 0)
    goto fail;
  code = store_migrate(st, err, errlen);
  if (code != 0)
    goto fail;
  code = store_prepare_all(st, err, errlen);
  if (code != 0)
    goto fail;
  *out = st;
  return 0;

fail_alloc:
  snprintf(err, errlen, "%s: out of memory", path);
  code = MCP_ENOMEM;
fail:
  mcp_store_close(st);
  return code;
}

const char *mcp_store_errmsg(const mcp_store_t *st)
{
  return st ? st->errmsg : "";
}

int mcp_store_schema_version(mcp_store_t *st, int *version)
{
  int64_t v = 0;
  int code = store_query_int(st, st->stmt[STMT_SCHEMA_VERSION], "reading the schema version", &v);
  if (code == 0)
    *version = (int)v;
  return code;
}

int mcp_store_is_empty(mcp_store_t *st, int *empty)
{
  int64_t v = 0;
  int code = store_query_int(st, st->stmt[STMT_IS_EMPTY], "checking for an empty database", &v);
  if (code == 0)
    *empty = v ? 1 : 0;
  return code;
}

int mcp_store_begin(mcp_store_t *st)
{
  int code;

  st->errmsg[0] = '\0';
  if (st->explicit_tx) {
    store_set_err(st, "begin: a transaction is already open");
    return MCP_EIO;
  }
  code = store_exec_stmt(st, st->stmt[STMT_BEGIN_IMMEDIATE], "begin");
  if (code != 0)
    return code;
  st->explicit_tx = 1;
  return 0;
}

int mcp_store_commit(mcp_store_t *st)
{
  int rc;

  st->errmsg[0] = '\0';
  if (!st->explicit_tx) {
    store_set_err(st, "commit: no transaction is open");
    return MCP_EIO;
  }
  st->explicit_tx = 0;
  if (sqlite3_get_autocommit(st->db)) {
    store_set_err(st, "commit: the transaction was rolled back after an earlier error");
    return MCP_EIO;
  }
  rc = sqlite3_step(st->stmt[STMT_COMMIT]);
  if (rc != SQLITE_DONE) {
    int code = store_fail(st, rc, "commit");
    sqlite3_reset(st->stmt[STMT_COMMIT]);
    /* A failed COMMIT leaves the transaction open; end it so that nothing is half-written. */
    store_rollback_quiet(st);
    return code;
  }
  sqlite3_reset(st->stmt[STMT_COMMIT]);
  return 0;
}

void mcp_store_rollback(mcp_store_t *st)
{
  st->explicit_tx = 0;
  store_rollback_quiet(st);
}

int mcp_store_route_put(mcp_store_t *st, const char *listener_addr, const char *hostname,
                        const char *backend)
{
  return mcp_store_route_put_ex(st, listener_addr, hostname, backend, MCP_SEND_PROXY_NONE);
}

int mcp_store_route_put_ex(mcp_store_t *st, const char *listener_addr, const char *hostname,
                           const char *backend, mcp_send_proxy_t send_proxy)
{
  sqlite3_stmt *stmt = st->stmt[STMT_ROUTE_PUT];
  int changes;
  int code;

  if (listener_addr == NULL || hostname == NULL || backend == NULL ||
      mcp_send_proxy_name(send_proxy) == NULL) {
    store_set_err(st, "missing or invalid argument");
    return MCP_EINVAL;
  }
  sqlite3_bind_text(stmt, 1, listener_addr, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(stmt, 2, hostname, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(stmt, 3, backend, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(stmt, 4, (int)send_proxy);
  code = store_mutate(st, stmt, "putting route", MCP_EIO, &changes);
  if (code == 0 && changes == 0) {
    store_set_err(st, "no listener %s", listener_addr);
    return MCP_ENOENT;
  }
  return code;
}

int mcp_store_route_remove(mcp_store_t *st, const char *listener_addr, const char *hostname)
{
  sqlite3_stmt *stmt = st->stmt[STMT_ROUTE_REMOVE];
  int changes;
  int code;

  if (listener_addr == NULL || hostname == NULL) {
    store_set_err(st, "missing argument");
    return MCP_EINVAL;
  }
  sqlite3_bind_text(stmt, 1, listener_addr, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(stmt, 2, hostname, -1, SQLITE_TRANSIENT);
  code = store_mutate(st, stmt, "removing route", MCP_EIO, &changes);
  if (code == 0 && changes == 0) {
    store_set_err(st, "no route %s on listener %s", hostname, listener_addr);
    return MCP_ENOENT;
  }
  return code;
}

/* Runs a firewall rule statement (type, value). Returns its store_mutate code, or MCP_EINVAL. */
static int rule_mutate(mcp_store_t *st, int which, mcp_firewall_type_t type, const char *value,
                       const char *what, int *changes)
{
  sqlite3_stmt *stmt = st->stmt[which];
  const char *name = mcp_firewall_type_name(type);
  if (name == NULL || value == NULL) {
    store_set_err(st, "%s: invalid rule type %d", what, (int)type);
    return MCP_EINVAL;
  }
  sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
  sqlite3_bind_text(stmt, 2, value, -1, SQLITE_TRANSIENT);
  return store_mutate(st, stmt, what, MCP_EIO, changes);
}

int mcp_store_firewall_add(mcp_store_t *st, mcp_firewall_type_t type, const char *value)
{
  int changes;
  int code = rule_mutate(st, STMT_FW_ADD, type, value, "adding firewall rule", &changes);
  (void)changes; /* none when the rule was already there: adding is idempotent */
  return code;
}

int mcp_store_firewall_remove(mcp_store_t *st, mcp_firewall_type_t type, const char *value)
{
  int changes;
  int code = rule_mutate(st, STMT_FW_REMOVE, type, value, "removing firewall rule", &changes);
  if (code == 0 && changes == 0) {
    store_set_err(st, "no firewall rule %s %s", mcp_firewall_type_name(type), value);
    return MCP_ENOENT;
  }
  return code;
}

/* Text column that may not be NULL (the schema says NOT NULL; a damaged file could differ). */
static const char *store_col_text(sqlite3_stmt *stmt, int col)
{
  const unsigned char *text = sqlite3_column_text(stmt, col);
  return text ? (const char *)text : "";
}

/*
 * Steps one load query to the end, handing each row to the visitor. Returns 0 when all rows
 * were seen, the callback's non-zero value when it stopped the walk, or an MCP_E* code.
 */
static int store_walk(mcp_store_t *st, int which, const mcp_store_visitor_ex_t *v, void *data)
{
  sqlite3_stmt *stmt = st->stmt[which];
  int ret = 0;
  int rc;

  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    if (which == STMT_LOAD_LISTENERS) {
      if (v->listener) {
        mcp_store_listener_settings_t ls;
        ret = mcp__store_settings_from_row(st, stmt, 2, sqlite3_column_int64(stmt, 1), &ls);
        if (ret == 0)
          ret = v->listener(data, store_col_text(stmt, 0), &ls);
        mcp_store_listener_settings_free(&ls);
      }
    } else if (which == STMT_LOAD_ROUTES) {
      if (v->route)
        ret = v->route(data, store_col_text(stmt, 0), store_col_text(stmt, 1),
                       store_col_text(stmt, 2), (mcp_send_proxy_t)sqlite3_column_int(stmt, 3));
    } else if (v->rule) {
      mcp_firewall_type_t type;
      if (mcp_firewall_type_parse((const char *)sqlite3_column_text(stmt, 0), &type) != 0) {
        store_set_err(st, "loading: firewall rule with unknown type");
        ret = MCP_EIO;
      } else {
        ret = v->rule(data, type, store_col_text(stmt, 1));
      }
    }
    if (ret != 0)
      break;
  }
  if (ret == 0 && rc != SQLITE_DONE)
    ret = store_fail(st, rc, "loading");
  sqlite3_reset(stmt);
  return ret;
}

int mcp_store_load_ex(mcp_store_t *st, const mcp_store_visitor_ex_t *visitor, void *data)
{
  static const mcp_store_visitor_ex_t none = {NULL, NULL, NULL};
  int own = 0;
  int ret;

  st->errmsg[0] = '\0';
  if (visitor == NULL)
    visitor = &none;
  if (st->explicit_tx) {
    if (sqlite3_get_autocommit(st->db)) {
      store_set_err(st, "loading: the transaction was rolled back after an earlier error");
      return MCP_EIO;
    }
  } else {
    /* One read transaction: in WAL mode the three queries see the same snapshot. */
    ret = store_exec_stmt(st, st->stmt[STMT_BEGIN_DEFERRED], "loading");
    if (ret != 0)
      return ret;
    own = 1;
  }

  ret = store_walk(st, STMT_LOAD_LISTENERS, visitor, data);
  if (ret == 0)
    ret = store_walk(st, STMT_LOAD_ROUTES, visitor, data);
  if (ret == 0)
    ret = store_walk(st, STMT_LOAD_RULES, visitor, data);

  if (own) {
    /* Nothing was written, so ending the read transaction either way is the same. */
    if (ret == 0) {
      ret = store_exec_stmt(st, st->stmt[STMT_COMMIT], "loading");
      if (ret != 0)
        store_rollback_quiet(st);
    } else {
      store_rollback_quiet(st);
    }
  }
  return ret;
}

int mcp_store_snapshot(mcp_store_t *st, const char *out_path)
{
  sqlite3_stmt *stmt = st->stmt[STMT_SNAPSHOT];
  int code;
  int fd;

  st->errmsg[0] = '\0';
  if (out_path == NULL || out_path[0] == '\0')
    return MCP_EINVAL;
  if (st->explicit_tx) {
    store_set_err(st, "snapshot: cannot run inside a transaction");
    return MCP_EIO;
  }
  /*
   * Claim the name atomically: O_EXCL refuses an existing file (or a symlink, dangling or not),
   * and VACUUM INTO accepts an empty file. A backup holds every route, so it is private.
   */
  fd = open(out_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    int e = errno;
    store_set_err(st, "snapshot: %s: %s", out_path, strerror(e));
    return e == EEXIST ? MCP_EEXIST : MCP_EIO;
  }
  close(fd);

  sqlite3_bind_text(stmt, 1, out_path, -1, SQLITE_TRANSIENT);
  code = store_exec_stmt(st, stmt, "snapshot");
  if (code != 0) {
    /* The file is ours (created above); do not leave a partial copy behind. */
    unlink(out_path);
    return code;
  }
  return 0;
}

/* ---- shared with lib/store_listeners.c (store_internal.h) ------------------------------- */

sqlite3 *mcp__store_db(mcp_store_t *st)
{
  return st->db;
}

void mcp__store_errf(mcp_store_t *st, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(st->errmsg, sizeof(st->errmsg), fmt, ap);
  va_end(ap);
}

int mcp__store_sqlfail(mcp_store_t *st, int rc, const char *what)
{
  return store_fail(st, rc, what);
}

int mcp__store_write_begin(mcp_store_t *st, const char *what)
{
  int rc;

  st->errmsg[0] = '\0';
  if (st->explicit_tx) {
    /* SQLite ends a transaction by itself after some errors (I/O, disk full, ...). */
    if (sqlite3_get_autocommit(st->db)) {
      store_set_err(st, "%s: the transaction was rolled back after an earlier error", what);
      return MCP_EIO;
    }
    rc = sqlite3_exec(st->db, "SAVEPOINT mcp_write", NULL, NULL, NULL);
  } else {
    rc = sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  }
  return rc == SQLITE_OK ? 0 : store_fail(st, rc, what);
}

int mcp__store_write_end(mcp_store_t *st, int code, const char *what)
{
  int rc;

  if (code == 0) {
    rc = sqlite3_exec(st->db, st->explicit_tx ? "RELEASE mcp_write" : "COMMIT", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
      return 0;
    code = store_fail(st, rc, what);
  }
  /* Undo, keeping the message of the failure. */
  if (st->explicit_tx) {
    if (!sqlite3_get_autocommit(st->db))
      sqlite3_exec(st->db, "ROLLBACK TO mcp_write; RELEASE mcp_write", NULL, NULL, NULL);
  } else {
    store_rollback_quiet(st);
  }
  return code;
}
