/*
 * mc-proxy server: load the config, open the store (seeding it on the first run), build the
 * firewall and one listener per stored listener address, start the admin API, then run the loop
 * until SIGTERM/SIGINT. Shutdown: stop accepting, stop the admin API, let connections drain
 * for up to shutdown_timeout, close the rest, exit 0. A second signal exits at once with 1.
 * SIGHUP reloads: the steps that work on run_t (admin API, database lock, resuming) are here,
 * the mechanics of the hand-over in reload.c (docs/RUNBOOK.md "Reloading"); that is why this
 * file runs past 600 lines.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "admin_rpc.h"
#include "admin_server.h"
#include "cli.h"
#include "cluster.h"
#include "config.h"
#include "control.h"
#include "drift.h"
#include "files.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "reload.h"
#include "state.h"
#include "workers.h"

/* Everything cmd_server() runs; main (loop) thread only. */
typedef struct run_s {
  state_t srv;
  control_t *ctl;        /* admin changes, one at a time (control.h) */
  cluster_t *cluster;    /* cluster mode's sync (cluster.h); NULL without [cluster] */
  admin_server_t *admin; /* NULL without [grpc], or once stopped */
  admin_rpc_t rpc;       /* what the admin methods work on */
  uv_signal_t sigterm, sigint, sighup;
  uv_timer_t drain_poll;
  uv_timer_t reload_poll; /* a reload waits here for the admin change in flight (reload.h) */
  uv_prepare_t log_flush; /* writes the loop's buffered connection lines before it waits */
  uint64_t drain_deadline;
  int stopping;
  int admin_stopped;
  int lock_fd;
  int reloading;   /* a hand-over is under way */
  int handed_over; /* a new process serves now: this one only drains */
} run_t;

/* ---- connection log ---- */

/*
 * Runs on whichever loop the connection lived on. The line goes into that thread's log buffer,
 * written once per loop iteration (log_flush_each_iteration).
 */
static void on_conn_end(void *data, const mcp_conn_record_t *rec)
{
  /* Formatted straight into the log's buffer: no format walk, no copy (docs/PERFORMANCE.md). */
  size_t room;
  char *p = log_buffered_begin(LOG_INFO, &room);
  if (p && room > 5) {
    memcpy(p, "conn ", 5); // NOLINT(bugprone-not-null-terminated-result): the record follows
    int n = mcp_conn_record_format(rec, p + 5, room - 5);
    log_buffered_end(5 + (n > 0 ? (size_t)n : 0));
  } else if (p) {
    log_buffered_end(0);
  }
  metrics_conn_end(rec); /* this loop's own counters (metrics.h) */
}

/*
 * The server raises its soft descriptor limit to the hard one: every connection costs two
 * descriptors, and the listeners keep a reserve below the limit for the admin API
 * (docs/RUNBOOK.md, "Running out of file descriptors"). Called once the log level is set,
 * before anything is opened.
 */
static void raise_nofile(void)
{
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return;
  if (rl.rlim_cur == rl.rlim_max) {
    log_info("descriptor limit %llu (soft = hard)", (unsigned long long)rl.rlim_cur);
    return;
  }
  rlim_t before = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
    log_info("descriptor limit raised from %llu to the hard limit %llu",
             (unsigned long long)before, (unsigned long long)rl.rlim_max);
  else
    log_warn("descriptor limit %llu: could not raise it to %llu", (unsigned long long)before,
             (unsigned long long)rl.rlim_max);
}

/* What a listener reports outside any one connection: accept errors, the descriptor reserve. */
static void on_listener_error(void *data, int err, const char *msg)
{
  (void)data;
  log_buffered(err < 0 ? LOG_WARN : LOG_INFO, "%s", msg);
}

/* ---- seeding and loading ---- */

