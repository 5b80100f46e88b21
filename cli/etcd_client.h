/*
 * etcd_client: the part of etcd's v3 API that cluster mode needs (KV.Range, KV.Txn and
 * Watch.Watch), spoken over gRPC core's C API with messages generated from proto/etcd/.
 *
 * Endpoints. A client holds one gRPC channel per endpoint ("http://HOST:PORT", or
 * "https://HOST:PORT" with the CA, certificate and key given in the options) and a current
 * endpoint shared by all calls. A call that cannot reach the current endpoint, or that the
 * endpoint answers "no leader" (every call asks etcd to require a leader), moves the current
 * endpoint on to the next one and tries again there, each endpoint once per call.
 *
 * Deadlines. Every unary attempt has one deadline (opts.timeout_ms, default 2 s) for connecting
 * and for the call, so a call returns within n_endpoints * timeout_ms plus a little; an endpoint
 * that is down costs its whole timeout once, after which calls start at the next one. The watch
 * stream has no deadline of its own but is checked for life: see etcd_watch_start.
 *
 * TLS. https:// endpoints use gRPC's TLS with the CA (ca_path, else the system roots) and an
 * optional client certificate; etcd's certificate must name the host or IP of the endpoint.
 *
 * Threads. etcd_client_range, etcd_client_get_prefix and etcd_client_txn block the calling
 * thread (never call them on a libuv loop thread); they may run on several threads at once, each
 * call on a completion queue of its own. A watch runs on a dedicated thread with its own
 * completion queue and hands every update to a callback on that thread; the callback owns the
 * update (free it with etcd_watch_update_free) and should only queue it and wake the consumer
 * (e.g. uv_async_send), because the same thread also drives the stream.
 *
 * Errors. 0 on success or one of the negative ETCD_E* codes below, with a one-line reason in
 * the caller's err buffer where there is one.
 *
 * Lifetime. etcd_client_open / etcd_client_close; every watch must be stopped before its
 * client is closed. The client calls grpc_init in open and grpc_shutdown in close.
 */
#ifndef MCP_ETCD_CLIENT_H
#define MCP_ETCD_CLIENT_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#define ETCD_EUNAVAILABLE (-ENOTCONN) /* no endpoint answered; nothing was done */
#define ETCD_EUNKNOWN (-ETIMEDOUT)    /* a Txn whose outcome is unknown (sent, no answer) */
#define ETCD_ECOMPACTED (-ESTALE)     /* the revision asked for was compacted away */
#define ETCD_EREFUSED (-EREMOTEIO)    /* etcd answered with an error (reason in err) */
#define ETCD_EINVAL (-EINVAL)         /* a bad endpoint, option or argument */
#define ETCD_ENOMEM (-ENOMEM)

#define ETCD_TIMEOUT_MS 2000
#define ETCD_MAX_ENDPOINTS 16

typedef struct etcd_client_s etcd_client_t;

typedef struct etcd_client_opts_s {
  const char *const *endpoints; /* n_endpoints URLs, http:// or https:// */
  size_t n_endpoints;
  const char *ca_path;   /* https: the CA that signed etcd's certificates (NULL: system roots) */
  const char *cert_path; /* https with client certificates: both or neither */
  const char *key_path;
  int timeout_ms; /* per unary attempt; 0 = ETCD_TIMEOUT_MS */
} etcd_client_opts_t;

/* Checks the options and creates the channels (which connect lazily). */
int etcd_client_open(const etcd_client_opts_t *opts, etcd_client_t **out, char *err, size_t errlen);
void etcd_client_close(etcd_client_t *c);

/* The endpoint calls go to now (as given in the options). Any thread. */
const char *etcd_client_endpoint(etcd_client_t *c);

/* ---- keys and values ---- */

/* A key-value pair copied out of a response: key and value are NUL-terminated (the lengths
 * exclude the NUL; etcd keys and values may hold NUL bytes, so use the lengths). */
typedef struct etcd_kv_s {
  char *key;
  size_t key_len;
  char *value;
  size_t value_len;
  int64_t create_revision;
  int64_t mod_revision; /* for a delete event: the revision of the delete */
  int64_t version;
} etcd_kv_t;

/* The result of a range: kvs in key order; revision is the store revision it was read at. */
typedef struct etcd_range_s {
  int64_t revision;
  etcd_kv_t *kvs;
  size_t n_kvs;
  int more;      /* 1 if a limit cut the result short */
  int64_t count; /* etcd_client_range: how many keys the range holds, whatever the limit */
} etcd_range_t;

/* Frees what a range result holds (not the struct). Safe on a zeroed struct. */
void etcd_range_release(etcd_range_t *r);

/* The range_end that makes [prefix, range_end) every key starting with prefix, written to buf
 * NUL-terminated (prefix_len + 1 bytes at most); returns its length (0 = "to the end of the
 * keyspace"). */
size_t etcd_prefix_end(const char *prefix, size_t prefix_len, char *buf);

/*
 * Range [key, range_end) (range_end NULL: the one key) at revision (0: the newest), at most
 * limit keys (0: no limit). Fills *out (release it with etcd_range_release). Retried on the
 * next endpoint when unreachable or leaderless. ETCD_ECOMPACTED when revision was compacted.
 */
int etcd_client_range(etcd_client_t *c, const char *key, const char *range_end, int64_t revision,
                      int64_t limit, etcd_range_t *out, char *err, size_t errlen);

/*
 * Every key under prefix, read in pages of page_size keys (0: 10,000) all at one revision (that
 * of the first page), so the result is one consistent snapshot however large the prefix is.
 * ETCD_ECOMPACTED if a compaction overtook the paging: read again.
 */
