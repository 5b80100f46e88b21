/*
 * Unit tests of lib/backend.c and lib/routes.c through their public API: backend parsing (good
 * and hostile input), loop detection against listener addresses, and route tables
 * (normalisation, upsert, remove, clone independence, ordered iteration, and a 100,000-route
 * table).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <cmocka.h>

#include "mcproxy/error.h"
#include "mcproxy/routes.h"

/* The constructors, asserting success. */
static mcp_routes_t *new_routes(void)
{
  mcp_routes_t *rt = NULL;
  assert_int_equal(mcp_routes_new(&rt), 0);
  assert_non_null(rt);
  return rt;
}

static mcp_routes_t *clone_routes(const mcp_routes_t *src)
{
  mcp_routes_t *rt = NULL;
  assert_int_equal(mcp_routes_clone(src, &rt), 0);
  assert_non_null(rt);
  return rt;
}

/* ---- helpers ----------------------------------------------------------------------------- */

/* A small deterministic PRNG (xorshift64*), so failures reproduce. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1dULL;
}

static struct sockaddr_storage sa(const char *ip, uint16_t port)
{
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  if (strchr(ip, ':')) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
  } else {
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
  }
  return ss;
}

static char *repeat(char c, size_t n)
{
  char *s = malloc(n + 1);
  assert_non_null(s);
  memset(s, c, n);
  s[n] = '\0';
  return s;
}

/* A hostname of exactly len bytes: 63-byte labels separated by dots. */
static char *long_hostname(size_t len)
{
  char *s = repeat('a', len);
  for (size_t i = 63; i < len; i += 64)
    s[i] = '.';
  if (s[len - 1] == '.')
    s[len - 1] = 'b';
  return s;
}

/* ---- backend parsing --------------------------------------------------------------------- */

struct good_backend {
  const char *in;
  const char *text;
  int family;
  const char *ip; /* expected address for IP backends */
  uint16_t port;
  uint16_t host_len;
};

static void backend_parse_accepts_valid_forms(void **state)
{
  static const struct good_backend cases[] = {
      {"10.0.0.1:443", "10.0.0.1:443", AF_INET, "10.0.0.1", 443, 0},
      {"127.0.0.1:1", "127.0.0.1:1", AF_INET, "127.0.0.1", 1, 0},
      {"255.255.255.255:65535", "255.255.255.255:65535", AF_INET, "255.255.255.255", 65535, 0},
      {"[2001:db8::1]:443", "[2001:db8::1]:443", AF_INET6, "2001:db8::1", 443, 0},
      {"[2001:DB8:0:0:0::1]:8443", "[2001:db8::1]:8443", AF_INET6, "2001:db8::1", 8443, 0},
      {"[::1]:9443", "[::1]:9443", AF_INET6, "::1", 9443, 0},
      {"[::ffff:127.0.0.1]:80", "[::ffff:127.0.0.1]:80", AF_INET6, "::ffff:127.0.0.1", 80, 0},
      {"backend.internal:443", "backend.internal:443", AF_UNSPEC, NULL, 443, 16},
      {"Backend.INTERNAL.:443", "backend.internal:443", AF_UNSPEC, NULL, 443, 16},
      {"localhost:8443", "localhost:8443", AF_UNSPEC, NULL, 8443, 9},
      {"x:65535", "x:65535", AF_UNSPEC, NULL, 65535, 1},
      {"a-1.example.com:10", "a-1.example.com:10", AF_UNSPEC, NULL, 10, 15},
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct good_backend *c = &cases[i];
    mcp_backend_t b;
    print_message("backend %s\n", c->in);
    assert_int_equal(mcp_backend_parse(c->in, &b), 0);
    assert_string_equal(b.text, c->text);
    assert_int_equal(b.addr.sa.sa_family, c->family);
    assert_int_equal(b.port, c->port);
    assert_int_equal(b.host_len, c->host_len);
    if (c->family == AF_INET) {
      struct sockaddr_storage want = sa(c->ip, c->port);
      assert_memory_equal(&b.addr.in, &want, sizeof(struct sockaddr_in));
    } else if (c->family == AF_INET6) {
      struct sockaddr_storage want = sa(c->ip, c->port);
      assert_memory_equal(&b.addr.in6, &want, sizeof(struct sockaddr_in6));
    } else {
      assert_memory_equal(b.text, c->text, c->host_len);
      /* The canonical text must itself parse to the same backend. */
      mcp_backend_t again;
      assert_int_equal(mcp_backend_parse(b.text, &again), 0);
      assert_string_equal(again.text, b.text);
    }
  }
}

