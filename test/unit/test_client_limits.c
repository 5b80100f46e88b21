/*
 * Unit tests of the per-client limit table (lib/client_limits.c) through its public API:
 * client keys, exact token buckets and connection counts, expiry, the hard bound on entries
 * and memory under a flood of a million distinct clients, failing open when full, settings
 * changed at runtime, and two threads acquiring for one client.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <cmocka.h>

#include "mcproxy/error.h"
#include "mcproxy/client_limits.h"

/* ---- helpers -------------------------------------------------------------------------- */

static mcp_client_limits_key_t key_of(const char *ip)
{
  struct sockaddr_storage ss;
  struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
  mcp_client_limits_key_t key;

  memset(&ss, 0, sizeof(ss));
  if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons(1234);
  } else {
    assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(4321);
  }
  assert_int_equal(mcp_client_limits_key((struct sockaddr *)&ss, &key), 0);
  return key;
}

/* Client number i as an IPv4 key (10.x.y.z), distinct for i < 2^24. */
static mcp_client_limits_key_t key_n(uint32_t i)
{
  struct sockaddr_in sin;
  mcp_client_limits_key_t key;

  memset(&sin, 0, sizeof(sin));
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(0x0a000000u | i);
  assert_int_equal(mcp_client_limits_key((struct sockaddr *)&sin, &key), 0);
  return key;
}

static mcp_client_limits_t *table(uint32_t max_entries, uint32_t count, uint32_t period_ms,
                                  uint32_t max_conns)
{
  mcp_client_limits_settings_t set = {count, period_ms, max_conns};
  mcp_client_limits_t *t = NULL;

  assert_int_equal(mcp_client_limits_new(max_entries, &set, &t), 0);
  assert_non_null(t);
  return t;
}

static mcp_client_limits_stats_t stats(mcp_client_limits_t *t)
{
  mcp_client_limits_stats_t st;

  mcp_client_limits_stats(t, &st);
  return st;
}

/* Whether mallinfo2 sees malloc (glibc's allocator; not a sanitizer's replacement). */
static int mallinfo_tracks_malloc(void)
{
  size_t before = mallinfo2().uordblks, grew;
  void *p = malloc(65536);

  memset(p, 1, 65536);
  grew = mallinfo2().uordblks - before;
  free(p);
  return grew >= 65536 && grew < 2 * 65536;
}

/* ---- keys ------------------------------------------------------------------------------- */

static void key_ipv4_is_the_address(void **state)
{
  mcp_client_limits_key_t a = key_of("192.0.2.1"), b = key_of("192.0.2.2");
  static const uint8_t want[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1};

  assert_memory_equal(a.bytes, want, 16);
  assert_memory_not_equal(a.bytes, b.bytes, 16);
}

static void key_mapped_ipv4_counts_as_ipv4(void **state)
{
  mcp_client_limits_key_t a = key_of("192.0.2.1"), b = key_of("::ffff:192.0.2.1");

  assert_memory_equal(a.bytes, b.bytes, 16);
}

static void key_ipv6_is_the_64_prefix(void **state)
{
  mcp_client_limits_key_t a = key_of("2001:db8:1:2::1"), b = key_of("2001:db8:1:2:ffff:1:2:3");
  mcp_client_limits_key_t c = key_of("2001:db8:1:3::1"), z = key_of("::");

  assert_memory_equal(a.bytes, b.bytes, 16);
  assert_memory_not_equal(a.bytes, c.bytes, 16);
  /* The /64 0::/64 differs from every IPv4 key (those have ffff in bytes 10-11). */
  assert_memory_not_equal(z.bytes, key_of("0.0.0.0").bytes, 16);
}

static void key_other_family_is_invalid(void **state)
{
  struct sockaddr_un un;
  mcp_client_limits_key_t key;

  memset(&un, 0, sizeof(un));
  un.sun_family = AF_UNIX;
  assert_int_equal(mcp_client_limits_key((struct sockaddr *)&un, &key), MCP_EINVAL);
}

/* ---- settings --------------------------------------------------------------------------- */

