/*
 * workers: extra data-plane threads for `[proxy] workers = N`.
 *
 * The main loop is worker 0: it owns srv->listeners and all control state. Workers 1..N-1 each
 * run a uv loop of their own on a thread of their own, with one listener per address bound with
 * SO_REUSEPORT next to the main loop's (the kernel spreads new connections over them) and
 * sharing its counters, so max_connections holds exactly across all loops.
 *
 * Workers never read the main loop's state. The main loop sends them messages (a mutex-guarded
 * queue and a uv_async): "publish these route tables and this firewall", "stop accepting",
 * "close every connection", "exit". Each message carries its own references to the snapshots it
 * publishes. All functions here are called on the main loop thread.
 */
#ifndef MCP_CLI_WORKERS_H
#define MCP_CLI_WORKERS_H

#include <stddef.h>

#include "state.h"

/*
 * Starts n - 1 worker threads (nothing when n <= 1). srv->listeners must exist, have been created
 * with reuseport when n > 1, and be listening. Returns 0 or -1 with a message in err.
 */
int workers_start(state_t *srv, int n, char *err, size_t errlen);

/*
 * Sends every worker the main loop's current route tables and firewall; done(data, 0) runs on
 * the main loop once every worker has applied them (at once when there are no workers), or
 * done(data, MCP_ENOMEM) at once when the messages could not be made (nothing was sent).
 */
void workers_publish(state_t *srv, void (*done)(void *data, int status), void *data);

/*
 * A listener added to srv at index (srv->listeners[index], started): every worker binds its own
 * socket on the address (SO_REUSEPORT, sharing the counters) with the current routes and
 * firewall. done(data, status) once every worker has tried: 0, or the first worker's error.
 */
void workers_add_listener(state_t *srv, size_t index, void (*done)(void *data, int status),
                          void *data);

/*
 * The listener at index is being removed from srv: every worker stops accepting on it and
 * drops it from its table; its established connections run on, and the listener is freed when
 * the address has none left. Call before srv's own table drops it. done as above.
 */
void workers_remove_listener(state_t *srv, size_t index, void (*done)(void *data, int status),
                             void *data);

/* Tells every worker to stop accepting (active connections go on). */
void workers_stop_accepting(state_t *srv);

/* Tells every worker to close all its connections now. */
void workers_close_connections(state_t *srv);

/*
 * Frees the workers' listeners, ends their loops and joins their threads. The last of their
 * memory goes with the close callback of a main-loop handle: run the main loop once more after.
 */
void workers_stop(state_t *srv);

/*
 * The default number of loops (workers = 0): the CPUs this process may run on
 * (sched_getaffinity), capped by the cgroup v2 CPU quota of its cgroup or any parent
 * (cpu.max, quota / period rounded up); at least 1. Reads /proc and /sys; main thread, at start.
 */
int workers_default_count(void);

/*
 * The smallest CPU cap (ceil(quota / period)) of the cgroup v2 cpu.max files on the way from the
 * process's group (the "0::PATH" line of proc_cgroup, e.g. "/proc/self/cgroup") up to the root
 * mounted at cgroup_root (e.g. "/sys/fs/cgroup"); 0 when there is none. Exposed for tests.
 */
int workers_cgroup_cpu_limit(const char *cgroup_root, const char *proc_cgroup);

#endif
