/*
 * cluster_write: an admin change in cluster mode, written to etcd as one transaction
 * conditioned on what the change checks (docs/SCALING.md, "Admin changes"):
 *
 *   AddListener          listeners/ADDR absent   → put it            else ALREADY_EXISTS
 *   RemoveListener       listeners/ADDR present  → delete it and routes/ADDR/...  else NOT_FOUND
 *   UpdateListener,
 *   SetMaxConnections    listeners/ADDR unchanged since read → put the given settings merged
 *                        over the value etcd holds (read again and retried when another
 *                        writer came in between)          absent: NOT_FOUND
 *   AddRoute             listeners/ADDR present  → put routes/ADDR/HOST          else NOT_FOUND
 *   RemoveRoute          routes/ADDR/HOST present → delete it                     else NOT_FOUND
 *   AddFirewallRule      → put firewall/TYPE/VALUE (already there: fine)
 *   RemoveFirewallRule   firewall/TYPE/VALUE present → delete it                 else NOT_FOUND
 *
 * The request has been validated and normalised by control.c against this instance's state.
 * Blocks on etcd: call it on a work thread.
 */
#ifndef MCP_CLI_CLUSTER_WRITE_H
#define MCP_CLI_CLUSTER_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "control.h"
#include "etcd_client.h"

/*
 * Returns 0 with *revision = the etcd revision to wait for before answering; or an MCP_E*
 * status (control.h) with the reason in msg: MCP_ENOENT / MCP_EEXIST when the condition failed,
 * MCP_EBUSY when etcd could not be reached or did not answer (nothing done, or unknown: msg
 * says which), MCP_EIO when etcd refused, MCP_ENOMEM.
 */
int cluster_write_change(etcd_client_t *etcd, const char *prefix, const control_req_t *req,
                         int64_t *revision, char *msg, size_t msglen);

#endif
