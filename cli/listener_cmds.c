/*
 * `mc-proxy listener` (docs/man/mc-proxy.1): list, add, remove and change a running instance's
 * listeners and their settings over gRPC. Shares options and the client with admin_cmds.c
 * (admin_cmds.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin_cmds.h"
#include "cli.h"

static const char listener_usage[] =
    "usage: mc-proxy listener list -c FILE [--json]\n"
    "       mc-proxy listener add -c FILE ADDR [SETTINGS]\n"
    "       mc-proxy listener remove -c FILE ADDR\n"
    "       mc-proxy listener set -c FILE ADDR SETTINGS\n"
    "       mc-proxy listener set-max-connections -c FILE ADDR N\n"
    "\n"
    "Shows or changes the listeners of a running mc-proxy. 'add' binds ADDR at once and saves\n"
    "it; 'remove' stops accepting on ADDR at once (its established connections run on); 'set'\n"
    "changes only the settings given. Changes are saved to the database before they apply.\n"
    "\n"
    "SETTINGS:\n"
    "      --max-connections N      connections at once on this listener (0 = unlimited)\n"
    "      --proxy-protocol on|off  every connection starts with a PROXY v1 or v2 header\n"
    "      --proxy-from CIDR        a peer that may send one; repeatable, replaces the list\n"
    "      --fallback BACKEND|none  backend for hellos with no SNI or no matching route\n"
    "      --rate-limit N/PERIOD|0  new connections per client per period (20/1s); 0 = off\n"
    "      --max-per-client N       connections at once per client (0 = unlimited)\n"
    "      --json                   list: print JSON\n";

/* ---- printing ---- */

static void format_period(int64_t ms, char *buf, size_t len)
{
  if (ms > 0 && ms % 3600000 == 0)
    snprintf(buf, len, "%" PRId64 "h", ms / 3600000);
  else if (ms > 0 && ms % 60000 == 0)
    snprintf(buf, len, "%" PRId64 "m", ms / 60000);
  else if (ms > 0 && ms % 1000 == 0)
    snprintf(buf, len, "%" PRId64 "s", ms / 1000);
  else
    snprintf(buf, len, "%" PRId64 "ms", ms);
}

static void format_rate(const McProxy__V1__ListenerSettings *s, char *buf, size_t len)
{
  char period[32];
  if (!s || s->rate_limit_count <= 0) {
    snprintf(buf, len, "0");
    return;
  }
  format_period(s->rate_limit_period_ms, period, sizeof(period));
  snprintf(buf, len, "%" PRId64 "/%s", s->rate_limit_count, period);
}

void format_settings(const McProxy__V1__ListenerSettings *s, char *buf, size_t len)
{
  char rate[64];
  format_rate(s, rate, sizeof(rate));
  size_t n = (size_t)snprintf(buf, len, "max_connections=%" PRId64 " proxy_protocol=%s proxy_from=",
                              s ? s->max_connections : 0, s && s->proxy_protocol ? "on" : "off");
  if (!s || s->n_proxy_from == 0)
    n += (size_t)snprintf(buf + (n < len ? n : len), n < len ? len - n : 0, "-");
  for (size_t i = 0; s && i < s->n_proxy_from; i++)
    n += (size_t)snprintf(buf + (n < len ? n : len), n < len ? len - n : 0, "%s%s", i ? "," : "",
                          s->proxy_from[i]);
  snprintf(buf + (n < len ? n : len), n < len ? len - n : 0,
           " fallback=%s rate_limit=%s max_connections_per_client=%" PRId64,
           s && s->fallback && s->fallback[0] ? s->fallback : "-", rate,
           s ? s->max_connections_per_client : 0);
}

void print_settings_json(const McProxy__V1__ListenerSettings *s)
{
  char rate[64];
  format_rate(s, rate, sizeof(rate));
  printf("{\"max_connections\":%" PRId64 ",\"proxy_protocol\":%s,\"proxy_from\":[",
         s ? s->max_connections : 0, s && s->proxy_protocol ? "true" : "false");
  for (size_t i = 0; s && i < s->n_proxy_from; i++) {
    if (i)
      putchar(',');
    json_str(s->proxy_from[i]);
  }
  printf("],\"fallback\":");
  json_str(s && s->fallback ? s->fallback : "");
  printf(",\"rate_limit\":");
  json_str(rate);
  printf(",\"rate_limit_count\":%" PRId64 ",\"rate_limit_period_ms\":%" PRId64
         ",\"max_connections_per_client\":%" PRId64 "}",
         s ? s->rate_limit_count : 0, s ? s->rate_limit_period_ms : 0,
         s ? s->max_connections_per_client : 0);
}

/* ---- options -> settings ---- */

