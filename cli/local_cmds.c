/*
 * The commands that work on local files only, without a running server:
 * - check: load and validate a config (and that the files it names can be read);
 * - snapshot: a consistent online copy of the database (VACUUM INTO, safe while the server
 *   writes), by default into <db dir>/backups/. It opens the database read-only: it never
 *   creates or migrates one and refuses a schema newer than this build knows.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "certs.h"
#include "cli.h"
#include "config.h"
#include "drift.h"
#include "mcproxy/firewall.h"
#include "mcproxy/store.h"

static const char check_usage[] =
    "usage: mc-proxy check -c FILE [-v]\n"
    "\n"
    "Validates a config without starting the proxy: every section and key, the listeners and\n"
    "routes, the firewall rules, and that the GeoIP database and admin TLS files can be read.\n"
    "Prints a summary and exits 0, or prints the first problem (FILE:LINE: ...) and exits 2.\n"
    "\n"
    "  -c, --config FILE   the INI config\n"
    "  -v, --verbose       also print the effective settings, defaults and resolved paths\n"
    "                      included, one \"name = value\" per line\n"
    "  -h, --help          this help\n";

static const char snapshot_usage[] =
    "usage: mc-proxy snapshot -c FILE [-o OUT]\n"
    "\n"
    "Writes a consistent copy of the database (VACUUM INTO); safe while the server runs.\n"
    "Prints the path of the copy. OUT must not exist.\n"
    "\n"
    "  -c, --config FILE   the INI config ([database] path names the database)\n"
    "  -o, --output OUT    where to write the copy (default:\n"
    "                      <db dir>/backups/mc-proxy-<UTC YYYYmmddTHHMMSSZ>.db)\n"
    "  -h, --help          this help\n";

/*
 * Parses "-c FILE [-o OUT]" in any order with the positional arguments (GNU getopt permutes);
 * none are accepted. Returns -1 to go on, or an exit status (help, usage error).
 */
static int parse_args(const char *cmd, const char *usage, int argc, char **argv, int want_out,
                      const char **config, const char **out, int *verbose)
{
  static const struct option opts[] = {
      {"config", required_argument, NULL, 'c'},
      {"help", no_argument, NULL, 'h'},
      {"output", required_argument, NULL, 'o'},
      {NULL, 0, NULL, 0},
  };
  static const struct option check_opts[] = {
      {"config", required_argument, NULL, 'c'},
      {"help", no_argument, NULL, 'h'},
      {"verbose", no_argument, NULL, 'v'},
      {NULL, 0, NULL, 0},
  };
  int ch;
  optind = 0; /* a full reset of GNU getopt, in case anything ran it before */
  while ((ch = getopt_long(argc, argv, want_out ? "c:o:h" : "c:hv", want_out ? opts : check_opts,
                           NULL)) != -1) {
    switch (ch) {
    case 'c':
      *config = optarg;
      break;
    case 'o':
      *out = optarg;
      break;
    case 'v':
      *verbose = 1;
      break;
    case 'h':
      fputs(usage, stdout);
      return EXIT_OK;
    default:
      /* getopt has already said what was wrong. */
      return cli_usage_error(cmd, "bad usage");
    }
  }
  if (optind < argc)
    return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
  if (!*config)
    return cli_usage_error(cmd, "-c FILE is required");
  return -1;
}

/*
 * Parses the arguments (parse_args) and loads the config they name into cfg. Returns -1 to go
 * on (cfg is then the caller's to free), or the exit status to return at once.
 */
static int parse_and_load(const char *cmd, const char *usage, int argc, char **argv, int allow_out,
                          config_t *cfg, const char **out, int *verbose)
{
  const char *path = NULL;
  int rc = parse_args(cmd, usage, argc, argv, allow_out, &path, out, verbose);
  if (rc >= 0)
    return rc;
  char err[1024];
  if (config_load(path, cfg, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
    return EXIT_USAGE;
  }
  return -1;
}

/* The files the config names must be readable by this user (the server runs as it too). */
static int check_readable(const config_t *cfg, const char *what, const char *path)
{
  if (!path[0])
    return 0;
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "%s: %s %s: cannot read: %s\n", cfg->path, what, path, strerror(errno));
    return -1;
  }
  fclose(f);
  return 0;
}

/*
 * The effective settings, for operators and for tests of defaults and path resolution. A
 * listener's line holds every setting (docs/man/mc-proxy.1, "check"); rate_limit is given in ms
 * whatever unit the file used, and "none" stands for an empty proxy_from or no fallback.
 */
