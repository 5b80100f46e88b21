/*
 * reload: the hand-over to a new process (see reload.h) and the `mc-proxy reload` command.
 * Both halves live here so the protocol between them (environment variables, the ready pipe,
 * the pid and status files) is in one file.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "certs.h"
#include "cli.h"
#include "log.h"
#include "reload.h"

#define ENV_FDS "MC_PROXY_LISTEN_FDS"
#define ENV_READY "MC_PROXY_READY_FD"

extern char **environ;

static char exe_path[PATH_MAX];

void reload_exe_init(void)
{
  ssize_t n = readlink("/proc/self/exe", exe_path, sizeof(exe_path) - 1);
  if (n <= 0) {
    exe_path[0] = '\0';
    return;
  }
  exe_path[n] = '\0';
  /* Already replaced on disk: the path is what we want, not the kernel's note. */
  static const char deleted[] = " (deleted)";
  size_t dl = sizeof(deleted) - 1;
  if ((size_t)n > dl && !strcmp(exe_path + n - dl, deleted))
    exe_path[n - dl] = '\0';
}

int reload_validate(const char *path, config_t *cfg, char *err, size_t errlen)
{
  if (config_load(path, cfg, err, errlen) != 0)
    return -1;
  char warn[512];
  char cerr[512];
  if (cfg->has_grpc && certs_check_config(cfg, cerr, sizeof(cerr), warn, sizeof(warn)) != 0) {
    snprintf(err, errlen, "%s: %s", path, cerr);
    config_free(cfg);
    return -1;
  }
  if (cfg->geoip_db[0]) {
    mcp_geoip_t *g = NULL;
    if (mcp_geoip_open(cfg->geoip_db, &g, cerr, sizeof(cerr)) != 0) {
      snprintf(err, errlen, "%s: [firewall] geoip_db: %s", path, cerr);
      config_free(cfg);
      return -1;
    }
    mcp_geoip_unref(g);
  }
  return 0;
}

/* ---- the new process: inherited sockets ---- */

typedef struct inherited_s {
  char addr[CONFIG_ADDR_MAX];
  int fd;
  int taken;
} inherited_t;

static inherited_t *inh;
static size_t ninh;
static int ready_fd = -1;

int reload_inherit_init(void)
{
  const char *r = getenv(ENV_READY);
  const char *v = getenv(ENV_FDS);
  int inherited = r != NULL;
  if (r)
    ready_fd = atoi(r);
  if (v) {
    char *copy = strdup(v);
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
      char *eq = strrchr(tok, '=');
      if (!eq)
        continue;
      *eq = '\0';
      inherited_t *n = realloc(inh, (ninh + 1) * sizeof(*inh));
      if (!n)
        break;
      inh = n;
      memset(&inh[ninh], 0, sizeof(inh[ninh]));
      snprintf(inh[ninh].addr, sizeof(inh[ninh].addr), "%s", tok);
      inh[ninh].fd = atoi(eq + 1);
      /* The old process may not wait for us forever; never hand these to our own children. */
      fcntl(inh[ninh].fd, F_SETFD, FD_CLOEXEC);
      ninh++;
    }
    free(copy);
  }
  if (ready_fd > 0)
    fcntl(ready_fd, F_SETFD, FD_CLOEXEC);
  unsetenv(ENV_FDS);
  unsetenv(ENV_READY);
  return inherited;
}

int reload_take_fd(const char *addr)
{
  for (size_t i = 0; i < ninh; i++)
    if (!inh[i].taken && !strcmp(inh[i].addr, addr)) {
      inh[i].taken = 1;
      return inh[i].fd;
    }
  return 0;
}

int reload_inherited_loops(int *reuseport)
{
  int most = 0;
  *reuseport = 1;
  for (size_t i = 0; i < ninh; i++) {
    int count = 0;
    for (size_t j = 0; j < ninh; j++)
      count += !strcmp(inh[i].addr, inh[j].addr);
    most = count > most ? count : most;
    int on = 0;
    socklen_t len = sizeof(on);
    if (getsockopt(inh[i].fd, SOL_SOCKET, SO_REUSEPORT, &on, &len) != 0 || !on)
      *reuseport = 0;
  }
  return most;
}

