/*
 * control: write-through changes. Validate on the loop thread, write to SQLite on a libuv work
 * thread (one request at a time, each its own transaction), and only after the commit publish
 * the change in memory on the loop thread. See control.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "cluster.h"
#include "cluster_write.h"
#include "mcproxy/client_limits.h"
#include "config.h"
#include "log.h"
#include "loops.h"
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
  cluster_t *cluster; /* cluster mode: changes go to etcd (control_set_cluster) */
};

void control_set_cluster(control_t *ctl, cluster_t *cluster)
{
  ctl->cluster = cluster;
}

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

/*
 * Applies the settings req gives on top of *s (a listener's current settings, or the defaults)
 * and checks the result as the config file would. Returns 0 or a status (req->msg says why).
 */
static int merge_settings(state_t *srv, control_req_t *req, const char *self,
                          listener_settings_t *s)
{
  const listener_settings_t *in = &req->settings;
  unsigned m = req->set_mask;
  char err[256];
  if (m & CONTROL_SET_MAX_CONNECTIONS_BIT)
    s->max_connections = in->max_connections;
  if (m & CONTROL_SET_PROXY_PROTOCOL)
    s->proxy_protocol = in->proxy_protocol;
  if (m & CONTROL_SET_PROXY_FROM) {
    if (in->nproxy_from > CONFIG_PROXY_FROM_MAX)
      return fail(req, MCP_EINVAL, "proxy_from holds at most %s ranges", "32");
    s->nproxy_from = 0;
    for (size_t i = 0; i < in->nproxy_from; i++) {
      char canon[MCP_FIREWALL_VALUE_MAX];
      if (mcp_firewall_normalize(MCP_FIREWALL_CIDR, in->proxy_from[i], canon) != 0)
        return fail(req, MCP_EINVAL, "proxy_from: \"%s\" is not a CIDR range", in->proxy_from[i]);
      memcpy(s->proxy_from[s->nproxy_from++], canon, sizeof(canon));
    }
  }
  if (m & CONTROL_SET_FALLBACK) {
    s->fallback[0] = '\0';
    if (in->fallback[0]) {
      mcp_backend_t b;
      struct sockaddr_storage own;
      if (mcp_backend_parse(in->fallback, &b) != 0)
        return fail(req, MCP_EINVAL,
                    "invalid fallback \"%s\" (want IPv4:port, [IPv6]:port or hostname:port)",
                    in->fallback);
      if (loops_to_a_listener(srv, &b) ||
          (mcp_listener_addr_parse(self, &own, NULL) == 0 && config_find_loop(&b, &own, 1) == 0))
        return fail(req, MCP_ELOOP, "fallback %s is this proxy's own listener (a loop)", b.text);
      snprintf(s->fallback, sizeof(s->fallback), "%s", b.text);
    }
  }
  if (m & (CONTROL_SET_RATE_COUNT | CONTROL_SET_RATE_PERIOD)) {
    int64_t count = (m & CONTROL_SET_RATE_COUNT) ? req->rate_count : s->rate_count;
    int64_t period = (m & CONTROL_SET_RATE_PERIOD) ? req->rate_period_ms : s->rate_period_ms;
    if (count < 0 || period < 0 || count > MCP_CLIENT_LIMITS_MAX_RATE ||
        period > MCP_CLIENT_LIMITS_MAX_PERIOD_MS)
      return fail(req, MCP_EINVAL, "%s",
                  "rate_limit: the count must be 0 to 1000000 and the period 1 ms to 24 h");
    if (count > 0 && period == 0)
      return fail(req, MCP_EINVAL, "%s", "rate_limit: the period must be more than zero");
    s->rate_count = (uint32_t)count;
    s->rate_period_ms = count ? (uint32_t)period : 0;
  }
  if (m & CONTROL_SET_MAX_PER_CLIENT) {
    if (req->max_per_client < 0 || req->max_per_client > UINT32_MAX)
      return fail(req, MCP_EINVAL, "%s", "max_connections_per_client must be 0 to 4294967295");
    s->max_per_client = req->max_per_client;
  }
  if (s->max_connections < 0 || s->max_connections > CONFIG_MAX_CONNECTIONS_MAX)
    return fail(req, MCP_EINVAL, "max_connections must be from 0 to %s",
                MCP_STRINGIFY(CONFIG_MAX_CONNECTIONS_MAX));
  if (config_check_settings(s, err, sizeof(err)) != 0)
    return fail(req, MCP_EINVAL, "%s", err);
  return 0;
}

