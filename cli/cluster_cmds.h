/*
 * cluster_cmds: `mc-proxy cluster import|status` (docs/man/mc-proxy.1), split over
 * cluster_cmds.c (arguments, config, status) and cluster_import.c (import). Main thread of the
 * command only. Exit statuses per cli.h.
 */
#ifndef MCP_CLI_CLUSTER_CMDS_H
#define MCP_CLI_CLUSTER_CMDS_H

#include "config.h"
#include "etcd_client.h"

/* Loads path into cfg, which must have a [cluster] section; -1 to go on (cfg is then the
 * caller's to free), or the exit status after printing why. */
int cluster_load_config(const char *path, config_t *cfg);

/* An etcd client for cfg's [cluster] endpoints and TLS files; 0, or -1 after printing why. */
int cluster_open_etcd(const config_t *cfg, etcd_client_t **out);

/* `cluster import -c config [--dry-run]`. */
int cluster_import(const char *config, int dry_run);

#endif