int etcd_client_get_prefix(etcd_client_t *c, const char *prefix, int64_t page_size,
                           etcd_range_t *out, char *err, size_t errlen);

/* ---- transactions ---- */

typedef enum etcd_cmp_result_e {
  ETCD_CMP_EQUAL = 0,
  ETCD_CMP_GREATER = 1,
  ETCD_CMP_LESS = 2,
  ETCD_CMP_NOT_EQUAL = 3,
} etcd_cmp_result_t;

typedef enum etcd_cmp_target_e {
  ETCD_TARGET_VERSION = 0, /* version 0 = the key does not exist */
  ETCD_TARGET_CREATE = 1,
  ETCD_TARGET_MOD = 2,
  ETCD_TARGET_VALUE = 3,
} etcd_cmp_target_t;

/*
 * "key's target <result> number (or value)". With range_end, the compare covers every key in
 * [key, range_end) and holds only when it holds for each of them; over a range with no key it
 * is made against an absent key (version, create and mod revision 0), so "VERSION EQUAL 0" over
 * a prefix's range holds exactly when nothing exists under the prefix. A VALUE compare over an
 * empty range never holds.
 */
typedef struct etcd_compare_s {
  const char *key;
  const char *range_end; /* NULL = the one key; etcd_prefix_end gives a prefix's */
  etcd_cmp_target_t target;
  etcd_cmp_result_t result;
  int64_t number;    /* VERSION, CREATE, MOD */
  const char *value; /* VALUE (NUL-terminated) */
} etcd_compare_t;

typedef enum etcd_op_type_e {
  ETCD_OP_PUT = 1,
  ETCD_OP_DELETE = 2,
  ETCD_OP_GET = 3,
} etcd_op_type_t;

typedef struct etcd_op_s {
  etcd_op_type_t type;
  const char *key;
  const char *range_end; /* DELETE and GET: NULL = the one key */
  const char *value;     /* PUT (NUL-terminated) */
} etcd_op_t;

typedef struct etcd_txn_s {
  const etcd_compare_t *compare;
  size_t n_compare;
  const etcd_op_t *success;
  size_t n_success;
  const etcd_op_t *failure;
  size_t n_failure;
} etcd_txn_t;

/* What a Txn did: which branch ran, the store revision after it, and one range result per GET
 * op of that branch, in order. Release with etcd_txn_release. */
typedef struct etcd_txn_result_s {
  int succeeded;
  int64_t revision;
  etcd_range_t *gets;
  size_t n_gets;
} etcd_txn_result_t;

void etcd_txn_release(etcd_txn_result_t *r);

/*
 * Runs one transaction. It moves on to the next endpoint only when the current one was not
 * reached or refused it for having no leader (nothing was applied); when it was sent and no
 * answer came, it returns ETCD_EUNKNOWN and the caller must find out (a Txn conditioned on
 * what it changes can simply be checked or retried).
 */
int etcd_client_txn(etcd_client_t *c, const etcd_txn_t *txn, etcd_txn_result_t *out, char *err,
                    size_t errlen);

/* ---- watch ---- */

typedef enum etcd_watch_kind_e {
  /* The stream is up on endpoint, watching from revision (the next one it will deliver). */
  ETCD_WATCH_CONNECTED = 1,
  /* Events, all of whole revisions, in revision order; revision = the last event's. */
  ETCD_WATCH_EVENTS = 2,
  /* Nothing under the prefix changed up to revision (a progress notification). */
  ETCD_WATCH_PROGRESS = 3,
  /* The stream broke (message says why); it keeps retrying, each endpoint in turn. Sent once per
   * outage, and at the start if the first attempt fails. */
  ETCD_WATCH_DISCONNECTED = 4,
  /* The revision to resume from was compacted (revision = the compact revision): events were
   * lost, so the caller must re-read the prefix and start a new watch. No more updates come. */
  ETCD_WATCH_COMPACTED = 5,
} etcd_watch_kind_t;

typedef struct etcd_event_s {
  int is_delete; /* 0: put (kv holds the new value); 1: delete (kv holds the key only) */
  etcd_kv_t kv;
} etcd_event_t;

/* One update; owned by the callback's receiver, freed with etcd_watch_update_free (any thread). */
typedef struct etcd_watch_update_s {
  etcd_watch_kind_t kind;
  int64_t revision;
  etcd_event_t *events; /* EVENTS */
  size_t n_events;
  char endpoint[128]; /* CONNECTED, DISCONNECTED */
  char message[256];  /* DISCONNECTED */
} etcd_watch_update_t;

void etcd_watch_update_free(etcd_watch_update_t *u);

typedef void (*etcd_watch_cb)(void *data, etcd_watch_update_t *u);

typedef struct etcd_watch_s etcd_watch_t;

/*
 * Watches every key under prefix from start_revision (inclusive; use the revision of the read
 * plus one) on a new thread. After a broken stream it reconnects (to the next endpoint, backing
 * off from 100 ms to 2 s) and resumes from the revision after the last one it delivered, so
 * nothing is missed or repeated. It asks for progress every progress_ms (0 = 1000) and treats a
 * stream that stays silent for three of those as broken. Returns 0, ETCD_EINVAL or ETCD_ENOMEM.
 */
int etcd_watch_start(etcd_client_t *c, const char *prefix, int64_t start_revision, int progress_ms,
                     etcd_watch_cb cb, void *data, etcd_watch_t **out);

/* Stops the stream and joins the thread: when it returns no callback is running or will run.
 * Never call it from the callback. */
void etcd_watch_stop(etcd_watch_t *w);

#endif
