/*
 * admin_server: the admin API's transport with gRPC core's C API. See admin_server.h; the
 * methods themselves are in admin_rpc.c.
 *
 * Longer than our usual 600 lines on purpose: it is one concern (carrying calls between gRPC and
 * the loop), and the thread hand-offs, the call states and the shutdown order below only make
 * sense read together; splitting them would spread one protocol over several files.
 *
 * Threads. gRPC delivers every event on one completion queue, drained by a thread of our own
 * (cq_thread). That thread also drives gRPC's I/O, so it never blocks: for a new call it asks
 * for the request message; when the message arrives it finds the method, unpacks the bytes with
 * protobuf-c, puts the call on the inbox and wakes the loop (uv_async_send). The loop thread
 * (on_async) drains the whole inbox and runs each call's method, which answers with
 * admin_call_reply() at once (reads) or after the database commit (changes). Until then the call
 * waits on the held list. The reply starts the status batch; when that completes the CQ thread
 * frees the call. So a call is touched by one thread at a time, handed over through the inbox
 * (under mu) or by the completion of a batch.
 *
 * Life of a call (admin_call_t.state): REQUESTED (waiting in grpc_server_request_call) ->
 * RECEIVING (RECV_MESSAGE batch) -> HANDLING (inbox, then the loop; maybe held) -> REPLYING (the
 * status batch) -> freed. There is at most one batch in flight per call, so the state says which
 * batch a completion belongs to.
 *
 * Shutdown (admin_server_stop, loop thread) follows the orderings that are known not to abort
 * or hang: stop handing calls over and cancel the ones we hold (UNAVAILABLE), shut the server
 * down and wait briefly for its notification, cancel what is still in flight if it does not
 * come, then shut the completion queue down, join the thread and destroy everything.
 */
#include "admin_server.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "certs.h"
#include "files.h"
#include "log.h"
#include "metrics.h"
#include "proto_check.h"
#include "reflection.h"

/* Requests are a few hundred bytes; anything near this is not a request of ours. */
#define ADMIN_MAX_REQUEST (64 * 1024)
/* Calls the server can accept at once before a request_call is re-armed. */
#define ADMIN_PENDING_REQUESTS 8
/* How long shutdown lets calls in flight finish before cancelling them. */
#define ADMIN_SHUTDOWN_GRACE_MS 1000
/* Every method's path is this plus its name. */
#define ADMIN_SERVICE_PREFIX "/mc_proxy.v1.ProxyAdminService/"

typedef enum call_state_e {
  CALL_REQUESTED,
  CALL_RECEIVING,
  CALL_HANDLING,
  CALL_REPLYING,
  CALL_STREAM_SEND, /* health/reflection: a message being sent, the stream goes on */
  CALL_STREAM_RECV, /* health/reflection: waiting for the client's next message */
} call_state_t;

/* Which service a call is for. Health and reflection never reach the loop (see below). */
typedef enum call_kind_e {
  KIND_ADMIN = 0,
  KIND_HEALTH,
  KIND_REFLECTION,
} call_kind_t;

/*
 * One RPC. Allocated by whoever arms grpc_server_request_call (loop thread at start, then the
 * CQ thread), freed by the CQ thread when the reply batch completes, or by the thread that
 * drops it. While HANDLING it belongs to the loop thread alone.
 */
struct admin_call_s {
  admin_server_t *admin; /* NULL once orphaned by shutdown while held */
  call_state_t state;
  grpc_call *call;
  grpc_call_details details;
  grpc_metadata_array request_md;
  grpc_byte_buffer *recv_bb;

  /* Filled by the CQ thread when the request arrives. */
  const admin_method_t *method; /* NULL: unknown */
  ProtobufCMessage *req;        /* unpacked request, or NULL */
  int early_status;             /* non-zero: answer with this status and early_msg */
  const char *early_msg;

  /* The reply. */
  grpc_byte_buffer *send_bb;
  grpc_slice status_details;
  int cancelled;

  int held;
  int receiving; /* on the receiving list */
  admin_call_t *next, *prev; /* the receiving list, the inbox (next only), or the held list */

  call_kind_t kind;
  int sent_md; /* initial metadata sent (streams) */
};

struct admin_server_s {
  const admin_method_t *methods;
  size_t nmethods;
  void *ctx;
  grpc_server *server;
  grpc_completion_queue *cq;
  uv_thread_t thread;
  int thread_started;
  uv_async_t async;

