/*
 * conn: what a listener reports about each connection when it ends (see listener.h,
 * mcp_listener_config_t.on_conn_end). The connection object itself is internal (lib/conn.c).
 */
#ifndef MCPROXY_CONN_H
#define MCPROXY_CONN_H

#include <stddef.h>
#include <stdint.h>

/* Signals: libmcproxy never installs a signal handler or changes a signal mask. It writes to
 * sockets with send(2) (MSG_NOSIGNAL) and splice(2), and splice raises SIGPIPE when a peer has
 * gone, so a program that runs listeners must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) before
 * it starts one. */
#ifdef __cplusplus
extern "C" {
#endif

/* How a connection ended, as logged in outcome=. */
typedef enum mcp_conn_outcome_e {
  MCP_CONN_OUTCOME_OK = 0,
  MCP_CONN_OUTCOME_LIMIT,
  MCP_CONN_OUTCOME_BLOCKED,
  MCP_CONN_OUTCOME_UNROUTED,
  MCP_CONN_OUTCOME_TIMEOUT,
  MCP_CONN_OUTCOME_BACKEND_ERROR, /* connect failed or timed out */
  MCP_CONN_OUTCOME_ERROR,         /* a reset or a read/write error during the relay */
  MCP_CONN_OUTCOME_SHUTDOWN,      /* cut by mcp_listener_close_connections (end of a drain) */
  MCP_CONN_OUTCOME_PROXY_ERROR,   /* reserved: a bad or missing PROXY header */
  MCP_CONN_OUTCOME_RATE_LIMITED,  /* reserved: refused by a per-client rate limit */
} mcp_conn_outcome_t;

/* "ok", "limit", "blocked", "unrouted", "timeout", "backend_error", "error", "shutdown",
 * "proxy_error", "rate_limited"; "-" for a value outside the enum. */
const char *mcp_conn_outcome_name(mcp_conn_outcome_t outcome);

/* What is known about a connection when it ends. Strings are "-" when unknown. */
typedef struct mcp_conn_record_s {
  const char *listener;
  const char *client;  /* "ip:port" or "[ip]:port" */
  const char *sni;
  const char *backend;
  mcp_conn_outcome_t outcome;
  uint64_t bytes_in;   /* client -> backend, ClientHello included */
  uint64_t bytes_out;  /* backend -> client */
  uint64_t duration_ms;
  /* Microseconds from accept to the route decision (a backend chosen, or none found), rounded
   * up so that 0 means "never got that far" (closed before a ClientHello was complete). */
  uint64_t handshake_us;
  /* Microseconds from the route decision to an established backend connection (a name
   * lookup included), rounded up; 0 when no backend connection was established. */
  uint64_t backend_connect_us;
} mcp_conn_record_t;

/*
 * Formats rec as one log line without a newline:
 * "listener=... client=... sni=... backend=... outcome=... bytes_in=N bytes_out=N duration_ms=N".
 * Returns the length snprintf would have written.
 */
int mcp_conn_record_format(const mcp_conn_record_t *rec, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