/*
 * AddListener binds here, on the loop thread, before anything is saved: an address that cannot
 * be bound is refused with nothing written. The listener accepts from now on; if the write then
 * fails it is freed again (finish()).
 */
static int bind_new_listener(state_t *srv, control_req_t *req)
{
  mcp_listener_config_t lc = srv->listener_config;
  lc.addr = req->listener;
  lc.max_connections = req->settings.max_connections;
  mcp_listener_t *l;
  int rc = mcp_listener_new(srv->loop, &lc, &l);
  if (rc)
    return fail(req, rc, "cannot create listener: %s", mcp_strerror(rc));
  rc = mcp_listener_set_firewall(l, srv->firewall);
  if (!rc)
    rc = mcp_listener_start(l);
  if (rc) {
    mcp_listener_free(l, NULL, NULL);
    req->status = rc;
    snprintf(req->msg, sizeof(req->msg), "cannot listen on %s: %s", req->listener, uv_strerror(rc));
    return rc;
  }
  req->pending = l;
  return 0;
}

static int validate_listener(state_t *srv, control_req_t *req, int cluster_mode)
{
  struct sockaddr_storage ss;
  char canon[CONFIG_ADDR_MAX];
  req->listener[sizeof(req->listener) - 1] = '\0';
  if (mcp_listener_addr_parse(req->listener, &ss, canon) != 0) {
    if (req->op == CONTROL_LISTENER_ADD)
      return fail(req, MCP_EINVAL, "invalid listen address \"%s\" (want IPv4:port or [IPv6]:port)",
                  req->listener);
    return fail(req, MCP_ENOENT, "no listener %s", req->listener);
  }
  snprintf(req->listener, sizeof(req->listener), "%s", canon);
  int i = state_listener_index(srv, canon);
  if (req->op == CONTROL_LISTENER_REMOVE)
    return i < 0 ? fail(req, MCP_ENOENT, "no listener %s", canon) : 0;
  listener_settings_t merged;
  if (req->op == CONTROL_LISTENER_UPDATE) {
    if (i < 0)
      return fail(req, MCP_ENOENT, "no listener %s", canon);
    merged = srv->settings[i];
  } else {
    if (i >= 0)
      return fail(req, MCP_EEXIST, "listener %s already exists", canon);
    if (((struct sockaddr_in *)&ss)->sin_port == 0)
      return fail(req, MCP_EINVAL, "%s", "port 0 is not a listen port");
    /* A listener where a route or fallback already sends would route that traffic again. */
    if ((req->status = loops_listener_targeted(srv, canon, &ss, req->msg, sizeof(req->msg))) != 0)
      return req->status;
    memset(&merged, 0, sizeof(merged));
  }
  int rc = merge_settings(srv, req, canon, &merged);
  if (rc)
    return rc;
  req->settings = merged;
  /* In cluster mode the listener is bound when the change comes back through the watch. */
  return req->op == CONTROL_LISTENER_ADD && !cluster_mode ? bind_new_listener(srv, req) : 0;
}

/* Checks req against the live state and normalises its strings in place. Loop thread. */
static int validate(state_t *srv, control_req_t *req, int cluster_mode)
{
  char canon[MCP_BACKEND_MAX];
  mcp_listener_t *l = NULL;

  if (req->op == CONTROL_LISTENER_ADD || req->op == CONTROL_LISTENER_UPDATE ||
      req->op == CONTROL_LISTENER_REMOVE)
    return validate_listener(srv, req, cluster_mode);
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
    if (req->send_proxy < MCP_SEND_PROXY_NONE || req->send_proxy > MCP_SEND_PROXY_V2)
      return fail(req, MCP_EINVAL, "%s", "send_proxy must be none, v1 or v2");
    if (mcp_hostname_normalize_pattern(req->hostname, strlen(req->hostname), canon) < 0)
      return fail(req, MCP_EINVAL, "invalid hostname \"%s\" (a DNS name, or \"*.\" and a DNS name)",
                  req->hostname);
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
    if (mcp_hostname_normalize_pattern(req->hostname, strlen(req->hostname), canon) < 0)
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
    /* Cluster mode writes the listener's whole value: its settings with this one changed. */
    req->settings = srv->settings[state_listener_index(srv, req->listener)];
    req->settings.max_connections = req->max_connections;
    return 0;
  case CONTROL_LISTENER_ADD:
  case CONTROL_LISTENER_REMOVE:
  case CONTROL_LISTENER_UPDATE:
    return 0; /* validate_listener() */
  }
  return fail(req, MCP_EINVAL, "%s", "unknown operation");
}

