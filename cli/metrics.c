/*
 * metrics: per-loop connection counters, the listener snapshot and the /metrics render. See
 * metrics.h; the metric names are those of docs/METRICS.md and docs/RUNBOOK.md.
 */
#include "metrics.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "log.h"
#include "metrics_http.h"
#include "prom.h"

/* How often the main loop copies listener gauges for the HTTP thread. */
#define METRICS_REFRESH_MS 500
/* Admin change counters: distinct method names and gRPC codes (0..16). */
#define METRICS_MAX_METHODS 32
#define METRICS_CODES 17

/* One listener's counters on one loop. Written by that loop's thread only. */
typedef struct mline_s {
  struct mline_s *next; /* immutable once published */
  char name[CONFIG_ADDR_MAX];
  prom_counter_t outcome[METRICS_MAX_OUTCOMES];
  prom_counter_t bytes_in, bytes_out;
  prom_hist_t handshake, connect, duration;
} mline_t;

/* One loop thread's counters: a list its thread prepends to, readers walk. */
typedef struct mloop_s {
  struct mloop_s *next; /* immutable once published */
  _Atomic(mline_t *) lines;
  mline_t *last; /* owner only: the block used last */
} mloop_t;

/* What the HTTP thread may read of the main loop's state: a copy made by the main loop. */
typedef struct snap_listener_s {
  char name[CONFIG_ADDR_MAX];
  int64_t active, routes;
} snap_listener_t;

static _Thread_local mloop_t *tl_loop;
static _Atomic(mloop_t *) g_loops; /* every loop's block; never freed while the process runs */
static atomic_bool g_serving;

/* Admin changes: main loop writes, HTTP thread reads. Names are static strings. */
static const char *_Atomic g_methods[METRICS_MAX_METHODS];
static prom_counter_t g_changes[METRICS_MAX_METHODS][METRICS_CODES];

static struct {
  state_t *srv;
  metrics_http_t *http;
  uv_timer_t timer;
  int timer_inited; /* g.timer initialised (once; closed by the server's teardown) */
  uv_mutex_t mu; /* guards snap, nsnap, firewall_rules */
  snap_listener_t *snap;
  size_t nsnap;
  int64_t firewall_rules;
} g;

/* Cluster mode (metrics_cluster): relaxed atomics, written by the main loop, read by scrapes. */
static atomic_int g_cluster_on;
static atomic_int g_cluster_connected;
static _Atomic int64_t g_cluster_revision;
static _Atomic int64_t g_cluster_since;
static _Atomic uint64_t g_cluster_skipped;

void metrics_cluster(bool connected, int64_t since_unix, int64_t applied_revision,
                     uint64_t skipped_total)
{
  atomic_store_explicit(&g_cluster_connected, connected, memory_order_relaxed);
  atomic_store_explicit(&g_cluster_since, since_unix, memory_order_relaxed);
  atomic_store_explicit(&g_cluster_revision, applied_revision, memory_order_relaxed);
  atomic_store_explicit(&g_cluster_skipped, skipped_total, memory_order_relaxed);
  atomic_store_explicit(&g_cluster_on, 1, memory_order_release);
}

static void render_cluster(prom_buf_t *b)
{
  if (!atomic_load_explicit(&g_cluster_on, memory_order_acquire))
    return;
  prom_family(b, "mcproxy_cluster_connected", PROM_GAUGE,
              "1 while the watch on etcd is up, 0 while this instance serves its last state.");
  prom_sample(b, "mcproxy_cluster_connected", NULL, 0,
              atomic_load_explicit(&g_cluster_connected, memory_order_relaxed));
  prom_family(b, "mcproxy_cluster_connected_since_seconds", PROM_GAUGE,
              "When mcproxy_cluster_connected last changed (unix time): connected or "
              "disconnected since then.");
  prom_sample(b, "mcproxy_cluster_connected_since_seconds", NULL, 0,
              (double)atomic_load_explicit(&g_cluster_since, memory_order_relaxed));
  prom_family(b, "mcproxy_cluster_applied_revision", PROM_GAUGE,
              "The etcd revision the database and memory reflect.");
  prom_sample(b, "mcproxy_cluster_applied_revision", NULL, 0,
              (double)atomic_load_explicit(&g_cluster_revision, memory_order_relaxed));
  prom_family(b, "mcproxy_cluster_skipped_values_total", PROM_COUNTER,
              "Values under the prefix that were reported and skipped (bad JSON, unknown key, "
              "no such listener).");
  prom_sample_u64(b, "mcproxy_cluster_skipped_values_total", NULL, 0,
                  atomic_load_explicit(&g_cluster_skipped, memory_order_relaxed));
}

