/*
 * `mc-proxy cluster import` (see cluster_cmds.c for the command): this instance's listeners
 * (with their settings), routes and firewall rules, read from its SQLite database read-only
 * (safe while the server runs, never creating or migrating the file), written under the
 * [cluster] prefix in etcd as the keys and values of cluster_values.h, only into an empty
 * prefix (docs/SCALING.md, "Moving a fleet over").
 */
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cluster_cmds.h"
#include "cluster_values.h"
#include "etcd_client.h"
#include "mcproxy/store.h"

/* etcd refuses a transaction with more operations (or compares) than --max-txn-ops, 128 by
 * default; every batch stays at or under it. */
#define IMPORT_BATCH 128

typedef struct entry_s {
  char *key;
  char *value;
} entry_t;

typedef struct entries_s {
  entry_t *v;
  size_t n, cap;
  size_t listeners, routes, rules;
  size_t bad; /* rows that make no valid key or value (each printed) */
} entries_t;

static void entries_free(entries_t *e)
{
  for (size_t i = 0; i < e->n; i++) {
    free(e->v[i].key);
    free(e->v[i].value);
  }
  free(e->v);
  memset(e, 0, sizeof(*e));
}

/*
 * Appends key = value (value malloc'd, taken over) after checking that the pair parses back
 * exactly as cluster mode will parse it; a pair that does not is printed and counted in bad.
 * Returns 0, or -1 when out of memory.
 */
static int add_entry(entries_t *e, const char *prefix, const cluster_key_t *k, char *value,
                     const char *what)
{
  char key[1024], err[256];
  if (!value)
    return -1;
  int len = cluster_key_format(prefix, k, key, sizeof(key));
  cluster_entry_t parsed;
  if (len < 0) {
    fprintf(stderr, "mc-proxy cluster: %s: the key is too long\n", what);
    e->bad++;
    free(value);
    return 0;
  }
  if (cluster_entry_parse(prefix, key, (size_t)len, value, strlen(value), 0, &parsed, err,
                          sizeof(err)) != 0) {
    fprintf(stderr, "mc-proxy cluster: %s: not valid in etcd: %s\n", what, err);
    e->bad++;
    free(value);
    return 0;
  }
  cluster_entry_release(&parsed);
  if (e->n == e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 256;
    entry_t *v = realloc(e->v, cap * sizeof(*v));
    if (!v) {
      free(value);
      return -1;
    }
    e->v = v;
    e->cap = cap;
  }
  e->v[e->n].key = strdup(key);
  e->v[e->n].value = value;
  if (!e->v[e->n].key) {
    free(value);
    return -1;
  }
  e->n++;
  return 0;
}

