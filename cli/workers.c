/* workers: extra data-plane loops on threads of their own. See workers.h. */
#include <sched.h> /* sched_getaffinity, CPU_COUNT (_GNU_SOURCE is set for the build) */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "reload.h"
#include "workers.h"

typedef enum msg_op_e {
  MSG_PUBLISH,
  MSG_ADD_LISTENER,
  MSG_REMOVE_LISTENER,
  MSG_STOP_ACCEPTING,
  MSG_CLOSE_CONNECTIONS,
  MSG_EXIT,
} msg_op_t;

/*
 * One publication, shared by every worker: its own references to the route table of each
 * address and to the firewall. The last worker to apply it hands it back to the main loop.
 */
typedef struct publish_s {
  atomic_int pending;
  atomic_int status;        /* the first error of a worker (MSG_ADD_LISTENER), else 0 */
  msg_op_t op;              /* MSG_PUBLISH, MSG_ADD_LISTENER or MSG_REMOVE_LISTENER */
  mcp_listener_t *main_l;   /* MSG_ADD_LISTENER: the main loop's listener to share with */
  size_t index;             /* MSG_ADD/REMOVE_LISTENER: its index in srv->listeners */
  mcp_listener_config_t lc; /* MSG_ADD_LISTENER: the config of the new listeners */
  mcp_routes_t **routes;    /* one per address, in srv->listeners order */
  int *proxy_on;            /* one per address: PROXY protocol in */
  mcp_firewall_t **trusted; /* one per address: its trusted peers (references) */
  size_t n;
  mcp_firewall_t *firewall;
  void (*done)(void *data, int status);
  void *data;
  struct msg_s *msgs; /* the messages that carried it, one per worker */
  struct publish_s *next;
} publish_t;

typedef struct msg_s {
  msg_op_t op;
  publish_t *pub;
  int owned; /* part of pub->msgs: freed with the publication, not on its own */
  struct msg_s *next;
} msg_t;

typedef struct worker_s {
  struct workers_s *all;
  int index;
  uv_thread_t thread;
  int started;
  uv_loop_t loop;
  uv_async_t async;
  uv_prepare_t log_flush;
  uv_mutex_t mu;
  msg_t *head, *tail; /* guarded by mu */
  mcp_listener_t **listeners;
  size_t nlisteners;
  mcp_listener_t **retired; /* removed at runtime, connections running on */
  size_t nretired;
  size_t freed, to_free;
} worker_t;

struct workers_s {
  state_t *srv;
  worker_t *w;
  int n;
  uv_async_t done_async; /* main loop: publications every worker has applied */
  uv_mutex_t mu;
  publish_t *done_head; /* guarded by mu */
};

/* ---- on a worker's thread ---- */

/* The last handles of a worker's loop; uv_run then returns and the thread ends. */
static void worker_close_handles(worker_t *w)
{
  uv_close((uv_handle_t *)&w->async, NULL);
  uv_close((uv_handle_t *)&w->log_flush, NULL);
}

static void on_worker_listener_freed(void *data)
{
  worker_t *w = data;
  if (++w->freed == w->to_free)
    worker_close_handles(w);
}

/* Frees the retired listeners whose address has no active connection left (on any loop). */
static void worker_free_retired(worker_t *w)
{
  size_t kept = 0;
  for (size_t i = 0; i < w->nretired; i++) {
    mcp_listener_stats_t st;
    mcp_listener_get_stats(w->retired[i], &st);
    if (st.active_connections == 0)
      mcp_listener_free(w->retired[i], NULL, NULL);
    else
      w->retired[kept++] = w->retired[i];
  }
  w->nretired = kept;
}

