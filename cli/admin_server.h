/*
 * admin_server: the gRPC ProxyAdminService (SPEC §5) served with gRPC core's C API.
 *
 * A completion-queue thread of its own receives calls and hands each request to the loop thread
 * (uv_async + a queue); the loop thread answers reads from the live state and turns mutations
 * into control_submit() requests, replying when they complete.
 */
#ifndef MCP_CLI_ADMIN_SERVER_H
#define MCP_CLI_ADMIN_SERVER_H

#include <stddef.h>

#include "server.h"

/*
 * Starts serving on srv->cfg's [grpc] addr; sets srv->admin. Loop thread, after the listeners
 * have started. Returns 0, or -1 with a message in err (bad certs, address in use, a live unix
 * socket owned by another instance).
 */
int admin_server_start(server_t *srv, char *err, size_t errlen);

/*
 * Stops accepting calls, cancels those in flight, joins the completion-queue thread and frees
 * everything; srv->admin becomes NULL. Loop thread. Safe when srv->admin is NULL.
 */
void admin_server_stop(server_t *srv);

#endif
