/*
 * cluster: cluster mode's sync — the watch, the queue of batches, the loop-thread steps of a
 * batch (binding listeners, applying in memory, publishing), the waiting admin changes, and
 * the status. See cluster.h; parsing and the database write are in cluster_batch.c.
 */
#include "cluster.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster_batch.h"
#include "etcd_client.h"
#include "log.h"
#include "metrics.h"
#include "workers.h"

/* The status's last_error until the first connection. */
#define NOT_YET "not connected yet"

/* At most this many watch updates go into one batch (one transaction, one publish). */
#define CLUSTER_BATCH_UPDATES_MAX 1024

/* A full read that failed is tried again after RETRY_MIN_MS, doubling up to RETRY_MAX_MS. */
#define RETRY_MIN_MS 500
#define RETRY_MAX_MS 5000

/* A route table being edited by the apply step, not yet given to its listener. */
struct pending_routes_s {
  mcp_listener_t *l;
  mcp_routes_t *rt;
};

/* An admin change waiting for its revision to be applied here. */
typedef struct waiter_s {
  int64_t revision;
  uint64_t deadline; /* uv_now */
  void (*done)(void *data, int status);
  void *data;
  char *msg;
  size_t msglen;
  struct waiter_s *next;
} waiter_t;

/* A watch update handed from the watch thread to the loop. */
typedef struct inbox_s {
  etcd_watch_update_t *u;
  struct inbox_s *next;
} inbox_t;

struct cluster_s {
  state_t *st;
  etcd_client_t *etcd;
  char prefix[256];
  char source[272]; /* the sync_state key */
  etcd_watch_t *watch;
  uv_async_t async;
  uv_timer_t retry;
  uv_timer_t wait_timer;
  int handles_open;
  uint64_t retry_ms;

  pthread_mutex_t mu; /* guards inbox; the watch thread appends */
  inbox_t *inbox, *inbox_tail;

  batch_t *head, *tail; /* waiting batches, in order */
  batch_t *current;     /* the batch going through its steps, or NULL */
  uv_work_t work;
  int stopping;
  int warned_empty; /* the empty-prefix refusal was logged */

  waiter_t *waiters;
  cluster_status_t status;
};

static void next_batch(cluster_t *c);
static void apply_continue(batch_t *b);

static batch_env_t env_of(cluster_t *c)
{
  return (batch_env_t){.etcd = c->etcd,
                       .prefix = c->prefix,
                       .source = c->source,
                       .store = c->st->store,
                       .has_geoip = c->st->geoip != NULL};
}

/* The metrics follow the status. */
static void export_status(const cluster_t *c)
{
  metrics_cluster(c->status.connected, c->status.since_unix, c->status.applied_revision,
                  c->status.skipped_total);
}

static void set_connected(cluster_t *c, int connected, const char *endpoint, const char *why)
{
  if (c->status.connected != connected)
    c->status.since_unix = (int64_t)time(NULL);
  if (connected && !c->status.connected)
    log_info("cluster: connected to etcd at %s", endpoint);
  else if (!connected && c->status.connected)
    log_warn("cluster: lost etcd (%s): serving the last applied state (revision %lld); admin "
             "changes are refused until it is back",
             why, (long long)c->status.applied_revision);
  c->status.connected = connected;
  if (connected && !strcmp(c->status.last_error, NOT_YET))
    c->status.last_error[0] = '\0';
  if (endpoint && endpoint[0])
    snprintf(c->status.endpoint, sizeof(c->status.endpoint), "%s", endpoint);
  if (why)
    snprintf(c->status.last_error, sizeof(c->status.last_error), "%s", why);
  export_status(c);
}

/* ---- waiting admin changes ---- */

