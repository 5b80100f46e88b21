/*
 * The connection module (lib/conn.c) on its own: the buffer pools, the connection free list,
 * the timeout lists with their one timer, and the close. The .c is included so its static
 * helpers can be checked; connections get real sockets (unconnected, or one end of a socket
 * pair) on a real libuv loop, and the event set is a real epoll instance.
 */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "../../lib/conn.c"

#include "conn_fixture.h"

/* What on_io saw: how often, for which connection, and the socket's flags then. */
static int io_calls;
static mcp__conn_t *io_conn;
static mcp__sock_t io_flags;

static void count_io(mcp__conn_t *c, mcp__sock_t *s)
{
  io_calls++;
  io_conn = c;
  if (s)
    io_flags = *s;
}

/* A connection with a client socket (unconnected, never read), as listener.c makes one. */
static mcp__conn_t *conn_open(fixture_t *f, const char *sni)
{
  mcp__conn_t *c = NULL;
  assert_int_equal(mcp__conn_new(&f->cs, &c), 0);
  assert_non_null(c);
  c->client.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  assert_true(c->client.fd >= 0);
  c->on_io = count_io;
  snprintf(c->sni, sizeof(c->sni), "%s", sni);
  return c;
}

/* A connection whose client socket is one end of a socket pair; the other end in *peer. */
static mcp__conn_t *conn_open_pair(fixture_t *f, const char *sni, int *peer)
{
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  mcp__conn_t *c = conn_open(f, sni);
  close(c->client.fd);
  c->client.fd = sv[0];
  *peer = sv[1];
  return c;
}

/* Runs the loop until on_io has been called n times in all, for at most 2 s. */
static void run_until_io(fixture_t *f, int n)
{
  uint64_t deadline = uv_now(&f->loop) + 2000;
  while (io_calls < n && uv_now(&f->loop) < deadline)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(io_calls, n);
}

/* Runs the loop until n records have come, for at most 2 s. */
static void run_until_records(fixture_t *f, int n)
{
  uint64_t deadline = uv_now(&f->loop) + 2000;
  while (f->nrecords < n && uv_now(&f->loop) < deadline)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(f->nrecords, n);
}

/* The members of a timeout list, head first, as a string of SNIs. */
static void list_names(const mcp__tlist_t *t, char *out, size_t len)
{
  out[0] = '\0';
  for (const mcp__conn_t *c = t->head; c; c = c->tnext) {
    assert_true(c->tnext || c == t->tail);
    assert_true(!c->tnext || c->tnext->tprev == c);
    strncat(out, c->sni, len - strlen(out) - 1);
  }
}

/* ---- buffer pools ---- */

/* Writes every byte of a chunk's data: the whole size must be usable (ASan checks). */
__attribute__((noinline)) static void fill(char *p, int v, size_t n)
{
  memset(p, v, n);
}

static void pool_gives_back_the_chunk_it_was_given(void **state)
{
  (void)state;
  mcp__pool_t pool = {.size = 128};
  mcp__chunk_t *a = mcp__pool_get(&pool);
  assert_non_null(a);
  assert_ptr_equal(a->pool, &pool);
  assert_ptr_equal(MCP__CHUNK_OF(a->data), a);
  fill(a->data, 0xab, pool.size);
  mcp__pool_put(a);
  assert_int_equal(pool.len, 1);
  mcp__chunk_t *b = mcp__pool_get(&pool);
  assert_ptr_equal(b, a);
  assert_int_equal(pool.len, 0);
  mcp__pool_put(b);
  mcp__pool_put(NULL); /* harmless */
  assert_int_equal(pool.len, 1);
  pool_drain(&pool);
  assert_null(pool.free);
  assert_int_equal(pool.len, 0);
}

