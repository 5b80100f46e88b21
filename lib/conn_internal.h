/*
 * Internal: the connection object and what a listener keeps for its connections (lib/conn.c).
 *
 * Both lib/listener.c (accept to route) and lib/relay.c (connect and relay) use this module;
 * it uses neither of them, so a connection's path through the files runs one way:
 * listener.c -> conn.c <- relay.c. See docs/ARCHITECTURE.md.
 */
#ifndef MCPROXY_CONN_INTERNAL_H
#define MCPROXY_CONN_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <uv.h>

#include "mcproxy/backend.h"
#include "mcproxy/client_limits.h"
#include "mcproxy/conn.h"
#include "mcproxy/sni.h"

/*
 * Relay buffers come from a pool of fixed-size chunks, each holding what one relay read or one
 * splice moves (64 KiB, the default capacity of a Linux pipe). A ClientHello is read into a
 * chunk of no pool that grows with what has arrived, up to MCP__HELLO_CHUNK, the largest the
 * parser accepts (lib/listener.c).
 */
#define MCP__HELLO_CHUNK MCP_SNI_MAX_INPUT
#define MCP__RELAY_CHUNK 65536
/* Chunks kept on a pool's free list; more are returned to malloc. */
#define MCP__POOL_KEEP 64
/* Connection objects kept on a free list; more are returned to malloc. */
#define MCP__CONN_KEEP 256

/* ---- buffer pools ---- */

typedef struct mcp__pool_s mcp__pool_t;

/*
 * A pool chunk. A connection holds one only while a read is being written on or a write is
 * pending, so an idle connection costs no buffer.
 */
typedef struct mcp__chunk_s {
  struct mcp__chunk_s *next; /* the free-list link while pooled */
  mcp__pool_t *pool;         /* NULL: not from a pool, mcp__pool_put frees it */
  char data[];
} mcp__chunk_t;

/* Chunks of one size. Loop thread only; zero-initialise it and set size before use. */
struct mcp__pool_s {
  mcp__chunk_t *free;
  int len;
  size_t size; /* bytes of data per chunk */
};

#define MCP__CHUNK_OF(ptr) ((mcp__chunk_t *)((char *)(ptr) - offsetof(mcp__chunk_t, data)))

/* A chunk from the pool's free list, else a new one; NULL when out of memory. */
mcp__chunk_t *mcp__pool_get(mcp__pool_t *pool);
/* Gives a chunk back to its pool (freed when the pool already keeps enough). NULL is ok. */
void mcp__pool_put(mcp__chunk_t *chunk);

/* ---- counters ---- */

/*
 * The limit and counters of one listen address. Listeners on the same address in several worker
 * loops (SO_REUSEPORT) share one, so max_connections holds exactly across loops and status
 * shows totals; hence atomics. Allocated by the first listener of the address, freed with its
 * last one.
 */
typedef struct mcp__counters_s {
  atomic_int_fast64_t refs;
  atomic_int_fast64_t max_connections;
  /*
   * The address's per-client table (client_limits.h), shared by its loops like the counters:
   * made by the first mcp_listener_set_client_limits that turns a limit on, freed with the
   * counters. climits_on is 0 while every limit is off, so the accept path then skips it.
   */
  _Atomic(mcp_client_limits_t *) climits;
  atomic_int climits_on;
  atomic_int_fast64_t proxy_error_total;  /* outcome proxy_error */
  atomic_int_fast64_t rate_limited_total; /* outcome rate_limited */
  atomic_int_fast64_t fallback_total;     /* routed to the listener's fallback */
  atomic_int_fast64_t active;
  atomic_int_fast64_t accepted_total;
  atomic_int_fast64_t rejected_limit_total;
  atomic_int_fast64_t blocked_total;
  atomic_int_fast64_t unrouted_total;
  /* Counted by mcp__conn_close from the outcome. */
  atomic_int_fast64_t error_total;
  atomic_int_fast64_t timeout_total;
  atomic_int_fast64_t backend_error_total;
  atomic_int_fast64_t shutdown_total;
  atomic_int_fast64_t accept_errors_total; /* errors on the listening socket itself */
} mcp__counters_t;

