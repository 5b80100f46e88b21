/*
 * admin_rpc: the admin API's methods. See admin_rpc.h; the transport is admin_server.c.
 *
 * A read borrows strings from the live snapshots for as long as it takes to pack the reply
 * (nothing can change them in between: everything here runs on the loop thread). A change is
 * copied into a control request (refusing a field that does not fit rather than truncating it
 * into another, possibly valid, name), submitted, and answered from its done callback.
 */
#include "admin_rpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/status.h>

#include "log.h"
#include "mc_proxy/v1/admin.pb-c.h"
#include "metrics.h"

int admin_rpc_status(int status)
{
  switch (status) {
  case 0:
    return GRPC_STATUS_OK;
  case MCP_ENOENT:
    return GRPC_STATUS_NOT_FOUND;
  case MCP_EINVAL:
  case MCP_ERANGE:
  case MCP_ELOOP:
    return GRPC_STATUS_INVALID_ARGUMENT;
  case MCP_EEXIST:
    return GRPC_STATUS_ALREADY_EXISTS;
  case MCP_ENOGEOIP:
  case UV_EADDRINUSE:
  case UV_EADDRNOTAVAIL:
  case UV_EACCES:
    return GRPC_STATUS_FAILED_PRECONDITION;
  case MCP_EBUSY:
    return GRPC_STATUS_UNAVAILABLE;
  default:
    return GRPC_STATUS_INTERNAL;
  }
}

/* ---- reads ---- */

/*
 * A listener's settings as a message; strings are borrowed from s, and from from (room for
 * s->nproxy_from pointers). Valid while s is.
 */
static void settings_to_pb(const listener_settings_t *s, McProxy__V1__ListenerSettings *pb,
                           char **from)
{
  mc_proxy__v1__listener_settings__init(pb);
  pb->opt_max_connections_case =
      MC_PROXY__V1__LISTENER_SETTINGS__OPT_MAX_CONNECTIONS_MAX_CONNECTIONS;
  pb->max_connections = s->max_connections;
  pb->opt_proxy_protocol_case = MC_PROXY__V1__LISTENER_SETTINGS__OPT_PROXY_PROTOCOL_PROXY_PROTOCOL;
  pb->proxy_protocol = s->proxy_protocol;
  for (size_t i = 0; i < s->nproxy_from; i++)
    from[i] = (char *)s->proxy_from[i];
  pb->n_proxy_from = s->nproxy_from;
  pb->proxy_from = from;
  pb->proxy_from_set = 1;
  pb->opt_fallback_case = MC_PROXY__V1__LISTENER_SETTINGS__OPT_FALLBACK_FALLBACK;
  pb->fallback = (char *)s->fallback;
  pb->opt_rate_limit_count_case =
      MC_PROXY__V1__LISTENER_SETTINGS__OPT_RATE_LIMIT_COUNT_RATE_LIMIT_COUNT;
  pb->rate_limit_count = s->rate_count;
  pb->opt_rate_limit_period_ms_case =
      MC_PROXY__V1__LISTENER_SETTINGS__OPT_RATE_LIMIT_PERIOD_MS_RATE_LIMIT_PERIOD_MS;
  pb->rate_limit_period_ms = s->rate_period_ms;
  pb->opt_max_connections_per_client_case =
      MC_PROXY__V1__LISTENER_SETTINGS__OPT_MAX_CONNECTIONS_PER_CLIENT_MAX_CONNECTIONS_PER_CLIENT;
  pb->max_connections_per_client = s->max_per_client;
}

/* Messages for the settings of every listener, freed with settings_free. */
typedef struct settings_pb_s {
  McProxy__V1__ListenerSettings *pb;
  char **ptrs; /* CONFIG_PROXY_FROM_MAX per listener */
} settings_pb_t;

static int settings_alloc(state_t *srv, settings_pb_t *out)
{
  size_t n = srv->nlisteners ? srv->nlisteners : 1;
  out->pb = calloc(n, sizeof(*out->pb));
  out->ptrs = calloc(n * CONFIG_PROXY_FROM_MAX, sizeof(*out->ptrs));
  if (!out->pb || !out->ptrs) {
    free(out->pb);
    free(out->ptrs);
    return -1;
  }
  for (size_t i = 0; i < srv->nlisteners; i++)
    settings_to_pb(&srv->settings[i], &out->pb[i], &out->ptrs[i * CONFIG_PROXY_FROM_MAX]);
  return 0;
}

