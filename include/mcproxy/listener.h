/*
 * listener: one listening address and the life of every connection accepted on it.
 *
 * For each accepted connection, in this order: the connection limit (FIN when full), the PROXY
 * header when the listener expects one, the firewall (RST when blocked), the per-client limits
 * (FIN when over), the ClientHello (read until complete, within the handshake timeout), the
 * route (exact SNI, else the longest wildcard, else the fallback), the backend connect (within
 * the connect timeout), then a bidirectional relay with bounded buffers, half-close and an idle
 * timeout. See docs/ARCHITECTURE.md.
 *
 * Threading: a listener lives on the uv_loop_t it was created with. Every function here must be
 * called on that loop's thread, except where its comment says otherwise. Route tables and firewalls are immutable snapshots shared by
 * reference count (see routes.h, firewall.h); publishing a new one never disturbs established
 * connections.
 */
#ifndef MCPROXY_LISTENER_H
#define MCPROXY_LISTENER_H

#include <stdint.h>
#include <uv.h>

#include "mcproxy/client_limits.h"
#include "mcproxy/conn.h"
#include "mcproxy/error.h"
#include "mcproxy/firewall.h"
#include "mcproxy/routes.h"

/* Signals: libmcproxy never installs a signal handler or changes a signal mask. It writes to
 * sockets with send(2) (MSG_NOSIGNAL) and splice(2), and splice raises SIGPIPE when a peer has
 * gone, so a program that runs listeners must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) before
 * it starts one. */