  uv_mutex_t mu; /* guards the fields below it up to held */
  uv_cond_t cond;
  int stopping;
  int shutdown_notified;
  admin_call_t *inbox_head, *inbox_tail;
  admin_call_t *receiving; /* calls whose request message is still to arrive */

  admin_call_t *held; /* loop thread: calls handed to a method and not answered yet */
  int lock_fd;
  char shutdown_tag; /* its address is the tag of grpc_server_shutdown_and_notify */
};

static const admin_method_t *find_method(admin_server_t *a, grpc_slice path)
{
  size_t len = GRPC_SLICE_LENGTH(path);
  const char *p = (const char *)GRPC_SLICE_START_PTR(path);
  size_t plen = strlen(ADMIN_SERVICE_PREFIX);
  if (len < plen || memcmp(p, ADMIN_SERVICE_PREFIX, plen))
    return NULL;
  p += plen;
  len -= plen;
  for (size_t i = 0; i < a->nmethods; i++)
    if (strlen(a->methods[i].name) == len && !memcmp(a->methods[i].name, p, len))
      return &a->methods[i];
  return NULL;
}

/* The standard services served next to ours (docs/METRICS.md). */
static call_kind_t find_kind(grpc_slice path)
{
  static const struct {
    const char *path;
    call_kind_t kind;
  } paths[] = {
      {"/grpc.health.v1.Health/Check", KIND_HEALTH},
      {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", KIND_REFLECTION},
      {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", KIND_REFLECTION},
  };
  size_t len = GRPC_SLICE_LENGTH(path);
  const char *p = (const char *)GRPC_SLICE_START_PTR(path);
  for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
    if (strlen(paths[i].path) == len && !memcmp(paths[i].path, p, len))
      return paths[i].kind;
  return KIND_ADMIN;
}

/* ---- call lifetime ---- */

static admin_call_t *call_new(admin_server_t *a)
{
  admin_call_t *c = calloc(1, sizeof(*c));
  if (!c)
    return NULL;
  c->admin = a;
  c->state = CALL_REQUESTED;
  c->status_details = grpc_empty_slice();
  grpc_call_details_init(&c->details);
  grpc_metadata_array_init(&c->request_md);
  return c;
}

/* Frees c and drops its reference on the gRPC call (which cancels it if it is unfinished). */
static void call_free(admin_call_t *c)
{
  if (c->call)
    grpc_call_unref(c->call);
  if (c->recv_bb)
    grpc_byte_buffer_destroy(c->recv_bb);
  if (c->send_bb)
    grpc_byte_buffer_destroy(c->send_bb);
  if (c->req)
    protobuf_c_message_free_unpacked(c->req, NULL);
  grpc_slice_unref(c->status_details);
  grpc_call_details_destroy(&c->details);
  grpc_metadata_array_destroy(&c->request_md);
  free(c);
}

/* The receiving and held lists: doubly linked through next/prev, newest first. */
static void list_push(admin_call_t **head, admin_call_t *c)
{
  c->prev = NULL;
  c->next = *head;
  if (*head)
    (*head)->prev = c;
  *head = c;
}

static void list_remove(admin_call_t **head, admin_call_t *c)
{
  if (c->prev)
    c->prev->next = c->next;
  else
    *head = c->next;
  if (c->next)
    c->next->prev = c->prev;
  c->next = c->prev = NULL;
}

/* Arms one grpc_server_request_call. Any thread (gRPC allows it); a->mu held by the CQ thread. */
static int arm_request(admin_server_t *a)
{
  admin_call_t *c = call_new(a);
  if (!c)
    return -1;
  grpc_call_error e =
      grpc_server_request_call(a->server, &c->call, &c->details, &c->request_md, a->cq, a->cq, c);
  if (e != GRPC_CALL_OK) {
    call_free(c);
    return -1;
  }
  return 0;
}

/* ---- the completion-queue thread ---- */

/*
 * A call that arrives while the server stops was never started: the client is told so with
 * UNAVAILABLE (retry against the process that takes over), not left to a bare CANCELLED.
 */
static void refuse_stopping(admin_call_t *c)
{
  grpc_call_cancel_with_status(c->call, GRPC_STATUS_UNAVAILABLE, "mc-proxy is shutting down",
                               NULL);
  call_free(c);
}

/* A new call arrived (or, at shutdown, a request_call came back unused). */
static void on_new_call(admin_server_t *a, admin_call_t *c, int ok)
{
  if (!ok) {
    call_free(c);
    return;
  }
  uv_mutex_lock(&a->mu);
  if (a->stopping) {
    uv_mutex_unlock(&a->mu);
    refuse_stopping(c);
    return;
  }
  if (arm_request(a) != 0)
    log_warn("admin API: cannot arm another request (out of memory?)");
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &c->recv_bb;
  c->state = CALL_RECEIVING;
  grpc_call_error e = grpc_call_start_batch(c->call, &op, 1, c, NULL);
  if (e == GRPC_CALL_OK) {
    c->receiving = 1;
    list_push(&a->receiving, c);
  }
  uv_mutex_unlock(&a->mu);
  if (e != GRPC_CALL_OK)
    call_free(c);
}

/* Takes c off the receiving list (its message arrived, or it failed). Under a->mu. */
static void receiving_remove(admin_server_t *a, admin_call_t *c)
{
  if (!c->receiving)
    return;
  list_remove(&a->receiving, c);
  c->receiving = 0;
}

static void on_std_message(admin_server_t *a, admin_call_t *c);

/* The request message arrived: find the method, unpack, and hand the call to the loop. */
static void on_received(admin_server_t *a, admin_call_t *c, int ok)
{
  uv_mutex_lock(&a->mu);
  receiving_remove(a, c);
  uv_mutex_unlock(&a->mu);
  if (!ok) { /* cancelled by the client, or the server is shutting down */
    uv_mutex_lock(&a->mu);
    int stopping = a->stopping;
    uv_mutex_unlock(&a->mu);
    if (stopping)
      refuse_stopping(c); /* never started: UNAVAILABLE, so the client may retry */
    else
      call_free(c);
    return;
  }
  c->kind = find_kind(c->details.method);
  if (c->kind != KIND_ADMIN) {
    on_std_message(a, c);
    return;
  }
  c->method = find_method(a, c->details.method);
  if (!c->method) {
    c->early_status = GRPC_STATUS_UNIMPLEMENTED;
    c->early_msg = "unknown method";
  } else if (!c->recv_bb) {
    c->early_status = GRPC_STATUS_INVALID_ARGUMENT;
    c->early_msg = "no request message";
  } else {
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, c->recv_bb)) {
      c->early_status = GRPC_STATUS_INVALID_ARGUMENT;
      c->early_msg = "unreadable request message";
    } else {
      grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
      grpc_byte_buffer_reader_destroy(&reader);
      const uint8_t *p = GRPC_SLICE_START_PTR(all);
      size_t len = GRPC_SLICE_LENGTH(all);
      const ProtobufCMessageDescriptor *desc = c->method->input;
      if (len > ADMIN_MAX_REQUEST) {
        c->early_status = GRPC_STATUS_INVALID_ARGUMENT;
        c->early_msg = "request message too large";
      } else if (!(c->req = protobuf_c_message_unpack(desc, NULL, len, p))) {
        c->early_status = GRPC_STATUS_INVALID_ARGUMENT;
        c->early_msg = "malformed request message";
      } else if (proto_has_nul_string(desc, p, len)) {
        c->early_status = GRPC_STATUS_INVALID_ARGUMENT;
        c->early_msg = "a string field of the request holds a NUL byte";
      }
      grpc_slice_unref(all);
    }
  }
  grpc_byte_buffer_destroy(c->recv_bb);
  c->recv_bb = NULL;

  uv_mutex_lock(&a->mu);
  if (a->stopping) {
    uv_mutex_unlock(&a->mu);
    refuse_stopping(c);
    return;
  }
  c->state = CALL_HANDLING;
  c->next = NULL;
  if (a->inbox_tail)
    a->inbox_tail->next = c;
  else
    a->inbox_head = c;
  a->inbox_tail = c;
  uv_mutex_unlock(&a->mu);
  /* The async handle is closed only after this thread has been joined. */
  uv_async_send(&a->async);
}