/* A listener added at runtime: this loop's own socket on the address, sharing its counters. */
static int worker_add_listener(worker_t *w, publish_t *pub)
{
  mcp_listener_t **v = realloc(w->listeners, (w->nlisteners + 1) * sizeof(*v));
  if (!v)
    return MCP_ENOMEM;
  w->listeners = v;
  mcp_listener_t *l;
  int rc = mcp_listener_new(&w->loop, &pub->lc, &l);
  if (rc)
    return rc;
  if (pub->index < pub->n) {
    mcp_listener_set_routes(l, pub->routes[pub->index]);
    rc = mcp_listener_set_proxy_protocol(l, pub->proxy_on[pub->index], pub->trusted[pub->index]);
  }
  if (!rc)
    rc = mcp_listener_set_firewall(l, pub->firewall);
  if (!rc)
    rc = mcp_listener_start(l);
  if (rc) {
    mcp_listener_free(l, NULL, NULL);
    return rc;
  }
  w->listeners[w->nlisteners++] = l;
  return 0;
}

/* A listener removed at runtime: stop accepting now, keep it until its connections end. */
static void worker_remove_listener(worker_t *w, size_t i)
{
  if (i >= w->nlisteners)
    return;
  mcp_listener_t *l = w->listeners[i];
  mcp_listener_stop(l);
  mcp_listener_t **v = realloc(w->retired, (w->nretired + 1) * sizeof(*v));
  if (v) {
    w->retired = v;
    w->retired[w->nretired++] = l;
  } else {
    mcp_listener_free(l, NULL, NULL);
  }
  memmove(&w->listeners[i], &w->listeners[i + 1], (w->nlisteners - i - 1) * sizeof(*v));
  w->nlisteners--;
}

static void worker_publish(worker_t *w, publish_t *pub)
{
  if (pub->op == MSG_ADD_LISTENER) {
    int rc = worker_add_listener(w, pub);
    int zero = 0;
    if (rc)
      atomic_compare_exchange_strong(&pub->status, &zero, rc);
  } else if (pub->op == MSG_REMOVE_LISTENER) {
    worker_remove_listener(w, pub->index);
  } else {
    for (size_t i = 0; i < w->nlisteners && i < pub->n; i++) {
      mcp_listener_set_routes(w->listeners[i], pub->routes[i]);
      mcp_listener_set_firewall(w->listeners[i], pub->firewall);
      mcp_listener_set_proxy_protocol(w->listeners[i], pub->proxy_on[i], pub->trusted[i]);
    }
  }
  worker_free_retired(w);
  if (atomic_fetch_sub(&pub->pending, 1) == 1) {
    struct workers_s *all = w->all;
    uv_mutex_lock(&all->mu);
    pub->next = all->done_head;
    all->done_head = pub;
    uv_mutex_unlock(&all->mu);
    uv_async_send(&all->done_async);
  }
}

static void on_worker_async(uv_async_t *h)
{
  worker_t *w = h->data;
  uv_mutex_lock(&w->mu);
  msg_t *m = w->head;
  w->head = w->tail = NULL;
  uv_mutex_unlock(&w->mu);

  while (m) {
    /* Read before acting: once a publication is handed back, the main loop frees its messages. */
    msg_t *next = m->next;
    int owned = m->owned;
    switch (m->op) {
    case MSG_PUBLISH:
    case MSG_ADD_LISTENER:
    case MSG_REMOVE_LISTENER:
      worker_publish(w, m->pub);
      break;
    case MSG_STOP_ACCEPTING:
      for (size_t i = 0; i < w->nlisteners; i++)
        mcp_listener_stop(w->listeners[i]);
      break;
    case MSG_CLOSE_CONNECTIONS:
      for (size_t i = 0; i < w->nlisteners; i++)
        mcp_listener_close_connections(w->listeners[i]);
      break;
    case MSG_EXIT:
      w->to_free = w->nlisteners + w->nretired;
      if (w->to_free == 0)
        worker_close_handles(w);
      for (size_t i = 0; i < w->nlisteners; i++)
        mcp_listener_free(w->listeners[i], on_worker_listener_freed, w);
      for (size_t i = 0; i < w->nretired; i++)
        mcp_listener_free(w->retired[i], on_worker_listener_freed, w);
      break;
    }
    if (!owned)
      free(m);
    m = next;
  }
}