static void backend_parse_accepts_longest_hostname(void **state)
{
  char *host = long_hostname(MCP_HOSTNAME_MAX);
  char in[MCP_BACKEND_MAX + 8];
  mcp_backend_t b;

  /* 253-byte hostname, trailing dot, 5-digit port: the longest input accepted. */
  snprintf(in, sizeof(in), "%s.:65535", host);
  assert_int_equal(mcp_backend_parse(in, &b), 0);
  assert_int_equal(b.host_len, MCP_HOSTNAME_MAX);
  assert_int_equal(strlen(b.text), MCP_HOSTNAME_MAX + 6);
  assert_memory_equal(b.text, host, MCP_HOSTNAME_MAX);
  free(host);
}

static void backend_parse_rejects_hostile_input(void **state)
{
  static const char *const bad[] = {
      "",
      ":",
      ":443",
      "host",
      "host:",
      "host:0",
      "host:00",
      "host:0443",
      "host:65536",
      "host:99999",
      "host:100000",
      "host:4294967297",
      "host:-1",
      "host:+1",
      "host:1x",
      "host:x1",
      "host:0x50",
      "host: 1",
      "host:1 ",
      " host:1",
      "host :1",
      "ho st:1",
      "host:1\n",
      "host\t:1",
      "host::1",
      "::1:443",
      "2001:db8::1:443",
      "::1",
      "[::1]",
      "[::1]:",
      "[::1]:0",
      "[::1]:65536",
      "[::1:443",
      "::1]:443",
      "[::1]x:443",
      "x[::1]:443",
      "[]:443",
      "[:]:443",
      "[1.2.3.4]:443",
      "[::1]:443]",
      "[[::1]]:443",
      "[::1 ]:443",
      "[fe80::1%eth0]:80",
      "[2001:db8::g]:80",
      "[1:2:3:4:5:6:7:8:9]:80",
      "1.2.3.256:80",
      "1.2.3:80",
      "1.2.3.4.5:80",
      "01.2.3.4:80",
      "127.1:80",
      "2130706433:80",
      "0x7f.1:80",
      "0x7f000001:80",
      "a..b:80",
      ".a:80",
      "..:80",
      ".:80",
      "a_b:80",
      "exa mple.com:80",
      "\xc3\xa9.example:80",
      "host/x:80",
      "user@host:80",
      "http://host:80",
  };

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    mcp_backend_t b;
    print_message("backend \"%s\"\n", bad[i]);
    memset(&b, 0xa5, sizeof(b));
    assert_int_equal(mcp_backend_parse(bad[i], &b), MCP_EINVAL);
    /* A failed parse leaves the output untouched. */
    for (size_t k = 0; k < sizeof(b); k++)
      assert_int_equal(((unsigned char *)&b)[k], 0xa5);
  }
  mcp_backend_t b;
  assert_int_equal(mcp_backend_parse(NULL, &b), MCP_EINVAL);
  assert_int_equal(mcp_backend_parse("host:1", NULL), MCP_EINVAL);
}

