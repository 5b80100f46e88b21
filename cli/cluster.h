/*
 * cluster: cluster mode's sync. With a [cluster] section the instance's listeners, settings,
 * routes and firewall rules follow the keys under an etcd prefix (docs/SCALING.md; the keys and
 * values are cluster_values.h's). This module reads them and keeps the database and memory in
 * step; admin changes are written to etcd by cluster_write.h and wait here until applied.
 *
 * The pipeline. Changes arrive as batches, applied one at a time in revision order:
 *   - a full read of the prefix (at the first start, and when the revision to resume from was
 *     compacted away), which replaces the whole state;
 *   - one update of the watch (the events of one or more whole revisions).
 * Each batch goes through four steps: parse (work thread; a full read also fetches there),
 * bind the listeners it adds (loop), write the database in one transaction together with the
 * batch's revision (work thread), then apply it in memory and publish it to the worker loops
 * (loop). A value that does not parse, a route for a listener that does not exist, a listener
 * that cannot be bound, a route to one of our own listeners: reported, counted and skipped,
 * never half-applied; the rest of the batch goes on. The stored revision makes a restart resume
 * where it stopped (a full read only when that revision was compacted).
 *
 * Threads. The watch runs on its own thread (etcd_client.h) and only queues updates for the
 * loop (a uv_async). Database writes and full reads run on libuv work threads, one at a time;
 * nothing else writes the database in cluster mode (control.c sends admin changes to etcd).
 * Every function here is called on the loop thread.
 */
#ifndef MCP_CLI_CLUSTER_H
#define MCP_CLI_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "state.h"

typedef struct cluster_s cluster_t;
struct etcd_client_s;

/* What status, GetStatus and the metrics show. */
typedef struct cluster_status_s {
  int connected;            /* the watch stream is up (or a full read just succeeded) */
  char endpoint[128];       /* the endpoint in use, or the last one tried */
  int64_t since_unix;       /* when connected last changed */
  int64_t applied_revision; /* the revision the database and memory reflect */
  uint64_t skipped_total;   /* values reported and skipped since start */
  char last_error[256];     /* why the last disconnect or skip happened, "" if none */
} cluster_status_t;

/*
 * Opens the etcd client for st->cfg's [cluster] section and starts syncing: from the revision
 * stored in st->store for this prefix, or with a full read when there is none. Returns 0, or -1
 * with a message in err (a bad endpoint or TLS file; an unreachable etcd is not an error).
 */
int cluster_start(state_t *st, cluster_t **out, char *err, size_t errlen);

/*
 * Stops syncing: the watch ends, no new batch starts, and every admin change still waiting
 * (cluster_wait) is answered. A batch being written completes: wait while cluster_busy().
 */
void cluster_stop(cluster_t *c);

/* Starts syncing again after cluster_stop (a reload that did not happen), from the database. */
void cluster_resume(cluster_t *c);

/* 1 while a batch is being read, written or published. */
int cluster_busy(const cluster_t *c);

/* Frees c (stopped and not busy). NULL is fine. */
void cluster_free(cluster_t *c);

void cluster_get_status(const cluster_t *c, cluster_status_t *out);

/* An etcd client for cfg's [cluster] section (endpoints, TLS files): 0, or -1 with err. Any
 * thread; also used by the cluster command. */
int cluster_etcd_open(const config_t *cfg, struct etcd_client_s **out, char *err, size_t errlen);

/* The etcd client and the key prefix, for writing admin changes (cluster_write.h). */
struct etcd_client_s *cluster_etcd(cluster_t *c);
const char *cluster_prefix(const cluster_t *c);

/*
 * Calls done(data, 0) once this instance has applied revision (at once when it has), or
 * done(data, MCP_EBUSY) with a reason in msg when it has not within CLUSTER_WAIT_MS or syncing
 * stops first. msg (msglen bytes) must live until done.
 */
#define CLUSTER_WAIT_MS 10000
void cluster_wait(cluster_t *c, int64_t revision, void (*done)(void *data, int status), void *data,
                  char *msg, size_t msglen);

#endif
