/*
 * The cluster command (docs/SCALING.md, "Moving a fleet over"; docs/man/mc-proxy.1):
 * - import: this instance's listeners (with their settings), routes and firewall rules, read
 *   from its SQLite database read-only (safe while the server runs, never creating or migrating
 *   the file), written under the [cluster] prefix in etcd as the keys and values of
 *   cluster_values.h. Only into an empty prefix: the first transaction holds only if no key
 *   exists under it, later ones only if their own keys are still absent.
 * - status: the running instance's view (GetStatus's cluster part) next to etcd's (revision and
 *   the number of keys under the prefix), and whether the instance has applied every key.
 * Exit status per cli.h.
 */
#include <getopt.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin_cmds.h"
#include "cli.h"
#include "cluster_values.h"
#include "config.h"
#include "etcd_client.h"
#include "mcproxy/store.h"

/* etcd refuses a transaction with more operations (or compares) than --max-txn-ops, 128 by
 * default; every batch stays at or under it. */
#define IMPORT_BATCH 128

static const char cluster_usage[] =
    "usage: mc-proxy cluster import -c FILE [--dry-run]\n"
    "       mc-proxy cluster status -c FILE [--json]\n"
    "\n"
    "import: writes this instance's listeners (with their settings), routes and firewall\n"
    "rules, read from its database (read-only; the server may be running), under the\n"
    "[cluster] prefix in etcd, as the keys and values cluster mode reads. It refuses a prefix\n"
    "that already holds a key, and writes nothing then. Add [cluster] to FILE first; after\n"
    "the import, reload or restart each instance with [cluster] in its config.\n"
    "\n"
    "status: the running instance's cluster state (connected, applied revision, skipped\n"
    "values) next to etcd's (its revision and the number of keys under the prefix), and\n"
    "whether the instance has applied every key there. Exits 1 when either cannot be reached.\n"
    "\n"
    "  -c, --config FILE   the config: [database] path, [cluster] etcd and prefix, [grpc] addr\n"
    "      --dry-run       import: print the keys and values instead of writing them\n"
    "      --json          status: print JSON\n"
    "      --addr ADDR     status: the admin API at ADDR instead of [grpc] addr\n"
    "      --cert FILE, --key FILE, --ca FILE\n"
    "                      status: admin client credentials for a TCP addr\n"
    "  -h, --help          this help\n";

typedef struct args_s {
  const char *sub;
  opts_t conn; /* config and the admin connection options */
  int dry_run;
} args_t;

enum { OPT_DRY_RUN = 256, OPT_JSON, OPT_ADDR, OPT_CERT, OPT_KEY, OPT_CA };

/* Returns -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, args_t *a)
{
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'}, {"dry-run", no_argument, NULL, OPT_DRY_RUN},
      {"json", no_argument, NULL, OPT_JSON},    {"addr", required_argument, NULL, OPT_ADDR},
      {"cert", required_argument, NULL, OPT_CERT}, {"key", required_argument, NULL, OPT_KEY},
      {"ca", required_argument, NULL, OPT_CA},  {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  memset(a, 0, sizeof(*a));
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, ":c:h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'c':
      a->conn.config = optarg;
      break;
    case OPT_DRY_RUN:
      a->dry_run = 1;
      break;
    case OPT_JSON:
      a->conn.json = 1;
      break;
    case OPT_ADDR:
      a->conn.addr = optarg;
      break;
    case OPT_CERT:
      a->conn.cert = optarg;
      break;
    case OPT_KEY:
      a->conn.key = optarg;
      break;
    case OPT_CA:
      a->conn.ca = optarg;
      break;
    case 'h':
      fputs(cluster_usage, stdout);
      return EXIT_OK;
    case ':':
      return cli_usage_error("cluster", "option '%s' needs a value", argv[optind - 1]);
    default:
      return cli_usage_error("cluster", "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind >= argc)
    return cli_usage_error("cluster", "import or status?");
  a->sub = argv[optind++];
  if (strcmp(a->sub, "import") && strcmp(a->sub, "status"))
    return cli_usage_error("cluster", "unknown subcommand '%s'", a->sub);
  if (optind < argc)
    return cli_usage_error("cluster", "unexpected argument '%s'", argv[optind]);
  if (!a->conn.config)
    return cli_usage_error("cluster", "-c FILE is required");
  if (a->dry_run && strcmp(a->sub, "import"))
    return cli_usage_error("cluster", "--dry-run goes with import");
  if (!strcmp(a->sub, "import") &&
      (a->conn.json || a->conn.addr || a->conn.cert || a->conn.key || a->conn.ca))
    return cli_usage_error("cluster", "import takes -c FILE and --dry-run only");
  return -1;
}

/* Loads FILE, which must have a [cluster] section. Returns -1 to go on, or the exit status. */
static int load_config(const char *path, config_t *cfg)
{
  char err[1024];
  if (config_load(path, cfg, err, sizeof(err)) != 0) {
    fprintf(stderr, "mc-proxy: %s\n", err);
    return EXIT_USAGE;
  }
  if (!cfg->has_cluster) {
    fprintf(stderr,
            "mc-proxy cluster: %s has no [cluster] section: add one naming the etcd endpoints "
            "(etcd = ...) and the prefix\n",
            path);
    config_free(cfg);
    return EXIT_USAGE;
  }
  return -1;
}