void reload_close_unused(void)
{
  for (size_t i = 0; i < ninh; i++)
    if (!inh[i].taken) {
      log_warn("reload: inherited socket for %s (fd %d) is not in the database; closing it",
               inh[i].addr, inh[i].fd);
      close(inh[i].fd);
    }
  free(inh);
  inh = NULL;
  ninh = 0;
}

void reload_report_ready(void)
{
  if (ready_fd <= 0)
    return;
  static const char msg[] = "ready\n";
  ssize_t n;
  do
    n = write(ready_fd, msg, sizeof(msg) - 1);
  while (n < 0 && errno == EINTR);
  if (n != (ssize_t)sizeof(msg) - 1)
    log_warn("reload: cannot tell the old process we are ready: %s", strerror(errno));
  close(ready_fd);
  ready_fd = -1;
}

/* ---- the old process: starting the new one ---- */

typedef struct spawn_s {
  uv_process_t proc;
  uv_pipe_t pipe;
  uv_timer_t timer;
  int open_handles;
  int ready, exited, finished;
  char why[256];
  char buf[64];
  void (*done)(void *data, int ok, int pid, const char *why);
  void *data;
} spawn_t;

static void spawn_closed(uv_handle_t *h)
{
  spawn_t *sp = h->data;
  if (--sp->open_handles == 0)
    free(sp);
}

static void spawn_close(spawn_t *sp)
{
  uv_handle_t *hs[] = {(uv_handle_t *)&sp->proc, (uv_handle_t *)&sp->pipe,
                       (uv_handle_t *)&sp->timer};
  for (size_t i = 0; i < 3; i++)
    if (!uv_is_closing(hs[i]))
      uv_close(hs[i], spawn_closed);
}

/* Something went wrong before ready: make sure the new process is gone, then resume. */
static void spawn_give_up(spawn_t *sp, const char *why)
{
  if (sp->ready || sp->finished)
    return;
  if (!sp->why[0])
    snprintf(sp->why, sizeof(sp->why), "%s", why);
  if (sp->exited) {
    sp->finished = 1;
    int pid = sp->proc.pid;
    spawn_close(sp);
    sp->done(sp->data, 0, pid, sp->why);
  } else {
    uv_process_kill(&sp->proc, SIGKILL); /* exit_cb follows */
  }
}

static void on_spawn_exit(uv_process_t *p, int64_t status, int signum)
{
  spawn_t *sp = p->data;
  sp->exited = 1;
  if (sp->ready)
    return;
  char why[128];
  if (signum)
    snprintf(why, sizeof(why), "the new process was killed by signal %d before it was ready",
             signum);
  else
    snprintf(why, sizeof(why), "the new process exited with status %lld before it was ready",
             (long long)status);
  spawn_give_up(sp, why);
}

static void on_spawn_timeout(uv_timer_t *t)
{
  spawn_give_up(t->data, "the new process did not report ready within 30 s");
}

static void spawn_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
  spawn_t *sp = h->data;
  size_t used = strlen(sp->buf);
  *buf = uv_buf_init(sp->buf + used, (unsigned)(sizeof(sp->buf) - 1 - used));
}

static void on_spawn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  spawn_t *sp = s->data;
  if (n > 0) {
    buf->base[n] = '\0';
    if (strstr(sp->buf, "ready\n") && !sp->ready && !sp->finished) {
      sp->ready = 1;
      sp->finished = 1;
      uv_timer_stop(&sp->timer);
      uv_read_stop(s);
      int pid = sp->proc.pid;
      /* The new process runs on; closing our process handle only stops watching it. */
      spawn_close(sp);
      sp->done(sp->data, 1, pid, "");
    }
    return;
  }
  if (n < 0) /* it closed the pipe: its exit (or the timeout) follows and says why */
    uv_read_stop(s);
}

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
  if (a->ss_family != b->ss_family)
    return 0;
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
    return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
  return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, 16);
}

