/*
 * Unit tests for the control queue (cli/control.c): real SQLite files in a fresh temporary
 * directory, a real uv loop running libuv's work threads, real listeners (created, not started:
 * nothing is bound). Most tests run without worker loops, so a publication completes at once;
 * one starts a worker loop so that a change spends time being published.
 *
 * What is checked: requests are written and answered in the order they were submitted, a bad
 * request is answered at once without waiting for the queue, and the shutdown promise: the
 * change being written when control_stop() is called completes and is answered truthfully,
 * while the queued ones (and any later one) are refused with MCP_EBUSY and never touch the
 * database or memory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "control.h"
#include "state.h"
#include "workers.h"

#define LISTENER "127.0.0.1:18443"
#define MAX_REQS 16
/* Bounded wait: loop iterations allowed before a test gives up on an answer. */
#define MAX_SPINS 100000

typedef struct ctx_s {
  char dir[64];
  char db[128];
  uv_loop_t loop;
  state_t st;
  control_t *ctl;
  control_req_t reqs[MAX_REQS];
  int answered[MAX_REQS]; /* order of answers: answered[k] = index of the k-th request done */
  int status[MAX_REQS];
  char msg[MAX_REQS][512];
  int nanswered;
} ctx_t;

static ctx_t *current;

static void on_done(control_req_t *req, int status, const char *msg)
{
  ctx_t *t = current;
  int i = (int)(req - t->reqs);
  t->status[i] = status;
  snprintf(t->msg[i], sizeof(t->msg[i]), "%s", msg);
  t->answered[t->nanswered++] = i;
}

static int setup(void **state)
{
  ctx_t *t = calloc(1, sizeof(*t));
  char err[256];
  if (!t)
    return -1;
  snprintf(t->dir, sizeof(t->dir), "/tmp/mcp-control-test-XXXXXX");
  if (!mkdtemp(t->dir))
    return -1;
  snprintf(t->db, sizeof(t->db), "%s/mc-proxy.db", t->dir);
  if (uv_loop_init(&t->loop) != 0)
    return -1;
  t->st.loop = &t->loop;
  if (mcp_store_open(t->db, 0, &t->st.store, err, sizeof(err)) != 0)
    return -1;
  if (mcp_store_listener_add(t->st.store, LISTENER, 0) != 0)
    return -1;
  if (mcp_firewall_new(&t->st.firewall) != 0)
    return -1;
  t->st.listeners = calloc(1, sizeof(*t->st.listeners));
  if (!t->st.firewall || !t->st.listeners || mcp_firewall_seal(t->st.firewall) != 0)
    return -1;
  mcp_listener_config_t lc = {.addr = LISTENER};
  if (mcp_listener_new(&t->loop, &lc, &t->st.listeners[0]) != 0)
    return -1;
  t->st.nlisteners = 1;
  t->ctl = control_new(&t->st);
  if (!t->ctl)
    return -1;
  current = t;
  *state = t;
  return 0;
}

static int teardown(void **state)
{
  ctx_t *t = *state;
  control_free(t->ctl);
  mcp_listener_free(t->st.listeners[0], NULL, NULL);
  uv_run(&t->loop, UV_RUN_DEFAULT);
  uv_loop_close(&t->loop);
  free(t->st.listeners);
  mcp_firewall_unref(t->st.firewall);
  mcp_store_close(t->st.store);
  char p[256];
  const char *suffix[] = {"", "-wal", "-shm", NULL};
  for (int i = 0; suffix[i]; i++) {
    snprintf(p, sizeof(p), "%s%s", t->db, suffix[i]);
    unlink(p);
  }
  rmdir(t->dir);
  free(t);
  return 0;
}