static int open_etcd(const config_t *cfg, etcd_client_t **out)
{
  const char *eps[CONFIG_ETCD_MAX_ENDPOINTS];
  for (int i = 0; i < cfg->netcd; i++)
    eps[i] = cfg->etcd_endpoints[i];
  etcd_client_opts_t opts = {
      .endpoints = eps,
      .n_endpoints = (size_t)cfg->netcd,
      .ca_path = cfg->etcd_ca[0] ? cfg->etcd_ca : NULL,
      .cert_path = cfg->etcd_cert[0] ? cfg->etcd_cert : NULL,
      .key_path = cfg->etcd_key[0] ? cfg->etcd_key : NULL,
  };
  char err[256];
  if (etcd_client_open(&opts, out, err, sizeof(err)) != 0) {
    fprintf(stderr, "mc-proxy cluster: etcd: %s\n", err);
    return -1;
  }
  return 0;
}

/* ---- import: the database as keys and values ---- */

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

/* Opens the database read-only (never created, never migrated); NULL after printing why. */
static sqlite3 *open_db(const char *path)
{
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
  if (rc != SQLITE_OK) {
    fprintf(stderr, "mc-proxy cluster: %s: cannot open the database: %s\n", path,
            db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    goto fail;
  }
  sqlite3_busy_timeout(db, 5000); /* the server may be writing */
  if (sqlite3_prepare_v2(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", -1, &st,
                         NULL) != SQLITE_OK ||
      sqlite3_step(st) != SQLITE_ROW) {
    fprintf(stderr, "mc-proxy cluster: %s: not an mc-proxy database (%s)\n", path,
            sqlite3_errmsg(db));
    goto fail;
  }
  int64_t version = sqlite3_column_int64(st, 0);
  /* Version 4 brought the listener settings and send_proxy that the values carry. */
  if (version < 4 || version > MCP_STORE_SCHEMA_VERSION) {
    fprintf(stderr,
            "mc-proxy cluster: %s: database schema version %" PRId64 "; import reads versions 4 "
            "to %d (%s)\n",
            path, version, MCP_STORE_SCHEMA_VERSION,
            version < 4 ? "start this mc-proxy on it once to migrate it" : "use a newer mc-proxy");
    goto fail;
  }
  sqlite3_finalize(st);
  return db;
fail:
  sqlite3_finalize(st);
  sqlite3_close(db);
  return NULL;
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
    r.send_proxy = sp == 1 ? CLUSTER_SEND_PROXY_V1 : sp == 2 ? CLUSTER_SEND_PROXY_V2
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
      cmp[0] = (etcd_compare_t){.key = prefix, .range_end = end, .target = ETCD_TARGET_VERSION,
                                .result = ETCD_CMP_EQUAL, .number = 0};
      txn.n_compare = 1;
    }
    for (size_t i = 0; i < n; i++) {
      ops[i] = (etcd_op_t){.type = ETCD_OP_PUT, .key = e->v[at + i].key,
                           .value = e->v[at + i].value};
      if (at > 0)
        cmp[i] = (etcd_compare_t){.key = e->v[at + i].key, .target = ETCD_TARGET_VERSION,
                                  .result = ETCD_CMP_EQUAL, .number = 0};
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
        fprintf(stderr, "mc-proxy cluster: %zu keys written up to revision %" PRId64 "\n",
                written, revision);
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

static int cluster_import(const args_t *a)
{
  config_t cfg;
  int rc = load_config(a->conn.config, &cfg);
  if (rc >= 0)
    return rc;
  int status = EXIT_REFUSED;
  entries_t e = {0};
  etcd_client_t *etcd = NULL;
  sqlite3 *db = open_db(cfg.db_path);
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
  if (a->dry_run) {
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
  if (open_etcd(&cfg, &etcd) != 0)
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

/* ---- status ---- */

typedef struct etcd_view_s {
  int reached;
  char err[256];
  char endpoint[160];
  int64_t revision, keys;
  int in_step; /* -1 unknown, 0 a key was written after the applied revision, 1 none */
} etcd_view_t;

/*
 * etcd's side: its revision and the key count under the prefix (one Range with limit 1), and,
 * given the instance's applied revision, whether every key under the prefix was written at or
 * before it (a read-only Txn whose one compare covers the prefix: mod_revision < applied + 1).
 */
static void look_at_etcd(const config_t *cfg, int64_t applied, etcd_view_t *v)
{
  etcd_client_t *etcd = NULL;
  size_t plen = strlen(cfg->cluster_prefix);
  char end[sizeof(cfg->cluster_prefix)];
  memset(v, 0, sizeof(*v));
  v->in_step = -1;
  end[etcd_prefix_end(cfg->cluster_prefix, plen, end)] = '\0';
  if (open_etcd(cfg, &etcd) != 0) {
    snprintf(v->err, sizeof(v->err), "cannot open the etcd client");
    return;
  }
  etcd_range_t r;
  if (etcd_client_range(etcd, cfg->cluster_prefix, end, 0, 1, &r, v->err, sizeof(v->err)) == 0) {
    v->reached = 1;
    v->revision = r.revision;
    v->keys = r.count;
    etcd_range_release(&r);
    snprintf(v->endpoint, sizeof(v->endpoint), "%s", etcd_client_endpoint(etcd));
    if (applied >= 0) {
      etcd_compare_t cmp = {.key = cfg->cluster_prefix, .range_end = end,
                            .target = ETCD_TARGET_MOD, .result = ETCD_CMP_LESS,
                            .number = applied + 1};
      etcd_txn_t txn = {.compare = &cmp, .n_compare = 1};
      etcd_txn_result_t res;
      char err[256];
      if (etcd_client_txn(etcd, &txn, &res, err, sizeof(err)) == 0) {
        v->in_step = res.succeeded;
        etcd_txn_release(&res);
      }
    }
  }
  etcd_client_close(etcd);
}

static void print_status_json(const McProxy__V1__ClusterStatus *cs, const char *inst_err,
                              const etcd_view_t *v)
{
  printf("{\"instance\":");
  if (inst_err)
    printf("null");
  else
    print_cluster_status(cs, 1);
  printf(",\"instance_error\":");
  json_str(inst_err ? inst_err : "");
  if (v->reached) {
    printf(",\"etcd\":{\"endpoint\":");
    json_str(v->endpoint);
    printf(",\"revision\":%" PRId64 ",\"keys\":%" PRId64 "}", v->revision, v->keys);
  } else {
    printf(",\"etcd\":null");
  }
  printf(",\"etcd_error\":");
  json_str(v->reached ? "" : v->err);
  printf(",\"in_step\":%s}\n", v->in_step < 0 ? "null" : v->in_step ? "true" : "false");
}

static void print_status_text(const config_t *cfg, const McProxy__V1__ClusterStatus *cs,
                              const char *inst_err, const etcd_view_t *v)
{
  if (inst_err)
    printf("instance: cannot be reached: %s\n", inst_err);
  else if (!cs || !cs->enabled)
    printf("instance: not in cluster mode (its config has no [cluster]; restart or reload it "
           "with the new config)\n");
  else {
    printf("instance: ");
    print_cluster_status(cs, 0);
  }
  if (v->reached)
    printf("etcd: %s at revision %" PRId64 "; %" PRId64 " key%s under %s\n", v->endpoint,
           v->revision, v->keys, v->keys == 1 ? "" : "s", cfg->cluster_prefix);
  else
    printf("etcd: cannot be reached: %s\n", v->err);
  if (v->in_step == 1)
    printf("in step: yes: every key under %s was written at or before the instance's applied "
           "revision %" PRId64 "\n",
           cfg->cluster_prefix, cs->applied_revision);
  else if (v->in_step == 0)
    printf("in step: NO: keys under %s were written after the instance's applied revision "
           "%" PRId64 " (it is behind)\n",
           cfg->cluster_prefix, cs->applied_revision);
}

static int cluster_status(args_t *a)
{
  config_t cfg;
  int rc = load_config(a->conn.config, &cfg);
  if (rc >= 0)
    return rc;

  /* The instance first: its applied revision is what etcd's keys are compared with. */
  char inst_err[1024] = "";
  admin_client_t *c = NULL;
  McProxy__V1__GetStatusResponse *resp = NULL;
  rc = connect_client("cluster", &a->conn, &c);
  if (rc != 0) {
    config_free(&cfg);
    return rc;
  }
  McProxy__V1__GetStatusRequest req = MC_PROXY__V1__GET_STATUS_REQUEST__INIT;
  char msg[1024];
  int code = admin_client_call(c, "GetStatus", &req.base,
                               &mc_proxy__v1__get_status_response__descriptor,
                               (ProtobufCMessage **)&resp, msg, sizeof(msg));
  if (code != 0)
    snprintf(inst_err, sizeof(inst_err), "%s: %s", admin_status_name(code),
             msg[0] ? msg : "(no message)");
  admin_client_close(c);
  const McProxy__V1__ClusterStatus *cs = resp ? resp->cluster : NULL;
  int64_t applied = cs && cs->enabled ? cs->applied_revision : -1;

  etcd_view_t v;
  look_at_etcd(&cfg, applied, &v);
  if (a->conn.json)
    print_status_json(cs, inst_err[0] ? inst_err : NULL, &v);
  else
    print_status_text(&cfg, cs, inst_err[0] ? inst_err : NULL, &v);
  free_msg(resp);
  config_free(&cfg);
  return inst_err[0] || !v.reached ? EXIT_REFUSED : EXIT_OK;
}

int cmd_cluster(int argc, char **argv)
{
  args_t a;
  int rc = parse_args(argc, argv, &a);
  if (rc >= 0)
    return rc;
  return !strcmp(a.sub, "import") ? cluster_import(&a) : cluster_status(&a);
}