/* ---- counting (loop threads) ---- */

static mline_t *mline_new(mloop_t *lp, const char *name)
{
  mline_t *m = calloc(1, sizeof(*m));
  if (!m)
    return NULL;
  snprintf(m->name, sizeof(m->name), "%s", name);
  prom_hist_init(&m->handshake, &prom_buckets_latency);
  prom_hist_init(&m->connect, &prom_buckets_latency);
  prom_hist_init(&m->duration, &prom_buckets_duration);
  m->next = atomic_load_explicit(&lp->lines, memory_order_relaxed);
  atomic_store_explicit(&lp->lines, m, memory_order_release);
  return m;
}

static mloop_t *this_loop(void)
{
  if (tl_loop)
    return tl_loop;
  mloop_t *lp = calloc(1, sizeof(*lp));
  if (!lp)
    return NULL;
  lp->next = atomic_load_explicit(&g_loops, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(&g_loops, &lp->next, lp, memory_order_release,
                                                memory_order_relaxed))
    ;
  tl_loop = lp;
  return lp;
}

void metrics_conn_end(const mcp_conn_record_t *rec)
{
  mloop_t *lp = this_loop();
  if (!lp)
    return;
  mline_t *m = lp->last;
  if (!m || strcmp(m->name, rec->listener) != 0) {
    m = atomic_load_explicit(&lp->lines, memory_order_relaxed);
    while (m && strcmp(m->name, rec->listener) != 0)
      m = m->next;
    if (!m && !(m = mline_new(lp, rec->listener)))
      return;
    lp->last = m;
  }
  if ((unsigned)rec->outcome < METRICS_MAX_OUTCOMES)
    prom_counter_add(&m->outcome[rec->outcome], 1);
  prom_counter_add(&m->bytes_in, rec->bytes_in);
  prom_counter_add(&m->bytes_out, rec->bytes_out);
  if (rec->handshake_us)
    prom_hist_observe(&m->handshake, rec->handshake_us * 1000);
  if (rec->backend_connect_us)
    prom_hist_observe(&m->connect, rec->backend_connect_us * 1000);
  prom_hist_observe(&m->duration, rec->duration_ms * 1000000);
}

size_t metrics_outcome_count(void)
{
  size_t n = 0;
  while (n < METRICS_MAX_OUTCOMES && strcmp(mcp_conn_outcome_name((mcp_conn_outcome_t)n), "-"))
    n++;
  return n;
}

void metrics_listener_totals(const char *addr, metrics_totals_t *out)
{
  memset(out, 0, sizeof(*out));
  for (mloop_t *lp = atomic_load_explicit(&g_loops, memory_order_acquire); lp; lp = lp->next)
    for (mline_t *m = atomic_load_explicit(&lp->lines, memory_order_acquire); m; m = m->next) {
      if (strcmp(m->name, addr) != 0)
        continue;
      for (size_t i = 0; i < METRICS_MAX_OUTCOMES; i++)
        out->outcome[i] += prom_counter_read(&m->outcome[i]);
      out->bytes_in += prom_counter_read(&m->bytes_in);
      out->bytes_out += prom_counter_read(&m->bytes_out);
    }
}

void metrics_admin_change(const char *method, int code)
{
  if (!method || code < 0 || code >= METRICS_CODES)
    return;
  for (size_t i = 0; i < METRICS_MAX_METHODS; i++) {
    const char *m = atomic_load_explicit(&g_methods[i], memory_order_acquire);
    if (!m)
      atomic_store_explicit(&g_methods[i], m = method, memory_order_release);
    if (m == method || !strcmp(m, method)) {
      prom_counter_add(&g_changes[i][code], 1);
      return;
    }
  }
}

/* ---- the snapshot (main loop writes, HTTP thread reads) ---- */

static void refresh(void)
{
  state_t *srv = g.srv;
  if (!srv)
    return;
  size_t n = srv->nlisteners;
  snap_listener_t *s = calloc(n ? n : 1, sizeof(*s));
  if (!s)
    return; /* the old snapshot stays */
  for (size_t i = 0; i < n; i++) {
    mcp_listener_stats_t st;
    mcp_listener_get_stats(srv->listeners[i], &st);
    snprintf(s[i].name, sizeof(s[i].name), "%s", mcp_listener_addr(srv->listeners[i]));
    s[i].active = st.active_connections;
    s[i].routes = st.route_count;
  }
  int64_t rules = srv->firewall ? (int64_t)mcp_firewall_count(srv->firewall) : 0;
  uv_mutex_lock(&g.mu);
  snap_listener_t *old = g.snap;
  g.snap = s;
  g.nsnap = n;
  g.firewall_rules = rules;
  uv_mutex_unlock(&g.mu);
  free(old);
}

