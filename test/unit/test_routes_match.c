/*
 * Unit tests of lib/routes.c's matching order (docs/ARCHITECTURE.md, "route"): exact beats
 * wildcard, the longest wildcard wins, a wildcard never matches its own base name, the fallback
 * (no SNI, no match), send_proxy kept per route and across clones, and 100,000 exact plus
 * 100,000 wildcard routes. Split from test_routes.c to keep both files short.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "mcproxy/error.h"
#include "mcproxy/routes.h"

static mcp_routes_t *new_routes(void)
{
  mcp_routes_t *rt = NULL;
  assert_int_equal(mcp_routes_new(&rt), 0);
  assert_non_null(rt);
  return rt;
}

/* The backend text a name resolves to, or NULL (no match, no fallback). */
static const char *backend_of(const mcp_routes_t *rt, const char *name)
{
  const mcp_backend_t *b = mcp_routes_lookup(rt, name, name ? strlen(name) : 0);
  return b ? b->text : NULL;
}

static void exact_beats_wildcard(void **state)
{
  (void)state;
  mcp_routes_t *rt = new_routes();
  assert_int_equal(mcp_routes_put(rt, "*.example.com", "127.0.0.1:1"), 0);
  assert_int_equal(mcp_routes_put(rt, "app.example.com", "127.0.0.1:2"), 0);
  assert_string_equal(backend_of(rt, "app.example.com"), "127.0.0.1:2");
  assert_string_equal(backend_of(rt, "other.example.com"), "127.0.0.1:1");

  mcp_route_match_t m;
  assert_int_equal(mcp_routes_match(rt, "app.example.com", 15, &m), 0);
  assert_int_equal(m.kind, MCP_ROUTE_EXACT);
  assert_string_equal(m.hostname, "app.example.com");
  assert_int_equal(mcp_routes_match(rt, "x.example.com", 13, &m), 0);
  assert_int_equal(m.kind, MCP_ROUTE_WILDCARD);
  assert_string_equal(m.hostname, "*.example.com");
  mcp_routes_unref(rt);
}

static void longest_wildcard_wins(void **state)
{
  (void)state;
  mcp_routes_t *rt = new_routes();
  assert_int_equal(mcp_routes_put(rt, "*.example.com", "127.0.0.1:1"), 0);
  assert_int_equal(mcp_routes_put(rt, "*.b.example.com", "127.0.0.1:2"), 0);
  assert_int_equal(mcp_routes_put(rt, "*.com", "127.0.0.1:3"), 0);
  assert_string_equal(backend_of(rt, "a.b.example.com"), "127.0.0.1:2");
  assert_string_equal(backend_of(rt, "x.y.a.b.example.com"), "127.0.0.1:2");
  assert_string_equal(backend_of(rt, "b.example.com"), "127.0.0.1:1");
  assert_string_equal(backend_of(rt, "a.c.example.com"), "127.0.0.1:1");
  assert_string_equal(backend_of(rt, "example.com"), "127.0.0.1:3");
  assert_null(backend_of(rt, "com"));
  /* Removing the longer pattern falls back to the shorter one. */
  assert_int_equal(mcp_routes_remove(rt, "*.B.example.com."), 0);
  assert_string_equal(backend_of(rt, "a.b.example.com"), "127.0.0.1:1");
  mcp_routes_unref(rt);
}

static void wildcard_does_not_match_its_base(void **state)
{
  (void)state;
  mcp_routes_t *rt = new_routes();
  assert_int_equal(mcp_routes_put(rt, "*.example.com", "127.0.0.1:1"), 0);
  assert_null(backend_of(rt, "example.com"));
  assert_null(backend_of(rt, "notexample.com"));
  assert_null(backend_of(rt, "example.com.evil.net"));
  assert_string_equal(backend_of(rt, "a.example.com"), "127.0.0.1:1");
  assert_string_equal(backend_of(rt, "a.b.example.com"), "127.0.0.1:1");
  /* A client name is never a pattern: "*.example.com" as SNI is not a hostname. */
  assert_null(backend_of(rt, "*.example.com"));
  mcp_routes_unref(rt);
}

static void wildcard_case_and_trailing_dot(void **state)
{
  (void)state;
  mcp_routes_t *rt = new_routes();
  assert_int_equal(mcp_routes_put(rt, "*.Example.COM.", "127.0.0.1:1"), 0);
  assert_string_equal(backend_of(rt, "WWW.example.com."), "127.0.0.1:1");
  assert_string_equal(backend_of(rt, "www.EXAMPLE.com"), "127.0.0.1:1");
  /* Stored normalised: the same pattern in another spelling replaces, not adds. */
  assert_int_equal(mcp_routes_put(rt, "*.example.com", "127.0.0.1:2"), 0);
  assert_int_equal(mcp_routes_count(rt), 1);
  assert_string_equal(backend_of(rt, "www.example.com"), "127.0.0.1:2");
  /* Malformed patterns are refused. */
  assert_int_equal(mcp_routes_put(rt, "*", "127.0.0.1:1"), MCP_EINVAL);
  assert_int_equal(mcp_routes_put(rt, "a.*.example.com", "127.0.0.1:1"), MCP_EINVAL);
  assert_int_equal(mcp_routes_put(rt, "*a.example.com", "127.0.0.1:1"), MCP_EINVAL);
  assert_int_equal(mcp_routes_count(rt), 1);
  mcp_routes_unref(rt);
}

