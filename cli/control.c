/*
 * control: write-through changes. Validate on the loop thread, write to SQLite on a libuv work
 * thread (one request at a time, each its own transaction), and only after the commit publish
 * the change in memory on the loop thread. See control.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "config.h"
#include "log.h"
#include "workers.h"

#define MCP_STRINGIFY_(x) #x
#define MCP_STRINGIFY(x) MCP_STRINGIFY_(x)

/*
 * The queue. Requests wait in head..tail; current is the one being written or published (never
 * in the queue). Loop thread only, except that work_cb reads current (and the store) on a work
 * thread while busy.
 */
struct control_s {
  state_t *st;
  control_req_t *head, *tail; /* waiting, not started */
  control_req_t *current;     /* NULL unless busy */
  int busy;                   /* a request is being written (or published to the workers) */
  int stopping;               /* control_stop() was called */
  uv_work_t work;
  /*
   * The listen addresses as they were when the current request started, for the loop check of
   * a hostname backend, which resolves and so runs on the work thread (resolving_loop_check).
   */
  struct sockaddr_storage *self;
  size_t nself, self_cap;
};

control_t *control_new(state_t *st)
{
  control_t *ctl = calloc(1, sizeof(*ctl));
  if (ctl)
    ctl->st = st;
  return ctl;
}

void control_free(control_t *ctl)
{
  if (ctl)
    free(ctl->self);
  free(ctl);
}

int control_busy(const control_t *ctl)
{
  return ctl->busy;
}

static int fail(control_req_t *req, int status, const char *fmt, const char *arg)
{
  req->status = status;
  snprintf(req->msg, sizeof(req->msg), fmt, arg);
  return status;
}

/* 1 if a route to backend would reach one of srv's own listeners (config_find_loop). */
static int loops_to_a_listener(state_t *srv, const mcp_backend_t *backend)
{
  for (size_t i = 0; i < srv->nlisteners; i++) {
    struct sockaddr_storage ss;
    if (mcp_listener_addr_parse(mcp_listener_addr(srv->listeners[i]), &ss, NULL) == 0 &&
        config_find_loop(backend, &ss, 1) == 0)
      return 1;
  }
  return 0;
}

/* Checks req against the live state and normalises its strings in place. Loop thread. */
static int validate(state_t *srv, control_req_t *req)
{
  char canon[MCP_BACKEND_MAX];
  mcp_listener_t *l = NULL;

  if (req->op == CONTROL_ROUTE_ADD || req->op == CONTROL_ROUTE_REMOVE ||
      req->op == CONTROL_SET_MAX_CONNECTIONS) {
    req->listener[sizeof(req->listener) - 1] = '\0';
    l = state_find_listener(srv, req->listener);
    if (!l)
      return fail(req, MCP_ENOENT, "no listener %s", req->listener);
    snprintf(req->listener, sizeof(req->listener), "%s", mcp_listener_addr(l));
  }

  switch (req->op) {
  case CONTROL_ROUTE_ADD: {
    mcp_backend_t backend;
    req->hostname[sizeof(req->hostname) - 1] = '\0';
    req->backend[sizeof(req->backend) - 1] = '\0';
    if (mcp_hostname_normalize(req->hostname, strlen(req->hostname), canon) < 0)
      return fail(req, MCP_EINVAL, "invalid hostname \"%s\"", req->hostname);
    snprintf(req->hostname, sizeof(req->hostname), "%s", canon);
    if (mcp_backend_parse(req->backend, &backend) != 0)
      return fail(req, MCP_EINVAL,
                  "invalid backend \"%s\" (want IPv4:port, [IPv6]:port or "
                  "hostname:port)",
                  req->backend);
    snprintf(req->backend, sizeof(req->backend), "%s", backend.text);
    if (loops_to_a_listener(srv, &backend))
      return fail(req, MCP_ELOOP, "backend %s is this proxy's own listener (a loop)", req->backend);
    return 0;
  }
  case CONTROL_ROUTE_REMOVE:
    req->hostname[sizeof(req->hostname) - 1] = '\0';
    if (mcp_hostname_normalize(req->hostname, strlen(req->hostname), canon) < 0)
      return fail(req, MCP_EINVAL, "invalid hostname \"%s\"", req->hostname);
    snprintf(req->hostname, sizeof(req->hostname), "%s", canon);
    return 0;
  case CONTROL_RULE_ADD:
  case CONTROL_RULE_REMOVE:
    req->rule_value[sizeof(req->rule_value) - 1] = '\0';
    if (!mcp_firewall_type_name(req->rule_type))
      return fail(req, MCP_EINVAL, "%s", "unknown firewall rule type");
    if (mcp_firewall_normalize(req->rule_type, req->rule_value, canon) != 0)
      return fail(req, MCP_EINVAL, "invalid firewall rule value \"%s\"", req->rule_value);
    snprintf(req->rule_value, sizeof(req->rule_value), "%s", canon);
    if (req->op == CONTROL_RULE_ADD && req->rule_type == MCP_FIREWALL_COUNTRY && !srv->geoip)
      return fail(req, MCP_ENOGEOIP, "%s",
                  "country rules need a GeoIP database ([firewall] geoip_db)");
    return 0;
  case CONTROL_SET_MAX_CONNECTIONS:
    if (req->max_connections < 0 || req->max_connections > CONFIG_MAX_CONNECTIONS_MAX)
      return fail(req, MCP_ERANGE, "max_connections must be from 0 to %s",
                  MCP_STRINGIFY(CONFIG_MAX_CONNECTIONS_MAX));
    return 0;
  }
  return fail(req, MCP_EINVAL, "%s", "unknown operation");
}

