/*
 * etcd_watch: one prefix watched on a thread of its own. See etcd_watch_start in etcd_client.h.
 *
 * The thread runs one stream at a time on its own completion queue. A stream has at most three
 * batches in flight: the send (the create request, later progress requests), the receive (the
 * next WatchResponse) and the status. The queue is polled every POLL_MS so the thread notices a
 * stop request and a stream that went quiet without waiting on anything unbounded.
 *
 * Revisions. next_rev is the first revision not yet delivered. It moves past the events handed
 * to the callback and past the progress notifications etcd sends for this watcher; a reconnect
 * creates the watcher again at next_rev, so nothing is skipped and nothing repeated. Responses to
 * our own progress requests only prove the stream is alive: etcd 3.4 answers them from the
 * store's current revision even while events for this watcher are still queued, so they must
 * not move next_rev.
 */
#include "etcd_client_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/support/time.h>

#include "etcd/api/etcdserverpb/rpc.pb-c.h"

#define POLL_MS 100
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

enum { TAG_SEND = 1, TAG_RECV = 2, TAG_STATUS = 3 };

/* How a stream ended. */
enum { STREAM_BROKEN, STREAM_COMPACTED, STREAM_STOPPED };

struct etcd_watch_s {
  etcd_client_t *client;
  char *prefix, *end;
  size_t prefix_len, end_len;
  int progress_ms;
  etcd_watch_cb cb;
  void *data;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  atomic_int stop;

  /* Only the watch thread touches these. */
  int64_t next_rev;
  int connected;
  int reported_down;
};

/* The state of the stream being run; lives on the watch thread's stack. */
typedef struct stream_s {
  grpc_call *call;
  grpc_completion_queue *cq;
  int inflight;
  int sending;
  int created;
  int cancelled;
  int64_t watch_id;
  int64_t started, last_rx, last_progress;
  grpc_byte_buffer *send_bb, *recv_bb;
  grpc_metadata md;
  grpc_metadata_array initial_md, trailing_md;
  grpc_status_code status;
  grpc_slice details;
  char why[256];
  int outcome;
} stream_t;

static void *watch_main(void *arg);

int etcd_watch_start(etcd_client_t *c, const char *prefix, int64_t start_revision, int progress_ms,
                     etcd_watch_cb cb, void *data, etcd_watch_t **out)
{
  if (!prefix || !cb || start_revision < 0)
    return ETCD_EINVAL;
  etcd_watch_t *w = calloc(1, sizeof(*w));
  if (!w)
    return ETCD_ENOMEM;
  w->client = c;
  w->prefix_len = strlen(prefix);
  w->prefix = strdup(prefix);
  w->end = malloc(w->prefix_len + 1);
  if (!w->prefix || !w->end) {
    free(w->prefix);
    free(w->end);
    free(w);
    return ETCD_ENOMEM;
  }
  w->end_len = etcd_prefix_end(prefix, w->prefix_len, w->end);
  if (w->end_len == 0) { /* every key from prefix on */
    w->end[0] = '\0';
    w->end_len = 1;
  }
  w->progress_ms = progress_ms > 0 ? progress_ms : 1000;
  w->cb = cb;
  w->data = data;
  w->next_rev = start_revision;
  atomic_init(&w->stop, 0);
  pthread_mutex_init(&w->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w->wake, &ca);
  pthread_condattr_destroy(&ca);
  if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w->prefix);
    free(w->end);
    free(w);
    return ETCD_ENOMEM;
  }
  *out = w;
  return 0;
}

void etcd_watch_stop(etcd_watch_t *w)
{
  if (!w)
    return;
  pthread_mutex_lock(&w->lock);
  atomic_store(&w->stop, 1);
  pthread_cond_broadcast(&w->wake);
  pthread_mutex_unlock(&w->lock);
  pthread_join(w->thread, NULL);
  pthread_cond_destroy(&w->wake);
  pthread_mutex_destroy(&w->lock);
  free(w->prefix);
  free(w->end);
  free(w);
}

void etcd_watch_update_free(etcd_watch_update_t *u)
{
  if (!u)
    return;
  for (size_t i = 0; i < u->n_events; i++)
    etcd__kv_release(&u->events[i].kv);
  free(u->events);
  free(u);
}

/* ---- the thread -------------------------------------------------------------------------- */

static int run_stream(etcd_watch_t *w, size_t ep, char *why, size_t whylen);

