/* state: lookups over the main loop's state. See state.h. */
#include "state.h"

#include <stdio.h>
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
  memmove(&st->settings[i], &st->settings[i + 1], (st->nlisteners - i - 1) * sizeof(*st->settings));
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

void state_settings_to_store(const listener_settings_t *s, mcp_store_listener_settings_t *out,
                             const char **from)
{
  mcp_store_listener_settings_init(out);
  out->max_connections = s->max_connections;
  out->proxy_protocol = s->proxy_protocol;
  for (size_t i = 0; i < s->nproxy_from; i++)
    from[i] = s->proxy_from[i];
  out->proxy_from = from;
  out->proxy_from_count = s->nproxy_from;
  out->fallback = s->fallback;
  out->rate_limit_count = s->rate_count;
  out->rate_limit_period_ms = s->rate_period_ms;
  out->max_connections_per_client = s->max_per_client;
}

void state_settings_from_store(const mcp_store_listener_settings_t *in, listener_settings_t *s)
{
  memset(s, 0, sizeof(*s));
  s->max_connections = in->max_connections;
  s->proxy_protocol = in->proxy_protocol;
  for (size_t i = 0; i < in->proxy_from_count && i < CONFIG_PROXY_FROM_MAX; i++)
    snprintf(s->proxy_from[s->nproxy_from++], MCP_FIREWALL_VALUE_MAX, "%s", in->proxy_from[i]);
  snprintf(s->fallback, sizeof(s->fallback), "%s", in->fallback ? in->fallback : "");
  s->rate_count = in->rate_limit_count > 0 ? (uint32_t)in->rate_limit_count : 0;
  s->rate_period_ms = in->rate_limit_period_ms > 0 ? (uint32_t)in->rate_limit_period_ms : 0;
  s->max_per_client = in->max_connections_per_client;
}

/* The fallback lives in the route table: publish a copy with the new one when it changed. */
static int apply_fallback(mcp_listener_t *l, const char *fallback)
{
  mcp_routes_t *cur = mcp_listener_routes(l);
  const mcp_backend_t *fb = mcp_routes_fallback(cur);
  if (!strcmp(fb ? fb->text : "", fallback))
    return 0;
  mcp_routes_t *rt;
  int rc = mcp_routes_clone(cur, &rt);
  if (rc)
    return rc;
  rc = mcp_routes_set_fallback(rt, fallback[0] ? fallback : NULL);
  if (!rc)
    mcp_listener_set_routes(l, rt);
  mcp_routes_unref(rt);
  return rc;
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
  if (!rc)
    rc = apply_fallback(l, s->fallback);
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
