/*
 * admin_server: ProxyAdminService (SPEC §5) with gRPC core's C API. See admin_server.h.
 *
 * Threads. gRPC delivers every event on one completion queue, drained by a thread of our own
 * (cq_thread). That thread also drives gRPC's I/O, so it never blocks: for a new call it asks
 * for the request message; when the message arrives it finds the method, unpacks the bytes with
 * protobuf-c, puts the call on the inbox and wakes the loop (uv_async_send). The loop thread
 * (on_async) drains the whole inbox: reads are answered at once from the live state, mutations
 * go to control_submit() and are answered from its done callback after the database commit.
 * The loop thread starts the reply batch itself; when that completes the CQ thread frees the
 * call. So a call is touched by one thread at a time, handed over through the inbox (under mu)
 * or by the completion of a batch.
 *
 * Life of a call (admin_call_t.state): REQUESTED (waiting in grpc_server_request_call) ->
 * RECEIVING (RECV_MESSAGE batch) -> HANDLING (inbox, then the loop; maybe waiting in control)
 * -> REPLYING (the status batch) -> freed. There is at most one batch in flight per call, so
 * the state says which batch a completion belongs to.
 *
 * Shutdown (admin_server_stop, loop thread) follows the orderings that are known not to abort
 * or hang: stop handing calls over and cancel the ones we hold (UNAVAILABLE), shut the server
 * down and wait briefly for its notification, cancel what is still in flight if it does not
 * come, then shut the completion queue down, join the thread and destroy everything.
 */
#include "admin_server.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "certs.h"
#include "control.h"
#include "log.h"
#include "mc_proxy/v1/admin.pb-c.h"

/* Requests are a few hundred bytes; anything near this is not a request of ours. */
#define ADMIN_MAX_REQUEST (64 * 1024)
/* Calls the server can accept at once before a request_call is re-armed. */
#define ADMIN_PENDING_REQUESTS 8
/* How long shutdown lets calls in flight finish before cancelling them. */
#define ADMIN_SHUTDOWN_GRACE_MS 1000
#define PEM_MAX (1 << 20)

typedef enum call_state_e {
  CALL_REQUESTED,
  CALL_RECEIVING,
  CALL_HANDLING,
  CALL_REPLYING,
} call_state_t;

typedef struct admin_call_s admin_call_t;

/*
 * One RPC. Allocated by whoever arms grpc_server_request_call (loop thread at start, then the
 * CQ thread), freed by the CQ thread when the reply batch completes, or by the thread that
 * drops it. While HANDLING it belongs to the loop thread alone.
 */
struct admin_call_s {
  admin_server_t *admin; /* NULL once orphaned by shutdown while waiting in control */
  call_state_t state;
  grpc_call *call;
  grpc_call_details details;
  grpc_metadata_array request_md;
  grpc_byte_buffer *recv_bb;

  /* Filled by the CQ thread when the request arrives. */
  int method;            /* index into methods[], or -1 */
  ProtobufCMessage *req; /* unpacked request, or NULL */
  int early_status;      /* non-zero: answer with this status and early_msg */
  const char *early_msg;

  /* The reply. */
  grpc_byte_buffer *send_bb;
  grpc_slice status_details;
  int cancelled;

  control_req_t ctl;
  admin_call_t *next, *prev; /* the inbox (next only), or the pending list */
};

struct admin_server_s {
  server_t *srv;
  grpc_server *server;
  grpc_completion_queue *cq;
  uv_thread_t thread;
  int thread_started;
  uv_async_t async;

  uv_mutex_t mu; /* guards the fields below it up to pending */
  uv_cond_t cond;
  int stopping;
  int shutdown_notified;
  admin_call_t *inbox_head, *inbox_tail;

  admin_call_t *pending; /* loop thread: calls waiting for control_submit's done */
  int lock_fd;
  char shutdown_tag; /* its address is the tag of grpc_server_shutdown_and_notify */
};

/* ---- methods ---- */

static void do_get_status(admin_server_t *a, admin_call_t *c);
static void do_list_routes(admin_server_t *a, admin_call_t *c);
static void do_add_route(admin_server_t *a, admin_call_t *c);
static void do_remove_route(admin_server_t *a, admin_call_t *c);
static void do_list_rules(admin_server_t *a, admin_call_t *c);
static void do_add_rule(admin_server_t *a, admin_call_t *c);
static void do_remove_rule(admin_server_t *a, admin_call_t *c);
static void do_set_max(admin_server_t *a, admin_call_t *c);

#define METHOD_PREFIX "/mc_proxy.v1.ProxyAdminService/"

