/*
 * Unit tests of lib/firewall.c through its public API: rule normalisation, add/remove
 * semantics, IP and CIDR blocking (boundaries, overlaps, and a property test against a
 * brute-force reference), clone independence, and country rules against a real MaxMind DB
 * written at test time by test/mmdb/make-mmdb.pl.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include "mcproxy/error.h"
#include "mcproxy/firewall.h"

/* The constructors, asserting success. */
static mcp_firewall_t *new_firewall(void)
{
  mcp_firewall_t *fw = NULL;
  assert_int_equal(mcp_firewall_new(&fw), 0);
  assert_non_null(fw);
  return fw;
}

static mcp_firewall_t *clone_firewall(const mcp_firewall_t *src)
{
  mcp_firewall_t *fw = NULL;
  assert_int_equal(mcp_firewall_clone(src, &fw), 0);
  assert_non_null(fw);
  return fw;
}

typedef unsigned __int128 u128;

/* ---- helpers ----------------------------------------------------------------------------- */

static uint64_t rng_state = 0x243f6a8885a308d3ULL;

static uint64_t rng(void)
{
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1dULL;
}

static struct sockaddr_storage sa(const char *ip)
{
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  if (strchr(ip, ':')) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(40000);
    assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
  } else {
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    in->sin_port = htons(40000);
    assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
  }
  return ss;
}

/* Whether fw blocks the client ip (text). */
static int blocked(const mcp_firewall_t *fw, const char *ip)
{
  struct sockaddr_storage ss = sa(ip);
  return mcp_firewall_check(fw, (struct sockaddr *)&ss);
}

static struct sockaddr_storage sa4(uint32_t a)
{
  struct sockaddr_storage ss;
  struct sockaddr_in *in = (struct sockaddr_in *)&ss;
  memset(&ss, 0, sizeof(ss));
  in->sin_family = AF_INET;
  in->sin_addr.s_addr = htonl(a);
  return ss;
}

static struct sockaddr_storage sa6(u128 a)
{
  struct sockaddr_storage ss;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
  memset(&ss, 0, sizeof(ss));
  in6->sin6_family = AF_INET6;
  for (int i = 15; i >= 0; i--, a >>= 8)
    in6->sin6_addr.s6_addr[i] = (uint8_t)a;
  return ss;
}

/* An IPv4-mapped IPv6 socket address for a. */
static struct sockaddr_storage sa4mapped(uint32_t a)
{
  return sa6(((u128)0xffff << 32) | a);
}

static mcp_firewall_t *firewall_of(const char *const *ips, const char *const *cidrs)
{
  mcp_firewall_t *fw = new_firewall();
  assert_non_null(fw);
  for (; ips && *ips; ips++)
    assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_IP, *ips), 0);
  for (; cidrs && *cidrs; cidrs++)
    assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_CIDR, *cidrs), 0);
  assert_int_equal(mcp_firewall_seal(fw), 0);
  return fw;
}

/* ---- rule values ------------------------------------------------------------------------- */

static void type_names_round_trip(void **state)
{
  mcp_firewall_type_t t;

  assert_string_equal(mcp_firewall_type_name(MCP_FIREWALL_IP), "ip");
  assert_string_equal(mcp_firewall_type_name(MCP_FIREWALL_CIDR), "cidr");
  assert_string_equal(mcp_firewall_type_name(MCP_FIREWALL_COUNTRY), "country");
  assert_null(mcp_firewall_type_name((mcp_firewall_type_t)0));
  assert_null(mcp_firewall_type_name((mcp_firewall_type_t)4));
  assert_int_equal(mcp_firewall_type_parse("ip", &t), 0);
  assert_int_equal(t, MCP_FIREWALL_IP);
  assert_int_equal(mcp_firewall_type_parse("cidr", &t), 0);
  assert_int_equal(t, MCP_FIREWALL_CIDR);
  assert_int_equal(mcp_firewall_type_parse("country", &t), 0);
  assert_int_equal(t, MCP_FIREWALL_COUNTRY);
  assert_int_equal(mcp_firewall_type_parse("IP", &t), MCP_EINVAL);
  assert_int_equal(mcp_firewall_type_parse("", &t), MCP_EINVAL);
  assert_int_equal(mcp_firewall_type_parse("ip ", &t), MCP_EINVAL);
  assert_int_equal(mcp_firewall_type_parse("countries", &t), MCP_EINVAL);
  assert_int_equal(mcp_firewall_type_parse(NULL, &t), MCP_EINVAL);
}

struct norm_case {
  mcp_firewall_type_t type;
  const char *in;
  const char *out; /* NULL: must be rejected */
};