/* A whole number; a negative one is the server's to refuse (INVALID_ARGUMENT). */
static int parse_int(const char *name, const char *text, int64_t *out)
{
  char *end;
  errno = 0;
  long long n = strtoll(text, &end, 10);
  if (end == text || *end || (errno && errno != ERANGE))
    return cli_usage_error("listener", "%s must be a whole number, not '%s'", name, text);
  if (errno == ERANGE || n > CONFIG_MAX_CONNECTIONS_MAX)
    return cli_usage_error("listener", "%s must be from 0 to %d, not '%s'", name,
                           CONFIG_MAX_CONNECTIONS_MAX, text);
  *out = n;
  return -1;
}

/* Fills s from the options given (only those). Returns -1 to go on, or the exit status. */
static int settings_from_opts(const opts_t *o, McProxy__V1__ListenerSettings *s)
{
  int rc;
  const char *v;
  if ((v = o->setting[SET_MAX_CONNECTIONS])) {
    if ((rc = parse_int("--max-connections", v, &s->max_connections)) >= 0)
      return rc;
    s->opt_max_connections_case =
        MC_PROXY__V1__LISTENER_SETTINGS__OPT_MAX_CONNECTIONS_MAX_CONNECTIONS;
  }
  if ((v = o->setting[SET_PROXY_PROTOCOL])) {
    if (strcmp(v, "on") && strcmp(v, "off"))
      return cli_usage_error("listener", "--proxy-protocol takes on or off, not '%s'", v);
    s->proxy_protocol = !strcmp(v, "on");
    s->opt_proxy_protocol_case = MC_PROXY__V1__LISTENER_SETTINGS__OPT_PROXY_PROTOCOL_PROXY_PROTOCOL;
  }
  if ((v = o->setting[SET_FALLBACK])) {
    s->fallback = (char *)(strcmp(v, "none") ? v : "");
    s->opt_fallback_case = MC_PROXY__V1__LISTENER_SETTINGS__OPT_FALLBACK_FALLBACK;
  }
  if ((v = o->setting[SET_RATE_LIMIT])) {
    uint32_t count, period;
    char why[128];
    if (config_parse_rate(v, &count, &period, why, sizeof(why)) != 0)
      return cli_usage_error("listener", "--rate-limit '%s': %s", v, why);
    s->rate_limit_count = count;
    s->rate_limit_period_ms = period;
    s->opt_rate_limit_count_case =
        MC_PROXY__V1__LISTENER_SETTINGS__OPT_RATE_LIMIT_COUNT_RATE_LIMIT_COUNT;
    s->opt_rate_limit_period_ms_case =
        MC_PROXY__V1__LISTENER_SETTINGS__OPT_RATE_LIMIT_PERIOD_MS_RATE_LIMIT_PERIOD_MS;
  }
  if ((v = o->setting[SET_MAX_PER_CLIENT])) {
    if ((rc = parse_int("--max-per-client", v, &s->max_connections_per_client)) >= 0)
      return rc;
    s->opt_max_connections_per_client_case =
        MC_PROXY__V1__LISTENER_SETTINGS__OPT_MAX_CONNECTIONS_PER_CLIENT_MAX_CONNECTIONS_PER_CLIENT;
  }
  if (o->proxy_from_set) {
    s->proxy_from_set = 1;
    s->n_proxy_from = (size_t)o->nproxy_from;
    s->proxy_from = (char **)o->proxy_from;
  }
  return -1;
}

/* ---- subcommands ---- */

static int listener_list(admin_client_t *c, const opts_t *o)
{
  McProxy__V1__ListListenersRequest req = MC_PROXY__V1__LIST_LISTENERS_REQUEST__INIT;
  McProxy__V1__ListListenersResponse *resp = NULL;
  int rc = rpc(c, "ListListeners", &req, &mc_proxy__v1__list_listeners_response__descriptor, &resp);
  if (rc != EXIT_OK)
    return rc;
  if (o->json)
    printf("[");
  for (size_t i = 0; i < resp->n_listeners; i++) {
    const McProxy__V1__Listener *l = resp->listeners[i];
    if (o->json) {
      printf("%s{\"addr\":", i ? "," : "");
      json_str(l->addr);
      printf(",\"settings\":");
      print_settings_json(l->settings);
      printf("}");
    } else {
      char line[2048];
      format_settings(l->settings, line, sizeof(line));
      printf("%s %s\n", l->addr, line);
    }
  }
  if (o->json)
    printf("]\n");
  free_msg(resp);
  return EXIT_OK;
}

