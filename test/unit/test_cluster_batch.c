/*
 * Unit tests for cluster mode's batches (cli/cluster_batch.c): watch events as etcd would
 * deliver them, parsed into items and written to a real SQLite file in a fresh temporary
 * directory. No etcd is needed for events (a full read is covered by test_cluster.py).
 *
 * What is checked: every kind of bad value is skipped and counted while the rest of the batch is
 * written; a route for a listener the database lacks, and a backend or fallback that is one of
 * our own listen addresses, are skipped at the write; the batch and its revision are one
 * transaction (a database failure leaves neither); deletes of things that are not there are
 * fine (a replayed delete must not stall the sync).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "cluster_batch.h"

#define PREFIX "/t/"
#define SOURCE "etcd:/t/"

typedef struct ctx_s {
  char dir[64];
  char db[128];
  mcp_store_t *store;
  batch_env_t env;
} ctx_t;

static int setup(void **state)
{
  ctx_t *t = calloc(1, sizeof(*t));
  char err[256];
  snprintf(t->dir, sizeof(t->dir), "/tmp/mcp-cluster-batch-XXXXXX");
  assert_non_null(mkdtemp(t->dir));
  snprintf(t->db, sizeof(t->db), "%s/t.db", t->dir);
  assert_int_equal(mcp_store_open(t->db, 0, &t->store, err, sizeof(err)), 0);
  t->env = (batch_env_t){.prefix = PREFIX, .source = SOURCE, .store = t->store, .has_geoip = 0};
  *state = t;
  return 0;
}

static int teardown(void **state)
{
  ctx_t *t = *state;
  char path[256];
  mcp_store_close(t->store);
  const char *suffixes[] = {"", "-wal", "-shm"};
  for (size_t i = 0; i < 3; i++) {
    snprintf(path, sizeof(path), "%s%s", t->db, suffixes[i]);
    unlink(path);
  }
  rmdir(t->dir);
  free(t);
  return 0;
}

/* One event of a watch update: key and value copied as etcd_watch.c would. */
static void add_event(etcd_watch_update_t *u, const char *key, const char *value, int is_delete)
{
  u->events = realloc(u->events, (u->n_events + 1) * sizeof(*u->events));
  assert_non_null(u->events);
  etcd_event_t *e = &u->events[u->n_events++];
  memset(e, 0, sizeof(*e));
  e->is_delete = is_delete;
  e->kv.key = strdup(key);
  e->kv.key_len = strlen(key);
  e->kv.value = strdup(value ? value : "");
  e->kv.value_len = value ? strlen(value) : 0;
  e->kv.mod_revision = u->revision;
}

static batch_t *events_batch(int64_t revision)
{
  batch_t *b = calloc(1, sizeof(*b));
  etcd_watch_update_t *u = calloc(1, sizeof(*u));
  assert_non_null(b);
  assert_non_null(u);
  u->kind = ETCD_WATCH_EVENTS;
  u->revision = revision;
  b->kind = BATCH_EVENTS;
  b->updates = malloc(sizeof(*b->updates));
  b->updates[0] = u;
  b->nupdates = b->updates_cap = 1;
  return b;
}

/* Our own listen address for the loop check, as prebind in cluster.c notes it. */
static void add_self(batch_t *b, const char *ip, int port)
{
  b->self = realloc(b->self, (b->nself + 1) * sizeof(*b->self));
  struct sockaddr_in *sin = (struct sockaddr_in *)&b->self[b->nself++];
  memset(sin, 0, sizeof(b->self[0]));
  sin->sin_family = AF_INET;
  sin->sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, ip, &sin->sin_addr);
}

typedef struct seen_s {
  int listeners, routes, rules;
  char last_backend[64];
  int64_t max_connections;
} seen_t;

static int on_listener(void *d, const char *addr, const mcp_store_listener_settings_t *s)
{
  (void)addr;
  seen_t *v = d;
  v->listeners++;
  v->max_connections = s->max_connections;
  return 0;
}

static int on_route(void *d, const char *l, const char *h, const char *backend, mcp_send_proxy_t sp)
{
  (void)l;
  (void)h;
  (void)sp;
  seen_t *v = d;
  v->routes++;
  snprintf(v->last_backend, sizeof(v->last_backend), "%s", backend);
  return 0;
}

static int on_rule(void *d, mcp_firewall_type_t type, const char *value)
{
  (void)type;
  (void)value;
  ((seen_t *)d)->rules++;
  return 0;
}

static seen_t load(ctx_t *t)
{
  seen_t v = {0};
  mcp_store_visitor_ex_t vis = {on_listener, on_route, on_rule};
  assert_int_equal(mcp_store_load_ex(t->store, &vis, &v), 0);
  return v;
}

static int64_t stored_revision(ctx_t *t)
{
  int64_t rev = -1;
  assert_int_equal(mcp_store_sync_revision(t->store, SOURCE, &rev), 0);
  return rev;
}