static void normalize_table(void **state)
{
  static const struct norm_case cases[] = {
      {MCP_FIREWALL_IP, "1.2.3.4", "1.2.3.4"},
      {MCP_FIREWALL_IP, "0.0.0.0", "0.0.0.0"},
      {MCP_FIREWALL_IP, "255.255.255.255", "255.255.255.255"},
      {MCP_FIREWALL_IP, "::FFFF:1.2.3.4", "1.2.3.4"},
      {MCP_FIREWALL_IP, "::ffff:0102:0304", "1.2.3.4"},
      {MCP_FIREWALL_IP, "2001:DB8:0:0:0:0:0:1", "2001:db8::1"},
      {MCP_FIREWALL_IP, "::1", "::1"},
      {MCP_FIREWALL_IP, "::", "::"},
      {MCP_FIREWALL_IP, "0000:0000:0000:0000:0000:0000:0000:0001", "::1"},
      {MCP_FIREWALL_IP, "", NULL},
      {MCP_FIREWALL_IP, " 1.2.3.4", NULL},
      {MCP_FIREWALL_IP, "1.2.3.4 ", NULL},
      {MCP_FIREWALL_IP, "1.2.3.4\n", NULL},
      {MCP_FIREWALL_IP, "1.2.3", NULL},
      {MCP_FIREWALL_IP, "1.2.3.4.5", NULL},
      {MCP_FIREWALL_IP, "256.1.1.1", NULL},
      {MCP_FIREWALL_IP, "01.2.3.4", NULL},
      {MCP_FIREWALL_IP, "0x1.2.3.4", NULL},
      {MCP_FIREWALL_IP, "16909060", NULL},
      {MCP_FIREWALL_IP, "1.2.3.4/32", NULL},
      {MCP_FIREWALL_IP, "::g", NULL},
      {MCP_FIREWALL_IP, ":::1", NULL},
      {MCP_FIREWALL_IP, "1:2:3:4:5:6:7:8:9", NULL},
      {MCP_FIREWALL_IP, "fe80::1%eth0", NULL},
      {MCP_FIREWALL_IP, "[::1]", NULL},
      {MCP_FIREWALL_IP, "KP", NULL},
      {MCP_FIREWALL_CIDR, "10.1.2.3/8", "10.0.0.0/8"},
      {MCP_FIREWALL_CIDR, "10.0.0.0/8", "10.0.0.0/8"},
      {MCP_FIREWALL_CIDR, "1.2.3.4/0", "0.0.0.0/0"},
      {MCP_FIREWALL_CIDR, "1.2.3.4/32", "1.2.3.4/32"},
      {MCP_FIREWALL_CIDR, "1.2.3.255/31", "1.2.3.254/31"},
      {MCP_FIREWALL_CIDR, "192.168.77.200/20", "192.168.64.0/20"},
      {MCP_FIREWALL_CIDR, "2001:DB8::FF/120", "2001:db8::/120"},
      {MCP_FIREWALL_CIDR, "2001:db8:ffff::/33", "2001:db8:8000::/33"},
      {MCP_FIREWALL_CIDR, "ffff::1/0", "::/0"},
      {MCP_FIREWALL_CIDR, "2001:db8::1/128", "2001:db8::1/128"},
      {MCP_FIREWALL_CIDR, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
       "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"},
      {MCP_FIREWALL_CIDR, "::ffff:10.1.2.3/104", "::ffff:10.0.0.0/104"},
      {MCP_FIREWALL_CIDR, "1.2.3.4", NULL},
      {MCP_FIREWALL_CIDR, "1.2.3.4/", NULL},
      {MCP_FIREWALL_CIDR, "/8", NULL},
      {MCP_FIREWALL_CIDR, "1.2.3.4/33", NULL},
      {MCP_FIREWALL_CIDR, "1.2.3.4/100", NULL},
      {MCP_FIREWALL_CIDR, "1.2.3.4/1000", NULL},
      {MCP_FIREWALL_CIDR, "::/129", NULL},
      {MCP_FIREWALL_CIDR, "1.2.3.4/-1", NULL},
      {MCP_FIREWALL_CIDR, "1.2.3.4/+8", NULL},
      {MCP_FIREWALL_CIDR, "1.2.3.4/08", NULL},
      {MCP_FIREWALL_CIDR, "1.2.3.4/00", NULL},
      {MCP_FIREWALL_CIDR, "1.2.3.4/8/8", NULL},
      {MCP_FIREWALL_CIDR, "1.2.3.4/ 8", NULL},
      {MCP_FIREWALL_CIDR, "1.2.3.4 /8", NULL},
      {MCP_FIREWALL_CIDR, "1.2.3.4/8 ", NULL},
      {MCP_FIREWALL_CIDR, "1.2.3.4/8x", NULL},
      {MCP_FIREWALL_CIDR, "1.2.3/24", NULL},
      {MCP_FIREWALL_CIDR, "300.0.0.0/8", NULL},
      {MCP_FIREWALL_CIDR, "", NULL},
      {MCP_FIREWALL_COUNTRY, "kp", "KP"},
      {MCP_FIREWALL_COUNTRY, "De", "DE"},
      {MCP_FIREWALL_COUNTRY, "ZZ", "ZZ"},
      {MCP_FIREWALL_COUNTRY, "", NULL},
      {MCP_FIREWALL_COUNTRY, "K", NULL},
      {MCP_FIREWALL_COUNTRY, "KPX", NULL},
      {MCP_FIREWALL_COUNTRY, "K1", NULL},
      {MCP_FIREWALL_COUNTRY, " KP", NULL},
      {MCP_FIREWALL_COUNTRY, "KP ", NULL},
      {MCP_FIREWALL_COUNTRY, "K P", NULL},
      {MCP_FIREWALL_COUNTRY, "K-", NULL},
      {MCP_FIREWALL_COUNTRY, "@[", NULL},
      {MCP_FIREWALL_COUNTRY, "`{", NULL},
      {MCP_FIREWALL_COUNTRY, "\xc3\xa9", NULL},
      {MCP_FIREWALL_COUNTRY, "1.2.3.4", NULL},
      {(mcp_firewall_type_t)0, "1.2.3.4", NULL},
      {(mcp_firewall_type_t)4, "KP", NULL},
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct norm_case *c = &cases[i];
    char out[MCP_FIREWALL_VALUE_MAX];
    print_message("%d \"%s\"\n", (int)c->type, c->in);
    if (c->out) {
      assert_int_equal(mcp_firewall_normalize(c->type, c->in, out), 0);
      assert_string_equal(out, c->out);
      /* Canonical text is a fixed point. */
      char again[MCP_FIREWALL_VALUE_MAX];
      assert_int_equal(mcp_firewall_normalize(c->type, out, again), 0);
      assert_string_equal(again, out);
    } else {
      assert_int_equal(mcp_firewall_normalize(c->type, c->in, out), MCP_EINVAL);
    }
  }
}

static void normalize_rejects_overlong_and_null(void **state)
{
  char out[MCP_FIREWALL_VALUE_MAX];
  char big[5000];

  memset(big, '1', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  assert_int_equal(mcp_firewall_normalize(MCP_FIREWALL_IP, big, out), MCP_EINVAL);
  assert_int_equal(mcp_firewall_normalize(MCP_FIREWALL_CIDR, big, out), MCP_EINVAL);
  assert_int_equal(mcp_firewall_normalize(MCP_FIREWALL_COUNTRY, big, out), MCP_EINVAL);
  /* Zeros padding an IPv6 address past any sane length. */
  snprintf(big, sizeof(big), "0000:0000:0000:0000:0000:0000:0000:00000000000000000000001/128");
  assert_int_equal(mcp_firewall_normalize(MCP_FIREWALL_CIDR, big, out), MCP_EINVAL);
  assert_int_equal(mcp_firewall_normalize(MCP_FIREWALL_IP, NULL, out), MCP_EINVAL);
  assert_int_equal(mcp_firewall_normalize(MCP_FIREWALL_IP, "1.2.3.4", NULL), MCP_EINVAL);
  /* The longest valid input (an IPv6 address with an IPv4 tail, all digits spelled out). */
  assert_int_equal(
      mcp_firewall_normalize(MCP_FIREWALL_CIDR, "0000:0000:0000:0000:0000:ffff:255.255.255.255/128", out), 0);
  assert_string_equal(out, "::ffff:255.255.255.255/128");
}

/* ---- add, remove, count ------------------------------------------------------------------ */

static void add_is_idempotent(void **state)
{
  mcp_firewall_t *fw = new_firewall();

  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_IP, "1.2.3.4"), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_IP, "1.2.3.4"), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_IP, "::ffff:1.2.3.4"), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_CIDR, "10.1.2.3/8"), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_CIDR, "10.0.0.0/8"), 0);
  /* The same text as a different type is a different rule. */
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_CIDR, "1.2.3.4/32"), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_COUNTRY, "kp"), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_COUNTRY, "KP"), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_COUNTRY, "de"), 0);
  assert_int_equal(mcp_firewall_count(fw), 5);
  assert_int_equal(mcp_firewall_country_count(fw), 2);

  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_IP, "1.2.3"), MCP_EINVAL);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_CIDR, "1.2.3.4"), MCP_EINVAL);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_COUNTRY, "KPX"), MCP_EINVAL);
  assert_int_equal(mcp_firewall_add(fw, (mcp_firewall_type_t)9, "KP"), MCP_EINVAL);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_IP, NULL), MCP_EINVAL);
  assert_int_equal(mcp_firewall_add(NULL, MCP_FIREWALL_IP, "1.2.3.4"), MCP_EINVAL);
  assert_int_equal(mcp_firewall_count(fw), 5);
  mcp_firewall_unref(fw);
}