static const struct {
  const char *path;
  const ProtobufCMessageDescriptor *input;
  void (*run)(admin_server_t *a, admin_call_t *c);
} methods[] = {
    {METHOD_PREFIX "GetStatus", &mc_proxy__v1__get_status_request__descriptor, do_get_status},
    {METHOD_PREFIX "ListRoutes", &mc_proxy__v1__list_routes_request__descriptor, do_list_routes},
    {METHOD_PREFIX "AddRoute", &mc_proxy__v1__add_route_request__descriptor, do_add_route},
    {METHOD_PREFIX "RemoveRoute", &mc_proxy__v1__remove_route_request__descriptor, do_remove_route},
    {METHOD_PREFIX "ListFirewallRules", &mc_proxy__v1__list_firewall_rules_request__descriptor,
     do_list_rules},
    {METHOD_PREFIX "AddFirewallRule", &mc_proxy__v1__add_firewall_rule_request__descriptor,
     do_add_rule},
    {METHOD_PREFIX "RemoveFirewallRule", &mc_proxy__v1__remove_firewall_rule_request__descriptor,
     do_remove_rule},
    {METHOD_PREFIX "SetListenerMaxConnections",
     &mc_proxy__v1__set_listener_max_connections_request__descriptor, do_set_max},
};
#define NMETHODS ((int)(sizeof(methods) / sizeof(methods[0])))

static int find_method(grpc_slice path)
{
  size_t len = GRPC_SLICE_LENGTH(path);
  const char *p = (const char *)GRPC_SLICE_START_PTR(path);
  for (int i = 0; i < NMETHODS; i++)
    if (strlen(methods[i].path) == len && !memcmp(methods[i].path, p, len))
      return i;
  return -1;
}

static const char *method_name(const admin_call_t *c)
{
  return c->method >= 0 ? methods[c->method].path + strlen(METHOD_PREFIX) : "?";
}

/* ---- wire checks ---- */

static int read_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *out)
{
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*i >= len)
      return -1;
    uint8_t b = p[(*i)++];
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

/*
 * protobuf-c hands string fields over as NUL-terminated C strings, so "a.example\0junk" would
 * silently become "a.example". Walk the encoded message (already known to unpack) and report
 * any string field, at any depth, that holds a NUL byte. Returns 1 for such a field or for
 * anything unexpected, else 0.
 */
static int has_nul_in_string(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len,
                             int depth)
{
  if (depth > 4)
    return 1;
  size_t i = 0;
  while (i < len) {
    uint64_t key, v;
    if (read_varint(p, len, &i, &key) != 0)
      return 1;
    switch (key & 7) {
    case 0:
      if (read_varint(p, len, &i, &v) != 0)
        return 1;
      break;
    case 1:
      if (len - i < 8)
        return 1;
      i += 8;
      break;
    case 5:
      if (len - i < 4)
        return 1;
      i += 4;
      break;
    case 2: {
      if (read_varint(p, len, &i, &v) != 0 || v > len - i)
        return 1;
      const ProtobufCFieldDescriptor *f =
          key >> 3 <= UINT32_MAX
              ? protobuf_c_message_descriptor_get_field(desc, (unsigned)(key >> 3))
              : NULL;
      if (f && f->type == PROTOBUF_C_TYPE_STRING && memchr(p + i, 0, (size_t)v))
        return 1;
      if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
          has_nul_in_string(f->descriptor, p + i, (size_t)v, depth + 1))
        return 1;
      i += (size_t)v;
      break;
    }
    default:
      return 1;
    }
  }
  return 0;
}

/* ---- call lifetime ---- */

static admin_call_t *call_new(admin_server_t *a)
{
  admin_call_t *c = calloc(1, sizeof(*c));
  if (!c)
    return NULL;
  c->admin = a;
  c->method = -1;
  c->state = CALL_REQUESTED;
  c->status_details = grpc_empty_slice();
  grpc_call_details_init(&c->details);
  grpc_metadata_array_init(&c->request_md);
  return c;
}

/* Frees c and drops its reference on the gRPC call (which cancels it if it is unfinished). */
static void call_free(admin_call_t *c)
{
  if (c->call)
    grpc_call_unref(c->call);
  if (c->recv_bb)
    grpc_byte_buffer_destroy(c->recv_bb);
  if (c->send_bb)
    grpc_byte_buffer_destroy(c->send_bb);
  if (c->req)
    protobuf_c_message_free_unpacked(c->req, NULL);
  grpc_slice_unref(c->status_details);
  grpc_call_details_destroy(&c->details);
  grpc_metadata_array_destroy(&c->request_md);
  free(c);
}

/* Arms one grpc_server_request_call. Any thread (gRPC allows it); a->mu held by the CQ thread. */
static int arm_request(admin_server_t *a)
{
  admin_call_t *c = call_new(a);
  if (!c)
    return -1;
  grpc_call_error e =
      grpc_server_request_call(a->server, &c->call, &c->details, &c->request_md, a->cq, a->cq, c);
  if (e != GRPC_CALL_OK) {
    call_free(c);
    return -1;
  }
  return 0;
}

