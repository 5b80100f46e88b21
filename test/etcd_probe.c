/*
 * etcd_probe: a test-only command line over cli/etcd_client.h, driven by
 * test/integration/test_etcd_client.py against a real etcd cluster.
 *
 *   etcd_probe range  ENDPOINTS PREFIX                 -> "revision R" then "kv KEY VALUE MOD"
 *   etcd_probe create ENDPOINTS KEY VALUE              put if absent -> "succeeded|failed R MOD"
 *   etcd_probe swap   ENDPOINTS KEY VALUE MOD_REVISION put if unchanged since MOD_REVISION
 *   etcd_probe watch  ENDPOINTS PREFIX START [PROG_MS] one line per update until stdin closes
 *   etcd_probe create-many ENDPOINTS PREFIX N          N put-if-absent Txns from one client, one
 *                                                      line each: "ok KEY REV", "exists KEY",
 *                                                      "unavailable KEY", "unknown KEY", "error
 * KEY"
 *
 * ENDPOINTS is a comma-separated list of http:// or https:// URLs; for https the environment
 * may name MCP_ETCD_CA, MCP_ETCD_CERT and MCP_ETCD_KEY. Exit 0 on success, 1 on a failed call
 * (its error on stderr), 2 on bad usage, 3 after a watch reported compaction.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "etcd_client.h"

static int open_client(char *list, etcd_client_t **c)
{
  static const char *eps[ETCD_MAX_ENDPOINTS];
  char err[256];
  size_t n = 0;

  for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok && n < ETCD_MAX_ENDPOINTS;
       tok = strtok_r(NULL, ",", &save))
    eps[n++] = tok;
  etcd_client_opts_t opts = {.endpoints = eps,
                             .n_endpoints = n,
                             .ca_path = getenv("MCP_ETCD_CA"),
                             .cert_path = getenv("MCP_ETCD_CERT"),
                             .key_path = getenv("MCP_ETCD_KEY"),
                             .timeout_ms = 2000};
  if (etcd_client_open(&opts, c, err, sizeof(err)) != 0) {
    fprintf(stderr, "etcd_probe: %s\n", err);
    return -1;
  }
  return 0;
}

static int cmd_range(etcd_client_t *c, const char *prefix)
{
  etcd_range_t r;
  char err[512];
  /* Small pages so the paging path is exercised as well. */
  int rc = etcd_client_get_prefix(c, prefix, 2, &r, err, sizeof(err));
  if (rc) {
    fprintf(stderr, "etcd_probe: range: %s (%d)\n", err, rc);
    return 1;
  }
  printf("revision %" PRId64 "\n", r.revision);
  for (size_t i = 0; i < r.n_kvs; i++)
    printf("kv %s %s %" PRId64 "\n", r.kvs[i].key, r.kvs[i].value, r.kvs[i].mod_revision);
  etcd_range_release(&r);
  return 0;
}

/* Puts key=value if the compare holds; on failure reads the key back in the same Txn. */
static int cmd_txn(etcd_client_t *c, const char *key, const char *value, const etcd_compare_t *cmp)
{
  etcd_op_t put = {.type = ETCD_OP_PUT, .key = key, .value = value};
  etcd_op_t get = {.type = ETCD_OP_GET, .key = key};
  etcd_txn_t txn = {.compare = cmp,
                    .n_compare = 1,
                    .success = &put,
                    .n_success = 1,
                    .failure = &get,
                    .n_failure = 1};
  etcd_txn_result_t r;
  char err[512];
  int rc = etcd_client_txn(c, &txn, &r, err, sizeof(err));
  if (rc) {
    fprintf(stderr, "etcd_probe: txn: %s (%d)\n", err, rc);
    return 1;
  }
  int64_t mod = r.n_gets && r.gets[0].n_kvs ? r.gets[0].kvs[0].mod_revision : r.revision;
  printf("%s %" PRId64 " %" PRId64 "\n", r.succeeded ? "succeeded" : "failed", r.revision, mod);
  etcd_txn_release(&r);
  return 0;
}

/* One long-lived client, many conditioned writes: how failover classifies each outcome. */
static int cmd_create_many(etcd_client_t *c, const char *prefix, int n)
{
  char key[512], err[512];

  for (int i = 0; i < n; i++) {
    snprintf(key, sizeof(key), "%s%05d", prefix, i);
    etcd_compare_t absent = {.key = key, .target = ETCD_TARGET_VERSION, .result = ETCD_CMP_EQUAL};
    etcd_op_t put = {.type = ETCD_OP_PUT, .key = key, .value = "v"};
    etcd_txn_t txn = {.compare = &absent, .n_compare = 1, .success = &put, .n_success = 1};
    etcd_txn_result_t r;
    int rc = etcd_client_txn(c, &txn, &r, err, sizeof(err));
    if (rc == 0) {
      if (r.succeeded)
        printf("ok %s %" PRId64 "\n", key, r.revision);
      else
        printf("exists %s\n", key);
      etcd_txn_release(&r);
    } else if (rc == ETCD_EUNAVAILABLE) {
      printf("unavailable %s\n", key);
      fprintf(stderr, "%s: %s\n", key, err);
    } else if (rc == ETCD_EUNKNOWN) {
      printf("unknown %s\n", key);
      fprintf(stderr, "%s: %s\n", key, err);
    } else {
      printf("error %s %d\n", key, rc);
      fprintf(stderr, "%s: %s\n", key, err);
    }
  }
  return 0;
}

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t out_cond = PTHREAD_COND_INITIALIZER;
static int compacted;