static void settings_free(settings_pb_t *s)
{
  free(s->pb);
  free(s->ptrs);
}

/* The outcome's total, by its name in the library (0 for an outcome this build lacks). */
static int64_t outcome_total(const metrics_totals_t *t, size_t nout, const char *name)
{
  for (size_t o = 0; o < nout; o++)
    if (!strcmp(mcp_conn_outcome_name((mcp_conn_outcome_t)o), name))
      return (int64_t)t->outcome[o];
  return 0;
}

/* The per-outcome counters and bytes of one listener, summed over every loop (metrics.h). */
static void set_outcome_totals(McProxy__V1__ListenerStatus *ls)
{
  metrics_totals_t t;
  size_t nout = metrics_outcome_count();
  metrics_listener_totals(ls->addr, &t);
  ls->ok_total = outcome_total(&t, nout, "ok");
  ls->rate_limited_total = outcome_total(&t, nout, "rate_limited");
  ls->timeout_total = outcome_total(&t, nout, "timeout");
  ls->backend_error_total = outcome_total(&t, nout, "backend_error");
  ls->proxy_error_total = outcome_total(&t, nout, "proxy_error");
  ls->error_total = outcome_total(&t, nout, "error");
  ls->shutdown_total = outcome_total(&t, nout, "shutdown");
  ls->bytes_in_total = (int64_t)t.bytes_in;
  ls->bytes_out_total = (int64_t)t.bytes_out;
}

static void do_get_status(void *ctx, admin_call_t *c)
{
  admin_rpc_t *rpc = ctx;
  state_t *srv = rpc->st;
  McProxy__V1__GetStatusResponse resp = MC_PROXY__V1__GET_STATUS_RESPONSE__INIT;
  size_t n = srv->nlisteners;
  McProxy__V1__ListenerStatus *ls = calloc(n ? n : 1, sizeof(*ls));
  McProxy__V1__ListenerStatus **lp = calloc(n ? n : 1, sizeof(*lp));
  settings_pb_t sp = {0};
  if (!ls || !lp || settings_alloc(srv, &sp) != 0) {
    free(ls);
    free(lp);
    admin_call_reply(c, GRPC_STATUS_INTERNAL, "out of memory", NULL);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    mcp_listener_stats_t st;
    mcp_listener_get_stats(srv->listeners[i], &st);
    mc_proxy__v1__listener_status__init(&ls[i]);
    ls[i].addr = (char *)mcp_listener_addr(srv->listeners[i]);
    ls[i].route_count = (int32_t)st.route_count;
    ls[i].active_connections = st.active_connections;
    ls[i].max_connections = st.max_connections;
    ls[i].accepted_total = st.accepted_total;
    ls[i].rejected_limit_total = st.rejected_limit_total;
    ls[i].blocked_total = st.blocked_total;
    ls[i].unrouted_total = st.unrouted_total;
    set_outcome_totals(&ls[i]);
    ls[i].fallback_total = st.fallback_total;
    ls[i].settings = &sp.pb[i];
    lp[i] = &ls[i];
  }
  resp.version = (char *)mcp_version();
  resp.started_at_unix = srv->started_at_unix;
  resp.n_listeners = n;
  resp.listeners = lp;
  resp.firewall_rule_count = srv->firewall ? (int32_t)mcp_firewall_count(srv->firewall) : 0;
  McProxy__V1__ClusterStatus cpb = MC_PROXY__V1__CLUSTER_STATUS__INIT;
  cluster_status_t cs;
  if (rpc->cluster) {
    cluster_get_status(rpc->cluster, &cs);
    cpb.enabled = 1;
    cpb.prefix = (char *)cluster_prefix(rpc->cluster);
    cpb.connected = cs.connected;
    cpb.endpoint = cs.endpoint;
    cpb.since_unix = cs.since_unix;
    cpb.applied_revision = cs.applied_revision;
    cpb.skipped_total = (int64_t)cs.skipped_total;
    cpb.last_error = cs.last_error;
    resp.cluster = &cpb;
  }
  admin_call_reply(c, GRPC_STATUS_OK, "", &resp.base);
  settings_free(&sp);
  free(lp);
  free(ls);
}