static void worker_main(void *arg)
{
  worker_t *w = arg;
  uv_run(&w->loop, UV_RUN_DEFAULT);
  log_flush();
}

/* ---- on the main loop ---- */

/* Queues m (allocated by the caller) for w and wakes w's loop. */
static void post_msg(worker_t *w, msg_t *m)
{
  uv_mutex_lock(&w->mu);
  if (w->tail)
    w->tail->next = m;
  else
    w->head = m;
  w->tail = m;
  uv_mutex_unlock(&w->mu);
  uv_async_send(&w->async);
}

static void post(worker_t *w, msg_op_t op)
{
  msg_t *m = calloc(1, sizeof(*m));
  if (!m) {
    log_error("worker %d: out of memory; message dropped", w->index);
    return;
  }
  m->op = op;
  post_msg(w, m);
}

static void publish_free(publish_t *pub)
{
  for (size_t i = 0; i < pub->n; i++) {
    mcp_routes_unref(pub->routes[i]);
    mcp_firewall_unref(pub->trusted[i]);
  }
  free(pub->routes);
  free(pub->proxy_on);
  free(pub->trusted);
  mcp_firewall_unref(pub->firewall);
  free(pub->msgs);
  free(pub);
}

static void on_published(uv_async_t *h)
{
  struct workers_s *all = h->data;
  uv_mutex_lock(&all->mu);
  publish_t *pub = all->done_head;
  all->done_head = NULL;
  uv_mutex_unlock(&all->mu);
  while (pub) {
    publish_t *next = pub->next;
    pub->done(pub->data, atomic_load(&pub->status));
    publish_free(pub);
    pub = next;
  }
}

static int worker_init(struct workers_s *all, worker_t *w, int index, char *err, size_t errlen)
{
  state_t *srv = all->srv;
  w->all = all;
  w->index = index;
  uv_loop_init(&w->loop);
  uv_mutex_init(&w->mu);
  uv_async_init(&w->loop, &w->async, on_worker_async);
  w->async.data = w;
  log_flush_each_iteration(&w->loop, &w->log_flush);
  w->listeners = calloc(srv->nlisteners ? srv->nlisteners : 1, sizeof(*w->listeners));
  if (!w->listeners) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < srv->nlisteners; i++) {
    mcp_listener_t *main_l = srv->listeners[i];
    mcp_listener_config_t lc = srv->listener_config;
    lc.addr = mcp_listener_addr(main_l);
    lc.reuseport = 1;
    lc.share_with = main_l;
    lc.fd = reload_take_fd(lc.addr); /* a sibling socket handed over by a reload, or 0 */
    int rc = mcp_listener_new(&w->loop, &lc, &w->listeners[i]);
    if (!rc) {
      w->nlisteners++;
      /* The loop does not run yet, so its listeners may be set up from here. */
      mcp_firewall_t *trusted;
      int on = mcp_listener_proxy_protocol(main_l, &trusted);
      mcp_listener_set_routes(w->listeners[i], mcp_listener_routes(main_l));
      rc = mcp_listener_set_firewall(w->listeners[i], srv->firewall);
      if (!rc)
        rc = mcp_listener_set_proxy_protocol(w->listeners[i], on, trusted);
    }
    if (!rc)
      rc = mcp_listener_start(w->listeners[i]);
    if (rc) {
      snprintf(err, errlen, "worker %d: listener %s: %s", index, lc.addr, mcp_strerror(rc));
      return -1;
    }
  }
  return 0;
}