/*
 * Every listening socket of this process bound where listener l is: the main loop's and each
 * worker loop's SO_REUSEPORT sibling. Found through /proc/self/fd so the worker loops need not
 * be asked (and cannot race with us: nothing binds or closes a listener during a reload).
 */
static int collect_fds(mcp_listener_t *l, int **fds, size_t *nfds, char **names, size_t *nnames)
{
  struct sockaddr_storage want;
  memset(&want, 0, sizeof(want));
  if (mcp_listener_sockname(l, &want) != 0)
    return -1;
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return -1;
  int found = 0;
  for (struct dirent *e; (e = readdir(d));) {
    int fd = atoi(e->d_name);
    if (e->d_name[0] < '0' || e->d_name[0] > '9' || fd == dirfd(d))
      continue;
    int accepting = 0;
    socklen_t len = sizeof(accepting);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0 || !accepting)
      continue;
    struct sockaddr_storage got;
    memset(&got, 0, sizeof(got));
    len = sizeof(got);
    if (getsockname(fd, (struct sockaddr *)&got, &len) != 0 || !same_addr(&want, &got))
      continue;
    int *nf = realloc(*fds, (*nfds + 1) * sizeof(**fds));
    if (!nf)
      break;
    *fds = nf;
    (*fds)[(*nfds)++] = fd;
    /* The child sees it as descriptor 4 + index (0-2 stdio, 3 the ready pipe). */
    char item[CONFIG_ADDR_MAX + 16];
    int il = snprintf(item, sizeof(item), "%s%s=%zu", *nnames ? "," : "", mcp_listener_addr(l),
                      (size_t)4 + *nfds - 1);
    char *nn = realloc(*names, *nnames + (size_t)il + 1);
    if (!nn)
      break;
    *names = nn;
    memcpy(*names + *nnames, item, (size_t)il + 1);
    *nnames += (size_t)il;
    found++;
  }
  closedir(d);
  return found > 0 ? 0 : -1;
}