static void do_list_listeners(void *ctx, admin_call_t *c)
{
  admin_rpc_t *rpc = ctx;
  state_t *srv = rpc->st;
  size_t n = srv->nlisteners;
  McProxy__V1__Listener *items = calloc(n ? n : 1, sizeof(*items));
  McProxy__V1__Listener **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
  settings_pb_t sp = {0};
  if (!items || !ptrs || settings_alloc(srv, &sp) != 0) {
    free(items);
    free(ptrs);
    admin_call_reply(c, GRPC_STATUS_INTERNAL, "out of memory", NULL);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    mc_proxy__v1__listener__init(&items[i]);
    items[i].addr = (char *)mcp_listener_addr(srv->listeners[i]);
    items[i].settings = &sp.pb[i];
    ptrs[i] = &items[i];
  }
  McProxy__V1__ListListenersResponse resp = MC_PROXY__V1__LIST_LISTENERS_RESPONSE__INIT;
  resp.n_listeners = n;
  resp.listeners = ptrs;
  admin_call_reply(c, GRPC_STATUS_OK, "", &resp.base);
  settings_free(&sp);
  free(ptrs);
  free(items);
}

/*
 * Allocates a reply list: room for cap messages of size bytes each, and the array of pointers
 * to them that protobuf-c packs. Returns 0, or -1 when out of memory (c is then answered).
 */
static int list_alloc(admin_call_t *c, size_t cap, size_t size, void **items, void ***ptrs)
{
  *items = calloc(cap ? cap : 1, size);
  *ptrs = calloc(cap ? cap : 1, sizeof(void *));
  if (*items && *ptrs)
    return 0;
  free(*items);
  free(*ptrs);
  admin_call_reply(c, GRPC_STATUS_INTERNAL, "out of memory", NULL);
  return -1;
}

typedef struct route_list_s {
  McProxy__V1__Route *routes;
  McProxy__V1__Route **ptrs;
  size_t n, cap;
} route_list_t;

static int collect_route(void *data, const char *hostname, const mcp_backend_t *backend,
                         mcp_send_proxy_t send_proxy)
{
  route_list_t *rl = data;
  if (rl->n == rl->cap)
    return 1;
  McProxy__V1__Route *r = &rl->routes[rl->n];
  mc_proxy__v1__route__init(r);
  /* Borrowed from the table, which cannot change before the reply is packed below. */
  r->hostname = (char *)hostname;
  r->backend = (char *)backend->text;
  r->send_proxy = (McProxy__V1__ProxyProtocolVersion)send_proxy; /* the values match */
  rl->ptrs[rl->n++] = r;
  return 0;
}

static void do_list_routes(void *ctx, admin_call_t *c)
{
  admin_rpc_t *rpc = ctx;
  const McProxy__V1__ListRoutesRequest *req = (const void *)admin_call_request(c);
  if (!req->listener_addr[0]) {
    admin_call_reply(c, GRPC_STATUS_INVALID_ARGUMENT, "listener_addr is required", NULL);
    return;
  }
  mcp_listener_t *l = state_find_listener(rpc->st, req->listener_addr);
  if (!l) {
    char msg[CONFIG_ADDR_MAX + 32];
    snprintf(msg, sizeof(msg), "no listener %.*s", CONFIG_ADDR_MAX, req->listener_addr);
    admin_call_reply(c, GRPC_STATUS_NOT_FOUND, msg, NULL);
    return;
  }
  mcp_routes_t *rt = mcp_listener_routes(l);
  route_list_t rl = {0};
  rl.cap = rt ? mcp_routes_count(rt) : 0;
  void *items, **ptrs;
  if (list_alloc(c, rl.cap, sizeof(*rl.routes), &items, &ptrs) != 0)
    return;
  rl.routes = items;
  rl.ptrs = (McProxy__V1__Route **)ptrs;
  if (rt)
    mcp_routes_foreach_ex(rt, collect_route, &rl);
  McProxy__V1__ListRoutesResponse resp = MC_PROXY__V1__LIST_ROUTES_RESPONSE__INIT;
  resp.listener_addr = (char *)mcp_listener_addr(l);
  resp.n_routes = rl.n;
  resp.routes = rl.ptrs;
  admin_call_reply(c, GRPC_STATUS_OK, "", &resp.base);
  free(rl.ptrs);
  free(rl.routes);
}