static void answer_waiters(cluster_t *c, int all, const char *why)
{
  uint64_t now = uv_now(c->st->loop);
  waiter_t **pp = &c->waiters;
  while (*pp) {
    waiter_t *w = *pp;
    int applied = w->revision <= c->status.applied_revision;
    if (!applied && !all && now < w->deadline) {
      pp = &w->next;
      continue;
    }
    *pp = w->next;
    if (!applied)
      snprintf(w->msg, w->msglen,
               "committed to etcd at revision %lld but not applied here yet (%s); other "
               "instances follow it",
               (long long)w->revision, why ? why : "timed out");
    w->done(w->data, applied ? 0 : MCP_EBUSY);
    free(w);
  }
  if (!c->waiters)
    uv_timer_stop(&c->wait_timer);
}

static void on_wait_timer(uv_timer_t *t)
{
  answer_waiters(t->data, 0, NULL);
}

void cluster_wait(cluster_t *c, int64_t revision, void (*done)(void *data, int status), void *data,
                  char *msg, size_t msglen)
{
  if (revision <= c->status.applied_revision) {
    done(data, 0);
    return;
  }
  waiter_t *w = c->stopping ? NULL : calloc(1, sizeof(*w));
  if (!w) {
    snprintf(msg, msglen, "committed to etcd at revision %lld; %s", (long long)revision,
             c->stopping ? "mc-proxy is stopping syncing" : "out of memory waiting for it here");
    done(data, MCP_EBUSY);
    return;
  }
  *w = (waiter_t){revision,  uv_now(c->st->loop) + CLUSTER_WAIT_MS, done, data, msg, msglen,
                  c->waiters};
  c->waiters = w;
  if (!uv_is_active((uv_handle_t *)&c->wait_timer))
    uv_timer_start(&c->wait_timer, on_wait_timer, 250, 250);
}

/* ---- the watch ---- */

/* Watch thread: hand the update to the loop. */
static void on_watch(void *data, etcd_watch_update_t *u)
{
  cluster_t *c = data;
  inbox_t *n = malloc(sizeof(*n));
  if (!n) {
    etcd_watch_update_free(u);
    return; /* the stream's life check will notice the gap as a reconnect; see below */
  }
  n->u = u;
  n->next = NULL;
  pthread_mutex_lock(&c->mu);
  if (c->inbox_tail)
    c->inbox_tail->next = n;
  else
    c->inbox = n;
  c->inbox_tail = n;
  pthread_mutex_unlock(&c->mu);
  uv_async_send(&c->async);
}

static void start_watch(cluster_t *c, int64_t from)
{
  if (c->stopping || c->watch)
    return;
  int rc = etcd_watch_start(c->etcd, c->prefix, from, 0, on_watch, c, &c->watch);
  if (rc)
    log_error("cluster: cannot start the watch: %s", mcp_strerror(rc));
}

static void free_inbox(inbox_t *n)
{
  while (n) {
    inbox_t *next = n->next;
    etcd_watch_update_free(n->u);
    free(n);
    n = next;
  }
}

static void stop_watch(cluster_t *c)
{
  if (c->watch)
    etcd_watch_stop(c->watch); /* joins: no callback runs after this */
  c->watch = NULL;
  pthread_mutex_lock(&c->mu);
  inbox_t *n = c->inbox;
  c->inbox = c->inbox_tail = NULL;
  pthread_mutex_unlock(&c->mu);
  free_inbox(n);
}

static void push_batch(cluster_t *c, batch_t *b)
{
  b->owner = c;
  b->next = NULL;
  if (c->tail)
    c->tail->next = b;
  else
    c->head = b;
  c->tail = b;
}

static void queue_read(cluster_t *c)
{
  batch_t *b = calloc(1, sizeof(*b));
  if (!b) {
    log_error("cluster: out of memory queueing a full read");
    return;
  }
  b->kind = BATCH_READ;
  push_batch(c, b);
}

/*
 * Adds a watch update to the last waiting batch when that one collects events too (so that
 * under a stream of changes one transaction and one publish cover all that queued up meanwhile),
 * else to a new batch. Returns 0 or -1 when out of memory (u is then still the caller's).
 */