/* Adds n to a counter and returns the value before. */
#define MCP__COUNT(k, field, n) atomic_fetch_add_explicit(&(k)->field, (n), memory_order_relaxed)

/* ---- connections ---- */

typedef struct mcp__conn_s mcp__conn_t;

/* Which timeout list a connection is on. */
enum {
  MCP__T_NONE = -1,
  MCP__T_HANDSHAKE = 0,
  MCP__T_CONNECT = 1,
  MCP__T_IDLE = 2,
  MCP__T_COUNT = 3,
};

/*
 * A list of connections that all share one timeout. Entries are appended with key = now, so the
 * list stays ordered by deadline (key + timeout) and only its head needs checking.
 */
typedef struct mcp__tlist_s {
  mcp__conn_t *head, *tail;
  uint64_t timeout_ms;
} mcp__tlist_t;

/*
 * Everything one listener keeps for its connections: the event set their sockets are on, the
 * buffer pools, the timeout lists and their timer, its splice pipe, a free list of connection
 * objects and the count of live ones. Embedded in the listener; initialised by
 * mcp__conns_init, released by mcp__conns_finish once no connection is live and the handles
 * (mcp__conns_close_handles) have closed. Loop thread only.
 */
typedef struct mcp__conn_slot_s mcp__conn_slot_t;

typedef struct mcp__conns_s {
  uv_loop_t *loop;
  /*
   * The event set: a private epoll instance holding the sockets of these connections, each
   * added once, edge-triggered, for reading and writing; closing a socket takes it out. libuv
   * watches the set itself through events (readable when a socket in it has an event), so the
   * sockets cost no libuv handle, no FIONBIO, no SO_ERROR and no EPOLL_CTL_DEL (conn.c).
   */
  int epfd;
  uv_poll_t events;
  uv_idle_t again;        /* runs the again list: sockets left readable for fairness */
  mcp__conn_t *again_head;    /* asked for again (mcp__conn_again), doubly linked */
  mcp__conn_t *again_running; /* the list being run now (conn.c, on_again) */
  int dispatching;        /* inside a batch of events: releases wait for its end */
  mcp__conn_t *released;  /* closed during the batch, released at its end (linked by tnext) */
  /* Connections by slot: an event names a slot and a generation, so a stale one is ignored. */
  mcp__conn_slot_t *slots;
  uint32_t nslots, slot_free; /* slot_free: first free slot, or UINT32_MAX */
  uint32_t gen;

  uv_timer_t timer;   /* the timeout lists; timer.data is this struct */
  uint64_t timer_due; /* 0 when not armed */
  /* Every live connection that is not closing is on exactly one of these lists. */
  mcp__tlist_t tlists[MCP__T_COUNT];

  mcp__pool_t relay_pool;
  /*
   * The loop's splice pipe, or -1 when the relay copies through user space. It is empty
   * whenever control is back in the loop: whatever a splice puts in is spliced out or read
   * back out before the callback returns, so every connection on the loop can share it.
   */
  int splice_r, splice_w;

  mcp__conn_t *free; /* released connection objects, linked through tnext */
  int free_len;
  int64_t live; /* allocated connection objects, closing ones included */

  mcp__counters_t *counters; /* the owner's; shared with listeners on the same address */
  const char *name;          /* the listen address, for records */
  void (*on_end)(void *data, const mcp_conn_record_t *rec); /* may be NULL */
  void *data;
  /* Called when the last live connection object is released; NULL until the owner frees. */
  void (*on_empty)(struct mcp__conns_s *cs);
} mcp__conns_t;

/* A backend hostname's lookup and connect attempts (lib/resolver.h). */
typedef struct mcp__lookup_s mcp__lookup_t;

/*
 * One socket of a connection on the event set. The flags are what its edge-triggered events
 * said and stay set until the socket says otherwise: rd until a read comes short or EAGAIN,
 * wr until a write does. An edge is reported once, so whoever clears a flag must have seen
 * the socket's state for itself.
 */