/* Like setup, plus one worker loop: the listener listens (port 0) and a worker shares it. */
static int setup_workers(void **state)
{
  if (setup(state) != 0)
    return -1;
  ctx_t *t = *state;
  char err[256];
  mcp_listener_free(t->st.listeners[0], NULL, NULL);
  mcp_listener_config_t lc = {.addr = "127.0.0.1:0", .reuseport = 1};
  t->st.listener_config = lc;
  if (mcp_listener_new(&t->loop, &lc, &t->st.listeners[0]) != 0)
    return -1;
  if (mcp_store_listener_add(t->st.store, mcp_listener_addr(t->st.listeners[0]), 0) != 0)
    return -1;
  if (mcp_listener_set_firewall(t->st.listeners[0], t->st.firewall) != 0 ||
      mcp_listener_start(t->st.listeners[0]) != 0)
    return -1;
  if (workers_start(&t->st, 2, err, sizeof(err)) != 0)
    return -1;
  return 0;
}

static int teardown_workers(void **state)
{
  ctx_t *t = *state;
  workers_stop(&t->st);
  return teardown(state);
}

static control_req_t *route_req(ctx_t *t, int i, control_op_t op, const char *host,
                                const char *backend)
{
  control_req_t *r = &t->reqs[i];
  memset(r, 0, sizeof(*r));
  r->op = op;
  snprintf(r->listener, sizeof(r->listener), "%s", mcp_listener_addr(t->st.listeners[0]));
  snprintf(r->hostname, sizeof(r->hostname), "%s", host);
  snprintf(r->backend, sizeof(r->backend), "%s", backend ? backend : "");
  r->done = on_done;
  t->status[i] = -12345;
  return r;
}

static control_req_t *rule_req(ctx_t *t, int i, control_op_t op, const char *value)
{
  control_req_t *r = &t->reqs[i];
  memset(r, 0, sizeof(*r));
  r->op = op;
  r->rule_type = MCP_FIREWALL_IP;
  snprintf(r->rule_value, sizeof(r->rule_value), "%s", value);
  r->done = on_done;
  t->status[i] = -12345;
  return r;
}

/* Runs the loop until n requests in all have been answered (bounded). */
static void wait_answers(ctx_t *t, int n)
{
  for (int spins = 0; t->nanswered < n && spins < MAX_SPINS; spins++)
    uv_run(&t->loop, UV_RUN_ONCE);
  assert_int_equal(t->nanswered, n);
}

/* Collects the database's routes as "host backend;" in one string. */
static int collect_route(void *data, const char *laddr, const char *host, const char *backend)
{
  char *out = data;
  size_t n = strlen(out);
  snprintf(out + n, 1024 - n, "%s %s;", host, backend);
  return 0;
}

static void db_routes(ctx_t *t, char out[1024])
{
  out[0] = '\0';
  mcp_store_visitor_t v = {.route = collect_route};
  assert_int_equal(mcp_store_load(t->st.store, &v, out), 0);
}

static const char *mem_backend(ctx_t *t, const char *host)
{
  const mcp_backend_t *b =
      mcp_routes_lookup(mcp_listener_routes(t->st.listeners[0]), host, strlen(host));
  return b ? b->text : NULL;
}

static void requests_are_written_and_answered_in_order(void **state)
{
  ctx_t *t = *state;
  control_submit(t->ctl, route_req(t, 0, CONTROL_ROUTE_ADD, "a.example", "127.0.0.1:9001"));
  control_submit(t->ctl, route_req(t, 1, CONTROL_ROUTE_ADD, "a.example", "127.0.0.1:9002"));
  control_submit(t->ctl, route_req(t, 2, CONTROL_ROUTE_REMOVE, "a.example", NULL));
  control_submit(t->ctl, route_req(t, 3, CONTROL_ROUTE_ADD, "a.example", "127.0.0.1:9003"));
  control_submit(t->ctl, rule_req(t, 4, CONTROL_RULE_ADD, "192.0.2.7"));
  control_submit(t->ctl, rule_req(t, 5, CONTROL_RULE_REMOVE, "192.0.2.7"));
  /* Nothing is answered before the loop runs: the writes happen on a work thread. */
  assert_int_equal(t->nanswered, 0);
  assert_int_equal(control_busy(t->ctl), 1);
  wait_answers(t, 6);
  for (int i = 0; i < 6; i++) {
    assert_int_equal(t->answered[i], i);
    assert_int_equal(t->status[i], 0);
  }
  assert_int_equal(control_busy(t->ctl), 0);
  /* Applied in order: the last add wins, the rule came and went. */
  char routes[1024];
  db_routes(t, routes);
  assert_string_equal(routes, "a.example 127.0.0.1:9003;");
  assert_string_equal(mem_backend(t, "a.example"), "127.0.0.1:9003");
  assert_int_equal(mcp_firewall_count(t->st.firewall), 0);
}