static void remove_reports_missing_rules(void **state)
{
  mcp_firewall_t *fw = new_firewall();

  assert_int_equal(mcp_firewall_remove(fw, MCP_FIREWALL_IP, "1.2.3.4"), MCP_ENOENT);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_IP, "1.2.3.4"), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_IP, "2001:db8::1"), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_COUNTRY, "KP"), 0);
  assert_int_equal(mcp_firewall_remove(fw, MCP_FIREWALL_IP, "1.2.3.5"), MCP_ENOENT);
  assert_int_equal(mcp_firewall_remove(fw, MCP_FIREWALL_CIDR, "1.2.3.4/32"), MCP_ENOENT);
  assert_int_equal(mcp_firewall_remove(fw, MCP_FIREWALL_IP, "1.2.3.4.5"), MCP_EINVAL);
  assert_int_equal(mcp_firewall_remove(fw, MCP_FIREWALL_COUNTRY, "K"), MCP_EINVAL);
  /* Removal normalises like add. */
  assert_int_equal(mcp_firewall_remove(fw, MCP_FIREWALL_IP, "::FFFF:1.2.3.4"), 0);
  assert_int_equal(mcp_firewall_remove(fw, MCP_FIREWALL_IP, "1.2.3.4"), MCP_ENOENT);
  assert_int_equal(mcp_firewall_remove(fw, MCP_FIREWALL_COUNTRY, "kp"), 0);
  assert_int_equal(mcp_firewall_count(fw), 1);
  assert_int_equal(mcp_firewall_country_count(fw), 0);
  assert_int_equal(mcp_firewall_seal(fw), 0);
  assert_int_equal(blocked(fw, "1.2.3.4"), 0);
  assert_int_equal(blocked(fw, "2001:db8::1"), 1);
  mcp_firewall_unref(fw);
}

/* Random adds and removes against a reference array: the rule index survives churn. */
static void random_rule_edits_match_reference(void **state)
{
  enum { N = 400, STEPS = 20000 };
  static unsigned char ref[N];
  mcp_firewall_t *fw = new_firewall();
  size_t present = 0;

  memset(ref, 0, sizeof(ref));
  for (int step = 0; step < STEPS; step++) {
    int k = (int)(rng() % N);
    char ip[32];
    snprintf(ip, sizeof(ip), "10.0.%d.%d", k / 256, k % 256);
    if (rng() % 2) {
      assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_IP, ip), 0);
      present += !ref[k];
      ref[k] = 1;
    } else {
      assert_int_equal(mcp_firewall_remove(fw, MCP_FIREWALL_IP, ip), ref[k] ? 0 : MCP_ENOENT);
      present -= ref[k];
      ref[k] = 0;
    }
    assert_int_equal(mcp_firewall_count(fw), present);
    if (step % 1000 == 0 || step == STEPS - 1) {
      assert_int_equal(mcp_firewall_seal(fw), 0);
      for (int j = 0; j < N; j++) {
        struct sockaddr_storage ss = sa4(0x0a000000u | (uint32_t)j);
        assert_int_equal(mcp_firewall_check(fw, (struct sockaddr *)&ss), ref[j]);
      }
    }
  }
  mcp_firewall_unref(fw);
}

/* ---- IP and CIDR blocking ---------------------------------------------------------------- */

static void ip_rules_block_v4_v6_and_mapped_clients(void **state)
{
  static const char *const ips[] = {"127.0.0.3", "2001:db8::5", "::ffff:127.0.0.9", "::", NULL};
  mcp_firewall_t *fw = firewall_of(ips, NULL);

  assert_int_equal(blocked(fw, "127.0.0.3"), 1);
  assert_int_equal(blocked(fw, "::ffff:127.0.0.3"), 1);
  assert_int_equal(blocked(fw, "127.0.0.4"), 0);
  assert_int_equal(blocked(fw, "127.0.0.2"), 0);
  assert_int_equal(blocked(fw, "::ffff:127.0.0.4"), 0);
  assert_int_equal(blocked(fw, "2001:db8::5"), 1);
  assert_int_equal(blocked(fw, "2001:db8::6"), 0);
  assert_int_equal(blocked(fw, "2001:db8::4"), 0);
  /* A rule written IPv4-mapped blocks the IPv4 client, either way it arrives. */
  assert_int_equal(blocked(fw, "127.0.0.9"), 1);
  assert_int_equal(blocked(fw, "::ffff:127.0.0.9"), 1);
  assert_int_equal(blocked(fw, "::"), 1);
  /* IPv4-compatible (::a.b.c.d) is not IPv4-mapped and not the same client. */
  assert_int_equal(blocked(fw, "::127.0.0.3"), 0);
  assert_int_equal(blocked(fw, "0.0.0.0"), 0);

  /* Non-IP families are never blocked. */
  struct sockaddr_storage un;
  memset(&un, 0, sizeof(un));
  un.ss_family = AF_UNIX;
  assert_int_equal(mcp_firewall_check(fw, (struct sockaddr *)&un), 0);
  assert_int_equal(mcp_firewall_check(fw, NULL), 0);
  mcp_firewall_unref(fw);
}

