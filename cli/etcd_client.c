/*
 * etcd_client: channels, credentials, endpoint failover and one unary call. See etcd_client.h;
 * the Range and Txn messages are built and read in etcd_kv.c, the watch stream lives in
 * etcd_watch.c.
 *
 * Each unary attempt is one batch (send metadata, message and half-close; receive metadata,
 * message and status) on a completion queue of its own, waited for with the attempt's deadline
 * plus a margin, like cli/admin_client.c.
 */
#include "etcd_client_internal.h"
#include "files.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "etcd/api/etcdserverpb/rpc.pb-c.h"

/* Credential files are small; anything bigger is not one. */
/* A page of 10,000 routes is about a megabyte; leave room for big values. */
#define REPLY_MAX (256 << 20)

/* gRPC's own log lines would interleave with ours on stderr. */
static void quiet_log(gpr_log_func_args *args) {}

/* ---- opening ----------------------------------------------------------------------------- */

/*
 * "http://HOST:PORT" or "https://HOST:PORT" (an optional trailing '/') into a gRPC target:
 * IP literals as ipv4:/ipv6: targets (no resolver involved), names through DNS.
 */
static int endpoint_target(const char *url, int *tls, char *target, size_t len)
{
  const char *hp;
  char host[256];

  if (!strncmp(url, "http://", 7)) {
    *tls = 0;
    hp = url + 7;
  } else if (!strncmp(url, "https://", 8)) {
    *tls = 1;
    hp = url + 8;
  } else {
    return ETCD_EINVAL;
  }
  size_t hlen = strcspn(hp, "/");
  if (hp[hlen] && strcmp(hp + hlen, "/") != 0)
    return ETCD_EINVAL;
  if (hlen == 0 || hlen >= sizeof(host))
    return ETCD_EINVAL;
  memcpy(host, hp, hlen);
  host[hlen] = '\0';
  const char *colon = strrchr(host, ':');
  if (!colon || colon == host || !colon[1] ||
      strspn(colon + 1, "0123456789") != strlen(colon + 1) || atoi(colon + 1) < 1 ||
      atoi(colon + 1) > 65535)
    return ETCD_EINVAL;
  int n;
  if (host[0] == '[')
    n = snprintf(target, len, "ipv6:%s", host);
  else if (strspn(host, "0123456789.:") == hlen)
    n = snprintf(target, len, "ipv4:%s", host);
  else
    n = snprintf(target, len, "dns:///%s", host);
  return n > 0 && (size_t)n < len ? 0 : ETCD_EINVAL;
}

static grpc_channel_credentials *make_creds(const etcd_client_opts_t *opts, int tls, char *err,
                                            size_t errlen)
{
  char *ca = NULL, *cert = NULL, *key = NULL;
  grpc_channel_credentials *creds = NULL;

  if (!tls)
    return grpc_insecure_credentials_create();
  if (!opts->cert_path != !opts->key_path) {
    snprintf(err, errlen, "etcd_cert and etcd_key go together");
    return NULL;
  }
  if (opts->ca_path && !(ca = files_read_pem("etcd CA", opts->ca_path, err, errlen)))
    goto out;
  if (opts->cert_path && !(cert = files_read_pem("etcd certificate", opts->cert_path, err, errlen)))
    goto out;
  if (opts->key_path && !(key = files_read_pem("etcd key", opts->key_path, err, errlen)))
    goto out;
  grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
  creds = grpc_ssl_credentials_create_ex(ca, cert ? &pair : NULL, NULL, NULL);
  if (!creds)
    snprintf(err, errlen, "cannot create TLS credentials for etcd");
out:
  free(ca);
  free(cert);
  free(key);
  return creds;
}