static int queue_events(cluster_t *c, etcd_watch_update_t *u)
{
  batch_t *b = c->tail;
  if (!b || b->kind != BATCH_EVENTS || b->parsed || b->nupdates >= CLUSTER_BATCH_UPDATES_MAX) {
    b = calloc(1, sizeof(*b));
    if (!b)
      return -1;
    b->kind = BATCH_EVENTS;
    push_batch(c, b);
  }
  if (b->nupdates == b->updates_cap) {
    size_t cap = b->updates_cap ? b->updates_cap * 2 : 4;
    etcd_watch_update_t **v = realloc(b->updates, cap * sizeof(*v));
    if (!v)
      return -1; /* an empty batch left in the queue is harmless: it applies nothing */
    b->updates = v;
    b->updates_cap = cap;
  }
  b->updates[b->nupdates++] = u;
  return 0;
}

static void on_async(uv_async_t *h)
{
  cluster_t *c = h->data;
  pthread_mutex_lock(&c->mu);
  inbox_t *n = c->inbox;
  c->inbox = c->inbox_tail = NULL;
  pthread_mutex_unlock(&c->mu);
  while (n) {
    inbox_t *next = n->next;
    etcd_watch_update_t *u = n->u;
    free(n);
    n = next;
    switch (u->kind) {
    case ETCD_WATCH_CONNECTED:
      set_connected(c, 1, u->endpoint, NULL);
      break;
    case ETCD_WATCH_DISCONNECTED:
      set_connected(c, 0, u->endpoint, u->message);
      break;
    case ETCD_WATCH_EVENTS:
      if (queue_events(c, u) != 0) {
        log_error("cluster: out of memory; re-reading the prefix");
        stop_watch(c);
        free_inbox(n); /* the rest of this round: the full read covers it */
        n = NULL;
        queue_read(c);
        break;
      }
      u = NULL;
      break;
    case ETCD_WATCH_PROGRESS:
      break;
    case ETCD_WATCH_COMPACTED:
      log_warn("cluster: the revision to resume from was compacted (now %lld); reading the whole "
               "prefix again",
               (long long)u->revision);
      etcd_watch_update_free(u);
      u = NULL;
      /* Nothing more comes after this; stopping the watch drops the rest of the inbox too. */
      stop_watch(c);
      free_inbox(n);
      n = NULL;
      queue_read(c);
      break;
    }
    if (u)
      etcd_watch_update_free(u);
  }
  next_batch(c);
}

/* ---- the loop-thread steps of a batch ---- */

/* 1 when addr is among the first n entries of set. */
static int in_set(char (*set)[CLUSTER_ADDR_MAX], size_t n, const char *addr)
{
  for (size_t i = 0; i < n; i++)
    if (!strcmp(set[i], addr))
      return 1;
  return 0;
}

/* Binds a listener for a put of a new address, as an admin AddListener would. */
static int bind_listener(cluster_t *c, item_t *it, char *err, size_t errlen)
{
  state_t *st = c->st;
  mcp_listener_config_t lc = st->listener_config;
  lc.addr = it->listener;
  lc.max_connections = it->settings->max_connections;
  mcp_listener_t *l = NULL;
  int rc = mcp_listener_new(st->loop, &lc, &l);
  if (!rc) {
    rc = mcp_listener_set_firewall(l, st->firewall);
    if (!rc)
      rc = mcp_listener_start(l);
    if (rc)
      mcp_listener_free(l, NULL, NULL);
  }
  if (rc) {
    snprintf(err, errlen, "cannot listen on %s: %s", it->listener,
             rc < -4000 ? mcp_strerror(rc) : uv_strerror(rc));
    return rc;
  }
  it->pending = l;
  return 0;
}

/*
 * Before the write: walks the batch with the set of listeners it would leave, binding each
 * new address (one that cannot be bound is skipped), then notes our own addresses for the loop
 * check and, for a full read, the listeners that go.
 */