static void deliver(etcd_watch_t *w, etcd_watch_update_t *u)
{
  w->cb(w->data, u);
}

static void notify(etcd_watch_t *w, etcd_watch_kind_t kind, int64_t revision, size_t ep,
                   const char *message)
{
  etcd_watch_update_t *u = calloc(1, sizeof(*u));
  if (!u)
    return;
  u->kind = kind;
  u->revision = revision;
  snprintf(u->endpoint, sizeof(u->endpoint), "%s", w->client->endpoints[ep]);
  snprintf(u->message, sizeof(u->message), "%s", message ? message : "");
  deliver(w, u);
}

/* Sleeps ms unless a stop request comes first. Returns 1 if stopping. */
static int pause_ms(etcd_watch_t *w, int ms)
{
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += ms / 1000;
  until.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&w->lock);
  while (!atomic_load(&w->stop) && pthread_cond_timedwait(&w->wake, &w->lock, &until) == 0)
    ;
  pthread_mutex_unlock(&w->lock);
  return atomic_load(&w->stop);
}

static void *watch_main(void *arg)
{
  etcd_watch_t *w = arg;
  int backoff = BACKOFF_MIN_MS;
  char why[256];

  while (!atomic_load(&w->stop)) {
    size_t ep = etcd__current(w->client);
    why[0] = '\0';
    int outcome = run_stream(w, ep, why, sizeof(why));
    if (outcome == STREAM_STOPPED || atomic_load(&w->stop))
      break;
    if (outcome == STREAM_COMPACTED) {
      /* Nothing more to deliver: wait for the owner to stop us. */
      while (!pause_ms(w, 1000))
        ;
      break;
    }
    if (w->connected || !w->reported_down)
      notify(w, ETCD_WATCH_DISCONNECTED, w->next_rev, ep, why);
    if (w->connected)
      backoff = BACKOFF_MIN_MS;
    w->connected = 0;
    w->reported_down = 1;
    etcd__fail_over(w->client, ep);
    if (pause_ms(w, backoff))
      break;
    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
  }
  return NULL;
}

/* ---- one stream -------------------------------------------------------------------------- */

static int send_request(stream_t *s, const Etcdserverpb__WatchRequest *req, int with_md)
{
  grpc_op ops[2];
  size_t n = 0;

  memset(ops, 0, sizeof(ops));
  if (with_md) {
    /* Wait for the channel to connect (our connect timer bounds it) rather than fail at once:
     * a pending call is also what makes gRPC poll the connection attempt on our queue. */
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].flags =
        GRPC_INITIAL_METADATA_WAIT_FOR_READY | GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
    ops[n].data.send_initial_metadata.count = 1;
    ops[n].data.send_initial_metadata.metadata = &s->md;
    n++;
  }
  s->send_bb = etcd__pack(&req->base);
  ops[n].op = GRPC_OP_SEND_MESSAGE;
  ops[n].data.send_message.send_message = s->send_bb;
  n++;
  if (grpc_call_start_batch(s->call, ops, n, (void *)(intptr_t)TAG_SEND, NULL) != GRPC_CALL_OK) {
    grpc_byte_buffer_destroy(s->send_bb);
    s->send_bb = NULL;
    return -1;
  }
  s->inflight++;
  s->sending = 1;
  return 0;
}

static int recv_next(stream_t *s, int first)
{
  grpc_op ops[2];
  size_t n = 0;

  memset(ops, 0, sizeof(ops));
  if (first) {
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
    n++;
  }
  ops[n].op = GRPC_OP_RECV_MESSAGE;
  ops[n].data.recv_message.recv_message = &s->recv_bb;
  n++;
  if (grpc_call_start_batch(s->call, ops, n, (void *)(intptr_t)TAG_RECV, NULL) != GRPC_CALL_OK)
    return -1;
  s->inflight++;
  return 0;
}

static void cancel(stream_t *s, int outcome, const char *why)
{
  if (s->cancelled)
    return;
  s->cancelled = 1;
  s->outcome = outcome;
  if (why)
    snprintf(s->why, sizeof(s->why), "%s", why);
  grpc_call_cancel(s->call, NULL);
}

