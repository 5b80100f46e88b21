/*
 * The listener through the library API, as an embedder uses it: a caller-owned uv loop, a
 * listener on 127.0.0.1 (port 0), a real TCP backend on the same loop, real client sockets
 * sending a ClientHello captured from curl.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "mcproxy/mcproxy.h"

/* The constructors, asserting success. */
static mcp_routes_t *new_routes(void)
{
  mcp_routes_t *rt = NULL;
  assert_int_equal(mcp_routes_new(&rt), 0);
  assert_non_null(rt);
  return rt;
}

static mcp_firewall_t *new_firewall(void)
{
  mcp_firewall_t *fw = NULL;
  assert_int_equal(mcp_firewall_new(&fw), 0);
  assert_non_null(fw);
  return fw;
}

#define MAX_BYTES 4096

typedef struct side_s {
  uv_tcp_t tcp;
  char got[MAX_BYTES];
  size_t len;
  int eof;
  int closed;
} side_t;

typedef struct fixture_s {
  uv_loop_t loop;
  mcp_listener_t *l;
  uv_tcp_t backend_server;
  side_t backend_conn;
  int backend_accepts;
  char backend_addr[64];
  uint8_t hello[MAX_BYTES];
  size_t hello_len;
  int records;
  char last_outcome[32];
} fixture_t;

static fixture_t *F;

static void load_hello(fixture_t *f)
{
  FILE *fp = fopen(MCP_TEST_VECTORS "/curl.bin", "rb");
  assert_non_null(fp);
  f->hello_len = fread(f->hello, 1, sizeof(f->hello), fp);
  fclose(fp);
  assert_true(f->hello_len > 100);
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
  side_t *s = h->data;
  *buf = uv_buf_init(s->got + s->len, (unsigned)(MAX_BYTES - s->len));
}

static void on_side_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
  side_t *s = st->data;
  if (n > 0)
    s->len += (size_t)n;
  else if (n < 0)
    s->eof = n == UV_EOF ? 1 : -1;
}

static void on_backend_conn(uv_stream_t *server, int status)
{
  fixture_t *f = server->data;
  assert_int_equal(status, 0);
  f->backend_accepts++;
  memset(&f->backend_conn, 0, sizeof(f->backend_conn));
  uv_tcp_init(&f->loop, &f->backend_conn.tcp);
  f->backend_conn.tcp.data = &f->backend_conn;
  assert_int_equal(uv_accept(server, (uv_stream_t *)&f->backend_conn.tcp), 0);
  uv_read_start((uv_stream_t *)&f->backend_conn.tcp, on_alloc, on_side_read);
}

static void on_record(void *data, const mcp_conn_record_t *rec)
{
  fixture_t *f = data;
  f->records++;
  snprintf(f->last_outcome, sizeof(f->last_outcome), "%s", mcp_conn_outcome_name(rec->outcome));
}

/* Runs the loop until *flag is non-zero or 5 s pass. */
static int run_until(fixture_t *f, int *flag)
{
  uint64_t deadline = uv_now(&f->loop) + 5000;
  while (!*flag && uv_now(&f->loop) < deadline) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_sleep(1);
    uv_update_time(&f->loop);
  }
  return *flag;
}

static int setup(void **state)
{
  fixture_t *f = calloc(1, sizeof(*f));
  F = f;
  load_hello(f);
  uv_loop_init(&f->loop);

  /* The backend. */
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  uv_tcp_init(&f->loop, &f->backend_server);
  f->backend_server.data = f;
  assert_int_equal(uv_tcp_bind(&f->backend_server, (struct sockaddr *)&a, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&f->backend_server, 16, on_backend_conn), 0);
  struct sockaddr_in bound;
  int len = sizeof(bound);
  uv_tcp_getsockname(&f->backend_server, (struct sockaddr *)&bound, &len);
  snprintf(f->backend_addr, sizeof(f->backend_addr), "127.0.0.1:%u", ntohs(bound.sin_port));

  /* The proxy. */
  mcp_listener_config_t cfg = {
      .addr = "127.0.0.1:0",
      .handshake_timeout_ms = 2000,
      .on_conn_end = on_record,
      .data = f,
  };
  assert_int_equal(mcp_listener_new(&f->loop, &cfg, &f->l), 0);
  mcp_routes_t *rt = new_routes();
  assert_int_equal(mcp_routes_put(rt, "app.example.com", f->backend_addr), 0);
  mcp_listener_set_routes(f->l, rt);
  mcp_routes_unref(rt);
  assert_int_equal(mcp_listener_start(f->l), 0);
  *state = f;
  return 0;
}