static void fallback_for_no_sni_and_no_match(void **state)
{
  (void)state;
  mcp_route_match_t m;
  mcp_routes_t *rt = new_routes();
  assert_int_equal(mcp_routes_put(rt, "app.example.com", "127.0.0.1:1"), 0);

  /* No fallback: not found, with and without SNI. */
  assert_null(mcp_routes_fallback(rt));
  assert_null(backend_of(rt, "other.example.com"));
  assert_null(backend_of(rt, NULL));
  assert_int_equal(mcp_routes_match(rt, NULL, 0, &m), MCP_ENOENT);
  assert_int_equal(mcp_routes_match(rt, "x.org", 5, &m), MCP_ENOENT);

  assert_int_equal(mcp_routes_set_fallback(rt, "not a backend"), MCP_EINVAL);
  assert_null(mcp_routes_fallback(rt));
  assert_int_equal(mcp_routes_set_fallback(rt, "[::1]:9000"), 0);
  assert_string_equal(mcp_routes_fallback(rt)->text, "[::1]:9000");
  assert_int_equal(mcp_routes_count(rt), 1);
  assert_string_equal(backend_of(rt, "app.example.com"), "127.0.0.1:1");
  assert_string_equal(backend_of(rt, "other.example.com"), "[::1]:9000");
  assert_int_equal(mcp_routes_match(rt, NULL, 0, &m), 0);
  assert_int_equal(m.kind, MCP_ROUTE_FALLBACK);
  assert_null(m.hostname);
  assert_int_equal(m.send_proxy, MCP_SEND_PROXY_NONE);
  assert_int_equal(mcp_routes_match(rt, "", 0, &m), 0);
  assert_int_equal(m.kind, MCP_ROUTE_FALLBACK);
  /* An empty table with a fallback still answers. */
  mcp_routes_t *empty = new_routes();
  assert_int_equal(mcp_routes_set_fallback(empty, "127.0.0.1:7"), 0);
  assert_string_equal(backend_of(empty, "any.name"), "127.0.0.1:7");
  mcp_routes_unref(empty);

  /* The clone keeps it; clearing the clone's leaves the original's. */
  mcp_routes_t *clone = NULL;
  assert_int_equal(mcp_routes_clone(rt, &clone), 0);
  assert_string_equal(backend_of(clone, "zzz.example.net"), "[::1]:9000");
  assert_int_equal(mcp_routes_set_fallback(clone, NULL), 0);
  assert_null(backend_of(clone, "zzz.example.net"));
  assert_string_equal(backend_of(rt, "zzz.example.net"), "[::1]:9000");
  mcp_routes_unref(clone);
  mcp_routes_unref(rt);
}

struct sp_seen {
  int n;
  char names[4][32];
  mcp_send_proxy_t sp[4];
};

static int collect_sp(void *data, const char *hostname, const mcp_backend_t *backend,
                      mcp_send_proxy_t send_proxy)
{
  struct sp_seen *s = data;
  (void)backend;
  if (s->n >= 4)
    return -1;
  snprintf(s->names[s->n], sizeof(s->names[0]), "%s", hostname);
  s->sp[s->n++] = send_proxy;
  return 0;
}

