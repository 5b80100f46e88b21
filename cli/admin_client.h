/*
 * admin_client: a small blocking gRPC client for ProxyAdminService (proto/mc_proxy/v1/admin.proto),
 * used by the admin commands. Unary calls only, each with a deadline, over a unix socket (no TLS)
 * or TCP with TLS (optionally presenting a client certificate for mTLS).
 *
 * One client per command invocation, used from one thread. It calls grpc_init() on open and
 * grpc_shutdown() on close.
 */
#ifndef MCP_CLI_ADMIN_CLIENT_H
#define MCP_CLI_ADMIN_CLIENT_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

/* Default deadline of every call. */
#define ADMIN_CLIENT_TIMEOUT_MS 5000

typedef struct admin_client_opts_s {
  const char *target; /* "unix:/path" or "host:port" */
  /* TCP only. ca NULL: the system's roots. cert/key both set or both NULL. */
  const char *ca_path;
  const char *cert_path;
  const char *key_path;
  int timeout_ms; /* 0 picks ADMIN_CLIENT_TIMEOUT_MS */
} admin_client_opts_t;

typedef struct admin_client_s admin_client_t;

/*
 * Creates a channel (it connects lazily, on the first call). Returns 0, or -1 with a message in
 * err (unreadable credential files).
 */
int admin_client_open(const admin_client_opts_t *opts, admin_client_t **out, char *err,
                      size_t errlen);

/*
 * Calls method (e.g. "GetStatus") with req and waits for the reply, at most the deadline.
 * Returns the gRPC status code (0 = OK). On OK, *resp is the unpacked reply (free it with
 * protobuf_c_message_free_unpacked(*resp, NULL)); otherwise *resp is NULL and msg holds the
 * server's message (one line).
 */
int admin_client_call(admin_client_t *c, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                      char *msg, size_t msglen);

void admin_client_close(admin_client_t *c);

/* "OK", "CANCELLED", ..., "UNAUTHENTICATED": the canonical name of a gRPC status code. */
const char *admin_status_name(int code);

#endif
