/*
 * The cluster command (docs/SCALING.md, "Moving a fleet over"; docs/man/mc-proxy.1): its
 * arguments, and
 * - import (cluster_import.c): this instance's state from its database into an empty prefix;
 * - status: the running instance's view (GetStatus's cluster part) next to etcd's (revision and
 *   the number of keys under the prefix), and whether the instance has applied every key.
 * Exit status per cli.h.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin_cmds.h"
#include "cli.h"
#include "cluster.h"
#include "cluster_cmds.h"
#include "config.h"
#include "etcd_client.h"

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
  int import;  /* 1 import, 0 status */
  opts_t conn; /* config and the admin connection options */
  int dry_run;
} args_t;

enum { OPT_DRY_RUN = 256, OPT_JSON, OPT_ADDR, OPT_CERT, OPT_KEY, OPT_CA };

/* Returns -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, args_t *a)
{
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'},
      {"dry-run", no_argument, NULL, OPT_DRY_RUN},
      {"json", no_argument, NULL, OPT_JSON},
      {"addr", required_argument, NULL, OPT_ADDR},
      {"cert", required_argument, NULL, OPT_CERT},
      {"key", required_argument, NULL, OPT_KEY},
      {"ca", required_argument, NULL, OPT_CA},
      {"help", no_argument, NULL, 'h'},
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
  const char *sub = argv[optind++];
  if (!sub || (strcmp(sub, "import") && strcmp(sub, "status")))
    return cli_usage_error("cluster", "unknown subcommand '%s'", sub ? sub : "");
  a->import = !strcmp(sub, "import");
  if (optind < argc)
    return cli_usage_error("cluster", "unexpected argument '%s'", argv[optind]);
  if (!a->conn.config)
    return cli_usage_error("cluster", "-c FILE is required");
  if (a->dry_run && !a->import)
    return cli_usage_error("cluster", "--dry-run goes with import");
  if (a->import && (a->conn.json || a->conn.addr || a->conn.cert || a->conn.key || a->conn.ca))
    return cli_usage_error("cluster", "import takes -c FILE and --dry-run only");
  return -1;
}

/* Loads FILE, which must have a [cluster] section. Returns -1 to go on, or the exit status. */
int cluster_load_config(const char *path, config_t *cfg)
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

int cluster_open_etcd(const config_t *cfg, etcd_client_t **out)
{
  char err[256];
  if (cluster_etcd_open(cfg, out, err, sizeof(err)) != 0) {
    fprintf(stderr, "mc-proxy cluster: etcd: %s\n", err);
    return -1;
  }
  return 0;
}

/* ---- status ---- */

typedef struct etcd_view_s {
  int reached;
  char err[256];
  char endpoint[160];
  int64_t revision, keys;
  int64_t applied; /* the instance's applied revision compared with (-1: none) */
  int in_step;     /* -1 unknown, 0 a key was written after the applied revision, 1 none */
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
  v->applied = applied;
  end[etcd_prefix_end(cfg->cluster_prefix, plen, end)] = '\0';
  if (cluster_open_etcd(cfg, &etcd) != 0) {
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
      etcd_compare_t cmp = {.key = cfg->cluster_prefix,
                            .range_end = end,
                            .target = ETCD_TARGET_MOD,
                            .result = ETCD_CMP_LESS,
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
           cfg->cluster_prefix, v->applied);
  else if (v->in_step == 0)
    printf("in step: NO: keys under %s were written after the instance's applied revision "
           "%" PRId64 " (it is behind)\n",
           cfg->cluster_prefix, v->applied);
}

static int cluster_status(args_t *a)
{
  config_t cfg;
  int rc = cluster_load_config(a->conn.config, &cfg);
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
  int code =
      admin_client_call(c, "GetStatus", &req.base, &mc_proxy__v1__get_status_response__descriptor,
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
  return a.import ? cluster_import(a.conn.config, a.dry_run) : cluster_status(&a);
}
