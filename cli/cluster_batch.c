/*
 * cluster_batch: parsing a batch's keys and values into items, and writing the items to the
 * database. Work thread; see cluster_batch.h.
 */
#include "cluster_batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mcproxy/client_limits.h"
#include "state.h"

/* At most this many skipped values of one batch get a line of their own; then a summary. */
#define BATCH_REPORT_MAX 20

/* Reports an item (or a key that never became one) as skipped. */
static void report_skip(batch_t *b, const char *what, size_t what_len, const char *why)
{
  b->nskipped++;
  snprintf(b->last_skip, sizeof(b->last_skip), "%.*s: %s", (int)(what_len > 120 ? 120 : what_len),
           what, why);
  if (b->nskipped <= BATCH_REPORT_MAX) {
    char shown[256];
    log_escape(shown, sizeof(shown), what, what_len > 160 ? 160 : what_len);
    log_warn("cluster: skipped %s: %s", shown, why);
  }
}

static void skip_item(batch_t *b, item_t *it, const char *why)
{
  char what[CLUSTER_ADDR_MAX + MCP_HOSTNAME_MAX + 64];
  switch (it->kind) {
  case ITEM_LISTENER:
    snprintf(what, sizeof(what), "listener %s", it->listener);
    break;
  case ITEM_ROUTE:
    snprintf(what, sizeof(what), "route %s %s", it->listener, it->name);
    break;
  case ITEM_FIREWALL:
    snprintf(what, sizeof(what), "rule %s %s", mcp_firewall_type_name(it->fw_type), it->name);
    break;
  default:
    snprintf(what, sizeof(what), "full read");
  }
  it->skip = 1;
  report_skip(b, what, strlen(what), why);
}

int cluster_settings_from_value(const cluster_listener_t *in, listener_settings_t *s, char *err,
                                size_t errlen)
{
  memset(s, 0, sizeof(*s));
  if (in->max_connections < 0 || in->max_connections > CONFIG_MAX_CONNECTIONS_MAX) {
    snprintf(err, errlen, "max_connections must be from 0 to %d", CONFIG_MAX_CONNECTIONS_MAX);
    return -1;
  }
  if (in->n_proxy_from > CONFIG_PROXY_FROM_MAX) {
    snprintf(err, errlen, "proxy_from holds at most %d ranges", CONFIG_PROXY_FROM_MAX);
    return -1;
  }
  if (in->rate_limit_count < 0 || in->rate_limit_count > MCP_CLIENT_LIMITS_MAX_RATE ||
      in->rate_limit_period_ms < 0 || in->rate_limit_period_ms > MCP_CLIENT_LIMITS_MAX_PERIOD_MS) {
    snprintf(err, errlen, "rate_limit: the count must be 0 to %u and the period 1 ms to 24 h",
             MCP_CLIENT_LIMITS_MAX_RATE);
    return -1;
  }
  if (in->max_connections_per_client < 0 || in->max_connections_per_client > UINT32_MAX) {
    snprintf(err, errlen, "max_connections_per_client must be 0 to 4294967295");
    return -1;
  }
  s->max_connections = in->max_connections;
  s->proxy_protocol = in->proxy_protocol;
  for (size_t i = 0; i < in->n_proxy_from; i++)
    memcpy(s->proxy_from[i], in->proxy_from[i], sizeof(s->proxy_from[i]));
  s->nproxy_from = in->n_proxy_from;
  snprintf(s->fallback, sizeof(s->fallback), "%s", in->fallback);
  s->rate_count = (uint32_t)in->rate_limit_count;
  s->rate_period_ms = s->rate_count ? (uint32_t)in->rate_limit_period_ms : 0;
  s->max_per_client = in->max_connections_per_client;
  return config_check_settings(s, err, errlen);
}

