/*
 * server: wires config, store, firewall and listeners together on one uv loop, handles
 * signals and graceful shutdown. The server_t is owned by cmd_server() and lives on the main
 * (loop) thread; everything in it is touched only on that thread, except what the admin server
 * hands over through control.h.
 */
#ifndef MCP_CLI_SERVER_H
#define MCP_CLI_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "mcproxy/mcproxy.h"

typedef struct admin_server_s admin_server_t;
typedef struct control_req_s control_req_t;

typedef struct server_s {
  uv_loop_t *loop;
  mcp_config_t *cfg;
  mcp_store_t *store;
  mcp_listener_t **listeners; /* in address order */
  size_t nlisteners;
  mcp_firewall_t *firewall; /* the published snapshot (one reference held here) */
  mcp_geoip_t *geoip;       /* NULL without [firewall] geoip_db */
  int64_t started_at_unix;
  admin_server_t *admin;    /* NULL without [grpc] */
  mcp_listener_config_t listener_config; /* timeouts and log callback shared by all listeners */
  int nworkers;                          /* data-plane loops, the main loop included */
  struct workers_s *workers;             /* see workers.h */

  /* Write-through mutations run one at a time (control.c). */
  control_req_t *ctl_head, *ctl_tail;
  int ctl_busy;     /* a request is being written (or published to the workers) */
  int ctl_stopping; /* control_stop() was called */
  uv_work_t ctl_work;
} server_t;

/*
 * Starts prepare, a handle that writes the calling thread's buffered log lines (log_buffered)
 * in every iteration of loop before it waits for I/O, so lines from the previous iteration's
 * callbacks (close callbacks included) go out together. It does not keep the loop alive.
 */
void server_flush_logs_each_iteration(uv_loop_t *loop, uv_prepare_t *prepare);

/* The listener with this canonical address, or NULL. */
mcp_listener_t *server_find_listener(server_t *srv, const char *addr);

#endif