/*
 * ---- health and reflection, on the CQ thread ----
 *
 * Their answers are pure functions of the request bytes (reflection.h) and one atomic flag
 * (metrics_serving), so they are made here, without a trip through the loop. A reflection
 * call is a stream: each request message gets one response message, then the next message is
 * read, until the client half-closes (status OK). A batch is only started under a->mu while
 * the server is not stopping, so none can start after the queue is shut down.
 */

/* Starts ops as c's one batch in flight, in state st; frees c when that cannot be done. */
static void start_std_batch(admin_server_t *a, admin_call_t *c, grpc_op *ops, size_t n,
                            call_state_t st)
{
  grpc_call_error e = GRPC_CALL_ERROR;
  uv_mutex_lock(&a->mu);
  if (!a->stopping) {
    c->state = st;
    e = grpc_call_start_batch(c->call, ops, n, c, NULL);
  }
  uv_mutex_unlock(&a->mu);
  if (e != GRPC_CALL_OK)
    call_free(c);
}

/* Puts body (malloc'd, taken over; may be NULL) in c->send_bb and an op sending it. */
static void std_send_op(admin_call_t *c, grpc_op *op, uint8_t *body, size_t len)
{
  grpc_slice s = grpc_slice_from_copied_buffer((const char *)body, len);
  free(body);
  if (c->send_bb)
    grpc_byte_buffer_destroy(c->send_bb);
  c->send_bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  op->op = GRPC_OP_SEND_MESSAGE;
  op->data.send_message.send_message = c->send_bb;
}