static int prebind(cluster_t *c, batch_t *b)
{
  state_t *st = c->st;
  size_t cap = st->nlisteners + b->nitems + 1;
  char(*present)[CLUSTER_ADDR_MAX] = calloc(cap, sizeof(*present));
  b->self = calloc(cap, sizeof(*b->self));
  if (!present || !b->self) {
    free(present);
    return MCP_ENOMEM;
  }
  size_t npresent = 0;
  if (b->kind == BATCH_EVENTS)
    for (size_t i = 0; i < st->nlisteners; i++)
      snprintf(present[npresent++], CLUSTER_ADDR_MAX, "%s", mcp_listener_addr(st->listeners[i]));
  for (size_t i = 0; i < b->nitems; i++) {
    item_t *it = &b->items[i];
    if (it->kind != ITEM_LISTENER || it->skip || it->pending)
      continue;
    if (it->is_delete) {
      /* Deleted and put again within the batch (a watch resumed after a while, or a burst):
       * an update of the listener, whose socket stays. Closing it and binding a new one in
       * the same batch cannot work: the new bind finds the old socket still there. */
      int again = 0;
      for (size_t j = i + 1; j < b->nitems && !again; j++)
        again = b->items[j].kind == ITEM_LISTENER && !b->items[j].is_delete && !b->items[j].skip &&
                !strcmp(b->items[j].listener, it->listener);
      if (again) {
        it->skip = 1; /* superseded, not a bad value: not counted */
        continue;
      }
      for (size_t j = 0; j < npresent; j++)
        if (!strcmp(present[j], it->listener))
          present[j][0] = '\0';
      continue;
    }
    if (in_set(present, npresent, it->listener))
      continue;
    if (b->kind == BATCH_READ && state_find_listener(st, it->listener)) {
      snprintf(present[npresent++], CLUSTER_ADDR_MAX, "%s", it->listener); /* kept */
      continue;
    }
    char err[256];
    const char *why = err;
    if (bind_listener(c, it, err, sizeof(err)) != 0) {
      it->skip = 1;
      b->nskipped++;
      snprintf(b->last_skip, sizeof(b->last_skip), "listener %s: %s", it->listener, why);
      log_warn("cluster: skipped listener %s: %s", it->listener, why);
      continue;
    }
    snprintf(present[npresent++], CLUSTER_ADDR_MAX, "%s", it->listener);
  }
  /* Our own addresses: what is bound now and what this batch binds. */
  for (size_t i = 0; i < st->nlisteners; i++)
    if (mcp_listener_sockname(st->listeners[i], &b->self[b->nself]) == 0)
      b->nself++;
  for (size_t i = 0; i < b->nitems; i++)
    if (b->items[i].pending && mcp_listener_sockname(b->items[i].pending, &b->self[b->nself]) == 0)
      b->nself++;
  int rc = 0;
  if (b->kind == BATCH_READ) {
    b->drop = calloc(st->nlisteners + 1, sizeof(*b->drop));
    if (!b->drop)
      rc = MCP_ENOMEM;
    for (size_t i = 0; !rc && i < st->nlisteners; i++) {
      const char *addr = mcp_listener_addr(st->listeners[i]);
      if (!in_set(present, npresent, addr))
        snprintf(b->drop[b->ndrop++], CLUSTER_ADDR_MAX, "%s", addr);
    }
  }
  free(present);
  return rc;
}

/* The route table the apply step edits for l: a copy of its current one, or an empty one. */
static mcp_routes_t *routes_for(batch_t *b, mcp_listener_t *l, int fresh)
{
  for (size_t i = 0; i < b->nroutes; i++) {
    if (b->routes[i].l != l)
      continue;
    if (fresh) {
      mcp_routes_t *rt;
      if (mcp_routes_new(&rt) != 0)
        return NULL;
      mcp_routes_unref(b->routes[i].rt);
      b->routes[i].rt = rt;
    }
    return b->routes[i].rt;
  }
  if (b->nroutes == b->routes_cap) {
    size_t cap = b->routes_cap ? b->routes_cap * 2 : 8;
    struct pending_routes_s *v = realloc(b->routes, cap * sizeof(*v));
    if (!v)
      return NULL;
    b->routes = v;
    b->routes_cap = cap;
  }
  mcp_routes_t *rt;
  if ((fresh ? mcp_routes_new(&rt) : mcp_routes_clone(mcp_listener_routes(l), &rt)) != 0)
    return NULL;
  b->routes[b->nroutes++] = (struct pending_routes_s){l, rt};
  return rt;
}