int etcd_client_open(const etcd_client_opts_t *opts, etcd_client_t **out, char *err, size_t errlen)
{
  char targets[ETCD_MAX_ENDPOINTS][300];
  int tls[ETCD_MAX_ENDPOINTS];

  *out = NULL;
  if (opts->n_endpoints == 0 || opts->n_endpoints > ETCD_MAX_ENDPOINTS) {
    snprintf(err, errlen, "between 1 and %d etcd endpoints are needed", ETCD_MAX_ENDPOINTS);
    return ETCD_EINVAL;
  }
  for (size_t i = 0; i < opts->n_endpoints; i++) {
    if (endpoint_target(opts->endpoints[i], &tls[i], targets[i], sizeof(targets[i])) != 0) {
      snprintf(err, errlen, "etcd endpoint \"%s\" is not http://HOST:PORT or https://HOST:PORT",
               opts->endpoints[i]);
      return ETCD_EINVAL;
    }
    if (tls[i] != tls[0]) {
      snprintf(err, errlen, "etcd endpoints mix http:// and https://");
      return ETCD_EINVAL;
    }
  }

  etcd_client_t *c = calloc(1, sizeof(*c));
  if (!c) {
    snprintf(err, errlen, "out of memory");
    return ETCD_ENOMEM;
  }
  c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : ETCD_TIMEOUT_MS;
  atomic_init(&c->current, 0);

  gpr_set_log_function(quiet_log);
  grpc_init();
  grpc_channel_credentials *creds = make_creds(opts, tls[0], err, errlen);
  if (!creds) {
    free(c);
    grpc_shutdown();
    return ETCD_EINVAL;
  }
  /* No transparent retries (failover is ours), quick reconnects to a member that comes back,
   * and keepalive pings so a member that vanished without a FIN is noticed. etcd refuses pings
   * more often than every 5 s by default. */
  grpc_arg args[] = {
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ENABLE_RETRIES, .value.integer = 0},
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
       .value.integer = REPLY_MAX},
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
       .value.integer = 100},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, .value.integer = 100},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, .value.integer = 2000},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIME_MS, .value.integer = 10000},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS, .value.integer = 5000},
  };
  grpc_channel_args cargs = {.num_args = sizeof(args) / sizeof(args[0]), .args = args};
  for (size_t i = 0; i < opts->n_endpoints; i++) {
    c->endpoints[i] = strdup(opts->endpoints[i]);
    c->channels[i] = grpc_channel_create(targets[i], creds, &cargs);
    c->n++;
    if (!c->endpoints[i] || !c->channels[i]) {
      grpc_channel_credentials_release(creds);
      etcd_client_close(c);
      snprintf(err, errlen, "cannot create a channel to %s", opts->endpoints[i]);
      return ETCD_ENOMEM;
    }
  }
  grpc_channel_credentials_release(creds);
  *out = c;
  return 0;
}

void etcd_client_close(etcd_client_t *c)
{
  if (!c)
    return;
  for (size_t i = 0; i < c->n; i++) {
    if (c->channels[i])
      grpc_channel_destroy(c->channels[i]);
    free(c->endpoints[i]);
  }
  free(c);
  grpc_shutdown();
}

const char *etcd_client_endpoint(etcd_client_t *c)
{
  return c->endpoints[etcd__current(c)];
}

size_t etcd__current(etcd_client_t *c)
{
  return atomic_load(&c->current) % c->n;
}

void etcd__fail_over(etcd_client_t *c, size_t failed)
{
  size_t expected = failed;
  atomic_compare_exchange_strong(&c->current, &expected, (failed + 1) % c->n);
}

void etcd__leader_metadata(grpc_metadata *md)
{
  memset(md, 0, sizeof(*md));
  md->key = grpc_slice_from_static_string("hasleader");
  md->value = grpc_slice_from_static_string("true");
}

int64_t etcd__now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- messages ---------------------------------------------------------------------------- */

grpc_byte_buffer *etcd__pack(const ProtobufCMessage *msg)
{
  size_t len = protobuf_c_message_get_packed_size(msg);
  grpc_slice slice = grpc_slice_malloc(len);
  protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
  grpc_slice_unref(slice);
  return bb;
}

ProtobufCMessage *etcd__unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc)
{
  grpc_byte_buffer_reader reader;
  if (!grpc_byte_buffer_reader_init(&reader, bb))
    return NULL;
  grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
  grpc_byte_buffer_reader_destroy(&reader);
  ProtobufCMessage *m =
      protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
  grpc_slice_unref(all);
  return m;
}

static char *dup_bytes(const ProtobufCBinaryData *b)
{
  char *s = malloc(b->len + 1);
  if (s) {
    if (b->len)
      memcpy(s, b->data, b->len);
    s[b->len] = '\0';
  }
  return s;
}

int etcd__kv_copy(etcd_kv_t *kv, const Mvccpb__KeyValue *src)
{
  memset(kv, 0, sizeof(*kv));
  kv->key = dup_bytes(&src->key);
  kv->value = dup_bytes(&src->value);
  if (!kv->key || !kv->value) {
    etcd__kv_release(kv);
    return ETCD_ENOMEM;
  }
  kv->key_len = src->key.len;
  kv->value_len = src->value.len;
  kv->create_revision = src->create_revision;
  kv->mod_revision = src->mod_revision;
  kv->version = src->version;
  return 0;
}