typedef struct rule_list_s {
  McProxy__V1__FirewallRule *rules;
  McProxy__V1__FirewallRule **ptrs;
  size_t n, cap;
} rule_list_t;

static int collect_rule(void *data, mcp_firewall_type_t type, const char *value)
{
  rule_list_t *rl = data;
  if (rl->n == rl->cap)
    return 1;
  McProxy__V1__FirewallRule *r = &rl->rules[rl->n];
  mc_proxy__v1__firewall_rule__init(r);
  r->type = (McProxy__V1__FirewallRuleType)type; /* the values match (firewall.h) */
  r->value = (char *)value;
  rl->ptrs[rl->n++] = r;
  return 0;
}

static void do_list_rules(void *ctx, admin_call_t *c)
{
  admin_rpc_t *rpc = ctx;
  mcp_firewall_t *fw = rpc->st->firewall;
  rule_list_t rl = {0};
  rl.cap = fw ? mcp_firewall_count(fw) : 0;
  void *items, **ptrs;
  if (list_alloc(c, rl.cap, sizeof(*rl.rules), &items, &ptrs) != 0)
    return;
  rl.rules = items;
  rl.ptrs = (McProxy__V1__FirewallRule **)ptrs;
  if (fw)
    mcp_firewall_foreach(fw, collect_rule, &rl);
  McProxy__V1__ListFirewallRulesResponse resp = MC_PROXY__V1__LIST_FIREWALL_RULES_RESPONSE__INIT;
  resp.n_rules = rl.n;
  resp.rules = rl.ptrs;
  admin_call_reply(c, GRPC_STATUS_OK, "", &resp.base);
  free(rl.ptrs);
  free(rl.rules);
}

/* ---- changes ---- */

/* A change on its way through control; the call waits in the transport meanwhile. */
typedef struct change_s {
  control_req_t ctl;
  admin_call_t *call;
} change_t;

/* Logs a change's outcome with the peer it came from. */
static void log_change(admin_call_t *c, int status, const char *what, const char *msg)
{
  char peer[256];
  admin_call_peer(c, peer, sizeof(peer));
  if (status == GRPC_STATUS_OK)
    log_info("admin %s from %s: %s", admin_call_method(c), peer, what);
  else
    log_info("admin %s from %s: %s refused: %s", admin_call_method(c), peer, what, msg);
}

/* One line naming the change, for the log. */
static void describe(const control_req_t *req, char *what, size_t len)
{
  switch (req->op) {
  case CONTROL_ROUTE_ADD:
    snprintf(what, len, "route %s %s -> %s", req->listener, req->hostname, req->backend);
    break;
  case CONTROL_ROUTE_REMOVE:
    snprintf(what, len, "route %s %s", req->listener, req->hostname);
    break;
  case CONTROL_RULE_ADD:
  case CONTROL_RULE_REMOVE: {
    const char *t = mcp_firewall_type_name(req->rule_type);
    snprintf(what, len, "firewall %s %s", t ? t : "?", req->rule_value);
    break;
  }
  case CONTROL_SET_MAX_CONNECTIONS:
    snprintf(what, len, "listener %s max_connections %lld", req->listener,
             (long long)req->max_connections);
    break;
  case CONTROL_LISTENER_ADD:
    snprintf(what, len, "listener %s added", req->listener);
    break;
  case CONTROL_LISTENER_REMOVE:
    snprintf(what, len, "listener %s removed", req->listener);
    break;
  case CONTROL_LISTENER_UPDATE:
    snprintf(what, len, "listener %s settings", req->listener);
    break;
  default:
    snprintf(what, len, "?");
  }
}