int workers_start(state_t *srv, int n, char *err, size_t errlen)
{
  struct workers_s *all = calloc(1, sizeof(*all));
  if (!all) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  all->srv = srv;
  srv->workers = all;
  uv_mutex_init(&all->mu);
  uv_async_init(srv->loop, &all->done_async, on_published);
  all->done_async.data = all;
  if (n <= 1)
    return 0;

  all->w = calloc((size_t)n - 1, sizeof(*all->w));
  if (!all->w) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  for (int i = 0; i < n - 1; i++) {
    worker_t *w = &all->w[i];
    all->n++;
    if (worker_init(all, w, i + 1, err, errlen) != 0)
      return -1;
    if (uv_thread_create(&w->thread, worker_main, w) != 0) {
      snprintf(err, errlen, "worker %d: cannot start its thread", i + 1);
      return -1;
    }
    w->started = 1;
  }
  return 0;
}

/* Sends every worker one message of op carrying the main loop's current snapshots. */
static void send_all(state_t *srv, msg_op_t op, size_t index, void (*done)(void *data, int status),
                     void *data)
{
  struct workers_s *all = srv->workers;
  if (!all || all->n == 0) {
    done(data, 0);
    return;
  }
  /* Everything is allocated first: a publication some worker never receives would never end. */
  publish_t *pub = calloc(1, sizeof(*pub));
  size_t cap = srv->nlisteners ? srv->nlisteners : 1;
  mcp_routes_t **routes = calloc(cap, sizeof(*routes));
  int *proxy_on = calloc(cap, sizeof(*proxy_on));
  mcp_firewall_t **trusted = calloc(cap, sizeof(*trusted));
  msg_t *msgs = calloc((size_t)all->n, sizeof(*msgs));
  if (!pub || !routes || !proxy_on || !trusted || !msgs) {
    free(pub);
    free(routes);
    free(proxy_on);
    free(trusted);
    free(msgs);
    log_error("workers: out of memory; change not sent to the worker loops");
    done(data, MCP_ENOMEM);
    return;
  }
  for (size_t i = 0; i < srv->nlisteners; i++) {
    mcp_firewall_t *t;
    routes[i] = mcp_routes_ref(mcp_listener_routes(srv->listeners[i]));
    proxy_on[i] = mcp_listener_proxy_protocol(srv->listeners[i], &t);
    trusted[i] = t ? mcp_firewall_ref(t) : NULL;
  }
  pub->routes = routes;
  pub->proxy_on = proxy_on;
  pub->trusted = trusted;
  pub->n = srv->nlisteners;
  pub->firewall = mcp_firewall_ref(srv->firewall);
  pub->op = op;
  pub->index = index;
  if (op == MSG_ADD_LISTENER) {
    pub->main_l = srv->listeners[index];
    pub->lc = srv->listener_config;
    pub->lc.addr = mcp_listener_addr(pub->main_l); /* immutable for the listener's life */
    pub->lc.reuseport = 1;
    pub->lc.share_with = pub->main_l;
  }
  pub->done = done;
  pub->data = data;
  pub->msgs = msgs; /* one block for all workers' messages, freed with the publication */
  atomic_store(&pub->pending, all->n);
  for (int i = 0; i < all->n; i++) {
    msgs[i].op = op;
    msgs[i].pub = pub;
    msgs[i].owned = 1;
    post_msg(&all->w[i], &msgs[i]);
  }
}

void workers_publish(state_t *srv, void (*done)(void *data, int status), void *data)
{
  send_all(srv, MSG_PUBLISH, 0, done, data);
}

void workers_add_listener(state_t *srv, size_t index, void (*done)(void *data, int status),
                          void *data)
{
  send_all(srv, MSG_ADD_LISTENER, index, done, data);
}

void workers_remove_listener(state_t *srv, size_t index, void (*done)(void *data, int status),
                             void *data)
{
  send_all(srv, MSG_REMOVE_LISTENER, index, done, data);
}

static void broadcast(state_t *srv, msg_op_t op)
{
  struct workers_s *all = srv->workers;
  for (int i = 0; all && i < all->n; i++)
    post(&all->w[i], op);
}

void workers_stop_accepting(state_t *srv)
{
  broadcast(srv, MSG_STOP_ACCEPTING);
}