void etcd__kv_release(etcd_kv_t *kv)
{
  free(kv->key);
  free(kv->value);
  kv->key = kv->value = NULL;
}

/* ---- one unary attempt ------------------------------------------------------------------- */

typedef struct attempt_s {
  grpc_status_code status;
  char details[256];
  ProtobufCMessage *resp;
  int not_connected; /* the channel never became ready: the request was not sent */
} attempt_t;

static void copy_line(char *dst, size_t dstlen, const char *src, size_t len)
{
  size_t n = 0;
  for (size_t i = 0; i < len && n + 1 < dstlen; i++)
    dst[n++] = (src[i] == '\n' || src[i] == '\r') ? ' ' : src[i];
  dst[n] = '\0';
}

/*
 * Waits until the channel is connected or the deadline passes; returns 1 when it is ready.
 * Waiting on our own queue matters: gRPC drives a connection attempt from the pollers of the
 * calls and watchers interested in the channel, and a channel that failed before (its state
 * stays TRANSIENT_FAILURE until it connects again) fails fast calls at once without waiting,
 * so without a watcher its reconnection would only be noticed by gRPC's slow backup poller.
 */
static int wait_ready(grpc_channel *ch, grpc_completion_queue *cq, gpr_timespec deadline)
{
  grpc_connectivity_state st = grpc_channel_check_connectivity_state(ch, 1);
  while (st != GRPC_CHANNEL_READY && st != GRPC_CHANNEL_SHUTDOWN) {
    grpc_channel_watch_connectivity_state(ch, st, deadline, cq, NULL);
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type != GRPC_OP_COMPLETE || !ev.success)
      return 0; /* the deadline passed with no change */
    st = grpc_channel_check_connectivity_state(ch, 1);
  }
  return st == GRPC_CHANNEL_READY;
}

static void unary(etcd_client_t *c, size_t ep, const char *path, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, int timeout_ms, attempt_t *a);

/*
 * Why a channel is not connected, for the message: a fail-fast call on a failed channel ends at
 * once with gRPC's last connection error. The call is a Range with no key, which etcd would
 * refuse if it did get through, so asking cannot change anything.
 */
static void connect_error(etcd_client_t *c, size_t ep, char *out, size_t len)
{
  Etcdserverpb__RangeRequest probe = ETCDSERVERPB__RANGE_REQUEST__INIT;
  attempt_t a;

  snprintf(out, len, "not connected within %d ms", c->timeout_ms);
  /* A negative timeout: fail fast, without waiting for the channel. */
  unary(c, ep, "/etcdserverpb.KV/Range", &probe.base, &etcdserverpb__range_response__descriptor,
        -200, &a);
  if (a.resp)
    protobuf_c_message_free_unpacked(a.resp, NULL);
  if (a.status == GRPC_STATUS_UNAVAILABLE && !a.not_connected)
    snprintf(out, len, "not connected: %s", a.details);
}

/*
 * One attempt on endpoint ep with a deadline of timeout_ms: first wait for the channel to be
 * connected (a negative timeout_ms skips that and fails fast), then one batch.
 */
