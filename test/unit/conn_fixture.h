/*
 * The fixture shared by the unit tests of lib/conn.c (test_conn.c, test_event_set.c): a real
 * libuv loop with one set of connections on it (its event set a real epoll instance), the
 * records its connections leave, and teardown checks that every handle closed and nothing is
 * left live. Include it after lib/conn.c.
 *
 * Handshake 30 ms, connect 60 ms, idle 20 s: short enough for the timeout tests to wait for,
 * far enough apart to tell them apart; the other tests put no connection on a timeout list.
 */
#ifndef MCP_TEST_CONN_FIXTURE_H
#define MCP_TEST_CONN_FIXTURE_H

#define MAX_RECORDS 16

typedef struct fixture_s {
  uv_loop_t loop;
  mcp__conns_t cs;
  mcp__counters_t counters;
  int handles_closed;
  int empty_calls;
  /* What on_end saw, in order. */
  int nrecords;
  mcp_conn_outcome_t outcomes[MAX_RECORDS];
  char snis[MAX_RECORDS][16];
  /* on_end closes close_on_end[i] when the record of SNI close_on_end_of[i] comes. */
  const char *close_on_end_of[4];
  mcp__conn_t *close_on_end[4];
} fixture_t;

static fixture_t *fixture_of(mcp__conns_t *cs)
{
  return (fixture_t *)((char *)cs - offsetof(fixture_t, cs));
}

static void on_end(void *data, const mcp_conn_record_t *rec)
{
  fixture_t *f = data;
  assert_true(f->nrecords < MAX_RECORDS);
  assert_string_equal(rec->listener, "test");
  f->outcomes[f->nrecords] = rec->outcome;
  snprintf(f->snis[f->nrecords], sizeof(f->snis[0]), "%s", rec->sni);
  f->nrecords++;
  for (int i = 0; i < 4; i++) {
    if (f->close_on_end_of[i] && strcmp(f->close_on_end_of[i], rec->sni) == 0) {
      mcp__conn_t *victim = f->close_on_end[i];
      f->close_on_end_of[i] = NULL;
      mcp__conn_close(victim, MCP_CONN_OUTCOME_SHUTDOWN);
    }
  }
}

static void on_empty(mcp__conns_t *cs)
{
  fixture_of(cs)->empty_calls++;
}

static int setup(void **state)
{
  fixture_t *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  const uint64_t timeouts[MCP__T_COUNT] = {30, 60, 20000};
  assert_int_equal(mcp__conns_init(&f->cs, &f->loop, timeouts, 1), 0);
  f->cs.counters = &f->counters;
  f->cs.name = "test";
  f->cs.on_end = on_end;
  f->cs.data = f;
  f->cs.on_empty = on_empty;
  *state = f;
  return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
  fixture_of(h->data)->handles_closed++;
}

static int teardown(void **state)
{
  fixture_t *f = *state;
  mcp__conns_close_all(&f->cs);
  mcp__conns_close_handles(&f->cs, on_handle_closed);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(f->handles_closed, MCP__CONNS_HANDLES);
  assert_int_equal(f->cs.live, 0);
  mcp__conns_finish(&f->cs);
  assert_null(f->cs.free);
  assert_int_equal(uv_loop_close(&f->loop), 0); /* no handle left behind */
  free(f);
  return 0;
}

#endif