static void a_bad_request_is_answered_at_once(void **state)
{
  ctx_t *t = *state;
  control_submit(t->ctl, route_req(t, 0, CONTROL_ROUTE_ADD, "a.example", "127.0.0.1:9001"));
  control_submit(t->ctl, route_req(t, 1, CONTROL_ROUTE_ADD, "bad host!", "127.0.0.1:9001"));
  /* Refused in validation, before the queued write ahead of it finished. */
  assert_int_equal(t->nanswered, 1);
  assert_int_equal(t->answered[0], 1);
  assert_int_equal(t->status[1], MCP_EINVAL);
  assert_non_null(strstr(t->msg[1], "invalid hostname"));
  wait_answers(t, 2);
  assert_int_equal(t->answered[1], 0);
  assert_int_equal(t->status[0], 0);
}

static void validation_refuses_loops_and_unknown_listeners(void **state)
{
  ctx_t *t = *state;
  control_submit(t->ctl, route_req(t, 0, CONTROL_ROUTE_ADD, "a.example", LISTENER));
  assert_int_equal(t->status[0], MCP_ELOOP);
  control_req_t *r = route_req(t, 1, CONTROL_ROUTE_ADD, "a.example", "127.0.0.1:9001");
  snprintf(r->listener, sizeof(r->listener), "127.0.0.1:1");
  control_submit(t->ctl, r);
  assert_int_equal(t->status[1], MCP_ENOENT);
  control_submit(t->ctl, rule_req(t, 2, CONTROL_RULE_ADD, "not-an-ip"));
  assert_int_equal(t->status[2], MCP_EINVAL);
  assert_int_equal(t->nanswered, 3);
  assert_int_equal(control_busy(t->ctl), 0);
}

static void a_failed_write_leaves_memory_alone(void **state)
{
  ctx_t *t = *state;
  control_submit(t->ctl, route_req(t, 0, CONTROL_ROUTE_REMOVE, "nothing.example", NULL));
  wait_answers(t, 1);
  assert_int_equal(t->status[0], MCP_ENOENT);
  assert_non_null(strstr(t->msg[0], "no route for nothing.example"));
  assert_int_equal(mcp_routes_count(mcp_listener_routes(t->st.listeners[0])), 0);
}

