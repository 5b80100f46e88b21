/*
 * Unit tests of lib/store_listeners.c and a route's send_proxy through the public store API, on
 * real SQLite files in a fresh temporary directory per test. A second raw sqlite3 connection
 * checks what is really on disk (row counts after a failed write must not move).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "mcproxy/store.h"

typedef struct ctx_s {
  char dir[64];
  char db[96];
  mcp_store_t *st;
} ctx_t;

static int setup(void **state)
{
  ctx_t *t = calloc(1, sizeof(*t));
  snprintf(t->dir, sizeof(t->dir), "/tmp/mcp-store-ls-XXXXXX");
  if (!t || !mkdtemp(t->dir))
    return -1;
  snprintf(t->db, sizeof(t->db), "%s/s.db", t->dir);
  char err[256];
  if (mcp_store_open(t->db, 0, &t->st, err, sizeof(err)) != 0)
    return -1;
  *state = t;
  return 0;
}

static int teardown(void **state)
{
  ctx_t *t = *state;
  char path[128];
  mcp_store_close(t->st);
  const char *suffix[] = {"", "-wal", "-shm"};
  for (int i = 0; i < 3; i++) {
    snprintf(path, sizeof(path), "%s%s", t->db, suffix[i]);
    unlink(path);
  }
  rmdir(t->dir);
  free(t);
  return 0;
}

/* One integer from a query on a separate connection (another process's view). */
static int64_t raw_int(const ctx_t *t, const char *sql)
{
  sqlite3 *db;
  sqlite3_stmt *stmt;
  assert_int_equal(sqlite3_open_v2(t->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return v;
}

/* A total of every row the settings touch, to show a failed write changed nothing. */
static int64_t rows(const ctx_t *t)
{
  return raw_int(t, "SELECT (SELECT COUNT(*) FROM listeners) * 1000000"
                    " + (SELECT COUNT(*) FROM listener_proxy_from) * 1000"
                    " + (SELECT COUNT(*) FROM routes)");
}

static const char *const two_cidrs[] = {"10.0.0.0/8", "192.0.2.0/24"};

static mcp_store_listener_settings_t full_settings(void)
{
  mcp_store_listener_settings_t s;
  mcp_store_listener_settings_init(&s);
  s.max_connections = 100;
  s.proxy_protocol = 1;
  s.proxy_from = two_cidrs;
  s.proxy_from_count = 2;
  s.fallback = "127.0.0.1:8443";
  s.rate_limit_count = 20;
  s.rate_limit_period_ms = 1000;
  s.max_connections_per_client = 5;
  return s;
}

static void add_and_read_back(void **state)
{
  ctx_t *t = *state;
  mcp_store_listener_settings_t s = full_settings();
  /* Given in reverse: read back in text order. */
  const char *const rev[] = {"192.0.2.0/24", "10.0.0.0/8"};
  s.proxy_from = rev;
  assert_int_equal(mcp_store_listener_add_settings(t->st, "0.0.0.0:443", &s), 0);
  assert_int_equal(mcp_store_listener_add_settings(t->st, "[::]:443", NULL), 0);

  mcp_store_listener_settings_t got;
  assert_int_equal(mcp_store_listener_get(t->st, "0.0.0.0:443", &got), 0);
  assert_int_equal(got.max_connections, 100);
  assert_int_equal(got.proxy_protocol, 1);
  assert_int_equal(got.proxy_from_count, 2);
  assert_string_equal(got.proxy_from[0], "10.0.0.0/8");
  assert_string_equal(got.proxy_from[1], "192.0.2.0/24");
  assert_string_equal(got.fallback, "127.0.0.1:8443");
  assert_int_equal(got.rate_limit_count, 20);
  assert_int_equal(got.rate_limit_period_ms, 1000);
  assert_int_equal(got.max_connections_per_client, 5);
  mcp_store_listener_settings_free(&got);
  assert_null(got.storage_);

  assert_int_equal(mcp_store_listener_get(t->st, "[::]:443", &got), 0);
  assert_int_equal(got.max_connections + got.proxy_protocol + got.rate_limit_count +
                       got.rate_limit_period_ms + got.max_connections_per_client,
                   0);
  assert_int_equal(got.proxy_from_count, 0);
  assert_string_equal(got.fallback, "");
  mcp_store_listener_settings_free(&got);

  assert_int_equal(mcp_store_listener_get(t->st, "1.2.3.4:5", &got), MCP_ENOENT);
  assert_non_null(strstr(mcp_store_errmsg(t->st), "1.2.3.4:5"));
}

static void add_refuses_bad_settings_and_writes_nothing(void **state)
{
  ctx_t *t = *state;
  mcp_store_listener_settings_t s = full_settings();
  assert_int_equal(mcp_store_listener_add_settings(t->st, "0.0.0.0:443", &s), 0);
  int64_t before = rows(t);

  assert_int_equal(mcp_store_listener_add_settings(t->st, "0.0.0.0:443", &s), MCP_EEXIST);
  s.rate_limit_period_ms = -1;
  assert_int_equal(mcp_store_listener_add_settings(t->st, "0.0.0.0:444", &s), MCP_ERANGE);
  s = full_settings();
  s.proxy_from_count = 0;
  assert_int_equal(mcp_store_listener_add_settings(t->st, "0.0.0.0:444", &s), MCP_EINVAL);
  s = full_settings();
  s.proxy_protocol = 2;
  assert_int_equal(mcp_store_listener_add_settings(t->st, "0.0.0.0:444", &s), MCP_EINVAL);

  /* A constraint violation after the listener row is in: the same proxy_from twice. */
  const char *const dup[] = {"10.0.0.0/8", "172.16.0.0/12", "10.0.0.0/8"};
  s = full_settings();
  s.proxy_from = dup;
  s.proxy_from_count = 3;
  assert_int_equal(mcp_store_listener_add_settings(t->st, "0.0.0.0:444", &s), MCP_EINVAL);
  assert_non_null(strstr(mcp_store_errmsg(t->st), "10.0.0.0/8"));
  assert_int_equal(rows(t), before);
  assert_int_equal(raw_int(t, "SELECT COUNT(*) FROM listeners WHERE addr = '0.0.0.0:444'"), 0);
}

static void update_changes_only_masked_fields(void **state)
{
  ctx_t *t = *state;
  mcp_store_listener_settings_t s = full_settings();
  assert_int_equal(mcp_store_listener_add_settings(t->st, "0.0.0.0:443", &s), 0);

  mcp_store_listener_settings_t u;
  mcp_store_listener_settings_init(&u);
  u.max_connections = 7;
  u.fallback = NULL; /* would clear it, but FALLBACK is not in the mask */
  const char *const one[] = {"198.51.100.0/24"};
  u.proxy_from = one;
  u.proxy_from_count = 1;
  assert_int_equal(
      mcp_store_listener_update(t->st, "0.0.0.0:443", &u,
                                MCP_STORE_LS_MAX_CONNECTIONS | MCP_STORE_LS_PROXY_FROM),
      0);
  mcp_store_listener_settings_t got;
  assert_int_equal(mcp_store_listener_get(t->st, "0.0.0.0:443", &got), 0);
  assert_int_equal(got.max_connections, 7);
  assert_int_equal(got.proxy_from_count, 1);
  assert_string_equal(got.proxy_from[0], "198.51.100.0/24");
  assert_string_equal(got.fallback, "127.0.0.1:8443");
  assert_int_equal(got.rate_limit_count, 20);
  assert_int_equal(got.proxy_protocol, 1);
  mcp_store_listener_settings_free(&got);

  /* Clearing the fallback; proxy_protocol off then emptying proxy_from is allowed. */
  u.fallback = "";
  u.proxy_protocol = 0;
  u.proxy_from_count = 0;
  assert_int_equal(mcp_store_listener_update(t->st, "0.0.0.0:443", &u,
                                             MCP_STORE_LS_FALLBACK | MCP_STORE_LS_PROXY_PROTOCOL |
                                                 MCP_STORE_LS_PROXY_FROM),
                   0);
  assert_int_equal(mcp_store_listener_get(t->st, "0.0.0.0:443", &got), 0);
  assert_string_equal(got.fallback, "");
  assert_int_equal(got.proxy_protocol, 0);
  assert_int_equal(got.proxy_from_count, 0);
  assert_int_equal(got.max_connections, 7);
  mcp_store_listener_settings_free(&got);

  /* Turning proxy_protocol on with no stored proxy_from is refused. */
  u.proxy_protocol = 1;
  assert_int_equal(mcp_store_listener_update(t->st, "0.0.0.0:443", &u, MCP_STORE_LS_PROXY_PROTOCOL),
                   MCP_EINVAL);
  assert_int_equal(raw_int(t, "SELECT proxy_protocol FROM listeners"), 0);

  assert_int_equal(mcp_store_listener_update(t->st, "9.9.9.9:1", &u, MCP_STORE_LS_FALLBACK),
                   MCP_ENOENT);
  u.max_connections_per_client = -3;
  assert_int_equal(
      mcp_store_listener_update(t->st, "0.0.0.0:443", &u, MCP_STORE_LS_MAX_CONNECTIONS_PER_CLIENT),
      MCP_ERANGE);
  /* Negative, but not in the mask: not looked at. */
  assert_int_equal(mcp_store_listener_update(t->st, "0.0.0.0:443", &u, 0), 0);
  assert_int_equal(mcp_store_listener_update(t->st, "0.0.0.0:443", &u, 1u << 20), MCP_EINVAL);

  /* set_settings writes everything; the old max_connections setter still works. */
  s = full_settings();
  assert_int_equal(mcp_store_listener_set_settings(t->st, "0.0.0.0:443", &s), 0);
  assert_int_equal(mcp_store_listener_set_max_connections(t->st, "0.0.0.0:443", 9), 0);
  assert_int_equal(mcp_store_listener_get(t->st, "0.0.0.0:443", &got), 0);
  assert_int_equal(got.max_connections, 9);
  assert_int_equal(got.proxy_from_count, 2);
  assert_int_equal(got.max_connections_per_client, 5);
  mcp_store_listener_settings_free(&got);
}

static void failed_update_mid_transaction_changes_nothing(void **state)
{
  ctx_t *t = *state;
  mcp_store_listener_settings_t s = full_settings();
  assert_int_equal(mcp_store_listener_add_settings(t->st, "0.0.0.0:443", &s), 0);
  int64_t before = rows(t);

  /* max_connections is written first, then the duplicate proxy_from entry fails. */
  const char *const dup[] = {"203.0.113.0/24", "203.0.113.0/24"};
  mcp_store_listener_settings_t u;
  mcp_store_listener_settings_init(&u);
  u.max_connections = 55;
  u.proxy_from = dup;
  u.proxy_from_count = 2;
  assert_int_equal(
      mcp_store_listener_update(t->st, "0.0.0.0:443", &u,
                                MCP_STORE_LS_MAX_CONNECTIONS | MCP_STORE_LS_PROXY_FROM),
      MCP_EINVAL);
  assert_int_equal(raw_int(t, "SELECT max_connections FROM listeners"), 100);
  assert_int_equal(rows(t), before);

  /* Inside the caller's transaction: the failed write is undone, the rest commits. */
  assert_int_equal(mcp_store_begin(t->st), 0);
  assert_int_equal(mcp_store_listener_add_settings(t->st, "0.0.0.0:444", NULL), 0);
  assert_int_equal(
      mcp_store_listener_update(t->st, "0.0.0.0:443", &u,
                                MCP_STORE_LS_MAX_CONNECTIONS | MCP_STORE_LS_PROXY_FROM),
      MCP_EINVAL);
  assert_int_equal(mcp_store_route_put(t->st, "0.0.0.0:444", "a.example.com", "127.0.0.1:1"), 0);
  assert_int_equal(mcp_store_commit(t->st), 0);
  assert_int_equal(raw_int(t, "SELECT max_connections FROM listeners WHERE addr = '0.0.0.0:443'"),
                   100);
  assert_int_equal(raw_int(t, "SELECT COUNT(*) FROM listener_proxy_from"), 2);
  assert_int_equal(raw_int(t, "SELECT COUNT(*) FROM routes"), 1);
}

static void remove_cascades(void **state)
{
  ctx_t *t = *state;
  mcp_store_listener_settings_t s = full_settings();
  assert_int_equal(mcp_store_listener_add_settings(t->st, "0.0.0.0:443", &s), 0);
  assert_int_equal(mcp_store_listener_add(t->st, "0.0.0.0:444", 0), 0);
  assert_int_equal(mcp_store_route_put(t->st, "0.0.0.0:443", "a.example.com", "127.0.0.1:1"), 0);
  assert_int_equal(mcp_store_route_put(t->st, "0.0.0.0:444", "b.example.com", "127.0.0.1:2"), 0);

  assert_int_equal(mcp_store_listener_remove(t->st, "0.0.0.0:443"), 0);
  assert_int_equal(raw_int(t, "SELECT COUNT(*) FROM listeners"), 1);
  assert_int_equal(raw_int(t, "SELECT COUNT(*) FROM listener_proxy_from"), 0);
  assert_int_equal(raw_int(t, "SELECT COUNT(*) FROM routes"), 1);
  assert_int_equal(mcp_store_listener_remove(t->st, "0.0.0.0:443"), MCP_ENOENT);
  assert_int_equal(mcp_store_listener_remove(t->st, NULL), MCP_EINVAL);
}

typedef struct seen_s {
  char buf[1024];
  size_t len;
} seen_t;

static int seen_listener(void *data, const char *addr, const mcp_store_listener_settings_t *s)
{
  seen_t *d = data;
  d->len += (size_t)snprintf(d->buf + d->len, sizeof(d->buf) - d->len,
                             "L %s %lld pp=%d from=%zu%s%s fb=%s rl=%lld/%lld pc=%lld\n", addr,
                             (long long)s->max_connections, s->proxy_protocol, s->proxy_from_count,
                             s->proxy_from_count ? " " : "",
                             s->proxy_from_count ? s->proxy_from[0] : "", s->fallback,
                             (long long)s->rate_limit_count, (long long)s->rate_limit_period_ms,
                             (long long)s->max_connections_per_client);
  return 0;
}

static int seen_route(void *data, const char *listener, const char *hostname, const char *backend,
                      mcp_send_proxy_t sp)
{
  seen_t *d = data;
  d->len += (size_t)snprintf(d->buf + d->len, sizeof(d->buf) - d->len, "R %s %s %s %d\n", listener,
                             hostname, backend, (int)sp);
  return 0;
}

static int old_listener(void *data, const char *addr, int64_t max_connections)
{
  seen_t *d = data;
  d->len += (size_t)snprintf(d->buf + d->len, sizeof(d->buf) - d->len, "l %s %lld\n", addr,
                             (long long)max_connections);
  return 0;
}

static void routes_keep_send_proxy_and_wildcards(void **state)
{
  ctx_t *t = *state;
  mcp_store_listener_settings_t s = full_settings();
  assert_int_equal(mcp_store_listener_add_settings(t->st, "0.0.0.0:443", &s), 0);
  assert_int_equal(mcp_store_route_put_ex(t->st, "0.0.0.0:443", "*.example.com", "127.0.0.1:1",
                                          MCP_SEND_PROXY_V2),
                   0);
  assert_int_equal(mcp_store_route_put_ex(t->st, "0.0.0.0:443", "a.example.com", "127.0.0.1:2",
                                          MCP_SEND_PROXY_V1),
                   0);
  assert_int_equal(mcp_store_route_put(t->st, "0.0.0.0:443", "b.example.com", "127.0.0.1:3"), 0);
  /* The upsert replaces send_proxy too. */
  assert_int_equal(mcp_store_route_put_ex(t->st, "0.0.0.0:443", "a.example.com", "127.0.0.1:2",
                                          MCP_SEND_PROXY_NONE),
                   0);
  assert_int_equal(mcp_store_route_put_ex(t->st, "0.0.0.0:443", "c.example.com", "127.0.0.1:2",
                                          (mcp_send_proxy_t)3),
                   MCP_EINVAL);
  assert_int_equal(
      mcp_store_route_put_ex(t->st, "9.9.9.9:1", "c.example.com", "127.0.0.1:2", MCP_SEND_PROXY_V1),
      MCP_ENOENT);
  /* On disk as written, with its number. */
  assert_int_equal(raw_int(t, "SELECT COUNT(*) FROM routes WHERE send_proxy = 2"), 1);

  seen_t d = {{0}, 0};
  mcp_store_visitor_ex_t v = {seen_listener, seen_route, NULL};
  assert_int_equal(mcp_store_load_ex(t->st, &v, &d), 0);
  assert_string_equal(d.buf,
                      "L 0.0.0.0:443 100 pp=1 from=2 10.0.0.0/8 fb=127.0.0.1:8443 rl=20/1000 pc=5\n"
                      "R 0.0.0.0:443 *.example.com 127.0.0.1:1 2\n"
                      "R 0.0.0.0:443 a.example.com 127.0.0.1:2 0\n"
                      "R 0.0.0.0:443 b.example.com 127.0.0.1:3 0\n");

  /* The older visitor still sees listeners (max_connections only). */
  seen_t o = {{0}, 0};
  mcp_store_visitor_t ov = {old_listener, NULL, NULL};
  assert_int_equal(mcp_store_load(t->st, &ov, &o), 0);
  assert_string_equal(o.buf, "l 0.0.0.0:443 100\n");
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(add_and_read_back),
      T(add_refuses_bad_settings_and_writes_nothing),
      T(update_changes_only_masked_fields),
      T(failed_update_mid_transaction_changes_nothing),
      T(remove_cascades),
      T(routes_keep_send_proxy_and_wildcards),
  };
#undef T
  return cmocka_run_group_tests(tests, NULL, NULL);
}