/* The proxy_from CIDRs of listener id into l (malloc'd array). Returns SQLite's code. */
static int read_proxy_from(sqlite3 *db, int64_t id, cluster_listener_t *l)
{
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(
      db, "SELECT cidr FROM listener_proxy_from WHERE listener_id = ?1 ORDER BY cidr", -1, &st,
      NULL);
  if (rc != SQLITE_OK)
    return rc;
  sqlite3_bind_int64(st, 1, id);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    char(*v)[MCP_FIREWALL_VALUE_MAX] = realloc(l->proxy_from, (l->n_proxy_from + 1) * sizeof(*v));
    if (!v) {
      rc = SQLITE_NOMEM;
      break;
    }
    l->proxy_from = v;
    snprintf(v[l->n_proxy_from++], MCP_FIREWALL_VALUE_MAX, "%s",
             (const char *)sqlite3_column_text(st, 0));
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/*
 * Everything in one read transaction (one consistent view while the server writes): listeners
 * first, then firewall rules, then routes, so that an instance already watching the prefix never
 * sees a route before its listener. Returns 0, or -1 after printing why.
 */
static int read_state(sqlite3 *db, const char *prefix, entries_t *e)
{
  static const char *const q_listeners =
      "SELECT id, addr, max_connections, proxy_protocol, fallback, rate_limit_count,"
      " rate_limit_period_ms, max_connections_per_client FROM listeners ORDER BY addr";
  static const char *const q_rules = "SELECT type, value FROM firewall_rules ORDER BY type, value";
  static const char *const q_routes =
      "SELECT l.addr, r.hostname, r.backend, r.send_proxy FROM routes r"
      " JOIN listeners l ON l.id = r.listener_id ORDER BY l.addr, r.hostname";
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
  int oom = 0;
  char what[512];

  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(db, q_listeners, -1, &st, NULL);
  while (rc == SQLITE_OK && !oom && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    cluster_key_t k = {.kind = CLUSTER_LISTENER};
    cluster_listener_t l = {0};
    const char *addr = (const char *)sqlite3_column_text(st, 1);
    snprintf(k.listener, sizeof(k.listener), "%s", addr);
    l.max_connections = sqlite3_column_int64(st, 2);
    l.proxy_protocol = sqlite3_column_int(st, 3) != 0;
    snprintf(l.fallback, sizeof(l.fallback), "%s", (const char *)sqlite3_column_text(st, 4));
    l.rate_limit_count = sqlite3_column_int64(st, 5);
    l.rate_limit_period_ms = sqlite3_column_int64(st, 6);
    l.max_connections_per_client = sqlite3_column_int64(st, 7);
    rc = read_proxy_from(db, sqlite3_column_int64(st, 0), &l);
    if (rc == SQLITE_OK) {
      snprintf(what, sizeof(what), "listener %s", addr);
      oom = add_entry(e, prefix, &k, cluster_listener_to_json(&l), what) != 0;
      e->listeners++;
    }
    cluster_listener_release(&l);
  }
  if (rc == SQLITE_DONE) {
    sqlite3_finalize(st);
    st = NULL;
    rc = sqlite3_prepare_v2(db, q_rules, -1, &st, NULL);
  }
  while (rc == SQLITE_OK && !oom && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    cluster_key_t k = {.kind = CLUSTER_FIREWALL};
    const char *type = (const char *)sqlite3_column_text(st, 0);
    const char *value = (const char *)sqlite3_column_text(st, 1);
    snprintf(what, sizeof(what), "firewall rule %s %s", type, value);
    if (mcp_firewall_type_parse(type, &k.fw_type) != 0) {
      fprintf(stderr, "mc-proxy cluster: %s: unknown rule type\n", what);
      e->bad++;
    } else {
      snprintf(k.fw_value, sizeof(k.fw_value), "%s", value);
      oom = add_entry(e, prefix, &k, strdup("{}"), what) != 0;
      e->rules++;
    }
    rc = SQLITE_OK;
  }
  if (rc == SQLITE_DONE) {
    sqlite3_finalize(st);
    st = NULL;
    rc = sqlite3_prepare_v2(db, q_routes, -1, &st, NULL);
  }
  while (rc == SQLITE_OK && !oom && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    cluster_key_t k = {.kind = CLUSTER_ROUTE};
    cluster_route_t r = {0};
    const char *addr = (const char *)sqlite3_column_text(st, 0);
    const char *host = (const char *)sqlite3_column_text(st, 1);
    snprintf(k.listener, sizeof(k.listener), "%s", addr);
    snprintf(k.hostname, sizeof(k.hostname), "%s", host);
    snprintf(r.backend, sizeof(r.backend), "%s", (const char *)sqlite3_column_text(st, 2));
    int sp = sqlite3_column_int(st, 3);
    r.send_proxy = sp == 1   ? CLUSTER_SEND_PROXY_V1
                   : sp == 2 ? CLUSTER_SEND_PROXY_V2
                             : CLUSTER_SEND_PROXY_NONE;
    snprintf(what, sizeof(what), "route %s %s", addr, host);
    oom = add_entry(e, prefix, &k, cluster_route_to_json(&r), what) != 0;
    e->routes++;
    rc = SQLITE_OK;
  }
  /* Each loop body leaves rc at SQLITE_OK, so a loop ends with DONE, an error or oom. */
  int ok = rc == SQLITE_DONE && !oom;
  if (!ok)
    fprintf(stderr, "mc-proxy cluster: reading the database: %s\n",
            oom ? "out of memory" : sqlite3_errmsg(db));
  sqlite3_finalize(st);
  sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  return ok ? 0 : -1;
}

/* How many keys are under prefix now, for the refusal message (-1 if etcd did not say). */
static int64_t count_keys(etcd_client_t *etcd, const char *prefix, const char *end)
{
  etcd_range_t r;
  char err[256];
  if (etcd_client_range(etcd, prefix, end, 0, 1, &r, err, sizeof(err)) != 0)
    return -1;
  int64_t n = r.count;
  etcd_range_release(&r);
  return n;
}

/*
 * Writes the entries in transactions of IMPORT_BATCH puts. The first holds only when the prefix
 * is empty; each later one only when its own keys are still absent (someone writing under the
 * prefix meanwhile stops the import there). Returns the exit status.
 */
static int write_entries(etcd_client_t *etcd, const char *prefix, const entries_t *e)
{
  size_t plen = strlen(prefix);
  char *end = malloc(plen + 1);
  etcd_op_t *ops = calloc(IMPORT_BATCH, sizeof(*ops));
  etcd_compare_t *cmp = calloc(IMPORT_BATCH, sizeof(*cmp));
  int status = EXIT_REFUSED;
  size_t written = 0, batches = 0;
  int64_t revision = 0;
  char err[512];

  if (!end || !ops || !cmp) {
    fprintf(stderr, "mc-proxy cluster: out of memory\n");
    goto out;
  }
  end[etcd_prefix_end(prefix, plen, end)] = '\0'; /* the config's prefix is never empty */

  for (size_t at = 0; at < e->n; batches++) {
    size_t n = e->n - at < IMPORT_BATCH ? e->n - at : IMPORT_BATCH;
    etcd_txn_t txn = {.compare = cmp, .success = ops, .n_success = n};
    if (at == 0) {
      cmp[0] = (etcd_compare_t){.key = prefix,
                                .range_end = end,
                                .target = ETCD_TARGET_VERSION,
                                .result = ETCD_CMP_EQUAL,
                                .number = 0};
      txn.n_compare = 1;
    }
    for (size_t i = 0; i < n; i++) {
      ops[i] =
          (etcd_op_t){.type = ETCD_OP_PUT, .key = e->v[at + i].key, .value = e->v[at + i].value};
      if (at > 0)
        cmp[i] = (etcd_compare_t){.key = e->v[at + i].key,
                                  .target = ETCD_TARGET_VERSION,
                                  .result = ETCD_CMP_EQUAL,
                                  .number = 0};
    }
    if (at > 0)
      txn.n_compare = n;
    etcd_txn_result_t res;
    int rc = etcd_client_txn(etcd, &txn, &res, err, sizeof(err));
    if (rc == ETCD_EUNKNOWN) {
      fprintf(stderr,
              "mc-proxy cluster: etcd did not answer transaction %zu (keys %zu to %zu): it may "
              "or may not have been written (%s); %zu keys were written before it. Look with "
              "'etcdctl get --prefix %s --keys-only'\n",
              batches + 1, at + 1, at + n, err, written, prefix);
      goto out;
    }
    if (rc != 0) {
      fprintf(stderr, "mc-proxy cluster: etcd: %s%s\n", err,
              written ? "; the keys written so far stay" : "; nothing was written");
      if (written)
        fprintf(stderr, "mc-proxy cluster: %zu keys written up to revision %" PRId64 "\n", written,
                revision);
      goto out;
    }
    int ok = res.succeeded;
    int64_t rev = res.revision;
    etcd_txn_release(&res);
    if (!ok && at == 0) {
      int64_t k = count_keys(etcd, prefix, end);
      if (k >= 0)
        fprintf(stderr,
                "mc-proxy cluster: refused: the prefix %s already holds %" PRId64
                " key%s (etcd revision %" PRId64 "); import writes only into an empty prefix. "
                "Nothing was written.\n",
                prefix, k, k == 1 ? "" : "s", rev);
      else
        fprintf(stderr,
                "mc-proxy cluster: refused: the prefix %s is not empty (etcd revision %" PRId64
                "); nothing was written\n",
                prefix, rev);
      goto out;
    }
    if (!ok) {
      fprintf(stderr,
              "mc-proxy cluster: stopped: a key of transaction %zu (keys %zu to %zu) appeared "
              "under %s while importing (someone else writes there); %zu keys were written up "
              "to revision %" PRId64 " and stay\n",
              batches + 1, at + 1, at + n, prefix, written, revision);
      goto out;
    }
    written += n;
    revision = rev;
    at += n;
  }
  printf("imported %zu keys (%zu listeners, %zu firewall rules, %zu routes) under %s in %zu "
         "transaction%s; etcd revision %" PRId64 "\n",
         written, e->listeners, e->rules, e->routes, prefix, batches, batches == 1 ? "" : "s",
         revision);
  status = EXIT_OK;
out:
  free(end);
  free(ops);
  free(cmp);
  return status;
}

int cluster_import(const char *config, int dry_run)
{
  config_t cfg;
  int rc = cluster_load_config(config, &cfg);
  if (rc >= 0)
    return rc;
  int status = EXIT_REFUSED;
  entries_t e = {0};
  etcd_client_t *etcd = NULL;
  /* Version 4 brought the listener settings and send_proxy that the values carry. */
  sqlite3 *db = cli_open_db_readonly("cluster", cfg.db_path, 4);
  if (!db)
    goto out;
  if (read_state(db, cfg.cluster_prefix, &e) != 0)
    goto out;
  if (e.bad) {
    fprintf(stderr,
            "mc-proxy cluster: %zu item%s of the database cannot be written as cluster keys "
            "(above); nothing was written\n",
            e.bad, e.bad == 1 ? "" : "s");
    goto out;
  }
  if (dry_run) {
    for (size_t i = 0; i < e.n; i++)
      printf("%s %s\n", e.v[i].key, e.v[i].value);
    fprintf(stderr, "%zu keys (%zu listeners, %zu firewall rules, %zu routes); not written\n", e.n,
            e.listeners, e.rules, e.routes);
    status = EXIT_OK;
    goto out;
  }
  if (e.n == 0) {
    fprintf(stderr, "mc-proxy cluster: %s holds no listener, route or rule: nothing to import\n",
            cfg.db_path);
    status = EXIT_OK;
    goto out;
  }
  if (cluster_open_etcd(&cfg, &etcd) != 0)
    goto out;
  status = write_entries(etcd, cfg.cluster_prefix, &e);
out:
  if (etcd)
    etcd_client_close(etcd);
  entries_free(&e);
  sqlite3_close(db);
  config_free(&cfg);
  return status;
}