/* Ends c with status, sending body first when it is not NULL. */
static void std_finish(admin_server_t *a, admin_call_t *c, int status, const char *msg,
                       uint8_t *body, size_t len)
{
  grpc_op ops[4];
  size_t n = 0;
  memset(ops, 0, sizeof(ops));
  if (!c->sent_md)
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  c->sent_md = 1;
  if (body)
    std_send_op(c, &ops[n++], body, len);
  grpc_slice_unref(c->status_details);
  c->status_details = grpc_slice_from_copied_string(msg);
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = (grpc_status_code)status;
  ops[n++].data.send_status_from_server.status_details = &c->status_details;
  ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
  start_std_batch(a, c, ops, n, CALL_REPLYING);
}

/* A message of a health or reflection call arrived in c->recv_bb (NULL: the client is done). */
static void on_std_message(admin_server_t *a, admin_call_t *c)
{
  if (!c->recv_bb) {
    if (c->kind == KIND_HEALTH)
      std_finish(a, c, GRPC_STATUS_INVALID_ARGUMENT, "no request message", NULL, 0);
    else
      std_finish(a, c, GRPC_STATUS_OK, "", NULL, 0);
    return;
  }
  grpc_byte_buffer_reader reader;
  int readable = grpc_byte_buffer_reader_init(&reader, c->recv_bb);
  grpc_slice all = grpc_empty_slice();
  if (readable) {
    all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
  }
  grpc_byte_buffer_destroy(c->recv_bb);
  c->recv_bb = NULL;
  uint8_t *out = NULL;
  size_t out_len = 0;
  int rc;
  if (!readable || GRPC_SLICE_LENGTH(all) > ADMIN_MAX_REQUEST)
    rc = REFLECTION_STATUS_INVALID_ARGUMENT;
  else if (c->kind == KIND_HEALTH)
    rc = reflection_health_check(GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all),
                                 metrics_serving(), &out, &out_len);
  else
    rc = reflection_answer(GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all), &out, &out_len);
  grpc_slice_unref(all);
  if (rc != REFLECTION_STATUS_OK) {
    free(out);
    std_finish(a, c, rc,
               rc == REFLECTION_STATUS_NOT_FOUND          ? "unknown service"
               : rc == REFLECTION_STATUS_INVALID_ARGUMENT ? "malformed request message"
                                                          : "out of memory",
               NULL, 0);
    return;
  }
  if (c->kind == KIND_HEALTH) {
    std_finish(a, c, GRPC_STATUS_OK, "", out, out_len);
    return;
  }
  grpc_op ops[2];
  size_t n = 0;
  memset(ops, 0, sizeof(ops));
  if (!c->sent_md)
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  c->sent_md = 1;
  std_send_op(c, &ops[n++], out, out_len);
  start_std_batch(a, c, ops, n, CALL_STREAM_SEND);
}

/* A reflection response went out: read the client's next request. */
static void on_std_sent(admin_server_t *a, admin_call_t *c, int ok)
{
  if (!ok) {
    call_free(c);
    return;
  }
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &c->recv_bb;
  start_std_batch(a, c, &op, 1, CALL_STREAM_RECV);
}