/* A listener's row and settings. Work thread. */
static int store_listener_write(mcp_store_t *st, control_req_t *req)
{
  if (req->op == CONTROL_LISTENER_REMOVE)
    return mcp_store_listener_remove(st, req->listener);
  const char *from[CONFIG_PROXY_FROM_MAX];
  mcp_store_listener_settings_t s;
  state_settings_to_store(&req->settings, &s, from);
  /* An update writes the merged settings whole: validate() checked them as one. */
  return req->op == CONTROL_LISTENER_ADD ? mcp_store_listener_add_settings(st, req->listener, &s)
                                         : mcp_store_listener_set_settings(st, req->listener, &s);
}

/*
 * A hostname backend (a route's, or the fallback an AddListener / UpdateListener sets) that
 * resolves to one of our own listen addresses is a loop too (mcp_backend_check_loop: localhost
 * names without DNS, others resolved within half a second). It blocks, so it runs here on the
 * work thread, before anything is written. Returns 0 to go on, or -1 with req's status set.
 */
static int resolving_loop_check(control_t *ctl, control_req_t *req)
{
  int fallback = req->op == CONTROL_LISTENER_ADD || req->op == CONTROL_LISTENER_UPDATE;
  const char *text = fallback ? req->settings.fallback : req->backend;
  mcp_backend_t backend;
  if (fallback && !(req->set_mask & CONTROL_SET_FALLBACK))
    return 0; /* a fallback this request does not set was checked when it was set */
  if (!text[0] || mcp_backend_parse(text, &backend) != 0 || backend.addr.sa.sa_family != AF_UNSPEC)
    return 0; /* none, or an IP literal (checked in validate()) */
  const struct sockaddr *addrs[ctl->nself ? ctl->nself : 1];
  for (size_t i = 0; i < ctl->nself; i++)
    addrs[i] = (const struct sockaddr *)&ctl->self[i];
  if (mcp_backend_check_loop(&backend, addrs, ctl->nself, 0) != MCP_ELOOP)
    return 0;
  fail(req, MCP_ELOOP,
       fallback ? "fallback %s resolves to this proxy's own listener (a loop)"
                : "backend %s resolves to this proxy's own listener (a loop)",
       text);
  return -1;
}

/*
 * Copies the listen addresses for resolving_loop_check, with the one an AddListener has just
 * bound (req->pending). Loop thread. Returns 0 or MCP_ENOMEM.
 */