/* Makes an item of one key-value pair; 0, or -1 when out of memory. A bad pair is skipped. */
static int parse_kv(const batch_env_t *env, batch_t *b, const etcd_kv_t *kv, int is_delete,
                    item_t *it)
{
  cluster_entry_t e;
  char err[256];
  memset(it, 0, sizeof(*it));
  if (cluster_entry_parse(env->prefix, kv->key, kv->key_len, kv->value, kv->value_len, is_delete,
                          &e, err, sizeof(err)) != 0) {
    it->kind = ITEM_FIREWALL; /* any kind: a skipped item is never looked at again */
    it->skip = 1;
    report_skip(b, kv->key, kv->key_len, err);
    return 0;
  }
  it->kind = (item_kind_t)e.key.kind;
  it->is_delete = is_delete;
  int rc = 0;
  switch (e.key.kind) {
  case CLUSTER_LISTENER:
    memcpy(it->listener, e.key.listener, sizeof(it->listener));
    if (is_delete)
      break;
    it->settings = malloc(sizeof(*it->settings));
    if (!it->settings)
      rc = -1;
    else if (cluster_settings_from_value(&e.listener, it->settings, err, sizeof(err)) != 0)
      skip_item(b, it, err);
    break;
  case CLUSTER_ROUTE:
    memcpy(it->listener, e.key.listener, sizeof(it->listener));
    it->name = strdup(e.key.hostname);
    if (!is_delete) {
      it->backend = strdup(e.route.backend);
      it->send_proxy = (int)e.route.send_proxy;
    }
    rc = !it->name || (!is_delete && !it->backend) ? -1 : 0;
    break;
  case CLUSTER_FIREWALL:
    it->fw_type = e.key.fw_type;
    it->name = strdup(e.key.fw_value);
    rc = it->name ? 0 : -1;
    if (!rc && !is_delete && it->fw_type == MCP_FIREWALL_COUNTRY && !env->has_geoip)
      skip_item(b, it, "country rules need a GeoIP database ([firewall] geoip_db)");
    break;
  }
  cluster_entry_release(&e);
  return rc;
}

static void item_release(item_t *it)
{
  free(it->name);
  free(it->backend);
  free(it->settings);
  if (it->pending)
    mcp_listener_free(it->pending, NULL, NULL);
  memset(it, 0, sizeof(*it));
}

/*
 * Routes keys may be written before their listener's key (or outlive a deleted listener): a
 * full read applies them once the listener is there, so a watch must too, or instances that
 * follow and instances that read the prefix disagree. For each listener put that stands at the
 * end of the batch and brings a listener the database lacks (or deleted earlier in the batch),
 * the listener's route keys are read at the batch's revision and appended (putting a route that
 * is already there changes nothing). A listener the database keeps already has every route the
 * watch brought since it came, so a settings change reads nothing. 0, -1 out of memory, or an
 * etcd error (b->error and b->msg set). Without a client (env->etcd NULL: the unit tests of
 * parsing alone) there is nothing to read.
 */
static int listener_kept(const batch_env_t *env, const batch_t *b, size_t i)
{
  const char *addr = b->items[i].listener;
  for (size_t j = 0; j < i; j++)
    if (b->items[j].kind == ITEM_LISTENER && b->items[j].is_delete &&
        !strcmp(b->items[j].listener, addr))
      return 0;
  mcp_store_listener_settings_t s;
  mcp_store_listener_settings_init(&s);
  if (mcp_store_listener_get(env->store, addr, &s) != 0)
    return 0; /* not there (or unreadable: reading the routes is the safe side) */
  mcp_store_listener_settings_free(&s);
  return 1;
}

static int add_listener_routes(const batch_env_t *env, batch_t *b)
{
  if (!env->etcd)
    return 0;
  size_t n = b->nitems;
  for (size_t i = 0; i < n; i++) {
    const item_t *l = &b->items[i];
    if (l->kind != ITEM_LISTENER || l->is_delete || l->skip)
      continue;
    int later = 0;
    for (size_t j = i + 1; j < n && !later; j++) /* a later delete or good put reads instead */
      later = b->items[j].kind == ITEM_LISTENER && (b->items[j].is_delete || !b->items[j].skip) &&
              !strcmp(b->items[j].listener, l->listener);
    if (later || listener_kept(env, b, i))
      continue;
    char key[512], end[512], err[256];
    int klen = snprintf(key, sizeof(key), "%sroutes/%s/", env->prefix, l->listener);
    etcd_prefix_end(key, (size_t)klen, end);
    etcd_range_t r = {0};
    int rc = etcd_client_range(env->etcd, key, end, b->revision, 0, &r, err, sizeof(err));
    if (rc == ETCD_ECOMPACTED)
      rc = etcd_client_range(env->etcd, key, end, 0, 0, &r, err, sizeof(err));
    if (rc) {
      b->error = rc;
      snprintf(b->msg, sizeof(b->msg), "reading the routes of %s: %s", l->listener, err);
      return rc;
    }
    item_t *v = r.n_kvs ? realloc(b->items, (b->nitems + r.n_kvs) * sizeof(*v)) : b->items;
    if (!v) {
      etcd_range_release(&r);
      return -1;
    }
    b->items = v;
    for (size_t k = 0; k < r.n_kvs && !rc; k++)
      if ((rc = parse_kv(env, b, &r.kvs[k], 0, &b->items[b->nitems])) == 0)
        b->nitems++;
    etcd_range_release(&r);
    if (rc)
      return -1;
  }
  return 0;
}