static void settings_are_checked(void **state)
{
  mcp_client_limits_settings_t zero_period = {10, 0, 0}, big_rate = {1000001, 1000, 0};
  mcp_client_limits_settings_t long_period = {1, 86400001, 0}, off = {0, 0, 0};
  mcp_client_limits_settings_t ok = {1000000, 86400000, 5};
  mcp_client_limits_t *t = NULL;

  assert_int_equal(mcp_client_limits_check(&zero_period), MCP_EINVAL);
  assert_int_equal(mcp_client_limits_check(&big_rate), MCP_ERANGE);
  assert_int_equal(mcp_client_limits_check(&long_period), MCP_ERANGE);
  assert_int_equal(mcp_client_limits_check(&off), 0);
  assert_int_equal(mcp_client_limits_check(&ok), 0);
  assert_int_equal(mcp_client_limits_new(0, &zero_period, &t), MCP_EINVAL);
  assert_null(t);
  assert_int_equal(mcp_client_limits_new(MCP_CLIENT_LIMITS_MAX_ENTRIES + 1, &ok, &t), MCP_ERANGE);
  assert_null(t);
  assert_int_equal(mcp_client_limits_new(0, &ok, &t), 0);
  assert_int_equal(stats(t).max_entries, MCP_CLIENT_LIMITS_DEFAULT_ENTRIES);
  assert_int_equal(mcp_client_limits_set(t, &zero_period), MCP_EINVAL);
  mcp_client_limits_free(t);
  mcp_client_limits_free(NULL);
}

/* ---- exact limits ----------------------------------------------------------------------- */

static void rate_admits_exactly_the_burst(void **state)
{
  mcp_client_limits_t *t = table(100, 3, 1000, 0);
  mcp_client_limits_key_t k = key_of("192.0.2.1");
  int i;

  for (i = 0; i < 3; i++) {
    assert_int_equal(mcp_client_limits_acquire(t, &k, 5000), 0);
    mcp_client_limits_release(t, &k, 5000);
  }
  assert_int_equal(mcp_client_limits_acquire(t, &k, 5000), MCP_ERATELIMITED);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 5000), MCP_ERATELIMITED);
  /* One token every 1000/3 ms: not at 333 ms, at 334 ms; refused tries cost nothing. */
  assert_int_equal(mcp_client_limits_acquire(t, &k, 5333), MCP_ERATELIMITED);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 5334), 0);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 5334), MCP_ERATELIMITED);
  assert_int_equal(stats(t).refused_rate, 4);
  /* However long the client waits, the burst stays 3. */
  for (i = 0; i < 3; i++)
    assert_int_equal(mcp_client_limits_acquire(t, &k, 1000000), 0);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 1000000), MCP_ERATELIMITED);
  /* Another client has its own bucket. */
  k = key_of("192.0.2.2");
  assert_int_equal(mcp_client_limits_acquire(t, &k, 1000000), 0);
  mcp_client_limits_free(t);
}

static void rate_refills_without_drift(void **state)
{
  mcp_client_limits_t *t = table(100, 7, 1000, 0);
  mcp_client_limits_key_t k = key_of("2001:db8::1");
  uint64_t now;
  int admitted = 0;

  /* Trying every millisecond for 10 s admits the burst plus one per 1000/7 ms, no more. */
  for (now = 0; now <= 10000; now++)
    while (mcp_client_limits_acquire(t, &k, now) == 0)
      admitted++;
  assert_int_equal(admitted, 7 + 70);
  mcp_client_limits_free(t);
}

static void connections_limited_exactly(void **state)
{
  mcp_client_limits_t *t = table(100, 0, 0, 2);
  mcp_client_limits_key_t k = key_of("192.0.2.1");

  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), 0);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), 0);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), MCP_ERATELIMITED);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), MCP_ERATELIMITED);
  mcp_client_limits_release(t, &k, 0);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), 0);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), MCP_ERATELIMITED);
  assert_int_equal(stats(t).refused_connections, 3);
  assert_int_equal(stats(t).entries, 1);
  mcp_client_limits_release(t, &k, 0);
  mcp_client_limits_release(t, &k, 0);
  /* No connection and no rate limit: nothing left to remember. */
  assert_int_equal(stats(t).entries, 0);
  mcp_client_limits_free(t);
}