/* ---- the completion-queue thread ---- */

/* A new call arrived (or, at shutdown, a request_call came back unused). */
static void on_new_call(admin_server_t *a, admin_call_t *c, int ok)
{
  if (!ok) {
    call_free(c);
    return;
  }
  uv_mutex_lock(&a->mu);
  if (a->stopping) {
    uv_mutex_unlock(&a->mu);
    call_free(c);
    return;
  }
  if (arm_request(a) != 0)
    log_warn("admin API: cannot arm another request (out of memory?)");
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &c->recv_bb;
  c->state = CALL_RECEIVING;
  grpc_call_error e = grpc_call_start_batch(c->call, &op, 1, c, NULL);
  uv_mutex_unlock(&a->mu);
  if (e != GRPC_CALL_OK)
    call_free(c);
}

/* The request message arrived: find the method, unpack, and hand the call to the loop. */
static void on_received(admin_server_t *a, admin_call_t *c, int ok)
{
  if (!ok) { /* cancelled by the client, or the server is shutting down */
    call_free(c);
    return;
  }
  c->method = find_method(c->details.method);
  if (c->method < 0) {
    c->early_status = GRPC_STATUS_UNIMPLEMENTED;
    c->early_msg = "unknown method";
  } else if (!c->recv_bb) {
    c->early_status = GRPC_STATUS_INVALID_ARGUMENT;
    c->early_msg = "no request message";
  } else {
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, c->recv_bb)) {
      c->early_status = GRPC_STATUS_INVALID_ARGUMENT;
      c->early_msg = "unreadable request message";
    } else {
      grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
      grpc_byte_buffer_reader_destroy(&reader);
      const uint8_t *p = GRPC_SLICE_START_PTR(all);
      size_t len = GRPC_SLICE_LENGTH(all);
      const ProtobufCMessageDescriptor *desc = methods[c->method].input;
      if (len > ADMIN_MAX_REQUEST) {
        c->early_status = GRPC_STATUS_INVALID_ARGUMENT;
        c->early_msg = "request message too large";
      } else if (!(c->req = protobuf_c_message_unpack(desc, NULL, len, p))) {
        c->early_status = GRPC_STATUS_INVALID_ARGUMENT;
        c->early_msg = "malformed request message";
      } else if (has_nul_in_string(desc, p, len, 0)) {
        c->early_status = GRPC_STATUS_INVALID_ARGUMENT;
        c->early_msg = "a string field of the request holds a NUL byte";
      }
      grpc_slice_unref(all);
    }
  }
  grpc_byte_buffer_destroy(c->recv_bb);
  c->recv_bb = NULL;

  uv_mutex_lock(&a->mu);
  if (a->stopping) {
    uv_mutex_unlock(&a->mu);
    call_free(c);
    return;
  }
  c->state = CALL_HANDLING;
  c->next = NULL;
  if (a->inbox_tail)
    a->inbox_tail->next = c;
  else
    a->inbox_head = c;
  a->inbox_tail = c;
  uv_mutex_unlock(&a->mu);
  /* The async handle is closed only after this thread has been joined. */
  uv_async_send(&a->async);
}

static void handle_event(admin_server_t *a, grpc_event ev)
{
  if (ev.type != GRPC_OP_COMPLETE)
    return;
  if (ev.tag == &a->shutdown_tag) {
    uv_mutex_lock(&a->mu);
    a->shutdown_notified = 1;
    uv_cond_signal(&a->cond);
    uv_mutex_unlock(&a->mu);
    return;
  }
  admin_call_t *c = ev.tag;
  switch (c->state) {
  case CALL_REQUESTED:
    on_new_call(a, c, ev.success);
    break;
  case CALL_RECEIVING:
    on_received(a, c, ev.success);
    break;
  case CALL_REPLYING:
  case CALL_HANDLING: /* cannot happen: no batch is in flight while handling */
    call_free(c);
    break;
  }
}

static void cq_thread(void *arg)
{
  admin_server_t *a = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(a->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      break;
    handle_event(a, ev);
  }
}

/* ---- replies (loop thread) ---- */