/*
 * A hostname backend that resolves to one of our own listen addresses is a loop too
 * (mcp_backend_check_loop: localhost names without DNS, others resolved within half a second).
 * It blocks, so it runs here on the work thread, before anything is written. Returns 0 to go on,
 * or -1 with req's status set.
 */
static int resolving_loop_check(control_t *ctl, control_req_t *req)
{
  mcp_backend_t backend;
  if (mcp_backend_parse(req->backend, &backend) != 0 || backend.addr.sa.sa_family != AF_UNSPEC)
    return 0; /* IP literals were checked in validate() */
  const struct sockaddr *addrs[ctl->nself ? ctl->nself : 1];
  for (size_t i = 0; i < ctl->nself; i++)
    addrs[i] = (const struct sockaddr *)&ctl->self[i];
  if (mcp_backend_check_loop(&backend, addrs, ctl->nself, 0) != MCP_ELOOP)
    return 0;
  fail(req, MCP_ELOOP, "backend %s resolves to this proxy's own listener (a loop)", req->backend);
  return -1;
}

/* Copies the listen addresses for resolving_loop_check. Loop thread. Returns 0 or MCP_ENOMEM. */
static int snapshot_self(control_t *ctl)
{
  state_t *srv = ctl->st;
  if (srv->nlisteners > ctl->self_cap) {
    struct sockaddr_storage *v = realloc(ctl->self, srv->nlisteners * sizeof(*v));
    if (!v)
      return MCP_ENOMEM;
    ctl->self = v;
    ctl->self_cap = srv->nlisteners;
  }
  ctl->nself = 0;
  for (size_t i = 0; i < srv->nlisteners; i++)
    if (mcp_listener_sockname(srv->listeners[i], &ctl->self[ctl->nself]) == 0)
      ctl->nself++;
  return 0;
}

/* The database write. Runs on a libuv work thread; touches only the store and req. */
static void work_cb(uv_work_t *w)
{
  control_t *ctl = w->data;
  control_req_t *req = ctl->current;
  mcp_store_t *st = ctl->st->store;
  int rc;
  switch (req->op) {
  case CONTROL_ROUTE_ADD:
    if (resolving_loop_check(ctl, req) != 0)
      return;
    rc = mcp_store_route_put(st, req->listener, req->hostname, req->backend);
    break;
  case CONTROL_ROUTE_REMOVE:
    rc = mcp_store_route_remove(st, req->listener, req->hostname);
    break;
  case CONTROL_RULE_ADD:
    rc = mcp_store_firewall_add(st, req->rule_type, req->rule_value);
    break;
  case CONTROL_RULE_REMOVE:
    rc = mcp_store_firewall_remove(st, req->rule_type, req->rule_value);
    break;
  case CONTROL_SET_MAX_CONNECTIONS:
    rc = mcp_store_listener_set_max_connections(st, req->listener, req->max_connections);
    break;
  default:
    rc = MCP_EINVAL;
  }
  req->status = rc;
  if (rc == MCP_ENOENT) {
    if (req->op == CONTROL_ROUTE_REMOVE)
      snprintf(req->msg, sizeof(req->msg), "no route for %s on %s", req->hostname, req->listener);
    else if (req->op == CONTROL_RULE_REMOVE)
      snprintf(req->msg, sizeof(req->msg), "no %s rule %s", mcp_firewall_type_name(req->rule_type),
               req->rule_value);
    else
      snprintf(req->msg, sizeof(req->msg), "no listener %s", req->listener);
  } else if (rc) {
    snprintf(req->msg, sizeof(req->msg), "database: %s (%s)", mcp_strerror(rc),
             mcp_store_errmsg(st));
  }
}

