/*
 * config: the INI file described in docs/man/mc-proxy.ini.5, parsed with inih.
 *
 * config_load() fills a config_t or fails with one message naming the file, the line and
 * the problem ("mc-proxy.ini:12: [listener \"...\"] route: backend \"x\" is not host:port").
 * Relative paths in the file are resolved against the directory of the config file.
 * Owned by the caller; free with config_free(). Main thread only.
 */
#ifndef MCP_CLI_CONFIG_H
#define MCP_CLI_CONFIG_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "mcproxy/firewall.h"
#include "mcproxy/backend.h"
#include "mcproxy/routes.h"

#define CONFIG_ADDR_MAX 64
/* Most proxy_from ranges per listener: a few load balancers' networks, not a block list. */
#define CONFIG_PROXY_FROM_MAX 32

/*
 * The largest max_connections a listener may have, in the file, on the command line and through
 * the admin API alike (docs/RUNBOOK.md, "max_connections"). Far above what descriptors allow.
 */
#define CONFIG_MAX_CONNECTIONS_MAX 1000000000

/* [cluster]: at most this many etcd endpoints, and the key prefix when none is given. */
#define CONFIG_ETCD_MAX_ENDPOINTS 16
#define CONFIG_ETCD_PREFIX "/mc-proxy/"

typedef struct config_route_s {
  char hostname[MCP_HOSTNAME_MAX + 1]; /* normalised; may be a wildcard "*.example.com" */
  char backend[MCP_BACKEND_MAX];       /* canonical */
  int send_proxy;                      /* 0 none, 1 send-proxy-v1, 2 send-proxy-v2 */
  int line;
} config_route_t;

/*
 * A listener's settings (docs/man/mc-proxy.ini.5), the same in the file, the database and the
 * admin API. Plain data, copied by value.
 */
typedef struct listener_settings_s {
  int64_t max_connections;                                           /* 0 = unlimited */
  int proxy_protocol;                                                /* 1 = on */
  char proxy_from[CONFIG_PROXY_FROM_MAX][MCP_FIREWALL_VALUE_MAX];    /* canonical CIDRs */
  size_t nproxy_from;
  char fallback[MCP_BACKEND_MAX];                                    /* canonical, "" = none */
  uint32_t rate_count;                                               /* 0 = off */
  uint32_t rate_period_ms;
  int64_t max_per_client;                                            /* 0 = unlimited */
} listener_settings_t;

typedef struct config_listener_s {
  char addr[CONFIG_ADDR_MAX]; /* canonical (mcp_listener_addr_parse) */
  int64_t max_connections;
  listener_settings_t settings; /* max_connections is also here */
  int proxy_protocol_line, fallback_line; /* where they were set, or 0 */
  config_route_t *routes;
  size_t nroutes;
  int line;
} config_listener_t;

typedef struct config_rule_s {
  mcp_firewall_type_t type;
  char value[MCP_FIREWALL_VALUE_MAX]; /* canonical (mcp_firewall_normalize) */
  int line;
} config_rule_t;

typedef struct config_s {
  char path[PATH_MAX]; /* the config file itself */

  /* [database] */
  char db_path[PATH_MAX];

  /* [proxy] */
  uint64_t connect_timeout_ms;   /* default 5 s */
  uint64_t idle_timeout_ms;      /* default 5 min */
  uint64_t handshake_timeout_ms; /* default 10 s */
  uint64_t shutdown_timeout_ms;  /* default 30 s */
  int workers;                   /* default 0: one per CPU */
  int copy_relay;                /* relay = copy (1) or splice (0, the default) */
  int log_level;                 /* log.h LOG_*; default LOG_INFO */

  /* [grpc]; has_grpc is 0 when the section is absent. */
  int has_grpc;
  char grpc_addr[PATH_MAX + 8]; /* "unix:/path" or "host:port" */
  int grpc_is_unix;
  unsigned socket_mode; /* default 0600 */
  char tls_cert[PATH_MAX], tls_key[PATH_MAX], client_ca[PATH_MAX];
  int client_auth_none; /* client_auth = none: a TCP addr without client_ca, chosen knowingly */
  /* Client-side credentials for the admin commands (optional). */
  char client_cert[PATH_MAX], client_key[PATH_MAX], server_ca[PATH_MAX];

  /* [metrics]; has_metrics is 0 when the section is absent. */
  int has_metrics;
  char metrics_addr[CONFIG_ADDR_MAX]; /* canonical IPv4:port or [IPv6]:port */

  /*
   * [cluster]: the desired state comes from etcd (docs/SCALING.md); has_cluster is 0 when the
   * section is absent. The prefix defaults to CONFIG_ETCD_PREFIX.
   */
  int has_cluster;
  char etcd_endpoints[CONFIG_ETCD_MAX_ENDPOINTS][MCP_BACKEND_MAX + 16]; /* http(s)://HOST:PORT */
  int netcd;
  char cluster_prefix[256];
  char etcd_ca[PATH_MAX], etcd_cert[PATH_MAX], etcd_key[PATH_MAX];

  /* [firewall] */
  char geoip_db[PATH_MAX];
  config_rule_t *rules;
  size_t nrules;

  /* [listener "ADDR"] sections, in file order. */
  config_listener_t *listeners;
  size_t nlisteners;
} config_t;

/* Returns 0, or -1 with a "file:line: problem" message in err. */
int config_load(const char *path, config_t *cfg, char *err, size_t errlen);
void config_free(config_t *cfg);

/*
 * Frees only the listeners, routes and firewall rules (the seed of a first run), keeping every
 * other setting. The server calls it once the database is loaded: with 100,000 routes in the file
 * they would otherwise hold tens of MiB for the life of the process.
 */
void config_free_seed(config_t *cfg);

/*
 * Which of the proxy's own listeners (n parsed listen addresses) a route to backend would reach,
 * connecting to itself forever: its index, or -1 for none. Used for the file (config_load) and
 * for admin changes (control.c), so both refuse the same loops.
 */
int config_find_loop(const mcp_backend_t *backend, const struct sockaddr_storage *listen_addrs,
                     size_t n);

/*
 * config_find_loop() for any backend without DNS: IP backends as there, the names "localhost"
 * and "*.localhost" as the loopback addresses, other hostnames never (-1: they are resolved when
 * the admin API adds them, and checked again at every connect). Fast enough to run over every
 * route of a large table on the loop thread.
 */
int config_find_loop_any(const mcp_backend_t *backend, const struct sockaddr_storage *listen_addrs,
                         size_t n);

/*
 * Parses "N/PERIOD" ("20/1s", "100/1m") or "0" (off) into count and period_ms. Returns 0, or
 * -1 with a reason in err: not N/PERIOD, a zero period ("10/0s"), or a count or period beyond
 * client_limits.h's bounds.
 */
int config_parse_rate(const char *text, uint32_t *count, uint32_t *period_ms, char *err,
                      size_t errlen);

/*
 * Checks a listener's settings as a whole, as the file and the admin API both must: every
 * number >= 0, proxy_from entries canonical CIDRs, proxy_protocol on only with proxy_from.
 * Returns 0, or -1 with the problem in err.
 */
int config_check_settings(const listener_settings_t *s, char *err, size_t errlen);

/* Parses "250ms", "5s", "2m", "1h" or a bare number of seconds. Returns 0 or -1. */
int config_parse_duration(const char *text, uint64_t *ms);

#endif