static void bad_values_are_skipped_and_the_rest_written(void **state)
{
  ctx_t *t = *state;
  batch_t *b = events_batch(7);
  etcd_watch_update_t *u = b->updates[0];
  add_event(u, PREFIX "listeners/127.0.0.1:7001", "{\"max_connections\":3}", 0);
  add_event(u, PREFIX "routes/127.0.0.1:7001/a.example.com", "{\"backend\":\"127.0.0.1:9\"}", 0);
  add_event(u, PREFIX "routes/127.0.0.1:7001/bad.example.com", "not json", 0);
  add_event(u, PREFIX "routes/127.0.0.1:7001/half.example.com", "{\"backend\":", 0);
  add_event(u, PREFIX "nonsense/key", "{}", 0);
  add_event(u, PREFIX "routes/127.0.0.1:7002/orphan.example.com", "{\"backend\":\"127.0.0.1:9\"}",
            0);
  add_event(u, PREFIX "firewall/country/DE", "{}", 0); /* no GeoIP database here */
  add_event(u, PREFIX "listeners/127.0.0.1:7003", "{\"max_connections\":-1}", 0);
  add_event(u, PREFIX "firewall/ip/10.0.0.1", "{}", 0);
  add_event(u, PREFIX "firewall/ip/10.0.0.9", NULL, 1);                   /* not there: fine */
  add_event(u, PREFIX "routes/127.0.0.1:7001/gone.example.com", NULL, 1); /* not there: fine */

  batch_parse(&t->env, b);
  assert_int_equal(b->error, 0);
  assert_int_equal(b->revision, 7);
  /* Not JSON, cut short, no pattern, a country rule without GeoIP, a negative limit. */
  assert_int_equal(b->nskipped, 5);
  batch_write(&t->env, b);
  assert_int_equal(b->error, 0);
  /* ... and at the write, the route for a listener the database lacks. */
  assert_int_equal(b->nskipped, 6);
  assert_non_null(strstr(b->last_skip, "no such listener"));

  seen_t v = load(t);
  assert_int_equal(v.listeners, 1);
  assert_int_equal(v.max_connections, 3);
  assert_int_equal(v.routes, 1);
  assert_int_equal(v.rules, 1);
  assert_int_equal(stored_revision(t), 7);
  batch_free(b);
}

static void a_backend_or_fallback_on_our_own_listener_is_skipped(void **state)
{
  ctx_t *t = *state;
  batch_t *b = events_batch(3);
  etcd_watch_update_t *u = b->updates[0];
  add_event(u, PREFIX "listeners/127.0.0.1:7001", "{}", 0);
  add_event(u, PREFIX "listeners/127.0.0.1:7004", "{\"fallback\":\"127.0.0.1:7001\"}", 0);
  add_event(u, PREFIX "routes/127.0.0.1:7001/loop.example.com", "{\"backend\":\"127.0.0.1:7001\"}",
            0);
  add_event(u, PREFIX "routes/127.0.0.1:7001/ok.example.com", "{\"backend\":\"127.0.0.1:7009\"}",
            0);
  batch_parse(&t->env, b);
  add_self(b, "127.0.0.1", 7001);
  batch_write(&t->env, b);
  assert_int_equal(b->error, 0);
  assert_int_equal(b->nskipped, 2);
  seen_t v = load(t);
  assert_int_equal(v.listeners, 1);
  assert_int_equal(v.routes, 1);
  assert_string_equal(v.last_backend, "127.0.0.1:7009");
  batch_free(b);
}

static void deletes_and_updates_follow_in_order(void **state)
{
  ctx_t *t = *state;
  batch_t *b = events_batch(4);
  etcd_watch_update_t *u = b->updates[0];
  add_event(u, PREFIX "listeners/127.0.0.1:7001", "{}", 0);
  add_event(u, PREFIX "routes/127.0.0.1:7001/a.example.com", "{\"backend\":\"127.0.0.1:9\"}", 0);
  add_event(u, PREFIX "listeners/127.0.0.1:7001", "{\"max_connections\":9}", 0); /* an update */
  batch_parse(&t->env, b);
  batch_write(&t->env, b);
  assert_int_equal(b->nskipped, 0);
  batch_free(b);
  seen_t v = load(t);
  assert_int_equal(v.max_connections, 9);
  assert_int_equal(v.routes, 1);

  /* Deleting the listener takes its routes with it; the route delete after it is no error. */
  b = events_batch(5);
  u = b->updates[0];
  add_event(u, PREFIX "listeners/127.0.0.1:7001", NULL, 1);
  add_event(u, PREFIX "routes/127.0.0.1:7001/a.example.com", NULL, 1);
  batch_parse(&t->env, b);
  batch_write(&t->env, b);
  assert_int_equal(b->error, 0);
  assert_int_equal(b->nskipped, 0);
  batch_free(b);
  v = load(t);
  assert_int_equal(v.listeners, 0);
  assert_int_equal(v.routes, 0);
  assert_int_equal(stored_revision(t), 5);
}

static void a_failed_write_leaves_neither_data_nor_revision(void **state)
{
  ctx_t *t = *state;
  batch_t *b = events_batch(8);
  add_event(b->updates[0], PREFIX "listeners/127.0.0.1:7001", "{}", 0);
  batch_parse(&t->env, b);
  /* Another connection holds the write lock past the busy timeout. */
  mcp_store_t *other;
  char err[256];
  assert_int_equal(mcp_store_open(t->db, 50, &other, err, sizeof(err)), 0);
  assert_int_equal(mcp_store_begin(other), 0);
  assert_int_equal(mcp_store_firewall_add(other, MCP_FIREWALL_IP, "10.9.9.9"), 0);
  batch_write(&t->env, b);
  assert_int_not_equal(b->error, 0);
  mcp_store_rollback(other);
  mcp_store_close(other);
  seen_t v = load(t);
  assert_int_equal(v.listeners, 0);
  assert_int_equal(stored_revision(t), 0);
  /* The same batch written again once the lock is gone (what the sync's retry does). */
  b->error = 0;
  batch_write(&t->env, b);
  assert_int_equal(b->error, 0);
  assert_int_equal(load(t).listeners, 1);
  assert_int_equal(stored_revision(t), 8);
  batch_free(b);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(bad_values_are_skipped_and_the_rest_written, setup, teardown),
      cmocka_unit_test_setup_teardown(a_backend_or_fallback_on_our_own_listener_is_skipped, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(deletes_and_updates_follow_in_order, setup, teardown),
      cmocka_unit_test_setup_teardown(a_failed_write_leaves_neither_data_nor_revision, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