static void connection_refusal_costs_no_token(void **state)
{
  mcp_client_limits_t *t = table(100, 2, 1000, 1);
  mcp_client_limits_key_t k = key_of("192.0.2.1");

  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), 0);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), MCP_ERATELIMITED);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), MCP_ERATELIMITED);
  mcp_client_limits_release(t, &k, 0);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), 0); /* the second token */
  mcp_client_limits_release(t, &k, 0);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), MCP_ERATELIMITED);
  assert_int_equal(stats(t).refused_connections, 2);
  assert_int_equal(stats(t).refused_rate, 1);
  mcp_client_limits_free(t);
}

static void ipv6_64_shares_one_limit(void **state)
{
  mcp_client_limits_t *t = table(100, 0, 0, 2);
  mcp_client_limits_key_t a = key_of("2001:db8:0:1::a"), b = key_of("2001:db8:0:1:8000::b");
  mcp_client_limits_key_t c = key_of("2001:db8:0:2::a");

  assert_int_equal(mcp_client_limits_acquire(t, &a, 0), 0);
  assert_int_equal(mcp_client_limits_acquire(t, &b, 0), 0);
  assert_int_equal(mcp_client_limits_acquire(t, &a, 0), MCP_ERATELIMITED);
  assert_int_equal(mcp_client_limits_acquire(t, &c, 0), 0);
  mcp_client_limits_free(t);
}

static void mapped_ipv4_shares_the_ipv4_limit(void **state)
{
  mcp_client_limits_t *t = table(100, 0, 0, 1);
  mcp_client_limits_key_t v4 = key_of("198.51.100.7"), mapped = key_of("::ffff:198.51.100.7");

  assert_int_equal(mcp_client_limits_acquire(t, &v4, 0), 0);
  assert_int_equal(mcp_client_limits_acquire(t, &mapped, 0), MCP_ERATELIMITED);
  mcp_client_limits_release(t, &mapped, 0);
  assert_int_equal(mcp_client_limits_acquire(t, &v4, 0), 0);
  mcp_client_limits_free(t);
}

static void no_limits_means_untracked(void **state)
{
  mcp_client_limits_t *t = table(100, 0, 0, 0);
  mcp_client_limits_key_t k = key_of("192.0.2.1");
  int i;

  for (i = 0; i < 1000; i++)
    assert_int_equal(mcp_client_limits_acquire(t, &k, 0), MCP_CLIENT_LIMITS_UNTRACKED);
  assert_int_equal(stats(t).entries, 0);
  mcp_client_limits_free(t);
}

static void extra_release_takes_nothing_away(void **state)
{
  mcp_client_limits_t *t = table(100, 0, 0, 2);
  mcp_client_limits_key_t k = key_of("192.0.2.1"), other = key_of("192.0.2.99");

  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), 0);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), 0);
  mcp_client_limits_release(t, &other, 0); /* never acquired */
  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), MCP_ERATELIMITED);
  mcp_client_limits_release(t, &k, 0);
  mcp_client_limits_release(t, &k, 0);
  mcp_client_limits_release(t, &k, 0); /* one too many */
  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), 0);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), 0);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), MCP_ERATELIMITED);
  mcp_client_limits_free(t);
}

/* ---- expiry ----------------------------------------------------------------------------- */

static void idle_client_forgotten_once_its_bucket_is_full(void **state)
{
  mcp_client_limits_t *t = table(100, 5, 1000, 0);
  mcp_client_limits_key_t k = key_of("192.0.2.1");

  assert_int_equal(mcp_client_limits_acquire(t, &k, 10000), 0);
  mcp_client_limits_release(t, &k, 10000);
  assert_int_equal(stats(t).entries, 1);
  /* One token spent; one token takes 200 ms to come back. */
  assert_int_equal(mcp_client_limits_expire(t, 10199), 0);
  assert_int_equal(stats(t).entries, 1);
  assert_int_equal(mcp_client_limits_expire(t, 10200), 1);
  assert_int_equal(stats(t).entries, 0);
  assert_int_equal(stats(t).expired, 1);
  /* Forgetting it changed nothing: the full burst, as before. */
  assert_int_equal(mcp_client_limits_acquire(t, &k, 10200), 0);
  mcp_client_limits_free(t);
}

