/*
 * cluster_write: an admin change as one etcd transaction. See cluster_write.h.
 */
#include "cluster_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_batch.h"
#include "cluster_values.h"

/* Room for a key: prefix, kind, listener address, hostname and separators. */
#define KEY_MAX (256 + 16 + CLUSTER_ADDR_MAX + CLUSTER_HOSTNAME_MAX + 8)

static int key_of(const char *prefix, cluster_kind_t kind, const control_req_t *req, char *buf)
{
  cluster_key_t k;
  memset(&k, 0, sizeof(k));
  k.kind = kind;
  snprintf(k.listener, sizeof(k.listener), "%s", req->listener);
  snprintf(k.hostname, sizeof(k.hostname), "%s", req->hostname);
  k.fw_type = req->rule_type;
  snprintf(k.fw_value, sizeof(k.fw_value), "%s", req->rule_value);
  return cluster_key_format(prefix, &k, buf, KEY_MAX) < 0 ? MCP_EINVAL : 0;
}

static char *listener_json(const listener_settings_t *s)
{
  cluster_listener_t l = {
      .max_connections = s->max_connections,
      .proxy_protocol = s->proxy_protocol,
      .proxy_from = (char(*)[MCP_FIREWALL_VALUE_MAX])s->proxy_from,
      .n_proxy_from = s->nproxy_from,
      .rate_limit_count = s->rate_count,
      .rate_limit_period_ms = s->rate_period_ms,
      .max_connections_per_client = s->max_per_client,
  };
  snprintf(l.fallback, sizeof(l.fallback), "%s", s->fallback);
  return cluster_listener_to_json(&l);
}

static char *route_json(const control_req_t *req)
{
  cluster_route_t r = {.send_proxy = (cluster_send_proxy_t)req->send_proxy};
  snprintf(r.backend, sizeof(r.backend), "%s", req->backend);
  return cluster_route_to_json(&r);
}

/* How often an update is tried again when the listener changed between its read and write. */
#define UPDATE_TRIES 5
/* write_once: the update lost a race with another writer; nothing was written. */
#define RACE_LOST 1

/*
 * An update changes only the settings it gives, on top of the value etcd holds now (not this
 * instance's copy, which may be behind): read it, merge, and write conditioned on the key's
 * mod_revision being the one read. Another writer in between makes the condition fail; then
 * read and merge again. Returns 0 with the value to put in *json, or a status with msg.
 */
static int merge_update(etcd_client_t *etcd, const char *lkey, const control_req_t *req,
                        int64_t *mod_revision, char **json, char *msg, size_t msglen)
{
  etcd_range_t r = {0};
  char err[256];
  int rc = etcd_client_range(etcd, lkey, NULL, 0, 1, &r, err, sizeof(err));
  if (rc) {
    snprintf(msg, msglen, "etcd is unreachable (%s); nothing was changed", err);
    return rc == ETCD_ENOMEM ? MCP_ENOMEM : MCP_EBUSY;
  }
  if (r.n_kvs == 0) {
    etcd_range_release(&r);
    snprintf(msg, msglen, "no listener %s", req->listener);
    return MCP_ENOENT;
  }
  cluster_listener_t cur;
  listener_settings_t s;
  rc = cluster_listener_parse(r.kvs[0].value, r.kvs[0].value_len, &cur, err, sizeof(err));
  if (!rc) {
    rc = cluster_settings_from_value(&cur, &s, err, sizeof(err));
    cluster_listener_release(&cur);
  }
  *mod_revision = r.kvs[0].mod_revision;
  etcd_range_release(&r);
  if (rc) {
    snprintf(msg, msglen, "listener %s: the value in etcd is not valid (%s); put a valid one",
             req->listener, err);
    return MCP_EINVAL;
  }
  const listener_settings_t *in = &req->settings;
  unsigned m =
      req->op == CONTROL_SET_MAX_CONNECTIONS ? CONTROL_SET_MAX_CONNECTIONS_BIT : req->set_mask;
  if (m & CONTROL_SET_MAX_CONNECTIONS_BIT)
    s.max_connections = in->max_connections;
  if (m & CONTROL_SET_PROXY_PROTOCOL)
    s.proxy_protocol = in->proxy_protocol;
  if (m & CONTROL_SET_PROXY_FROM) {
    memcpy(s.proxy_from, in->proxy_from, sizeof(s.proxy_from));
    s.nproxy_from = in->nproxy_from;
  }
  if (m & CONTROL_SET_FALLBACK)
    memcpy(s.fallback, in->fallback, sizeof(s.fallback));
  if (m & (CONTROL_SET_RATE_COUNT | CONTROL_SET_RATE_PERIOD)) {
    s.rate_count = in->rate_count;
    s.rate_period_ms = in->rate_period_ms;
  }
  if (m & CONTROL_SET_MAX_PER_CLIENT)
    s.max_per_client = in->max_per_client;
  if (config_check_settings(&s, err, sizeof(err)) != 0) {
    snprintf(msg, msglen, "%s", err);
    return MCP_EINVAL;
  }
  *json = listener_json(&s);
  if (!*json) {
    snprintf(msg, msglen, "out of memory");
    return MCP_ENOMEM;
  }
  return 0;
}