/* Sends status (and, when OK, resp) and lets the CQ thread free the call when it is sent. */
static void reply(admin_call_t *c, int status, const char *msg, const ProtobufCMessage *resp)
{
  grpc_op ops[4];
  size_t n = 0;
  memset(ops, 0, sizeof(ops));
  ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (status == GRPC_STATUS_OK) {
    size_t len = resp ? protobuf_c_message_get_packed_size(resp) : 0;
    grpc_slice s = grpc_slice_malloc(len);
    if (len)
      protobuf_c_message_pack(resp, GRPC_SLICE_START_PTR(s));
    c->send_bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->send_bb;
  }
  grpc_slice_unref(c->status_details);
  c->status_details = grpc_slice_from_copied_string(msg ? msg : "");
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = (grpc_status_code)status;
  ops[n++].data.send_status_from_server.status_details = &c->status_details;
  ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;

  c->state = CALL_REPLYING;
  grpc_call_error e = grpc_call_start_batch(c->call, ops, n, c, NULL);
  if (e != GRPC_CALL_OK) {
    log_warn("admin API: cannot send the reply to %s (error %d)", method_name(c), (int)e);
    call_free(c);
  }
  /* From here on the CQ thread owns c. */
}

static void reply_error(admin_call_t *c, int status, const char *msg)
{
  reply(c, status, msg, NULL);
}

/* Logs a mutation's outcome with the peer it came from. */
static void log_mutation(admin_call_t *c, int status, const char *what, const char *msg)
{
  char *peer = grpc_call_get_peer(c->call);
  if (status == GRPC_STATUS_OK)
    log_info("admin %s from %s: %s", method_name(c), peer ? peer : "?", what);
  else
    log_info("admin %s from %s: %s refused: %s", method_name(c), peer ? peer : "?", what, msg);
  gpr_free(peer);
}

static void on_async(uv_async_t *h)
{
  admin_server_t *a = h->data;
  uv_mutex_lock(&a->mu);
  admin_call_t *c = a->inbox_head;
  a->inbox_head = a->inbox_tail = NULL;
  uv_mutex_unlock(&a->mu);
  /* uv_async_send coalesces wake-ups: take everything queued. */
  while (c) {
    admin_call_t *next = c->next;
    c->next = NULL;
    if (c->early_status)
      reply_error(c, c->early_status, c->early_msg);
    else
      methods[c->method].run(a, c);
    c = next;
  }
}

/* ---- reads ---- */