static void backend_parse_rejects_overlong_input(void **state)
{
  mcp_backend_t b;
  char in[20000];

  /* A 254-byte hostname (one over), with and without a trailing dot. */
  char *host = long_hostname(MCP_HOSTNAME_MAX + 1);
  snprintf(in, sizeof(in), "%s:443", host);
  assert_int_equal(mcp_backend_parse(in, &b), MCP_EINVAL);
  snprintf(in, sizeof(in), "%s.:443", host);
  assert_int_equal(mcp_backend_parse(in, &b), MCP_EINVAL);
  free(host);

  /* A 64-byte label. */
  host = repeat('a', 64);
  snprintf(in, sizeof(in), "%s.com:443", host);
  assert_int_equal(mcp_backend_parse(in, &b), MCP_EINVAL);
  free(host);

  /* Far over any bound, so parsing must stop early rather than scan or copy it all. */
  host = repeat('a', sizeof(in) - 1);
  memcpy(host + sizeof(in) - 5, ":443", 4);
  assert_int_equal(mcp_backend_parse(host, &b), MCP_EINVAL);
  free(host);

  /* A long run of digits in the port. */
  snprintf(in, sizeof(in), "host:%s", "1111111111111111111111111111111111111111");
  assert_int_equal(mcp_backend_parse(in, &b), MCP_EINVAL);
}

static void backend_parse_stops_at_embedded_nul(void **state)
{
  /* The C string ends at the NUL: "host" alone has no port, and "[::1" no closing bracket. */
  static const char a[] = "host\0:443";
  static const char c[] = "[::1\0]:443";
  static const char d[] = "10.0.0.1:44\0003";
  mcp_backend_t b;

  assert_int_equal(mcp_backend_parse(a, &b), MCP_EINVAL);
  assert_int_equal(mcp_backend_parse(c, &b), MCP_EINVAL);
  assert_int_equal(mcp_backend_parse(d, &b), 0);
  assert_string_equal(b.text, "10.0.0.1:44");
}

/* ---- loop detection ---------------------------------------------------------------------- */

static int loops(const char *backend, const char *lip, uint16_t lport)
{
  mcp_backend_t b;
  struct sockaddr_storage l = sa(lip, lport);
  assert_int_equal(mcp_backend_parse(backend, &b), 0);
  return mcp_backend_loops_to(&b, (struct sockaddr *)&l);
}

static void loops_to_same_address_and_port(void **state)
{
  assert_int_equal(loops("127.0.0.1:8443", "127.0.0.1", 8443), 1);
  assert_int_equal(loops("127.0.0.1:8444", "127.0.0.1", 8443), 0);
  assert_int_equal(loops("127.0.0.2:8443", "127.0.0.1", 8443), 0);
  assert_int_equal(loops("[::1]:8443", "::1", 8443), 1);
  assert_int_equal(loops("[::1]:8443", "::1", 9443), 0);
  assert_int_equal(loops("192.0.2.10:443", "192.0.2.10", 443), 1);
  /* IPv4-mapped IPv6 counts as IPv4, on either side. */
  assert_int_equal(loops("[::ffff:127.0.0.1]:8443", "127.0.0.1", 8443), 1);
  assert_int_equal(loops("127.0.0.1:8443", "::ffff:127.0.0.1", 8443), 1);
  /* The unspecified address is the local host: it reaches a loopback listener. */
  assert_int_equal(loops("0.0.0.0:8443", "127.0.0.1", 8443), 1);
  assert_int_equal(loops("0.0.0.0:8444", "127.0.0.1", 8443), 0);
}

static void loops_to_wildcard_listener(void **state)
{
  assert_int_equal(loops("127.0.0.1:8443", "0.0.0.0", 8443), 1);
  assert_int_equal(loops("127.0.0.1:8444", "0.0.0.0", 8443), 0);
  assert_int_equal(loops("127.9.9.9:8443", "0.0.0.0", 8443), 1);
  assert_int_equal(loops("0.0.0.0:8443", "0.0.0.0", 8443), 1);
  assert_int_equal(loops("[::ffff:127.0.0.1]:8443", "0.0.0.0", 8443), 1);
  /* TEST-NET-1 is not a local address here, so a wildcard listener is not reached. */
  assert_int_equal(loops("192.0.2.1:8443", "0.0.0.0", 8443), 0);
  /* An IPv4 wildcard does not accept IPv6; an IPv6 wildcard is dual-stack. */
  assert_int_equal(loops("[::1]:8443", "0.0.0.0", 8443), 0);
  assert_int_equal(loops("[::1]:8443", "::", 8443), 1);
  assert_int_equal(loops("[::]:8443", "::", 8443), 1);
  assert_int_equal(loops("127.0.0.1:8443", "::", 8443), 1);
  assert_int_equal(loops("127.0.0.1:8444", "::", 8443), 0);
  assert_int_equal(loops("[2001:db8::1]:8443", "::", 8443), 0);
}