static void on_refresh(uv_timer_t *t)
{
  (void)t;
  refresh();
}

/* ---- the render (HTTP thread) ---- */

typedef struct names_s {
  const char **v;
  size_t n, cap;
} names_t;

static int names_add(names_t *ns, const char *name)
{
  for (size_t i = 0; i < ns->n; i++)
    if (!strcmp(ns->v[i], name))
      return 0;
  if (ns->n == ns->cap) {
    size_t cap = ns->cap ? ns->cap * 2 : 16;
    const char **v = realloc(ns->v, cap * sizeof(*v));
    if (!v)
      return -1;
    ns->v = v;
    ns->cap = cap;
  }
  ns->v[ns->n++] = name;
  return 0;
}

typedef enum { H_HANDSHAKE, H_CONNECT, H_DURATION } hist_id_t;

static void hist_sum(const char *name, hist_id_t id, prom_hist_snapshot_t *s)
{
  prom_hist_snapshot_init(s, id == H_DURATION ? &prom_buckets_duration : &prom_buckets_latency);
  for (mloop_t *lp = atomic_load_explicit(&g_loops, memory_order_acquire); lp; lp = lp->next)
    for (mline_t *m = atomic_load_explicit(&lp->lines, memory_order_acquire); m; m = m->next)
      if (!strcmp(m->name, name))
        prom_hist_snapshot_add(s, id == H_HANDSHAKE ? &m->handshake
                                  : id == H_CONNECT ? &m->connect
                                                    : &m->duration);
}

static void render_hist(prom_buf_t *b, const names_t *ns, const char *name, hist_id_t id,
                        const char *help)
{
  prom_family(b, name, PROM_HISTOGRAM, help);
  for (size_t i = 0; i < ns->n; i++) {
    prom_hist_snapshot_t s;
    hist_sum(ns->v[i], id, &s);
    prom_label_t l = {"listener", ns->v[i]};
    prom_hist_render(b, name, &l, 1, &s);
  }
}

static void render_counters(prom_buf_t *b, const names_t *ns)
{
  size_t nout = metrics_outcome_count();
  prom_family(b, "mcproxy_connections_total", PROM_COUNTER,
              "Connections ended, by listener and outcome.");
  for (size_t i = 0; i < ns->n; i++) {
    metrics_totals_t t;
    metrics_listener_totals(ns->v[i], &t);
    for (size_t o = 0; o < nout; o++) {
      prom_label_t l[2] = {{"listener", ns->v[i]},
                           {"outcome", mcp_conn_outcome_name((mcp_conn_outcome_t)o)}};
      prom_sample_u64(b, "mcproxy_connections_total", l, 2, t.outcome[o]);
    }
  }
  prom_family(
      b, "mcproxy_bytes_total", PROM_COUNTER,
      "Bytes relayed by ended connections: in = client to backend, out = backend to client.");
  for (size_t i = 0; i < ns->n; i++) {
    metrics_totals_t t;
    metrics_listener_totals(ns->v[i], &t);
    prom_label_t in[2] = {{"listener", ns->v[i]}, {"direction", "in"}};
    prom_label_t out[2] = {{"listener", ns->v[i]}, {"direction", "out"}};
    prom_sample_u64(b, "mcproxy_bytes_total", in, 2, t.bytes_in);
    prom_sample_u64(b, "mcproxy_bytes_total", out, 2, t.bytes_out);
  }
}

static void render_admin(prom_buf_t *b)
{
  prom_family(b, "mcproxy_admin_changes_total", PROM_COUNTER,
              "Admin API changes answered, by method and gRPC status code.");
  for (size_t i = 0; i < METRICS_MAX_METHODS; i++) {
    const char *m = atomic_load_explicit(&g_methods[i], memory_order_acquire);
    if (!m)
      break;
    for (int code = 0; code < METRICS_CODES; code++) {
      uint64_t v = prom_counter_read(&g_changes[i][code]);
      if (!v)
        continue;
      char c[8];
      snprintf(c, sizeof(c), "%d", code);
      prom_label_t l[2] = {{"method", m}, {"code", c}};
      prom_sample_u64(b, "mcproxy_admin_changes_total", l, 2, v);
    }
  }
}