typedef struct mcp__sock_s {
  int fd;          /* -1: none */
  uint8_t watched; /* on the event set */
  uint8_t rd;      /* may have bytes, an EOF or an error to read */
  uint8_t rdhup;   /* the peer's FIN is in: a short read means the next one is EOF */
  uint8_t wr;      /* may take bytes */
  uint8_t err;     /* EPOLLERR seen: a reset, or a connect that failed */
  uint8_t hup;     /* EPOLLHUP seen: both directions are down (or a connect failed) */
  uint8_t paused;  /* not watched for reading (mcp__sock_reading) */
  /*
   * Urgent data (EPOLLPRI) seen: a read then stops at the urgent mark with more queued behind
   * it, and a splice at the mark finds nothing. From then on only EAGAIN clears rd, and the
   * socket is read by copying (relay.c).
   */
  uint8_t urg;
} mcp__sock_t;

/* One direction of the relay: bytes read from src are written to dst. */
typedef struct mcp__pipe_s {
  mcp__chunk_t *pending; /* the chunk being written to dst, else NULL */
  uint32_t pend_off, pend_len; /* its bytes still to write: data[pend_off, pend_len) */
  uint8_t eof;       /* src reached EOF */
  uint8_t shut;      /* shutdown of dst requested */
  uint8_t shut_done; /* that shutdown done (it is synchronous: set together with shut) */
  uint8_t bulk;      /* splice relay: src sends in bulk, so splice instead of copying (relay.c) */
} mcp__pipe_t;

/*
 * One accepted connection. Allocated with mcp__conn_new at accept, returned to cs's free list
 * by mcp__conn_close. Loop thread only.
 */
struct mcp__conn_s {
  mcp__conns_t *cs;
  mcp__conn_t *tprev, *tnext; /* timeout list links (tnext also links the free list) */
  uint64_t tkey;              /* when it was (re)appended to its list */
  int tlist;                  /* MCP__T_* */

  uint32_t slot, gen; /* its place among cs's slots (the event set's events name these) */
  mcp__sock_t client;
  mcp__sock_t backend;
  /* What the sockets' events go to: the listener's ClientHello reads, then the relay's. */
  void (*on_io)(mcp__conn_t *c, mcp__sock_t *s);
  mcp__conn_t *again_prev, *again_next; /* on cs's again list, if again */

  mcp__chunk_t *hello; /* the ClientHello bytes until forwarded (a chunk of no pool) */
  uint32_t hello_len;
  uint32_t hello_cap;  /* bytes hello can hold; it grows (lib/listener.c, hello_reserve) */
  mcp_sni_t sni_state;

  mcp__pipe_t up;   /* client -> backend */
  mcp__pipe_t down; /* backend -> client */

  struct sockaddr_in6 client_addr; /* large enough for either family; a PROXY header's source */
  struct sockaddr_in6 local_addr;  /* the address the client connected to, if have_local */
  mcp_client_limits_key_t limits_key; /* if limits_held */
  uint64_t started_ms;
  uint64_t started_ns, routed_ns, connected_ns; /* uv_hrtime(); 0 = not reached (metrics) */
  uint64_t bytes_in, bytes_out;
  mcp__lookup_t *gai; /* DNS lookup or connect attempts in flight, if any (lib/resolver.c) */

  uint8_t closing;
  uint8_t again;          /* on cs's again list */
  uint8_t connecting;     /* the backend's connect is in progress */
  uint8_t counted;        /* counted in the active connections */
  uint8_t relaying;
  uint8_t outcome;        /* mcp_conn_outcome_t */
  uint8_t proxy_pending;  /* a PROXY header is still to be read (listener proxy_protocol on) */
  uint8_t reset;          /* close the client with a reset (RST), whatever the outcome */
  uint8_t limits_held;    /* admitted and counted by the per-client limits: release at close */
  uint8_t send_proxy;     /* mcp_send_proxy_t of the route: PROXY header to the backend first */
  uint8_t have_local;     /* local_addr is known (from a PROXY header) */

