/*
 * drift: does the config file still say what the database holds? After the first run the
 * database is the source of truth for listeners, routes and firewall rules and the file's copies
 * are ignored; the server's start-up log and `mc-proxy check` both report the differences (a
 * count and the first DRIFT_SHOW) at warn level. Lines of text are compared: one per route
 * (its send-proxy included) and rule, and per listener one for its address and max_connections
 * plus one for each setting that is not at its default ("listener ADDR fallback=B",
 * "... proxy_protocol=on", "... proxy_from=CIDR" per range, "... rate_limit=N/Pms",
 * "... max_connections_per_client=N"), so a warning names the setting that differs.
 */
#ifndef MCP_CLI_DRIFT_H
#define MCP_CLI_DRIFT_H

#include <stddef.h>

#include "config.h"
#include "mcproxy/mcproxy.h"

#define DRIFT_SHOW 5

/* A set of description lines ("listener ADDR max_connections=N", "route ADDR HOST BACKEND",
 * "rule TYPE V"). */
typedef struct drift_set_s {
  char **v;
  size_t n, cap;
} drift_set_t;

int drift_add(drift_set_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void drift_free(drift_set_t *s);
#define DRIFT_PROXY_FROM_FMT "listener %s proxy_from=%s"

/* The lines of one listener (settings->max_connections included). Returns 0 or MCP_ENOMEM. */
int drift_add_listener(drift_set_t *s, const char *addr, const listener_settings_t *settings);
/* The line of one route; send_proxy 0 none, 1 v1, 2 v2. Returns 0 or MCP_ENOMEM. */
int drift_add_route(drift_set_t *s, const char *addr, const char *hostname, const char *backend,
                    int send_proxy);

/* The lines of the config's listeners, routes and rules. Returns 0 or MCP_ENOMEM. */
int drift_from_config(const config_t *cfg, drift_set_t *s);

/*
 * Compares (sorting both). Returns the number of lines in only one of them and writes the first
 * DRIFT_SHOW as "only in the config: ..." / "only in the database: ..." into show (*nshow of
 * them, 256 bytes each).
 */
size_t drift_compare(drift_set_t *cfg, drift_set_t *db, char show[][256], size_t *nshow);

/*
 * `mc-proxy check`: reads (read-only, never migrating) the database named by cfg, if it exists
 * with this binary's schema and is not empty, and prints the differences as warnings to
 * stderr. Returns the number of differences (0 also when there is no database yet).
 */
size_t drift_check(const config_t *cfg);

#endif
