/*
 * admin_client: blocking unary calls with gRPC core's C API. See admin_client.h.
 *
 * Each call is one batch (send metadata, message and half-close; receive metadata, message and
 * status) on a completion queue of its own, waited for with the call's deadline plus a small
 * margin, so a server that is down or wedged costs at most the deadline.
 */
#include "admin_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "files.h"

/* Replies are small too (a route list of thousands of entries fits easily). */
#define REPLY_MAX (16 << 20)

struct admin_client_s {
  grpc_channel *channel;
  grpc_completion_queue *cq;
  int timeout_ms;
};

static const char *const status_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *admin_status_name(int code)
{
  if (code >= 0 && (size_t)code < sizeof(status_names) / sizeof(status_names[0]))
    return status_names[code];
  return "UNKNOWN";
}

/* gRPC's own log lines would break the one-line error contract of the commands. */
static void quiet_log(gpr_log_func_args *args) {}

int admin_client_open(const admin_client_opts_t *opts, admin_client_t **out, char *err,
                      size_t errlen)
{
  char *ca = NULL, *cert = NULL, *key = NULL;
  grpc_channel_credentials *creds = NULL;
  int is_unix = !strncmp(opts->target, "unix:", 5);

  if (!is_unix) {
    if (opts->ca_path && !(ca = files_read_pem("CA", opts->ca_path, err, errlen)))
      goto fail;
    if (opts->cert_path &&
        !(cert = files_read_pem("client certificate", opts->cert_path, err, errlen)))
      goto fail;
    if (opts->key_path && !(key = files_read_pem("client key", opts->key_path, err, errlen)))
      goto fail;
  }

  admin_client_t *c = calloc(1, sizeof(*c));
  if (!c) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : ADMIN_CLIENT_TIMEOUT_MS;

  gpr_set_log_function(quiet_log);
  grpc_init();
  if (is_unix) {
    creds = grpc_insecure_credentials_create();
  } else {
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    creds = grpc_ssl_credentials_create_ex(ca, cert && key ? &pair : NULL, NULL, NULL);
  }
  /* Fail fast instead of retrying: the command reports the first failure. */
  grpc_arg args[] = {
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ENABLE_RETRIES, .value.integer = 0},
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
       .value.integer = REPLY_MAX},
  };
  grpc_channel_args cargs = {.num_args = sizeof(args) / sizeof(args[0]), .args = args};
  c->channel = grpc_channel_create(opts->target, creds, &cargs);
  grpc_channel_credentials_release(creds);
  c->cq = grpc_completion_queue_create_for_next(NULL);
  free(ca);
  free(cert);
  free(key);
  *out = c;
  return 0;

fail:
  free(ca);
  free(cert);
  free(key);
  return -1;
}

/* One line: gRPC's messages may carry newlines (e.g. a list of connect failures). */
static void copy_line(char *dst, size_t dstlen, const char *src, size_t len)
{
  size_t n = 0;
  for (size_t i = 0; i < len && n + 1 < dstlen; i++)
    dst[n++] = (src[i] == '\n' || src[i] == '\r') ? ' ' : src[i];
  if (dstlen)
    dst[n] = '\0';
}

int admin_client_call(admin_client_t *c, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                      char *msg, size_t msglen)
{
  char path[128];
  *resp = NULL;
  msg[0] = '\0';
  snprintf(path, sizeof(path), "/mc_proxy.v1.ProxyAdminService/%s", method);

  gpr_timespec deadline =
      gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(c->timeout_ms, GPR_TIMESPAN));
  grpc_call *call =
      grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                               grpc_slice_from_static_string(path), NULL, deadline, NULL);
  if (!call) {
    snprintf(msg, msglen, "cannot create the call");
    return GRPC_STATUS_INTERNAL;
  }

  size_t len = protobuf_c_message_get_packed_size(req);
  grpc_slice slice = grpc_slice_malloc(len);
  protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(slice));
  grpc_byte_buffer *send_bb = grpc_raw_byte_buffer_create(&slice, 1);
  grpc_slice_unref(slice);

  grpc_metadata_array initial_md, trailing_md;
  grpc_metadata_array_init(&initial_md);
  grpc_metadata_array_init(&trailing_md);
  grpc_byte_buffer *recv_bb = NULL;
  grpc_status_code status = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice();

  grpc_op ops[6];
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = send_bb;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &recv_bb;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
  ops[5].data.recv_status_on_client.status = &status;
  ops[5].data.recv_status_on_client.status_details = &details;

  int rc;
  grpc_call_error cerr = grpc_call_start_batch(call, ops, 6, call, NULL);
  if (cerr != GRPC_CALL_OK) {
    snprintf(msg, msglen, "cannot start the call (error %d)", (int)cerr);
    rc = GRPC_STATUS_INTERNAL;
    goto out;
  }
  /* The batch always completes: at the deadline gRPC fails it with DEADLINE_EXCEEDED. The
   * extra second only guards against a completion that never comes. */
  gpr_timespec wait = gpr_time_add(deadline, gpr_time_from_millis(1000, GPR_TIMESPAN));
  grpc_event ev = grpc_completion_queue_next(c->cq, wait, NULL);
  if (ev.type != GRPC_OP_COMPLETE) {
    grpc_call_cancel(call, NULL);
    /* Wait for the cancelled batch to come back before the call is destroyed. */
    (void)grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    snprintf(msg, msglen, "no reply within the deadline");
    rc = GRPC_STATUS_DEADLINE_EXCEEDED;
    goto out;
  }

  rc = (int)status;
  if (status != GRPC_STATUS_OK) {
    copy_line(msg, msglen, (const char *)GRPC_SLICE_START_PTR(details), GRPC_SLICE_LENGTH(details));
    goto out;
  }
  if (!recv_bb) {
    snprintf(msg, msglen, "the server sent no reply message");
    rc = GRPC_STATUS_INTERNAL;
    goto out;
  }
  grpc_byte_buffer_reader reader;
  if (!grpc_byte_buffer_reader_init(&reader, recv_bb)) {
    snprintf(msg, msglen, "cannot read the reply");
    rc = GRPC_STATUS_INTERNAL;
    goto out;
  }
  grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
  grpc_byte_buffer_reader_destroy(&reader);
  *resp =
      protobuf_c_message_unpack(resp_desc, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
  grpc_slice_unref(all);
  if (!*resp) {
    snprintf(msg, msglen, "the reply does not parse as %s", resp_desc->name);
    rc = GRPC_STATUS_INTERNAL;
  }

out:
  grpc_byte_buffer_destroy(send_bb);
  if (recv_bb)
    grpc_byte_buffer_destroy(recv_bb);
  grpc_slice_unref(details);
  grpc_metadata_array_destroy(&initial_md);
  grpc_metadata_array_destroy(&trailing_md);
  grpc_call_unref(call);
  return rc;
}

void admin_client_close(admin_client_t *c)
{
  if (!c)
    return;
  grpc_channel_destroy(c->channel);
  grpc_completion_queue_shutdown(c->cq);
  while (grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN)
    ;
  grpc_completion_queue_destroy(c->cq);
  free(c);
  grpc_shutdown_blocking();
}
