/*
 * Internal: the relay (lib/relay.c), the second part of a connection's life. listener.c hands a
 * routed connection over here; from then on relay.c and conn.c (its close) own it.
 */
#ifndef MCPROXY_RELAY_H
#define MCPROXY_RELAY_H

#include "conn_internal.h"
#include "mcproxy/backend.h"

/*
 * Connects c to backend (IP backends at once, hostname backends after a lookup by the backend
 * resolver, lib/resolver.c, trying every address in order; never an address of one of this
 * process's listeners), within the connect timeout; then forwards the buffered ClientHello unchanged
 * and relays both directions until both have ended, an error, or the idle timeout. Every
 * failure ends in mcp__conn_close. The backend is copied; it need not outlive the call.
 */
void mcp__relay_connect(mcp__conn_t *c, const mcp_backend_t *backend);

#endif