static void client_with_open_connection_never_forgotten(void **state)
{
  mcp_client_limits_t *t = table(100, 1, 1000, 1);
  mcp_client_limits_key_t k = key_of("192.0.2.1");

  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), 0);
  assert_int_equal(mcp_client_limits_expire(t, 100000000), 0);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 100000000), MCP_ERATELIMITED);
  mcp_client_limits_release(t, &k, 100000000);
  assert_int_equal(stats(t).entries, 0); /* bucket full, no connection: forgotten at once */
  mcp_client_limits_free(t);
}

/* Without any expire() call, clients one period old make room for new ones as they arrive. */
static void old_clients_make_room_without_a_sweep(void **state)
{
  mcp_client_limits_t *t = table(1000, 10, 1000, 0);
  mcp_client_limits_key_t k;
  uint32_t i;

  for (i = 0; i < 100000; i++) {
    k = key_n(i);
    /* 100 new clients per 100 ms, each forgettable 100 ms after its one connection. */
    assert_int_equal(mcp_client_limits_acquire(t, &k, i), 0);
    mcp_client_limits_release(t, &k, i);
    assert_true(stats(t).entries <= 200);
  }
  assert_int_equal(stats(t).untracked, 0);
  mcp_client_limits_free(t);
}

/* ---- the hard bound --------------------------------------------------------------------- */

/* A full table of clients it may not forget admits newcomers untracked, and tracks them later. */
static void full_table_fails_open(void **state)
{
  mcp_client_limits_t *t = table(4, 0, 0, 1);
  mcp_client_limits_key_t k[5];
  int i;

  for (i = 0; i < 5; i++)
    k[i] = key_n((uint32_t)i);
  for (i = 0; i < 4; i++)
    assert_int_equal(mcp_client_limits_acquire(t, &k[i], 0), 0);
  assert_int_equal(mcp_client_limits_acquire(t, &k[4], 0), MCP_CLIENT_LIMITS_UNTRACKED);
  assert_int_equal(mcp_client_limits_acquire(t, &k[4], 0), MCP_CLIENT_LIMITS_UNTRACKED);
  assert_int_equal(stats(t).untracked, 2);
  assert_int_equal(stats(t).entries, 4);
  /* Tracked clients stay exactly limited while the table is full. */
  assert_int_equal(mcp_client_limits_acquire(t, &k[0], 0), MCP_ERATELIMITED);
  mcp_client_limits_release(t, &k[0], 0);
  assert_int_equal(mcp_client_limits_acquire(t, &k[4], 0), 0);
  assert_int_equal(mcp_client_limits_acquire(t, &k[4], 0), MCP_ERATELIMITED);
  mcp_client_limits_free(t);
}

static void full_table_of_recent_clients_frees_up_after_a_period(void **state)
{
  mcp_client_limits_t *t = table(4, 2, 1000, 0);
  mcp_client_limits_key_t k;
  uint32_t i;

  for (i = 0; i < 4; i++) {
    k = key_n(i);
    assert_int_equal(mcp_client_limits_acquire(t, &k, 0), 0);
    mcp_client_limits_release(t, &k, 0);
  }
  k = key_n(4);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 499), MCP_CLIENT_LIMITS_UNTRACKED);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 500), 0);
  mcp_client_limits_free(t);
}

/*
 * A million distinct clients within one period, each keeping its connection open: the table
 * stops at its bound, memory stops growing with it, and the clients it tracks stay limited.
 */