static int seed(mcp_store_t *st, const config_t *cfg)
{
  int err = mcp_store_begin(st);
  for (size_t i = 0; i < cfg->nlisteners && !err; i++) {
    const config_listener_t *cl = &cfg->listeners[i];
    const char *from[CONFIG_PROXY_FROM_MAX];
    mcp_store_listener_settings_t ss;
    state_settings_to_store(&cl->settings, &ss, from);
    err = mcp_store_listener_add_settings(st, cl->addr, &ss);
    for (size_t j = 0; j < cl->nroutes && !err; j++)
      err = mcp_store_route_put_ex(st, cl->addr, cl->routes[j].hostname, cl->routes[j].backend,
                                   (mcp_send_proxy_t)cl->routes[j].send_proxy);
  }
  for (size_t i = 0; i < cfg->nrules && !err; i++) {
    int rc = mcp_store_firewall_add(st, cfg->rules[i].type, cfg->rules[i].value);
    err = rc < 0 ? rc : 0;
  }
  if (err) {
    mcp_store_rollback(st);
    return err;
  }
  return mcp_store_commit(st);
}

/* Builds the in-memory state from the database (the source of truth after seeding). */
typedef struct load_s {
  run_t *run;
  drift_set_t db; /* what the database holds, to compare with the config (drift.h) */
  char err[512];
} load_t;

static int load_listener(void *data, const char *addr, const mcp_store_listener_settings_t *ss)
{
  load_t *ld = data;
  state_t *srv = &ld->run->srv;
  listener_settings_t settings;
  state_settings_from_store(ss, &settings);
  if (drift_add_listener(&ld->db, addr, &settings))
    return MCP_ENOMEM;
  mcp_listener_config_t lc = srv->listener_config;
  lc.addr = addr;
  lc.max_connections = settings.max_connections;
  char canonical[64];
  if (mcp_listener_addr_parse(addr, &(struct sockaddr_storage){0}, canonical) == 0)
    lc.fd = reload_take_fd(canonical); /* 0 unless a reload handed us this address's socket */
  mcp_listener_t *l;
  int err = mcp_listener_new(srv->loop, &lc, &l);
  if (err) {
    snprintf(ld->err, sizeof(ld->err), "database listener \"%s\": %s", addr, mcp_strerror(err));
    return err;
  }
  if ((err = state_add_listener(srv, l, &settings)) != 0)
    mcp_listener_free(l, NULL, NULL);
  return err;
}

static int load_route(void *data, const char *laddr, const char *host, const char *backend,
                      mcp_send_proxy_t send_proxy)
{
  load_t *ld = data;
  if (drift_add_route(&ld->db, laddr, host, backend, (int)send_proxy))
    return MCP_ENOMEM;
  mcp_listener_t *l = state_find_listener(&ld->run->srv, laddr);
  if (!l)
    return 0; /* cannot happen: routes reference listeners by foreign key */
  int err = mcp_routes_put_ex(mcp_listener_routes(l), host, backend, send_proxy);
  if (err == MCP_EINVAL) {
    log_warn("database route %s %s -> %s is malformed; ignored", laddr, host, backend);
    return 0;
  }
  return err;
}

static int load_rule(void *data, mcp_firewall_type_t type, const char *value)
{
  load_t *ld = data;
  if (drift_add(&ld->db, "rule %s %s", mcp_firewall_type_name(type), value))
    return MCP_ENOMEM;
  int rc = mcp_firewall_add(ld->run->srv.firewall, type, value);
  if (rc == MCP_EINVAL) {
    log_warn("database firewall rule %s %s is malformed; ignored", mcp_firewall_type_name(type),
             value);
    return 0;
  }
  return rc < 0 ? rc : 0;
}

/* The config's listeners, routes and rules against the database's: warn with the first few. */
static void report_drift(const config_t *cfg, drift_set_t *db)
{
  drift_set_t fromcfg = {0};
  char show[DRIFT_SHOW][256];
  size_t nshow = 0;
  if (drift_from_config(cfg, &fromcfg) == 0) {
    size_t count = drift_compare(&fromcfg, db, show, &nshow);
    if (count)
      log_warn("%zu difference%s between the listeners, routes and rules in %s and the database "
               "%s; the database is the source of truth and the file's copies are ignored",
               count, count == 1 ? "" : "s", cfg->path, cfg->db_path);
    for (size_t i = 0; i < nshow; i++)
      log_warn("  %s", show[i]);
  }
  drift_free(&fromcfg);
}