static void handle_event(admin_server_t *a, grpc_event ev)
{
  if (ev.type != GRPC_OP_COMPLETE)
    return;
  if (ev.tag == &a->shutdown_tag) {
    uv_mutex_lock(&a->mu);
    a->shutdown_notified = 1;
    uv_cond_signal(&a->cond);
    uv_mutex_unlock(&a->mu);
    return;
  }
  admin_call_t *c = ev.tag;
  switch (c->state) {
  case CALL_REQUESTED:
    on_new_call(a, c, ev.success);
    break;
  case CALL_RECEIVING:
    on_received(a, c, ev.success);
    break;
  case CALL_STREAM_RECV:
    if (ev.success)
      on_std_message(a, c);
    else
      call_free(c);
    break;
  case CALL_STREAM_SEND:
    on_std_sent(a, c, ev.success);
    break;
  case CALL_REPLYING:
  case CALL_HANDLING: /* cannot happen: no batch is in flight while handling */
    call_free(c);
    break;
  }
}

static void cq_thread(void *arg)
{
  admin_server_t *a = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(a->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      break;
    handle_event(a, ev);
  }
}

/* ---- the loop thread: handing calls to methods, replies ---- */

static void hold(admin_server_t *a, admin_call_t *c)
{
  c->held = 1;
  list_push(&a->held, c);
}

static void unhold(admin_server_t *a, admin_call_t *c)
{
  if (!c->held)
    return;
  list_remove(&a->held, c);
  c->held = 0;
}

static void on_async(uv_async_t *h)
{
  admin_server_t *a = h->data;
  uv_mutex_lock(&a->mu);
  admin_call_t *c = a->inbox_head;
  a->inbox_head = a->inbox_tail = NULL;
  uv_mutex_unlock(&a->mu);
  /* uv_async_send coalesces wake-ups: take everything queued. */
  while (c) {
    admin_call_t *next = c->next;
    if (!c->admin) { /* orphaned by a stop before the loop saw it: nobody waits for it */
      call_free(c);
      c = next;
      continue;
    }
    /* Held until answered, which may happen inside run or long after it. */
    hold(c->admin, c);
    if (c->early_status)
      admin_call_reply(c, c->early_status, c->early_msg, NULL);
    else
      c->method->run(a->ctx, c);
    c = next;
  }
}

const ProtobufCMessage *admin_call_request(const admin_call_t *c)
{
  return c->req;
}

const char *admin_call_method(const admin_call_t *c)
{
  return c->method ? c->method->name : "?";
}

int admin_call_live(const admin_call_t *c)
{
  return c->admin != NULL;
}

void admin_call_peer(const admin_call_t *c, char *buf, size_t len)
{
  char *peer = c->call ? grpc_call_get_peer(c->call) : NULL;
  snprintf(buf, len, "%s", peer ? peer : "?");
  gpr_free(peer);
}

/* Sends status (and, when OK, resp) and lets the CQ thread free the call when it is sent. */
void admin_call_reply(admin_call_t *c, int status, const char *msg, const ProtobufCMessage *resp)
{
  if (!c->admin) { /* orphaned: the server stopped and cancelled it while it was held */
    call_free(c);
    return;
  }
  unhold(c->admin, c);
  /* metrics: count answered changes (every method that is not a read) */
  const char *name = admin_call_method(c);
  if (c->method && strncmp(name, "Get", 3) && strncmp(name, "List", 4))
    metrics_admin_change(name, status);
  grpc_op ops[4];
  size_t n = 0;
  memset(ops, 0, sizeof(ops));
  ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (status == GRPC_STATUS_OK) {
    size_t len = resp ? protobuf_c_message_get_packed_size(resp) : 0;
    grpc_slice s = grpc_slice_malloc(len);
    if (len)
      protobuf_c_message_pack(resp, GRPC_SLICE_START_PTR(s));
    c->send_bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->send_bb;
  }
  grpc_slice_unref(c->status_details);
  c->status_details = grpc_slice_from_copied_string(msg ? msg : "");
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = (grpc_status_code)status;
  ops[n++].data.send_status_from_server.status_details = &c->status_details;
  ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;

  c->state = CALL_REPLYING;
  grpc_call_error e = grpc_call_start_batch(c->call, ops, n, c, NULL);
  if (e != GRPC_CALL_OK) {
    log_warn("admin API: cannot send the reply to %s (error %d)", admin_call_method(c), (int)e);
    call_free(c);
  }
  /* From here on the CQ thread owns c. */
}

/* ---- credentials and the socket lock ---- */

static void grpc_log(gpr_log_func_args *args)
{
  if (args->severity == GPR_LOG_SEVERITY_ERROR)
    log_warn("grpc: %s", args->message);
}