/* Gives the listeners their edited tables (with their fallback) and publishes the firewall. */
static int flush(cluster_t *c, batch_t *b)
{
  state_t *st = c->st;
  int rc = 0;
  for (size_t i = 0; i < b->nroutes; i++) {
    int idx = state_listener_index(st, mcp_listener_addr(b->routes[i].l));
    if (idx >= 0 && !rc) {
      const char *fb = st->settings[idx].fallback;
      rc = mcp_routes_set_fallback(b->routes[i].rt, fb[0] ? fb : NULL);
      if (!rc)
        mcp_listener_set_routes(b->routes[i].l, b->routes[i].rt);
    }
    mcp_routes_unref(b->routes[i].rt);
  }
  b->nroutes = 0;
  if (b->fw) {
    int frc = mcp_firewall_seal(b->fw);
    if (!frc)
      state_set_firewall(st, b->fw);
    else
      mcp_firewall_unref(b->fw);
    b->fw = NULL;
    rc = rc ? rc : frc;
  }
  return rc;
}

static void on_published(void *data, int status);

/* A worker loop finished adding or removing a listener: go on with the next item. */
static void on_listener_step(void *data, int status)
{
  if (status)
    log_error("cluster: a worker loop could not follow a listener change: %s (restart to resync)",
              mcp_strerror(status));
  apply_continue(data);
}

static int apply_firewall(cluster_t *c, batch_t *b, const item_t *it)
{
  if (!b->fw) {
    int rc = it->kind == ITEM_RESET_FIREWALL ? mcp_firewall_new(&b->fw)
                                             : mcp_firewall_clone(c->st->firewall, &b->fw);
    if (rc)
      return rc;
    mcp_firewall_set_geoip(b->fw, c->st->geoip);
  } else if (it->kind == ITEM_RESET_FIREWALL) {
    mcp_firewall_unref(b->fw);
    b->fw = NULL;
    return apply_firewall(c, b, it);
  }
  if (it->kind == ITEM_RESET_FIREWALL)
    return 0;
  int rc = it->is_delete ? mcp_firewall_remove(b->fw, it->fw_type, it->name)
                         : mcp_firewall_add(b->fw, it->fw_type, it->name);
  return rc == MCP_ENOENT || rc > 0 ? 0 : rc;
}

static int apply_routes(cluster_t *c, batch_t *b, const item_t *it)
{
  mcp_listener_t *l = state_find_listener(c->st, it->listener);
  if (!l)
    return 0; /* skipped when written; nothing to do */
  mcp_routes_t *rt = routes_for(b, l, it->kind == ITEM_RESET_ROUTES);
  if (!rt)
    return MCP_ENOMEM;
  if (it->kind == ITEM_RESET_ROUTES)
    return 0;
  int rc = it->is_delete
               ? mcp_routes_remove(rt, it->name)
               : mcp_routes_put_ex(rt, it->name, it->backend, (mcp_send_proxy_t)it->send_proxy);
  return rc == MCP_ENOENT ? 0 : rc;
}

/*
 * A listener item. Returns 1 when it started a step on the worker loops (apply_continue runs
 * again from its callback), 0 when done here, or an error.
 */
static int apply_listener(cluster_t *c, batch_t *b, item_t *it)
{
  state_t *st = c->st;
  int rc = flush(c, b);
  if (rc)
    return rc;
  int i = state_listener_index(st, it->listener);
  if (it->is_delete) {
    if (i < 0)
      return 0;
    /* The main loop's table first, as control.c does: the workers are told by index. */
    state_remove_listener(st, (size_t)i);
    workers_remove_listener(st, (size_t)i, on_listener_step, b);
    return 1;
  }
  if (it->pending) {
    rc = state_add_listener(st, it->pending, it->settings);
    if (rc)
      return rc;
    it->pending = NULL;
    rc = state_apply_settings(st, st->nlisteners - 1);
    if (rc)
      return rc;
    workers_add_listener(st, st->nlisteners - 1, on_listener_step, b);
    return 1;
  }
  if (i < 0)
    return 0;
  st->settings[i] = *it->settings;
  return state_apply_settings(st, (size_t)i);
}