static void pool_keeps_at_most_pool_keep_chunks(void **state)
{
  (void)state;
  enum { N = MCP__POOL_KEEP + 10 };
  mcp__pool_t pool = {.size = 64};
  mcp__chunk_t *chunks[N];
  for (int i = 0; i < N; i++) {
    chunks[i] = mcp__pool_get(&pool);
    assert_non_null(chunks[i]);
  }
  for (int i = 0; i < N; i++)
    mcp__pool_put(chunks[i]);
  assert_int_equal(pool.len, MCP__POOL_KEEP);
  int n = 0;
  for (mcp__chunk_t *ch = pool.free; ch; ch = ch->next)
    n++;
  assert_int_equal(n, MCP__POOL_KEEP);
  pool_drain(&pool);
  assert_int_equal(pool.len, 0);
}

/* A chunk of no pool (the growing ClientHello buffer) goes back to malloc, not to a pool. */
static mcp__chunk_t *poolless_chunk(size_t size)
{
  mcp__chunk_t *ch = malloc(sizeof(*ch) + size);
  assert_non_null(ch);
  ch->pool = NULL;
  return ch;
}

static void conns_have_a_relay_pool_of_its_size(void **state)
{
  fixture_t *f = *state;
  mcp__chunk_t *r = mcp__pool_get(&f->cs.relay_pool);
  assert_non_null(r);
  fill(r->data, 2, MCP__RELAY_CHUNK);
  mcp__pool_put(r);
  mcp__pool_put(poolless_chunk(MCP__HELLO_CHUNK)); /* freed: LeakSanitizer would say otherwise */
  assert_int_equal(f->cs.relay_pool.len, 1);
  /* copy_relay was asked for: no splice pipe. */
  assert_int_equal(f->cs.splice_r, -1);
}

/* ---- connection objects ---- */

static void released_connection_is_reused_clean(void **state)
{
  fixture_t *f = *state;
  mcp__conn_t *c = conn_open(f, "a");
  c->bytes_in = 99;
  c->relaying = 1;
  assert_int_equal(f->cs.live, 1);
  mcp__conn_close(c, MCP_CONN_OUTCOME_OK);
  run_until_records(f, 1);
  assert_int_equal(f->cs.live, 0);
  assert_int_equal(f->empty_calls, 1);
  assert_int_equal(f->cs.free_len, 1);

  mcp__conn_t *d = NULL;
  assert_int_equal(mcp__conn_new(&f->cs, &d), 0);
  assert_ptr_equal(d, c);
  assert_int_equal(d->bytes_in, 0);
  assert_int_equal(d->relaying, 0);
  assert_int_equal(d->closing, 0);
  assert_int_equal(d->tlist, MCP__T_NONE);
  assert_string_equal(d->sni, "");
  assert_ptr_equal(d->cs, &f->cs);
  /* Give it back without handles, as a never-opened object. */
  conn_release(d);
  assert_int_equal(f->empty_calls, 2);
}

static void free_list_keeps_at_most_conn_keep_objects(void **state)
{
  fixture_t *f = *state;
  enum { N = MCP__CONN_KEEP + 5 };
  mcp__conn_t **v = calloc(N, sizeof(*v));
  assert_non_null(v);
  for (int i = 0; i < N; i++)
    assert_int_equal(mcp__conn_new(&f->cs, &v[i]), 0);
  assert_int_equal(f->cs.live, N);
  for (int i = 0; i < N; i++)
    conn_release(v[i]);
  assert_int_equal(f->cs.live, 0);
  assert_int_equal(f->cs.free_len, MCP__CONN_KEEP);
  assert_int_equal(f->empty_calls, 1); /* only when the last one went */
  free(v);
}

/* ---- timeout lists ---- */