/* Runs on the watch thread: a real consumer would queue u and wake its loop instead. */
static void on_update(void *data, etcd_watch_update_t *u)
{
  pthread_mutex_lock(&out_lock);
  switch (u->kind) {
  case ETCD_WATCH_CONNECTED:
    printf("connected %" PRId64 " %s\n", u->revision, u->endpoint);
    break;
  case ETCD_WATCH_EVENTS:
    for (size_t i = 0; i < u->n_events; i++)
      printf("event %s %s %s %" PRId64 "\n", u->events[i].is_delete ? "delete" : "put",
             u->events[i].kv.key, u->events[i].is_delete ? "-" : u->events[i].kv.value,
             u->events[i].kv.mod_revision);
    break;
  case ETCD_WATCH_PROGRESS:
    printf("progress %" PRId64 "\n", u->revision);
    break;
  case ETCD_WATCH_DISCONNECTED:
    printf("disconnected %" PRId64 " %s %s\n", u->revision, u->endpoint, u->message);
    break;
  case ETCD_WATCH_COMPACTED:
    printf("compacted %" PRId64 "\n", u->revision);
    compacted = 1;
    pthread_cond_broadcast(&out_cond);
    break;
  }
  fflush(stdout);
  pthread_mutex_unlock(&out_lock);
  etcd_watch_update_free(u);
}

/* Waits for stdin to close (the test's way of saying stop); a compaction also ends the run. */
static void *stdin_waiter(void *arg)
{
  char buf[256];
  while (read(0, buf, sizeof(buf)) > 0)
    ;
  pthread_mutex_lock(&out_lock);
  pthread_cond_broadcast(&out_cond);
  *(int *)arg = 1;
  pthread_mutex_unlock(&out_lock);
  return NULL;
}

static int cmd_watch(etcd_client_t *c, const char *prefix, int64_t start, int progress_ms)
{
  etcd_watch_t *w;
  pthread_t t;
  int eof = 0;

  if (etcd_watch_start(c, prefix, start, progress_ms, on_update, NULL, &w) != 0) {
    fprintf(stderr, "etcd_probe: cannot start the watch\n");
    return 1;
  }
  pthread_create(&t, NULL, stdin_waiter, &eof);
  pthread_detach(t);
  pthread_mutex_lock(&out_lock);
  while (!eof && !compacted)
    pthread_cond_wait(&out_cond, &out_lock);
  int rc = compacted ? 3 : 0;
  pthread_mutex_unlock(&out_lock);
  etcd_watch_stop(w);
  return rc;
}

int main(int argc, char **argv)
{
  etcd_client_t *c;
  int rc = 2;

  if (argc < 4) {
    fprintf(stderr, "usage: etcd_probe range|create|swap|watch ENDPOINTS ARGS...\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (open_client(argv[2], &c) != 0)
    return 1;
  if (!strcmp(argv[1], "range") && argc == 4) {
    rc = cmd_range(c, argv[3]);
  } else if (!strcmp(argv[1], "create") && argc == 5) {
    etcd_compare_t absent = {
        .key = argv[3], .target = ETCD_TARGET_VERSION, .result = ETCD_CMP_EQUAL, .number = 0};
    rc = cmd_txn(c, argv[3], argv[4], &absent);
  } else if (!strcmp(argv[1], "swap") && argc == 6) {
    etcd_compare_t same = {.key = argv[3],
                           .target = ETCD_TARGET_MOD,
                           .result = ETCD_CMP_EQUAL,
                           .number = strtoll(argv[5], NULL, 10)};
    rc = cmd_txn(c, argv[3], argv[4], &same);
  } else if (!strcmp(argv[1], "create-many") && argc == 5) {
    rc = cmd_create_many(c, argv[3], atoi(argv[4]));
  } else if (!strcmp(argv[1], "watch") && (argc == 5 || argc == 6)) {
    rc = cmd_watch(c, argv[3], strtoll(argv[4], NULL, 10), argc == 6 ? atoi(argv[5]) : 0);
  } else {
    fprintf(stderr, "etcd_probe: bad arguments for %s\n", argv[1]);
  }
  etcd_client_close(c);
  return rc;
}
