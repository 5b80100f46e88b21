/*
 * Internal to the listener module (lib/listener.c and lib/relay.c): the listener and connection
 * structs, the buffer pool and the per-listener timeout lists.
 */
#ifndef MCPROXY_LISTENER_INTERNAL_H
#define MCPROXY_LISTENER_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "mcproxy/listener.h"
#include "mcproxy/sni.h"

/*
 * Buffers come from two pools of fixed-size chunks: hello chunks hold the largest ClientHello
 * the parser accepts; relay chunks hold what one relay read or one splice moves (64 KiB, the
 * default capacity of a Linux pipe).
 */
#define MCP__HELLO_CHUNK MCP_SNI_MAX_INPUT
#define MCP__RELAY_CHUNK 65536
/* Chunks kept on a pool's free list; more are returned to malloc. */
#define MCP__POOL_KEEP 64
/* Connection objects kept on a listener's free list. */
#define MCP__CONN_KEEP 256

typedef struct mcp__pool_s mcp__pool_t;

/*
 * A pool chunk. Its header is the free-list link while pooled and the write request while its
 * bytes are being written, so a connection carries no write request of its own: an idle
 * connection costs neither a buffer nor a request.
 */
typedef struct mcp__chunk_s {
  union {
    struct mcp__chunk_s *next;
    uv_write_t wreq;
  } u;
  mcp__pool_t *pool;
  char data[];
} mcp__chunk_t;

struct mcp__pool_s {
  mcp__chunk_t *free;
  int len;
  size_t size; /* bytes of data per chunk */
};

#define MCP__CHUNK_OF(ptr) ((mcp__chunk_t *)((char *)(ptr) - offsetof(mcp__chunk_t, data)))

/* Which timeout list a connection is on. */
enum {
  MCP__T_NONE = -1,
  MCP__T_HANDSHAKE = 0,
  MCP__T_CONNECT = 1,
  MCP__T_IDLE = 2,
  MCP__T_COUNT = 3,
};

typedef struct mcp__conn_s mcp__conn_t;

/*
 * The limit and counters of one listen address. Listeners on the same address in several worker
 * loops (SO_REUSEPORT) share one, so max_connections holds exactly across loops and status
 * shows totals; hence atomics. Freed with its last listener.
 */
typedef struct mcp__counters_s {
  atomic_int_fast64_t refs;
  atomic_int_fast64_t max_connections;
  atomic_int_fast64_t active;
  atomic_int_fast64_t accepted_total;
  atomic_int_fast64_t rejected_limit_total;
  atomic_int_fast64_t blocked_total;
  atomic_int_fast64_t unrouted_total;
} mcp__counters_t;

#define MCP__COUNT(l, field, n) atomic_fetch_add_explicit(&(l)->counters->field, (n), memory_order_relaxed)

/* A DNS lookup in flight. Freed by its callback, which may run after the connection is gone. */
typedef struct mcp__gai_s {
  uv_getaddrinfo_t req;
  mcp__conn_t *conn; /* NULL once the connection has closed */
} mcp__gai_t;

/*
 * A list of connections that all share one timeout. Entries are appended with key = now, so the
 * list stays ordered by deadline (key + timeout) and only its head needs checking.
 */
typedef struct mcp__tlist_s {
  mcp__conn_t *head, *tail;
  uint64_t timeout_ms;
} mcp__tlist_t;

/* One direction of the relay: bytes read from src are written to dst. */
typedef struct mcp__pipe_s {
  mcp__chunk_t *pending; /* the chunk being written to dst, else NULL */
  uint8_t eof;       /* src reached EOF */
  uint8_t shut;      /* shutdown of dst requested */
  uint8_t shut_done; /* that shutdown completed */
} mcp__pipe_t;

/*
 * One accepted connection. Allocated from the listener's free list at accept, returned after
 * both handles have closed. Loop thread only.
 */
struct mcp__conn_s {
  mcp_listener_t *l;
  mcp__conn_t *tprev, *tnext; /* timeout list links */
  uint64_t tkey;              /* when it was (re)appended to its list */
  int tlist;                  /* MCP__T_* */

  uv_tcp_t client;
  uv_tcp_t backend;
  union {
    uv_connect_t connect;
    uv_shutdown_t shutdown[2]; /* [0] backend write side, [1] client write side */
  } req;

  mcp__chunk_t *hello; /* the ClientHello bytes until forwarded */
  uint32_t hello_len;
  mcp_sni_t sni_state;

  mcp__pipe_t up;   /* client -> backend */
  mcp__pipe_t down; /* backend -> client */

  struct sockaddr_in6 client_addr; /* large enough for either family */
  uint64_t started_ms;
  uint64_t bytes_in, bytes_out;
  mcp__gai_t *gai; /* pending DNS lookup, if any */

  uint8_t closing;
  uint8_t handles_open;   /* close callbacks still to come */
  uint8_t backend_inited;
  uint8_t counted;        /* counted in the listener's active connections */
  uint8_t relaying;
  uint8_t outcome;        /* mcp_outcome_t */

  char sni[MCP_HOSTNAME_MAX + 1];
  char backend_text[MCP_BACKEND_MAX];
};

struct mcp_listener_s {
  uv_loop_t *loop;
  int fd;                   /* the listening socket; -1 until started and after stop */
  uv_poll_t accept_poll;    /* readable: connections are waiting to be accepted */
  uv_timer_t accept_pause;  /* accepting paused while out of descriptors */
  uv_timer_t timer;         /* the timeout lists */
  uint64_t timer_due;       /* 0 when not armed */
  int listening;
  int handles_open;         /* handles whose close callback is still to come */
  int freeing;
  int64_t conns_live; /* allocated connection objects, closing ones included */
  void (*free_done)(void *data);
  void *free_data;

  struct sockaddr_storage addr;
  char addr_text[64];
  mcp_listener_config_t cfg;

  mcp_routes_t *routes;
  mcp_firewall_t *firewall;

  /* Every live connection is on exactly one of these lists. */
  mcp__tlist_t tlists[MCP__T_COUNT];

  mcp__pool_t hello_pool;
  mcp__pool_t relay_pool;
  /*
   * The loop's splice pipe, or -1 when the relay copies through user space. It is empty
   * whenever control is back in the loop: whatever a splice puts in is spliced out or read
   * back out before the callback returns, so every connection on the loop can share it.
   */
  int splice_r, splice_w;
  mcp__conn_t *conn_free;
  int conn_free_len;

  mcp__counters_t *counters; /* shared with the listeners on the same address, if any */
};

/* Buffer pools (relay.c). */
mcp__chunk_t *mcp__chunk_get(mcp__pool_t *pool);
void mcp__chunk_put(mcp__chunk_t *chunk);
void mcp__pool_drain(mcp__pool_t *pool);

/* Timeout lists (relay.c). */
void mcp__timeout_set(mcp__conn_t *c, int tlist);
void mcp__timeout_touch(mcp__conn_t *c);
void mcp__timeout_clear(mcp__conn_t *c);
void mcp__timer_cb(uv_timer_t *t);

/* Relay (relay.c): connect to the routed backend, forward the ClientHello, relay both ways. */
void mcp__relay_connect(mcp__conn_t *c, const mcp_backend_t *backend);

/* Ends a connection with an outcome (listener.c). Safe to call more than once. */
void mcp__conn_close(mcp__conn_t *c, mcp_outcome_t outcome);

#endif