static void timeout_lists_keep_arrival_order_and_move_between_lists(void **state)
{
  fixture_t *f = *state;
  char names[32];
  mcp__conn_t *a = conn_open(f, "a");
  mcp__conn_t *b = conn_open(f, "b");
  mcp__conn_t *c = conn_open(f, "c");
  mcp__conn_timeout_set(a, MCP__T_HANDSHAKE);
  mcp__conn_timeout_set(b, MCP__T_HANDSHAKE);
  mcp__conn_timeout_set(c, MCP__T_HANDSHAKE);
  list_names(&f->cs.tlists[MCP__T_HANDSHAKE], names, sizeof(names));
  assert_string_equal(names, "abc");

  /* The middle one is routed: it leaves the handshake list for the connect list. */
  mcp__conn_timeout_set(b, MCP__T_CONNECT);
  list_names(&f->cs.tlists[MCP__T_HANDSHAKE], names, sizeof(names));
  assert_string_equal(names, "ac");
  list_names(&f->cs.tlists[MCP__T_CONNECT], names, sizeof(names));
  assert_string_equal(names, "b");

  /* Closing takes a connection off its list at once. */
  mcp__conn_close(a, MCP_CONN_OUTCOME_UNROUTED);
  list_names(&f->cs.tlists[MCP__T_HANDSHAKE], names, sizeof(names));
  assert_string_equal(names, "c");
  assert_int_equal(a->tlist, MCP__T_NONE);
  run_until_records(f, 1);
  assert_int_equal(f->outcomes[0], MCP_CONN_OUTCOME_UNROUTED);
}

static void touch_moves_to_the_tail_once_per_loop_iteration(void **state)
{
  fixture_t *f = *state;
  char names[32];
  mcp__conn_t *a = conn_open(f, "a");
  mcp__conn_t *b = conn_open(f, "b");
  mcp__conn_timeout_set(a, MCP__T_IDLE);
  mcp__conn_timeout_set(b, MCP__T_IDLE);

  /* Same loop iteration (uv_now unchanged): activity on a does not move it. */
  mcp__conn_timeout_touch(a);
  list_names(&f->cs.tlists[MCP__T_IDLE], names, sizeof(names));
  assert_string_equal(names, "ab");

  /* A later iteration: a's deadline restarts, so it goes behind b. */
  uint64_t before = uv_now(&f->loop);
  while (uv_now(&f->loop) == before)
    uv_update_time(&f->loop);
  mcp__conn_timeout_touch(a);
  list_names(&f->cs.tlists[MCP__T_IDLE], names, sizeof(names));
  assert_string_equal(names, "ba");
  assert_int_equal(a->tkey, uv_now(&f->loop));

  /* A connection on no list is left alone. */
  mcp__conn_t *c = conn_open(f, "c");
  mcp__conn_timeout_touch(c);
  assert_int_equal(c->tlist, MCP__T_NONE);
  assert_null(f->cs.tlists[MCP__T_IDLE].tail->tnext);
  mcp__conn_close(c, MCP_CONN_OUTCOME_OK); /* teardown closes only listed ones */
}

static void handshake_timeout_closes_in_order_and_counts_unrouted(void **state)
{
  fixture_t *f = *state;
  mcp__conn_t *a = conn_open(f, "a");
  mcp__conn_t *b = conn_open(f, "b");
  mcp__conn_t *idle = conn_open(f, "i");
  mcp__conn_timeout_set(a, MCP__T_HANDSHAKE);
  assert_int_equal(f->cs.timer_due, a->tkey + 30);
  /* b arrives 10 ms after a, so its deadline is 10 ms later. */
  uint64_t start = uv_now(&f->loop);
  while (uv_now(&f->loop) < start + 10)
    uv_update_time(&f->loop);
  mcp__conn_timeout_set(b, MCP__T_HANDSHAKE);
  mcp__conn_timeout_set(idle, MCP__T_IDLE);
  assert_int_equal(f->cs.timer_due, a->tkey + 30); /* later tails do not move it */

  run_until_records(f, 1);
  assert_true(uv_now(&f->loop) - start >= 30);
  assert_string_equal(f->snis[0], "a");
  assert_ptr_equal(f->cs.tlists[MCP__T_HANDSHAKE].head, b); /* not due yet */
  assert_int_equal(f->cs.timer_due, b->tkey + 30);
  run_until_records(f, 2);
  assert_true(uv_now(&f->loop) - start >= 40);
  assert_string_equal(f->snis[1], "b");
  assert_int_equal(f->outcomes[0], MCP_CONN_OUTCOME_TIMEOUT);
  assert_int_equal(f->outcomes[1], MCP_CONN_OUTCOME_TIMEOUT);
  assert_int_equal(atomic_load(&f->counters.unrouted_total), 2);
  /* The idle one, 20 s away, is still there and the timer is armed for it. */
  assert_ptr_equal(f->cs.tlists[MCP__T_IDLE].head, idle);
  assert_int_equal(f->cs.timer_due, idle->tkey + 20000);
}

