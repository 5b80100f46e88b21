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
  mcp_routes_t **routes; /* one per address, in srv->listeners order */
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
  size_t freed;
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
  if (++w->freed == w->nlisteners)
    worker_close_handles(w);
}

static void worker_publish(worker_t *w, publish_t *pub)
{
  for (size_t i = 0; i < w->nlisteners && i < pub->n; i++) {
    mcp_listener_set_routes(w->listeners[i], pub->routes[i]);
    mcp_listener_set_firewall(w->listeners[i], pub->firewall);
  }
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
      if (w->nlisteners == 0)
        worker_close_handles(w);
      for (size_t i = 0; i < w->nlisteners; i++)
        mcp_listener_free(w->listeners[i], on_worker_listener_freed, w);
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
  for (size_t i = 0; i < pub->n; i++)
    mcp_routes_unref(pub->routes[i]);
  free(pub->routes);
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
    pub->done(pub->data, 0);
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
      mcp_listener_set_routes(w->listeners[i], mcp_listener_routes(main_l));
      rc = mcp_listener_set_firewall(w->listeners[i], srv->firewall);
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

void workers_publish(state_t *srv, void (*done)(void *data, int status), void *data)
{
  struct workers_s *all = srv->workers;
  if (!all || all->n == 0) {
    done(data, 0);
    return;
  }
  /* Everything is allocated first: a publication some worker never receives would never end. */
  publish_t *pub = calloc(1, sizeof(*pub));
  mcp_routes_t **routes = calloc(srv->nlisteners ? srv->nlisteners : 1, sizeof(*routes));
  msg_t *msgs = calloc((size_t)all->n, sizeof(*msgs));
  if (!pub || !routes || !msgs) {
    free(pub);
    free(routes);
    free(msgs);
    log_error("workers: out of memory; change not sent to the worker loops");
    done(data, MCP_ENOMEM);
    return;
  }
  for (size_t i = 0; i < srv->nlisteners; i++)
    routes[i] = mcp_routes_ref(mcp_listener_routes(srv->listeners[i]));
  pub->routes = routes;
  pub->n = srv->nlisteners;
  pub->firewall = mcp_firewall_ref(srv->firewall);
  pub->done = done;
  pub->data = data;
  pub->msgs = msgs; /* one block for all workers' messages, freed with the publication */
  atomic_store(&pub->pending, all->n);
  for (int i = 0; i < all->n; i++) {
    msgs[i].op = MSG_PUBLISH;
    msgs[i].pub = pub;
    msgs[i].owned = 1;
    post_msg(&all->w[i], &msgs[i]);
  }
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
      worker_close_handles(w);
      uv_run(&w->loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&w->loop);
    uv_mutex_destroy(&w->mu);
    free(w->listeners);
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