static void million_clients_stay_within_the_bound(void **state)
{
  const uint32_t max = MCP_CLIENT_LIMITS_DEFAULT_ENTRIES;
  mcp_client_limits_t *t;
  mcp_client_limits_key_t k, first = key_n(0);
  mcp_client_limits_stats_t st;
  struct mallinfo2 before, after;
  mcp_client_limits_stats_t half;
  uint64_t tracked = 0;
  size_t grew;
  uint32_t i;
  int rc;

  before = mallinfo2();
  t = table(max, 10, 60000, 1);
  for (i = 0; i < 1000000; i++) {
    k = key_n(i);
    rc = mcp_client_limits_acquire(t, &k, i / 1000);
    assert_true(rc == 0 || rc == MCP_CLIENT_LIMITS_UNTRACKED);
    tracked += rc == 0;
    if (i == 500000)
      half = stats(t);
    if (i % 65536 == 0) {
      st = stats(t);
      assert_true(st.entries <= max);
      assert_true(st.bytes <= MCP_CLIENT_LIMITS_MAX_BYTES(max));
    }
  }
  st = stats(t);
  after = mallinfo2();
  assert_int_equal(st.entries, tracked);
  assert_true(st.entries <= max);
  /* Stripes share the bound equally, so a few fill before the table does: not many. */
  assert_true(st.entries >= max * 9 / 10);
  assert_int_equal(st.untracked, 1000000 - tracked);
  /* Full by half way: the second half of the flood added no entry and no byte. */
  assert_int_equal(st.entries, half.entries);
  assert_int_equal(st.bytes, half.bytes);
  assert_true(st.bytes <= MCP_CLIENT_LIMITS_MAX_BYTES(max));
  /* The heap agrees with the table's own count (plus malloc's per-block headers). */
  grew = after.uordblks - before.uordblks;
  if (mallinfo_tracks_malloc()) {
    assert_true(grew >= st.bytes - 65536);
    assert_true(grew <= st.bytes + st.bytes / 16 + 65536);
  }
  printf("# %llu of 1000000 clients tracked, table %llu bytes (bound %llu), heap grew %zu\n",
         (unsigned long long)st.entries, (unsigned long long)st.bytes,
         (unsigned long long)MCP_CLIENT_LIMITS_MAX_BYTES(max), grew);
  assert_int_equal(mcp_client_limits_acquire(t, &first, 1000), MCP_ERATELIMITED);
  mcp_client_limits_free(t);
}

/* A million clients arriving over time, each done at once: all tracked, memory small. */
static void million_clients_over_time_all_tracked(void **state)
{
  mcp_client_limits_t *t = table(MCP_CLIENT_LIMITS_DEFAULT_ENTRIES, 5, 1000, 0);
  mcp_client_limits_key_t k;
  mcp_client_limits_stats_t st;
  uint32_t i;

  /* 10 new clients per ms; each is forgettable 200 ms after its connection. */
  for (i = 0; i < 1000000; i++) {
    k = key_n(i);
    assert_int_equal(mcp_client_limits_acquire(t, &k, i / 10), 0);
    mcp_client_limits_release(t, &k, i / 10);
  }
  st = stats(t);
  assert_int_equal(st.untracked, 0);
  assert_true(st.entries <= 2500);
  assert_true(st.expired >= 1000000 - 2500);
  mcp_client_limits_free(t);
}

/* ---- runtime changes -------------------------------------------------------------------- */

static void new_settings_keep_the_tokens_left(void **state)
{
  mcp_client_limits_settings_t twice = {20, 1000, 0}, conns = {20, 1000, 1};
  mcp_client_limits_t *t = table(100, 10, 1000, 0);
  mcp_client_limits_key_t k = key_of("192.0.2.1");
  int i;

  for (i = 0; i < 5; i++) {
    assert_int_equal(mcp_client_limits_acquire(t, &k, 0), 0);
    mcp_client_limits_release(t, &k, 0);
  }
  /* Five tokens were left, and stay five under a larger burst (which refills faster). */
  assert_int_equal(mcp_client_limits_set(t, &twice), 0);
  for (i = 0; i < 5; i++) {
    assert_int_equal(mcp_client_limits_acquire(t, &k, 0), 0);
    mcp_client_limits_release(t, &k, 0);
  }
  assert_int_equal(mcp_client_limits_acquire(t, &k, 0), MCP_ERATELIMITED);
  /* 50 ms at 20 per second is one token. A connection limit set while a connection is open
   * counts that connection. */
  assert_int_equal(mcp_client_limits_acquire(t, &k, 49), MCP_ERATELIMITED);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 50), 0);
  assert_int_equal(mcp_client_limits_set(t, &conns), 0);
  assert_int_equal(mcp_client_limits_acquire(t, &k, 1000), MCP_ERATELIMITED);
  assert_int_equal(stats(t).refused_connections, 1);
  mcp_client_limits_free(t);
}

/* ---- threads ---------------------------------------------------------------------------- */

struct racer {
  mcp_client_limits_t *t;
  mcp_client_limits_key_t key;
  int tries;
  int release; /* release each admitted connection at once */
  int admitted;
  int *in_use; /* with release: connections held right now, by both threads */
  int max_seen;
  pthread_barrier_t *start; /* both threads begin together, so their acquires overlap */
};