static void loops_to_local_interface_address(void **state)
{
  struct ifaddrs *ifs;
  int tested = 0;

  /* Every address of every interface is reached through a wildcard listener on its port. */
  assert_int_equal(getifaddrs(&ifs), 0);
  for (struct ifaddrs *it = ifs; it; it = it->ifa_next) {
    char ip[INET6_ADDRSTRLEN], text[INET6_ADDRSTRLEN + 16];
    if (!it->ifa_addr || it->ifa_addr->sa_family != AF_INET)
      continue;
    inet_ntop(AF_INET, &((struct sockaddr_in *)it->ifa_addr)->sin_addr, ip, sizeof(ip));
    snprintf(text, sizeof(text), "%s:7443", ip);
    print_message("interface address %s\n", ip);
    assert_int_equal(loops(text, "0.0.0.0", 7443), 1);
    assert_int_equal(loops(text, "0.0.0.0", 7444), 0);
    tested++;
  }
  freeifaddrs(ifs);
  assert_true(tested > 0); /* at least lo's 127.0.0.1 */
}

static void loops_to_ignores_hostname_backends(void **state)
{
  assert_int_equal(loops("localhost:8443", "127.0.0.1", 8443), 0);
  assert_int_equal(loops("localhost:8443", "0.0.0.0", 8443), 0);
  mcp_backend_t b;
  assert_int_equal(mcp_backend_parse("127.0.0.1:1", &b), 0);
  assert_int_equal(mcp_backend_loops_to(&b, NULL), 0);
  assert_int_equal(mcp_backend_loops_to(NULL, NULL), 0);
}

/* ---- route tables ------------------------------------------------------------------------ */

static void routes_lookup_is_case_insensitive_and_ignores_trailing_dot(void **state)
{
  mcp_routes_t *rt = new_routes();
  const mcp_backend_t *b;

  assert_non_null(rt);
  assert_int_equal(mcp_routes_put(rt, "App.Example.COM.", "127.0.0.1:8443"), 0);
  assert_int_equal(mcp_routes_count(rt), 1);

  static const char *const names[] = {"app.example.com", "APP.EXAMPLE.COM", "app.example.com.",
                                      "aPp.ExAmPlE.cOm."};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    b = mcp_routes_lookup(rt, names[i], strlen(names[i]));
    assert_non_null(b);
    assert_string_equal(b->text, "127.0.0.1:8443");
  }
  /* len counts: the bytes after it are not part of the name. */
  b = mcp_routes_lookup(rt, "app.example.comXYZ", 15);
  assert_non_null(b);
  assert_null(mcp_routes_lookup(rt, "app.example.comXYZ", 16));
  assert_null(mcp_routes_lookup(rt, "app.example.com", 14));
  assert_null(mcp_routes_lookup(rt, "app.example.com", 0));
  /* An embedded NUL inside len is not a hostname byte. */
  assert_null(mcp_routes_lookup(rt, "app.example.com\0", 16));
  assert_null(mcp_routes_lookup(rt, "app\0example.com", 15));
  assert_null(mcp_routes_lookup(rt, "app.example.com..", 17));
  assert_null(mcp_routes_lookup(rt, NULL, 3));
  assert_null(mcp_routes_lookup(NULL, "app.example.com", 15));
  /* Any length, even past the longest hostname, is safe. */
  char *big = repeat('a', 100000);
  assert_null(mcp_routes_lookup(rt, big, 100000));
  free(big);
  mcp_routes_unref(rt);
}

