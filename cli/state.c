/* state: lookups over the main loop's state. See state.h. */
#include "state.h"

#include <stdlib.h>
#include <string.h>

int state_listener_index(state_t *st, const char *addr)
{
  char canon[64];
  struct sockaddr_storage ss;
  if (mcp_listener_addr_parse(addr, &ss, canon) != 0)
    return -1;
  for (size_t i = 0; i < st->nlisteners; i++)
    if (!strcmp(mcp_listener_addr(st->listeners[i]), canon))
      return (int)i;
  return -1;
}

mcp_listener_t *state_find_listener(state_t *st, const char *addr)
{
  int i = state_listener_index(st, addr);
  return i < 0 ? NULL : st->listeners[i];
}

int state_add_listener(state_t *st, mcp_listener_t *l, const listener_settings_t *settings)
{
  mcp_listener_t **v = realloc(st->listeners, (st->nlisteners + 1) * sizeof(*v));
  if (!v)
    return MCP_ENOMEM;
  st->listeners = v;
  listener_settings_t *s = realloc(st->settings, (st->nlisteners + 1) * sizeof(*s));
  if (!s)
    return MCP_ENOMEM;
  st->settings = s;
  st->listeners[st->nlisteners] = l;
  st->settings[st->nlisteners] = *settings;
  st->nlisteners++;
  return 0;
}

void state_remove_listener(state_t *st, size_t i)
{
  mcp_listener_t *l = st->listeners[i];
  mcp_listener_stop(l);
  mcp_listener_t **v = realloc(st->retired, (st->nretired + 1) * sizeof(*v));
  if (v) {
    st->retired = v;
    st->retired[st->nretired++] = l;
  } else {
    /* No room to remember it: close its connections rather than leak it. */
    mcp_listener_free(l, NULL, NULL);
  }
  memmove(&st->listeners[i], &st->listeners[i + 1], (st->nlisteners - i - 1) * sizeof(*v));
  memmove(&st->settings[i], &st->settings[i + 1],
          (st->nlisteners - i - 1) * sizeof(*st->settings));
  st->nlisteners--;
}

void state_free_retired(state_t *st)
{
  size_t kept = 0;
  for (size_t i = 0; i < st->nretired; i++) {
    mcp_listener_stats_t stats;
    mcp_listener_get_stats(st->retired[i], &stats);
    if (stats.active_connections == 0)
      mcp_listener_free(st->retired[i], NULL, NULL);
    else
      st->retired[kept++] = st->retired[i];
  }
  st->nretired = kept;
}

/* The peers that may send a PROXY header, as a sealed firewall of CIDR rules (NULL if none). */
static int trusted_peers(const listener_settings_t *s, mcp_firewall_t **out)
{
  *out = NULL;
  if (s->nproxy_from == 0)
    return 0;
  mcp_firewall_t *fw;
  int rc = mcp_firewall_new(&fw);
  for (size_t i = 0; rc == 0 && i < s->nproxy_from; i++)
    rc = mcp_firewall_add(fw, MCP_FIREWALL_CIDR, s->proxy_from[i]);
  if (rc == 0)
    rc = mcp_firewall_seal(fw);
  if (rc) {
    mcp_firewall_unref(fw);
    return rc;
  }
  *out = fw;
  return 0;
}

int state_apply_settings(state_t *st, size_t i)
{
  const listener_settings_t *s = &st->settings[i];
  mcp_listener_t *l = st->listeners[i];
  mcp_client_limits_settings_t cl = {
      .rate_count = s->rate_count,
      .rate_period_ms = s->rate_period_ms,
      .max_connections = (uint32_t)s->max_per_client,
  };
  mcp_firewall_t *trusted;
  int rc = trusted_peers(s, &trusted);
  if (rc)
    return rc;
  rc = mcp_listener_set_proxy_protocol(l, s->proxy_protocol, trusted);
  mcp_firewall_unref(trusted);
  if (!rc)
    rc = mcp_listener_set_client_limits(l, &cl);
  if (rc)
    return rc;
  mcp_listener_set_max_connections(l, s->max_connections);
  return 0;
}

void state_set_firewall(state_t *st, mcp_firewall_t *fw)
{
  for (size_t i = 0; i < st->nlisteners; i++)
    mcp_listener_set_firewall(st->listeners[i], fw);
  mcp_firewall_unref(st->firewall);
  st->firewall = fw;
}