/* Hands a response's events to the callback. Returns 0 or ETCD_ENOMEM. */
static int deliver_events(etcd_watch_t *w, const Etcdserverpb__WatchResponse *r)
{
  etcd_watch_update_t *u = calloc(1, sizeof(*u));
  if (!u || !(u->events = calloc(r->n_events, sizeof(*u->events)))) {
    free(u);
    return ETCD_ENOMEM;
  }
  u->kind = ETCD_WATCH_EVENTS;
  for (size_t i = 0; i < r->n_events; i++) {
    const Mvccpb__Event *e = r->events[i];
    if (!e->kv || e->kv->mod_revision < w->next_rev)
      continue; /* already delivered (cannot happen when etcd keeps its promise) */
    etcd_event_t *out = &u->events[u->n_events];
    out->is_delete = e->type == MVCCPB__EVENT__EVENT_TYPE__DELETE;
    if (etcd__kv_copy(&out->kv, e->kv) != 0) {
      etcd_watch_update_free(u);
      return ETCD_ENOMEM;
    }
    u->n_events++;
    u->revision = e->kv->mod_revision;
  }
  if (u->n_events == 0) {
    etcd_watch_update_free(u);
    return 0;
  }
  w->next_rev = u->revision + 1;
  deliver(w, u);
  return 0;
}

/* Handles one WatchResponse. */
static void on_response(etcd_watch_t *w, stream_t *s, size_t ep,
                        const Etcdserverpb__WatchResponse *r)
{
  if (r->compact_revision > 0) {
    notify(w, ETCD_WATCH_COMPACTED, r->compact_revision, ep, NULL);
    cancel(s, STREAM_COMPACTED, "compacted");
    return;
  }
  if (r->canceled) {
    char why[256];
    snprintf(why, sizeof(why), "watch cancelled by etcd: %s",
             r->cancel_reason && *r->cancel_reason ? r->cancel_reason : "no reason given");
    cancel(s, STREAM_BROKEN, why);
    return;
  }
  if (r->created && !s->created) {
    s->created = 1;
    s->watch_id = r->watch_id;
    w->connected = 1;
    w->reported_down = 0;
    notify(w, ETCD_WATCH_CONNECTED, w->next_rev, ep, NULL);
    return;
  }
  if (!s->created || r->watch_id != s->watch_id)
    return; /* an answer to a progress request: it only proves the stream is alive */
  if (r->n_events > 0) {
    if (deliver_events(w, r) != 0)
      cancel(s, STREAM_BROKEN, "out of memory");
    return;
  }
  int64_t rev = r->header ? r->header->revision : 0;
  if (rev >= w->next_rev) {
    w->next_rev = rev + 1;
    notify(w, ETCD_WATCH_PROGRESS, rev, ep, NULL);
  }
}