static void send_proxy_round_trip(void **state)
{
  (void)state;
  mcp_route_match_t m;
  mcp_routes_t *rt = new_routes();
  assert_int_equal(mcp_routes_put_ex(rt, "a.example.com", "127.0.0.1:1", MCP_SEND_PROXY_V1), 0);
  assert_int_equal(mcp_routes_put_ex(rt, "*.example.com", "127.0.0.1:2", MCP_SEND_PROXY_V2), 0);
  assert_int_equal(mcp_routes_put(rt, "b.example.org", "127.0.0.1:3"), 0);
  assert_int_equal(mcp_routes_put_ex(rt, "c.example.org", "127.0.0.1:3", (mcp_send_proxy_t)3),
                   MCP_EINVAL);

  assert_int_equal(mcp_routes_match(rt, "a.example.com", 13, &m), 0);
  assert_int_equal(m.send_proxy, MCP_SEND_PROXY_V1);
  assert_int_equal(mcp_routes_match(rt, "z.example.com", 13, &m), 0);
  assert_int_equal(m.send_proxy, MCP_SEND_PROXY_V2);
  assert_string_equal(m.backend->text, "127.0.0.1:2");
  assert_int_equal(mcp_routes_match(rt, "b.example.org", 13, &m), 0);
  assert_int_equal(m.send_proxy, MCP_SEND_PROXY_NONE);

  /* The upsert replaces send_proxy; a clone carries it; foreach_ex reports it. */
  assert_int_equal(mcp_routes_put_ex(rt, "a.example.com", "127.0.0.1:1", MCP_SEND_PROXY_V2), 0);
  mcp_routes_t *clone = NULL;
  assert_int_equal(mcp_routes_clone(rt, &clone), 0);
  struct sp_seen seen = {0};
  assert_int_equal(mcp_routes_foreach_ex(clone, collect_sp, &seen), 0);
  assert_int_equal(seen.n, 3);
  assert_string_equal(seen.names[0], "*.example.com");
  assert_int_equal(seen.sp[0], MCP_SEND_PROXY_V2);
  assert_string_equal(seen.names[1], "a.example.com");
  assert_int_equal(seen.sp[1], MCP_SEND_PROXY_V2);
  assert_string_equal(seen.names[2], "b.example.org");
  assert_int_equal(seen.sp[2], MCP_SEND_PROXY_NONE);
  assert_string_equal(mcp_send_proxy_name(MCP_SEND_PROXY_V1), "send-proxy-v1");
  assert_null(mcp_send_proxy_name((mcp_send_proxy_t)7));
  mcp_routes_unref(clone);
  mcp_routes_unref(rt);
}

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * 100,000 exact and 100,000 wildcard routes: every kind of lookup answers correctly, and a
 * lookup in the big table costs about what it costs in a 2-route table (a scan would be
 * thousands of times slower; the bound is loose because this machine is shared).
 */
static void scale_100k_exact_100k_wildcard(void **state)
{
  (void)state;
  enum { N = 100000, LOOKUPS = 200000 };
  char name[96];
  char backend[32];
  mcp_routes_t *big = new_routes();
  mcp_routes_t *small = new_routes();

  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof(name), "h%d.example.com", i);
    snprintf(backend, sizeof(backend), "127.0.0.1:%d", 1 + i % 60000);
    assert_int_equal(mcp_routes_put(big, name, backend), 0);
    snprintf(name, sizeof(name), "*.t%d.example.net", i);
    assert_int_equal(mcp_routes_put_ex(big, name, backend, MCP_SEND_PROXY_V2), 0);
  }
  assert_int_equal(mcp_routes_count(big), 2 * N);
  assert_int_equal(mcp_routes_put(small, "h1.example.com", "127.0.0.1:2"), 0);
  assert_int_equal(mcp_routes_put(small, "*.t1.example.net", "127.0.0.1:2"), 0);

  for (int i = 0; i < N; i += 997) {
    mcp_route_match_t m;
    snprintf(backend, sizeof(backend), "127.0.0.1:%d", 1 + i % 60000);
    snprintf(name, sizeof(name), "h%d.example.com", i);
    assert_int_equal(mcp_routes_match(big, name, strlen(name), &m), 0);
    assert_int_equal(m.kind, MCP_ROUTE_EXACT);
    assert_string_equal(m.backend->text, backend);
    snprintf(name, sizeof(name), "a.b.t%d.example.net", i);
    assert_int_equal(mcp_routes_match(big, name, strlen(name), &m), 0);
    assert_int_equal(m.kind, MCP_ROUTE_WILDCARD);
    assert_string_equal(m.backend->text, backend);
    snprintf(name, sizeof(name), "t%d.example.net", i);
    assert_int_equal(mcp_routes_match(big, name, strlen(name), &m), MCP_ENOENT);
  }

  /* Timing: a wildcard hit three labels deep, big table vs small table. */
  const char *probe_name = "a.b.t1.example.net";
  size_t plen = strlen(probe_name);
  double t[2];
  mcp_routes_t *tables[2] = {small, big};
  for (int k = 0; k < 2; k++) {
    double t0 = now_s();
    for (int i = 0; i < LOOKUPS; i++)
      assert_non_null(mcp_routes_lookup(tables[k], probe_name, plen));
    t[k] = (now_s() - t0) / LOOKUPS * 1e9;
  }
  print_message("wildcard lookup: %.0f ns (2 routes), %.0f ns (200,000 routes)\n", t[0], t[1]);
  assert_true(t[1] < 50.0 * t[0] + 2000.0);
  mcp_routes_unref(small);
  mcp_routes_unref(big);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(exact_beats_wildcard),
      cmocka_unit_test(longest_wildcard_wins),
      cmocka_unit_test(wildcard_does_not_match_its_base),
      cmocka_unit_test(wildcard_case_and_trailing_dot),
      cmocka_unit_test(fallback_for_no_sni_and_no_match),
      cmocka_unit_test(send_proxy_round_trip),
      cmocka_unit_test(scale_100k_exact_100k_wildcard),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