/* Applies items from b->cursor on, pausing while the worker loops follow a listener change. */
static void apply_continue(batch_t *b)
{
  cluster_t *c = b->owner;
  state_t *st = c->st;
  while (b->cursor < b->nitems) {
    item_t *it = &b->items[b->cursor];
    int rc = 0;
    if (it->kind == ITEM_DROP_OTHERS && b->drop_done < b->ndrop) {
      /* Stays on this item until every listener the full read does not name is gone. */
      int i = state_listener_index(st, b->drop[b->drop_done++]);
      if (i < 0 || (rc = flush(c, b)) != 0)
        goto next_or_fail;
      state_remove_listener(st, (size_t)i);
      workers_remove_listener(st, (size_t)i, on_listener_step, b);
      return;
    }
    b->cursor++;
    if (it->skip)
      continue;
    switch (it->kind) {
    case ITEM_FIREWALL:
    case ITEM_RESET_FIREWALL:
      rc = apply_firewall(c, b, it);
      break;
    case ITEM_ROUTE:
    case ITEM_RESET_ROUTES:
      rc = apply_routes(c, b, it);
      break;
    case ITEM_LISTENER:
      rc = apply_listener(c, b, it);
      if (rc == 1)
        return;
      break;
    case ITEM_DROP_OTHERS:
      break;
    }
  next_or_fail:
    if (rc) {
      /* Saved but not all in memory: the database is right, memory catches up on a restart. */
      log_error("cluster: revision %lld saved but not applied in memory: %s (restart to resync)",
                (long long)b->revision, mcp_strerror(rc));
    }
  }
  int rc = flush(c, b);
  if (rc)
    log_error("cluster: revision %lld saved but not applied in memory: %s (restart to resync)",
              (long long)b->revision, mcp_strerror(rc));
  workers_publish(st, on_published, b);
}

/* ---- the pipeline ---- */

static void finish_batch(cluster_t *c, batch_t *b)
{
  c->current = NULL;
  batch_free(b);
  next_batch(c);
}

static void on_published(void *data, int status)
{
  batch_t *b = data;
  cluster_t *c = b->owner;
  if (status)
    log_error("cluster: revision %lld not applied on every worker loop: %s (restart to resync)",
              (long long)b->revision, mcp_strerror(status));
  int was_read = b->kind == BATCH_READ;
  c->status.applied_revision = b->revision;
  c->status.skipped_total += b->nskipped;
  if (b->nskipped) {
    snprintf(c->status.last_error, sizeof(c->status.last_error), "%s", b->last_skip);
    if (b->nskipped > 20)
      log_warn("cluster: revision %lld: %llu values skipped in all", (long long)b->revision,
               (unsigned long long)b->nskipped);
  }
  if (was_read) {
    log_info("cluster: applied %s at revision %lld (%zu listeners, %zu firewall rules)", c->prefix,
             (long long)b->revision, c->st->nlisteners, mcp_firewall_count(c->st->firewall));
    c->retry_ms = 0;
  }
  export_status(c);
  answer_waiters(c, 0, NULL);
  int64_t rev = b->revision;
  finish_batch(c, b);
  if (was_read)
    start_watch(c, rev + 1);
}

/* Queues b again for a retry after a backoff (a full read: a fresh one). */
static void on_retry(uv_timer_t *t)
{
  next_batch(t->data);
}

