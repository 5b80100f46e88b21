/*
 * Backends beyond parsing: the registry of our own listen addresses (lib/backend.c), the loop
 * check for hostname backends, and the resolver (lib/resolver.c): its cache's lifetime and
 * bound, its queue bound, cancellation, and its threads being separate from libuv's pool.
 * Names are numeric ("127.0.0.3") or "localhost" so no test depends on a DNS server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "backend_internal.h"
#include "mcproxy/mcproxy.h"
#include "resolver.h"

static struct sockaddr_storage sa_of(const char *ip, int port)
{
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  if (strchr(ip, ':')) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
  } else {
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
  }
  return ss;
}

/* A listening socket on ip, port chosen by the kernel; its port in *port. */
static int listen_on(const char *ip, int *port)
{
  struct sockaddr_storage ss = sa_of(ip, 0);
  int fd = socket(ss.ss_family, SOCK_STREAM, 0);
  int zero = 0;
  assert_true(fd >= 0);
  if (ss.ss_family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  socklen_t len = sizeof(ss);
  assert_int_equal(bind(fd, (struct sockaddr *)&ss, ss.ss_family == AF_INET6
                                                        ? sizeof(struct sockaddr_in6)
                                                        : sizeof(struct sockaddr_in)),
                   0);
  assert_int_equal(listen(fd, 16), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
  *port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return fd;
}

static int own(const char *ip, int port)
{
  struct sockaddr_storage ss = sa_of(ip, port);
  return mcp_backend_is_own_listener((struct sockaddr *)&ss);
}

static void registry_matches_exact_address_and_port(void **state)
{
  (void)state;
  int port;
  int fd = listen_on("127.0.0.1", &port);
  assert_false(own("127.0.0.1", port));
  mcp__backend_self_add(fd);
  assert_true(own("127.0.0.1", port));
  assert_true(own("::ffff:127.0.0.1", port));
  assert_true(own("0.0.0.0", port)); /* connecting to 0.0.0.0 reaches the local host */
  assert_false(own("127.0.0.1", port == 65535 ? 1 : port + 1));
  assert_false(own("127.0.0.2", port));
  /* Counted: two registrations need two removals. */
  mcp__backend_self_add(fd);
  mcp__backend_self_remove(fd);
  assert_true(own("127.0.0.1", port));
  mcp__backend_self_remove(fd);
  assert_false(own("127.0.0.1", port));
  close(fd);
}

static void registry_wildcard_covers_local_addresses(void **state)
{
  (void)state;
  int p4, p6;
  int fd4 = listen_on("0.0.0.0", &p4);
  int fd6 = listen_on("::", &p6);
  mcp__backend_self_add(fd4);
  mcp__backend_self_add(fd6);
  assert_true(own("127.0.0.1", p4));
  assert_true(own("127.9.9.9", p4));
  assert_false(own("::1", p4)); /* an IPv4 wildcard takes no IPv6 */
  assert_false(own("192.0.2.1", p4)); /* not an address of this host */
  assert_true(own("::1", p6));
  assert_true(own("127.0.0.1", p6)); /* dual-stack */
  mcp__backend_self_remove(fd4);
  mcp__backend_self_remove(fd6);
  assert_false(own("127.0.0.1", p4));
  assert_false(own("::1", p6));
  close(fd4);
  close(fd6);
}

static int check(const char *backend, const char *listen_ip, int listen_port)
{
  mcp_backend_t b;
  assert_int_equal(mcp_backend_parse(backend, &b), 0);
  struct sockaddr_storage l = sa_of(listen_ip, listen_port);
  const struct sockaddr *ls[1] = {(struct sockaddr *)&l};
  return mcp_backend_check_loop(&b, ls, 1, 2000);
}

static void check_loop_catches_hostnames_that_reach_a_listener(void **state)
{
  (void)state;
  assert_int_equal(check("localhost:4431", "127.0.0.1", 4431), MCP_ELOOP);
  assert_int_equal(check("LOCALHOST:4431", "127.0.0.1", 4431), MCP_ELOOP);
  assert_int_equal(check("localhost.:4431", "127.0.0.1", 4431), MCP_ELOOP);
  assert_int_equal(check("LocalHost.:4431", "::1", 4431), MCP_ELOOP);
  assert_int_equal(check("api.localhost:4431", "0.0.0.0", 4431), MCP_ELOOP);
  assert_int_equal(check("127.0.0.1:4431", "127.0.0.1", 4431), MCP_ELOOP);
  assert_int_equal(check("localhost:4432", "127.0.0.1", 4431), 0);
  assert_int_equal(check("notlocalhost.example:4431", "127.0.0.2", 4431), 0);
  assert_int_equal(check("10.1.2.3:4431", "127.0.0.1", 4431), 0);
}

static int64_t resolves(void)
{
  mcp_backend_resolver_stats_t st;
  mcp_backend_resolver_stats(&st);
  return (int64_t)st.resolves;
}

static int wait_ok(const char *name)
{
  struct sockaddr_in6 a[4];
  int n = 0;
  int rc = mcp__resolve_wait(name, 5000, a, 4, &n);
  return rc == 0 && n >= 1 ? 0 : -1;
}

static void cache_answers_until_its_lifetime_ends(void **state)
{
  (void)state;
  mcp__resolver_configure(0, 0, 16, 300, 300);
  int64_t before = resolves();
  assert_int_equal(wait_ok("127.0.0.3"), 0);
  assert_int_equal(resolves(), before + 1);
  assert_int_equal(wait_ok("127.0.0.3"), 0);
  assert_int_equal(resolves(), before + 1); /* cached */
  usleep(400 * 1000);
  assert_int_equal(wait_ok("127.0.0.3"), 0);
  assert_int_equal(resolves(), before + 2); /* expired, asked again */
  mcp__resolver_configure(0, 0, MCP__RESOLVE_CACHE, MCP__RESOLVE_TTL_MS, MCP__RESOLVE_NEG_TTL_MS);
}

static void cache_holds_at_most_its_size_evicting_the_least_recent(void **state)
{
  (void)state;
  mcp__resolver_configure(0, 0, 2, 60000, 60000);
  int64_t before = resolves();
  assert_int_equal(wait_ok("127.0.0.1"), 0);
  assert_int_equal(wait_ok("127.0.0.2"), 0);
  assert_int_equal(resolves(), before + 2);
  assert_int_equal(wait_ok("127.0.0.1"), 0); /* a hit; .2 is now the least recent */
  assert_int_equal(resolves(), before + 2);
  assert_int_equal(wait_ok("127.0.0.3"), 0); /* evicts .2 */
  assert_int_equal(resolves(), before + 3);
  assert_int_equal(wait_ok("127.0.0.1"), 0);
  assert_int_equal(resolves(), before + 3);
  assert_int_equal(wait_ok("127.0.0.2"), 0);
  assert_int_equal(resolves(), before + 4);
  mcp__resolver_configure(0, 0, MCP__RESOLVE_CACHE, MCP__RESOLVE_TTL_MS, MCP__RESOLVE_NEG_TTL_MS);
}

typedef struct {
  int work_done;
  int resolved;
  int status;
  int connected_fd;
} events_t;

static void on_work(uv_work_t *req)
{
  (void)req;
}

static void on_work_done(uv_work_t *req, int status)
{
  (void)status;
  ((events_t *)req->data)->work_done = 1;
}

static void on_lookup(mcp__lookup_t *l, int status, void *data)
{
  (void)l;
  events_t *ev = data;
  ev->resolved++;
  ev->status = status;
}

/* Runs the loop until *flag is set, at most ~5 s. */
static void run_until(uv_loop_t *loop, const int *flag)
{
  for (int i = 0; i < 500 && !*flag; i++) {
    uv_run(loop, UV_RUN_NOWAIT);
    usleep(10 * 1000);
  }
}

static void blocked_resolver_does_not_delay_libuv_work(void **state)
{
  (void)state;
  uv_loop_t loop;
  events_t ev = {0};
  uv_loop_init(&loop);
  mcp__resolver_configure(0, 0, MCP__RESOLVE_CACHE, MCP__RESOLVE_TTL_MS, MCP__RESOLVE_NEG_TTL_MS);
  mcp__resolver_block(1);

  mcp__lookup_t *l = NULL;
  assert_int_equal(mcp__lookup_start(&loop, "127.0.0.4", 443, on_lookup, &ev, &l), 1);
  /* Admin writes run on libuv's pool: they must go through while every resolver thread waits. */
  uv_work_t w;
  w.data = &ev;
  assert_int_equal(uv_queue_work(&loop, &w, on_work, on_work_done), 0);
  run_until(&loop, &ev.work_done);
  assert_true(ev.work_done);
  assert_int_equal(ev.resolved, 0);

  mcp__resolver_block(0);
  run_until(&loop, &ev.resolved);
  assert_int_equal(ev.resolved, 1);
  assert_int_equal(ev.status, 0);
  const struct sockaddr *a = mcp__lookup_next(l);
  assert_non_null(a);
  assert_int_equal(ntohs(((const struct sockaddr_in *)a)->sin_port), 443);
  assert_null(mcp__lookup_next(l));
  mcp__lookup_free(l);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void full_queue_fails_at_once_and_freed_lookups_never_call_back(void **state)
{
  (void)state;
  uv_loop_t loop;
  events_t ev = {0};
  uv_loop_init(&loop);
  mcp__resolver_configure(0, 2, MCP__RESOLVE_CACHE, MCP__RESOLVE_TTL_MS, MCP__RESOLVE_NEG_TTL_MS);
  mcp__resolver_block(1);
  mcp__lookup_t *a = NULL, *b = NULL, *c = NULL;
  assert_int_equal(mcp__lookup_start(&loop, "127.0.0.5", 1, on_lookup, &ev, &a), 1);
  assert_int_equal(mcp__lookup_start(&loop, "127.0.0.6", 1, on_lookup, &ev, &b), 1);
  assert_int_equal(mcp__lookup_start(&loop, "127.0.0.7", 1, on_lookup, &ev, &c), UV_EAGAIN);
  assert_null(c);
  mcp__lookup_free(a); /* still queued: taken off the queue */
  mcp__resolver_block(0);
  run_until(&loop, &ev.resolved);
  assert_int_equal(ev.resolved, 1); /* b only */
  mcp__lookup_free(b);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
  mcp__resolver_configure(0, MCP__RESOLVE_QUEUE, MCP__RESOLVE_CACHE, MCP__RESOLVE_TTL_MS,
                          MCP__RESOLVE_NEG_TTL_MS);
}

/* Freed while a thread resolves it (from the loop, and from a waiter that gave up): the thread
 * frees it later; nothing runs after the free (ASan and LeakSanitizer watch this in test-asan). */
static void lookups_freed_while_being_resolved_are_dropped(void **state)
{
  (void)state;
  uv_loop_t loop;
  events_t ev = {0};
  uv_loop_init(&loop);
  mcp__resolver_configure(0, 0, MCP__RESOLVE_CACHE, MCP__RESOLVE_TTL_MS, MCP__RESOLVE_NEG_TTL_MS);
  mcp__resolver_block(2);
  mcp__lookup_t *l = NULL;
  assert_int_equal(mcp__lookup_start(&loop, "127.0.0.8", 1, on_lookup, &ev, &l), 1);
  for (int i = 0; i < 500 && mcp__resolver_running() == 0; i++)
    usleep(10 * 1000);
  assert_int_equal(mcp__resolver_running(), 1);
  mcp__lookup_free(l);
  uv_run(&loop, UV_RUN_DEFAULT); /* the handle closes; the thread still holds the lookup */

  struct sockaddr_in6 a[2];
  int n = 0;
  /* Taken by a second thread (held too) or, on a loaded machine, still queued: either way the
   * waiter gives up and must leave nothing behind. */
  assert_int_equal(mcp__resolve_wait("127.0.0.9", 300, a, 2, &n), UV_ETIMEDOUT);
  mcp__resolver_block(0);
  for (int i = 0; i < 500 && mcp__resolver_running() > 0; i++)
    usleep(10 * 1000);
  assert_int_equal(mcp__resolver_running(), 0);
  assert_int_equal(ev.resolved, 0);
  /* The dropped answer went to the cache all the same. */
  int64_t before = resolves();
  assert_int_equal(wait_ok("127.0.0.8"), 0);
  assert_int_equal(resolves(), before);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void on_dialled(mcp__lookup_t *l, int fd, void *data)
{
  (void)l;
  events_t *ev = data;
  ev->connected_fd = fd;
  ev->resolved = 1;
}

static void connect_skips_our_own_listener_addresses(void **state)
{
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  int port;
  int fd = listen_on("127.0.0.1", &port);

  /* Not ours: connects. */
  events_t ev = {.connected_fd = -100};
  mcp__lookup_t *l = NULL;
  int rc = mcp__lookup_start(&loop, "127.0.0.1", (uint16_t)port, on_lookup, &ev, &l);
  if (rc == 1)
    run_until(&loop, &ev.resolved);
  ev.resolved = 0;
  mcp__lookup_connect(l, mcp_backend_is_own_listener, on_dialled);
  run_until(&loop, &ev.resolved);
  assert_true(ev.connected_fd >= 0);
  close(ev.connected_fd);
  mcp__lookup_free(l);

  /* Ours: never connected to; UV_ELOOP. */
  mcp__backend_self_add(fd);
  ev = (events_t){.connected_fd = -100};
  rc = mcp__lookup_start(&loop, "127.0.0.1", (uint16_t)port, on_lookup, &ev, &l);
  assert_int_equal(rc, 0); /* cached now */
  mcp__lookup_connect(l, mcp_backend_is_own_listener, on_dialled);
  run_until(&loop, &ev.resolved);
  assert_int_equal(ev.connected_fd, UV_ELOOP);
  mcp__lookup_free(l);
  mcp__backend_self_remove(fd);

  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
  close(fd);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(registry_matches_exact_address_and_port),
      cmocka_unit_test(registry_wildcard_covers_local_addresses),
      cmocka_unit_test(check_loop_catches_hostnames_that_reach_a_listener),
      cmocka_unit_test(cache_answers_until_its_lifetime_ends),
      cmocka_unit_test(cache_holds_at_most_its_size_evicting_the_least_recent),
      cmocka_unit_test(blocked_resolver_does_not_delay_libuv_work),
      cmocka_unit_test(full_queue_fails_at_once_and_freed_lookups_never_call_back),
      cmocka_unit_test(lookups_freed_while_being_resolved_are_dropped),
      cmocka_unit_test(connect_skips_our_own_listener_addresses),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