static void on_control_done(control_req_t *req, int status, const char *msg)
{
  change_t *ch = req->data;
  admin_call_t *c = ch->call;
  int code = admin_rpc_status(status);
  if (admin_call_live(c)) {
    char what[CONFIG_ADDR_MAX + MCP_HOSTNAME_MAX + MCP_BACKEND_MAX + 64];
    describe(req, what, sizeof(what));
    log_change(c, code, what, msg);
  }
  /* Every change's response is an empty message, so nothing is packed. A call orphaned by
   * shutdown is only freed. */
  admin_call_reply(c, code, code == GRPC_STATUS_OK ? "" : msg, NULL);
  free(ch);
}

/* Starts a change for c; returns it, or NULL (c already answered) when out of memory. */
static change_t *change_new(admin_call_t *c, control_op_t op)
{
  change_t *ch = calloc(1, sizeof(*ch));
  if (!ch) {
    admin_call_reply(c, GRPC_STATUS_INTERNAL, "out of memory", NULL);
    return NULL;
  }
  ch->call = c;
  ch->ctl.op = op;
  ch->ctl.done = on_control_done;
  ch->ctl.data = ch;
  return ch;
}

/* Answers ch's call with an error and drops ch. */
static void change_refuse(change_t *ch, int status, const char *msg)
{
  admin_call_reply(ch->call, status, msg, NULL);
  free(ch);
}

static void submit(void *ctx, change_t *ch)
{
  admin_rpc_t *rpc = ctx;
  /* done may run before control_submit returns (a request that fails validation). */
  control_submit(rpc->ctl, &ch->ctl);
}

/* Copies src into dst; 0, or -1 when it does not fit (a silently truncated name would be
 * another, possibly valid, name). */
static int copy_field(char *dst, size_t dstlen, const char *src)
{
  size_t len = strlen(src);
  if (len >= dstlen)
    return -1;
  memcpy(dst, src, len + 1);
  return 0;
}

static void do_add_route(void *ctx, admin_call_t *c)
{
  const McProxy__V1__AddRouteRequest *req = (const void *)admin_call_request(c);
  if (!req->route) {
    admin_call_reply(c, GRPC_STATUS_INVALID_ARGUMENT, "route is required", NULL);
    return;
  }
  if (req->route->send_proxy < 0 || req->route->send_proxy > 2) {
    admin_call_reply(c, GRPC_STATUS_INVALID_ARGUMENT, "send_proxy must be NONE, V1 or V2", NULL);
    return;
  }
  change_t *ch = change_new(c, CONTROL_ROUTE_ADD);
  if (!ch)
    return;
  ch->ctl.send_proxy = (int)req->route->send_proxy;
  if (copy_field(ch->ctl.listener, sizeof(ch->ctl.listener), req->listener_addr) != 0)
    change_refuse(ch, GRPC_STATUS_NOT_FOUND, "no such listener (address too long)");
  else if (copy_field(ch->ctl.hostname, sizeof(ch->ctl.hostname), req->route->hostname) != 0)
    change_refuse(ch, GRPC_STATUS_INVALID_ARGUMENT, "invalid hostname (longer than 253 bytes)");
  else if (copy_field(ch->ctl.backend, sizeof(ch->ctl.backend), req->route->backend) != 0)
    change_refuse(ch, GRPC_STATUS_INVALID_ARGUMENT, "invalid backend (too long)");
  else
    submit(ctx, ch);
}

static void do_remove_route(void *ctx, admin_call_t *c)
{
  const McProxy__V1__RemoveRouteRequest *req = (const void *)admin_call_request(c);
  change_t *ch = change_new(c, CONTROL_ROUTE_REMOVE);
  if (!ch)
    return;
  if (copy_field(ch->ctl.listener, sizeof(ch->ctl.listener), req->listener_addr) != 0)
    change_refuse(ch, GRPC_STATUS_NOT_FOUND, "no such listener (address too long)");
  else if (copy_field(ch->ctl.hostname, sizeof(ch->ctl.hostname), req->hostname) != 0)
    change_refuse(ch, GRPC_STATUS_INVALID_ARGUMENT, "invalid hostname (longer than 253 bytes)");
  else
    submit(ctx, ch);
}