/*
 * A transaction sent without an answer (the member went away mid-call) may or may not have been
 * made. Looks whether its first op's effect is there: the key holds the value put (then
 * *revision is the key's mod_revision), or a deleted key is gone (the read's revision). The
 * end state an admin asked for holds either way. Returns 1 when it is, 0 when it is not or the
 * look failed too.
 */
static int landed(etcd_client_t *etcd, const etcd_op_t *op, int64_t *revision)
{
  etcd_range_t r = {0};
  char err[256];
  if (etcd_client_range(etcd, op->key, NULL, 0, 1, &r, err, sizeof(err)) != 0)
    return 0;
  int yes = 0;
  if (op->type == ETCD_OP_PUT && r.n_kvs == 1 && r.kvs[0].value_len == strlen(op->value) &&
      !memcmp(r.kvs[0].value, op->value, r.kvs[0].value_len)) {
    *revision = r.kvs[0].mod_revision;
    yes = 1;
  } else if (op->type == ETCD_OP_DELETE && r.n_kvs == 0) {
    *revision = r.revision;
    yes = 1;
  }
  etcd_range_release(&r);
  return yes;
}

/* What the failed condition means for the caller. */
static int condition_failed(const control_req_t *req, char *msg, size_t msglen)
{
  switch (req->op) {
  case CONTROL_LISTENER_ADD:
    snprintf(msg, msglen, "listener %s already exists", req->listener);
    return MCP_EEXIST;
  case CONTROL_ROUTE_REMOVE:
    snprintf(msg, msglen, "no route for %s on %s", req->hostname, req->listener);
    return MCP_ENOENT;
  case CONTROL_RULE_REMOVE:
    snprintf(msg, msglen, "no %s rule %s", mcp_firewall_type_name(req->rule_type), req->rule_value);
    return MCP_ENOENT;
  default:
    snprintf(msg, msglen, "no listener %s", req->listener);
    return MCP_ENOENT;
  }
}

static int write_once(etcd_client_t *etcd, const char *prefix, const control_req_t *req,
                      int64_t *revision, char *msg, size_t msglen);

int cluster_write_change(etcd_client_t *etcd, const char *prefix, const control_req_t *req,
                         int64_t *revision, char *msg, size_t msglen)
{
  int rc = MCP_EBUSY;
  for (int i = 0; i < UPDATE_TRIES; i++) {
    rc = write_once(etcd, prefix, req, revision, msg, msglen);
    if (rc != RACE_LOST)
      return rc;
  }
  snprintf(msg, msglen, "listener %s kept changing in etcd; nothing was changed, try again",
           req->listener);
  return MCP_EBUSY;
}

