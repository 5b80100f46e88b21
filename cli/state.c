/* state: lookups over the main loop's state. See state.h. */
#include "state.h"

#include <string.h>

mcp_listener_t *state_find_listener(state_t *st, const char *addr)
{
  char canon[64];
  struct sockaddr_storage ss;
  if (mcp_listener_addr_parse(addr, &ss, canon) != 0)
    return NULL;
  for (size_t i = 0; i < st->nlisteners; i++)
    if (!strcmp(mcp_listener_addr(st->listeners[i]), canon))
      return st->listeners[i];
  return NULL;
}

void state_set_firewall(state_t *st, mcp_firewall_t *fw)
{
  for (size_t i = 0; i < st->nlisteners; i++)
    mcp_listener_set_firewall(st->listeners[i], fw);
  mcp_firewall_unref(st->firewall);
  st->firewall = fw;
}