static void routes_lookup_miss(void **state)
{
  mcp_routes_t *rt = new_routes();

  assert_null(mcp_routes_lookup(rt, "a.example.com", 13));
  assert_int_equal(mcp_routes_put(rt, "a.example.com", "10.0.0.1:443"), 0);
  assert_null(mcp_routes_lookup(rt, "b.example.com", 13));
  assert_null(mcp_routes_lookup(rt, "example.com", 11));
  assert_null(mcp_routes_lookup(rt, "x.a.example.com", 15));
  mcp_routes_unref(rt);
}

static void routes_put_upserts(void **state)
{
  mcp_routes_t *rt = new_routes();
  const mcp_backend_t *b;

  assert_int_equal(mcp_routes_put(rt, "app.example.com", "10.0.0.1:443"), 0);
  assert_int_equal(mcp_routes_put(rt, "APP.example.com.", "[2001:db8::1]:8443"), 0);
  assert_int_equal(mcp_routes_count(rt), 1);
  b = mcp_routes_lookup(rt, "app.example.com", 15);
  assert_non_null(b);
  assert_string_equal(b->text, "[2001:db8::1]:8443");
  assert_int_equal(b->addr.sa.sa_family, AF_INET6);
  assert_int_equal(mcp_routes_put(rt, "app.example.com", "Backend.Local:9000"), 0);
  b = mcp_routes_lookup(rt, "app.example.com", 15);
  assert_string_equal(b->text, "backend.local:9000");
  assert_int_equal(b->host_len, 13);
  assert_int_equal(mcp_routes_count(rt), 1);
  mcp_routes_unref(rt);
}

static void routes_put_rejects_bad_input_and_leaves_table_unchanged(void **state)
{
  mcp_routes_t *rt = new_routes();
  char *longname = long_hostname(MCP_HOSTNAME_MAX + 1);

  assert_int_equal(mcp_routes_put(rt, "app.example.com", "10.0.0.1:443"), 0);
  assert_int_equal(mcp_routes_put(rt, "app.example.com", "10.0.0.1"), MCP_EINVAL);
  assert_int_equal(mcp_routes_put(rt, "app.example.com", "10.0.0.1:0"), MCP_EINVAL);
  assert_int_equal(mcp_routes_put(rt, "app.example.com", NULL), MCP_EINVAL);
  assert_int_equal(mcp_routes_put(rt, "bad_name.com", "10.0.0.2:443"), MCP_EINVAL);
  assert_int_equal(mcp_routes_put(rt, "", "10.0.0.2:443"), MCP_EINVAL);
  assert_int_equal(mcp_routes_put(rt, ".", "10.0.0.2:443"), MCP_EINVAL);
  assert_int_equal(mcp_routes_put(rt, "a b", "10.0.0.2:443"), MCP_EINVAL);
  assert_int_equal(mcp_routes_put(rt, longname, "10.0.0.2:443"), MCP_EINVAL);
  assert_int_equal(mcp_routes_put(rt, NULL, "10.0.0.2:443"), MCP_EINVAL);
  assert_int_equal(mcp_routes_put(NULL, "a.com", "10.0.0.2:443"), MCP_EINVAL);
  assert_int_equal(mcp_routes_count(rt), 1);
  const mcp_backend_t *b = mcp_routes_lookup(rt, "app.example.com", 15);
  assert_non_null(b);
  assert_string_equal(b->text, "10.0.0.1:443");
  free(longname);
  mcp_routes_unref(rt);
}

