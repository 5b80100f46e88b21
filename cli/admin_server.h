/*
 * admin_server: the transport of the admin API (proto/mc_proxy/v1/admin.proto), served with
 * gRPC core's C API: start and stop, the completion-queue thread, TLS credentials and the lock on
 * a unix socket path. It knows nothing of routes or rules: the methods it serves come from a
 * table (admin_rpc.c has mc-proxy's), each run on the loop thread with the unpacked request and
 * answered with admin_call_reply(), at once or later (after a database write).
 */
#ifndef MCP_CLI_ADMIN_SERVER_H
#define MCP_CLI_ADMIN_SERVER_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>
#include <uv.h>

#include "config.h"

typedef struct admin_server_s admin_server_t;
typedef struct admin_call_s admin_call_t;

/* One method of the service. */
typedef struct admin_method_s {
  const char *name;                        /* "GetStatus": the path is /SERVICE/name */
  const ProtobufCMessageDescriptor *input; /* the request type */
  /* Runs on the loop thread; must answer call with admin_call_reply(), now or later. */
  void (*run)(void *ctx, admin_call_t *call);
} admin_method_t;

/*
 * Serves methods (nmethods entries, which must outlive the server) on cfg's [grpc] addr, calling
 * each method's run with ctx. Loop thread, after the listeners have started. Returns 0 and sets
 * *out, or -1 with a message in err (bad certs, address in use, a live unix socket owned by
 * another instance).
 */
int admin_server_start(uv_loop_t *loop, const config_t *cfg, const admin_method_t *methods,
                       size_t nmethods, void *ctx, admin_server_t **out, char *err, size_t errlen);

/*
 * Stops accepting calls, cancels those in flight (calls not answered yet are cancelled with
 * UNAVAILABLE and become orphans, see admin_call_live), joins the completion-queue thread and
 * frees everything. Loop thread. Does nothing when a is NULL.
 */
void admin_server_stop(admin_server_t *a);

/* The call's unpacked request, of its method's input type. Loop thread, until the reply. */
const ProtobufCMessage *admin_call_request(const admin_call_t *call);

/* The method's name ("AddRoute"). */
const char *admin_call_method(const admin_call_t *call);

/*
 * 0 once the server stopped while the call waited for its answer (it was cancelled; a reply
 * only frees it), else 1.
 */
int admin_call_live(const admin_call_t *call);

/* Writes the client's address ("ipv4:127.0.0.1:5000", "unix:") to buf, or "?". */
void admin_call_peer(const admin_call_t *call, char *buf, size_t len);

/*
 * Answers call with status (a grpc_status_code) and, when it is OK, resp (NULL: an empty
 * message); msg is the status message (may be NULL). The call belongs to the transport again and
 * must not be used after this. Loop thread.
 */
void admin_call_reply(admin_call_t *call, int status, const char *msg,
                      const ProtobufCMessage *resp);

#endif
