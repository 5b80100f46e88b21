/*
 * The event set of lib/conn.c under the orders of events that edge triggering makes risky: a
 * connection closed while its other socket's event is still in the same batch, a record
 * callback that closes another connection while held releases are being let go, and the
 * events handle keeping the loop alive exactly while a connection is live.
 *
 * The .c is included (as test/unit/test_conn.c does) so the held releases and the slots can be
 * looked at; the sockets are real socket pairs and the event set a real epoll instance.
 */
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

/* ---- connections on socket pairs ---- */

static int io_calls;
static int records_seen_in_io; /* f->nrecords when on_io closed its connection */

static void pair(int sv[2])
{
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

/* A connection named SNI whose client is one end of a socket pair; the other end in *peer. */
static mcp__conn_t *conn_with_client(fixture_t *f, const char *sni, int *peer,
                                     void (*on_io)(mcp__conn_t *, mcp__sock_t *))
{
  mcp__conn_t *c = NULL;
  assert_int_equal(mcp__conn_new(&f->cs, &c), 0);
  int sv[2];
  pair(sv);
  c->client.fd = sv[0];
  *peer = sv[1];
  c->on_io = on_io;
  snprintf(c->sni, sizeof(c->sni), "%s", sni);
  return c;
}

static void close_on_first_io(mcp__conn_t *c, mcp__sock_t *s)
{
  (void)s;
  io_calls++;
  assert_int_equal(io_calls, 1); /* the other socket's event must be skipped */
  records_seen_in_io = fixture_of(c->cs)->nrecords;
  mcp__conn_close(c, MCP_CONN_OUTCOME_OK);
  /* Held: the record waits for the end of the batch, the object stays (c is still valid). */
  assert_int_equal(fixture_of(c->cs)->nrecords, 0);
  assert_true(c->closing);
}

/*
 * Client and backend both socket pairs, both on the event set and both readable before
 * the loop runs, so one batch holds an event for each. on_io closes the connection at its
 * first call: the second event must not reach it, and exactly one record comes, at the
 * batch's end.
 */
static void close_in_first_event_skips_the_other_socket_and_records_once(void **state)
{
  fixture_t *f = *state;
  int cpeer, bv[2];
  io_calls = 0;
  records_seen_in_io = -1;
  mcp__conn_t *c = conn_with_client(f, "both", &cpeer, close_on_first_io);
  pair(bv);
  c->backend.fd = bv[0];
  assert_int_equal(write(cpeer, "from client", 11), 11);
  assert_int_equal(write(bv[1], "from backend", 12), 12);
  assert_int_equal(mcp__sock_watch(c, &c->client), 0);
  assert_int_equal(mcp__sock_watch(c, &c->backend), 0);
  assert_true(c->client.watched && c->backend.watched);

  uint64_t deadline = uv_now(&f->loop) + 2000;
  while (f->nrecords == 0 && uv_now(&f->loop) < deadline)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(io_calls, 1);
  assert_int_equal(records_seen_in_io, 0);
  assert_int_equal(f->nrecords, 1);
  assert_string_equal(f->snis[0], "both");
  /* Nothing more arrives later either. */
  for (int i = 0; i < 5; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(io_calls, 1);
  assert_int_equal(f->nrecords, 1);
  assert_int_equal(f->cs.live, 0);
  assert_int_equal(f->empty_calls, 1);
  assert_null(f->cs.released);
  /* Both sockets are closed: the client's unread bytes were thrown away first (a normal
   * close, EOF); the backend's unread ones make its close a reset. Neither is left open. */
  char buf[16];
  assert_int_equal(read(cpeer, buf, sizeof(buf)), 0);
  errno = 0;
  ssize_t n = read(bv[1], buf, sizeof(buf));
  assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
  close(cpeer);
  close(bv[1]);
}

/* Closes its connection at every event. */
static void close_on_io(mcp__conn_t *c, mcp__sock_t *s)
{
  (void)s;
  io_calls++;
  mcp__conn_close(c, MCP_CONN_OUTCOME_OK);
}

static void ignore_io(mcp__conn_t *c, mcp__sock_t *s)
{
  (void)c;
  (void)s;
  io_calls++;
}

static int count_sni(const fixture_t *f, const char *sni)
{
  int n = 0;
  for (int i = 0; i < f->nrecords; i++)
    n += strcmp(f->snis[i], sni) == 0;
  return n;
}

/*
 * Two connections close in one batch (their records are held). The record callback of
 * each closes another connection while the held ones are being released: one that is not on
 * the event set at all, and one that is idle on it. Every record arrives exactly once, the
 * live count reaches 0 and on_empty runs once.
 */
static void on_end_closing_others_during_the_unhold_records_each_once(void **state)
{
  fixture_t *f = *state;
  int pa, pb, pc, pd;
  io_calls = 0;
  mcp__conn_t *a = conn_with_client(f, "a", &pa, close_on_io);
  mcp__conn_t *b = conn_with_client(f, "b", &pb, close_on_io);
  mcp__conn_t *c = conn_with_client(f, "c", &pc, ignore_io); /* never watched */
  mcp__conn_t *d = conn_with_client(f, "d", &pd, ignore_io);
  mcp__conn_timeout_set(c, MCP__T_IDLE);
  mcp__conn_timeout_set(d, MCP__T_IDLE);
  f->close_on_end_of[0] = "a";
  f->close_on_end[0] = c;
  f->close_on_end_of[1] = "b";
  f->close_on_end[1] = d;
  /* d is added (and reported writable) before a and b are: make its event go first. */
  assert_int_equal(mcp__sock_watch(d, &d->client), 0);
  uint64_t deadline = uv_now(&f->loop) + 2000;
  while (io_calls == 0 && uv_now(&f->loop) < deadline)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(io_calls, 1);
  assert_int_equal(f->nrecords, 0);

  assert_int_equal(mcp__sock_watch(a, &a->client), 0);
  assert_int_equal(mcp__sock_watch(b, &b->client), 0);
  assert_int_equal(f->cs.live, 4);
  deadline = uv_now(&f->loop) + 2000;
  while (f->nrecords < 4 && uv_now(&f->loop) < deadline)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  for (int i = 0; i < 5; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(f->nrecords, 4);
  assert_int_equal(count_sni(f, "a"), 1);
  assert_int_equal(count_sni(f, "b"), 1);
  assert_int_equal(count_sni(f, "c"), 1);
  assert_int_equal(count_sni(f, "d"), 1);
  assert_int_equal(f->cs.live, 0);
  assert_int_equal(f->empty_calls, 1);
  assert_null(f->cs.released);
  assert_int_equal(f->cs.dispatching, 0);
  assert_null(f->cs.tlists[MCP__T_IDLE].head);
  close(pa);
  close(pb);
  close(pc);
  close(pd);
}

/*
 * The same inside a held section of the caller's own (as timer_cb and close_all hold):
 * three closed while held; the first record (z's) closes the other two again, which are
 * already closing: nothing changes, each record still comes once.
 */
static void on_end_closing_an_already_released_one_changes_nothing(void **state)
{
  fixture_t *f = *state;
  int p[3];
  mcp__conn_t *x = conn_with_client(f, "x", &p[0], ignore_io);
  mcp__conn_t *y = conn_with_client(f, "y", &p[1], ignore_io);
  mcp__conn_t *z = conn_with_client(f, "z", &p[2], ignore_io);
  /* Released last in, first out: z's record comes first and closes x and y again. */
  f->close_on_end_of[0] = "z";
  f->close_on_end[0] = x;
  f->close_on_end_of[1] = "z";
  f->close_on_end[1] = y;
  mcp__conns_hold(&f->cs);
  mcp__conn_close(x, MCP_CONN_OUTCOME_OK);
  mcp__conn_close(y, MCP_CONN_OUTCOME_OK);
  mcp__conn_close(z, MCP_CONN_OUTCOME_OK);
  assert_int_equal(f->nrecords, 0);
  mcp__conns_unhold(&f->cs);
  assert_int_equal(f->nrecords, 3);
  assert_int_equal(count_sni(f, "x"), 1);
  assert_int_equal(count_sni(f, "y"), 1);
  assert_int_equal(count_sni(f, "z"), 1);
  assert_int_equal(f->cs.live, 0);
  assert_int_equal(f->empty_calls, 1);
  for (int i = 0; i < 3; i++)
    close(p[i]);
}

/* ---- the events handle and the loop's life ---- */

static int watchdog_fired;

static void close_conn_timer(uv_timer_t *t)
{
  mcp__conn_close(t->data, MCP_CONN_OUTCOME_OK);
}

static void watchdog(uv_timer_t *t)
{
  watchdog_fired = 1;
  uv_stop(t->loop);
}

static void nothing_on_close(uv_handle_t *h)
{
  (void)h;
}

/*
 * A live connection keeps the loop running, and nothing else does: the timer that closes
 * it after 50 ms is unreferenced, so without the events handle's reference uv_run would
 * return at once. Once the record is out, uv_run returns by itself (a referenced handle left
 * behind would hold it until the watchdog, also unreferenced, stops it at 2 s).
 */
static void a_live_connection_keeps_the_loop_running_until_its_record(void **state)
{
  fixture_t *f = *state;
  int peer;
  watchdog_fired = 0;
  mcp__conn_t *c = conn_with_client(f, "live", &peer, ignore_io);
  assert_int_equal(mcp__sock_watch(c, &c->client), 0);
  uv_timer_t closer, dog;
  uv_timer_init(&f->loop, &closer);
  uv_timer_init(&f->loop, &dog);
  closer.data = c;
  uv_timer_start(&closer, close_conn_timer, 50, 0);
  uv_timer_start(&dog, watchdog, 2000, 0);
  uv_unref((uv_handle_t *)&closer);
  uv_unref((uv_handle_t *)&dog);

  uint64_t t0 = uv_hrtime();
  uv_run(&f->loop, UV_RUN_DEFAULT);
  uint64_t took_ms = (uv_hrtime() - t0) / 1000000;
  assert_false(watchdog_fired);
  assert_int_equal(f->nrecords, 1);
  assert_string_equal(f->snis[0], "live");
  assert_true(took_ms >= 45); /* the loop's clock may round down a few ms */
  assert_true(took_ms < 1000);
  assert_int_equal(f->cs.live, 0);
  assert_false(uv_has_ref((uv_handle_t *)&f->cs.events));

  /* And with nothing live, the loop does not wait for anything of the event set. */
  t0 = uv_hrtime();
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_true((uv_hrtime() - t0) / 1000000 < 500);
  assert_false(watchdog_fired);

  uv_close((uv_handle_t *)&closer, nothing_on_close);
  uv_close((uv_handle_t *)&dog, nothing_on_close);
  uv_run(&f->loop, UV_RUN_DEFAULT); /* the timers live on this stack: finish their close */
  close(peer);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(close_in_first_event_skips_the_other_socket_and_records_once,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(on_end_closing_others_during_the_unhold_records_each_once,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(on_end_closing_an_already_released_one_changes_nothing, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_live_connection_keeps_the_loop_running_until_its_record,
                                      setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