static void stop_completes_the_change_in_flight_and_refuses_the_queue(void **state)
{
  ctx_t *t = *state;
  control_submit(t->ctl, route_req(t, 0, CONTROL_ROUTE_ADD, "a.example", "127.0.0.1:9001"));
  control_submit(t->ctl, route_req(t, 1, CONTROL_ROUTE_ADD, "b.example", "127.0.0.1:9002"));
  control_submit(t->ctl, rule_req(t, 2, CONTROL_RULE_ADD, "192.0.2.9"));
  assert_int_equal(control_busy(t->ctl), 1); /* the first is on a work thread */

  control_stop(t->ctl);
  /* The queued ones are refused at once, in order, and the one in flight is not. */
  assert_int_equal(t->nanswered, 2);
  assert_int_equal(t->answered[0], 1);
  assert_int_equal(t->answered[1], 2);
  assert_int_equal(t->status[1], MCP_EBUSY);
  assert_int_equal(t->status[2], MCP_EBUSY);
  assert_non_null(strstr(t->msg[1], "nothing was changed"));
  assert_int_equal(t->status[0], -12345);
  assert_int_equal(control_busy(t->ctl), 1);

  /* A later request is refused too, without waiting. */
  control_submit(t->ctl, route_req(t, 3, CONTROL_ROUTE_ADD, "c.example", "127.0.0.1:9003"));
  assert_int_equal(t->nanswered, 3);
  assert_int_equal(t->status[3], MCP_EBUSY);

  /* The change in flight completes and is answered with what really happened. */
  wait_answers(t, 4);
  assert_int_equal(t->answered[3], 0);
  assert_int_equal(t->status[0], 0);
  assert_int_equal(control_busy(t->ctl), 0);

  char routes[1024];
  db_routes(t, routes);
  assert_string_equal(routes, "a.example 127.0.0.1:9001;");
  assert_string_equal(mem_backend(t, "a.example"), "127.0.0.1:9001");
  assert_null(mem_backend(t, "b.example"));
  assert_int_equal(mcp_firewall_count(t->st.firewall), 0);
}

static void stop_when_idle_refuses_everything_later(void **state)
{
  ctx_t *t = *state;
  control_stop(t->ctl);
  assert_int_equal(control_busy(t->ctl), 0);
  control_submit(t->ctl, rule_req(t, 0, CONTROL_RULE_ADD, "192.0.2.9"));
  assert_int_equal(t->nanswered, 1);
  assert_int_equal(t->status[0], MCP_EBUSY);
  assert_int_equal(control_busy(t->ctl), 0);
}

/*
 * The shutdown promise holds while the change in flight is being published to the worker loops
 * (written and applied on the main loop, not yet answered): the queued request is refused at once.
 */
static void stop_during_publication_refuses_the_queue(void **state)
{
  ctx_t *t = *state;
  /* The publication normally outlasts one loop iteration; try a few times should it not. */
  for (int attempt = 0; attempt < 5; attempt++) {
    char host[64];
    snprintf(host, sizeof(host), "a%d.example", attempt);
    int base = t->nanswered;
    int a = 2 * attempt, b = a + 1;
    control_submit(t->ctl, route_req(t, a, CONTROL_ROUTE_ADD, host, "127.0.0.1:9001"));
    control_submit(t->ctl, route_req(t, b, CONTROL_ROUTE_ADD, "b.example", "127.0.0.1:9002"));
    for (int spins = 0; !mem_backend(t, host) && spins < MAX_SPINS; spins++)
      uv_run(&t->loop, UV_RUN_ONCE);
    assert_non_null(mem_backend(t, host));
    if (t->nanswered != base) {
      wait_answers(t, base + 2); /* published already: let both finish and try again */
      continue;
    }
    assert_int_equal(control_busy(t->ctl), 1);
    control_stop(t->ctl);
    assert_int_equal(t->nanswered, base + 1);
    assert_int_equal(t->answered[base], b);
    assert_int_equal(t->status[b], MCP_EBUSY);
    wait_answers(t, base + 2);
    assert_int_equal(t->answered[base + 1], a);
    assert_int_equal(t->status[a], 0);
    assert_int_equal(control_busy(t->ctl), 0);
    return;
  }
  fail_msg("every publication finished within one loop iteration");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(requests_are_written_and_answered_in_order, setup, teardown),
      cmocka_unit_test_setup_teardown(a_bad_request_is_answered_at_once, setup, teardown),
      cmocka_unit_test_setup_teardown(validation_refuses_loops_and_unknown_listeners, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_failed_write_leaves_memory_alone, setup, teardown),
      cmocka_unit_test_setup_teardown(stop_completes_the_change_in_flight_and_refuses_the_queue,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(stop_when_idle_refuses_everything_later, setup, teardown),
      cmocka_unit_test_setup_teardown(stop_during_publication_refuses_the_queue, setup_workers,
                                      teardown_workers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