static void on_closed(uv_handle_t *h)
{
}

static void on_freed(void *data)
{
  *(int *)data = 1;
}

static void close_walk(uv_handle_t *h, void *arg)
{
  if (!uv_is_closing(h))
    uv_close(h, on_closed);
}

static int teardown(void **state)
{
  fixture_t *f = *state;
  int freed = 0;
  mcp_listener_free(f->l, on_freed, &freed);
  run_until(f, &freed);
  assert_true(freed);
  uv_walk(&f->loop, close_walk, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  free(f);
  return 0;
}

typedef struct client_s {
  side_t side;
  uv_connect_t creq;
  int connected;
} client_t;

static void on_client_connect(uv_connect_t *req, int status)
{
  client_t *c = req->data;
  c->connected = status == 0 ? 1 : -1;
}

/* Connects to the listener; returns 1 when connected, -1 when the connect failed. */
static int client_try_connect(fixture_t *f, client_t *c)
{
  memset(c, 0, sizeof(*c));
  struct sockaddr_storage ss;
  assert_int_equal(mcp_listener_sockname(f->l, &ss), 0);
  uv_tcp_init(&f->loop, &c->side.tcp);
  c->side.tcp.data = &c->side;
  c->creq.data = c;
  assert_int_equal(uv_tcp_connect(&c->creq, &c->side.tcp, (struct sockaddr *)&ss,
                                  on_client_connect),
                   0);
  assert_true(run_until(f, &c->connected));
  if (c->connected == 1)
    uv_read_start((uv_stream_t *)&c->side.tcp, on_alloc, on_side_read);
  return c->connected;
}

static void client_connect(fixture_t *f, client_t *c)
{
  assert_int_equal(client_try_connect(f, c), 1);
}

static void client_send(client_t *c, const void *data, size_t len)
{
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  assert_int_equal(uv_try_write((uv_stream_t *)&c->side.tcp, &b, 1), (int)len);
}

static void client_close(client_t *c)
{
  uv_close((uv_handle_t *)&c->side.tcp, on_closed);
}

static void relays_hello_byte_for_byte_then_both_ways(void **state)
{
  fixture_t *f = *state;
  client_t c;
  client_connect(f, &c);
  client_send(&c, f->hello, f->hello_len);
  client_send(&c, "PING", 4);

  /* The backend sees the ClientHello unchanged, then the client's bytes. */
  int got_all = 0;
  uint64_t deadline = uv_now(&f->loop) + 5000;
  while (!got_all && uv_now(&f->loop) < deadline) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    got_all = f->backend_accepts == 1 && f->backend_conn.len == f->hello_len + 4;
    uv_update_time(&f->loop);
  }
  assert_true(got_all);
  assert_memory_equal(f->backend_conn.got, f->hello, f->hello_len);
  assert_memory_equal(f->backend_conn.got + f->hello_len, "PING", 4);

  uv_buf_t b = uv_buf_init("PONG", 4);
  assert_int_equal(uv_try_write((uv_stream_t *)&f->backend_conn.tcp, &b, 1), 4);
  int four = 0;
  deadline = uv_now(&f->loop) + 5000;
  while (!four && uv_now(&f->loop) < deadline) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    four = c.side.len == 4;
    uv_update_time(&f->loop);
  }
  assert_true(four);
  assert_memory_equal(c.side.got, "PONG", 4);

  /* The client's close reaches the backend as EOF; once the backend closes too, the connection
   * ends and is logged as ok. */
  client_close(&c);
  assert_true(run_until(f, &f->backend_conn.eof));
  assert_int_equal(f->records, 0);
  uv_close((uv_handle_t *)&f->backend_conn.tcp, on_closed);
  assert_true(run_until(f, &f->records));
  assert_string_equal(f->last_outcome, "ok");
  mcp_listener_stats_t st;
  mcp_listener_get_stats(f->l, &st);
  assert_int_equal(st.accepted_total, 1);
  assert_int_equal(st.active_connections, 0);
}

