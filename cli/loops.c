/* loops: is a new listen address some route's or fallback's backend? See loops.h. */
#include <stdio.h>

#include "config.h"
#include "loops.h"

/* The first route whose backend reaches the new address. */
typedef struct target_s {
  const struct sockaddr_storage *addr;
  const char *hostname; /* NULL until found */
  const mcp_backend_t *backend;
} target_t;

static int route_targets(void *data, const char *hostname, const mcp_backend_t *backend)
{
  target_t *t = data;
  if (config_find_loop_any(backend, t->addr, 1) != 0)
    return 0;
  t->hostname = hostname;
  t->backend = backend;
  return 1;
}

int loops_listener_targeted(state_t *st, const char *addr, const struct sockaddr_storage *ss,
                            char *msg, size_t msglen)
{
  for (size_t i = 0; i < st->nlisteners; i++) {
    const char *laddr = mcp_listener_addr(st->listeners[i]);
    const char *fallback = st->settings[i].fallback;
    mcp_backend_t fb;
    if (fallback[0] && mcp_backend_parse(fallback, &fb) == 0 &&
        config_find_loop_any(&fb, ss, 1) == 0) {
      snprintf(msg, msglen,
               "listener %s would receive the traffic of listener %s's fallback %s (a loop)", addr,
               laddr, fb.text);
      return MCP_ELOOP;
    }
    target_t t = {ss, NULL, NULL};
    int rc = mcp_routes_foreach(mcp_listener_routes(st->listeners[i]), route_targets, &t);
    if (rc == 1) {
      snprintf(msg, msglen,
               "listener %s would receive the traffic of route %s on %s to backend %s (a loop)",
               addr, t.hostname, laddr, t.backend->text);
      return MCP_ELOOP;
    }
    if (rc) {
      snprintf(msg, msglen, "cannot check the routes of %s: %s", laddr, mcp_strerror(rc));
      return rc;
    }
  }
  return 0;
}