/* Publishes a committed change. Loop thread. Returns 0 or MCP_ENOMEM. */
static int apply(state_t *srv, control_req_t *req)
{
  if (req->op == CONTROL_ROUTE_ADD || req->op == CONTROL_ROUTE_REMOVE) {
    mcp_listener_t *l = state_find_listener(srv, req->listener);
    mcp_routes_t *rt;
    if (mcp_routes_clone(mcp_listener_routes(l), &rt) != 0)
      return MCP_ENOMEM;
    int rc = req->op == CONTROL_ROUTE_ADD ? mcp_routes_put(rt, req->hostname, req->backend)
                                          : mcp_routes_remove(rt, req->hostname);
    if (rc == 0 || rc == MCP_ENOENT)
      mcp_listener_set_routes(l, rt);
    mcp_routes_unref(rt);
    return rc == MCP_ENOENT ? 0 : rc;
  }
  if (req->op == CONTROL_RULE_ADD || req->op == CONTROL_RULE_REMOVE) {
    mcp_firewall_t *fw;
    if (mcp_firewall_clone(srv->firewall, &fw) != 0)
      return MCP_ENOMEM;
    int rc = req->op == CONTROL_RULE_ADD ? mcp_firewall_add(fw, req->rule_type, req->rule_value)
                                         : mcp_firewall_remove(fw, req->rule_type, req->rule_value);
    if (rc == MCP_ENOENT)
      rc = 0;
    if (!rc)
      rc = mcp_firewall_seal(fw);
    if (rc) {
      mcp_firewall_unref(fw);
      return rc;
    }
    state_set_firewall(srv, fw);
    return 0;
  }
  mcp_listener_set_max_connections(state_find_listener(srv, req->listener), req->max_connections);
  return 0;
}

static void start_next(control_t *ctl);

static void finish(control_req_t *req)
{
  req->done(req, req->status, req->status ? req->msg : "");
}

/* Every worker loop has the change too (or could not be told): reply, start the next one. */
static void on_published(void *data, int status)
{
  control_req_t *req = data;
  control_t *ctl = req->ctl;
  if (status) {
    req->status = status;
    snprintf(req->msg, sizeof(req->msg),
             "saved, but not applied on every worker loop: %s (restart to resync)",
             mcp_strerror(status));
    log_error("control: %s", req->msg);
  }
  ctl->busy = 0;
  ctl->current = NULL;
  finish(req);
  start_next(ctl);
}

/* Refuses req without touching the database: the server is shutting down. */
static void refuse_stopping(control_req_t *req)
{
  req->status = MCP_EBUSY;
  snprintf(req->msg, sizeof(req->msg), "mc-proxy is shutting down; nothing was changed");
  finish(req);
}

void control_stop(control_t *ctl)
{
  ctl->stopping = 1;
  /* The request being written (if any) completes normally; the ones behind it never start. */
  control_req_t *req = ctl->head;
  ctl->head = ctl->tail = NULL;
  while (req) {
    control_req_t *next = req->next;
    refuse_stopping(req);
    req = next;
  }
}

/* Takes the head request off the queue; it is the caller's to finish. */
static control_req_t *pop(control_t *ctl)
{
  control_req_t *req = ctl->head;
  ctl->head = req->next;
  if (!ctl->head)
    ctl->tail = NULL;
  return req;
}

static void after_work_cb(uv_work_t *w, int status)
{
  control_t *ctl = w->data;
  control_req_t *req = ctl->current;

  if (req->status == 0) {
    int rc = apply(ctl->st, req);
    if (rc) {
      /* Committed but not applied: memory is behind the database until a restart. */
      req->status = rc;
      snprintf(req->msg, sizeof(req->msg), "saved, but not applied in memory: %s",
               mcp_strerror(rc));
      log_error("control: %s", req->msg);
    } else {
      req->ctl = ctl;
      workers_publish(ctl->st, on_published, req);
      return;
    }
  }
  ctl->busy = 0;
  ctl->current = NULL;
  finish(req);
  start_next(ctl);
}

static void start_next(control_t *ctl)
{
  if (ctl->busy || !ctl->head || ctl->stopping)
    return;
  ctl->busy = 1;
  ctl->current = pop(ctl);
  ctl->work.data = ctl;
  if (snapshot_self(ctl) != 0)
    ctl->nself = 0; /* out of memory: the connect-time check still holds */
  int rc = uv_queue_work(ctl->st->loop, &ctl->work, work_cb, after_work_cb);
  if (rc) {
    control_req_t *req = ctl->current;
    ctl->current = NULL;
    ctl->busy = 0;
    req->status = MCP_EIO;
    snprintf(req->msg, sizeof(req->msg), "cannot queue the database write: %s", uv_strerror(rc));
    finish(req);
    start_next(ctl);
  }
}

void control_submit(control_t *ctl, control_req_t *req)
{
  req->status = 0;
  req->msg[0] = '\0';
  req->next = NULL;
  if (ctl->stopping) {
    refuse_stopping(req);
    return;
  }
  if (validate(ctl->st, req) != 0) {
    finish(req);
    return;
  }
  if (ctl->tail)
    ctl->tail->next = req;
  else
    ctl->head = req;
  ctl->tail = req;
  start_next(ctl);
}