static int snapshot_self(control_t *ctl, const control_req_t *req)
{
  state_t *srv = ctl->st;
  if (srv->nlisteners + 1 > ctl->self_cap) {
    struct sockaddr_storage *v = realloc(ctl->self, (srv->nlisteners + 1) * sizeof(*v));
    if (!v)
      return MCP_ENOMEM;
    ctl->self = v;
    ctl->self_cap = srv->nlisteners + 1;
  }
  ctl->nself = 0;
  for (size_t i = 0; i < srv->nlisteners; i++)
    if (mcp_listener_sockname(srv->listeners[i], &ctl->self[ctl->nself]) == 0)
      ctl->nself++;
  if (req->pending && mcp_listener_sockname(req->pending, &ctl->self[ctl->nself]) == 0)
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
  if (ctl->cluster) {
    /* A route's backend or a listener's fallback: the same check as below. */
    if (resolving_loop_check(ctl, req) != 0)
      return;
    req->status = cluster_write_change(cluster_etcd(ctl->cluster), cluster_prefix(ctl->cluster),
                                       req, &req->revision, req->msg, sizeof(req->msg));
    return;
  }
  switch (req->op) {
  case CONTROL_ROUTE_ADD:
    if (resolving_loop_check(ctl, req) != 0)
      return;
    rc = mcp_store_route_put_ex(st, req->listener, req->hostname, req->backend,
                                (mcp_send_proxy_t)req->send_proxy);
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
  case CONTROL_LISTENER_ADD:
  case CONTROL_LISTENER_UPDATE:
    if (resolving_loop_check(ctl, req) != 0)
      return;
    rc = store_listener_write(st, req);
    break;
  case CONTROL_LISTENER_REMOVE:
    rc = store_listener_write(st, req);
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
    int rc = req->op == CONTROL_ROUTE_ADD ? mcp_routes_put_ex(rt, req->hostname, req->backend,
                                                              (mcp_send_proxy_t)req->send_proxy)
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
  int i = state_listener_index(srv, req->listener);
  if (i < 0)
    return MCP_ENOENT;
  switch (req->op) {
  case CONTROL_SET_MAX_CONNECTIONS:
    srv->settings[i].max_connections = req->max_connections;
    break;
  case CONTROL_LISTENER_UPDATE:
    srv->settings[i] = req->settings;
    break;
  default:
    return 0;
  }
  return state_apply_settings(srv, (size_t)i);
}

/*
 * The listener changes that are not an edit of a snapshot: AddListener takes the bound listener
 * into the table, RemoveListener takes one out. Loop thread, after the commit. Returns 0 or
 * MCP_ENOMEM; *index is the listener's place in the table (the worker loops are told by it).
 */
static int apply_listener(state_t *srv, control_req_t *req, size_t *index)
{
  if (req->op == CONTROL_LISTENER_ADD) {
    int rc = state_add_listener(srv, req->pending, &req->settings);
    if (rc)
      return rc;
    req->pending = NULL;
    *index = srv->nlisteners - 1;
    return state_apply_settings(srv, *index);
  }
  int i = state_listener_index(srv, req->listener);
  if (i < 0)
    return MCP_ENOENT;
  *index = (size_t)i;
  return 0;
}

static void start_next(control_t *ctl);

static void finish(control_req_t *req)
{
  /* A listener bound for an AddListener that was then refused or not saved. */
  if (req->pending) {
    mcp_listener_free(req->pending, NULL, NULL);
    req->pending = NULL;
  }
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

/* Cluster mode: this instance applied the change (or gave up waiting); answer it. */
static void on_applied(void *data, int status)
{
  control_req_t *req = data;
  req->status = status;
  finish(req);
}

static void after_work_cb(uv_work_t *w, int status)
{
  control_t *ctl = w->data;
  control_req_t *req = ctl->current;

  state_free_retired(ctl->st);
  if (ctl->cluster) {
    /* Written to etcd: the next change may start while this one waits for the watch. */
    ctl->busy = 0;
    ctl->current = NULL;
    if (req->status == 0)
      cluster_wait(ctl->cluster, req->revision, on_applied, req, req->msg, sizeof(req->msg));
    else
      finish(req);
    start_next(ctl);
    return;
  }
  if (req->status == 0 && (req->op == CONTROL_LISTENER_ADD || req->op == CONTROL_LISTENER_REMOVE)) {
    size_t index = 0;
    int rc = apply_listener(ctl->st, req, &index);
    if (!rc) {
      req->ctl = ctl;
      if (req->op == CONTROL_LISTENER_ADD) {
        workers_add_listener(ctl->st, index, on_published, req);
      } else {
        /* The main loop's table first: done may run (and free req) inside the call below. The
         * message names the listener by its index, which the worker tables still have. */
        state_remove_listener(ctl->st, index);
        workers_remove_listener(ctl->st, index, on_published, req);
      }
      return;
    }
    req->status = rc;
    snprintf(req->msg, sizeof(req->msg), "saved, but not applied in memory: %s", mcp_strerror(rc));
    log_error("control: %s", req->msg);
  } else if (req->status == 0) {
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
  if (snapshot_self(ctl, ctl->current) != 0)
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
  if (ctl->cluster) {
    cluster_status_t cs;
    cluster_get_status(ctl->cluster, &cs);
    if (!cs.connected) {
      req->status = MCP_EBUSY;
      snprintf(req->msg, sizeof(req->msg),
               "etcd is unreachable (%s); nothing was changed: this instance serves its last "
               "applied state (revision %lld)",
               cs.last_error[0] ? cs.last_error : "disconnected", (long long)cs.applied_revision);
      finish(req);
      return;
    }
  }
  if (validate(ctl->st, req, ctl->cluster != NULL) != 0) {
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
