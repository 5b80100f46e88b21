/*
 * loops: the admin API's check that a listener added at runtime is not where an existing route
 * or fallback already sends its traffic (the traffic would come back into the proxy and be
 * routed again). The config file refuses the same listeners (config.c, check_loops); both judge
 * a backend with config_find_loop_any. Main (loop) thread only: it reads the live state.
 */
#ifndef MCP_CLI_LOOPS_H
#define MCP_CLI_LOOPS_H

#include <stddef.h>
#include <sys/socket.h>

#include "state.h"

/*
 * Whether some listener's fallback or route in st reaches the listen address addr (text, for
 * the message) parsed as *ss: IP backends and "localhost" names; other hostnames are checked at
 * every connect. Returns 0, MCP_ELOOP with the route or fallback named in msg, or MCP_ENOMEM.
 * Walks every route: tens of milliseconds for 100,000 routes, once per AddListener.
 */
int loops_listener_targeted(state_t *st, const char *addr, const struct sockaddr_storage *ss,
                            char *msg, size_t msglen);

#endif
