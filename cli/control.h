/*
 * control: write-through changes to routes, firewall rules and limits.
 *
 * control_submit() is called on the loop thread. The request is validated there (against the
 * live state), then written to SQLite on a libuv work thread, one request at a time and each in
 * its own transaction, so neither the data plane nor the admin thread ever waits on the disk.
 * Only after the commit does the loop thread publish a new snapshot (routes / firewall) or the
 * new limit, then call done(). If the database write fails, memory is left unchanged.
 *
 * status passed to done(): 0, or MCP_ENOENT (unknown listener/route/rule), MCP_EINVAL /
 * MCP_ERANGE / MCP_ELOOP (bad argument), MCP_ENOGEOIP (country rule without geoip_db),
 * MCP_EEXIST (a listener that exists), a libuv bind error (UV_EADDRINUSE, UV_EACCES,
 * UV_EADDRNOTAVAIL: a listener that cannot be bound),
 * MCP_EBUSY (database busy or locked), MCP_EIO / MCP_ENOMEM (anything else). msg is a
 * human-readable explanation.
 */
#ifndef MCP_CLI_CONTROL_H
#define MCP_CLI_CONTROL_H

#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "state.h"

typedef struct control_s control_t;
typedef struct control_req_s control_req_t;

typedef enum control_op_e {
  CONTROL_ROUTE_ADD,
  CONTROL_ROUTE_REMOVE,
  CONTROL_RULE_ADD,
  CONTROL_RULE_REMOVE,
  CONTROL_SET_MAX_CONNECTIONS,
  CONTROL_LISTENER_ADD,
  CONTROL_LISTENER_REMOVE,
  CONTROL_LISTENER_UPDATE,
} control_op_t;

/* Which of control_req_t.settings a CONTROL_LISTENER_ADD/UPDATE gives (the rest: the listener's
 * current value for an update, the default for an add). */
enum {
  CONTROL_SET_MAX_CONNECTIONS_BIT = 1 << 0,
  CONTROL_SET_PROXY_PROTOCOL = 1 << 1,
  CONTROL_SET_PROXY_FROM = 1 << 2,
  CONTROL_SET_FALLBACK = 1 << 3,
  CONTROL_SET_RATE_COUNT = 1 << 4,
  CONTROL_SET_RATE_PERIOD = 1 << 5,
  CONTROL_SET_MAX_PER_CLIENT = 1 << 6,
};

struct control_req_s {
  /* Filled by the caller. Strings are copied in; they need not be normalised. */
  control_op_t op;
  char listener[CONFIG_ADDR_MAX];
  char hostname[MCP_HOSTNAME_MAX + 2];
  char backend[MCP_BACKEND_MAX + 2];
  mcp_firewall_type_t rule_type;
  char rule_value[MCP_FIREWALL_VALUE_MAX + 16];
  int64_t max_connections;
  int send_proxy; /* CONTROL_ROUTE_ADD: 0 none, 1 v1, 2 v2 */
  /*
   * CONTROL_LISTENER_ADD/UPDATE: the settings given (set_mask says which). The rate limit comes
   * as two int64 so that negative or huge values are refused, not wrapped.
   */
  listener_settings_t settings;
  int64_t rate_count, rate_period_ms, max_per_client;
  unsigned set_mask;
  /* Called once on the loop thread with the outcome; the request is the caller's again. */
  void (*done)(control_req_t *req, int status, const char *msg);
  void *data;

  /* Private to control.c. */
  control_t *ctl;
  mcp_listener_t *pending; /* CONTROL_LISTENER_ADD: bound on the main loop, not yet saved */
  int64_t revision;        /* cluster mode: the etcd revision the change was committed at */
  int status;
  char msg[512];
  control_req_t *next;
};

/*
 * Creates the queue of changes to st (which must outlive it). Returns NULL when out of memory.
 * Loop thread (st->loop).
 */
control_t *control_new(state_t *st);

/*
 * Cluster mode (cluster.h): from now on changes are validated here as before, then written to
 * etcd instead of the database (cluster_write.h), and answered once this instance has applied
 * them through its watch; while etcd is unreachable they are refused with MCP_EBUSY at once.
 * A listener is bound when the change comes back from etcd, not before.
 */
struct cluster_s;
void control_set_cluster(control_t *ctl, struct cluster_s *cluster);

/* Queues req (owned by the caller until done). Loop thread only. */
void control_submit(control_t *ctl, control_req_t *req);

/*
 * Shutdown: refuses (status MCP_EBUSY, nothing written) every queued request that has not
 * started and every later one. A request already being written completes normally, so the
 * server must keep its loop and listeners alive while control_busy() says so. Loop thread.
 */
void control_stop(control_t *ctl);

/* 1 while a request is being written or published to the worker loops, else 0. */
int control_busy(const control_t *ctl);

/* Frees ctl. It must not be busy (control_stop, then run the loop until control_busy is 0). */
void control_free(control_t *ctl);

#endif
