/*
 * embed: libmcproxy inside someone else's libuv program.
 *
 * The program owns everything: its uv_loop_t (not the default loop), a timer of its own, its
 * signal handling, and two independent proxies (listeners), each with its own route table:
 *
 *   listener A  routes a.example -> BACKEND1 (and, after --switch-after, -> BACKEND2)
 *   listener B  routes b.example -> BACKEND1 (never changes)
 *
 * The timer ticks every 100 ms. Once --switch-after milliseconds have passed it changes A's
 * route from code, the way any embedding service would: clone the published table, edit the
 * clone, publish it. Connections already relaying keep their backend; new ones use the new
 * route. Each finished connection is printed as one key=value line on stdout.
 *
 * usage: embed LISTEN_A LISTEN_B BACKEND1 BACKEND2 [--switch-after MS] [--run-for MS]
 *   Addresses are "IPv4:port" or "[IPv6]:port"; port 0 picks a free port, and the bound
 *   addresses are printed as "listening a=ADDR b=ADDR". --run-for 0 (the default) runs until
 *   SIGINT/SIGTERM. Exit status 0 after a clean shutdown, 1 on errors, 2 on usage errors.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <uv.h>

#include <mcproxy/mcproxy.h>

#define TICK_MS 100

typedef struct app_s {
  uv_loop_t loop;
  uv_timer_t tick;
  uv_signal_t sigint;
  uv_signal_t sigterm;
  mcp_listener_t *a;
  mcp_listener_t *b;
  const char *backend2;
  uint64_t started_ms;
  uint64_t switch_after_ms; /* 0 = never */
  uint64_t run_for_ms;      /* 0 = until a signal */
  int switched;
  int stopping;
  int pending_frees; /* listeners whose free has not completed yet */
  int status;
} app_t;

static void on_conn_end(void *data, const mcp_conn_record_t *rec)
{
  (void)data;
  char line[1024];
  mcp_conn_record_format(rec, line, sizeof(line));
  printf("conn %s\n", line);
  fflush(stdout);
}

/* Prints the address a listener actually bound (port 0 resolved). */
static void format_bound(const mcp_listener_t *l, char *out, size_t len)
{
  struct sockaddr_storage ss;
  char ip[INET6_ADDRSTRLEN] = "?";
  unsigned port = 0;
  snprintf(out, len, "?");
  if (mcp_listener_sockname(l, &ss) != 0)
    return;
  if (ss.ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
    port = ntohs(in->sin_port);
    snprintf(out, len, "%s:%u", ip, port);
  } else if (ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
    port = ntohs(in6->sin6_port);
    snprintf(out, len, "[%s]:%u", ip, port);
  }
}

/*
 * Changes a route on a running listener: the published table is an immutable snapshot shared
 * with connections in flight, so it is cloned, edited and republished, never edited in place.
 */
static int switch_route(mcp_listener_t *l, const char *hostname, const char *backend)
{
  mcp_routes_t *next;
  int err = mcp_routes_clone(mcp_listener_routes(l), &next);
  if (err)
    return err;
  err = mcp_routes_put(next, hostname, backend);
  if (err == 0)
    mcp_listener_set_routes(l, next); /* takes its own reference */
  mcp_routes_unref(next);
  return err;
}

static void on_listener_freed(void *data)
{
  app_t *app = data;
  app->pending_frees--;
}

static void on_handle_closed(uv_handle_t *h)
{
  (void)h;
}

/* Stops everything the program started; uv_run returns once the last handle has closed. */
static void app_stop(app_t *app)
{
  if (app->stopping)
    return;
  app->stopping = 1;
  uv_timer_stop(&app->tick);
  uv_close((uv_handle_t *)&app->tick, on_handle_closed);
  uv_close((uv_handle_t *)&app->sigint, on_handle_closed);
  uv_close((uv_handle_t *)&app->sigterm, on_handle_closed);
  if (app->a) {
    app->pending_frees++;
    mcp_listener_free(app->a, on_listener_freed, app);
    app->a = NULL;
  }
  if (app->b) {
    app->pending_frees++;
    mcp_listener_free(app->b, on_listener_freed, app);
    app->b = NULL;
  }
}

static void on_tick(uv_timer_t *t)
{
  app_t *app = t->data;
  uint64_t elapsed = uv_now(&app->loop) - app->started_ms;
  if (!app->switched && app->switch_after_ms && elapsed >= app->switch_after_ms) {
    int err = switch_route(app->a, "a.example", app->backend2);
    if (err) {
      fprintf(stderr, "embed: switching a.example failed: %s\n", mcp_strerror(err));
      app->status = 1;
      app_stop(app);
      return;
    }
    app->switched = 1;
    printf("switched a.example to %s\n", app->backend2);
    fflush(stdout);
  }
  if (app->run_for_ms && elapsed >= app->run_for_ms)
    app_stop(app);
}