/*
 * Makes the unix socket path ours: an flock on "<path>.lock" proves no other mc-proxy serves it
 * (gRPC itself would unlink a live socket at bind and steal it); then a socket file left by a
 * crash is removed. A path that exists and is not a socket is never removed.
 */
static int claim_socket_path(admin_server_t *a, const char *path, char *err, size_t errlen)
{
  struct sockaddr_un sun;
  char lock_path[PATH_MAX];
  if (strlen(path) >= sizeof(sun.sun_path)) {
    snprintf(err, errlen, "unix socket path %s is too long (at most %zu bytes)", path,
             sizeof(sun.sun_path) - 1);
    return -1;
  }
  if ((size_t)snprintf(lock_path, sizeof(lock_path), "%s.lock", path) >= sizeof(lock_path)) {
    snprintf(err, errlen, "unix socket path %s is too long", path);
    return -1;
  }
  a->lock_fd = files_lock(lock_path);
  if (a->lock_fd == FILES_LOCK_OPEN) {
    snprintf(err, errlen, "cannot open the lock file %s: %s", lock_path, strerror(errno));
    return -1;
  }
  if (a->lock_fd == FILES_LOCK_HELD) {
    if (errno == EWOULDBLOCK)
      snprintf(err, errlen, "%s is in use by another running mc-proxy (it holds %s)", path,
               lock_path);
    else
      snprintf(err, errlen, "cannot lock %s: %s", lock_path, strerror(errno));
    return -1;
  }
  struct stat st;
  if (lstat(path, &st) != 0)
    return errno == ENOENT ? 0 : (snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1);
  if (!S_ISSOCK(st.st_mode)) {
    snprintf(err, errlen, "%s exists and is not a socket; refusing to replace it", path);
    return -1;
  }
  /* Belt and braces for a server that does not take the lock (an older build): one that still
   * answers keeps its socket. */
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int live = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
    close(fd);
    if (live) {
      snprintf(err, errlen, "%s is in use: another process is accepting on it", path);
      return -1;
    }
  }
  if (unlink(path) != 0 && errno != ENOENT) {
    snprintf(err, errlen, "cannot remove the stale socket %s: %s", path, strerror(errno));
    return -1;
  }
  log_info("admin API: removed the stale socket %s", path);
  return 0;
}

