/*
 * state: what the main loop holds while the proxy runs: config, store, listeners, the published
 * firewall and GeoIP database, the worker loops. Filled by server.c at start, read and changed by
 * control.c (admin changes) and admin_rpc.c (reads), handed to workers.c.
 *
 * The state_t is owned by cmd_server() (server.c) and lives on the main (loop) thread; every
 * field is touched only on that thread. It holds no control or admin-server state of its own:
 * those modules own their structs (control_t, admin_server_t); control and admin_rpc are given
 * a state_t.
 */
#ifndef MCP_CLI_STATE_H
#define MCP_CLI_STATE_H

#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "mcproxy/mcproxy.h"

typedef struct state_s {
  uv_loop_t *loop;
  config_t *cfg;
  mcp_store_t *store;
  mcp_listener_t **listeners;    /* in the order they were loaded or added */
  listener_settings_t *settings; /* settings[i] are listeners[i]'s, as saved */
  size_t nlisteners;
  /*
   * Listeners removed at runtime: no longer accepting, their connections run on. Freed once the
   * address has no active connection (state_free_retired) or at teardown.
   */
  mcp_listener_t **retired;
  size_t nretired;
  mcp_firewall_t *firewall; /* the published snapshot (one reference held here) */
  mcp_geoip_t *geoip;       /* NULL without [firewall] geoip_db */
  int64_t started_at_unix;
  mcp_listener_config_t listener_config; /* timeouts and log callback shared by all listeners */
  int nworkers;                          /* data-plane loops, the main loop included */
  struct workers_s *workers;             /* see workers.h; NULL before workers_start() */
} state_t;

/* The listener with this address (any spelling mcp_listener_addr_parse accepts), or NULL. */
mcp_listener_t *state_find_listener(state_t *st, const char *addr);

/* The index of the listener with this address in listeners[], or -1. */
int state_listener_index(state_t *st, const char *addr);

/*
 * Appends l (started, owned by st from now on) with its settings. Returns 0 or MCP_ENOMEM (st
 * unchanged).
 */
int state_add_listener(state_t *st, mcp_listener_t *l, const listener_settings_t *settings);

/* Takes listeners[i] out of the table, stops it accepting and retires it. */
void state_remove_listener(state_t *st, size_t i);

/* Frees the retired listeners whose address has no active connection left. */
void state_free_retired(state_t *st);

/*
 * A listener's settings as the store takes them; from (CONFIG_PROXY_FROM_MAX pointers) holds the
 * proxy_from list. Valid while s and from are.
 */
void state_settings_to_store(const listener_settings_t *s, mcp_store_listener_settings_t *out,
                             const char **from);
/* The store's settings as ours (strings copied; a list or value too long for ours is cut). */
void state_settings_from_store(const mcp_store_listener_settings_t *in, listener_settings_t *s);

/*
 * Gives listeners[i] its settings[i] on the main loop: limits, PROXY protocol, and the fallback
 * (a new route table when it changed). The worker loops are told separately (workers_publish).
 */
int state_apply_settings(state_t *st, size_t i);

/*
 * Publishes fw as the firewall of every main-loop listener and of st (dropping st's old
 * reference; st takes over the caller's). The worker loops are told separately (workers.h).
 */
void state_set_firewall(state_t *st, mcp_firewall_t *fw);

#endif
