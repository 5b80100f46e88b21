/*
 * Unit tests for the store: real SQLite files in a fresh temporary directory per test, and a
 * second raw sqlite3 connection where a test needs another process's view (locks, WAL readers).
 *
 * The test includes lib/store.c so it can reach the handle's own connection (to check its
 * pragmas and to provoke failures on it); the library's copy of the store is then not used.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../lib/store.c"

/* The store's predicates, asserting that the query itself succeeds. */
static int schema_version(mcp_store_t *st)
{
  int v = -1;
  assert_int_equal(mcp_store_schema_version(st, &v), 0);
  return v;
}

static int store_empty(mcp_store_t *st)
{
  int e = -1;
  assert_int_equal(mcp_store_is_empty(st, &e), 0);
  return e;
}

typedef struct test_ctx_s {
  char dir[64];
  char db[128];
  mcp_store_t *st;
} test_ctx_t;

static int setup(void **state)
{
  test_ctx_t *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return -1;
  snprintf(t->dir, sizeof(t->dir), "/tmp/mcp-store-test-XXXXXX");
  if (mkdtemp(t->dir) == NULL) {
    free(t);
    return -1;
  }
  snprintf(t->db, sizeof(t->db), "%s/mc-proxy.db", t->dir);
  *state = t;
  return 0;
}

/* Removes every file in the test directory (db, -wal, -shm, snapshots), then the directory. */
static int teardown(void **state)
{
  test_ctx_t *t = *state;
  DIR *d;
  struct dirent *e;
  int ret = 0;

  mcp_store_close(t->st);
  d = opendir(t->dir);
  if (d != NULL) {
    while ((e = readdir(d)) != NULL) {
      char p[512];
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
        continue;
      snprintf(p, sizeof(p), "%s/%s", t->dir, e->d_name);
      if (unlink(p) != 0)
        ret = -1;
    }
    closedir(d);
  }
  if (rmdir(t->dir) != 0)
    ret = -1;
  free(t);
  return ret;
}

/* Opens the test database with the default busy timeout, asserting success. */
static mcp_store_t *open_ok(test_ctx_t *t)
{
  char err[256] = "x";
  mcp_store_t *st = NULL;
  int rc = mcp_store_open(t->db, 0, &st, err, sizeof(err));
  if (rc != 0)
    print_error("open failed: %s\n", err);
  assert_int_equal(rc, 0);
  assert_non_null(st);
  assert_string_equal(mcp_store_errmsg(st), "");
  return st;
}

static sqlite3 *raw_open(const char *path)
{
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
                   SQLITE_OK);
  return db;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
  char *msg = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
  if (rc != SQLITE_OK)
    print_error("%s: %s\n", sql, msg ? msg : "?");
  sqlite3_free(msg);
  assert_int_equal(rc, SQLITE_OK);
}

static int64_t raw_int(sqlite3 *db, const char *sql)
{
  sqlite3_stmt *stmt = NULL;
  int64_t v;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
  v = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  return v;
}

static void raw_text(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
  sqlite3_stmt *stmt = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
  snprintf(out, outlen, "%s", (const char *)sqlite3_column_text(stmt, 0));
  sqlite3_finalize(stmt);
}

/* A visitor that writes every callback as one line into a buffer. */
typedef struct dump_s {
  char buf[4096];
  size_t len;
  int stop_after; /* stop (returning 42) at this callback number; 0 never */
  int calls;
} dump_t;