static void cidr_boundaries_v4(void **state)
{
  static const char *const cidrs[] = {"10.0.0.0/8", "192.168.1.7/32", "172.16.0.0/12", NULL};
  mcp_firewall_t *fw = firewall_of(NULL, cidrs);

  assert_int_equal(blocked(fw, "10.0.0.0"), 1);
  assert_int_equal(blocked(fw, "10.255.255.255"), 1);
  assert_int_equal(blocked(fw, "10.1.2.3"), 1);
  assert_int_equal(blocked(fw, "::ffff:10.1.2.3"), 1);
  assert_int_equal(blocked(fw, "9.255.255.255"), 0);
  assert_int_equal(blocked(fw, "11.0.0.0"), 0);
  assert_int_equal(blocked(fw, "192.168.1.7"), 1);
  assert_int_equal(blocked(fw, "192.168.1.6"), 0);
  assert_int_equal(blocked(fw, "192.168.1.8"), 0);
  assert_int_equal(blocked(fw, "172.16.0.0"), 1);
  assert_int_equal(blocked(fw, "172.31.255.255"), 1);
  assert_int_equal(blocked(fw, "172.15.255.255"), 0);
  assert_int_equal(blocked(fw, "172.32.0.0"), 0);
  assert_int_equal(blocked(fw, "0.0.0.0"), 0);
  assert_int_equal(blocked(fw, "255.255.255.255"), 0);
  /* IPv4 CIDRs say nothing about native IPv6 clients. */
  assert_int_equal(blocked(fw, "::a00:1"), 0);
  assert_int_equal(blocked(fw, "a00::1"), 0);
  mcp_firewall_unref(fw);
}