static void do_rule(void *ctx, admin_call_t *c, control_op_t op,
                    const McProxy__V1__FirewallRule *rule)
{
  if (!rule) {
    admin_call_reply(c, GRPC_STATUS_INVALID_ARGUMENT, "rule is required", NULL);
    return;
  }
  if (rule->type != MC_PROXY__V1__FIREWALL_RULE_TYPE__FIREWALL_RULE_TYPE_IP &&
      rule->type != MC_PROXY__V1__FIREWALL_RULE_TYPE__FIREWALL_RULE_TYPE_CIDR &&
      rule->type != MC_PROXY__V1__FIREWALL_RULE_TYPE__FIREWALL_RULE_TYPE_COUNTRY) {
    admin_call_reply(c, GRPC_STATUS_INVALID_ARGUMENT, "rule type must be IP, CIDR or COUNTRY",
                     NULL);
    return;
  }
  change_t *ch = change_new(c, op);
  if (!ch)
    return;
  ch->ctl.rule_type = (mcp_firewall_type_t)rule->type; /* the values match (firewall.h) */
  if (copy_field(ch->ctl.rule_value, sizeof(ch->ctl.rule_value), rule->value) != 0)
    change_refuse(ch, GRPC_STATUS_INVALID_ARGUMENT, "invalid firewall rule value (too long)");
  else
    submit(ctx, ch);
}

static void do_add_rule(void *ctx, admin_call_t *c)
{
  const McProxy__V1__AddFirewallRuleRequest *req = (const void *)admin_call_request(c);
  do_rule(ctx, c, CONTROL_RULE_ADD, req->rule);
}

static void do_remove_rule(void *ctx, admin_call_t *c)
{
  const McProxy__V1__RemoveFirewallRuleRequest *req = (const void *)admin_call_request(c);
  do_rule(ctx, c, CONTROL_RULE_REMOVE, req->rule);
}

static void do_set_max(void *ctx, admin_call_t *c)
{
  const McProxy__V1__SetListenerMaxConnectionsRequest *req = (const void *)admin_call_request(c);
  change_t *ch = change_new(c, CONTROL_SET_MAX_CONNECTIONS);
  if (!ch)
    return;
  ch->ctl.max_connections = req->max_connections;
  if (copy_field(ch->ctl.listener, sizeof(ch->ctl.listener), req->listener_addr) != 0)
    change_refuse(ch, GRPC_STATUS_NOT_FOUND, "no such listener (address too long)");
  else
    submit(ctx, ch);
}

/*
 * Copies the settings present in pb into the request (set_mask says which). Returns 0, or -1
 * after answering c (a field that does not fit).
 */
static int settings_from_pb(change_t *ch, const McProxy__V1__ListenerSettings *pb)
{
  control_req_t *r = &ch->ctl;
  if (!pb)
    return 0;
  if (pb->opt_max_connections_case) {
    r->settings.max_connections = pb->max_connections;
    r->set_mask |= CONTROL_SET_MAX_CONNECTIONS_BIT;
  }
  if (pb->opt_proxy_protocol_case) {
    r->settings.proxy_protocol = !!pb->proxy_protocol;
    r->set_mask |= CONTROL_SET_PROXY_PROTOCOL;
  }
  if (pb->proxy_from_set || pb->n_proxy_from) {
    if (pb->n_proxy_from > CONFIG_PROXY_FROM_MAX) {
      change_refuse(ch, GRPC_STATUS_INVALID_ARGUMENT, "proxy_from holds at most 32 ranges");
      return -1;
    }
    for (size_t i = 0; i < pb->n_proxy_from; i++)
      if (copy_field(r->settings.proxy_from[i], MCP_FIREWALL_VALUE_MAX, pb->proxy_from[i]) != 0) {
        change_refuse(ch, GRPC_STATUS_INVALID_ARGUMENT, "proxy_from: not a CIDR range (too long)");
        return -1;
      }
    r->settings.nproxy_from = pb->n_proxy_from;
    r->set_mask |= CONTROL_SET_PROXY_FROM;
  }
  if (pb->opt_fallback_case) {
    if (copy_field(r->settings.fallback, sizeof(r->settings.fallback),
                   pb->fallback ? pb->fallback : "") != 0) {
      change_refuse(ch, GRPC_STATUS_INVALID_ARGUMENT, "invalid fallback (too long)");
      return -1;
    }
    r->set_mask |= CONTROL_SET_FALLBACK;
  }
  if (pb->opt_rate_limit_count_case) {
    r->rate_count = pb->rate_limit_count;
    r->set_mask |= CONTROL_SET_RATE_COUNT;
  }
  if (pb->opt_rate_limit_period_ms_case) {
    r->rate_period_ms = pb->rate_limit_period_ms;
    r->set_mask |= CONTROL_SET_RATE_PERIOD;
  }
  if (pb->opt_max_connections_per_client_case) {
    r->max_per_client = pb->max_connections_per_client;
    r->set_mask |= CONTROL_SET_MAX_PER_CLIENT;
  }
  return 0;
}