  char sni[MCP_HOSTNAME_MAX + 1];
  char backend_text[MCP_BACKEND_MAX];
};

/*
 * Prepares cs on loop: empty pools, the three timeout lists with their timeouts (ms, non-zero),
 * the timer, and unless copy_relay the splice pipe (copying when no pipe can be had). Returns
 * 0 or a libuv error. The caller sets counters, name, on_end and data.
 */
int mcp__conns_init(mcp__conns_t *cs, uv_loop_t *loop, const uint64_t timeouts_ms[MCP__T_COUNT],
                    int copy_relay);
/* Closes every connection at once (outcome shutdown: the end of a drain). */
void mcp__conns_close_all(mcp__conns_t *cs);
/* Frees the pools, the pipe and the free list. Only once no connection is live. */
void mcp__conns_finish(mcp__conns_t *cs);

/* The handles of cs (closed by mcp__conns_close_handles): the timer, events and again. */
#define MCP__CONNS_HANDLES 3
/*
 * Closes cs's handles, each with close_cb (their data is cs). Once every one has called back,
 * no callback of cs runs again and, with no connection live, mcp__conns_finish may be called.
 */
void mcp__conns_close_handles(mcp__conns_t *cs, uv_close_cb close_cb);

/*
 * Holds back the release of closed connections until the matching mcp__conns_unhold: code
 * that may close a connection and then looks at it again (c->closing) runs between the two.
 * The event set's batches do this themselves. Unhold may release cs's last connection (and
 * so call on_empty).
 */
void mcp__conns_hold(mcp__conns_t *cs);
void mcp__conns_unhold(mcp__conns_t *cs);

/*
 * A connection object for cs in *out (zeroed, no sockets, start time now, on no timeout list).
 * Returns 0 or UV_ENOMEM. The caller sets client.fd and on_io.
 */
int mcp__conn_new(mcp__conns_t *cs, mcp__conn_t **out);

/*
 * Puts s (client or backend of c) on the event set, once: from then on its events set its
 * flags and call c->on_io. Does nothing when it is there already. Returns 0 or a negative
 * errno.
 */
int mcp__sock_watch(mcp__conn_t *c, mcp__sock_t *s);

/*
 * Stops (on 0) or restarts (on 1) watching s for reading: a source whose bytes cannot be
 * written on (backpressure) would otherwise raise an event for every packet that arrives.
 * Restarting reports s again if it is readable. Returns 0 or a negative errno.
 */
int mcp__sock_reading(mcp__conn_t *c, mcp__sock_t *s, int on);

/*
 * c stopped reading a socket that may still have bytes (a bounded number of reads per call,
 * so one busy connection cannot hold up the loop): calls c->on_io(c, NULL) once more in the
 * next loop iteration. Edge-triggered events would not say so again.
 */
void mcp__conn_again(mcp__conn_t *c);

/* Live connection objects in the whole process, every loop (the descriptor reserve). */
int64_t mcp__conn_live_total(void);

/*
 * Ends a connection with an outcome: off its timeout list, out of the active count, its
 * chunks back, DNS abandoned, both sockets closed (the client with a reset when blocked or
 * c->reset). Then its record goes to on_end and the object back to the free list, at once or,
 * while held (mcp__conns_hold), at the unhold. Safe to call more than once; only the first
 * outcome counts.
 */
void mcp__conn_close(mcp__conn_t *c, mcp_conn_outcome_t outcome);

/* Puts c on timeout list tlist (MCP__T_*), off any other, with its deadline counted from now. */
void mcp__conn_timeout_set(mcp__conn_t *c, int tlist);
/* Activity: restarts c's deadline on its list (at most once per loop iteration). */
void mcp__conn_timeout_touch(mcp__conn_t *c);

/* Formats an IPv4/IPv6 socket address as "ip:port" or "[ip]:port" ("-" for anything else). */
void mcp__sockaddr_format(const struct sockaddr *sa, char *out, size_t len);

#endif