int reload_spawn(state_t *srv, const char *config_path,
                 void (*done)(void *data, int ok, int pid, const char *why), void *data, char *err,
                 size_t errlen)
{
  if (!exe_path[0]) {
    snprintf(err, errlen, "the path of the running executable is unknown");
    return -1;
  }
  int *fds = NULL;
  size_t nfds = 0, nnames = 0;
  char *names = NULL;
  for (size_t i = 0; i < srv->nlisteners; i++)
    if (collect_fds(srv->listeners[i], &fds, &nfds, &names, &nnames) != 0) {
      snprintf(err, errlen, "no listening socket found for %s",
               mcp_listener_addr(srv->listeners[i]));
      free(fds);
      free(names);
      return -1;
    }

  size_t nenv = 0;
  while (environ[nenv])
    nenv++;
  char **env = calloc(nenv + 3, sizeof(*env));
  uv_stdio_container_t *stdio = calloc(4 + nfds, sizeof(*stdio));
  spawn_t *sp = calloc(1, sizeof(*sp));
  char *fdvar = NULL;
  if (!env || !stdio || !sp || asprintf(&fdvar, "%s=%s", ENV_FDS, names ? names : "") < 0) {
    snprintf(err, errlen, "out of memory");
    free(env);
    free(stdio);
    free(sp);
    free(fds);
    free(names);
    return -1;
  }
  size_t k = 0;
  for (size_t i = 0; i < nenv; i++)
    if (strncmp(environ[i], ENV_FDS "=", sizeof(ENV_FDS)) &&
        strncmp(environ[i], ENV_READY "=", sizeof(ENV_READY)))
      env[k++] = environ[i];
  env[k++] = fdvar;
  env[k++] = ENV_READY "=3";

  sp->done = done;
  sp->data = data;
  uv_pipe_init(srv->loop, &sp->pipe, 0);
  uv_timer_init(srv->loop, &sp->timer);
  sp->pipe.data = sp->timer.data = sp->proc.data = sp;
  sp->open_handles = 2;
  for (int i = 0; i < 3; i++) {
    stdio[i].flags = UV_INHERIT_FD;
    stdio[i].data.fd = i;
  }
  stdio[3].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[3].data.stream = (uv_stream_t *)&sp->pipe;
  for (size_t i = 0; i < nfds; i++) {
    stdio[4 + i].flags = UV_INHERIT_FD;
    stdio[4 + i].data.fd = fds[i];
  }
  char *args[] = {exe_path, "server", "-c", (char *)config_path, NULL};
  uv_process_options_t opts = {
      .exit_cb = on_spawn_exit,
      .file = exe_path,
      .args = args,
      .env = env,
      .stdio_count = (int)(4 + nfds),
      .stdio = stdio,
  };
  int rc = uv_spawn(srv->loop, &sp->proc, &opts);
  free(env);
  free(fdvar);
  free(stdio);
  free(fds);
  free(names);
  if (rc != 0) {
    snprintf(err, errlen, "cannot start %s: %s", exe_path, uv_strerror(rc));
    uv_close((uv_handle_t *)&sp->proc, spawn_closed); /* uv_spawn initialised it */
    sp->open_handles++;
    spawn_close(sp);
    return -1;
  }
  sp->open_handles = 3;
  log_info("reload: started %s as pid %d with %zu inherited listening sockets", exe_path,
           sp->proc.pid, nfds);
  uv_read_start((uv_stream_t *)&sp->pipe, spawn_alloc, on_spawn_read);
  uv_timer_start(&sp->timer, on_spawn_timeout, RELOAD_READY_TIMEOUT_MS, 0);
  return 0;
}

/* ---- pid and status files ---- */

static void write_file(const char *db_path, const char *suffix, const char *text)
{
  char path[PATH_MAX + 16], tmp[PATH_MAX + 32];
  snprintf(path, sizeof(path), "%s%s", db_path, suffix);
  snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
  FILE *f = fopen(tmp, "we");
  if (!f || fputs(text, f) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
    log_warn("cannot write %s: %s", path, strerror(errno));
    unlink(tmp);
  }
}

void reload_pidfile_write(const char *db_path)
{
  char text[32];
  snprintf(text, sizeof(text), "%d\n", (int)getpid());
  write_file(db_path, ".pid", text);
}

static int read_pid(const char *path)
{
  FILE *f = fopen(path, "re");
  if (!f)
    return 0;
  int pid = 0;
  if (fscanf(f, "%d", &pid) != 1)
    pid = 0;
  fclose(f);
  return pid;
}

void reload_pidfile_remove(const char *db_path)
{
  char path[PATH_MAX + 16];
  snprintf(path, sizeof(path), "%s.pid", db_path);
  if (read_pid(path) == (int)getpid())
    unlink(path);
}

