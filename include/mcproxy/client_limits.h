/*
 * client_limits: per-client rate and concurrency limits for one listener.
 *
 * One table per listener, shared by all its worker loops. Each client key (the IPv4 address,
 * or the IPv6 /64 prefix; an IPv4-mapped IPv6 address counts as its IPv4 address) has a token
 * bucket (rate_count new connections per rate_period_ms, burst = rate_count, refilled
 * continuously: one token every period / count) and a count of open connections. A new
 * connection is admitted when the client has a token and fewer than max_connections open.
 * Exact across threads: every key lives in one stripe of the table and each stripe has its own
 * mutex, so two loops acquiring for one client are serialised.
 *
 * Memory has a hard bound. The table never holds more than max_entries clients (default
 * MCP_CLIENT_LIMITS_DEFAULT_ENTRIES, 65,536): 48 bytes each, allocated in chunks of 64 as
 * clients arrive and kept until the table is freed, plus a hash index of 4-8 bytes per entry
 * allocated up front. MCP_CLIENT_LIMITS_MAX_BYTES(n) is the most a table of n entries ever
 * holds (3.7 MB for the default), however many distinct addresses arrive; stats.bytes says
 * what it holds now.
 * A client is forgotten as soon as it holds no connection and its bucket is full again (at
 * most one period after its last connection): such an entry says nothing a fresh one would
 * not. So the table holds only clients seen within the last period or with open connections.
 * Forgotten entries are reused at once; mcp_client_limits_expire() also sweeps them.
 *
 * When the table is full and no entry can be forgotten, a new client is ADMITTED WITHOUT
 * TRACKING (acquire returns MCP_CLIENT_LIMITS_UNTRACKED and counts it in stats.untracked). The
 * alternative, refusing every client not already in the table, would let anyone holding
 * 65,536 addresses for one period (one IPv6 /48 is that many /64s) lock every new client out
 * of the listener: the limit meant to stop one abusive client would become the attack. Failing
 * open keeps the limits exact for every tracked client, leaves the untracked ones bounded by
 * the listener's max_connections and the firewall, and the counter tells the operator to raise
 * max_entries or block the range. The keys are placed by a hash with a random per-table key,
 * so addresses cannot be chosen to crowd one stripe; the table is split into up to 64 stripes
 * of equal share, so a stripe may fill (and its new clients go untracked) slightly before the
 * whole table does.
 *
 * Times are milliseconds from a monotonic clock the caller chooses (uv_hrtime() / 1000000,
 * or uv_now of the calling loop); a time earlier than one already seen for a key (loops whose
 * cached clocks differ by a few ms) is treated as "no time has passed" for that key.
 */
#ifndef MCPROXY_CLIENT_LIMITS_H
#define MCPROXY_CLIENT_LIMITS_H

#include <stdint.h>
#include <sys/socket.h>

#include "mcproxy/error.h"

/* Signals: libmcproxy never installs a signal handler or changes a signal mask. It writes to
 * sockets with send(2) (MSG_NOSIGNAL) and splice(2), and splice raises SIGPIPE when a peer has
 * gone, so a program that runs listeners must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) before
 * it starts one. */
