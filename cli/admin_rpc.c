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
  case MCP_ENOGEOIP:
    return GRPC_STATUS_FAILED_PRECONDITION;
  case MCP_EBUSY:
    return GRPC_STATUS_UNAVAILABLE;
  default:
    return GRPC_STATUS_INTERNAL;
  }
}

/* ---- reads ---- */

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
  /* fallback is a route choice, not an outcome: counted once the library reports it */
  ls->fallback_total = 0;
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
  if (!ls || !lp) {
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
    lp[i] = &ls[i];
  }
  resp.version = (char *)mcp_version();
  resp.started_at_unix = srv->started_at_unix;
  resp.n_listeners = n;
  resp.listeners = lp;
  resp.firewall_rule_count = srv->firewall ? (int32_t)mcp_firewall_count(srv->firewall) : 0;
  admin_call_reply(c, GRPC_STATUS_OK, "", &resp.base);
  free(lp);
  free(ls);
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

static int collect_route(void *data, const char *hostname, const mcp_backend_t *backend)
{
  route_list_t *rl = data;
  if (rl->n == rl->cap)
    return 1;
  McProxy__V1__Route *r = &rl->routes[rl->n];
  mc_proxy__v1__route__init(r);
  /* Borrowed from the table, which cannot change before the reply is packed below. */
  r->hostname = (char *)hostname;
  r->backend = (char *)backend->text;
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
    mcp_routes_foreach(rt, collect_route, &rl);
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
  change_t *ch = change_new(c, CONTROL_ROUTE_ADD);
  if (!ch)
    return;
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
};
const size_t admin_rpc_nmethods = sizeof(admin_rpc_methods) / sizeof(admin_rpc_methods[0]);