static void *race(void *arg)
{
  struct racer *r = arg;
  int i, now;

  pthread_barrier_wait(r->start);
  for (i = 0; i < r->tries; i++) {
    if (mcp_client_limits_acquire(r->t, &r->key, 0) != 0)
      continue;
    r->admitted++;
    if (!r->release)
      continue;
    now = __atomic_add_fetch(r->in_use, 1, __ATOMIC_SEQ_CST);
    if (now > r->max_seen)
      r->max_seen = now;
    __atomic_sub_fetch(r->in_use, 1, __ATOMIC_SEQ_CST);
    mcp_client_limits_release(r->t, &r->key, 0);
  }
  return NULL;
}

static void run_race(mcp_client_limits_t *t, int tries, int release, struct racer *r)
{
  static int in_use;
  pthread_barrier_t start;
  pthread_t th[2];
  int i;

  assert_int_equal(pthread_barrier_init(&start, NULL, 2), 0);
  for (i = 0; i < 2; i++) {
    memset(&r[i], 0, sizeof(r[i]));
    r[i].t = t;
    r[i].key = key_of("203.0.113.9");
    r[i].tries = tries;
    r[i].release = release;
    r[i].in_use = &in_use;
    r[i].start = &start;
    assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
  }
  for (i = 0; i < 2; i++)
    assert_int_equal(pthread_join(th[i], NULL), 0);
  pthread_barrier_destroy(&start);
}

static void two_threads_share_exact_limits(void **state)
{
  mcp_client_limits_t *t;
  struct racer r[2];

  /* Connections never released: exactly max_connections admitted between the two. */
  t = table(100, 0, 0, 100000);
  run_race(t, 100000, 0, r);
  assert_int_equal(r[0].admitted + r[1].admitted, 100000);
  mcp_client_limits_free(t);

  /* Tokens at one instant: exactly the burst admitted between the two. */
  t = table(100, 100000, 86400000, 0);
  run_race(t, 100000, 1, r);
  assert_int_equal(r[0].admitted + r[1].admitted, 100000);
  mcp_client_limits_free(t);

  /* One connection at a time: never two held at once, and both threads got some. */
  t = table(100, 0, 0, 1);
  run_race(t, 200000, 1, r);
  assert_true(r[0].max_seen <= 1 && r[1].max_seen <= 1);
  assert_true(r[0].admitted + r[1].admitted > 0);
  assert_int_equal(stats(t).entries, 0);
  mcp_client_limits_free(t);
}

static void strerror_describes_rate_limited(void **state)
{
  assert_string_equal(mcp_strerror(MCP_ERATELIMITED), "client over its rate or connection limit");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(key_ipv4_is_the_address),
      cmocka_unit_test(key_mapped_ipv4_counts_as_ipv4),
      cmocka_unit_test(key_ipv6_is_the_64_prefix),
      cmocka_unit_test(key_other_family_is_invalid),
      cmocka_unit_test(settings_are_checked),
      cmocka_unit_test(rate_admits_exactly_the_burst),
      cmocka_unit_test(rate_refills_without_drift),
      cmocka_unit_test(connections_limited_exactly),
      cmocka_unit_test(connection_refusal_costs_no_token),
      cmocka_unit_test(ipv6_64_shares_one_limit),
      cmocka_unit_test(mapped_ipv4_shares_the_ipv4_limit),
      cmocka_unit_test(no_limits_means_untracked),
      cmocka_unit_test(extra_release_takes_nothing_away),
      cmocka_unit_test(idle_client_forgotten_once_its_bucket_is_full),
      cmocka_unit_test(client_with_open_connection_never_forgotten),
      cmocka_unit_test(old_clients_make_room_without_a_sweep),
      cmocka_unit_test(full_table_fails_open),
      cmocka_unit_test(full_table_of_recent_clients_frees_up_after_a_period),
      cmocka_unit_test(million_clients_stay_within_the_bound),
      cmocka_unit_test(million_clients_over_time_all_tracked),
      cmocka_unit_test(new_settings_keep_the_tokens_left),
      cmocka_unit_test(two_threads_share_exact_limits),
      cmocka_unit_test(strerror_describes_rate_limited),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