void workers_close_connections(state_t *srv)
{
  broadcast(srv, MSG_CLOSE_CONNECTIONS);
}

/* The last use of the block: libuv is done with done_async, which lives inside it. */
static void on_done_async_closed(uv_handle_t *h)
{
  free(h->data);
}

void workers_stop(state_t *srv)
{
  struct workers_s *all = srv->workers;
  if (!all)
    return;
  for (int i = 0; i < all->n; i++) {
    worker_t *w = &all->w[i];
    if (w->started) {
      post(w, MSG_EXIT);
      uv_thread_join(&w->thread);
    } else {
      /* Never started: its loop holds only what worker_init made. */
      for (size_t j = 0; j < w->nlisteners; j++)
        mcp_listener_free(w->listeners[j], NULL, NULL);
      for (size_t j = 0; j < w->nretired; j++)
        mcp_listener_free(w->retired[j], NULL, NULL);
      worker_close_handles(w);
      uv_run(&w->loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&w->loop);
    uv_mutex_destroy(&w->mu);
    free(w->listeners);
    free(w->retired);
    while (w->head) {
      msg_t *m = w->head;
      w->head = m->next;
      if (!m->owned)
        free(m);
    }
  }
  /* Publications still in flight were applied by threads that have now exited. */
  on_published(&all->done_async);
  /* The main loop owns done_async until its close callback: all is freed there, not here. */
  uv_close((uv_handle_t *)&all->done_async, on_done_async_closed);
  uv_mutex_destroy(&all->mu);
  free(all->w);
  all->w = NULL;
  srv->workers = NULL;
}

/* ---- how many loops by default ---- */

/* The CPUs one cgroup v2 cpu.max text allows: ceil(quota / period), or 0 for "max" or junk. */
static int cpu_max_limit(const char *text)
{
  char quota[32];
  unsigned long long q, period;
  if (sscanf(text, "%31s %llu", quota, &period) != 2 || period == 0 || !strcmp(quota, "max"))
    return 0;
  char *end;
  q = strtoull(quota, &end, 10);
  if (*end || q == 0)
    return 0;
  unsigned long long n = (q + period - 1) / period;
  return n > 1u << 20 ? 1 << 20 : (int)n;
}

int workers_cgroup_cpu_limit(const char *cgroup_root, const char *proc_cgroup)
{
  char line[4096], path[4096 + 64], text[128];
  FILE *f = fopen(proc_cgroup, "r");
  if (!f)
    return 0;
  char *rel = NULL;
  while (fgets(line, sizeof(line), f)) {
    if (!strncmp(line, "0::", 3)) { /* the cgroup v2 (unified) hierarchy */
      rel = line + 3;
      rel[strcspn(rel, "\n")] = '\0';
      break;
    }
  }
  fclose(f);
  if (!rel || rel[0] != '/')
    return 0;

  /* A quota anywhere above the process's group caps it too: the smallest one counts. */
  int limit = 0;
  for (;;) {
    snprintf(path, sizeof(path), "%s%s/cpu.max", cgroup_root, strcmp(rel, "/") ? rel : "");
    FILE *m = fopen(path, "r");
    if (m) {
      if (fgets(text, sizeof(text), m)) {
        int n = cpu_max_limit(text);
        if (n > 0 && (limit == 0 || n < limit))
          limit = n;
      }
      fclose(m);
    }
    char *slash = strrchr(rel, '/');
    if (!slash || !strcmp(rel, "/"))
      break;
    if (slash == rel)
      rel[1] = '\0';
    else
      *slash = '\0';
  }
  return limit;
}

int workers_default_count(void)
{
  int n = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    n = CPU_COUNT(&set);
  if (n <= 0)
    n = (int)sysconf(_SC_NPROCESSORS_ONLN);
  int quota = workers_cgroup_cpu_limit("/sys/fs/cgroup", "/proc/self/cgroup");
  if (quota > 0 && quota < n)
    n = quota;
  return n < 1 ? 1 : n;
}
