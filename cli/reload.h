/*
 * reload: the hand-over from a running server to a new process of the binary now on disk
 * (SIGHUP, `mc-proxy reload`, systemctl reload). See docs/RUNBOOK.md "Reload" for the steps.
 *
 * The old process validates the config, stops its admin server, releases the database lock and
 * starts `EXE server -c CONFIG` with every listening socket of every loop inherited (descriptors
 * listed in MC_PROXY_LISTEN_FDS as "addr=fd,addr=fd,...") and the write end of a ready pipe
 * (MC_PROXY_READY_FD). The new process adopts the sockets (never binding them again), opens the
 * store, starts its admin server and writes "ready" on the pipe; the old one then stops
 * accepting and drains. If the new process dies or stays silent, the old one resumes.
 *
 * Files next to the database: "<db>.pid" holds the serving process's PID (written once it is
 * ready); "<db>.reload" holds the outcome of the last reload ("ok PID" or "failed: why").
 */
#ifndef MCP_CLI_RELOAD_H
#define MCP_CLI_RELOAD_H

#include <stddef.h>
#include <uv.h>

#include "config.h"
#include "state.h"

/* The new process gets this long to report ready before the old one kills it and resumes. */
#define RELOAD_READY_TIMEOUT_MS 30000

/* `mc-proxy reload`: main.c. */
int cmd_reload(int argc, char **argv);

/* Remembers the path of the running executable (call once at start, before any upgrade). */
void reload_exe_init(void);

/*
 * Loads the config at path and checks what `mc-proxy check` checks that the server depends on
 * (the admin certificates, the GeoIP database). Returns 0 with *cfg filled (config_free it) or
 * -1 with err set.
 */
int reload_validate(const char *path, config_t *cfg, char *err, size_t errlen);

/* ---- the new process ---- */

/* Reads and removes the inherited-socket variables. Returns 1 when started by a reload. */
int reload_inherit_init(void);
/* The next inherited socket for addr (canonical text) not yet taken, or 0 for none. */
int reload_take_fd(const char *addr);
/*
 * The most sockets inherited for one address (0 when not started by a reload); *reuseport is
 * set to 0 if any inherited socket lacks SO_REUSEPORT.
 */
int reload_inherited_loops(int *reuseport);
/* Closes the inherited sockets nothing took (logged); call once every loop has its listeners. */
void reload_close_unused(void);
/* Tells the old process this one serves now ("ready" on the pipe); no-op if not inherited. */
void reload_report_ready(void);

/* ---- the old process ---- */

/*
 * Starts the new process. done is called once on the loop thread: ok 1 once it is ready, or
 * ok 0 with why after it has exited (killed first if it stayed silent). Returns 0, or -1 with
 * err set (then done is never called).
 */
int reload_spawn(state_t *srv, const char *config_path,
                 void (*done)(void *data, int ok, int pid, const char *why), void *data, char *err,
                 size_t errlen);

/* "<db>.pid": written by the ready server, removed at exit only if it still names this one. */
void reload_pidfile_write(const char *db_path);
void reload_pidfile_remove(const char *db_path);
/* "<db>.reload": the outcome of the last reload, for `mc-proxy reload`. */
void reload_status_write(const char *db_path, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