#ifdef __cplusplus
extern "C" {
#endif

typedef struct mcp_listener_s mcp_listener_t;

/*
 * Descriptors the listeners leave to the rest of the process (half of RLIMIT_NOFILE when that
 * is below twice this): at the reserve, accepting pauses until descriptors are free again, so
 * an admin API in the same process can always accept. See docs/RUNBOOK.md.
 */
#define MCP_LISTENER_FD_RESERVE 32

typedef struct mcp_listener_config_s {
  const char *addr;               /* "0.0.0.0:443", "[::]:443", "127.0.0.1:8443" */
  uint64_t handshake_timeout_ms;  /* 0 picks 10 s */
  uint64_t connect_timeout_ms;    /* 0 picks 5 s */
  uint64_t idle_timeout_ms;       /* 0 picks 5 min */
  int64_t max_connections;        /* 0 = unlimited */
  /*
   * 0: relay bulk data with splice(2) through a pipe shared by the loop, so the bytes never
   * cross into user space (Linux; falls back to copying when no pipe can be had).
   * 1: always copy through a user-space buffer (read/write).
   */
  int copy_relay;
  /*
   * Several loops may serve one address: give each its own listener with reuseport set (each
   * gets its own SO_REUSEPORT socket and the kernel spreads connections over them), and pass the
   * first listener as share_with when creating the others. Listeners sharing an address share
   * one connection count and one set of counters, so max_connections holds exactly across loops
   * and mcp_listener_get_stats() shows totals. Create them all before any of their loops runs.
   */
  int reuseport;
  mcp_listener_t *share_with;
  /*
   * 0 or -1: mcp_listener_start binds a socket of its own. Greater than 0: a socket that is
   * already bound and listening (inherited from the process before a reload); start adopts it
   * instead of binding: no probe, no bind, its queued connections are kept. The listener owns
   * it once start returned 0; on an error the caller still does.
   */
  int fd;
  /* Called on the loop thread when a connection ends; may be NULL. */
  void (*on_conn_end)(void *data, const mcp_conn_record_t *rec);
  /*
   * Called on the loop thread with a one-line message (no newline) for what an operator should
   * see and no call returns: err < 0 (a libuv code) when accepting stopped (an error on the
   * listening socket: it restarts by itself after 100 ms; the descriptor reserve reached:
   * UV_EMFILE), err == 0 when it resumed. May be NULL.
   */
  void (*on_error)(void *data, int err, const char *msg);
  void *data; /* passed to on_conn_end and on_error */
} mcp_listener_config_t;

typedef struct mcp_listener_stats_s {
  int64_t active_connections;
  int64_t max_connections;
  int64_t accepted_total;
  int64_t rejected_limit_total;
  int64_t blocked_total;
  int64_t unrouted_total;
  int64_t error_total;         /* outcome error: reset or I/O error while relaying */
  int64_t timeout_total;       /* outcome timeout: handshake or idle timeout */
  int64_t backend_error_total; /* outcome backend_error: connect failed or timed out */
  int64_t shutdown_total;      /* outcome shutdown: cut by mcp_listener_close_connections */
  int64_t accept_errors_total; /* errors on the listening socket (accepting restarts) */
  int64_t route_count;
  int64_t proxy_error_total;  /* outcome proxy_error: untrusted peer, bad/slow PROXY header */
  int64_t rate_limited_total; /* outcome rate_limited: over a per-client limit */
  int64_t fallback_total;     /* connections routed to the fallback backend */
} mcp_listener_stats_t;

/*
 * Parses a listener address ("IPv4:port" or "[IPv6]:port", decimal port 0-65535; 0 asks the
 * kernel for a free port, which tests use) into out and writes its canonical text (as stored
 * and shown) to text (64 bytes, may be NULL). Returns 0 or MCP_EINVAL.
 */
int mcp_listener_addr_parse(const char *addr, struct sockaddr_storage *out, char *text);

/*
 * Creates a listener on loop (not yet listening). The config is copied. It starts with an empty
 * route table and no firewall. Unless copy_relay is set it opens its splice pipe (two
 * descriptors, held until mcp_listener_free). Returns 0, MCP_EINVAL for a bad address or a
 * negative max_connections, or MCP_ENOMEM. Freed with mcp_listener_free().
 */
int mcp_listener_new(uv_loop_t *loop, const mcp_listener_config_t *cfg, mcp_listener_t **out);

/*
 * Binds and listens (a socket of its own, watched with a uv_poll_t on the listener's loop).
 * With reuseport and no share_with it first checks with a plain socket that nothing else holds
 * the address, so a second process cannot silently share the port. Returns 0 or a libuv error
 * (UV_EADDRINUSE, UV_EACCES, ...).
 */
int mcp_listener_start(mcp_listener_t *l);

/* The canonical listen address. */
const char *mcp_listener_addr(const mcp_listener_t *l);
/* The bound address (after start; useful with port 0 in tests). */
int mcp_listener_sockname(const mcp_listener_t *l, struct sockaddr_storage *out);

/*
 * Publishes a new route table: takes a reference to routes and drops the one on the old table.
 * New connections route with it from the next lookup on.
 */
void mcp_listener_set_routes(mcp_listener_t *l, mcp_routes_t *routes);
/* The current table (borrowed: valid until the next set_routes on this thread). */
mcp_routes_t *mcp_listener_routes(const mcp_listener_t *l);

/*
 * Seals fw (see mcp_firewall_seal: thread-safe, so listeners on several loops may be given the
 * same firewall at once) and publishes it (takes a reference; NULL means no firewall). Returns
 * 0 or the seal's error (the old firewall then stays).
 */
int mcp_listener_set_firewall(mcp_listener_t *l, mcp_firewall_t *fw);

/*
 * PROXY protocol in. With on set, every new connection must start with one PROXY v1 or v2
 * header from a peer that trusted matches: trusted is a sealed firewall whose IP and CIDR rules
 * name the peers allowed to send one (a peer it does not match is reset, outcome proxy_error);
 * the header's source address then stands for the client in the firewall, the per-client
 * limits, the record and any PROXY header sent to the backend. A header that is malformed,
 * truncated or not complete within the handshake timeout closes the connection (proxy_error).
 * Takes a reference to trusted (NULL: nobody; with on, every connection is refused). Returns 0,
 * or MCP_EINVAL for on without trusted. Loop thread; applies to new connections.
 */
int mcp_listener_set_proxy_protocol(mcp_listener_t *l, int on, mcp_firewall_t *trusted);
/* Whether l expects a PROXY header, and its trusted peers (borrowed, may be NULL). Loop thread. */
int mcp_listener_proxy_protocol(const mcp_listener_t *l, mcp_firewall_t **trusted);

/*
 * Per-client limits (client_limits.h: rate and concurrent connections per client key), shared
 * by every listener of the address, exact across loops. A connection over either limit is
 * closed at once (FIN, outcome rate_limited). All zero turns them off. Any thread. Returns 0,
 * the errors of mcp_client_limits_check, or MCP_ENOMEM (the first time a limit is set the table
 * is allocated: MCP_CLIENT_LIMITS_MAX_BYTES of the default size at most).
 */
int mcp_listener_set_client_limits(mcp_listener_t *l, const mcp_client_limits_settings_t *s);

/*
 * Changes the connection limit (shared by listeners of the same address); existing connections
 * are never closed by a lower limit. Any thread: the limit is an atomic.
 */
void mcp_listener_set_max_connections(mcp_listener_t *l, int64_t max_connections);

/*
 * Counters (totals across listeners sharing an address) and route_count (this listener's
 * table). Loop thread: the counters are atomics, but route_count reads the current table.
 */
void mcp_listener_get_stats(const mcp_listener_t *l, mcp_listener_stats_t *out);

/* The listening socket's descriptor, or -1 before start and after stop. */
int mcp_listener_fd(const mcp_listener_t *l);

/* Stops accepting (closes the listening socket); active connections go on. */
void mcp_listener_stop(mcp_listener_t *l);

/* Closes every active connection at once (outcome shutdown). */
void mcp_listener_close_connections(mcp_listener_t *l);

/*
 * Stops accepting, closes every connection and frees the listener once all its handles have
 * closed; done (may be NULL) is then called on the loop thread.
 */
void mcp_listener_free(mcp_listener_t *l, void (*done)(void *data), void *data);

#ifdef __cplusplus
}
#endif

#endif