static void timer_fires_for_the_earliest_head_of_any_list(void **state)
{
  fixture_t *f = *state;
  /* Added first, but on the connect list (60 ms): the handshake one (30 ms) goes first. */
  mcp__conn_t *slow = conn_open(f, "s");
  mcp__conn_t *fast = conn_open(f, "f");
  mcp__conn_timeout_set(slow, MCP__T_CONNECT);
  mcp__conn_timeout_set(fast, MCP__T_HANDSHAKE);
  assert_int_equal(f->cs.timer_due, fast->tkey + 30);
  run_until_records(f, 2);
  assert_string_equal(f->snis[0], "f");
  assert_string_equal(f->snis[1], "s");
  /* Only the handshake timeout counts as unrouted. */
  assert_int_equal(atomic_load(&f->counters.unrouted_total), 1);
  assert_int_equal(f->cs.timer_due, 0);
  assert_false(uv_is_active((uv_handle_t *)&f->cs.timer));
}

/* ---- close ---- */

static void close_counts_down_active_once_and_keeps_the_first_outcome(void **state)
{
  fixture_t *f = *state;
  mcp__conn_t *c = conn_open(f, "a");
  atomic_store(&f->counters.active, 1);
  c->counted = 1;
  c->hello = poolless_chunk(256);
  mcp__conn_timeout_set(c, MCP__T_HANDSHAKE);
  mcp__conn_close(c, MCP_CONN_OUTCOME_LIMIT);
  mcp__conn_close(c, MCP_CONN_OUTCOME_OK); /* a second close changes nothing */
  assert_int_equal(atomic_load(&f->counters.active), 0);
  assert_null(c->hello); /* the ClientHello buffer was freed */
  run_until_records(f, 1);
  assert_int_equal(f->outcomes[0], MCP_CONN_OUTCOME_LIMIT);
  assert_int_equal(f->cs.live, 0);
}

static void close_all_ends_every_listed_connection(void **state)
{
  fixture_t *f = *state;
  mcp__conn_timeout_set(conn_open(f, "a"), MCP__T_HANDSHAKE);
  mcp__conn_timeout_set(conn_open(f, "b"), MCP__T_CONNECT);
  mcp__conn_timeout_set(conn_open(f, "c"), MCP__T_IDLE);
  mcp__conns_close_all(&f->cs);
  for (int i = 0; i < MCP__T_COUNT; i++)
    assert_null(f->cs.tlists[i].head);
  run_until_records(f, 3);
  /* The end of a drain: outcome shutdown, counted (it was timeout before). */
  for (int i = 0; i < 3; i++)
    assert_int_equal(f->outcomes[i], MCP_CONN_OUTCOME_SHUTDOWN);
  assert_int_equal(atomic_load(&f->counters.shutdown_total), 3);
  assert_int_equal(f->empty_calls, 1);
}

/* ---- the event set ---- */

