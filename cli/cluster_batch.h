/*
 * cluster_batch: one batch of cluster mode's sync (cluster.h) — a full read of the prefix or
 * one watch update — as items, and the work-thread steps on it: parsing etcd's keys and values
 * into items, and writing them to the database in one transaction with the batch's revision.
 * The loop-thread steps (binding listeners, applying in memory) are in cluster.c.
 */
#ifndef MCP_CLI_CLUSTER_BATCH_H
#define MCP_CLI_CLUSTER_BATCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cluster_values.h"
#include "config.h"
#include "etcd_client.h"
#include "mcproxy/mcproxy.h"

typedef enum item_kind_e {
  ITEM_LISTENER = CLUSTER_LISTENER,
  ITEM_ROUTE = CLUSTER_ROUTE,
  ITEM_FIREWALL = CLUSTER_FIREWALL,
  ITEM_RESET_FIREWALL, /* full read: the firewall starts empty */
  ITEM_DROP_OTHERS,    /* full read: listeners it does not name go */
  ITEM_RESET_ROUTES,   /* full read: this listener's route table starts empty */
} item_kind_t;

/* One change, parsed and checked as far as it can be without the live state. */
typedef struct item_s {
  item_kind_t kind;
  int is_delete;
  int skip;                        /* reported and skipped: nothing of it is written or applied */
  char listener[CLUSTER_ADDR_MAX]; /* LISTENER, ROUTE, RESET_ROUTES: canonical */
  char *name;                      /* ROUTE: hostname; FIREWALL: canonical value */
  char *backend;                   /* ROUTE put: canonical */
  int send_proxy;                  /* ROUTE put */
  mcp_firewall_type_t fw_type;     /* FIREWALL */
  listener_settings_t *settings;   /* LISTENER put */
  mcp_listener_t *pending;         /* LISTENER put of a new address: bound, not yet added */
} item_t;

typedef enum batch_kind_e {
  BATCH_READ = 1,   /* read the whole prefix and replace everything */
  BATCH_EVENTS = 2, /* watch updates: those that queued up while the previous batch ran */
} batch_kind_t;

typedef struct batch_s {
  batch_kind_t kind;
  etcd_watch_update_t **updates; /* EVENTS, in order */
  size_t nupdates, updates_cap;
  int64_t revision; /* the revision the database and memory reflect after it */
  size_t nkeys;     /* READ: how many keys the prefix held */
  item_t *items;
  size_t nitems;
  int error;     /* a step failed as a whole (MCP_E* / ETCD_E*): retry later */
  char msg[512]; /* why */
  uint64_t nskipped;
  char last_skip[256];
  /* Filled on the loop before the write: the addresses of our own listeners after this batch
   * (for the loop check of backends and fallbacks), and for a full read the listeners it drops. */
  struct sockaddr_storage *self;
  size_t nself;
  char (*drop)[CLUSTER_ADDR_MAX];
  size_t ndrop, drop_done;
  /* The apply step's place, and what it has changed but not yet published (cluster.c). */
  size_t cursor;
  struct pending_routes_s *routes;
  size_t nroutes, routes_cap;
  mcp_firewall_t *fw;
  int parsed;  /* parse and bind are done: a retry goes straight to the write */
  void *owner; /* the cluster_t it belongs to */
  struct batch_s *next;
} batch_t;

/* What the work-thread steps need besides the batch. Read-only while a step runs. */
typedef struct batch_env_s {
  etcd_client_t *etcd;
  const char *prefix;
  const char *source; /* the sync_state key: "etcd:" + prefix */
  mcp_store_t *store;
  int has_geoip;
} batch_env_t;

/*
 * Work thread. For a full read, fetches the whole prefix first (an error in b->error and
 * b->msg). Then turns the keys and values into items; one that does not parse or check out is
 * reported and kept as a skipped item.
 */
void batch_parse(const batch_env_t *env, batch_t *b);

/*
 * Work thread. Writes the items that are not skipped, and the revision, in one transaction (a
 * full read clears everything first). An item the database refuses (a route for a listener it
 * lacks) or that loops to b->self is reported and skipped; a failure of the database itself
 * rolls everything back and sets b->error.
 */
void batch_write(const batch_env_t *env, batch_t *b);

/* A listener value as our settings, checked as the config file checks them. 0 or -1 (err). */
int cluster_settings_from_value(const cluster_listener_t *in, listener_settings_t *s, char *err,
                                size_t errlen);

/* Frees b and what its items hold (listeners still pending included). Loop thread. */
void batch_free(batch_t *b);

#endif