static void routes_remove_reports_missing_routes(void **state)
{
  mcp_routes_t *rt = new_routes();

  assert_int_equal(mcp_routes_remove(rt, "a.example.com"), MCP_ENOENT);
  assert_int_equal(mcp_routes_put(rt, "a.example.com", "10.0.0.1:443"), 0);
  assert_int_equal(mcp_routes_put(rt, "b.example.com", "10.0.0.2:443"), 0);
  assert_int_equal(mcp_routes_remove(rt, "c.example.com"), MCP_ENOENT);
  assert_int_equal(mcp_routes_remove(rt, "a_b.example.com"), MCP_EINVAL);
  assert_int_equal(mcp_routes_remove(rt, ""), MCP_EINVAL);
  assert_int_equal(mcp_routes_remove(rt, NULL), MCP_EINVAL);
  assert_int_equal(mcp_routes_remove(rt, "A.EXAMPLE.COM."), 0);
  assert_int_equal(mcp_routes_count(rt), 1);
  assert_null(mcp_routes_lookup(rt, "a.example.com", 13));
  assert_non_null(mcp_routes_lookup(rt, "b.example.com", 13));
  assert_int_equal(mcp_routes_remove(rt, "a.example.com"), MCP_ENOENT);
  assert_int_equal(mcp_routes_remove(rt, "b.example.com"), 0);
  assert_int_equal(mcp_routes_count(rt), 0);
  assert_null(mcp_routes_lookup(rt, "b.example.com", 13));
  mcp_routes_unref(rt);
}

static void routes_clone_is_independent(void **state)
{
  mcp_routes_t *orig = new_routes();

  assert_int_equal(mcp_routes_put(orig, "a.example.com", "10.0.0.1:443"), 0);
  assert_int_equal(mcp_routes_put(orig, "b.example.com", "10.0.0.2:443"), 0);
  assert_int_equal(mcp_routes_put(orig, "c.example.com", "10.0.0.3:443"), 0);

  /* A reader holds the original while the clone is edited and published. */
  mcp_routes_t *reader = mcp_routes_ref(orig);
  assert_ptr_equal(reader, orig);
  const mcp_backend_t *held = mcp_routes_lookup(reader, "a.example.com", 13);
  mcp_routes_t *clone = clone_routes(orig);
  assert_non_null(clone);
  assert_ptr_not_equal(clone, orig);
  assert_int_equal(mcp_routes_count(clone), 3);
  assert_int_equal(mcp_routes_put(clone, "a.example.com", "10.9.9.9:443"), 0);
  assert_int_equal(mcp_routes_remove(clone, "b.example.com"), 0);
  assert_int_equal(mcp_routes_put(clone, "d.example.com", "10.0.0.4:443"), 0);

  assert_string_equal(mcp_routes_lookup(clone, "a.example.com", 13)->text, "10.9.9.9:443");
  assert_null(mcp_routes_lookup(clone, "b.example.com", 13));
  assert_non_null(mcp_routes_lookup(clone, "d.example.com", 13));

  /* The original is untouched. */
  assert_int_equal(mcp_routes_count(orig), 3);
  assert_string_equal(mcp_routes_lookup(orig, "a.example.com", 13)->text, "10.0.0.1:443");
  assert_string_equal(mcp_routes_lookup(orig, "b.example.com", 13)->text, "10.0.0.2:443");
  assert_null(mcp_routes_lookup(orig, "d.example.com", 13));

  /* The owner drops its reference; the reader's pointer stays valid (ASan would say). */
  mcp_routes_unref(orig);
  assert_string_equal(held->text, "10.0.0.1:443");
  mcp_routes_unref(reader);
  /* The clone shares c.example.com's route with the freed original: still its own, and now
   * the clone's alone, so an upsert changes it in place. */
  assert_string_equal(mcp_routes_lookup(clone, "c.example.com", 13)->text, "10.0.0.3:443");
  assert_int_equal(mcp_routes_put(clone, "c.example.com", "10.0.0.33:443"), 0);
  assert_string_equal(mcp_routes_lookup(clone, "c.example.com", 13)->text, "10.0.0.33:443");
  mcp_routes_unref(clone);
  mcp_routes_unref(NULL);
  assert_null(mcp_routes_ref(NULL));

  /* Clones of an empty table and of NULL are empty, editable tables. */
  mcp_routes_t *empty = new_routes();
  mcp_routes_t *c1 = clone_routes(empty);
  mcp_routes_t *c2 = clone_routes(NULL);
  assert_non_null(c1);
  assert_non_null(c2);
  assert_int_equal(mcp_routes_put(c1, "x.com", "10.0.0.1:1"), 0);
  assert_int_equal(mcp_routes_count(empty), 0);
  mcp_routes_unref(empty);
  mcp_routes_unref(c1);
  mcp_routes_unref(c2);
}