static void unknown_sni_is_closed_without_reaching_a_backend(void **state)
{
  fixture_t *f = *state;
  mcp_routes_t *rt = new_routes();
  assert_int_equal(mcp_routes_put(rt, "other.example.com", f->backend_addr), 0);
  mcp_listener_set_routes(f->l, rt);
  mcp_routes_unref(rt);

  client_t c;
  client_connect(f, &c);
  client_send(&c, f->hello, f->hello_len);
  assert_true(run_until(f, &c.side.eof));
  assert_int_equal(c.side.eof, 1); /* a normal close, not a reset */
  assert_int_equal(c.side.len, 0);
  assert_int_equal(f->backend_accepts, 0);
  assert_true(run_until(f, &f->records));
  assert_string_equal(f->last_outcome, "unrouted");
  mcp_listener_stats_t st;
  mcp_listener_get_stats(f->l, &st);
  assert_int_equal(st.unrouted_total, 1);
  client_close(&c);
}

static void blocked_client_is_reset(void **state)
{
  fixture_t *f = *state;
  mcp_firewall_t *fw = new_firewall();
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_CIDR, "127.0.0.0/8"), 0);
  assert_int_equal(mcp_listener_set_firewall(f->l, fw), 0);
  mcp_firewall_unref(fw);

  /* Client and proxy share this loop, so the reset may beat the connect callback. Either way
   * the client gets a reset and no bytes. */
  client_t c;
  if (client_try_connect(f, &c) == 1) {
    assert_true(run_until(f, &c.side.eof));
    assert_int_equal(c.side.eof, -1); /* ECONNRESET */
  }
  assert_int_equal(c.side.len, 0);
  assert_int_equal(f->backend_accepts, 0);
  mcp_listener_stats_t st;
  mcp_listener_get_stats(f->l, &st);
  assert_int_equal(st.blocked_total, 1);
  client_close(&c);
}

static void limit_closes_the_connection_over_the_limit(void **state)
{
  fixture_t *f = *state;
  mcp_listener_set_max_connections(f->l, 1);
  client_t a, b;
  client_connect(f, &a);
  client_send(&a, f->hello, f->hello_len);
  int accepted = 0;
  uint64_t deadline = uv_now(&f->loop) + 5000;
  while (!accepted && uv_now(&f->loop) < deadline) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    accepted = f->backend_accepts == 1;
    uv_update_time(&f->loop);
  }
  assert_true(accepted);

  client_connect(f, &b);
  assert_true(run_until(f, &b.side.eof));
  assert_int_equal(b.side.eof, 1);
  mcp_listener_stats_t st;
  mcp_listener_get_stats(f->l, &st);
  assert_int_equal(st.rejected_limit_total, 1);
  assert_int_equal(st.active_connections, 1);
  client_close(&a);
  client_close(&b);
  assert_true(run_until(f, &f->backend_conn.eof));
  uv_close((uv_handle_t *)&f->backend_conn.tcp, on_closed);
}