/* One try; RACE_LOST when an update lost a race with another writer (nothing was written). */
static int write_once(etcd_client_t *etcd, const char *prefix, const control_req_t *req,
                      int64_t *revision, char *msg, size_t msglen)
{
  char lkey[KEY_MAX], key[KEY_MAX], routes_start[KEY_MAX], routes_end[KEY_MAX + 1];
  char *value = NULL;
  etcd_compare_t cmp = {.target = ETCD_TARGET_VERSION};
  etcd_op_t ops[2];
  size_t nops = 1;
  int has_cmp = 1;

  *revision = 0;
  if (key_of(prefix, CLUSTER_LISTENER, req, lkey) != 0) {
    snprintf(msg, msglen, "the key for %s is too long", req->listener);
    return MCP_EINVAL;
  }
  cmp.key = lkey;
  cmp.result = ETCD_CMP_GREATER; /* "exists": version > 0 */
  switch (req->op) {
  case CONTROL_LISTENER_ADD:
    cmp.result = ETCD_CMP_EQUAL; /* version 0: absent */
    value = listener_json(&req->settings);
    ops[0] = (etcd_op_t){.type = ETCD_OP_PUT, .key = lkey, .value = value};
    break;
  case CONTROL_LISTENER_UPDATE:
  case CONTROL_SET_MAX_CONNECTIONS: {
    int rc = merge_update(etcd, lkey, req, &cmp.number, &value, msg, msglen);
    if (rc)
      return rc;
    cmp.target = ETCD_TARGET_MOD;
    cmp.result = ETCD_CMP_EQUAL;
    ops[0] = (etcd_op_t){.type = ETCD_OP_PUT, .key = lkey, .value = value};
    break;
  }
  case CONTROL_LISTENER_REMOVE: {
    /* The listener and every route under it, in the same revision. */
    int n = snprintf(routes_start, sizeof(routes_start), "%sroutes/%s/", prefix, req->listener);
    if (n < 0 || (size_t)n >= sizeof(routes_start))
      return MCP_EINVAL;
    etcd_prefix_end(routes_start, (size_t)n, routes_end);
    ops[0] = (etcd_op_t){.type = ETCD_OP_DELETE, .key = lkey};
    ops[1] = (etcd_op_t){.type = ETCD_OP_DELETE, .key = routes_start, .range_end = routes_end};
    nops = 2;
    break;
  }
  case CONTROL_ROUTE_ADD:
  case CONTROL_ROUTE_REMOVE:
    if (key_of(prefix, CLUSTER_ROUTE, req, key) != 0)
      return MCP_EINVAL;
    if (req->op == CONTROL_ROUTE_ADD) {
      value = route_json(req);
      ops[0] = (etcd_op_t){.type = ETCD_OP_PUT, .key = key, .value = value};
    } else {
      cmp.key = key;
      ops[0] = (etcd_op_t){.type = ETCD_OP_DELETE, .key = key};
    }
    break;
  case CONTROL_RULE_ADD:
  case CONTROL_RULE_REMOVE:
    if (key_of(prefix, CLUSTER_FIREWALL, req, key) != 0)
      return MCP_EINVAL;
    cmp.key = key;
    if (req->op == CONTROL_RULE_ADD) {
      has_cmp = 0; /* already there is fine: the put leaves it as it was */
      ops[0] = (etcd_op_t){.type = ETCD_OP_PUT, .key = key, .value = "{}"};
    } else {
      ops[0] = (etcd_op_t){.type = ETCD_OP_DELETE, .key = key};
    }
    break;
  }
  if (ops[0].type == ETCD_OP_PUT && !ops[0].value) {
    snprintf(msg, msglen, "out of memory");
    return MCP_ENOMEM;
  }

  etcd_txn_t txn = {
      .compare = &cmp, .n_compare = has_cmp ? 1 : 0, .success = ops, .n_success = nops};
  etcd_txn_result_t res = {0};
  char err[256];
  int rc = etcd_client_txn(etcd, &txn, &res, err, sizeof(err));
  if (rc == ETCD_EUNKNOWN && landed(etcd, &ops[0], revision)) {
    free(value);
    return 0; /* it did: wait for its revision like any other */
  }
  free(value);
  if (rc == ETCD_EUNAVAILABLE) {
    snprintf(msg, msglen, "etcd is unreachable (%s); nothing was changed", err);
    return MCP_EBUSY;
  }
  if (rc == ETCD_EUNKNOWN) {
    snprintf(msg, msglen,
             "etcd did not answer (%s): the change may or may not have been made; list to see",
             err);
    return MCP_EBUSY;
  }
  if (rc) {
    snprintf(msg, msglen, "etcd refused the change: %s", err);
    return rc == ETCD_ENOMEM ? MCP_ENOMEM : MCP_EIO;
  }
  int ok = res.succeeded;
  *revision = res.revision;
  etcd_txn_release(&res);
  if (!ok && cmp.target == ETCD_TARGET_MOD)
    return RACE_LOST; /* changed since it was read: merge again */
  return ok ? 0 : condition_failed(req, msg, msglen);
}