static void an_event_sets_the_flags_and_calls_on_io_once_per_edge(void **state)
{
  fixture_t *f = *state;
  int peer;
  mcp__conn_t *c = conn_open_pair(f, "a", &peer);
  io_calls = 0;
  assert_int_equal(mcp__sock_watch(c, &c->client), 0);
  assert_int_equal(mcp__sock_watch(c, &c->client), 0); /* once only */
  run_until_io(f, 1); /* added while writable: reported at once */
  assert_true(io_flags.wr);
  assert_false(io_flags.rd);

  assert_int_equal(write(peer, "x", 1), 1);
  run_until_io(f, 2);
  assert_ptr_equal(io_conn, c);
  assert_true(c->client.rd);
  /* Edge-triggered: not read, but not reported again either. */
  for (int i = 0; i < 5; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(io_calls, 2);

  close(peer); /* the peer's FIN */
  run_until_io(f, 3);
  assert_true(c->client.rdhup);
  assert_false(c->client.err);
  mcp__conn_close(c, MCP_CONN_OUTCOME_OK);
}

/*
 * A socket still open elsewhere (here a dup, as a fork would hold it) stays on the event set
 * after its connection closed. Its events then name a slot that a new connection has taken:
 * the generation tells them apart, and the new connection hears nothing.
 */
static void a_stale_event_for_a_reused_slot_is_ignored(void **state)
{
  fixture_t *f = *state;
  int peer;
  mcp__conn_t *a = conn_open_pair(f, "a", &peer);
  assert_int_equal(mcp__sock_watch(a, &a->client), 0);
  int held = dup(a->client.fd);
  assert_true(held >= 0);
  uint32_t slot = a->slot, gen = a->gen;
  mcp__conn_close(a, MCP_CONN_OUTCOME_OK);
  run_until_records(f, 1);

  mcp__conn_t *b = conn_open(f, "b");
  assert_int_equal(b->slot, slot);
  assert_true(b->gen != gen);
  io_calls = 0;
  assert_int_equal(write(peer, "x", 1), 1); /* an event for the old socket */
  for (int i = 0; i < 5; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(io_calls, 0);
  close(held);
  close(peer);
  mcp__conn_close(b, MCP_CONN_OUTCOME_OK);
}

/* Closed while held: the record and the release wait for the unhold. */
static void a_close_while_held_is_released_at_the_unhold(void **state)
{
  fixture_t *f = *state;
  mcp__conn_t *c = conn_open(f, "a");
  mcp__conns_hold(&f->cs);
  mcp__conns_hold(&f->cs); /* holds nest */
  mcp__conn_close(c, MCP_CONN_OUTCOME_OK);
  assert_int_equal(c->client.fd, -1); /* the socket is closed at once */
  assert_int_equal(f->nrecords, 0);
  assert_int_equal(f->cs.live, 1);
  mcp__conns_unhold(&f->cs);
  assert_int_equal(f->nrecords, 0);
  mcp__conns_unhold(&f->cs);
  assert_int_equal(f->nrecords, 1);
  assert_int_equal(f->cs.live, 0);
  assert_int_equal(f->empty_calls, 1);
}

/* mcp__conn_again: on_io(c, NULL) in the next iteration, once however often it was asked. */
static void again_calls_on_io_once_in_the_next_iteration(void **state)
{
  fixture_t *f = *state;
  mcp__conn_t *c = conn_open(f, "a");
  mcp__conn_t *d = conn_open(f, "d");
  io_calls = 0;
  mcp__conn_again(c);
  mcp__conn_again(c);
  mcp__conn_again(d);
  mcp__conn_close(d, MCP_CONN_OUTCOME_OK); /* closed: taken off the list */
  assert_int_equal(io_calls, 0);
  run_until_io(f, 1);
  assert_ptr_equal(io_conn, c);
  for (int i = 0; i < 3; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(io_calls, 1);
  assert_false(uv_is_active((uv_handle_t *)&f->cs.again));
  mcp__conn_close(c, MCP_CONN_OUTCOME_OK);
}

static void outcome_names_and_record_format(void **state)
{
  (void)state;
  assert_string_equal(mcp_conn_outcome_name(MCP_CONN_OUTCOME_BACKEND_ERROR), "backend_error");
  assert_string_equal(mcp_conn_outcome_name(MCP_CONN_OUTCOME_ERROR), "error");
  assert_string_equal(mcp_conn_outcome_name(MCP_CONN_OUTCOME_SHUTDOWN), "shutdown");
  assert_string_equal(mcp_conn_outcome_name(MCP_CONN_OUTCOME_PROXY_ERROR), "proxy_error");
  assert_string_equal(mcp_conn_outcome_name(MCP_CONN_OUTCOME_RATE_LIMITED), "rate_limited");
  assert_string_equal(mcp_conn_outcome_name((mcp_conn_outcome_t)99), "-");
  mcp_conn_record_t rec = {"0.0.0.0:443", "[::1]:5", "a.example", "-", MCP_CONN_OUTCOME_OK, 1,
                           2, 3, 0, 0};
  char line[256];
  int n = mcp_conn_record_format(&rec, line, sizeof(line));
  assert_string_equal(line, "listener=0.0.0.0:443 client=[::1]:5 sni=a.example backend=- "
                            "outcome=ok bytes_in=1 bytes_out=2 duration_ms=3");
  assert_int_equal(n, (int)strlen(line));
}

/* The hand-written IPv4 form is exactly what inet_ntop and snprintf write, for any address. */
static void sockaddr_format_ipv4_matches_inet_ntop(void **state)
{
  (void)state;
  uint32_t seed = 12345;
  for (int k = 0; k < 20000; k++) {
    struct sockaddr_in in = {.sin_family = AF_INET};
    uint32_t a;
    uint16_t port;
    if (k == 0) {
      a = 0, port = 0;
    } else if (k == 1) {
      a = 0xffffffffu, port = 65535;
    } else {
      seed = seed * 1103515245u + 12345u;
      a = seed;
      seed = seed * 1103515245u + 12345u;
      port = (uint16_t)(seed >> 16);
    }
    memcpy(&in.sin_addr, &a, 4);
    in.sin_port = htons(port);
    char ip[INET_ADDRSTRLEN], want[64], got[64];
    inet_ntop(AF_INET, &in.sin_addr, ip, sizeof(ip));
    snprintf(want, sizeof(want), "%s:%u", ip, port);
    mcp__sockaddr_format((struct sockaddr *)&in, got, sizeof(got));
    assert_string_equal(got, want);
  }
  struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(443)};
  in6.sin6_addr.s6_addr[15] = 1;
  char got[64];
  mcp__sockaddr_format((struct sockaddr *)&in6, got, sizeof(got));
  assert_string_equal(got, "[::1]:443");
  char small[8];
  struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(65535)};
  mcp__sockaddr_format((struct sockaddr *)&in, small, sizeof(small));
  assert_string_equal(small, "0.0.0.0"); /* truncated like snprintf */
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(pool_gives_back_the_chunk_it_was_given),
      cmocka_unit_test(pool_keeps_at_most_pool_keep_chunks),
      cmocka_unit_test_setup_teardown(conns_have_a_relay_pool_of_its_size,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(released_connection_is_reused_clean, setup, teardown),
      cmocka_unit_test_setup_teardown(free_list_keeps_at_most_conn_keep_objects, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(timeout_lists_keep_arrival_order_and_move_between_lists,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(touch_moves_to_the_tail_once_per_loop_iteration, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(handshake_timeout_closes_in_order_and_counts_unrouted,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(timer_fires_for_the_earliest_head_of_any_list, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(close_counts_down_active_once_and_keeps_the_first_outcome,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(close_all_ends_every_listed_connection, setup, teardown),
      cmocka_unit_test_setup_teardown(an_event_sets_the_flags_and_calls_on_io_once_per_edge,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(a_stale_event_for_a_reused_slot_is_ignored, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_close_while_held_is_released_at_the_unhold, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(again_calls_on_io_once_in_the_next_iteration, setup,
                                      teardown),
      cmocka_unit_test(outcome_names_and_record_format),
      cmocka_unit_test(sockaddr_format_ipv4_matches_inet_ntop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