static void retry_later(cluster_t *c, batch_t *b)
{
  c->current = NULL;
  if (b->kind == BATCH_READ) {
    batch_free(b);
    b = calloc(1, sizeof(*b));
    if (!b)
      return;
    b->kind = BATCH_READ;
    b->owner = c;
  } else {
    b->error = 0;
  }
  b->next = c->head; /* first again: order must hold */
  c->head = b;
  if (!c->tail)
    c->tail = b;
  c->retry_ms = c->retry_ms ? c->retry_ms * 2 : RETRY_MIN_MS;
  if (c->retry_ms > RETRY_MAX_MS)
    c->retry_ms = RETRY_MAX_MS;
  uv_timer_start(&c->retry, on_retry, c->retry_ms, 0);
}

static void write_cb(uv_work_t *w)
{
  cluster_t *c = w->data;
  batch_env_t env = env_of(c);
  batch_write(&env, c->current);
}

static void after_write(uv_work_t *w, int status)
{
  cluster_t *c = w->data;
  batch_t *b = c->current;
  (void)status;
  if (b->error) {
    log_error("cluster: revision %lld not applied: %s; trying again", (long long)b->revision,
              b->msg);
    if (c->stopping)
      finish_batch(c, b);
    else
      retry_later(c, b);
    return;
  }
  apply_continue(b);
}

static void parse_cb(uv_work_t *w)
{
  cluster_t *c = w->data;
  batch_env_t env = env_of(c);
  batch_parse(&env, c->current);
}

static void after_parse(uv_work_t *w, int status)
{
  cluster_t *c = w->data;
  batch_t *b = c->current;
  (void)status;
  if (b->kind == BATCH_READ && b->error != ETCD_EINVAL)
    set_connected(c, b->error == 0, etcd_client_endpoint(c->etcd), b->error ? b->msg : NULL);
  if (b->error) {
    if (b->kind == BATCH_READ && b->error == ETCD_ECOMPACTED)
      c->retry_ms = 0;
    if (c->stopping)
      finish_batch(c, b);
    else
      retry_later(c, b);
    return;
  }
  if (c->stopping) {
    finish_batch(c, b);
    return;
  }
  if (b->kind == BATCH_READ && b->nkeys == 0 && c->status.applied_revision == 0 &&
      c->st->nlisteners > 0) {
    /* Never synced, an empty prefix, and a database that serves: an operator who added
     * [cluster] before importing would otherwise lose every listener. Wait for the import. */
    if (!c->warned_empty)
      log_error("cluster: %s is empty in etcd but this database serves %zu listeners; not "
                "replacing them with nothing. Run `mc-proxy cluster import` (docs/SCALING.md); "
                "until then this instance keeps its state and checks again",
                c->prefix, c->st->nlisteners);
    c->warned_empty = 1;
    retry_later(c, b);
    return;
  }
  int rc = prebind(c, b);
  if (!rc) {
    b->parsed = 1;
    rc = uv_queue_work(c->st->loop, &c->work, write_cb, after_write);
  }
  if (rc) {
    log_error("cluster: revision %lld: %s; trying again", (long long)b->revision,
              rc < -4000 || rc == MCP_ENOMEM ? mcp_strerror(rc) : uv_strerror(rc));
    retry_later(c, b);
  }
}

static void next_batch(cluster_t *c)
{
  if (c->current || !c->head || c->stopping || uv_is_active((uv_handle_t *)&c->retry))
    return;
  batch_t *b = c->head;
  c->head = b->next;
  if (!c->head)
    c->tail = NULL;
  c->current = b;
  c->work.data = c;
  int rc = b->parsed ? uv_queue_work(c->st->loop, &c->work, write_cb, after_write)
                     : uv_queue_work(c->st->loop, &c->work, parse_cb, after_parse);
  if (rc) {
    log_error("cluster: cannot queue work: %s; trying again", uv_strerror(rc));
    retry_later(c, b);
  }
}

/* ---- life ---- */

/* Where syncing starts: after the stored revision, or with a full read. */
static void begin(cluster_t *c)
{
  int64_t rev = 0;
  int rc = mcp_store_sync_revision(c->st->store, c->source, &rev);
  if (rc)
    log_error("cluster: reading the applied revision: %s (%s); reading the whole prefix",
              mcp_strerror(rc), mcp_store_errmsg(c->st->store));
  c->status.applied_revision = rev;
  export_status(c);
  if (rev > 0) {
    log_info("cluster: resuming %s after revision %lld", c->prefix, (long long)rev);
    start_watch(c, rev + 1);
  } else {
    log_info("cluster: reading %s from etcd", c->prefix);
    queue_read(c);
    next_batch(c);
  }
}