static void item_release(item_t *it);

static int parse_events(const batch_env_t *env, batch_t *b)
{
  size_t n = 0;
  for (size_t k = 0; k < b->nupdates; k++)
    n += b->updates[k]->n_events;
  b->items = calloc(n ? n : 1, sizeof(*b->items));
  if (!b->items)
    return -1;
  for (size_t k = 0; k < b->nupdates; k++) {
    const etcd_watch_update_t *u = b->updates[k];
    b->revision = u->revision;
    for (size_t i = 0; i < u->n_events; i++) {
      if (parse_kv(env, b, &u->events[i].kv, u->events[i].is_delete, &b->items[b->nitems]) != 0)
        return -1;
      b->nitems++;
    }
  }
  int rc = add_listener_routes(env, b);
  if (rc > 0 || rc < -1) {
    /* etcd failed: the batch is parsed again from its updates when it is retried. */
    for (size_t i = 0; i < b->nitems; i++)
      item_release(&b->items[i]);
    free(b->items);
    b->items = NULL;
    b->nitems = 0;
    b->nskipped = 0;
    return 0;
  }
  return rc;
}

/* Appends a marker item (RESET_FIREWALL, DROP_OTHERS, RESET_ROUTES). */
static void add_marker(batch_t *b, item_kind_t kind, const char *listener)
{
  item_t *it = &b->items[b->nitems++];
  memset(it, 0, sizeof(*it));
  it->kind = kind;
  if (listener)
    memcpy(it->listener, listener, sizeof(it->listener));
}

/*
 * A full read becomes: the firewall reset and its rules, the other listeners dropped, the
 * listeners, an empty route table for each, then the routes. Etcd returns the keys sorted, which
 * puts each kind together, but the order is made here rather than relied on.
 */
static int parse_read(const batch_env_t *env, batch_t *b)
{
  etcd_range_t r = {0};
  char err[256];
  int rc = etcd_client_get_prefix(env->etcd, env->prefix, 0, &r, err, sizeof(err));
  if (rc) {
    b->error = rc;
    snprintf(b->msg, sizeof(b->msg), "reading %s: %s", env->prefix, err);
    return 0;
  }
  b->revision = r.revision;
  size_t n = r.n_kvs;
  b->nkeys = n;
  item_t *parsed = calloc(n ? n : 1, sizeof(*parsed));
  size_t nlisteners = 0;
  rc = parsed ? 0 : -1;
  for (size_t i = 0; !rc && i < n; i++) {
    rc = parse_kv(env, b, &r.kvs[i], 0, &parsed[i]);
    if (!rc && parsed[i].kind == ITEM_LISTENER && !parsed[i].skip)
      nlisteners++;
  }
  etcd_range_release(&r);
  if (!rc)
    b->items = calloc(n + nlisteners + 2, sizeof(*b->items));
  if (rc || !b->items) {
    for (size_t i = 0; parsed && i < n; i++)
      item_release(&parsed[i]);
    free(parsed);
    return -1;
  }
  /* Items move from parsed into b->items by value, each exactly once. */
  add_marker(b, ITEM_RESET_FIREWALL, NULL);
  for (size_t i = 0; i < n; i++)
    if (parsed[i].kind == ITEM_FIREWALL && !parsed[i].skip)
      b->items[b->nitems++] = parsed[i];
  add_marker(b, ITEM_DROP_OTHERS, NULL);
  for (size_t i = 0; i < n; i++)
    if (parsed[i].kind == ITEM_LISTENER && !parsed[i].skip)
      b->items[b->nitems++] = parsed[i];
  for (size_t i = 0; i < n; i++)
    if (parsed[i].kind == ITEM_LISTENER && !parsed[i].skip)
      add_marker(b, ITEM_RESET_ROUTES, parsed[i].listener);
  for (size_t i = 0; i < n; i++) {
    if (parsed[i].kind == ITEM_ROUTE && !parsed[i].skip)
      b->items[b->nitems++] = parsed[i];
    else if (parsed[i].skip)
      item_release(&parsed[i]);
  }
  free(parsed);
  return 0;
}