static void do_get_status(admin_server_t *a, admin_call_t *c)
{
  server_t *srv = a->srv;
  McProxy__V1__GetStatusResponse resp = MC_PROXY__V1__GET_STATUS_RESPONSE__INIT;
  size_t n = srv->nlisteners;
  McProxy__V1__ListenerStatus *ls = calloc(n ? n : 1, sizeof(*ls));
  McProxy__V1__ListenerStatus **lp = calloc(n ? n : 1, sizeof(*lp));
  if (!ls || !lp) {
    free(ls);
    free(lp);
    reply_error(c, GRPC_STATUS_INTERNAL, "out of memory");
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
    lp[i] = &ls[i];
  }
  resp.version = (char *)mcp_version();
  resp.started_at_unix = srv->started_at_unix;
  resp.n_listeners = n;
  resp.listeners = lp;
  resp.firewall_rule_count = srv->firewall ? (int32_t)mcp_firewall_count(srv->firewall) : 0;
  reply(c, GRPC_STATUS_OK, "", &resp.base);
  free(lp);
  free(ls);
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

static void do_list_routes(admin_server_t *a, admin_call_t *c)
{
  const McProxy__V1__ListRoutesRequest *req = (const void *)c->req;
  if (!req->listener_addr[0]) {
    reply_error(c, GRPC_STATUS_INVALID_ARGUMENT, "listener_addr is required");
    return;
  }
  mcp_listener_t *l = server_find_listener(a->srv, req->listener_addr);
  if (!l) {
    char msg[CONFIG_ADDR_MAX + 32];
    snprintf(msg, sizeof(msg), "no listener %.*s", CONFIG_ADDR_MAX, req->listener_addr);
    reply_error(c, GRPC_STATUS_NOT_FOUND, msg);
    return;
  }
  mcp_routes_t *rt = mcp_listener_routes(l);
  route_list_t rl = {0};
  rl.cap = rt ? mcp_routes_count(rt) : 0;
  rl.routes = calloc(rl.cap ? rl.cap : 1, sizeof(*rl.routes));
  rl.ptrs = calloc(rl.cap ? rl.cap : 1, sizeof(*rl.ptrs));
  if (!rl.routes || !rl.ptrs) {
    free(rl.routes);
    free(rl.ptrs);
    reply_error(c, GRPC_STATUS_INTERNAL, "out of memory");
    return;
  }
  if (rt)
    mcp_routes_foreach(rt, collect_route, &rl);
  McProxy__V1__ListRoutesResponse resp = MC_PROXY__V1__LIST_ROUTES_RESPONSE__INIT;
  resp.listener_addr = (char *)mcp_listener_addr(l);
  resp.n_routes = rl.n;
  resp.routes = rl.ptrs;
  reply(c, GRPC_STATUS_OK, "", &resp.base);
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

static void do_list_rules(admin_server_t *a, admin_call_t *c)
{
  mcp_firewall_t *fw = a->srv->firewall;
  rule_list_t rl = {0};
  rl.cap = fw ? mcp_firewall_count(fw) : 0;
  rl.rules = calloc(rl.cap ? rl.cap : 1, sizeof(*rl.rules));
  rl.ptrs = calloc(rl.cap ? rl.cap : 1, sizeof(*rl.ptrs));
  if (!rl.rules || !rl.ptrs) {
    free(rl.rules);
    free(rl.ptrs);
    reply_error(c, GRPC_STATUS_INTERNAL, "out of memory");
    return;
  }
  if (fw)
    mcp_firewall_foreach(fw, collect_rule, &rl);
  McProxy__V1__ListFirewallRulesResponse resp = MC_PROXY__V1__LIST_FIREWALL_RULES_RESPONSE__INIT;
  resp.n_rules = rl.n;
  resp.rules = rl.ptrs;
  reply(c, GRPC_STATUS_OK, "", &resp.base);
  free(rl.ptrs);
  free(rl.rules);
}

/* ---- mutations ---- */

static void on_control_done(control_req_t *req, int status, const char *msg)
{
  admin_call_t *c = req->data;
  if (!c->admin) { /* orphaned: the admin server stopped while the write was in progress */
    call_free(c);
    return;
  }
  admin_server_t *a = c->admin;
  if (c->prev)
    c->prev->next = c->next;
  else
    a->pending = c->next;
  if (c->next)
    c->next->prev = c->prev;
  c->next = c->prev = NULL;

  char what[CONFIG_ADDR_MAX + MCP_HOSTNAME_MAX + MCP_BACKEND_MAX + 64];
  switch (req->op) {
  case CONTROL_ROUTE_ADD:
    snprintf(what, sizeof(what), "route %s %s -> %s", req->listener, req->hostname, req->backend);
    break;
  case CONTROL_ROUTE_REMOVE:
    snprintf(what, sizeof(what), "route %s %s", req->listener, req->hostname);
    break;
  case CONTROL_RULE_ADD:
  case CONTROL_RULE_REMOVE: {
    const char *t = mcp_firewall_type_name(req->rule_type);
    snprintf(what, sizeof(what), "firewall %s %s", t ? t : "?", req->rule_value);
    break;
  }
  case CONTROL_SET_MAX_CONNECTIONS:
    snprintf(what, sizeof(what), "listener %s max_connections %lld", req->listener,
             (long long)req->max_connections);
    break;
  default:
    snprintf(what, sizeof(what), "?");
  }
  int code = control_grpc_status(status);
  log_mutation(c, code, what, msg);
  /* Every mutation's response is an empty message, so nothing is packed. */
  reply(c, code, code == GRPC_STATUS_OK ? "" : msg, NULL);
}

static void submit(admin_server_t *a, admin_call_t *c)
{
  c->ctl.done = on_control_done;
  c->ctl.data = c;
  c->prev = NULL;
  c->next = a->pending;
  if (a->pending)
    a->pending->prev = c;
  a->pending = c;
  /* done may run before control_submit returns (a request that fails validation). */
  control_submit(a->srv, &c->ctl);
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

static int copy_listener(admin_call_t *c, const char *addr)
{
  if (copy_field(c->ctl.listener, sizeof(c->ctl.listener), addr) != 0) {
    reply_error(c, GRPC_STATUS_NOT_FOUND, "no such listener (address too long)");
    return -1;
  }
  return 0;
}

static void do_add_route(admin_server_t *a, admin_call_t *c)
{
  const McProxy__V1__AddRouteRequest *req = (const void *)c->req;
  if (!req->route) {
    reply_error(c, GRPC_STATUS_INVALID_ARGUMENT, "route is required");
    return;
  }
  c->ctl.op = CONTROL_ROUTE_ADD;
  if (copy_listener(c, req->listener_addr) != 0)
    return;
  if (copy_field(c->ctl.hostname, sizeof(c->ctl.hostname), req->route->hostname) != 0) {
    reply_error(c, GRPC_STATUS_INVALID_ARGUMENT, "invalid hostname (longer than 253 bytes)");
    return;
  }
  if (copy_field(c->ctl.backend, sizeof(c->ctl.backend), req->route->backend) != 0) {
    reply_error(c, GRPC_STATUS_INVALID_ARGUMENT, "invalid backend (too long)");
    return;
  }
  submit(a, c);
}

static void do_remove_route(admin_server_t *a, admin_call_t *c)
{
  const McProxy__V1__RemoveRouteRequest *req = (const void *)c->req;
  c->ctl.op = CONTROL_ROUTE_REMOVE;
  if (copy_listener(c, req->listener_addr) != 0)
    return;
  if (copy_field(c->ctl.hostname, sizeof(c->ctl.hostname), req->hostname) != 0) {
    reply_error(c, GRPC_STATUS_INVALID_ARGUMENT, "invalid hostname (longer than 253 bytes)");
    return;
  }
  submit(a, c);
}

static void do_rule(admin_server_t *a, admin_call_t *c, control_op_t op,
                    const McProxy__V1__FirewallRule *rule)
{
  if (!rule) {
    reply_error(c, GRPC_STATUS_INVALID_ARGUMENT, "rule is required");
    return;
  }
  if (rule->type != MC_PROXY__V1__FIREWALL_RULE_TYPE__FIREWALL_RULE_TYPE_IP &&
      rule->type != MC_PROXY__V1__FIREWALL_RULE_TYPE__FIREWALL_RULE_TYPE_CIDR &&
      rule->type != MC_PROXY__V1__FIREWALL_RULE_TYPE__FIREWALL_RULE_TYPE_COUNTRY) {
    reply_error(c, GRPC_STATUS_INVALID_ARGUMENT, "rule type must be IP, CIDR or COUNTRY");
    return;
  }
  c->ctl.op = op;
  c->ctl.rule_type = (mcp_firewall_type_t)rule->type;
  if (copy_field(c->ctl.rule_value, sizeof(c->ctl.rule_value), rule->value) != 0) {
    reply_error(c, GRPC_STATUS_INVALID_ARGUMENT, "invalid firewall rule value (too long)");
    return;
  }
  submit(a, c);
}

static void do_add_rule(admin_server_t *a, admin_call_t *c)
{
  do_rule(a, c, CONTROL_RULE_ADD, ((const McProxy__V1__AddFirewallRuleRequest *)c->req)->rule);
}

static void do_remove_rule(admin_server_t *a, admin_call_t *c)
{
  do_rule(a, c, CONTROL_RULE_REMOVE,
          ((const McProxy__V1__RemoveFirewallRuleRequest *)c->req)->rule);
}

static void do_set_max(admin_server_t *a, admin_call_t *c)
{
  const McProxy__V1__SetListenerMaxConnectionsRequest *req = (const void *)c->req;
  c->ctl.op = CONTROL_SET_MAX_CONNECTIONS;
  if (copy_listener(c, req->listener_addr) != 0)
    return;
  c->ctl.max_connections = req->max_connections;
  submit(a, c);
}

/* ---- start and stop ---- */

static void grpc_log(gpr_log_func_args *args)
{
  if (args->severity == GPR_LOG_SEVERITY_ERROR)
    log_warn("grpc: %s", args->message);
}

static char *read_pem(const char *path, char *err, size_t errlen)
{
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    return NULL;
  }
  char *buf = malloc(PEM_MAX + 1);
  size_t n = buf ? fread(buf, 1, PEM_MAX + 1, f) : 0;
  int bad = !buf || ferror(f) || n > PEM_MAX;
  fclose(f);
  if (bad) {
    snprintf(err, errlen, "%s: cannot read (unreadable or larger than 1 MiB)", path);
    free(buf);
    return NULL;
  }
  buf[n] = '\0';
  return buf;
}

/*
 * Makes the unix socket path ours: an flock on "<path>.lock" proves no other mc-proxy serves it
 * (gRPC itself would unlink a live socket at bind and steal it); then a socket file left by a
 * crash is removed. A path that exists and is not a socket is never removed.
 */
static int claim_socket_path(admin_server_t *a, const char *path, char *err, size_t errlen)
{
  struct sockaddr_un sun;
  char lock_path[PATH_MAX];
  if (strlen(path) >= sizeof(sun.sun_path)) {
    snprintf(err, errlen, "unix socket path %s is too long (at most %zu bytes)", path,
             sizeof(sun.sun_path) - 1);
    return -1;
  }
  if ((size_t)snprintf(lock_path, sizeof(lock_path), "%s.lock", path) >= sizeof(lock_path)) {
    snprintf(err, errlen, "unix socket path %s is too long", path);
    return -1;
  }
  a->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (a->lock_fd < 0) {
    snprintf(err, errlen, "cannot open the lock file %s: %s", lock_path, strerror(errno));
    return -1;
  }
  if (flock(a->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      snprintf(err, errlen, "%s is in use by another running mc-proxy (it holds %s)", path,
               lock_path);
    else
      snprintf(err, errlen, "cannot lock %s: %s", lock_path, strerror(errno));
    return -1;
  }
  struct stat st;
  if (lstat(path, &st) != 0)
    return errno == ENOENT ? 0 : (snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1);
  if (!S_ISSOCK(st.st_mode)) {
    snprintf(err, errlen, "%s exists and is not a socket; refusing to replace it", path);
    return -1;
  }
  /* Belt and braces for a server that does not take the lock (an older build): one that still
   * answers keeps its socket. */
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int live = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
    close(fd);
    if (live) {
      snprintf(err, errlen, "%s is in use: another process is accepting on it", path);
      return -1;
    }
  }
  if (unlink(path) != 0 && errno != ENOENT) {
    snprintf(err, errlen, "cannot remove the stale socket %s: %s", path, strerror(errno));
    return -1;
  }
  log_info("admin API: removed the stale socket %s", path);
  return 0;
}

static grpc_server_credentials *make_credentials(const mcp_config_t *cfg, char *err, size_t errlen)
{
  if (cfg->grpc_is_unix)
    return grpc_insecure_server_credentials_create();
  char *cert = read_pem(cfg->tls_cert, err, errlen);
  char *key = cert ? read_pem(cfg->tls_key, err, errlen) : NULL;
  char *ca = key && cfg->client_ca[0] ? read_pem(cfg->client_ca, err, errlen) : NULL;
  grpc_server_credentials *creds = NULL;
  if (cert && key && (ca || !cfg->client_ca[0])) {
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    creds = grpc_ssl_server_credentials_create_ex(
        ca, &pair, 1,
        ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
           : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
    if (!creds)
      snprintf(err, errlen, "gRPC refused the TLS credentials %s / %s", cfg->tls_cert,
               cfg->tls_key);
  }
  free(ca);
  if (key)
    memset(key, 0, strlen(key));
  free(key);
  free(cert);
  return creds;
}

static void on_async_closed(uv_handle_t *h)
{
  admin_server_t *a = h->data;
  uv_cond_destroy(&a->cond);
  uv_mutex_destroy(&a->mu);
  free(a);
}

/* Waits (a->mu held) until the shutdown notification came or timeout_ms passed. */
static void wait_notified(admin_server_t *a, uint64_t timeout_ms)
{
  uint64_t deadline = uv_hrtime() + timeout_ms * 1000000u;
  while (!a->shutdown_notified) {
    uint64_t now = uv_hrtime();
    if (now >= deadline)
      return;
    uv_cond_timedwait(&a->cond, &a->mu, deadline - now);
  }
}

/*
 * Shuts the gRPC server and completion queue down and destroys them. Loop thread. Used by
 * admin_server_stop and by a start that fails after grpc_server_start.
 */
static void shutdown_grpc(admin_server_t *a)
{
  uv_mutex_lock(&a->mu);
  a->stopping = 1;
  admin_call_t *held = a->inbox_head;
  a->inbox_head = a->inbox_tail = NULL;
  uv_mutex_unlock(&a->mu);

  /* Calls we hold get an answer now; a batch must never start on them after this. */
  while (held) {
    admin_call_t *next = held->next;
    grpc_call_cancel_with_status(held->call, GRPC_STATUS_UNAVAILABLE, "mc-proxy is shutting down",
                                 NULL);
    call_free(held);
    held = next;
  }
  /* Calls waiting for a database write: control.c still holds their request, so they are
   * orphaned (freed by on_control_done) rather than freed here. */
  for (admin_call_t *c = a->pending, *next; c; c = next) {
    next = c->next;
    grpc_call_cancel_with_status(c->call, GRPC_STATUS_UNAVAILABLE, "mc-proxy is shutting down",
                                 NULL);
    grpc_call_unref(c->call);
    c->call = NULL;
    c->admin = NULL;
    c->next = c->prev = NULL;
  }
  a->pending = NULL;

  grpc_server_shutdown_and_notify(a->server, a->cq, &a->shutdown_tag);
  if (a->thread_started) {
    uv_mutex_lock(&a->mu);
    wait_notified(a, ADMIN_SHUTDOWN_GRACE_MS);
    if (!a->shutdown_notified) {
      uv_mutex_unlock(&a->mu);
      grpc_server_cancel_all_calls(a->server);
      uv_mutex_lock(&a->mu);
      while (!a->shutdown_notified)
        uv_cond_wait(&a->cond, &a->mu);
    }
    uv_mutex_unlock(&a->mu);
    grpc_completion_queue_shutdown(a->cq);
    uv_thread_join(&a->thread);
  } else {
    /* No CQ thread (start failed before it ran): drain the queue here. */
    grpc_server_cancel_all_calls(a->server);
    while (!a->shutdown_notified)
      handle_event(a, grpc_completion_queue_next(a->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL));
    grpc_completion_queue_shutdown(a->cq);
    for (;;) {
      grpc_event ev = grpc_completion_queue_next(a->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
      if (ev.type == GRPC_QUEUE_SHUTDOWN)
        break;
      handle_event(a, ev);
    }
  }
  grpc_server_destroy(a->server);
  grpc_completion_queue_destroy(a->cq);
  a->server = NULL;
  a->cq = NULL;
}

/* Frees a after a failed start or a stop: the lock, the async handle (asynchronously), gRPC. */
static void release(admin_server_t *a, int grpc_inited)
{
  if (a->lock_fd >= 0)
    close(a->lock_fd);
  a->lock_fd = -1;
  if (grpc_inited)
    grpc_shutdown_blocking();
  uv_close((uv_handle_t *)&a->async, on_async_closed);
}

int admin_server_start(server_t *srv, char *err, size_t errlen)
{
  const mcp_config_t *cfg = srv->cfg;
  char warn[1024];
  if (certs_check_config(cfg, err, errlen, warn, sizeof(warn)) != 0)
    return -1;
  if (warn[0])
    log_warn("admin API: %s", warn);

  admin_server_t *a = calloc(1, sizeof(*a));
  if (!a) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  a->srv = srv;
  a->lock_fd = -1;
  if (uv_mutex_init(&a->mu) != 0) {
    free(a);
    snprintf(err, errlen, "cannot create a mutex");
    return -1;
  }
  if (uv_cond_init(&a->cond) != 0) {
    uv_mutex_destroy(&a->mu);
    free(a);
    snprintf(err, errlen, "cannot create a condition variable");
    return -1;
  }
  int rc = uv_async_init(srv->loop, &a->async, on_async);
  if (rc != 0) {
    uv_cond_destroy(&a->cond);
    uv_mutex_destroy(&a->mu);
    free(a);
    snprintf(err, errlen, "uv_async_init: %s", uv_strerror(rc));
    return -1;
  }
  a->async.data = a;

  const char *sock_path = cfg->grpc_is_unix ? cfg->grpc_addr + strlen("unix:") : NULL;
  if (sock_path && claim_socket_path(a, sock_path, err, errlen) != 0) {
    release(a, 0);
    return -1;
  }
  grpc_server_credentials *creds = make_credentials(cfg, err, errlen);
  if (!creds) {
    release(a, 0);
    return -1;
  }

  gpr_set_log_function(grpc_log);
  gpr_set_log_verbosity(GPR_LOG_SEVERITY_ERROR);
  grpc_init();
  grpc_arg args[] = {
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
       .value.integer = ADMIN_MAX_REQUEST},
      /* Otherwise a second instance silently shares the TCP port. */
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0},
  };
  grpc_channel_args cargs = {.num_args = sizeof(args) / sizeof(args[0]), .args = args};
  a->cq = grpc_completion_queue_create_for_next(NULL);
  a->server = grpc_server_create(&cargs, NULL);
  grpc_server_register_completion_queue(a->server, a->cq, NULL);

  /* The socket is created with the umask's mode: start owner-only and widen it below, so there
   * is no moment when it is more open than socket_mode says. */
  mode_t old_umask = sock_path ? umask(0177) : 0;
  int port = grpc_server_add_http2_port(a->server, cfg->grpc_addr, creds);
  if (sock_path)
    umask(old_umask);
  grpc_server_credentials_release(creds);
  if (port == 0) {
    snprintf(err, errlen, "cannot listen on %s (address in use, not permitted, or invalid)",
             cfg->grpc_addr);
    /* No port was added, so the server can be destroyed without starting it. */
    grpc_server_destroy(a->server);
    grpc_completion_queue_shutdown(a->cq);
    while (grpc_completion_queue_next(a->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
      ;
    grpc_completion_queue_destroy(a->cq);
    release(a, 1);
    return -1;
  }
  grpc_server_start(a->server);

  if (sock_path && chmod(sock_path, cfg->socket_mode) != 0) {
    snprintf(err, errlen, "chmod %o %s: %s", cfg->socket_mode, sock_path, strerror(errno));
    goto fail_started;
  }
  for (int i = 0; i < ADMIN_PENDING_REQUESTS; i++) {
    if (arm_request(a) != 0) {
      snprintf(err, errlen, "cannot accept calls (grpc_server_request_call failed)");
      goto fail_started;
    }
  }
  rc = uv_thread_create(&a->thread, cq_thread, a);
  if (rc != 0) {
    snprintf(err, errlen, "cannot start the admin thread: %s", uv_strerror(rc));
    goto fail_started;
  }
  a->thread_started = 1;
  srv->admin = a;
  log_info("admin API listening on %s%s", cfg->grpc_addr,
           cfg->grpc_is_unix
               ? ""
               : (cfg->client_ca[0] ? " (TLS, client certificates required)" : " (TLS)"));
  return 0;

fail_started:
  shutdown_grpc(a);
  release(a, 1);
  return -1;
}

void admin_server_stop(server_t *srv)
{
  admin_server_t *a = srv->admin;
  if (!a)
    return;
  srv->admin = NULL;
  shutdown_grpc(a);
  release(a, 1);
  log_info("admin API stopped");
}