static int load_state(run_t *run, char *err, size_t errlen)
{
  state_t *srv = &run->srv;
  const config_t *cfg = srv->cfg;
  int empty = 0;
  int rc = mcp_store_is_empty(srv->store, &empty);
  if (rc < 0) {
    snprintf(err, errlen, "%s: %s", cfg->db_path, mcp_store_errmsg(srv->store));
    return -1;
  }
  if (empty && cfg->has_cluster) {
    log_info("cluster mode: the database starts empty and fills from etcd");
  } else if (empty) {
    rc = seed(srv->store, cfg);
    if (rc) {
      snprintf(err, errlen, "%s: seeding from the config failed: %s", cfg->db_path,
               mcp_store_errmsg(srv->store));
      return -1;
    }
    log_info("first run: seeded the database from %s (%zu listeners, %zu firewall rules)",
             cfg->path, cfg->nlisteners, cfg->nrules);
  }

  if (mcp_firewall_new(&srv->firewall) != 0) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  mcp_firewall_set_geoip(srv->firewall, srv->geoip);

  load_t ld = {.run = run};
  mcp_store_visitor_ex_t visitor = {load_listener, load_route, load_rule};
  rc = mcp_store_load_ex(srv->store, &visitor, &ld);
  if (rc) {
    if (ld.err[0])
      snprintf(err, errlen, "%s: %s", cfg->db_path, ld.err);
    else
      snprintf(err, errlen, "%s: loading failed: %s (%s)", cfg->db_path, mcp_strerror(rc),
               mcp_store_errmsg(srv->store));
    drift_free(&ld.db);
    return -1;
  }

  /* In cluster mode a file without listeners and rules has nothing to compare: etcd fills the
   * database. A file that has some is reported as elsewhere (they are not used). */
  if (!cfg->has_cluster || cfg->nlisteners > 0 || cfg->nrules > 0)
    report_drift(cfg, &ld.db);
  drift_free(&ld.db);
  /* Serving without [cluster] makes this database its own source of truth: a later [cluster]
   * must read the prefix whole instead of resuming after a revision it no longer reflects. */
  if (!cfg->has_cluster && mcp_store_sync_forget(srv->store) != 0)
    log_warn("%s: cannot drop the cluster sync revision: %s", cfg->db_path,
             mcp_store_errmsg(srv->store));

  if (mcp_firewall_country_count(srv->firewall) > 0 && !srv->geoip) {
    snprintf(err, errlen,
             "%s: the database has country firewall rules but %s sets no [firewall] geoip_db",
             cfg->db_path, cfg->path);
    return -1;
  }
  return 0;
}

/* ---- signals and shutdown ---- */

/* Connections still open on every loop (the counters are shared atomics). */
static int64_t total_active(state_t *srv)
{
  int64_t active = 0;
  for (size_t i = 0; i < srv->nlisteners; i++) {
    mcp_listener_stats_t st;
    mcp_listener_get_stats(srv->listeners[i], &st);
    active += st.active_connections;
  }
  state_free_retired(srv);
  for (size_t i = 0; i < srv->nretired; i++) {
    mcp_listener_stats_t st;
    mcp_listener_get_stats(srv->retired[i], &st);
    active += st.active_connections;
  }
  return active;
}

static void begin_shutdown(run_t *run);
static void begin_reload(run_t *run);

/*
 * Draining: polls until no admin change is being written (then the admin server stops; a
 * change in progress is answered with what really happened) and the (atomic, all-loops) active
 * counts reach zero, or time is up.
 */
static void on_drain_poll(uv_timer_t *t)
{
  run_t *run = t->data;
  state_t *srv = &run->srv;
  if (!run->admin_stopped && !control_busy(run->ctl)) {
    admin_server_stop(run->admin);
    run->admin = NULL;
    run->admin_stopped = 1;
  }
  if (run->admin_stopped && total_active(srv) == 0) {
    uv_stop(run->srv.loop);
    return;
  }
  if (uv_now(run->srv.loop) >= run->drain_deadline) {
    log_warn("shutdown_timeout reached; closing %lld remaining connections",
             (long long)total_active(&run->srv));
    uv_stop(run->srv.loop);
  }
}

static void on_signal(uv_signal_t *h, int signum)
{
  run_t *run = h->data;
  if (signum == SIGHUP) {
    begin_reload(run);
    return;
  }
  if (run->stopping) {
    log_warn("second signal: exiting now");
    _exit(1);
  }
  log_info("signal %d: shutting down (draining for up to %llu ms)", signum,
           (unsigned long long)run->srv.cfg->shutdown_timeout_ms);
  begin_shutdown(run);
}