struct collect {
  char names[64][MCP_HOSTNAME_MAX + 1];
  char backends[64][MCP_BACKEND_MAX];
  size_t n;
  size_t stop_after;
};

static int collect_cb(void *data, const char *hostname, const mcp_backend_t *backend)
{
  struct collect *c = data;
  assert_true(c->n < 64);
  snprintf(c->names[c->n], sizeof(c->names[0]), "%s", hostname);
  snprintf(c->backends[c->n], sizeof(c->backends[0]), "%s", backend->text);
  c->n++;
  return c->stop_after && c->n == c->stop_after ? 42 : 0;
}

static void routes_foreach_visits_in_hostname_order(void **state)
{
  static const char *const names[] = {"zeta.com", "Alpha.com", "m.example.org", "a.com",
                                      "b-1.net",  "b.net",     "alpha.co",      "0.example",
                                      "zz.top.",  "mid.dle"};
  static const char *const sorted[] = {"0.example", "a.com", "alpha.co",      "alpha.com",
                                       "b-1.net",   "b.net", "m.example.org", "mid.dle",
                                       "zeta.com",  "zz.top"};
  const size_t n = sizeof(names) / sizeof(names[0]);
  mcp_routes_t *rt = new_routes();
  struct collect c;

  for (size_t i = 0; i < n; i++) {
    char backend[32];
    snprintf(backend, sizeof(backend), "10.0.0.%zu:%zu", i, 1000 + i);
    assert_int_equal(mcp_routes_put(rt, names[i], backend), 0);
  }
  memset(&c, 0, sizeof(c));
  assert_int_equal(mcp_routes_foreach(rt, collect_cb, &c), 0);
  assert_int_equal(c.n, n);
  for (size_t i = 0; i < n; i++) {
    assert_string_equal(c.names[i], sorted[i]);
    /* Each name comes with its own backend. */
    const mcp_backend_t *b = mcp_routes_lookup(rt, sorted[i], strlen(sorted[i]));
    assert_string_equal(c.backends[i], b->text);
  }

  /* A non-zero return stops the walk and is passed back. */
  memset(&c, 0, sizeof(c));
  c.stop_after = 3;
  assert_int_equal(mcp_routes_foreach(rt, collect_cb, &c), 42);
  assert_int_equal(c.n, 3);

  /* An empty table calls nothing. */
  mcp_routes_t *empty = new_routes();
  memset(&c, 0, sizeof(c));
  assert_int_equal(mcp_routes_foreach(empty, collect_cb, &c), 0);
  assert_int_equal(c.n, 0);
  mcp_routes_unref(empty);
  mcp_routes_unref(rt);
}

/*
 * Random puts and removes on a small name space, checked after every step against a plain
 * array: exercises collisions, growth and backward-shift deletion together.
 */