static void limit_close_is_a_fin_even_after_the_client_sent_its_hello(void **state)
{
  fixture_t *f = *state;
  mcp_listener_set_max_connections(f->l, 1);
  client_t a;
  client_connect(f, &a);
  client_send(&a, f->hello, f->hello_len);
  int accepted = 0;
  uint64_t deadline = uv_now(&f->loop) + 5000;
  while (!accepted && uv_now(&f->loop) < deadline) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    accepted = f->backend_accepts == 1;
    uv_update_time(&f->loop);
  }
  assert_true(accepted);

  /* A plain blocking socket, so its hello is queued at the proxy before the loop runs again
   * and the proxy accepts (and refuses) it. */
  struct sockaddr_storage ss;
  assert_int_equal(mcp_listener_sockname(f->l, &ss), 0);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  assert_int_equal(connect(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  assert_int_equal(send(fd, f->hello, f->hello_len, 0), (ssize_t)f->hello_len);
  mcp_listener_stats_t st;
  deadline = uv_now(&f->loop) + 5000;
  do {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_update_time(&f->loop);
    mcp_listener_get_stats(f->l, &st);
  } while (st.rejected_limit_total < 1 && uv_now(&f->loop) < deadline);
  assert_int_equal(st.rejected_limit_total, 1);

  struct timeval tv = {.tv_sec = 5};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char byte;
  assert_int_equal(recv(fd, &byte, 1, 0), 0); /* EOF, not ECONNRESET */
  close(fd);

  client_close(&a);
  assert_true(run_until(f, &f->backend_conn.eof));
  uv_close((uv_handle_t *)&f->backend_conn.tcp, on_closed);
}

/* A second listener of the same address: reuseport, sharing the first one's counters. */
static mcp_listener_t *sibling(fixture_t *f, int share)
{
  struct sockaddr_storage ss;
  assert_int_equal(mcp_listener_sockname(f->l, &ss), 0);
  char addr[64];
  snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(((struct sockaddr_in *)&ss)->sin_port));
  mcp_listener_config_t cfg = {.addr = addr, .reuseport = 1, .share_with = share ? f->l : NULL};
  mcp_listener_t *l;
  assert_int_equal(mcp_listener_new(&f->loop, &cfg, &l), 0);
  mcp_listener_set_routes(l, mcp_listener_routes(f->l));
  return l;
}

static int setup_reuseport(void **state)
{
  fixture_t *f = calloc(1, sizeof(*f));
  load_hello(f);
  uv_loop_init(&f->loop);
  mcp_listener_config_t cfg = {.addr = "127.0.0.1:0", .reuseport = 1};
  assert_int_equal(mcp_listener_new(&f->loop, &cfg, &f->l), 0);
  assert_int_equal(mcp_listener_start(f->l), 0);
  *state = f;
  return 0;
}

static void a_second_proxy_cannot_join_a_reuseport_address(void **state)
{
  fixture_t *f = *state;
  mcp_listener_t *stranger = sibling(f, 0);
  assert_int_equal(mcp_listener_start(stranger), UV_EADDRINUSE);
  mcp_listener_t *worker = sibling(f, 1);
  assert_int_equal(mcp_listener_start(worker), 0);
  int freed = 0;
  mcp_listener_free(stranger, NULL, NULL);
  mcp_listener_free(worker, on_freed, &freed);
  assert_true(run_until(f, &freed));
}

static void listeners_of_one_address_share_the_limit_and_counters(void **state)
{
  fixture_t *f = *state;
  mcp_listener_t *worker = sibling(f, 1);
  assert_int_equal(mcp_listener_start(worker), 0);
  mcp_listener_set_max_connections(f->l, 1);

  /* Whichever socket the kernel picks, the second connection is over the shared limit. */
  client_t a, b;
  client_connect(f, &a);
  client_connect(f, &b);
  mcp_listener_stats_t st;
  uint64_t deadline = uv_now(&f->loop) + 5000;
  do {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_update_time(&f->loop);
    mcp_listener_get_stats(worker, &st);
  } while (st.rejected_limit_total < 1 && uv_now(&f->loop) < deadline);
  assert_int_equal(st.max_connections, 1);
  assert_int_equal(st.accepted_total, 2);
  assert_int_equal(st.rejected_limit_total, 1);
  assert_int_equal(st.active_connections, 1);
  client_close(&a);
  client_close(&b);
  int freed = 0;
  mcp_listener_free(worker, on_freed, &freed);
  assert_true(run_until(f, &freed));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(relays_hello_byte_for_byte_then_both_ways, setup, teardown),
      cmocka_unit_test_setup_teardown(unknown_sni_is_closed_without_reaching_a_backend, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(blocked_client_is_reset, setup, teardown),
      cmocka_unit_test_setup_teardown(limit_closes_the_connection_over_the_limit, setup, teardown),
      cmocka_unit_test_setup_teardown(limit_close_is_a_fin_even_after_the_client_sent_its_hello,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(a_second_proxy_cannot_join_a_reuseport_address,
                                      setup_reuseport, teardown),
      cmocka_unit_test_setup_teardown(listeners_of_one_address_share_the_limit_and_counters,
                                      setup_reuseport, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