void batch_parse(const batch_env_t *env, batch_t *b)
{
  int rc = b->kind == BATCH_READ ? parse_read(env, b) : parse_events(env, b);
  if (rc && !b->error) {
    b->error = MCP_ENOMEM;
    snprintf(b->msg, sizeof(b->msg), "out of memory parsing %zu values", b->nitems);
  }
}

/* 1 when backend (text) is one of our own listen addresses. */
static int loops(const batch_t *b, const char *backend)
{
  mcp_backend_t parsed;
  return mcp_backend_parse(backend, &parsed) == 0 &&
         config_find_loop(&parsed, b->self, b->nself) >= 0;
}

/* Writes one item; 0, a status that skips the item (reported), or -1 for a database failure. */
static int write_item(const batch_env_t *env, batch_t *b, item_t *it)
{
  mcp_store_t *st = env->store;
  int rc = 0;
  switch (it->kind) {
  case ITEM_LISTENER:
    if (it->is_delete) {
      rc = mcp_store_listener_remove(st, it->listener);
      return rc == MCP_ENOENT ? 0 : rc;
    }
    if (it->settings->fallback[0] && loops(b, it->settings->fallback)) {
      skip_item(b, it, "its fallback is this proxy's own listener (a loop)");
      return 0;
    }
    {
      const char *from[CONFIG_PROXY_FROM_MAX];
      mcp_store_listener_settings_t ss;
      state_settings_to_store(it->settings, &ss, from);
      rc = mcp_store_listener_set_settings(st, it->listener, &ss);
      if (rc == MCP_ENOENT)
        rc = mcp_store_listener_add_settings(st, it->listener, &ss);
    }
    break;
  case ITEM_ROUTE:
    if (it->is_delete) {
      rc = mcp_store_route_remove(st, it->listener, it->name);
      return rc == MCP_ENOENT ? 0 : rc;
    }
    if (loops(b, it->backend)) {
      skip_item(b, it, "its backend is this proxy's own listener (a loop)");
      return 0;
    }
    rc = mcp_store_route_put_ex(st, it->listener, it->name, it->backend,
                                (mcp_send_proxy_t)it->send_proxy);
    if (rc == MCP_ENOENT) {
      skip_item(b, it, "no such listener");
      return 0;
    }
    break;
  case ITEM_FIREWALL:
    rc = it->is_delete ? mcp_store_firewall_remove(st, it->fw_type, it->name)
                       : mcp_store_firewall_add(st, it->fw_type, it->name);
    return rc == MCP_ENOENT || rc > 0 ? 0 : rc;
  default:
    return 0;
  }
  if (rc == MCP_EINVAL || rc == MCP_ERANGE || rc == MCP_EEXIST) {
    skip_item(b, it, mcp_store_errmsg(st));
    return 0;
  }
  return rc;
}

void batch_write(const batch_env_t *env, batch_t *b)
{
  mcp_store_t *st = env->store;
  int rc = mcp_store_begin(st);
  if (!rc && b->kind == BATCH_READ)
    rc = mcp_store_clear(st);
  for (size_t i = 0; !rc && i < b->nitems; i++)
    if (!b->items[i].skip)
      rc = write_item(env, b, &b->items[i]);
  if (!rc)
    rc = mcp_store_set_sync_revision(st, env->source, b->revision);
  if (!rc)
    rc = mcp_store_commit(st);
  else
    mcp_store_rollback(st);
  if (rc) {
    b->error = rc;
    snprintf(b->msg, sizeof(b->msg), "database: %s (%s)", mcp_strerror(rc), mcp_store_errmsg(st));
  }
}

void batch_free(batch_t *b)
{
  if (!b)
    return;
  for (size_t i = 0; i < b->nitems; i++)
    item_release(&b->items[i]);
  free(b->items);
  free(b->self);
  free(b->drop);
  for (size_t k = 0; k < b->nupdates; k++)
    etcd_watch_update_free(b->updates[k]);
  free(b->updates);
  if (b->fw)
    mcp_firewall_unref(b->fw);
  free(b->routes);
  free(b);
}