static void routes_random_edits_match_reference(void **state)
{
  enum { NAMES = 300, STEPS = 20000 };
  static int ref[NAMES]; /* 0 = absent, else backend port */
  mcp_routes_t *rt = new_routes();
  size_t present = 0;

  memset(ref, 0, sizeof(ref));
  for (int step = 0; step < STEPS; step++) {
    int k = (int)(rng() % NAMES);
    char name[32], backend[32];
    snprintf(name, sizeof(name), "h%d.example", k);
    if (rng() % 3 != 0) {
      int port = 1 + (int)(rng() % 65535);
      snprintf(backend, sizeof(backend), "10.0.0.1:%d", port);
      assert_int_equal(mcp_routes_put(rt, name, backend), 0);
      if (!ref[k])
        present++;
      ref[k] = port;
    } else {
      assert_int_equal(mcp_routes_remove(rt, name), ref[k] ? 0 : MCP_ENOENT);
      if (ref[k])
        present--;
      ref[k] = 0;
    }
    assert_int_equal(mcp_routes_count(rt), present);
    if (step % 500 == 0 || step == STEPS - 1) {
      for (int j = 0; j < NAMES; j++) {
        snprintf(name, sizeof(name), "H%d.EXAMPLE", j);
        const mcp_backend_t *b = mcp_routes_lookup(rt, name, strlen(name));
        if (!ref[j]) {
          assert_null(b);
        } else {
          assert_non_null(b);
          assert_int_equal(b->port, ref[j]);
        }
      }
    }
  }
  mcp_routes_unref(rt);
}

static void routes_handle_100k_entries(void **state)
{
  enum { N = 100000 };
  mcp_routes_t *rt = new_routes();
  char name[64], backend[32];

  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof(name), "host%d.example.com", i);
    snprintf(backend, sizeof(backend), "10.%d.%d.%d:%d", i >> 16, (i >> 8) & 255, i & 255,
             1 + i % 65535);
    assert_int_equal(mcp_routes_put(rt, name, backend), 0);
  }
  assert_int_equal(mcp_routes_count(rt), N);
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof(name), "HOST%d.example.com.", i);
    const mcp_backend_t *b = mcp_routes_lookup(rt, name, strlen(name));
    assert_non_null(b);
    assert_int_equal(b->port, 1 + i % 65535);
    assert_int_equal(ntohl(b->addr.in.sin_addr.s_addr), (10u << 24) | (unsigned)i);
  }
  assert_null(mcp_routes_lookup(rt, "host100000.example.com", 22));

  mcp_routes_t *clone = clone_routes(rt);
  assert_non_null(clone);
  assert_int_equal(mcp_routes_count(clone), N);
  for (int i = 0; i < N; i += 2) {
    snprintf(name, sizeof(name), "host%d.example.com", i);
    assert_int_equal(mcp_routes_remove(clone, name), 0);
  }
  assert_int_equal(mcp_routes_count(clone), N / 2);
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof(name), "host%d.example.com", i);
    assert_non_null(mcp_routes_lookup(rt, name, strlen(name)));
    if (i % 2)
      assert_non_null(mcp_routes_lookup(clone, name, strlen(name)));
    else
      assert_null(mcp_routes_lookup(clone, name, strlen(name)));
  }
  mcp_routes_unref(clone);
  mcp_routes_unref(rt);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(backend_parse_accepts_valid_forms),
      cmocka_unit_test(backend_parse_accepts_longest_hostname),
      cmocka_unit_test(backend_parse_rejects_hostile_input),
      cmocka_unit_test(backend_parse_rejects_overlong_input),
      cmocka_unit_test(backend_parse_stops_at_embedded_nul),
      cmocka_unit_test(loops_to_same_address_and_port),
      cmocka_unit_test(loops_to_wildcard_listener),
      cmocka_unit_test(loops_to_local_interface_address),
      cmocka_unit_test(loops_to_ignores_hostname_backends),
      cmocka_unit_test(routes_lookup_is_case_insensitive_and_ignores_trailing_dot),
      cmocka_unit_test(routes_lookup_miss),
      cmocka_unit_test(routes_put_upserts),
      cmocka_unit_test(routes_put_rejects_bad_input_and_leaves_table_unchanged),
      cmocka_unit_test(routes_remove_reports_missing_routes),
      cmocka_unit_test(routes_clone_is_independent),
      cmocka_unit_test(routes_foreach_visits_in_hostname_order),
      cmocka_unit_test(routes_random_edits_match_reference),
      cmocka_unit_test(routes_handle_100k_entries),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
