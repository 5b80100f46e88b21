/*
 * What etcd_client.c (channels, unary calls) shares with etcd_kv.c (Range and Txn messages) and
 * etcd_watch.c (the watch thread). Not for other files: they use etcd_client.h.
 */
#ifndef MCP_ETCD_CLIENT_INTERNAL_H
#define MCP_ETCD_CLIENT_INTERNAL_H

#include <stdatomic.h>

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

#include "etcd/api/mvccpb/kv.pb-c.h"
#include "etcd_client.h"

/*
 * The client: immutable after open except for current, the index of the endpoint calls go to,
 * which any thread may move on (compare-and-swap, so two threads failing at once move it once).
 */
struct etcd_client_s {
  size_t n;
  char *endpoints[ETCD_MAX_ENDPOINTS]; /* as given, for messages */
  grpc_channel *channels[ETCD_MAX_ENDPOINTS];
  atomic_size_t current;
  int timeout_ms;
};

/* The endpoint index calls should use now. */
size_t etcd__current(etcd_client_t *c);
/* Moves current on from failed (if nobody else already did). */
void etcd__fail_over(etcd_client_t *c, size_t failed);

/* The metadata every call sends: "hasleader: true", so a member cut off from the leader refuses
 * the call (or ends the watch) instead of serving stale data or hanging. */
void etcd__leader_metadata(grpc_metadata *md);

/*
 * One unary call with failover: each endpoint at most once, from the current one, each attempt
 * bounded by the client's timeout. A read moves on after any transport failure or timeout; a
 * write (is_write) only when it certainly was not applied. Returns 0 with *resp set (free it
 * with protobuf_c_message_free_unpacked), or an ETCD_E* code with err filled in.
 */
int etcd__call(etcd_client_t *c, const char *path, const ProtobufCMessage *req,
               const ProtobufCMessageDescriptor *desc, int is_write, ProtobufCMessage **resp,
               char *err, size_t errlen);

/* A packed message as a byte buffer the caller destroys. */
grpc_byte_buffer *etcd__pack(const ProtobufCMessage *msg);
/* Unpacks a received buffer; NULL if it does not parse. Free with protobuf_c_message_free_unpacked.
 */
ProtobufCMessage *etcd__unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc);

/* Copies a protobuf KeyValue into kv (NUL-terminated key and value). 0 or ETCD_ENOMEM. */
int etcd__kv_copy(etcd_kv_t *kv, const Mvccpb__KeyValue *src);
void etcd__kv_release(etcd_kv_t *kv);

/* Milliseconds on the monotonic clock. */
int64_t etcd__now_ms(void);

#endif