void reload_status_write(const char *db_path, const char *fmt, ...)
{
  char text[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(text, sizeof(text) - 1, fmt, ap);
  va_end(ap);
  size_t len = n < 0 ? 0 : (size_t)n < sizeof(text) - 1 ? (size_t)n : sizeof(text) - 2;
  text[len] = '\n'; /* room was kept for it */
  text[len + 1] = '\0';
  write_file(db_path, ".reload", text);
}

/* ---- mc-proxy reload ---- */

static const char reload_usage[] =
    "usage: mc-proxy reload [-c FILE] [--timeout SECONDS]\n"
    "\n"
    "FILE defaults to $MC_PROXY_CONFIG, else /srv/mc-proxy/mc-proxy.ini.\n"
    "Checks FILE as the server would, then asks the server using its database (PID from\n"
    "<database>.pid) to reload: a new process of the binary now on disk takes over the listening\n"
    "sockets and the database, the old one drains. Waits for the outcome (default 60 s).\n"
    "Exit status: 0 reloaded, 1 refused or failed (the old process keeps serving), 2 usage.\n"
    "\n"
    "  -c, --config FILE       the server's config (see mc-proxy.ini(5))\n"
    "      --timeout SECONDS   how long to wait for the outcome (default 60)\n"
    "  -h, --help              this help\n";

int cmd_reload(int argc, char **argv)
{
  static const struct option opts[] = {
      {"config", required_argument, NULL, 'c'},
      {"timeout", required_argument, NULL, 't'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *path = NULL;
  long timeout_s = 60;
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "c:t:h", opts, NULL)) != -1) {
    switch (ch) {
    case 'c':
      path = optarg;
      break;
    case 't':
      timeout_s = strtol(optarg, NULL, 10);
      if (timeout_s <= 0)
        return cli_usage_error("reload", "--timeout wants a positive number of seconds");
      break;
    case 'h':
      fputs(reload_usage, stdout);
      return EXIT_OK;
    default:
      return cli_usage_error("reload", "unknown option");
    }
  }
  if (optind < argc)
    return cli_usage_error("reload", "unexpected argument '%s'", argv[optind]);
  const char *env = getenv("MC_PROXY_CONFIG");
  if (!path && env && env[0])
    path = env;
  if (!path && access("/srv/mc-proxy/mc-proxy.ini", F_OK) == 0)
    path = "/srv/mc-proxy/mc-proxy.ini";
  if (!path)
    return cli_usage_error("reload", "-c FILE is required");

  config_t cfg;
  char err[1024];
  if (reload_validate(path, &cfg, err, sizeof(err)) != 0) {
    fprintf(stderr, "mc-proxy: reload refused, the server keeps running: %s\n", err);
    return EXIT_REFUSED;
  }
  char pidpath[PATH_MAX + 16], statpath[PATH_MAX + 16];
  snprintf(pidpath, sizeof(pidpath), "%s.pid", cfg.db_path);
  snprintf(statpath, sizeof(statpath), "%s.reload", cfg.db_path);
  config_free(&cfg);
  int pid = read_pid(pidpath);
  if (pid <= 0 || kill(pid, 0) != 0) {
    fprintf(stderr, "mc-proxy: no running server: %s names no live process\n", pidpath);
    return EXIT_REFUSED;
  }
  if (unlink(statpath) != 0 && errno != ENOENT) {
    fprintf(stderr, "mc-proxy: %s: %s\n", statpath, strerror(errno));
    return EXIT_REFUSED;
  }
  if (kill(pid, SIGHUP) != 0) {
    fprintf(stderr, "mc-proxy: cannot signal pid %d: %s\n", pid, strerror(errno));
    return EXIT_REFUSED;
  }
  for (long waited_ms = 0; waited_ms < timeout_s * 1000; waited_ms += 50) {
    FILE *f = fopen(statpath, "re");
    if (f) {
      char line[1024] = "";
      char *got = fgets(line, sizeof(line), f);
      fclose(f);
      if (got && strchr(line, '\n')) {
        line[strcspn(line, "\n")] = '\0';
        if (!strncmp(line, "ok ", 3)) {
          printf("reloaded: pid %d handed over to pid %s\n", pid, line + 3);
          return EXIT_OK;
        }
        fprintf(stderr, "mc-proxy: reload of pid %d %s\n", pid, line);
        return EXIT_REFUSED;
      }
    }
    if (kill(pid, 0) != 0 && read_pid(pidpath) == pid) {
      fprintf(stderr, "mc-proxy: pid %d exited during the reload\n", pid);
      return EXIT_REFUSED;
    }
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  fprintf(stderr, "mc-proxy: no outcome from pid %d within %ld s\n", pid, timeout_s);
  return EXIT_REFUSED;
}