static char *render(void *data, size_t *len)
{
  (void)data;
  prom_buf_t b;
  prom_buf_init(&b);
  names_t ns = {0};
  int failed = 0;

  uv_mutex_lock(&g.mu);
  size_t nsnap = g.nsnap;
  snap_listener_t *snap = nsnap ? malloc(nsnap * sizeof(*snap)) : NULL;
  if (snap)
    memcpy(snap, g.snap, nsnap * sizeof(*snap));
  else
    nsnap = 0;
  int64_t rules = g.firewall_rules;
  uv_mutex_unlock(&g.mu);

  for (size_t i = 0; i < nsnap && !failed; i++)
    failed = names_add(&ns, snap[i].name);
  /* Listeners removed since still have their counters (counters never go down). */
  for (mloop_t *lp = atomic_load_explicit(&g_loops, memory_order_acquire); lp && !failed;
       lp = lp->next)
    for (mline_t *m = atomic_load_explicit(&lp->lines, memory_order_acquire); m && !failed;
         m = m->next)
      failed = names_add(&ns, m->name);

  render_counters(&b, &ns);
  prom_family(&b, "mcproxy_connections_active", PROM_GAUGE, "Connections open now, by listener.");
  for (size_t i = 0; i < nsnap; i++) {
    prom_label_t l = {"listener", snap[i].name};
    prom_sample(&b, "mcproxy_connections_active", &l, 1, (double)snap[i].active);
  }
  render_hist(&b, &ns, "mcproxy_handshake_seconds", H_HANDSHAKE,
              "Time from accept to the route decision (PROXY header and ClientHello read).");
  render_hist(&b, &ns, "mcproxy_backend_connect_seconds", H_CONNECT,
              "Time to establish the backend connection, name lookup included.");
  render_hist(&b, &ns, "mcproxy_connection_duration_seconds", H_DURATION,
              "How long connections lasted, from accept to close.");
  prom_family(&b, "mcproxy_routes", PROM_GAUGE, "Routes in each listener's table.");
  for (size_t i = 0; i < nsnap; i++) {
    prom_label_t l = {"listener", snap[i].name};
    prom_sample(&b, "mcproxy_routes", &l, 1, (double)snap[i].routes);
  }
  prom_family(&b, "mcproxy_firewall_rules", PROM_GAUGE, "Firewall rules in force.");
  prom_sample(&b, "mcproxy_firewall_rules", NULL, 0, (double)rules);
  render_admin(&b);
  render_cluster(&b);
  prom_family(&b, "mcproxy_log_lines_dropped_total", PROM_COUNTER,
              "Log lines dropped because the log could not keep up.");
  prom_sample_u64(&b, "mcproxy_log_lines_dropped_total", NULL, 0, log_dropped_total());
  prom_family(&b, "mcproxy_build_info", PROM_GAUGE, "The running build; the value is always 1.");
  prom_label_t v = {"version", mcp_version()};
  prom_sample(&b, "mcproxy_build_info", &v, 1, 1);
  prom_process_metrics(&b);

  free(ns.v);
  free(snap);
  if (failed) {
    prom_buf_free(&b);
    return NULL;
  }
  return prom_buf_take(&b, len);
}

/* ---- start and stop (main loop) ---- */

int metrics_start(state_t *srv, const char *addr, char *err, size_t errlen)
{
  if (uv_mutex_init(&g.mu) != 0) {
    snprintf(err, errlen, "cannot create a mutex");
    return -1;
  }
  g.srv = srv;
  refresh();
  int rc = metrics_http_start(&g.http, addr, render, NULL, NULL, err, errlen);
  if (rc != 0) {
    g.srv = NULL;
    free(g.snap);
    g.snap = NULL;
    g.nsnap = 0;
    uv_mutex_destroy(&g.mu);
    return -1;
  }
  /* Initialised once: a reload stops and restarts the endpoint on the same loop, and a handle
   * must not be initialised again while its close is pending. The server's teardown closes it
   * with every other handle. */
  if (!g.timer_inited) {
    uv_timer_init(srv->loop, &g.timer);
    uv_unref((uv_handle_t *)&g.timer);
    g.timer_inited = 1;
  }
  uv_timer_start(&g.timer, on_refresh, METRICS_REFRESH_MS, METRICS_REFRESH_MS);
  log_info("metrics on http://%s/metrics", addr);
  return 0;
}

void metrics_set_serving(bool serving)
{
  atomic_store(&g_serving, serving);
  if (g.http) {
    refresh();
    metrics_http_set_serving(g.http, serving);
  }
}

bool metrics_serving(void)
{
  return atomic_load(&g_serving);
}

void metrics_stop(void)
{
  if (!g.http)
    return;
  metrics_http_stop(g.http);
  g.http = NULL;
  if (g.timer_inited && !uv_is_closing((uv_handle_t *)&g.timer))
    uv_timer_stop(&g.timer);
  g.srv = NULL;
  free(g.snap);
  g.snap = NULL;
  g.nsnap = 0;
  uv_mutex_destroy(&g.mu);
}