static void on_signal(uv_signal_t *s, int signum)
{
  app_t *app = s->data;
  printf("signal %d: stopping\n", signum);
  fflush(stdout);
  app_stop(app);
}

/* Creates, routes and starts one listener. */
static int start_listener(app_t *app, const char *addr, const char *hostname,
                          const char *backend, mcp_listener_t **out)
{
  mcp_listener_config_t cfg = {
      .addr = addr,
      .handshake_timeout_ms = 5000,
      .connect_timeout_ms = 2000,
      .idle_timeout_ms = 60000,
      .on_conn_end = on_conn_end,
      .data = app,
  };
  mcp_listener_t *l = NULL;
  int err = mcp_listener_new(&app->loop, &cfg, &l);
  if (err) {
    fprintf(stderr, "embed: listener %s: %s\n", addr, mcp_strerror(err));
    return err;
  }
  mcp_routes_t *rt;
  err = mcp_routes_new(&rt);
  if (err) {
    goto fail;
  }
  err = mcp_routes_put(rt, hostname, backend);
  if (err) {
    fprintf(stderr, "embed: route %s -> %s: %s\n", hostname, backend, mcp_strerror(err));
    mcp_routes_unref(rt);
    goto fail;
  }
  mcp_listener_set_routes(l, rt);
  mcp_routes_unref(rt);
  err = mcp_listener_start(l);
  if (err) {
    fprintf(stderr, "embed: listen %s: %s\n", addr, mcp_strerror(err));
    goto fail;
  }
  *out = l;
  return 0;

fail:
  app->pending_frees++;
  mcp_listener_free(l, on_listener_freed, app);
  return err;
}

static int parse_ms(const char *s, uint64_t *out)
{
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (!*s || *end || v > 86400000ULL)
    return -1;
  *out = v;
  return 0;
}

static int usage(void)
{
  fprintf(stderr, "usage: embed LISTEN_A LISTEN_B BACKEND1 BACKEND2 [--switch-after MS] "
                  "[--run-for MS]\n");
  return 2;
}

int main(int argc, char **argv)
{
  const char *pos[4];
  int npos = 0;
  app_t app = {.switch_after_ms = 0, .run_for_ms = 0};

  for (int i = 1; i < argc; i++) {
    if ((!strcmp(argv[i], "--switch-after") || !strcmp(argv[i], "--run-for")) && i + 1 < argc) {
      uint64_t *dst = argv[i][2] == 's' ? &app.switch_after_ms : &app.run_for_ms;
      if (parse_ms(argv[++i], dst) != 0)
        return usage();
    } else if (argv[i][0] == '-' || npos == 4) {
      return usage();
    } else {
      pos[npos++] = argv[i];
    }
  }
  if (npos != 4)
    return usage();
  app.backend2 = pos[3];

  /* The library never touches signals; SIGPIPE is this program's business, as is SIGINT. */
  signal(SIGPIPE, SIG_IGN);

  int err = uv_loop_init(&app.loop);
  if (err) {
    fprintf(stderr, "embed: uv_loop_init: %s\n", uv_strerror(err));
    return 1;
  }
  uv_timer_init(&app.loop, &app.tick);
  app.tick.data = &app;
  uv_signal_init(&app.loop, &app.sigint);
  uv_signal_init(&app.loop, &app.sigterm);
  app.sigint.data = app.sigterm.data = &app;
  uv_signal_start(&app.sigint, on_signal, SIGINT);
  uv_signal_start(&app.sigterm, on_signal, SIGTERM);

  printf("libmcproxy %s\n", mcp_version());
  if (start_listener(&app, pos[0], "a.example", pos[2], &app.a) != 0 ||
      start_listener(&app, pos[1], "b.example", pos[2], &app.b) != 0) {
    app.status = 1;
    app_stop(&app);
  } else {
    char a[80], b[80];
    format_bound(app.a, a, sizeof(a));
    format_bound(app.b, b, sizeof(b));
    printf("listening a=%s b=%s\n", a, b);
    fflush(stdout);
    app.started_ms = uv_now(&app.loop);
    uv_timer_start(&app.tick, on_tick, TICK_MS, TICK_MS);
  }

  uv_run(&app.loop, UV_RUN_DEFAULT);
  if (app.pending_frees != 0) {
    fprintf(stderr, "embed: %d listener(s) not freed\n", app.pending_frees);
    app.status = 1;
  }
  err = uv_loop_close(&app.loop);
  if (err) {
    fprintf(stderr, "embed: uv_loop_close: %s\n", uv_strerror(err));
    app.status = 1;
  }
  printf("stopped\n");
  return app.status;
}