#ifdef __cplusplus
extern "C" {
#endif

#define MCP_CLIENT_LIMITS_DEFAULT_ENTRIES 65536
#define MCP_CLIENT_LIMITS_MAX_ENTRIES (1u << 24)
/* Bounds of the settings: at most a million connections per period, a period of 1 ms to 1 day. */
#define MCP_CLIENT_LIMITS_MAX_RATE 1000000u
#define MCP_CLIENT_LIMITS_MAX_PERIOD_MS 86400000u

/* The most memory a table of n entries ever allocates, in bytes (see above). */
#define MCP_CLIENT_LIMITS_MAX_BYTES(n) (57u * (uint64_t)(n) + 16384u)

/* mcp_client_limits_acquire(): admitted, but the table had no room to count this client. */
#define MCP_CLIENT_LIMITS_UNTRACKED 1

/* A listener's limits; all zero = no limits. Copied by the functions that take it. */
typedef struct mcp_client_limits_settings_s {
  uint32_t rate_count;      /* new connections per period (and the burst); 0 = no rate limit */
  uint32_t rate_period_ms;  /* 1..MCP_CLIENT_LIMITS_MAX_PERIOD_MS; ignored when rate_count = 0 */
  uint32_t max_connections; /* open connections per client; 0 = unlimited */
} mcp_client_limits_settings_t;

/* A client key: 16 bytes, IPv4 as ::ffff:a.b.c.d, IPv6 as its /64 prefix and 8 zero bytes. */
typedef struct mcp_client_limits_key_s {
  uint8_t bytes[16];
} mcp_client_limits_key_t;

/* Counters, a consistent-enough snapshot (each stripe read under its lock). */
typedef struct mcp_client_limits_stats_s {
  uint64_t entries;             /* clients tracked now */
  uint64_t max_entries;         /* the hard bound */
  uint64_t bytes;               /* memory the table holds now, everything it allocated */
  uint64_t refused_rate;        /* acquires refused: no token */
  uint64_t refused_connections; /* acquires refused: max_connections open */
  uint64_t untracked;           /* acquires admitted untracked: the table was full */
  uint64_t expired;             /* entries forgotten */
} mcp_client_limits_stats_t;

/*
 * A table; created by mcp_client_limits_new, freed by mcp_client_limits_free (after every
 * thread has stopped using it). All other functions may be called from any thread at once.
 */
typedef struct mcp_client_limits_s mcp_client_limits_t;

/*
 * The client key of an address (AF_INET or AF_INET6, the port is ignored). Returns 0, or
 * MCP_EINVAL for any other family.
 */
int mcp_client_limits_key(const struct sockaddr *sa, mcp_client_limits_key_t *key);

/*
 * Checks settings: MCP_EINVAL for a rate_count with a zero period (the "10/0s" of a config),
 * MCP_ERANGE for a count or period above the bounds above, else 0.
 */
int mcp_client_limits_check(const mcp_client_limits_settings_t *settings);

/*
 * Creates a table holding at most max_entries clients (0 = the default; at most
 * MCP_CLIENT_LIMITS_MAX_ENTRIES) with the given settings. Returns 0 and sets *out, the errors
 * of mcp_client_limits_check, MCP_ERANGE for max_entries, or MCP_ENOMEM.
 */
int mcp_client_limits_new(uint32_t max_entries, const mcp_client_limits_settings_t *settings,
                          mcp_client_limits_t **out);

/*
 * Replaces the settings; they apply to the next acquire. A client keeps the tokens it had (at
 * most the new burst; all of it when the rate limit was off); open connections stay counted.
 * Returns 0 or the errors of mcp_client_limits_check (the table is then unchanged).
 */
int mcp_client_limits_set(mcp_client_limits_t *t, const mcp_client_limits_settings_t *settings);

/*
 * A new connection from key at now_ms. Returns
 *   0                            admitted and counted: call mcp_client_limits_release once
 *                                when the connection ends;
 *   MCP_CLIENT_LIMITS_UNTRACKED  admitted, not counted (no limit is set, or the table is full
 *                                of clients it may not forget): do NOT release;
 *   MCP_ERATELIMITED             refused: no token, or max_connections already open.
 */
int mcp_client_limits_acquire(mcp_client_limits_t *t, const mcp_client_limits_key_t *key,
                              uint64_t now_ms);

/* The end of a connection that acquire admitted with 0. */
void mcp_client_limits_release(mcp_client_limits_t *t, const mcp_client_limits_key_t *key,
                               uint64_t now_ms);

/* Forgets every client that may be forgotten at now_ms; returns how many. Optional (a timer). */
uint32_t mcp_client_limits_expire(mcp_client_limits_t *t, uint64_t now_ms);

void mcp_client_limits_stats(mcp_client_limits_t *t, mcp_client_limits_stats_t *out);

void mcp_client_limits_free(mcp_client_limits_t *t);

#ifdef __cplusplus
}
#endif

#endif