/* Starts the stream: the create request, the first receive and the status. */
static int open_stream(etcd_watch_t *w, stream_t *s, size_t ep)
{
  Etcdserverpb__WatchRequest req = ETCDSERVERPB__WATCH_REQUEST__INIT;
  Etcdserverpb__WatchCreateRequest create = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;

  create.key.data = (uint8_t *)(w->prefix_len ? w->prefix : "");
  create.key.len = w->prefix_len ? w->prefix_len : 1;
  create.range_end.data = (uint8_t *)w->end;
  create.range_end.len = w->end_len;
  create.start_revision = w->next_rev;
  create.progress_notify = 1;
  req.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
  req.create_request = &create;

  s->call = grpc_channel_create_call(w->client->channels[ep], NULL, GRPC_PROPAGATE_DEFAULTS, s->cq,
                                     grpc_slice_from_static_string("/etcdserverpb.Watch/Watch"),
                                     NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  if (!s->call)
    return -1;
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  op.data.recv_status_on_client.trailing_metadata = &s->trailing_md;
  op.data.recv_status_on_client.status = &s->status;
  op.data.recv_status_on_client.status_details = &s->details;
  if (grpc_call_start_batch(s->call, &op, 1, (void *)(intptr_t)TAG_STATUS, NULL) != GRPC_CALL_OK)
    return -1;
  s->inflight++;
  if (send_request(s, &req, 1) != 0 || recv_next(s, 1) != 0) {
    cancel(s, STREAM_BROKEN, "cannot start the watch stream");
    return 0;
  }
  return 0;
}

/* Time-driven checks between completions: stop, silence, progress requests. */
static void on_tick(etcd_watch_t *w, stream_t *s)
{
  int64_t now = etcd__now_ms();

  if (atomic_load(&w->stop)) {
    cancel(s, STREAM_STOPPED, "stopped");
    return;
  }
  if (s->cancelled)
    return;
  int64_t quiet = 3 * (int64_t)w->progress_ms;
  int64_t connect = w->client->timeout_ms > quiet ? w->client->timeout_ms : quiet;
  if (!s->created && now - s->started > connect) {
    cancel(s, STREAM_BROKEN, "no answer to the watch request");
    return;
  }
  if (s->created && now - s->last_rx > quiet) {
    cancel(s, STREAM_BROKEN, "the watch stream went silent");
    return;
  }
  if (s->created && !s->sending && now - s->last_progress >= w->progress_ms) {
    Etcdserverpb__WatchRequest req = ETCDSERVERPB__WATCH_REQUEST__INIT;
    Etcdserverpb__WatchProgressRequest pr = ETCDSERVERPB__WATCH_PROGRESS_REQUEST__INIT;
    req.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST;
    req.progress_request = &pr;
    s->last_progress = now;
    if (send_request(s, &req, 0) != 0)
      cancel(s, STREAM_BROKEN, "cannot send a progress request");
  }
}

static void on_recv(etcd_watch_t *w, stream_t *s, size_t ep, int ok)
{
  if (!ok || !s->recv_bb)
    return; /* the stream ended; its status follows */
  s->last_rx = etcd__now_ms();
  Etcdserverpb__WatchResponse *r = (Etcdserverpb__WatchResponse *)etcd__unpack(
      s->recv_bb, &etcdserverpb__watch_response__descriptor);
  grpc_byte_buffer_destroy(s->recv_bb);
  s->recv_bb = NULL;
  if (!r) {
    cancel(s, STREAM_BROKEN, "a watch response does not parse");
    return;
  }
  on_response(w, s, ep, r);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  if (!s->cancelled && recv_next(s, 0) != 0)
    cancel(s, STREAM_BROKEN, "cannot read the watch stream");
}

static int run_stream(etcd_watch_t *w, size_t ep, char *why, size_t whylen)
{
  stream_t s;
  int status_done = 0;

  memset(&s, 0, sizeof(s));
  s.cq = grpc_completion_queue_create_for_next(NULL);
  s.outcome = STREAM_BROKEN;
  s.started = s.last_rx = s.last_progress = etcd__now_ms();
  s.details = grpc_empty_slice();
  etcd__leader_metadata(&s.md);
  grpc_metadata_array_init(&s.initial_md);
  grpc_metadata_array_init(&s.trailing_md);

  if (open_stream(w, &s, ep) != 0) {
    snprintf(s.why, sizeof(s.why), "cannot create the watch call");
    if (s.call)
      cancel(&s, STREAM_BROKEN, NULL);
  }
  while (s.inflight > 0) {
    gpr_timespec until =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(POLL_MS, GPR_TIMESPAN));
    grpc_event ev = grpc_completion_queue_next(s.cq, until, NULL);
    if (ev.type == GRPC_OP_COMPLETE) {
      s.inflight--;
      switch ((intptr_t)ev.tag) {
      case TAG_SEND:
        s.sending = 0;
        grpc_byte_buffer_destroy(s.send_bb);
        s.send_bb = NULL;
        break;
      case TAG_RECV:
        on_recv(w, &s, ep, ev.success);
        break;
      case TAG_STATUS:
        status_done = 1;
        break;
      }
    }
    if (!status_done)
      on_tick(w, &s);
  }

  if (!s.cancelled) {
    char details[200];
    size_t n = GRPC_SLICE_LENGTH(s.details) < sizeof(details) - 1 ? GRPC_SLICE_LENGTH(s.details)
                                                                  : sizeof(details) - 1;
    memcpy(details, GRPC_SLICE_START_PTR(s.details), n);
    details[n] = '\0';
    for (char *p = details; *p; p++)
      if (*p == '\n' || *p == '\r')
        *p = ' ';
    snprintf(s.why, sizeof(s.why), "watch stream ended (status %d): %s", (int)s.status, details);
  }
  snprintf(why, whylen, "%s", s.why);
  if (s.recv_bb)
    grpc_byte_buffer_destroy(s.recv_bb);
  grpc_slice_unref(s.details);
  grpc_metadata_array_destroy(&s.initial_md);
  grpc_metadata_array_destroy(&s.trailing_md);
  if (s.call)
    grpc_call_unref(s.call);
  grpc_completion_queue_shutdown(s.cq);
  while (grpc_completion_queue_next(s.cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN)
    ;
  grpc_completion_queue_destroy(s.cq);
  return s.outcome;
}