static grpc_server_credentials *make_credentials(const config_t *cfg, char *err, size_t errlen)
{
  if (cfg->grpc_is_unix)
    return grpc_insecure_server_credentials_create();
  char *cert = files_read_pem(NULL, cfg->tls_cert, err, errlen);
  char *key = cert ? files_read_pem(NULL, cfg->tls_key, err, errlen) : NULL;
  char *ca = key && cfg->client_ca[0] ? files_read_pem(NULL, cfg->client_ca, err, errlen) : NULL;
  grpc_server_credentials *creds = NULL;
  if (cert && key && (ca || !cfg->client_ca[0])) {
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    creds = grpc_ssl_server_credentials_create_ex(
        ca, &pair, 1,
        ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
           : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
    if (!creds)
      snprintf(err, errlen, "gRPC refused the TLS credentials %s / %s", cfg->tls_cert,
               cfg->tls_key);
  }
  free(ca);
  if (key)
    memset(key, 0, strlen(key));
  free(key);
  free(cert);
  return creds;
}

/* ---- start and stop ---- */

static void on_async_closed(uv_handle_t *h)
{
  admin_server_t *a = h->data;
  uv_cond_destroy(&a->cond);
  uv_mutex_destroy(&a->mu);
  free(a);
}

/* Waits (a->mu held) until the shutdown notification came or timeout_ms passed. */
static void wait_notified(admin_server_t *a, uint64_t timeout_ms)
{
  uint64_t deadline = uv_hrtime() + timeout_ms * 1000000u;
  while (!a->shutdown_notified) {
    uint64_t now = uv_hrtime();
    if (now >= deadline)
      return;
    uv_cond_timedwait(&a->cond, &a->mu, deadline - now);
  }
}

/*
 * Shuts the gRPC server and completion queue down and destroys them. Loop thread. Used by
 * admin_server_stop and by a start that fails after grpc_server_start.
 */
static void shutdown_grpc(admin_server_t *a)
{
  uv_mutex_lock(&a->mu);
  a->stopping = 1;
  admin_call_t *inbox = a->inbox_head;
  a->inbox_head = a->inbox_tail = NULL;
  uv_mutex_unlock(&a->mu);

  /* Calls still in the inbox get an answer now; a batch must never start on them after this. */
  while (inbox) {
    admin_call_t *next = inbox->next;
    grpc_call_cancel_with_status(inbox->call, GRPC_STATUS_UNAVAILABLE, "mc-proxy is shutting down",
                                 NULL);
    call_free(inbox);
    inbox = next;
  }
  /* Calls a method has not answered yet (waiting for a database write): the method still holds
   * them, so they are orphaned (freed by their admin_call_reply) rather than freed here. */
  for (admin_call_t *c = a->held, *next; c; c = next) {
    next = c->next;
    grpc_call_cancel_with_status(c->call, GRPC_STATUS_UNAVAILABLE, "mc-proxy is shutting down",
                                 NULL);
    grpc_call_unref(c->call);
    c->call = NULL;
    c->admin = NULL;
    c->next = c->prev = NULL;
    c->held = 0;
  }
  a->held = NULL;

  grpc_server_shutdown_and_notify(a->server, a->cq, &a->shutdown_tag);
  if (a->thread_started) {
    uv_mutex_lock(&a->mu);
    wait_notified(a, ADMIN_SHUTDOWN_GRACE_MS);
    if (!a->shutdown_notified) {
      /* A client still sending its request was never started (nothing runs once stopping is
       * set): UNAVAILABLE tells it to retry elsewhere, where cancel_all would say CANCELLED. */
      for (admin_call_t *c = a->receiving; c; c = c->next)
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_UNAVAILABLE,
                                     "mc-proxy is shutting down", NULL);
      uv_mutex_unlock(&a->mu);
      grpc_server_cancel_all_calls(a->server);
      uv_mutex_lock(&a->mu);
      while (!a->shutdown_notified)
        uv_cond_wait(&a->cond, &a->mu);
    }
    uv_mutex_unlock(&a->mu);
    grpc_completion_queue_shutdown(a->cq);
    uv_thread_join(&a->thread);
  } else {
    /* No CQ thread (start failed before it ran): drain the queue here. */
    grpc_server_cancel_all_calls(a->server);
    while (!a->shutdown_notified)
      handle_event(a, grpc_completion_queue_next(a->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL));
    grpc_completion_queue_shutdown(a->cq);
    for (;;) {
      grpc_event ev = grpc_completion_queue_next(a->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
      if (ev.type == GRPC_QUEUE_SHUTDOWN)
        break;
      handle_event(a, ev);
    }
  }
  grpc_server_destroy(a->server);
  grpc_completion_queue_destroy(a->cq);
  a->server = NULL;
  a->cq = NULL;
}

/*
 * Creates the completion queue and the gRPC server listening on cfg's addr (with creds, which
 * are released). Returns 0, or -1 with a message in err and nothing left behind.
 */
static int create_server(admin_server_t *a, const config_t *cfg, const char *sock_path,
                         grpc_server_credentials *creds, char *err, size_t errlen)
{
  grpc_arg args[] = {
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
       .value.integer = ADMIN_MAX_REQUEST},
      /* Otherwise a second instance silently shares the TCP port. */
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0},
  };
  grpc_channel_args cargs = {.num_args = sizeof(args) / sizeof(args[0]), .args = args};
  a->cq = grpc_completion_queue_create_for_next(NULL);
  a->server = grpc_server_create(&cargs, NULL);
  grpc_server_register_completion_queue(a->server, a->cq, NULL);

  /* The socket is created with the umask's mode: start owner-only and widen it later, so there
   * is no moment when it is more open than socket_mode says. */
  mode_t old_umask = sock_path ? umask(0177) : 0;
  int port = grpc_server_add_http2_port(a->server, cfg->grpc_addr, creds);
  if (sock_path)
    umask(old_umask);
  grpc_server_credentials_release(creds);
  if (port != 0)
    return 0;

  snprintf(err, errlen, "cannot listen on %s (address in use, not permitted, or invalid)",
           cfg->grpc_addr);
  /* No port was added, so the server can be destroyed without starting it. */
  grpc_server_destroy(a->server);
  grpc_completion_queue_shutdown(a->cq);
  while (grpc_completion_queue_next(a->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN)
    ;
  grpc_completion_queue_destroy(a->cq);
  a->server = NULL;
  a->cq = NULL;
  return -1;
}