static void begin_shutdown(run_t *run)
{
  state_t *srv = &run->srv;
  if (!run->handed_over)
    notify_send("STOPPING=1");
  run->stopping = 1;
  metrics_set_serving(false); /* metrics: /healthz and gRPC health say draining */
  for (size_t i = 0; i < srv->nlisteners; i++)
    mcp_listener_stop(srv->listeners[i]);
  workers_stop_accepting(srv);
  control_stop(run->ctl);
  cluster_stop(run->cluster); /* answers the admin changes still waiting for the watch */
  run->drain_deadline = uv_now(srv->loop) + srv->cfg->shutdown_timeout_ms;
  uv_timer_start(&run->drain_poll, on_drain_poll, 0, 50);
}

/* ---- reload: hand-over to a new process (reload.h, docs/RUNBOOK.md "Reload") ---- */

static int relock_database(run_t *run);

/*
 * Sockets the new process binds anew and this one must let go of first, besides the admin API
 * (the metrics endpoint, when it is started from this file): released before the new process
 * starts, taken back if it fails.
 */
static void reload_release_others(run_t *run)
{
  if (run->srv.cfg->has_metrics)
    metrics_stop(); /* metrics: the new process binds the same address */
}

static void reload_retake_others(run_t *run)
{
  state_t *srv = &run->srv;
  char err[256];
  if (!srv->cfg->has_metrics)
    return;
  if (metrics_start(srv, srv->cfg->metrics_addr, err, sizeof(err)) != 0) {
    log_error("reload: [metrics] addr: %s; the metrics endpoint stays off", err);
    return;
  }
  metrics_set_serving(!run->stopping);
}

/* The hand-over did not happen: take the database and the admin API back, keep serving. */
static void reload_resume(run_t *run, const char *why)
{
  state_t *srv = &run->srv;
  log_error("SIGHUP: reload failed: %s; keeping the running process (pid %d) and its "
            "configuration",
            why, (int)getpid());
  reload_status_write(srv->cfg->db_path, "failed: %s", why);
  run->reloading = 0;
  if (run->stopping)
    return; /* SIGTERM came during the reload: the drain goes on without the admin API */
  reload_retake_others(run);
  if (run->lock_fd <= 0 && relock_database(run) != 0)
    log_error("reload: cannot lock the database again; admin changes stay off");
  else if (!run->admin && !control_busy(run->ctl)) {
    control_free(run->ctl);
    run->ctl = control_new(srv);
    run->rpc.ctl = run->ctl;
    if (run->ctl && run->cluster) {
      control_set_cluster(run->ctl, run->cluster);
      cluster_resume(run->cluster);
    }
    char err[512];
    if (run->ctl && srv->cfg->has_grpc &&
        admin_server_start(srv->loop, srv->cfg, admin_rpc_methods, admin_rpc_nmethods, &run->rpc,
                           &run->admin, err, sizeof(err)) != 0)
      log_error("reload: admin API: %s; admin changes stay off", err);
  }
  notify_send("READY=1");
}

static void on_reload_done(void *data, int ok, int pid, const char *why)
{
  run_t *run = data;
  state_t *srv = &run->srv;
  if (!ok) {
    reload_resume(run, why);
    return;
  }
  if (run->stopping) {
    /* SIGTERM came while the new process started: it must not outlive the service. */
    log_warn("reload: shutting down; stopping the new process %d too", pid);
    kill(pid, SIGTERM);
    run->reloading = 0;
    return;
  }
  run->handed_over = 1;
  run->reloading = 0;
  /* From the main process, so NotifyAccess=main suffices; the new one sent the same already. */
  notify_send("MAINPID=%d\nREADY=1", pid);
  reload_status_write(srv->cfg->db_path, "ok %d", pid);
  log_info("SIGHUP: reopened %s in pid %d, which took over the listeners and the database; "
           "pid %d stops accepting and drains for up to %llu ms",
           srv->cfg->path, pid, (int)getpid(), (unsigned long long)srv->cfg->shutdown_timeout_ms);
  /* The listening sockets live on in the new process: closing ours loses no queued client. */
  begin_shutdown(run);
}