static int listener_change(admin_client_t *c, const opts_t *o, const char *sub)
{
  McProxy__V1__ListenerSettings settings = MC_PROXY__V1__LISTENER_SETTINGS__INIT;
  int rc = settings_from_opts(o, &settings);
  if (rc >= 0)
    return rc;
  const char *addr = o->args[1];
  ProtobufCMessage *resp = NULL;
  if (!strcmp(sub, "add")) {
    McProxy__V1__AddListenerRequest req = MC_PROXY__V1__ADD_LISTENER_REQUEST__INIT;
    req.listener_addr = (char *)addr;
    req.settings = &settings;
    rc = rpc(c, "AddListener", &req, &mc_proxy__v1__add_listener_response__descriptor, &resp);
    if (rc == EXIT_OK)
      printf("listener %s added\n", addr);
  } else if (!strcmp(sub, "remove")) {
    McProxy__V1__RemoveListenerRequest req = MC_PROXY__V1__REMOVE_LISTENER_REQUEST__INIT;
    req.listener_addr = (char *)addr;
    rc = rpc(c, "RemoveListener", &req, &mc_proxy__v1__remove_listener_response__descriptor, &resp);
    if (rc == EXIT_OK)
      printf("listener %s removed\n", addr);
  } else {
    McProxy__V1__UpdateListenerRequest req = MC_PROXY__V1__UPDATE_LISTENER_REQUEST__INIT;
    req.listener_addr = (char *)addr;
    req.settings = &settings;
    rc = rpc(c, "UpdateListener", &req, &mc_proxy__v1__update_listener_response__descriptor, &resp);
    if (rc == EXIT_OK)
      printf("listener %s saved\n", addr);
  }
  free_msg(resp);
  return rc;
}

static int set_max_connections(admin_client_t *c, const opts_t *o)
{
  int64_t n = 0;
  int rc = parse_int("N", o->args[2], &n);
  if (rc >= 0)
    return rc;
  McProxy__V1__SetListenerMaxConnectionsRequest req =
      MC_PROXY__V1__SET_LISTENER_MAX_CONNECTIONS_REQUEST__INIT;
  req.listener_addr = o->args[1];
  req.max_connections = n;
  McProxy__V1__SetListenerMaxConnectionsResponse *resp = NULL;
  rc = rpc(c, "SetListenerMaxConnections", &req,
           &mc_proxy__v1__set_listener_max_connections_response__descriptor, &resp);
  if (rc == EXIT_OK)
    printf("listener %s max_connections %" PRId64 " saved\n", o->args[1], n);
  free_msg(resp);
  return rc;
}

/* Checks the arguments of sub before anything connects. Returns -1 to go on, or the status. */
static int check_args(const opts_t *o, const char *sub)
{
  if (!strcmp(sub, "list")) {
    if (o->nargs != 1 || o->nsettings)
      return cli_usage_error("listener", "list takes no arguments or settings");
    return -1;
  }
  if (o->json)
    return cli_usage_error("listener", "--json goes with list only");
  if (!strcmp(sub, "set-max-connections")) {
    if (o->nargs != 3 || o->nsettings)
      return cli_usage_error("listener", "set-max-connections takes ADDR N");
    return -1;
  }
  if (strcmp(sub, "add") && strcmp(sub, "remove") && strcmp(sub, "set"))
    return cli_usage_error(
        "listener", "unknown subcommand '%s' (list, add, remove, set, set-max-connections)", sub);
  if (o->nargs != 2)
    return cli_usage_error("listener", "%s takes ADDR", sub);
  if (!strcmp(sub, "remove") && o->nsettings)
    return cli_usage_error("listener", "remove takes no settings");
  if (!strcmp(sub, "set") && !o->nsettings)
    return cli_usage_error("listener", "set needs at least one setting");
  /* Settings that do not parse are usage errors before anything is sent. */
  McProxy__V1__ListenerSettings s = MC_PROXY__V1__LISTENER_SETTINGS__INIT;
  return settings_from_opts(o, &s);
}

int cmd_listener(int argc, char **argv)
{
  opts_t o;
  int rc = parse_opts("listener", listener_usage, 1, argc, argv, &o);
  if (rc >= 0)
    return rc;
  if (o.nargs < 1)
    return cli_usage_error("listener", "say list, add, remove, set or set-max-connections");
  const char *sub = o.args[0];
  if ((rc = check_args(&o, sub)) >= 0)
    return rc;
  admin_client_t *c = NULL;
  if ((rc = connect_client("listener", &o, &c)) != 0)
    return rc;
  if (!strcmp(sub, "list"))
    rc = listener_list(c, &o);
  else if (!strcmp(sub, "set-max-connections"))
    rc = set_max_connections(c, &o);
  else
    rc = listener_change(c, &o, sub);
  admin_client_close(c);
  return rc;
}