static void print_settings(const config_t *cfg)
{
  printf("database.path = %s\n", cfg->db_path);
  printf("proxy.connect_timeout_ms = %llu\n", (unsigned long long)cfg->connect_timeout_ms);
  printf("proxy.idle_timeout_ms = %llu\n", (unsigned long long)cfg->idle_timeout_ms);
  printf("proxy.handshake_timeout_ms = %llu\n", (unsigned long long)cfg->handshake_timeout_ms);
  printf("proxy.shutdown_timeout_ms = %llu\n", (unsigned long long)cfg->shutdown_timeout_ms);
  printf("proxy.workers = %d\n", cfg->workers);
  printf("proxy.relay = %s\n", cfg->copy_relay ? "copy" : "splice");
  printf("proxy.log_level = %d\n", cfg->log_level);
  if (cfg->has_grpc) {
    printf("grpc.addr = %s\n", cfg->grpc_addr);
    printf("grpc.socket_mode = %04o\n", cfg->socket_mode);
    printf("grpc.tls_cert = %s\n", cfg->tls_cert);
    printf("grpc.tls_key = %s\n", cfg->tls_key);
    printf("grpc.client_ca = %s\n", cfg->client_ca);
    printf("grpc.client_auth = %s\n", cfg->client_auth_none ? "none" : "");
    printf("grpc.client_cert = %s\n", cfg->client_cert);
    printf("grpc.client_key = %s\n", cfg->client_key);
    printf("grpc.server_ca = %s\n", cfg->server_ca);
  }
  printf("firewall.geoip_db = %s\n", cfg->geoip_db);
  for (size_t i = 0; i < cfg->nrules; i++)
    printf("firewall.rule = %s %s\n", mcp_firewall_type_name(cfg->rules[i].type),
           cfg->rules[i].value);
  for (size_t i = 0; i < cfg->nlisteners; i++) {
    const config_listener_t *l = &cfg->listeners[i];
    const listener_settings_t *ls = &l->settings;
    printf("listener = %s max_connections=%lld proxy_protocol=%s proxy_from=", l->addr,
           (long long)l->max_connections, ls->proxy_protocol ? "on" : "off");
    for (size_t j = 0; j < ls->nproxy_from; j++)
      printf("%s%s", j ? "," : "", ls->proxy_from[j]);
    printf("%s fallback=%s rate_limit=", ls->nproxy_from ? "" : "none",
           ls->fallback[0] ? ls->fallback : "none");
    if (ls->rate_count)
      printf("%lu/%lums", (unsigned long)ls->rate_count, (unsigned long)ls->rate_period_ms);
    else
      printf("0");
    printf(" max_connections_per_client=%lld\n", (long long)ls->max_per_client);
    for (size_t r = 0; r < l->nroutes; r++)
      printf("route = %s %s %s send_proxy=%s\n", l->addr, l->routes[r].hostname,
             l->routes[r].backend,
             l->routes[r].send_proxy == 1   ? "v1"
             : l->routes[r].send_proxy == 2 ? "v2"
                                            : "none");
  }
}

int cmd_check(int argc, char **argv)
{
  const char *out = NULL;
  int verbose = 0;
  config_t cfg;
  char err[1024];
  int rc = parse_and_load("check", check_usage, argc, argv, 0, &cfg, &out, &verbose);
  if (rc >= 0)
    return rc;

  int status = EXIT_OK;
  if (check_readable(&cfg, "[grpc] tls_cert", cfg.tls_cert) ||
      check_readable(&cfg, "[grpc] tls_key", cfg.tls_key) ||
      check_readable(&cfg, "[grpc] client_ca", cfg.client_ca) ||
      check_readable(&cfg, "[grpc] client_cert", cfg.client_cert) ||
      check_readable(&cfg, "[grpc] client_key", cfg.client_key) ||
      check_readable(&cfg, "[grpc] server_ca", cfg.server_ca))
    status = EXIT_USAGE;

  /* The admin certificates, checked as the server and the admin commands check them. */
  if (status == EXIT_OK) {
    char warn[1024];
    if (certs_check_config(&cfg, err, sizeof(err), warn, sizeof(warn)) != 0 ||
        (cfg.client_cert[0] &&
         certs_check_pair(cfg.client_cert, cfg.client_key, CERTS_CLIENT, err, sizeof(err)) != 0) ||
        (cfg.server_ca[0] && certs_check_ca(cfg.server_ca, err, sizeof(err)) != 0)) {
      fprintf(stderr, "%s: %s\n", cfg.path, err);
      status = EXIT_USAGE;
    } else if (warn[0]) {
      fprintf(stderr, "%s: warning: %s\n", cfg.path, warn);
    }
  }

  if (status == EXIT_OK && cfg.geoip_db[0]) {
    mcp_geoip_t *g = NULL;
    if (mcp_geoip_open(cfg.geoip_db, &g, err, sizeof(err)) != 0) {
      fprintf(stderr, "%s: [firewall] geoip_db: %s\n", cfg.path, err);
      status = EXIT_USAGE;
    }
    if (g)
      mcp_geoip_unref(g);
  }

  if (status == EXIT_OK) {
    size_t nroutes = 0;
    for (size_t i = 0; i < cfg.nlisteners; i++)
      nroutes += cfg.listeners[i].nroutes;
    printf("%s: ok (%zu listeners, %zu routes, %zu firewall rules)\n", cfg.path, cfg.nlisteners,
           nroutes, cfg.nrules);
    drift_check(&cfg); /* warnings only: the database wins, the file is still valid */
    if (verbose)
      print_settings(&cfg);
  }
  config_free(&cfg);
  return status;
}