static int dump_add(dump_t *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int dump_add(dump_t *d, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(d->buf + d->len, sizeof(d->buf) - d->len, fmt, ap);
  va_end(ap);
  assert_true(n > 0 && (size_t)n < sizeof(d->buf) - d->len);
  d->len += (size_t)n;
  d->calls++;
  return d->stop_after != 0 && d->calls == d->stop_after ? 42 : 0;
}

static int dump_listener(void *data, const char *addr, int64_t max)
{
  return dump_add(data, "L %s %lld\n", addr, (long long)max);
}

static int dump_route(void *data, const char *l, const char *h, const char *b)
{
  return dump_add(data, "R %s %s %s\n", l, h, b);
}

static int dump_rule(void *data, mcp_firewall_type_t type, const char *value)
{
  return dump_add(data, "F %d %s\n", (int)type, value);
}

static const mcp_store_visitor_t dump_visitor = {dump_listener, dump_route, dump_rule};

/* Loads everything into d (zeroed first) and asserts the walk succeeded. */
static void dump(mcp_store_t *st, dump_t *d)
{
  memset(d, 0, sizeof(*d));
  assert_int_equal(mcp_store_load(st, &dump_visitor, d), 0);
}

static double now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* ---- open and migrations ---- */

static void fresh_open_creates_current_schema_in_wal_mode(void **state)
{
  test_ctx_t *t = *state;
  int64_t before = (int64_t)time(NULL);
  t->st = open_ok(t);
  int64_t after = (int64_t)time(NULL);
  assert_int_equal(schema_version(t->st), MCP_STORE_SCHEMA_VERSION);
  assert_int_equal(store_empty(t->st), 1);

  /* The store's own connection enforces foreign keys, syncs fully, and waits for locks. */
  assert_int_equal(raw_int(t->st->db, "PRAGMA foreign_keys"), 1);
  assert_int_equal(raw_int(t->st->db, "PRAGMA synchronous"), 2); /* 2 = FULL */
  assert_int_equal(raw_int(t->st->db, "PRAGMA busy_timeout"), 2000);

  sqlite3 *raw = raw_open(t->db);
  char mode[16];
  raw_text(raw, "PRAGMA journal_mode", mode, sizeof(mode));
  assert_string_equal(mode, "wal");
  assert_int_equal(raw_int(raw, "SELECT COUNT(*) FROM schema_migrations"), MCP_STORE_SCHEMA_VERSION);
  assert_int_equal(raw_int(raw, "SELECT group_concat(version) = '1,2,3,4,5' FROM"
                                " (SELECT version FROM schema_migrations ORDER BY version)"),
                   1);
  assert_true(raw_int(raw, "SELECT MIN(applied_at) FROM schema_migrations") >= before);
  assert_true(raw_int(raw, "SELECT MAX(applied_at) FROM schema_migrations") <= after);
  assert_int_equal(raw_int(raw, "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND"
                                " name IN ('listeners', 'routes', 'firewall_rules')"),
                   3);
  assert_int_equal(
      raw_int(raw, "SELECT COUNT(*) FROM pragma_table_info('listeners')"
                   " WHERE name = 'max_connections' AND \"notnull\" = 1 AND dflt_value = '0'"),
      1);
  sqlite3_close(raw);
}

static void reopen_is_a_no_op(void **state)
{
  test_ctx_t *t = *state;
  t->st = open_ok(t);
  assert_int_equal(mcp_store_listener_add(t->st, "0.0.0.0:25565", 7), 0);
  mcp_store_close(t->st);
  t->st = NULL;

  /* Mark the recorded migrations so a re-application (which would rewrite them) shows. */
  sqlite3 *raw = raw_open(t->db);
  raw_exec(raw, "UPDATE schema_migrations SET applied_at = 12345");
  sqlite3_close(raw);

  t->st = open_ok(t);
  assert_int_equal(schema_version(t->st), MCP_STORE_SCHEMA_VERSION);
  raw = raw_open(t->db);
  assert_int_equal(raw_int(raw, "SELECT COUNT(*) FROM schema_migrations"), MCP_STORE_SCHEMA_VERSION);
  assert_int_equal(raw_int(raw, "SELECT COUNT(*) FROM schema_migrations WHERE applied_at = 12345"),
                   MCP_STORE_SCHEMA_VERSION);
  sqlite3_close(raw);
  dump_t d;
  dump(t->st, &d);
  assert_string_equal(d.buf, "L 0.0.0.0:25565 7\n");
}

static void migrates_version_2_database_to_current(void **state)
{
  test_ctx_t *t = *state;

  /* A database exactly as a version-2 mc-proxy left it. */
  sqlite3 *raw = raw_open(t->db);
  raw_exec(raw, "PRAGMA journal_mode=WAL;"
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                " applied_at INTEGER NOT NULL);"
                "BEGIN IMMEDIATE;"
                "CREATE TABLE listeners (id INTEGER PRIMARY KEY, addr TEXT NOT NULL UNIQUE);"
                "CREATE TABLE routes (id INTEGER PRIMARY KEY,"
                " listener_id INTEGER NOT NULL REFERENCES listeners(id) ON DELETE CASCADE,"
                " hostname TEXT NOT NULL, backend TEXT NOT NULL, UNIQUE(listener_id, hostname));"
                "INSERT INTO schema_migrations VALUES (1, 1000);"
                "COMMIT;"
                "BEGIN IMMEDIATE;"
                "CREATE TABLE firewall_rules (id INTEGER PRIMARY KEY,"
                " type TEXT NOT NULL CHECK (type IN ('ip','cidr','country')),"
                " value TEXT NOT NULL, UNIQUE(type, value));"
                "INSERT INTO schema_migrations VALUES (2, 2000);"
                "COMMIT;"
                "INSERT INTO listeners (addr) VALUES ('[::]:25565');"
                "INSERT INTO routes (listener_id, hostname, backend)"
                " VALUES (1, 'mc.example.com', '10.0.0.5:25565');"
                "INSERT INTO firewall_rules (type, value) VALUES ('cidr', '192.0.2.0/24');");
  sqlite3_close(raw);

  t->st = open_ok(t);
  assert_int_equal(schema_version(t->st), MCP_STORE_SCHEMA_VERSION);
  dump_t d;
  dump(t->st, &d);
  assert_string_equal(d.buf, "L [::]:25565 0\n"
                             "R [::]:25565 mc.example.com 10.0.0.5:25565\n"
                             "F 2 192.0.2.0/24\n");

  raw = raw_open(t->db);
  /* Old migrations untouched, only 3 and 4 added. */
  assert_int_equal(raw_int(raw, "SELECT applied_at FROM schema_migrations WHERE version = 1"),
                   1000);
  assert_int_equal(raw_int(raw, "SELECT applied_at FROM schema_migrations WHERE version = 2"),
                   2000);
  assert_int_equal(raw_int(raw, "SELECT COUNT(*) FROM schema_migrations WHERE version = 3"), 1);
  assert_int_equal(raw_int(raw, "SELECT COUNT(*) FROM schema_migrations WHERE version = 4"), 1);
  /* 4's defaults on the existing rows: no proxy protocol, no fallback, no limits. */
  assert_int_equal(raw_int(raw, "SELECT proxy_protocol + rate_limit_count + rate_limit_period_ms"
                                " + max_connections_per_client + length(fallback) FROM listeners"),
                   0);
  assert_int_equal(raw_int(raw, "SELECT send_proxy FROM routes"), 0);
  assert_int_equal(raw_int(raw, "SELECT max_connections FROM listeners"), 0);
  /* The new column keeps its CHECK constraint. */
  assert_int_not_equal(
      sqlite3_exec(raw, "UPDATE listeners SET max_connections = -1", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(raw);
  assert_int_equal(mcp_store_listener_set_max_connections(t->st, "[::]:25565", 50), 0);
  dump(t->st, &d);
  assert_non_null(strstr(d.buf, "L [::]:25565 50\n"));
}

static void newer_database_is_refused(void **state)
{
  test_ctx_t *t = *state;
  t->st = open_ok(t);
  mcp_store_close(t->st);
  t->st = NULL;
  sqlite3 *raw = raw_open(t->db);
  raw_exec(raw, "INSERT INTO schema_migrations VALUES (99, 1)");
  sqlite3_close(raw);

  char err[512] = "";
  mcp_store_t *st = (mcp_store_t *)1;
  assert_int_equal(mcp_store_open(t->db, 0, &st, err, sizeof(err)), MCP_ENEWER);
  assert_null(st);
  assert_non_null(strstr(err, t->db));
  assert_non_null(strstr(err, "schema version 99"));
  char knows[32];
  snprintf(knows, sizeof(knows), "knows up to %d", MCP_STORE_SCHEMA_VERSION);
  assert_non_null(strstr(err, knows));
  assert_non_null(strstr(err, "upgrade mc-proxy"));

  /* Refusing wrote nothing. */
  raw = raw_open(t->db);
  assert_int_equal(raw_int(raw, "SELECT COUNT(*) FROM schema_migrations"),
                   MCP_STORE_SCHEMA_VERSION + 1);
  sqlite3_close(raw);
}

static void garbage_file_is_refused(void **state)
{
  test_ctx_t *t = *state;
  char junk[8192];
  for (size_t i = 0; i < sizeof(junk); i++)
    junk[i] = (char)('a' + i % 26);
  FILE *f = fopen(t->db, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(junk, 1, sizeof(junk), f), sizeof(junk));
  fclose(f);

  char err[512] = "";
  mcp_store_t *st = NULL;
  assert_int_equal(mcp_store_open(t->db, 0, &st, err, sizeof(err)), MCP_EIO);
  assert_null(st);
  assert_non_null(strstr(err, t->db));

  /* The file is left exactly as it was. */
  char back[sizeof(junk) + 1];
  f = fopen(t->db, "rb");
  assert_non_null(f);
  assert_int_equal(fread(back, 1, sizeof(back), f), sizeof(junk));
  fclose(f);
  assert_memory_equal(back, junk, sizeof(junk));
}

static void open_error_message_is_truncated_safely(void **state)
{
  test_ctx_t *t = *state;
  char path[160];
  snprintf(path, sizeof(path), "%s/no-such-dir/mc-proxy.db", t->dir);
  char err[16];
  memset(err, 'x', sizeof(err));
  mcp_store_t *st = NULL;
  assert_int_equal(mcp_store_open(path, 0, &st, err, sizeof(err)), MCP_EIO);
  assert_null(st);
  assert_int_equal(strlen(err), sizeof(err) - 1);
}

/* ---- mutations ---- */

static void listener_add_and_duplicate(void **state)
{
  test_ctx_t *t = *state;
  t->st = open_ok(t);
  assert_int_equal(mcp_store_listener_add(t->st, "127.0.0.1:25565", 0), 0);
  assert_int_equal(mcp_store_listener_add(t->st, "127.0.0.1:25565", 5), MCP_EEXIST);
  assert_non_null(strstr(mcp_store_errmsg(t->st), "127.0.0.1:25565"));
  assert_int_equal(mcp_store_listener_add(t->st, "127.0.0.1:25566", -1), MCP_ERANGE);
  assert_int_equal(mcp_store_listener_add(t->st, "127.0.0.1:25567", INT64_MAX), 0);
  dump_t d;
  dump(t->st, &d);
  assert_string_equal(d.buf, "L 127.0.0.1:25565 0\nL 127.0.0.1:25567 9223372036854775807\n");
  /* A failure leaves no transaction open behind it. */
  assert_int_equal(sqlite3_get_autocommit(t->st->db), 1);
}

static void route_put_upsert_and_remove(void **state)
{
  test_ctx_t *t = *state;
  dump_t d;
  t->st = open_ok(t);
  assert_int_equal(mcp_store_listener_add(t->st, "0.0.0.0:25565", 0), 0);
  assert_int_equal(mcp_store_route_put(t->st, "0.0.0.0:25565", "a.example", "10.0.0.1:25565"), 0);
  assert_int_equal(mcp_store_route_put(t->st, "0.0.0.0:25565", "a.example", "10.0.0.2:25565"), 0);
  /* Putting the same value again is still a success, not "not found". */
  assert_int_equal(mcp_store_route_put(t->st, "0.0.0.0:25565", "a.example", "10.0.0.2:25565"), 0);
  dump(t->st, &d);
  assert_string_equal(d.buf, "L 0.0.0.0:25565 0\nR 0.0.0.0:25565 a.example 10.0.0.2:25565\n");

  assert_int_equal(mcp_store_route_remove(t->st, "0.0.0.0:25565", "a.example"), 0);
  assert_int_equal(mcp_store_route_remove(t->st, "0.0.0.0:25565", "a.example"), MCP_ENOENT);
  assert_non_null(strstr(mcp_store_errmsg(t->st), "a.example"));
  assert_int_equal(mcp_store_route_remove(t->st, "0.0.0.0:1", "a.example"), MCP_ENOENT);
  dump(t->st, &d);
  assert_string_equal(d.buf, "L 0.0.0.0:25565 0\n");
}

static void route_for_unknown_listener_is_enoent(void **state)
{
  test_ctx_t *t = *state;
  t->st = open_ok(t);
  assert_int_equal(mcp_store_listener_add(t->st, "0.0.0.0:25565", 0), 0);
  assert_int_equal(mcp_store_route_put(t->st, "0.0.0.0:25566", "a.example", "10.0.0.1:1"),
                   MCP_ENOENT);
  assert_non_null(strstr(mcp_store_errmsg(t->st), "0.0.0.0:25566"));
  assert_int_equal(raw_int(t->st->db, "SELECT COUNT(*) FROM routes"), 0);
}

static void firewall_add_is_idempotent_and_remove(void **state)
{
  test_ctx_t *t = *state;
  t->st = open_ok(t);
  assert_int_equal(mcp_store_firewall_add(t->st, MCP_FIREWALL_IP, "192.0.2.1"), 0);
  assert_int_equal(mcp_store_firewall_add(t->st, MCP_FIREWALL_IP, "192.0.2.1"), 0);
  /* The same text under another type is another rule. */
  assert_int_equal(mcp_store_firewall_add(t->st, MCP_FIREWALL_COUNTRY, "192.0.2.1"), 0);
  assert_int_equal(raw_int(t->st->db, "SELECT COUNT(*) FROM firewall_rules"), 2);
  assert_int_equal(mcp_store_firewall_add(t->st, (mcp_firewall_type_t)9, "x"), MCP_EINVAL);

  assert_int_equal(mcp_store_firewall_remove(t->st, MCP_FIREWALL_IP, "192.0.2.1"), 0);
  assert_int_equal(mcp_store_firewall_remove(t->st, MCP_FIREWALL_IP, "192.0.2.1"), MCP_ENOENT);
  assert_int_equal(mcp_store_firewall_remove(t->st, MCP_FIREWALL_CIDR, "192.0.2.1"), MCP_ENOENT);
  assert_int_equal(mcp_store_firewall_remove(t->st, (mcp_firewall_type_t)0, "192.0.2.1"),
                   MCP_EINVAL);
  dump_t d;
  dump(t->st, &d);
  assert_string_equal(d.buf, "F 3 192.0.2.1\n");
}

static void listener_set_max_connections(void **state)
{
  test_ctx_t *t = *state;
  dump_t d;
  t->st = open_ok(t);
  assert_int_equal(mcp_store_listener_add(t->st, "0.0.0.0:25565", 10), 0);
  assert_int_equal(mcp_store_listener_set_max_connections(t->st, "0.0.0.0:25565", 200), 0);
  /* Setting the value it already has matched a row, so it is not "not found". */
  assert_int_equal(mcp_store_listener_set_max_connections(t->st, "0.0.0.0:25565", 200), 0);
  assert_int_equal(mcp_store_listener_set_max_connections(t->st, "0.0.0.0:1", 5), MCP_ENOENT);
  assert_int_equal(mcp_store_listener_set_max_connections(t->st, "0.0.0.0:25565", -3), MCP_ERANGE);
  dump(t->st, &d);
  assert_string_equal(d.buf, "L 0.0.0.0:25565 200\n");
}

/* ---- transactions ---- */

static void seeding_commits_in_one_transaction(void **state)
{
  test_ctx_t *t = *state;
  t->st = open_ok(t);
  sqlite3 *raw = raw_open(t->db);

  assert_int_equal(mcp_store_begin(t->st), 0);
  assert_int_equal(mcp_store_begin(t->st), MCP_EIO);
  assert_int_equal(mcp_store_listener_add(t->st, "0.0.0.0:25565", 3), 0);
  assert_int_equal(mcp_store_route_put(t->st, "0.0.0.0:25565", "a.example", "10.0.0.1:1"), 0);
  assert_int_equal(mcp_store_firewall_add(t->st, MCP_FIREWALL_CIDR, "198.51.100.0/24"), 0);
  /* A failed mutation inside the transaction undoes only itself. */
  assert_int_equal(mcp_store_listener_add(t->st, "0.0.0.0:25565", 0), MCP_EEXIST);
  assert_int_equal(mcp_store_route_put(t->st, "0.0.0.0:25565", "b.example", "10.0.0.2:1"), 0);
  /* The whole batch is invisible to other connections until it commits. */
  assert_int_equal(raw_int(raw, "SELECT COUNT(*) FROM listeners"), 0);
  /* Reads through the store see the open transaction. */
  assert_int_equal(store_empty(t->st), 0);
  dump_t d;
  dump(t->st, &d);
  assert_int_equal(d.calls, 4);
  assert_int_equal(mcp_store_commit(t->st), 0);
  assert_int_equal(mcp_store_commit(t->st), MCP_EIO);

  assert_int_equal(raw_int(raw, "SELECT COUNT(*) FROM listeners"), 1);
  assert_int_equal(raw_int(raw, "SELECT COUNT(*) FROM routes"), 2);
  assert_int_equal(raw_int(raw, "SELECT COUNT(*) FROM firewall_rules"), 1);
  sqlite3_close(raw);
}

static void seeding_rollback_leaves_nothing(void **state)
{
  test_ctx_t *t = *state;
  t->st = open_ok(t);
  assert_int_equal(mcp_store_begin(t->st), 0);
  assert_int_equal(mcp_store_listener_add(t->st, "0.0.0.0:25565", 3), 0);
  assert_int_equal(mcp_store_route_put(t->st, "0.0.0.0:25565", "a.example", "10.0.0.1:1"), 0);
  assert_int_equal(mcp_store_firewall_add(t->st, MCP_FIREWALL_IP, "203.0.113.9"), 0);
  mcp_store_rollback(t->st);
  assert_int_equal(store_empty(t->st), 1);
  assert_int_equal(raw_int(t->st->db, "SELECT COUNT(*) FROM routes"), 0);
  /* The handle works normally afterwards (each mutation in its own transaction again). */
  mcp_store_rollback(t->st);
  assert_int_equal(mcp_store_listener_add(t->st, "0.0.0.0:25565", 3), 0);
  assert_int_equal(store_empty(t->st), 0);
}

static void is_empty_before_and_after(void **state)
{
  test_ctx_t *t = *state;
  t->st = open_ok(t);
  assert_int_equal(store_empty(t->st), 1);
  assert_int_equal(mcp_store_firewall_add(t->st, MCP_FIREWALL_COUNTRY, "XX"), 0);
  assert_int_equal(store_empty(t->st), 0);
  assert_int_equal(mcp_store_firewall_remove(t->st, MCP_FIREWALL_COUNTRY, "XX"), 0);
  assert_int_equal(store_empty(t->st), 1);
  assert_int_equal(mcp_store_listener_add(t->st, "0.0.0.0:25565", 0), 0);
  assert_int_equal(store_empty(t->st), 0);
}

static void load_walks_in_documented_order(void **state)
{
  test_ctx_t *t = *state;
  t->st = open_ok(t);
  assert_int_equal(mcp_store_listener_add(t->st, "b:2", 2), 0);
  assert_int_equal(mcp_store_listener_add(t->st, "a:1", 1), 0);
  assert_int_equal(mcp_store_route_put(t->st, "b:2", "z.example", "z:1"), 0);
  assert_int_equal(mcp_store_route_put(t->st, "b:2", "m.example", "m:1"), 0);
  assert_int_equal(mcp_store_route_put(t->st, "a:1", "y.example", "y:1"), 0);
  assert_int_equal(mcp_store_firewall_add(t->st, MCP_FIREWALL_COUNTRY, "AA"), 0);
  assert_int_equal(mcp_store_firewall_add(t->st, MCP_FIREWALL_IP, "192.0.2.9"), 0);
  assert_int_equal(mcp_store_firewall_add(t->st, MCP_FIREWALL_CIDR, "10.0.0.0/8"), 0);
  assert_int_equal(mcp_store_firewall_add(t->st, MCP_FIREWALL_IP, "192.0.2.1"), 0);

  dump_t d;
  dump(t->st, &d);
  assert_string_equal(d.buf, "L a:1 1\n"
                             "L b:2 2\n"
                             "R a:1 y.example y:1\n"
                             "R b:2 m.example m:1\n"
                             "R b:2 z.example z:1\n"
                             "F 1 192.0.2.1\n"
                             "F 1 192.0.2.9\n"
                             "F 2 10.0.0.0/8\n"
                             "F 3 AA\n");

  /* A callback's non-zero value stops the walk and is returned; the read transaction ends. */
  memset(&d, 0, sizeof(d));
  d.stop_after = 3;
  assert_int_equal(mcp_store_load(t->st, &dump_visitor, &d), 42);
  assert_int_equal(d.calls, 3);
  assert_int_equal(sqlite3_get_autocommit(t->st->db), 1);

  /* NULL callbacks are skipped. */
  mcp_store_visitor_t only_rules = {NULL, NULL, dump_rule};
  memset(&d, 0, sizeof(d));
  assert_int_equal(mcp_store_load(t->st, &only_rules, &d), 0);
  assert_int_equal(d.calls, 4);
  assert_int_equal(mcp_store_load(t->st, NULL, NULL), 0);
}

static void deleting_listener_cascades_to_routes(void **state)
{
  test_ctx_t *t = *state;
  t->st = open_ok(t);
  assert_int_equal(mcp_store_listener_add(t->st, "a:1", 0), 0);
  assert_int_equal(mcp_store_listener_add(t->st, "b:2", 0), 0);
  assert_int_equal(mcp_store_route_put(t->st, "a:1", "x.example", "x:1"), 0);
  assert_int_equal(mcp_store_route_put(t->st, "a:1", "y.example", "y:1"), 0);
  assert_int_equal(mcp_store_route_put(t->st, "b:2", "x.example", "x:1"), 0);
  /* Raw SQL on the store's own connection, which must have foreign keys on. */
  raw_exec(t->st->db, "DELETE FROM listeners WHERE addr = 'a:1'");
  dump_t d;
  dump(t->st, &d);
  assert_string_equal(d.buf, "L b:2 0\nR b:2 x.example x:1\n");
}

/* ---- failures ---- */

static void busy_database_returns_ebusy_and_changes_nothing(void **state)
{
  test_ctx_t *t = *state;
  char err[256];
  assert_int_equal(mcp_store_open(t->db, 100, &t->st, err, sizeof(err)), 0);
  assert_int_equal(mcp_store_listener_add(t->st, "a:1", 0), 0);

  sqlite3 *raw = raw_open(t->db);
  raw_exec(raw, "BEGIN IMMEDIATE; INSERT INTO listeners (addr) VALUES ('held:1')");

  double t0 = now_ms();
  assert_int_equal(mcp_store_listener_add(t->st, "b:2", 0), MCP_EBUSY);
  double waited = now_ms() - t0;
  assert_true(waited >= 80.0);
  assert_true(waited < 2000.0);
  assert_true(strlen(mcp_store_errmsg(t->st)) > 0);
  assert_int_equal(mcp_store_route_put(t->st, "a:1", "x.example", "x:1"), MCP_EBUSY);
  assert_int_equal(mcp_store_listener_set_max_connections(t->st, "a:1", 9), MCP_EBUSY);
  assert_int_equal(mcp_store_firewall_add(t->st, MCP_FIREWALL_IP, "192.0.2.1"), MCP_EBUSY);
  assert_int_equal(mcp_store_begin(t->st), MCP_EBUSY);
  /* WAL: readers are not blocked by the writer. */
  assert_int_equal(store_empty(t->st), 0);
  dump_t d;
  dump(t->st, &d);
  assert_string_equal(d.buf, "L a:1 0\n");

  raw_exec(raw, "ROLLBACK");
  sqlite3_close(raw);

  dump(t->st, &d);
  assert_string_equal(d.buf, "L a:1 0\n");
  assert_int_equal(sqlite3_get_autocommit(t->st->db), 1);
  /* And once the lock is gone the same mutation goes through. */
  assert_int_equal(mcp_store_listener_add(t->st, "b:2", 0), 0);
}

static void failing_trigger_is_eio_and_changes_nothing(void **state)
{
  test_ctx_t *t = *state;
  t->st = open_ok(t);
  assert_int_equal(mcp_store_listener_add(t->st, "a:1", 0), 0);
  assert_int_equal(mcp_store_route_put(t->st, "a:1", "x.example", "x:1"), 0);

  /* Another connection changes the schema; the store's prepared statements must follow. */
  sqlite3 *raw = raw_open(t->db);
  raw_exec(raw, "CREATE TRIGGER no_routes BEFORE UPDATE ON routes"
                " BEGIN SELECT RAISE(ABORT, 'routes are frozen'); END");
  sqlite3_close(raw);

  assert_int_equal(mcp_store_route_put(t->st, "a:1", "x.example", "y:1"), MCP_EIO);
  assert_non_null(strstr(mcp_store_errmsg(t->st), "routes are frozen"));
  assert_int_equal(sqlite3_get_autocommit(t->st->db), 1);
  dump_t d;
  dump(t->st, &d);
  assert_string_equal(d.buf, "L a:1 0\nR a:1 x.example x:1\n");
  /* The same failure inside an explicit transaction keeps the earlier work of the batch. */
  assert_int_equal(mcp_store_begin(t->st), 0);
  assert_int_equal(mcp_store_route_put(t->st, "a:1", "new.example", "n:1"), 0);
  assert_int_equal(mcp_store_route_put(t->st, "a:1", "x.example", "y:1"), MCP_EIO);
  assert_int_equal(mcp_store_commit(t->st), 0);
  dump(t->st, &d);
  assert_string_equal(d.buf, "L a:1 0\nR a:1 new.example n:1\nR a:1 x.example x:1\n");
}

static void read_only_connection_is_eio(void **state)
{
  test_ctx_t *t = *state;
  t->st = open_ok(t);
  assert_int_equal(mcp_store_listener_add(t->st, "a:1", 0), 0);
  raw_exec(t->st->db, "PRAGMA query_only = ON");
  assert_int_equal(mcp_store_listener_add(t->st, "b:2", 0), MCP_EIO);
  assert_true(strlen(mcp_store_errmsg(t->st)) > 0);
  assert_int_equal(mcp_store_firewall_add(t->st, MCP_FIREWALL_IP, "192.0.2.1"), MCP_EIO);
  assert_int_equal(sqlite3_get_autocommit(t->st->db), 1);
  raw_exec(t->st->db, "PRAGMA query_only = OFF");
  dump_t d;
  dump(t->st, &d);
  assert_string_equal(d.buf, "L a:1 0\n");
}

/* ---- snapshot ---- */

static void snapshot_while_another_connection_writes(void **state)
{
  test_ctx_t *t = *state;
  char snap[192];
  char err[256];
  snprintf(snap, sizeof(snap), "%s/snap.db", t->dir);

  t->st = open_ok(t);
  assert_int_equal(mcp_store_listener_add(t->st, "a:1", 4), 0);
  assert_int_equal(mcp_store_route_put(t->st, "a:1", "x.example", "x:1"), 0);
  assert_int_equal(mcp_store_firewall_add(t->st, MCP_FIREWALL_CIDR, "10.0.0.0/8"), 0);
  dump_t before;
  dump(t->st, &before);

  /* Another process is in the middle of writing. */
  sqlite3 *raw = raw_open(t->db);
  raw_exec(raw, "BEGIN IMMEDIATE; INSERT INTO listeners (addr) VALUES ('uncommitted:1')");
  assert_int_equal(mcp_store_snapshot(t->st, snap), 0);
  raw_exec(raw, "COMMIT");
  sqlite3_close(raw);

  struct stat sb;
  assert_int_equal(stat(snap, &sb), 0);
  assert_true(sb.st_size > 0);
  assert_int_equal(sb.st_mode & 0777, 0600);

  /* Existing output paths are refused and left alone. */
  assert_int_equal(mcp_store_snapshot(t->st, snap), MCP_EEXIST);
  struct stat sb2;
  assert_int_equal(stat(snap, &sb2), 0);
  assert_int_equal(sb2.st_size, sb.st_size);

  mcp_store_t *copy = NULL;
  assert_int_equal(mcp_store_open(snap, 0, &copy, err, sizeof(err)), 0);
  char ok[16];
  raw_text(copy->db, "PRAGMA integrity_check", ok, sizeof(ok));
  assert_string_equal(ok, "ok");
  assert_int_equal(schema_version(copy), MCP_STORE_SCHEMA_VERSION);
  dump_t after;
  dump(copy, &after);
  assert_string_equal(after.buf, before.buf);
  mcp_store_close(copy);
}

static void snapshot_refusals(void **state)
{
  test_ctx_t *t = *state;
  char path[192];
  t->st = open_ok(t);

  /* A dangling symlink counts as existing: never write through it. */
  snprintf(path, sizeof(path), "%s/link.db", t->dir);
  char target[192];
  snprintf(target, sizeof(target), "%s/target.db", t->dir);
  assert_int_equal(symlink(target, path), 0);
  assert_int_equal(mcp_store_snapshot(t->st, path), MCP_EEXIST);
  assert_int_equal(access(target, F_OK), -1);

  /* Not inside a transaction; nothing is left behind. */
  snprintf(path, sizeof(path), "%s/tx.db", t->dir);
  assert_int_equal(mcp_store_begin(t->st), 0);
  assert_int_equal(mcp_store_snapshot(t->st, path), MCP_EIO);
  mcp_store_rollback(t->st);
  assert_int_equal(access(path, F_OK), -1);

  /* A directory that does not exist. */
  snprintf(path, sizeof(path), "%s/missing/out.db", t->dir);
  assert_int_equal(mcp_store_snapshot(t->st, path), MCP_EIO);
}

/* The type names the store writes are the ones the schema's CHECK constraint allows. */
static void every_rule_type_fits_the_schema(void **state)
{
  static const mcp_firewall_type_t types[] = {MCP_FIREWALL_IP, MCP_FIREWALL_CIDR,
                                              MCP_FIREWALL_COUNTRY};
  static const char *const values[] = {"192.0.2.1", "192.0.2.0/24", "KP"};
  for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
    const char *name = mcp_firewall_type_name(types[i]);
    assert_non_null(name);
    mcp_firewall_type_t back = 0;
    assert_int_equal(mcp_firewall_type_parse(name, &back), 0);
    assert_int_equal(back, types[i]);
  }
  test_ctx_t *t = *state;
  t->st = open_ok(t); /* closed by teardown */
  for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
    assert_int_equal(mcp_store_firewall_add(t->st, types[i], values[i]), 0);
  assert_int_equal(mcp_store_firewall_add(t->st, (mcp_firewall_type_t)4, "x"), MCP_EINVAL);
}

/* Cluster mode's applied revision: per source, replaced, written with the data it describes. */
static void sync_revision_is_per_source_and_transactional(void **state)
{
  test_ctx_t *t = *state;
  t->st = open_ok(t);
  int64_t rev = -1;
  assert_int_equal(mcp_store_sync_revision(t->st, "etcd:/a/", &rev), 0);
  assert_int_equal(rev, 0);
  assert_int_equal(mcp_store_set_sync_revision(t->st, "etcd:/a/", 41), 0);
  assert_int_equal(mcp_store_set_sync_revision(t->st, "etcd:/a/", 42), 0);
  assert_int_equal(mcp_store_set_sync_revision(t->st, "etcd:/b/", 7), 0);
  assert_int_equal(mcp_store_sync_revision(t->st, "etcd:/a/", &rev), 0);
  assert_int_equal(rev, 42);
  assert_int_equal(mcp_store_set_sync_revision(t->st, "etcd:/a/", -1), MCP_EINVAL);

  /* A rolled-back batch leaves neither its data nor its revision. */
  assert_int_equal(mcp_store_begin(t->st), 0);
  assert_int_equal(mcp_store_listener_add(t->st, "127.0.0.1:1", 0), 0);
  assert_int_equal(mcp_store_set_sync_revision(t->st, "etcd:/a/", 50), 0);
  mcp_store_rollback(t->st);
  assert_int_equal(mcp_store_sync_revision(t->st, "etcd:/a/", &rev), 0);
  assert_int_equal(rev, 42);
  int empty = 0;
  assert_int_equal(mcp_store_is_empty(t->st, &empty), 0);
  assert_int_equal(empty, 1);
}

/* A full re-read starts from nothing: every listener, route and rule goes; revisions stay. */
static void clear_removes_everything_but_the_revisions(void **state)
{
  test_ctx_t *t = *state;
  t->st = open_ok(t);
  assert_int_equal(mcp_store_listener_add(t->st, "127.0.0.1:1", 3), 0);
  assert_int_equal(mcp_store_route_put(t->st, "127.0.0.1:1", "a.example.com", "127.0.0.1:2"), 0);
  assert_int_equal(mcp_store_firewall_add(t->st, MCP_FIREWALL_IP, "10.0.0.1"), 0);
  assert_int_equal(mcp_store_set_sync_revision(t->st, "etcd:/a/", 9), 0);
  assert_int_equal(mcp_store_begin(t->st), 0);
  assert_int_equal(mcp_store_clear(t->st), 0);
  assert_int_equal(mcp_store_commit(t->st), 0);
  int empty = 0;
  assert_int_equal(mcp_store_is_empty(t->st, &empty), 0);
  assert_int_equal(empty, 1);
  assert_int_equal(raw_int(t->st->db, "SELECT COUNT(*) FROM routes"), 0);
  int64_t rev = 0;
  assert_int_equal(mcp_store_sync_revision(t->st, "etcd:/a/", &rev), 0);
  assert_int_equal(rev, 9);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
  const struct CMUnitTest tests[] = {
      T(fresh_open_creates_current_schema_in_wal_mode),
      T(reopen_is_a_no_op),
      T(migrates_version_2_database_to_current),
      T(newer_database_is_refused),
      T(garbage_file_is_refused),
      T(open_error_message_is_truncated_safely),
      T(listener_add_and_duplicate),
      T(route_put_upsert_and_remove),
      T(route_for_unknown_listener_is_enoent),
      T(firewall_add_is_idempotent_and_remove),
      T(listener_set_max_connections),
      T(seeding_commits_in_one_transaction),
      T(seeding_rollback_leaves_nothing),
      T(is_empty_before_and_after),
      T(load_walks_in_documented_order),
      T(deleting_listener_cascades_to_routes),
      T(busy_database_returns_ebusy_and_changes_nothing),
      T(failing_trigger_is_eio_and_changes_nothing),
      T(read_only_connection_is_eio),
      T(snapshot_while_another_connection_writes),
      T(snapshot_refusals),
      T(every_rule_type_fits_the_schema),
      T(sync_revision_is_per_source_and_transactional),
      T(clear_removes_everything_but_the_revisions),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