/* AddListener and UpdateListener: an address and settings. */
static void do_listener_change(void *ctx, admin_call_t *c, control_op_t op, const char *addr,
                               const McProxy__V1__ListenerSettings *settings)
{
  change_t *ch = change_new(c, op);
  if (!ch)
    return;
  if (copy_field(ch->ctl.listener, sizeof(ch->ctl.listener), addr) != 0) {
    change_refuse(ch,
                  op == CONTROL_LISTENER_ADD ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_NOT_FOUND,
                  "invalid listen address (too long)");
    return;
  }
  if (settings_from_pb(ch, settings) == 0)
    submit(ctx, ch);
}

static void do_add_listener(void *ctx, admin_call_t *c)
{
  const McProxy__V1__AddListenerRequest *req = (const void *)admin_call_request(c);
  do_listener_change(ctx, c, CONTROL_LISTENER_ADD, req->listener_addr, req->settings);
}

static void do_update_listener(void *ctx, admin_call_t *c)
{
  const McProxy__V1__UpdateListenerRequest *req = (const void *)admin_call_request(c);
  do_listener_change(ctx, c, CONTROL_LISTENER_UPDATE, req->listener_addr, req->settings);
}

static void do_remove_listener(void *ctx, admin_call_t *c)
{
  const McProxy__V1__RemoveListenerRequest *req = (const void *)admin_call_request(c);
  do_listener_change(ctx, c, CONTROL_LISTENER_REMOVE, req->listener_addr, NULL);
}

/* ---- the table ---- */

const admin_method_t admin_rpc_methods[] = {
    {"GetStatus", &mc_proxy__v1__get_status_request__descriptor, do_get_status},
    {"ListRoutes", &mc_proxy__v1__list_routes_request__descriptor, do_list_routes},
    {"AddRoute", &mc_proxy__v1__add_route_request__descriptor, do_add_route},
    {"RemoveRoute", &mc_proxy__v1__remove_route_request__descriptor, do_remove_route},
    {"ListFirewallRules", &mc_proxy__v1__list_firewall_rules_request__descriptor, do_list_rules},
    {"AddFirewallRule", &mc_proxy__v1__add_firewall_rule_request__descriptor, do_add_rule},
    {"RemoveFirewallRule", &mc_proxy__v1__remove_firewall_rule_request__descriptor, do_remove_rule},
    {"SetListenerMaxConnections", &mc_proxy__v1__set_listener_max_connections_request__descriptor,
     do_set_max},
    {"ListListeners", &mc_proxy__v1__list_listeners_request__descriptor, do_list_listeners},
    {"AddListener", &mc_proxy__v1__add_listener_request__descriptor, do_add_listener},
    {"RemoveListener", &mc_proxy__v1__remove_listener_request__descriptor, do_remove_listener},
    {"UpdateListener", &mc_proxy__v1__update_listener_request__descriptor, do_update_listener},
};
const size_t admin_rpc_nmethods = sizeof(admin_rpc_methods) / sizeof(admin_rpc_methods[0]);