int cluster_etcd_open(const config_t *cfg, struct etcd_client_s **out, char *err, size_t errlen)
{
  const char *eps[CONFIG_ETCD_MAX_ENDPOINTS];
  for (int i = 0; i < cfg->netcd; i++)
    eps[i] = cfg->etcd_endpoints[i];
  etcd_client_opts_t opts = {
      .endpoints = eps,
      .n_endpoints = (size_t)cfg->netcd,
      .ca_path = cfg->etcd_ca[0] ? cfg->etcd_ca : NULL,
      .cert_path = cfg->etcd_cert[0] ? cfg->etcd_cert : NULL,
      .key_path = cfg->etcd_key[0] ? cfg->etcd_key : NULL,
  };
  return etcd_client_open(&opts, out, err, errlen) == 0 ? 0 : -1;
}

int cluster_start(state_t *st, cluster_t **out, char *err, size_t errlen)
{
  const config_t *cfg = st->cfg;
  cluster_t *c = calloc(1, sizeof(*c));
  if (!c) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  c->st = st;
  snprintf(c->prefix, sizeof(c->prefix), "%s", cfg->cluster_prefix);
  snprintf(c->source, sizeof(c->source), "etcd:%s", cfg->cluster_prefix);
  char why[256];
  if (cluster_etcd_open(cfg, &c->etcd, why, sizeof(why)) != 0) {
    snprintf(err, errlen, "[cluster] etcd: %s", why);
    free(c);
    return -1;
  }
  pthread_mutex_init(&c->mu, NULL);
  uv_async_init(st->loop, &c->async, on_async);
  uv_timer_init(st->loop, &c->retry);
  uv_timer_init(st->loop, &c->wait_timer);
  c->async.data = c->retry.data = c->wait_timer.data = c;
  c->handles_open = 3;
  c->status.since_unix = (int64_t)time(NULL);
  snprintf(c->status.endpoint, sizeof(c->status.endpoint), "%s", etcd_client_endpoint(c->etcd));
  snprintf(c->status.last_error, sizeof(c->status.last_error), NOT_YET);
  *out = c;
  begin(c);
  return 0;
}

void cluster_stop(cluster_t *c)
{
  if (!c || c->stopping)
    return;
  c->stopping = 1;
  stop_watch(c);
  uv_timer_stop(&c->retry);
  while (c->head) {
    batch_t *b = c->head;
    c->head = b->next;
    batch_free(b);
  }
  c->tail = NULL;
  answer_waiters(c, 1, "mc-proxy is stopping syncing");
}

void cluster_resume(cluster_t *c)
{
  if (!c || !c->stopping)
    return;
  c->stopping = 0;
  int64_t rev = c->status.applied_revision;
  if (rev > 0) {
    start_watch(c, rev + 1);
  } else {
    queue_read(c);
    next_batch(c);
  }
}

int cluster_busy(const cluster_t *c)
{
  return c && c->current != NULL;
}

static void on_handle_closed(uv_handle_t *h)
{
  cluster_t *c = h->data;
  if (--c->handles_open > 0)
    return;
  etcd_client_close(c->etcd);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

void cluster_free(cluster_t *c)
{
  if (!c)
    return;
  cluster_stop(c);
  uv_close((uv_handle_t *)&c->async, on_handle_closed);
  uv_close((uv_handle_t *)&c->retry, on_handle_closed);
  uv_close((uv_handle_t *)&c->wait_timer, on_handle_closed);
}

void cluster_get_status(const cluster_t *c, cluster_status_t *out)
{
  *out = c->status;
}

struct etcd_client_s *cluster_etcd(cluster_t *c)
{
  return c->etcd;
}

const char *cluster_prefix(const cluster_t *c)
{
  return c->prefix;
}
