/*
 * admin_rpc: the methods of the admin API (proto/mc_proxy/v1/admin.proto), one small function
 * per RPC, served by admin_server.c. Reads (GetStatus, ListRoutes, ListFirewallRules) are
 * answered at once from the live state; changes become control_submit() requests and are
 * answered when control says how they ended. All on the loop thread.
 */
#ifndef MCP_CLI_ADMIN_RPC_H
#define MCP_CLI_ADMIN_RPC_H

#include <stddef.h>

#include "admin_server.h"
#include "cluster.h"
#include "control.h"
#include "state.h"

/* What the methods work on: the ctx given to admin_server_start with admin_rpc_methods. */
typedef struct admin_rpc_s {
  state_t *st;
  control_t *ctl;
  cluster_t *cluster; /* NULL without [cluster] */
} admin_rpc_t;

extern const admin_method_t admin_rpc_methods[];
extern const size_t admin_rpc_nmethods;

/* Maps a control status (control.h) to a gRPC status code (grpc_status_code values). */
int admin_rpc_status(int control_status);

#endif