static void log_started(const config_t *cfg)
{
  const char *how = "";
  if (!cfg->grpc_is_unix)
    how = cfg->client_ca[0] ? " (TLS, client certificates required)" : " (TLS)";
  log_info("admin API listening on %s%s", cfg->grpc_addr, how);
}

/*
 * Allocates the server with its lock, condition variable and async handle (on loop). Returns
 * NULL with a message in err. Undone by admin_free().
 */
static admin_server_t *admin_new(uv_loop_t *loop, const admin_method_t *methods, size_t nmethods,
                                 void *ctx, char *err, size_t errlen)
{
  admin_server_t *a = calloc(1, sizeof(*a));
  if (!a) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  a->methods = methods;
  a->nmethods = nmethods;
  a->ctx = ctx;
  a->lock_fd = -1;
  if (uv_mutex_init(&a->mu) != 0) {
    snprintf(err, errlen, "cannot create a mutex");
    goto fail_mutex;
  }
  if (uv_cond_init(&a->cond) != 0) {
    snprintf(err, errlen, "cannot create a condition variable");
    goto fail_cond;
  }
  int rc = uv_async_init(loop, &a->async, on_async);
  if (rc != 0) {
    snprintf(err, errlen, "uv_async_init: %s", uv_strerror(rc));
    goto fail_async;
  }
  a->async.data = a;
  return a;

fail_async:
  uv_cond_destroy(&a->cond);
fail_cond:
  uv_mutex_destroy(&a->mu);
fail_mutex:
  free(a);
  return NULL;
}

/* Releases the socket lock and closes the async handle; a itself is freed when it has closed. */
static void admin_free(admin_server_t *a)
{
  if (a->lock_fd >= 0)
    close(a->lock_fd);
  a->lock_fd = -1;
  uv_close((uv_handle_t *)&a->async, on_async_closed);
}

/* The server has started: widens the socket's mode, arms the first calls, starts the thread. */
static int start_serving(admin_server_t *a, const config_t *cfg, const char *sock_path, char *err,
                         size_t errlen)
{
  if (sock_path && chmod(sock_path, cfg->socket_mode) != 0) {
    snprintf(err, errlen, "chmod %o %s: %s", cfg->socket_mode, sock_path, strerror(errno));
    return -1;
  }
  for (int i = 0; i < ADMIN_PENDING_REQUESTS; i++) {
    if (arm_request(a) != 0) {
      snprintf(err, errlen, "cannot accept calls (grpc_server_request_call failed)");
      return -1;
    }
  }
  int rc = uv_thread_create(&a->thread, cq_thread, a);
  if (rc != 0) {
    snprintf(err, errlen, "cannot start the admin thread: %s", uv_strerror(rc));
    return -1;
  }
  a->thread_started = 1;
  return 0;
}

int admin_server_start(uv_loop_t *loop, const config_t *cfg, const admin_method_t *methods,
                       size_t nmethods, void *ctx, admin_server_t **out, char *err, size_t errlen)
{
  const char *sock_path = cfg->grpc_is_unix ? cfg->grpc_addr + strlen("unix:") : NULL;
  grpc_server_credentials *creds;
  char warn[1024];

  if (certs_check_config(cfg, err, errlen, warn, sizeof(warn)) != 0)
    return -1;
  if (warn[0])
    log_warn("admin API: %s", warn);
  admin_server_t *a = admin_new(loop, methods, nmethods, ctx, err, errlen);
  if (!a)
    return -1;
  if (sock_path && claim_socket_path(a, sock_path, err, errlen) != 0)
    goto fail_claim;
  creds = make_credentials(cfg, err, errlen);
  if (!creds)
    goto fail_claim;
  gpr_set_log_function(grpc_log);
  gpr_set_log_verbosity(GPR_LOG_SEVERITY_ERROR);
  grpc_init();
  if (create_server(a, cfg, sock_path, creds, err, errlen) != 0)
    goto fail_create;
  grpc_server_start(a->server);
  if (start_serving(a, cfg, sock_path, err, errlen) != 0)
    goto fail_started;
  *out = a;
  log_started(cfg);
  return 0;

fail_started:
  shutdown_grpc(a);
fail_create:
  grpc_shutdown_blocking();
fail_claim:
  admin_free(a);
  return -1;
}

void admin_server_stop(admin_server_t *a)
{
  if (!a)
    return;
  shutdown_grpc(a);
  grpc_shutdown_blocking();
  admin_free(a);
  log_info("admin API stopped");
}