/* <db dir>/backups/mc-proxy-<UTC timestamp>.db, creating backups/ (0700) when needed. */
static int default_snapshot_path(const char *db_path, char *out, size_t outlen)
{
  char dir[PATH_MAX];
  const char *slash = strrchr(db_path, '/');
  int n;
  if (!slash)
    n = snprintf(dir, sizeof(dir), "backups");
  else
    n = snprintf(dir, sizeof(dir), "%.*s/backups", (int)(slash - db_path), db_path);
  if (n < 0 || (size_t)n >= sizeof(dir)) {
    fprintf(stderr, "mc-proxy snapshot: %s: path too long\n", db_path);
    return -1;
  }
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    fprintf(stderr, "mc-proxy snapshot: cannot create %s: %s\n", dir, strerror(errno));
    return -1;
  }
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    fprintf(stderr, "mc-proxy snapshot: %s is not a directory\n", dir);
    return -1;
  }

  char stamp[32];
  time_t now = time(NULL);
  struct tm tm;
  if (!gmtime_r(&now, &tm) || strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm) == 0) {
    fprintf(stderr, "mc-proxy snapshot: cannot format the time\n");
    return -1;
  }
  n = snprintf(out, outlen, "%s/mc-proxy-%s.db", dir, stamp);
  if (n < 0 || (size_t)n >= outlen) {
    fprintf(stderr, "mc-proxy snapshot: %s: path too long\n", dir);
    return -1;
  }
  return 0;
}

sqlite3 *cli_open_db_readonly(const char *cmd, const char *path, int min_version)
{
  sqlite3 *db = NULL;
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
  if (rc != SQLITE_OK) {
    fprintf(stderr, "mc-proxy %s: %s: cannot open the database: %s\n", cmd, path,
            db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    goto fail;
  }
  sqlite3_busy_timeout(db, 5000); /* the server may be writing */
  rc = sqlite3_prepare_v2(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", -1, &stmt,
                          NULL);
  if (rc != SQLITE_OK || sqlite3_step(stmt) != SQLITE_ROW) {
    fprintf(stderr, "mc-proxy %s: %s: not an mc-proxy database (%s)\n", cmd, path,
            sqlite3_errmsg(db));
    goto fail;
  }
  sqlite3_int64 version = sqlite3_column_int64(stmt, 0);
  if (version > MCP_STORE_SCHEMA_VERSION) {
    fprintf(stderr,
            "mc-proxy %s: %s: database schema version %lld, this mc-proxy knows up to %d; "
            "use a newer mc-proxy\n",
            cmd, path, (long long)version, MCP_STORE_SCHEMA_VERSION);
    goto fail;
  }
  if (version < 1) {
    fprintf(stderr, "mc-proxy %s: %s: not an mc-proxy database (no schema version)\n", cmd, path);
    goto fail;
  }
  if (version < min_version) {
    fprintf(stderr,
            "mc-proxy %s: %s: database schema version %lld is older than this command reads "
            "(%d); start this mc-proxy on it once to migrate it\n",
            cmd, path, (long long)version, min_version);
    goto fail;
  }
  sqlite3_finalize(stmt);
  return db;

fail:
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return NULL;
}

/* VACUUM INTO out_path, which must not exist. Returns 0 or -1 after printing why. */
static int write_snapshot(sqlite3 *db, const char *out_path)
{
  /*
   * Claim the name atomically: O_EXCL refuses an existing file (or a symlink, dangling or not),
   * and VACUUM INTO accepts an empty file. A backup holds every route, so it is private.
   */
  int fd = open(out_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    fprintf(stderr, "mc-proxy snapshot: %s: %s\n", out_path,
            errno == EEXIST ? "already exists" : strerror(errno));
    return -1;
  }
  close(fd);
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(db, "VACUUM INTO ?1", -1, &stmt, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(stmt, 1, out_path, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(stmt);
  }
  if (rc != SQLITE_DONE) {
    fprintf(stderr, "mc-proxy snapshot: %s: %s\n", out_path, sqlite3_errmsg(db));
    sqlite3_finalize(stmt);
    unlink(out_path); /* ours (created above): no partial copy is left behind */
    return -1;
  }
  sqlite3_finalize(stmt);
  return 0;
}

int cmd_snapshot(int argc, char **argv)
{
  const char *out = NULL;
  int verbose = 0;
  config_t cfg;
  int rc = parse_and_load("snapshot", snapshot_usage, argc, argv, 1, &cfg, &out, &verbose);
  if (rc >= 0)
    return rc;

  int status = EXIT_REFUSED;
  char out_path[PATH_MAX];
  /* The database first: a wrong path must not even leave a backups/ directory behind. */
  sqlite3 *db = cli_open_db_readonly("snapshot", cfg.db_path, 1);
  if (!db)
    goto done;
  if (out)
    snprintf(out_path, sizeof(out_path), "%s", out);
  else if (default_snapshot_path(cfg.db_path, out_path, sizeof(out_path)) != 0)
    goto done;
  if (write_snapshot(db, out_path) != 0)
    goto done;
  printf("%s\n", out_path);
  status = EXIT_OK;

done:
  sqlite3_close(db);
  config_free(&cfg);
  return status;
}