static void cidr_boundaries_v6(void **state)
{
  static const char *const cidrs[] = {"2001:db8::/32", "2001:db8:ffff::/48", "fe80::1/128",
                                      "ff00::/8", NULL};
  mcp_firewall_t *fw = firewall_of(NULL, cidrs);

  assert_int_equal(blocked(fw, "2001:db8::"), 1);
  assert_int_equal(blocked(fw, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"), 1);
  assert_int_equal(blocked(fw, "2001:db8:1234::1"), 1);
  assert_int_equal(blocked(fw, "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"), 0);
  assert_int_equal(blocked(fw, "2001:db9::"), 0);
  assert_int_equal(blocked(fw, "fe80::1"), 1);
  assert_int_equal(blocked(fw, "fe80::"), 0);
  assert_int_equal(blocked(fw, "fe80::2"), 0);
  assert_int_equal(blocked(fw, "ff00::"), 1);
  assert_int_equal(blocked(fw, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 1);
  assert_int_equal(blocked(fw, "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 0);
  assert_int_equal(blocked(fw, "::1"), 0);
  assert_int_equal(blocked(fw, "32.1.13.184"), 0); /* 0x20010db8 as IPv4 */
  mcp_firewall_unref(fw);
}

static void cidr_whole_space_and_single_hosts(void **state)
{
  static const char *const v4all[] = {"0.0.0.0/0", NULL};
  static const char *const v6all[] = {"::/0", NULL};
  static const char *const hosts[] = {"0.0.0.0/32", "255.255.255.255/32", "::/128",
                                      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", NULL};
  mcp_firewall_t *fw;

  fw = firewall_of(NULL, v4all);
  assert_int_equal(blocked(fw, "0.0.0.0"), 1);
  assert_int_equal(blocked(fw, "255.255.255.255"), 1);
  assert_int_equal(blocked(fw, "::ffff:8.8.8.8"), 1);
  assert_int_equal(blocked(fw, "2001:db8::1"), 0);
  assert_int_equal(blocked(fw, "::"), 0);
  mcp_firewall_unref(fw);

  /* ::/0 contains ::ffff:0:0/96, so it blocks IPv4 clients too. */
  fw = firewall_of(NULL, v6all);
  assert_int_equal(blocked(fw, "::"), 1);
  assert_int_equal(blocked(fw, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 1);
  assert_int_equal(blocked(fw, "2001:db8::1"), 1);
  assert_int_equal(blocked(fw, "8.8.8.8"), 1);
  mcp_firewall_unref(fw);

  fw = firewall_of(NULL, hosts);
  assert_int_equal(blocked(fw, "0.0.0.0"), 1);
  assert_int_equal(blocked(fw, "0.0.0.1"), 0);
  assert_int_equal(blocked(fw, "255.255.255.255"), 1);
  assert_int_equal(blocked(fw, "255.255.255.254"), 0);
  assert_int_equal(blocked(fw, "::"), 1);
  assert_int_equal(blocked(fw, "::1"), 0);
  assert_int_equal(blocked(fw, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 1);
  assert_int_equal(blocked(fw, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"), 0);
  mcp_firewall_unref(fw);
}

static void cidr_v4_mapped_v6_range_blocks_ipv4_clients(void **state)
{
  static const char *const mapped8[] = {"::ffff:10.0.0.0/104", NULL};
  static const char *const around[] = {"::fffe:0:0/95", NULL};
  mcp_firewall_t *fw = firewall_of(NULL, mapped8);

  assert_int_equal(blocked(fw, "10.0.0.0"), 1);
  assert_int_equal(blocked(fw, "10.255.255.255"), 1);
  assert_int_equal(blocked(fw, "::ffff:10.1.2.3"), 1);
  assert_int_equal(blocked(fw, "11.0.0.0"), 0);
  assert_int_equal(blocked(fw, "9.255.255.255"), 0);
  assert_int_equal(blocked(fw, "::a00:1"), 0);
  mcp_firewall_unref(fw);

  /* ::fffe:0:0/95 spans ::fffe:0:0 .. ::ffff:ffff:ffff, i.e. all of IPv4 as well. */
  fw = firewall_of(NULL, around);
  assert_int_equal(blocked(fw, "::fffe:1:1"), 1);
  assert_int_equal(blocked(fw, "0.0.0.0"), 1);
  assert_int_equal(blocked(fw, "1.1.1.1"), 1);
  assert_int_equal(blocked(fw, "255.255.255.255"), 1);
  assert_int_equal(blocked(fw, "::fffd:ffff:ffff"), 0);
  assert_int_equal(blocked(fw, "::1:0:0:0"), 0);
  mcp_firewall_unref(fw);
}

static void cidr_overlapping_nested_and_adjacent(void **state)
{
  static const char *const cidrs[] = {"10.0.0.0/9",         "10.0.0.0/8",         "10.1.0.0/16",
                                      "10.1.2.0/24",        "192.168.0.0/24",     "192.168.1.0/24",
                                      "255.255.255.0/24",   "255.255.255.255/32", "2001:db8::/33",
                                      "2001:db8:8000::/33", "2001:db8::/48",      NULL};
  mcp_firewall_t *fw = firewall_of(NULL, cidrs);

  assert_int_equal(blocked(fw, "10.200.0.1"), 1);
  assert_int_equal(blocked(fw, "10.1.2.3"), 1);
  assert_int_equal(blocked(fw, "11.0.0.0"), 0);
  assert_int_equal(blocked(fw, "192.168.0.0"), 1);
  assert_int_equal(blocked(fw, "192.168.0.255"), 1);
  assert_int_equal(blocked(fw, "192.168.1.0"), 1);
  assert_int_equal(blocked(fw, "192.168.1.255"), 1);
  assert_int_equal(blocked(fw, "192.168.2.0"), 0);
  assert_int_equal(blocked(fw, "192.167.255.255"), 0);
  assert_int_equal(blocked(fw, "255.255.255.255"), 1);
  assert_int_equal(blocked(fw, "255.255.254.255"), 0);
  assert_int_equal(blocked(fw, "2001:db8:7fff:ffff::1"), 1);
  assert_int_equal(blocked(fw, "2001:db8:8000::"), 1);
  assert_int_equal(blocked(fw, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"), 1);
  assert_int_equal(blocked(fw, "2001:db9::"), 0);
  mcp_firewall_t *gap;

  /* Ranges one address apart must not be merged over the gap. */
  static const char *const gaps[] = {"10.0.0.0/24", "10.0.1.1/32", "2001:db8::/120",
                                     "2001:db8::101/128", NULL};
  gap = firewall_of(NULL, gaps);
  assert_int_equal(blocked(gap, "10.0.0.255"), 1);
  assert_int_equal(blocked(gap, "10.0.1.0"), 0);
  assert_int_equal(blocked(gap, "10.0.1.1"), 1);
  assert_int_equal(blocked(gap, "10.0.1.2"), 0);
  assert_int_equal(blocked(gap, "2001:db8::ff"), 1);
  assert_int_equal(blocked(gap, "2001:db8::100"), 0);
  assert_int_equal(blocked(gap, "2001:db8::101"), 1);
  assert_int_equal(blocked(gap, "2001:db8::102"), 0);
  mcp_firewall_unref(gap);

  /* Removing the outer range leaves the nested ones, and nothing else. */
  mcp_firewall_t *c = clone_firewall(fw);
  assert_int_equal(mcp_firewall_remove(c, MCP_FIREWALL_CIDR, "10.0.0.0/8"), 0);
  assert_int_equal(mcp_firewall_remove(c, MCP_FIREWALL_CIDR, "10.0.0.0/9"), 0);
  assert_int_equal(mcp_firewall_seal(c), 0);
  assert_int_equal(blocked(c, "10.1.0.0"), 1);
  assert_int_equal(blocked(c, "10.1.255.255"), 1);
  assert_int_equal(blocked(c, "10.0.255.255"), 0);
  assert_int_equal(blocked(c, "10.2.0.0"), 0);
  assert_int_equal(blocked(c, "10.200.0.1"), 0);
  assert_int_equal(mcp_firewall_remove(c, MCP_FIREWALL_CIDR, "10.1.0.0/16"), 0);
  assert_int_equal(mcp_firewall_seal(c), 0);
  assert_int_equal(blocked(c, "10.1.0.0"), 0);
  assert_int_equal(blocked(c, "10.1.2.0"), 1);
  assert_int_equal(blocked(c, "10.1.2.255"), 1);
  assert_int_equal(blocked(c, "10.1.3.0"), 0);
  mcp_firewall_unref(c);
  assert_int_equal(blocked(fw, "10.200.0.1"), 1);
  mcp_firewall_unref(fw);
}

/*
 * Property test: 10,000 random IPv4 CIDRs and 3,000 random IPv6 CIDRs, checked on random
 * addresses (many of them at range edges) against a brute-force scan of every rule; then a
 * third of the rules are removed and it is checked again.
 */
struct cidr4 {
  uint32_t net, mask;
  int live;
};
struct cidr6 {
  u128 net, mask;
  int live;
};

static uint32_t mask4(unsigned p)
{
  return p == 0 ? 0 : ~(uint32_t)0 << (32 - p);
}

static u128 mask6(unsigned p)
{
  return p == 0 ? 0 : ~(u128)0 << (128 - p);
}

static int brute4(const struct cidr4 *c, size_t n, uint32_t a)
{
  for (size_t i = 0; i < n; i++)
    if (c[i].live && (a & c[i].mask) == c[i].net)
      return 1;
  return 0;
}

static int brute6(const struct cidr6 *c, size_t n, u128 a)
{
  for (size_t i = 0; i < n; i++)
    if (c[i].live && (a & c[i].mask) == c[i].net)
      return 1;
  return 0;
}

static void cidr_text4(const struct cidr4 *c, unsigned prefix, char *out, size_t len)
{
  snprintf(out, len, "%u.%u.%u.%u/%u", c->net >> 24, (c->net >> 16) & 255, (c->net >> 8) & 255,
           c->net & 255, prefix);
}

static void cidr_text6(u128 net, unsigned prefix, char *out, size_t len)
{
  struct sockaddr_storage ss = sa6(net);
  char ip[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof(ip));
  snprintf(out, len, "%s/%u", ip, prefix);
}

static u128 rand128(void)
{
  return (u128)rng() << 64 | rng();
}

/* An address to probe: random, or at/next to the edge of a random rule. */
static uint32_t probe4(const struct cidr4 *c, size_t n)
{
  const struct cidr4 *r = &c[rng() % n];
  switch (rng() % 5) {
  case 0:
    return r->net;
  case 1:
    return r->net | ~r->mask;
  case 2:
    return r->net - 1;
  case 3:
    return (r->net | ~r->mask) + 1;
  default:
    return (uint32_t)rng();
  }
}

static u128 probe6(const struct cidr6 *c, size_t n)
{
  const struct cidr6 *r = &c[rng() % n];
  switch (rng() % 5) {
  case 0:
    return r->net;
  case 1:
    return r->net | ~r->mask;
  case 2:
    return r->net - 1;
  case 3:
    return (r->net | ~r->mask) + 1;
  default:
    return r->net ^ (rand128() >> (rng() % 128));
  }
}

static void check_against_brute_force(mcp_firewall_t *fw, const struct cidr4 *c4, size_t n4,
                                      const struct cidr6 *c6, size_t n6, size_t probes)
{
  size_t hits = 0, misses = 0;

  for (size_t i = 0; i < probes; i++) {
    uint32_t a = probe4(c4, n4);
    int want = brute4(c4, n4, a);
    struct sockaddr_storage ss = sa4(a);
    struct sockaddr_storage ms = sa4mapped(a);
    if (mcp_firewall_check(fw, (struct sockaddr *)&ss) != want ||
        mcp_firewall_check(fw, (struct sockaddr *)&ms) != want)
      fail_msg("IPv4 %08x: want %d", a, want);
    want ? hits++ : misses++;

    u128 b = probe6(c6, n6);
    want = brute6(c6, n6, b);
    ss = sa6(b);
    if (mcp_firewall_check(fw, (struct sockaddr *)&ss) != want)
      fail_msg("IPv6 %016llx%016llx: want %d", (unsigned long long)(b >> 64), (unsigned long long)b,
               want);
    want ? hits++ : misses++;
  }
  /* Both outcomes must be well represented, or the test proves little. */
  print_message("probes: %zu blocked, %zu allowed\n", hits, misses);
  assert_true(hits > probes / 4);
  assert_true(misses > probes / 4);
}

static void cidr_random_property_against_brute_force(void **state)
{
  enum { N4 = 10000, N6 = 3000, PROBES = 3000 };
  struct cidr4 *c4 = calloc(N4, sizeof(*c4));
  struct cidr6 *c6 = calloc(N6, sizeof(*c6));
  mcp_firewall_t *fw = new_firewall();
  char text[MCP_FIREWALL_VALUE_MAX + 16];

  assert_non_null(c4);
  assert_non_null(c6);
  for (size_t i = 0; i < N4; i++) {
    /* Prefixes 12..32, so the rules cover some but not all of the space. */
    unsigned p = 12 + (unsigned)(rng() % 21);
    c4[i].mask = mask4(p);
    c4[i].net = (uint32_t)rng() & c4[i].mask;
    c4[i].live = 1;
    cidr_text4(&c4[i], p, text, sizeof(text));
    int rc = mcp_firewall_add(fw, MCP_FIREWALL_CIDR, text);
    assert_true(rc == 0 || rc == 1);
  }
  for (size_t i = 0; i < N6; i++) {
    /* Cluster the rules under 2001:db8::/32 so they overlap and nest. */
    unsigned p = 40 + (unsigned)(rng() % 89);
    c6[i].mask = mask6(p);
    c6[i].net = (((u128)0x20010db8 << 96) | (rand128() >> 32 >> (rng() % 24))) & c6[i].mask;
    c6[i].live = 1;
    cidr_text6(c6[i].net, p, text, sizeof(text));
    int rc = mcp_firewall_add(fw, MCP_FIREWALL_CIDR, text);
    assert_true(rc == 0 || rc == 1);
  }
  assert_int_equal(mcp_firewall_seal(fw), 0);
  check_against_brute_force(fw, c4, N4, c6, N6, PROBES);

  /* Remove a third of the rules (duplicates only once) and check again. */
  for (size_t i = 0; i < N4; i += 3) {
    unsigned p = (unsigned)__builtin_popcount(c4[i].mask);
    cidr_text4(&c4[i], p, text, sizeof(text));
    int rc = mcp_firewall_remove(fw, MCP_FIREWALL_CIDR, text);
    assert_true(rc == 0 || (rc == MCP_ENOENT && !c4[i].live));
    for (size_t j = 0; j < N4; j++)
      if (c4[j].net == c4[i].net && c4[j].mask == c4[i].mask)
        c4[j].live = 0;
  }
  for (size_t i = 0; i < N6; i += 3) {
    unsigned p = (unsigned)(__builtin_popcountll((uint64_t)(c6[i].mask >> 64)) +
                            __builtin_popcountll((uint64_t)c6[i].mask));
    cidr_text6(c6[i].net, p, text, sizeof(text));
    int rc = mcp_firewall_remove(fw, MCP_FIREWALL_CIDR, text);
    assert_true(rc == 0 || (rc == MCP_ENOENT && !c6[i].live));
    for (size_t j = 0; j < N6; j++)
      if (c6[j].net == c6[i].net && c6[j].mask == c6[i].mask)
        c6[j].live = 0;
  }
  assert_int_equal(mcp_firewall_seal(fw), 0);
  check_against_brute_force(fw, c4, N4, c6, N6, PROBES);

  mcp_firewall_unref(fw);
  free(c4);
  free(c6);
}

static void many_rules_seal_and_check(void **state)
{
  enum { N = 100000 };
  mcp_firewall_t *fw = new_firewall();
  char text[64];

  /* 100,000 single IPs (seeding a large block list must not be quadratic). */
  for (uint32_t i = 0; i < N; i++) {
    snprintf(text, sizeof(text), "100.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_IP, text), 0);
  }
  for (uint32_t i = 0; i < 1000; i++) {
    snprintf(text, sizeof(text), "2001:db8:%x::%x", i, i);
    assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_IP, text), 0);
  }
  assert_int_equal(mcp_firewall_count(fw), N + 1000);
  assert_int_equal(mcp_firewall_seal(fw), 0);
  assert_int_equal(mcp_firewall_seal(fw), 0); /* idempotent */
  for (uint32_t i = 0; i < N + 1000; i++) {
    struct sockaddr_storage ss = sa4((100u << 24) | i);
    assert_int_equal(mcp_firewall_check(fw, (struct sockaddr *)&ss), i < N);
  }
  for (uint32_t i = 0; i < 1000; i++) {
    snprintf(text, sizeof(text), "2001:db8:%x::%x", i, i);
    assert_int_equal(blocked(fw, text), 1);
    snprintf(text, sizeof(text), "2001:db8:%x::%x", i, i + 1);
    assert_int_equal(blocked(fw, text), 0);
  }
  mcp_firewall_unref(fw);
}

/* ---- clone and foreach ------------------------------------------------------------------- */

static void clone_is_independent(void **state)
{
  static const char *const ips[] = {"1.1.1.1", "2001:db8::1", NULL};
  static const char *const cidrs[] = {"10.0.0.0/8", NULL};
  mcp_firewall_t *fw = firewall_of(ips, cidrs);
  mcp_firewall_t *reader = mcp_firewall_ref(fw);

  mcp_firewall_t *c = clone_firewall(fw);
  assert_non_null(c);
  assert_int_equal(mcp_firewall_count(c), 3);
  /* A clone of a sealed firewall can be checked straight away. */
  assert_int_equal(blocked(c, "10.9.9.9"), 1);
  assert_int_equal(mcp_firewall_add(c, MCP_FIREWALL_IP, "2.2.2.2"), 0);
  assert_int_equal(mcp_firewall_remove(c, MCP_FIREWALL_IP, "1.1.1.1"), 0);
  assert_int_equal(mcp_firewall_remove(c, MCP_FIREWALL_CIDR, "10.0.0.0/8"), 0);
  assert_int_equal(mcp_firewall_add(c, MCP_FIREWALL_CIDR, "2001:db8::/32"), 0);
  assert_int_equal(mcp_firewall_seal(c), 0);

  assert_int_equal(blocked(c, "2.2.2.2"), 1);
  assert_int_equal(blocked(c, "1.1.1.1"), 0);
  assert_int_equal(blocked(c, "10.9.9.9"), 0);
  assert_int_equal(blocked(c, "2001:db8::77"), 1);

  assert_int_equal(mcp_firewall_count(fw), 3);
  assert_int_equal(blocked(fw, "2.2.2.2"), 0);
  assert_int_equal(blocked(fw, "1.1.1.1"), 1);
  assert_int_equal(blocked(fw, "10.9.9.9"), 1);
  assert_int_equal(blocked(fw, "2001:db8::77"), 0);
  assert_int_equal(blocked(fw, "2001:db8::1"), 1);

  mcp_firewall_unref(fw);
  assert_int_equal(blocked(reader, "1.1.1.1"), 1);
  mcp_firewall_unref(reader);
  mcp_firewall_unref(c);
  mcp_firewall_unref(NULL);
  assert_null(mcp_firewall_ref(NULL));

  /* Clones of empty and NULL firewalls are usable. */
  mcp_firewall_t *e = new_firewall();
  mcp_firewall_t *c1 = clone_firewall(e);
  mcp_firewall_t *c2 = clone_firewall(NULL);
  assert_non_null(c1);
  assert_non_null(c2);
  assert_int_equal(blocked(c1, "1.1.1.1"), 0);
  assert_int_equal(mcp_firewall_add(c2, MCP_FIREWALL_IP, "1.1.1.1"), 0);
  assert_int_equal(mcp_firewall_seal(c2), 0);
  assert_int_equal(blocked(c2, "1.1.1.1"), 1);
  assert_int_equal(blocked(e, "1.1.1.1"), 0);
  mcp_firewall_unref(e);
  mcp_firewall_unref(c1);
  mcp_firewall_unref(c2);
}

struct rules_seen {
  char text[16][MCP_FIREWALL_VALUE_MAX + 16];
  size_t n, stop_after;
};

static int collect_rule(void *data, mcp_firewall_type_t type, const char *value)
{
  struct rules_seen *s = data;
  assert_true(s->n < 16);
  snprintf(s->text[s->n], sizeof(s->text[0]), "%s %s", mcp_firewall_type_name(type), value);
  s->n++;
  return s->stop_after && s->n == s->stop_after ? 7 : 0;
}

static void foreach_orders_by_type_then_value(void **state)
{
  static const char *const want[] = {"ip 1.2.3.4",      "ip 2001:db8::1", "ip 9.9.9.9",
                                     "cidr 10.0.0.0/8", "cidr ::/0",      "country DE",
                                     "country KP"};
  mcp_firewall_t *fw = new_firewall();
  struct rules_seen s;

  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_COUNTRY, "kp"), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_CIDR, "10.1.1.1/8"), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_IP, "9.9.9.9"), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_COUNTRY, "de"), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_IP, "2001:DB8::1"), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_CIDR, "::/0"), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_IP, "::ffff:1.2.3.4"), 0);

  memset(&s, 0, sizeof(s));
  assert_int_equal(mcp_firewall_foreach(fw, collect_rule, &s), 0);
  assert_int_equal(s.n, 7);
  for (size_t i = 0; i < 7; i++)
    assert_string_equal(s.text[i], want[i]);

  memset(&s, 0, sizeof(s));
  s.stop_after = 2;
  assert_int_equal(mcp_firewall_foreach(fw, collect_rule, &s), 7);
  assert_int_equal(s.n, 2);
  mcp_firewall_unref(fw);
}

/* ---- GeoIP ------------------------------------------------------------------------------- */

struct geo_fixture {
  char dir[64];
  char path[128];
};

/* Writes a real .mmdb with make-mmdb.pl into a fresh temporary directory. */
static int geo_setup(void **state)
{
  struct geo_fixture *f = calloc(1, sizeof(*f));
  char cmd[1024];

  assert_non_null(f);
  snprintf(f->dir, sizeof(f->dir), "/tmp/mcp-fw-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof(f->path), "%s/geo.mmdb", f->dir);
  snprintf(cmd, sizeof(cmd),
           "perl '%s/mmdb/make-mmdb.pl' '%s' 127.0.0.3/32=KP 127.0.0.4/32=de "
           "127.0.0.5=registered:CU 127.0.1.0/24=FR 2001:db8::/32=FR",
           MCP_TEST_SOURCE_DIR, f->path);
  assert_int_equal(system(cmd), 0);
  *state = f;
  return 0;
}

static int geo_teardown(void **state)
{
  struct geo_fixture *f = *state;
  char other[160];

  unlink(f->path);
  snprintf(other, sizeof(other), "%s/garbage.mmdb", f->dir);
  unlink(other);
  snprintf(other, sizeof(other), "%s/empty.mmdb", f->dir);
  unlink(other);
  rmdir(f->dir);
  free(f);
  return 0;
}

static int country_of(const mcp_geoip_t *g, const char *ip, char cc[3])
{
  struct sockaddr_storage ss = sa(ip);
  return mcp_geoip_country(g, (struct sockaddr *)&ss, cc);
}

static void geoip_country_lookup(void **state)
{
  struct geo_fixture *f = *state;
  mcp_geoip_t *g = NULL;
  char err[512] = "", cc[3];

  assert_int_equal(mcp_geoip_open(f->path, &g, err, sizeof(err)), 0);
  assert_non_null(g);
  assert_int_equal(country_of(g, "127.0.0.3", cc), 0);
  assert_string_equal(cc, "KP");
  assert_int_equal(country_of(g, "::ffff:127.0.0.3", cc), 0);
  assert_string_equal(cc, "KP");
  assert_int_equal(country_of(g, "127.0.0.4", cc), 0);
  assert_string_equal(cc, "DE");
  /* No country in the record: registered_country is used. */
  assert_int_equal(country_of(g, "127.0.0.5", cc), 0);
  assert_string_equal(cc, "CU");
  assert_int_equal(country_of(g, "127.0.1.200", cc), 0);
  assert_string_equal(cc, "FR");
  assert_int_equal(country_of(g, "2001:db8::1", cc), 0);
  assert_string_equal(cc, "FR");
  assert_int_equal(country_of(g, "127.0.0.9", cc), MCP_ENOENT);
  assert_int_equal(country_of(g, "2001:db9::1", cc), MCP_ENOENT);
  assert_int_equal(mcp_geoip_country(g, NULL, cc), MCP_ENOENT);
  assert_int_equal(mcp_geoip_country(NULL, NULL, cc), MCP_ENOENT);

  /* Extra references keep the database open. */
  assert_ptr_equal(mcp_geoip_ref(g), g);
  mcp_geoip_unref(g);
  assert_int_equal(country_of(g, "127.0.0.3", cc), 0);
  mcp_geoip_unref(g);
  mcp_geoip_unref(NULL);
}

static void country_rules_block_with_geoip(void **state)
{
  struct geo_fixture *f = *state;
  mcp_geoip_t *g = NULL;
  char err[512] = "";
  mcp_firewall_t *fw = new_firewall();

  assert_int_equal(mcp_geoip_open(f->path, &g, err, sizeof(err)), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_COUNTRY, "kp"), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_COUNTRY, "CU"), 0);
  assert_int_equal(mcp_firewall_add(fw, MCP_FIREWALL_COUNTRY, "FR"), 0);
  assert_int_equal(mcp_firewall_seal(fw), 0);

  /* Without a database, country rules match nothing. */
  assert_null(mcp_firewall_geoip(fw));
  assert_int_equal(blocked(fw, "127.0.0.3"), 0);

  mcp_firewall_set_geoip(fw, g);
  assert_ptr_equal(mcp_firewall_geoip(fw), g);
  mcp_geoip_unref(g); /* the firewall holds its own reference now */
  assert_int_equal(blocked(fw, "127.0.0.3"), 1);
  assert_int_equal(blocked(fw, "::ffff:127.0.0.3"), 1);
  assert_int_equal(blocked(fw, "127.0.0.4"), 0);
  assert_int_equal(blocked(fw, "127.0.0.5"), 1);
  assert_int_equal(blocked(fw, "127.0.1.1"), 1);
  assert_int_equal(blocked(fw, "2001:db8::1"), 1);
  assert_int_equal(blocked(fw, "127.0.0.9"), 0);
  assert_int_equal(blocked(fw, "::1"), 0);

  /* A clone shares the database; removing a rule there does not touch the original. */
  mcp_firewall_t *c = clone_firewall(fw);
  assert_ptr_equal(mcp_firewall_geoip(c), g);
  assert_int_equal(mcp_firewall_remove(c, MCP_FIREWALL_COUNTRY, "KP"), 0);
  assert_int_equal(mcp_firewall_seal(c), 0);
  assert_int_equal(blocked(c, "127.0.0.3"), 0);
  assert_int_equal(blocked(fw, "127.0.0.3"), 1);

  /* Clearing the database in the clone disables country checks there only. */
  mcp_firewall_set_geoip(c, NULL);
  assert_int_equal(blocked(c, "127.0.1.1"), 0);
  assert_int_equal(blocked(fw, "127.0.1.1"), 1);
  mcp_firewall_unref(c);

  /* With a database but no country rules, nothing is blocked by country. */
  mcp_firewall_t *plain = new_firewall();
  mcp_firewall_set_geoip(plain, mcp_firewall_geoip(fw));
  assert_int_equal(blocked(plain, "127.0.0.3"), 0);
  mcp_firewall_unref(plain);
  mcp_firewall_unref(fw);
}

static void geoip_open_errors_name_the_file(void **state)
{
  struct geo_fixture *f = *state;
  mcp_geoip_t *g = (mcp_geoip_t *)&g; /* must be reset to NULL on failure */
  char err[512], path[160];
  FILE *fp;

  snprintf(path, sizeof(path), "%s/missing.mmdb", f->dir);
  err[0] = '\0';
  assert_int_equal(mcp_geoip_open(path, &g, err, sizeof(err)), MCP_EIO);
  assert_null(g);
  print_message("missing: %s\n", err);
  assert_non_null(strstr(err, path));

  snprintf(path, sizeof(path), "%s/garbage.mmdb", f->dir);
  fp = fopen(path, "wb");
  assert_non_null(fp);
  for (int i = 0; i < 4096; i++)
    fputc((int)(rng() & 255), fp);
  fclose(fp);
  err[0] = '\0';
  g = (mcp_geoip_t *)&g;
  assert_int_equal(mcp_geoip_open(path, &g, err, sizeof(err)), MCP_EIO);
  assert_null(g);
  print_message("garbage: %s\n", err);
  assert_non_null(strstr(err, path));

  snprintf(path, sizeof(path), "%s/empty.mmdb", f->dir);
  fp = fopen(path, "wb");
  assert_non_null(fp);
  fclose(fp);
  err[0] = '\0';
  assert_int_equal(mcp_geoip_open(path, &g, err, sizeof(err)), MCP_EIO);
  assert_non_null(strstr(err, path));

  /* A tiny error buffer is truncated, not overrun, and may be absent. */
  char tiny[8];
  assert_int_equal(mcp_geoip_open(path, &g, tiny, sizeof(tiny)), MCP_EIO);
  assert_true(strlen(tiny) < sizeof(tiny));
  assert_int_equal(mcp_geoip_open(path, &g, NULL, 0), MCP_EIO);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(type_names_round_trip),
      cmocka_unit_test(normalize_table),
      cmocka_unit_test(normalize_rejects_overlong_and_null),
      cmocka_unit_test(add_is_idempotent),
      cmocka_unit_test(remove_reports_missing_rules),
      cmocka_unit_test(random_rule_edits_match_reference),
      cmocka_unit_test(ip_rules_block_v4_v6_and_mapped_clients),
      cmocka_unit_test(cidr_boundaries_v4),
      cmocka_unit_test(cidr_boundaries_v6),
      cmocka_unit_test(cidr_whole_space_and_single_hosts),
      cmocka_unit_test(cidr_v4_mapped_v6_range_blocks_ipv4_clients),
      cmocka_unit_test(cidr_overlapping_nested_and_adjacent),
      cmocka_unit_test(cidr_random_property_against_brute_force),
      cmocka_unit_test(many_rules_seal_and_check),
      cmocka_unit_test(clone_is_independent),
      cmocka_unit_test(foreach_orders_by_type_then_value),
      cmocka_unit_test_setup_teardown(geoip_country_lookup, geo_setup, geo_teardown),
      cmocka_unit_test_setup_teardown(country_rules_block_with_geoip, geo_setup, geo_teardown),
      cmocka_unit_test_setup_teardown(geoip_open_errors_name_the_file, geo_setup, geo_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
