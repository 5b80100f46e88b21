/*
 * metrics: the server's counters and the `[metrics] addr` endpoint's render (see
 * docs/METRICS.md for the building blocks and the design).
 *
 * Counting. metrics_conn_end() runs in the server's on_conn_end, on the loop thread the
 * connection lived on, once per connection. Each loop thread has its own block of counters per
 * listener address (created by that thread on its first connection there, never freed while
 * the process runs) and writes it with relaxed atomic stores only: no lock, no shared cache
 * line. Readers on other threads (the HTTP thread scraping, GetStatus on the main loop) sum
 * every loop's blocks with relaxed loads.
 *
 * Listener labels, route counts, active connections and the firewall rule count come from a
 * snapshot the main loop refreshes every half second and when it starts or drains (a plain
 * copy behind a mutex the HTTP thread holds only while copying it), so a scrape never reads a
 * loop's private state and never waits for a loop.
 *
 * The counters exist with or without [metrics]: `mc-proxy status` shows them too.
 */
#ifndef MCP_CLI_METRICS_H
#define MCP_CLI_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcproxy/conn.h"
#include "state.h"

/* Outcome slots kept per listener; mcp_conn_outcome_name() names the ones that exist. */
#define METRICS_MAX_OUTCOMES 24

/* One listener's totals over every loop (GetStatus). */
typedef struct metrics_totals_s {
  uint64_t outcome[METRICS_MAX_OUTCOMES]; /* indexed by mcp_conn_outcome_t */
  uint64_t bytes_in, bytes_out;
} metrics_totals_t;

/* Any loop thread, from on_conn_end: counts one ended connection. */
void metrics_conn_end(const mcp_conn_record_t *rec);

/* Sums the counters of the listener named addr over every loop. Any thread. */
void metrics_listener_totals(const char *addr, metrics_totals_t *out);

/* The number of outcomes the library names (the valid indexes of metrics_totals_t.outcome). */
size_t metrics_outcome_count(void);

/* Main loop: counts one admin change (a method that is not Get... or List...) and its code. */
void metrics_admin_change(const char *method, int grpc_code);

/*
 * Main loop. Starts the HTTP endpoint on addr (not yet serving: /healthz 503) and the snapshot
 * refresh on srv->loop. Returns 0, or -1 with a message in err (bad address, port in use).
 */
int metrics_start(state_t *srv, const char *addr, char *err, size_t errlen);

/* Main loop: /healthz 200 (serving) or 503 (draining); also refreshes the snapshot. */
void metrics_set_serving(bool serving);

/* Whether the server is serving (for gRPC health); true until draining starts. An atomic read:
 * any thread (the admin server's completion-queue thread asks). */
bool metrics_serving(void);

/*
 * Cluster mode's state for mcproxy_cluster_connected, _connected_since_seconds (when connected
 * last changed), _applied_revision and _skipped_values_total (absent until the first call). Any thread; cluster.c calls it on each
 * change.
 */
void metrics_cluster(bool connected, int64_t since_unix, int64_t applied_revision,
                     uint64_t skipped_total);

/* Main loop: stops the endpoint and the refresh. Safe when never started. */
void metrics_stop(void);

#endif