static void unary(etcd_client_t *c, size_t ep, const char *path, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, int timeout_ms, attempt_t *a)
{
  memset(a, 0, sizeof(*a));
  a->status = GRPC_STATUS_INTERNAL;
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  int fail_fast = timeout_ms < 0;
  gpr_timespec deadline =
      gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                   gpr_time_from_millis(fail_fast ? -timeout_ms : timeout_ms, GPR_TIMESPAN));
  grpc_call *call = NULL;
  if (!fail_fast && !wait_ready(c->channels[ep], cq, deadline)) {
    a->status = GRPC_STATUS_UNAVAILABLE;
    a->not_connected = 1;
    connect_error(c, ep, a->details, sizeof(a->details));
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
      ;
    grpc_completion_queue_destroy(cq);
    return;
  }
  call = grpc_channel_create_call(c->channels[ep], NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                  grpc_slice_from_static_string(path), NULL, deadline, NULL);
  grpc_metadata md;
  etcd__leader_metadata(&md);
  grpc_byte_buffer *send_bb = etcd__pack(req), *recv_bb = NULL;
  grpc_metadata_array initial_md, trailing_md;
  grpc_metadata_array_init(&initial_md);
  grpc_metadata_array_init(&trailing_md);
  grpc_slice details = grpc_empty_slice();

  grpc_op ops[6];
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = 1;
  ops[0].data.send_initial_metadata.metadata = &md;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = send_bb;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &recv_bb;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
  ops[5].data.recv_status_on_client.status = &a->status;
  ops[5].data.recv_status_on_client.status_details = &details;

  if (!call || grpc_call_start_batch(call, ops, 6, call, NULL) != GRPC_CALL_OK) {
    snprintf(a->details, sizeof(a->details), "cannot start the call");
    a->status = GRPC_STATUS_INTERNAL;
    goto out;
  }
  /* The batch always completes (at the deadline with DEADLINE_EXCEEDED); the extra second only
   * guards against a completion that never comes. */
  gpr_timespec wait = gpr_time_add(deadline, gpr_time_from_millis(1000, GPR_TIMESPAN));
  grpc_event ev = grpc_completion_queue_next(cq, wait, NULL);
  if (ev.type != GRPC_OP_COMPLETE) {
    grpc_call_cancel(call, NULL);
    (void)grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    a->status = GRPC_STATUS_DEADLINE_EXCEEDED;
    snprintf(a->details, sizeof(a->details), "no reply within the deadline");
    goto out;
  }
  copy_line(a->details, sizeof(a->details), (const char *)GRPC_SLICE_START_PTR(details),
            GRPC_SLICE_LENGTH(details));
  if (a->status != GRPC_STATUS_OK)
    goto out;
  if (!recv_bb || !(a->resp = etcd__unpack(recv_bb, resp_desc))) {
    a->status = GRPC_STATUS_INTERNAL;
    snprintf(a->details, sizeof(a->details), "the reply does not parse as %s", resp_desc->name);
  }

out:
  grpc_byte_buffer_destroy(send_bb);
  if (recv_bb)
    grpc_byte_buffer_destroy(recv_bb);
  grpc_slice_unref(details);
  grpc_metadata_array_destroy(&initial_md);
  grpc_metadata_array_destroy(&trailing_md);
  if (call)
    grpc_call_unref(call);
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN)
    ;
  grpc_completion_queue_destroy(cq);
}

/* Nothing was applied: the endpoint was not reached, or refused before doing anything. */
static int never_applied(const attempt_t *a)
{
  return a->not_connected ||
         (a->status == GRPC_STATUS_UNAVAILABLE &&
          (strstr(a->details, "failed to connect") || strstr(a->details, "no leader")));
}

/* A read may go to the next endpoint after any transport failure or timeout. */
static int read_may_retry(const attempt_t *a)
{
  return a->status == GRPC_STATUS_UNAVAILABLE || a->status == GRPC_STATUS_DEADLINE_EXCEEDED;
}

int etcd__call(etcd_client_t *c, const char *path, const ProtobufCMessage *req,
               const ProtobufCMessageDescriptor *desc, int is_write, ProtobufCMessage **resp,
               char *err, size_t errlen)
{
  attempt_t attempt = {.status = GRPC_STATUS_UNAVAILABLE}, *a = &attempt;

  *resp = NULL;
  for (size_t tries = 0; tries < c->n; tries++) {
    size_t ep = etcd__current(c);
    unary(c, ep, path, req, desc, c->timeout_ms, a);
    if (a->status == GRPC_STATUS_OK) {
      *resp = a->resp;
      return 0;
    }
    snprintf(err, errlen, "%s: %s", c->endpoints[ep], a->details);
    if (a->status == GRPC_STATUS_OUT_OF_RANGE && strstr(a->details, "compacted"))
      return ETCD_ECOMPACTED;
    if (is_write ? !never_applied(a) : !read_may_retry(a))
      break;
    etcd__fail_over(c, ep);
  }
  if (a->status == GRPC_STATUS_UNAVAILABLE && (!is_write || never_applied(a)))
    return ETCD_EUNAVAILABLE;
  if (a->status == GRPC_STATUS_DEADLINE_EXCEEDED)
    return is_write ? ETCD_EUNKNOWN : ETCD_EUNAVAILABLE;
  if (is_write && a->status == GRPC_STATUS_UNAVAILABLE)
    return ETCD_EUNKNOWN;
  return ETCD_EREFUSED;
}