/* Waits for the admin change in flight, then lets go of the admin API and the database. */
static void on_reload_poll(uv_timer_t *t)
{
  run_t *run = t->data;
  state_t *srv = &run->srv;
  if (control_busy(run->ctl) || cluster_busy(run->cluster))
    return;
  uv_timer_stop(t);
  if (run->stopping) { /* SIGTERM came first: no hand-over */
    run->reloading = 0;
    return;
  }
  admin_server_stop(run->admin);
  run->admin = NULL;
  reload_release_others(run);
  close(run->lock_fd);
  run->lock_fd = -1;
  char err[512];
  if (reload_spawn(srv, srv->cfg->path, on_reload_done, run, err, sizeof(err)) != 0)
    reload_resume(run, err);
}

static void begin_reload(run_t *run)
{
  state_t *srv = &run->srv;
  if (run->stopping) {
    log_warn("SIGHUP: shutting down; not reloading");
    return;
  }
  if (run->reloading) {
    log_warn("SIGHUP: a reload is already under way");
    return;
  }
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  notify_send("RELOADING=1\nMONOTONIC_USEC=%llu",
              (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
  config_t cfg;
  char err[1024];
  if (reload_validate(srv->cfg->path, &cfg, err, sizeof(err)) != 0) {
    log_error("SIGHUP: the config does not pass check: %s; keeping the running process and "
              "configuration",
              err);
    reload_status_write(srv->cfg->db_path, "refused: %s", err);
    notify_send("READY=1");
    return;
  }
  config_free(&cfg);
  log_info("SIGHUP: %s passes check; handing over to a new process of the binary on disk",
           srv->cfg->path);
  run->reloading = 1;
  /* Queued admin changes are refused (UNAVAILABLE); the one in flight completes first. So does
   * a cluster batch being written: the new process resumes after its revision. */
  control_stop(run->ctl);
  cluster_stop(run->cluster);
  uv_timer_start(&run->reload_poll, on_reload_poll, 0, 20);
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* Frees listeners (closing what is left), then every other handle, and runs the loop dry. */
static void teardown(run_t *run)
{
  state_t *srv = &run->srv;
  /* A change still being written (shutdown_timeout ran out first) finishes against live
   * listeners and workers; its database write is bounded by the busy timeout. */
  if (run->ctl) {
    control_stop(run->ctl);
    while (control_busy(run->ctl))
      uv_run(srv->loop, UV_RUN_ONCE);
  }
  cluster_stop(run->cluster);
  while (cluster_busy(run->cluster))
    uv_run(srv->loop, UV_RUN_ONCE);
  cluster_free(run->cluster); /* its handles close with the others below */
  run->cluster = NULL;
  admin_server_stop(run->admin);
  run->admin = NULL;
  workers_stop(srv);
  for (size_t i = 0; i < srv->nlisteners; i++)
    mcp_listener_free(srv->listeners[i], NULL, NULL);
  for (size_t i = 0; i < srv->nretired; i++)
    mcp_listener_free(srv->retired[i], NULL, NULL);
  /* Every listener handle is closing now; close the signal handlers and timers too. The drain
   * is over and the process exits 0: a SIGTERM or SIGINT from here on (a supervisor stopping a
   * process that already handed over on reload) must not kill it on the way out. Set after the
   * walk: closing libuv's last signal handle puts back the default action. */
  uv_walk(srv->loop, close_walk_cb, NULL);
  signal(SIGTERM, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  uv_run(srv->loop, UV_RUN_DEFAULT);
  free(srv->listeners);
  free(srv->settings);
  free(srv->retired);
  srv->listeners = NULL;
  srv->settings = NULL;
  srv->retired = NULL;
  srv->nlisteners = 0;
  srv->nretired = 0;
  mcp_firewall_unref(srv->firewall);
  mcp_geoip_unref(srv->geoip);
  if (srv->store)
    mcp_store_close(srv->store);
  control_free(run->ctl);
  run->ctl = NULL;
  uv_loop_close(srv->loop);
}

/*
 * One server per database: an exclusive lock on "<db>.lock", held for the life of the process.
 * Without it two instances would interleave writes and, with SO_REUSEPORT, silently share ports.
 */
static int lock_database(run_t *run, char *err, size_t errlen);

static int relock_database(run_t *run)
{
  char err[512];
  if (lock_database(run, err, sizeof(err)) != 0) {
    log_error("%s", err);
    return -1;
  }
  return 0;
}

static int lock_database(run_t *run, char *err, size_t errlen)
{
  char path[PATH_MAX + 8];
  snprintf(path, sizeof(path), "%s.lock", run->srv.cfg->db_path);
  int fd = files_lock(path);
  if (fd == FILES_LOCK_OPEN) {
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  if (fd == FILES_LOCK_HELD) {
    snprintf(err, errlen, "%s is locked: another mc-proxy server is using %s", path,
             run->srv.cfg->db_path);
    return -1;
  }
  run->lock_fd = fd;
  return 0;
}

/* ---- the command ---- */

/*
 * After a reload every inherited socket must keep a loop accepting from it (closing one could
 * reset the connections queued on it), so this process runs at least as many loops as the old
 * one had; a socket without SO_REUSEPORT (the old process ran one loop) allows no siblings.
 */
static void adjust_workers_to_inherited(state_t *srv)
{
  int reuseport = 1;
  int inherited = reload_inherited_loops(&reuseport);
  if (inherited == 0)
    return;
  if (!reuseport && srv->nworkers != 1) {
    log_warn("reload: the inherited sockets serve one loop; workers = %d takes effect on a "
             "restart",
             srv->nworkers);
    srv->nworkers = 1;
  } else if (reuseport && srv->nworkers < inherited) {
    log_warn("reload: %d loops inherited; fewer workers (%d) take effect on a restart", inherited,
             srv->nworkers);
    srv->nworkers = inherited;
  }
}

/* Once this process serves: the service manager, the pid file and the old process learn it. */
static void announce_ready(run_t *run, int inherited)
{
  reload_close_unused();
  reload_pidfile_write(run->srv.cfg->db_path);
  if (inherited) {
    notify_send("MAINPID=%d\nREADY=1", (int)getpid());
    reload_report_ready();
  } else {
    notify_send("READY=1");
  }
}

static const char server_usage[] = "usage: mc-proxy server -c FILE\n"
                                   "\n"
                                   "Runs the proxy in the foreground, logging to stderr.\n"
                                   "\n"
                                   "  -c, --config FILE   the INI config (see mc-proxy.ini(5))\n"
                                   "  -h, --help          this help\n";

static int start(run_t *run, uv_loop_t *loop, config_t *cfg)
{
  state_t *srv = &run->srv;
  char err[1024];
  int inherited = reload_inherit_init();
  srv->loop = loop;
  srv->cfg = cfg;
  srv->started_at_unix = (int64_t)time(NULL);
  log_set_level(cfg->log_level);
  raise_nofile();
  srv->nworkers = cfg->workers > 0 ? cfg->workers : workers_default_count();
  adjust_workers_to_inherited(srv);
  srv->listener_config = (mcp_listener_config_t){
      .handshake_timeout_ms = cfg->handshake_timeout_ms,
      .connect_timeout_ms = cfg->connect_timeout_ms,
      .idle_timeout_ms = cfg->idle_timeout_ms,
      .reuseport = srv->nworkers > 1,
      .copy_relay = cfg->copy_relay,
      .on_conn_end = on_conn_end,
      .on_error = on_listener_error,
      .data = run,
  };
  run->ctl = control_new(srv);
  if (!run->ctl) {
    log_error("out of memory");
    return EXIT_REFUSED;
  }
  if (lock_database(run, err, sizeof(err)) != 0) {
    log_error("%s", err);
    return EXIT_REFUSED;
  }

  if (cfg->geoip_db[0] && mcp_geoip_open(cfg->geoip_db, &srv->geoip, err, sizeof(err)) != 0) {
    log_error("%s", err);
    return EXIT_USAGE;
  }
  if (mcp_store_open(cfg->db_path, 0, &srv->store, err, sizeof(err)) != 0) {
    log_error("%s", err);
    return EXIT_REFUSED;
  }
  if (load_state(run, err, sizeof(err)) != 0) {
    log_error("%s", err);
    return EXIT_REFUSED;
  }
  config_free_seed(cfg); /* the database is the source of truth from here on */

  /* metrics: the endpoint answers (503 on /healthz) before the listeners are bound */
  if (cfg->has_metrics && metrics_start(srv, cfg->metrics_addr, err, sizeof(err)) != 0) {
    log_error("[metrics] addr: %s", err);
    return EXIT_REFUSED;
  }

  size_t nroutes = 0;
  for (size_t i = 0; i < srv->nlisteners; i++) {
    mcp_listener_t *l = srv->listeners[i];
    nroutes += mcp_routes_count(mcp_listener_routes(l));
    int rc = mcp_listener_set_firewall(l, srv->firewall);
    if (!rc)
      rc = state_apply_settings(srv, i);
    if (!rc)
      rc = mcp_listener_start(l);
    if (rc) {
      log_error("listener %s: %s", mcp_listener_addr(l), mcp_strerror(rc));
      return EXIT_REFUSED;
    }
  }

  if (workers_start(srv, srv->nworkers, err, sizeof(err)) != 0) {
    log_error("%s", err);
    return EXIT_REFUSED;
  }
  if (cfg->has_cluster) {
    if (cluster_start(srv, &run->cluster, err, sizeof(err)) != 0) {
      log_error("%s", err);
      return EXIT_USAGE;
    }
    control_set_cluster(run->ctl, run->cluster);
  }
  run->rpc = (admin_rpc_t){.st = srv, .ctl = run->ctl, .cluster = run->cluster};
  if (cfg->has_grpc && admin_server_start(srv->loop, cfg, admin_rpc_methods, admin_rpc_nmethods,
                                          &run->rpc, &run->admin, err, sizeof(err)) != 0) {
    log_error("admin API: %s", err);
    return EXIT_REFUSED;
  }

  log_info("mc-proxy %s started: %zu listeners, %zu routes, %zu firewall rules, %d workers, "
           "admin %s",
           mcp_version(), srv->nlisteners, nroutes, mcp_firewall_count(srv->firewall),
           srv->nworkers, cfg->has_grpc ? cfg->grpc_addr : "off");
  for (size_t i = 0; i < srv->nlisteners; i++) {
    mcp_listener_stats_t st;
    mcp_listener_get_stats(srv->listeners[i], &st);
    log_info("listening on %s (%lld routes, max_connections %lld)",
             mcp_listener_addr(srv->listeners[i]), (long long)st.route_count,
             (long long)st.max_connections);
  }
  announce_ready(run, inherited);
  metrics_set_serving(true); /* metrics: every listener is bound */
  return EXIT_OK;
}

int cmd_server(int argc, char **argv)
{
  static const struct option opts[] = {
      {"config", required_argument, NULL, 'c'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *path = NULL;
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
    switch (ch) {
    case 'c':
      path = optarg;
      break;
    case 'h':
      fputs(server_usage, stdout);
      return EXIT_OK;
    default:
      return cli_usage_error("server", "unknown option");
    }
  }
  if (optind < argc)
    return cli_usage_error("server", "unexpected argument '%s'", argv[optind]);
  if (!path)
    return cli_usage_error("server", "-c FILE is required");

  config_t cfg;
  char err[1024];
  if (config_load(path, &cfg, err, sizeof(err)) != 0) {
    fprintf(stderr, "mc-proxy: %s\n", err);
    return EXIT_USAGE;
  }

  /* A peer that resets while we write must not kill the process. */
  signal(SIGPIPE, SIG_IGN);

  uv_loop_t loop;
  uv_loop_init(&loop);
  run_t run;
  memset(&run, 0, sizeof(run));
  uv_signal_init(&loop, &run.sigterm);
  uv_signal_init(&loop, &run.sigint);
  uv_signal_init(&loop, &run.sighup);
  uv_timer_init(&loop, &run.drain_poll);
  uv_timer_init(&loop, &run.reload_poll);
  reload_exe_init();
  log_flush_each_iteration(&loop, &run.log_flush);
  run.sigterm.data = run.sigint.data = run.sighup.data = run.drain_poll.data =
      run.reload_poll.data = &run;
  uv_signal_start(&run.sigterm, on_signal, SIGTERM);
  uv_signal_start(&run.sigint, on_signal, SIGINT);
  uv_signal_start(&run.sighup, on_signal, SIGHUP);

  int status = start(&run, &loop, &cfg);
  if (status == EXIT_OK) {
    uv_run(&loop, UV_RUN_DEFAULT);
    log_info("stopped");
    if (!run.handed_over)
      reload_pidfile_remove(cfg.db_path);
  }
  metrics_stop(); /* metrics: before the listeners go */
  teardown(&run);
  log_flush();
  if (run.lock_fd > 0)
    close(run.lock_fd);
  config_free(&cfg);
  return status;
}
