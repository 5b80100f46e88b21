/*
 * Unit tests of the PROXY protocol parser and writers (lib/proxy_protocol.c) through the public
 * API: headers built here byte by byte (the examples of the format's description written out
 * as literals), real headers captured from HAProxy (test/vectors/haproxy_*.bin), every prefix
 * of every valid header, invalid fields one at a time, and writer -> parser round trips.
 * Longer than 600 lines because it is mostly tables of headers; each test is one behaviour.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <cmocka.h>

#include "mcproxy/error.h"
#include "mcproxy/proxy_protocol.h"

#define V2_SIG "\r\n\r\n\x00\r\nQUIT\n"

/* ---- helpers -------------------------------------------------------------------------- */

static struct sockaddr_storage sa_of(const char *ip, uint16_t port)
{
  struct sockaddr_storage ss;
  struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

  memset(&ss, 0, sizeof(ss));
  if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
  } else {
    assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
  }
  return ss;
}

/* Asserts that sa is exactly ip:port (family, address and port). */
static void assert_sa(const struct sockaddr_storage *sa, const char *ip, uint16_t port)
{
  struct sockaddr_storage want = sa_of(ip, port);

  assert_int_equal(sa->ss_family, want.ss_family);
  if (want.ss_family == AF_INET)
    assert_memory_equal(sa, &want, sizeof(struct sockaddr_in));
  else
    assert_memory_equal(sa, &want, sizeof(struct sockaddr_in6));
}

/* Parses a copy of buf[0..len) in a heap block of exactly len bytes (ASan sees any overread). */
static int parse_exact(const uint8_t *buf, size_t len, mcp_proxy_protocol_t *out)
{
  uint8_t *copy = malloc(len ? len : 1);
  int rc;

  memcpy(copy, buf, len);
  rc = mcp_proxy_protocol_parse(copy, len, out);
  free(copy);
  return rc;
}

/*
 * The whole contract for one input whose final answer is want: every prefix is NEED_MORE until
 * the answer appears, and from then on every longer prefix gives the same answer. For a valid
 * header (want > 0) buf holds exactly the header, and bytes appended after it change nothing.
 */
static void assert_every_split(const uint8_t *buf, size_t len, int want)
{
  mcp_proxy_protocol_t first, res;
  uint8_t more[MCP_PROXY_PROTOCOL_MAX_INPUT + 64];
  int seen = 0, rc;
  size_t i;

  for (i = 0; i <= len; i++) {
    rc = parse_exact(buf, i, &res);
    if (!seen && rc == MCP_PROXY_PROTOCOL_NEED_MORE)
      continue;
    if (rc != want)
      fail_msg("prefix of %zu bytes: got %d, want %d", i, rc, want);
    if (!seen)
      first = res;
    else if (want > 0)
      assert_memory_equal(&first, &res, sizeof(res));
    seen = 1;
  }
  if (!seen)
    fail_msg("no answer after all %zu bytes (want %d)", len, want);
  if (want > 0) {
    assert_int_equal((size_t)want, len);
    memcpy(more, buf, len);
    memset(more + len, 0x16, 64); /* the start of a ClientHello, say */
    assert_int_equal(parse_exact(more, len + 64, &res), want);
    assert_memory_equal(&first, &res, sizeof(res));
  }
}

static void assert_str_result(const char *s, int want)
{
  assert_every_split((const uint8_t *)s, strlen(s), want);
}

static size_t load_vector(const char *file, uint8_t *buf, size_t cap)
{
  char path[1024];
  FILE *f;
  size_t n;

  snprintf(path, sizeof(path), "%s/%s", MCP_TEST_VECTORS, file);
  f = fopen(path, "rb");
  if (f == NULL)
    fail_msg("cannot open test vector %s", path);
  n = fread(buf, 1, cap, f);
  assert_true(feof(f));
  fclose(f);
  return n;
}

static uint16_t port_of(const struct sockaddr_storage *sa)
{
  if (sa->ss_family == AF_INET)
    return ntohs(((const struct sockaddr_in *)sa)->sin_port);
  return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
}

/* ---- version 1: the format description's examples ------------------------------------ */

static void v1_tcp4_example_parses(void **state)
{
  const char *h = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
  mcp_proxy_protocol_t res;

  assert_int_equal(mcp_proxy_protocol_parse((const uint8_t *)h, strlen(h), &res), strlen(h));
  assert_int_equal(res.version, 1);
  assert_int_equal(res.use_addresses, 1);
  assert_sa(&res.src, "192.168.0.1", 56324);
  assert_sa(&res.dst, "192.168.0.11", 443);
  assert_str_result(h, (int)strlen(h));
}

static void v1_tcp6_longest_parses(void **state)
{
  const char *h = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
  mcp_proxy_protocol_t res;

  assert_int_equal(strlen(h), 104);
  assert_int_equal(mcp_proxy_protocol_parse((const uint8_t *)h, strlen(h), &res), 104);
  assert_int_equal(res.use_addresses, 1);
  assert_sa(&res.src, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
  assert_sa(&res.dst, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
  assert_str_result(h, 104);
}

static void v1_tcp6_short_forms_parse(void **state)
{
  const char *h = "PROXY TCP6 2001:db8::1 ::ffff:192.0.2.7 0 8443\r\n";
  mcp_proxy_protocol_t res;

  assert_int_equal(mcp_proxy_protocol_parse((const uint8_t *)h, strlen(h), &res), strlen(h));
  assert_sa(&res.src, "2001:db8::1", 0);
  assert_sa(&res.dst, "::ffff:192.0.2.7", 8443); /* stays AF_INET6, as the header said */
  assert_str_result(h, (int)strlen(h));
}

static void v1_unknown_uses_peer_address(void **state)
{
  const char *h = "PROXY UNKNOWN\r\n";
  mcp_proxy_protocol_t res;

  memset(&res, 0x5a, sizeof(res));
  assert_int_equal(mcp_proxy_protocol_parse((const uint8_t *)h, strlen(h), &res), 15);
  assert_int_equal(res.version, 1);
  assert_int_equal(res.use_addresses, 0);
  assert_int_equal(res.src.ss_family, AF_UNSPEC);
  assert_int_equal(res.dst.ss_family, AF_UNSPEC);
  assert_str_result(h, 15);
}

/* The description's worst case: UNKNOWN followed by the longest TCP6 fields is 107 bytes. */
static void v1_unknown_worst_case_is_107_bytes(void **state)
{
  const char *h = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
  mcp_proxy_protocol_t res;

  assert_int_equal(strlen(h), MCP_PROXY_PROTOCOL_V1_MAX);
  assert_int_equal(mcp_proxy_protocol_parse((const uint8_t *)h, strlen(h), &res), 107);
  assert_int_equal(res.use_addresses, 0);
  assert_str_result(h, 107);
}

static void v1_line_of_108_bytes_is_too_big(void **state)
{
  char h[200];

  /* "PROXY UNKNOWN " + filler + CRLF: 107 bytes fits, 108 does not. */
  memset(h, 0, sizeof(h));
  memcpy(h, "PROXY UNKNOWN ", 14);
  memset(h + 14, 'x', 107 - 16);
  memcpy(h + 105, "\r\n", 2);
  assert_str_result(h, 107);

  memset(h + 14, 'x', 108 - 16);
  memcpy(h + 106, "\r\n", 2);
  assert_int_equal(strlen(h), 108);
  assert_str_result(h, MCP_EPROXY_TOOBIG);
  /* Decided at byte 107 already: a 108th byte could not end a valid line. */
  assert_int_equal(parse_exact((const uint8_t *)h, 107, NULL), MCP_EPROXY_TOOBIG);
  assert_int_equal(parse_exact((const uint8_t *)h, 106, NULL), MCP_PROXY_PROTOCOL_NEED_MORE);
}

static void v1_endless_line_is_too_big(void **state)
{
  uint8_t h[300];

  memset(h, ' ', sizeof(h));
  memcpy(h, "PROXY UNKNOWN", 13);
  assert_every_split(h, sizeof(h), MCP_EPROXY_TOOBIG);
}

static void v1_unknown_with_any_text_parses(void **state)
{
  assert_str_result("PROXY UNKNOWN \r\n", 16);
  assert_str_result("PROXY UNKNOWN whatever the sender had\r\n", 39);
  assert_str_result("PROXY UNKNOWN 1.2.3.4 \x01\xff\r\n", 26);
}

/* ---- version 1: every field, invalid ------------------------------------------------- */

struct bad {
  const char *header;
  int want;
};

static const struct bad v1_bad[] = {
    /* the signature */
    {"PROXY", MCP_PROXY_PROTOCOL_NEED_MORE},
    {"PROXYTCP4 1.2.3.4 1.2.3.4 1 2\r\n", MCP_EPROXY_NOTPROXY},
    {"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n", MCP_EPROXY_NOTPROXY},
    {"PROXZ TCP4", MCP_EPROXY_NOTPROXY},
    {"GET / HTTP/1.1\r\n", MCP_EPROXY_NOTPROXY},
    {"\x16\x03\x01\x02\x00\x01", MCP_EPROXY_NOTPROXY},
    {" PROXY TCP4", MCP_EPROXY_NOTPROXY},
    /* the protocol word */
    {"PROXY \r\n", MCP_EPROXY_MALFORMED},
    {"PROXY  TCP4 1.2.3.4 1.2.3.4 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY tcp4 1.2.3.4 1.2.3.4 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n", MCP_EPROXY_FAMILY},
    {"PROXY TCP 1.2.3.4 1.2.3.4 1 2\r\n", MCP_EPROXY_FAMILY},
    {"PROXY TCP44 1.2.3.4 1.2.3.4 1 2\r\n", MCP_EPROXY_FAMILY},
    {"PROXY TCP4\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 \r\n", MCP_EPROXY_MALFORMED},
    {"PROXY UNKNOWNX\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY UNKNOWN\n", MCP_EPROXY_MALFORMED},
    {"PROXY UNKNOWN\r\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY UNKNOWN a\nb\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY UNKNOWN a\rb\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY UNKNOWN-1\r\n", MCP_EPROXY_MALFORMED},
    /* IPv4 addresses */
    {"PROXY TCP4 256.1.1.1 1.2.3.4 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4 1.2.3.256 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 01.2.3.4 1.2.3.4 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4.5 1.2.3.4 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1..3.4 1.2.3.4 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4. 1.2.3.4 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 0x1.2.3.4 1.2.3.4 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 16909060 1.2.3.4 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 ::1 1.2.3.4 1 2\r\n", MCP_EPROXY_FAMILY},
    {"PROXY TCP4 1.2.3.4 ::ffff:1.2.3.4 1 2\r\n", MCP_EPROXY_FAMILY},
    {"PROXY TCP4 1.2.3.4/8 1.2.3.4 1 2\r\n", MCP_EPROXY_MALFORMED},
    /* IPv6 addresses */
    {"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", MCP_EPROXY_FAMILY},
    {"PROXY TCP6 ::1 5.6.7.8 1 2\r\n", MCP_EPROXY_FAMILY},
    {"PROXY TCP6 ::g ::1 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP6 1::2::3 ::1 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP6 12345:: ::1 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP6 [::1] ::1 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP6 ::1 ::1:: 1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.2555 ::1 1 2\r\n", MCP_EPROXY_MALFORMED},
    /* ports */
    {"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4 1.2.3.4 99999 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4 1.2.3.4 123456 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4 1.2.3.4 0443 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4 1.2.3.4 00 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4 1.2.3.4 1a 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4 1.2.3.4 0x10 2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4 1.2.3.4 1  2\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4 1.2.3.4 1 \r\n", MCP_EPROXY_MALFORMED},
    /* the end of the line */
    {"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r\r", MCP_EPROXY_MALFORMED},
    {"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r", MCP_PROXY_PROTOCOL_NEED_MORE},
    {"PROXY TCP4 1.2.3.4 1.2.3.4 1 2", MCP_PROXY_PROTOCOL_NEED_MORE},
};

static void v1_invalid_fields_are_rejected(void **state)
{
  size_t i;

  for (i = 0; i < sizeof(v1_bad) / sizeof(v1_bad[0]); i++) {
    const struct bad *b = &v1_bad[i];
    size_t n = strlen(b->header);
    int rc;

    rc = parse_exact((const uint8_t *)b->header, n, NULL);
    if (rc != b->want)
      fail_msg("\"%s\": got %d, want %d", b->header, rc, b->want);
    if (b->want != MCP_PROXY_PROTOCOL_NEED_MORE)
      assert_every_split((const uint8_t *)b->header, n, b->want);
  }
}

/* Garbage is rejected at the byte that proves it, not at the end of the line or the timeout. */
static void v1_garbage_rejected_on_first_bad_byte(void **state)
{
  assert_int_equal(parse_exact((const uint8_t *)"PROXY TCP4 1.2.x", 16, NULL),
                   MCP_EPROXY_MALFORMED);
  assert_int_equal(parse_exact((const uint8_t *)"PROXY TCP4 1.2.3.4 1.2.3.4 8-", 30, NULL),
                   MCP_EPROXY_MALFORMED);
  assert_int_equal(parse_exact((const uint8_t *)"PROXY TCP4 1.2.3.4 1.2.3.4 123456", 33, NULL),
                   MCP_EPROXY_MALFORMED);
  assert_int_equal(parse_exact((const uint8_t *)"PROXY ZZZZZZZZ", 14, NULL), MCP_EPROXY_MALFORMED);
  assert_int_equal(parse_exact((const uint8_t *)"X", 1, NULL), MCP_EPROXY_NOTPROXY);
  assert_int_equal(parse_exact((const uint8_t *)"PROXY TCP4 1.2.3.4", 18, NULL),
                   MCP_PROXY_PROTOCOL_NEED_MORE);
}

static void v1_nul_byte_is_malformed(void **state)
{
  static const uint8_t h[] = "PROXY TCP4 1.2.3.4 1.2\0.3.4 1 2\r\n";

  assert_every_split(h, sizeof(h) - 1, MCP_EPROXY_MALFORMED);
  assert_every_split((const uint8_t *)"PROXY \0", 7, MCP_EPROXY_MALFORMED);
}

static void v1_port_bounds(void **state)
{
  mcp_proxy_protocol_t res;
  const char *h = "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n";

  assert_int_equal(parse_exact((const uint8_t *)h, strlen(h), &res), strlen(h));
  assert_sa(&res.src, "0.0.0.0", 0);
  assert_sa(&res.dst, "255.255.255.255", 65535);
}

/* ---- version 2 ----------------------------------------------------------------------- */

/* A v2 header: signature, ver_cmd, fam, length, then body (body_len bytes). */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, uint16_t length, const void *body,
                 size_t body_len)
{
  memcpy(out, V2_SIG, 12);
  out[12] = ver_cmd;
  out[13] = fam;
  out[14] = (uint8_t)(length >> 8);
  out[15] = (uint8_t)length;
  memcpy(out + 16, body, body_len);
  return 16 + body_len;
}

/* 192.168.0.1:56324 -> 192.168.0.11:443 as an AF_INET address block. */
static const uint8_t block4[12] = {192, 168, 0, 1, 192, 168, 0, 11, 0xdc, 0x04, 0x01, 0xbb};

static void v2_tcp4_parses(void **state)
{
  uint8_t h[64];
  mcp_proxy_protocol_t res;
  size_t n = v2(h, 0x21, 0x11, 12, block4, 12);

  assert_int_equal(parse_exact(h, n, &res), 28);
  assert_int_equal(res.version, 2);
  assert_int_equal(res.use_addresses, 1);
  assert_sa(&res.src, "192.168.0.1", 56324);
  assert_sa(&res.dst, "192.168.0.11", 443);
  assert_every_split(h, n, 28);
}

static void v2_tcp6_parses(void **state)
{
  uint8_t body[36], h[64];
  mcp_proxy_protocol_t res;
  size_t n;

  inet_pton(AF_INET6, "2001:db8::7", body);
  inet_pton(AF_INET6, "2001:db8:1::443", body + 16);
  body[32] = 0x12, body[33] = 0x34, body[34] = 0x01, body[35] = 0xbb;
  n = v2(h, 0x21, 0x21, 36, body, 36);
  assert_int_equal(parse_exact(h, n, &res), 52);
  assert_int_equal(res.use_addresses, 1);
  assert_sa(&res.src, "2001:db8::7", 0x1234);
  assert_sa(&res.dst, "2001:db8:1::443", 443);
  assert_every_split(h, n, 52);
}

static void v2_local_uses_peer_address(void **state)
{
  uint8_t h[64];
  mcp_proxy_protocol_t res;
  size_t n = v2(h, 0x20, 0x00, 0, "", 0);

  assert_int_equal(parse_exact(h, n, &res), 16);
  assert_int_equal(res.version, 2);
  assert_int_equal(res.use_addresses, 0);
  assert_int_equal(res.src.ss_family, AF_UNSPEC);
  assert_every_split(h, n, 16);

  /* LOCAL ignores the family byte and skips the payload unread, whatever it holds. */
  n = v2(h, 0x20, 0xff, 5, "\x01\x02\x03\x04\x05", 5);
  assert_int_equal(parse_exact(h, n, &res), 21);
  assert_int_equal(res.use_addresses, 0);
  n = v2(h, 0x20, 0x11, 12, block4, 12);
  assert_int_equal(parse_exact(h, n, &res), 28);
  assert_int_equal(res.use_addresses, 0);
}

static void v2_unspec_uses_peer_address(void **state)
{
  uint8_t h[64];
  mcp_proxy_protocol_t res;
  size_t n = v2(h, 0x21, 0x00, 0, "", 0);

  assert_int_equal(parse_exact(h, n, &res), 16);
  assert_int_equal(res.use_addresses, 0);
  assert_every_split(h, n, 16);
  /* TLVs after no addresses: checked and skipped. */
  n = v2(h, 0x21, 0x00, 5, "\x04\x00\x02xy", 5);
  assert_every_split(h, n, 21);
  n = v2(h, 0x21, 0x00, 5, "\x04\x00\x03xy", 5);
  assert_every_split(h, n, MCP_EPROXY_MALFORMED);
}

static void v2_tlvs_are_skipped(void **state)
{
  uint8_t body[64], h[128];
  mcp_proxy_protocol_t res;
  size_t n;

  memcpy(body, block4, 12);
  /* ALPN "h2", AUTHORITY "example.com", NOOP with 0 bytes. */
  memcpy(body + 12, "\x01\x00\x02h2", 5);
  memcpy(body + 17,
         "\x02\x00\x0b"
         "example.com",
         14);
  memcpy(body + 31, "\x04\x00\x00", 3);
  n = v2(h, 0x21, 0x11, 34, body, 34);
  assert_int_equal(parse_exact(h, n, &res), 50);
  assert_sa(&res.src, "192.168.0.1", 56324);
  assert_every_split(h, n, 50);
}

static void v2_bad_tlvs_are_rejected(void **state)
{
  uint8_t body[64], h[128];
  size_t n;

  memcpy(body, block4, 12);
  memcpy(body + 12, "\x01\x00\x02h2", 5);
  /* One or two bytes left over: not even a TLV header. */
  n = v2(h, 0x21, 0x11, 13, body, 13);
  assert_every_split(h, n, MCP_EPROXY_MALFORMED);
  n = v2(h, 0x21, 0x11, 14, body, 14);
  assert_every_split(h, n, MCP_EPROXY_MALFORMED);
  /* A TLV whose length runs past the header by one byte, and one that falls short by one. */
  n = v2(h, 0x21, 0x11, 16, body, 16);
  assert_every_split(h, n, MCP_EPROXY_MALFORMED);
  n = v2(h, 0x21, 0x11, 17, body, 17);
  assert_every_split(h, n, 33);
  memcpy(body + 17, "\x05", 1);
  n = v2(h, 0x21, 0x11, 18, body, 18);
  assert_every_split(h, n, MCP_EPROXY_MALFORMED);
  /* A TLV length of 0xffff. */
  memcpy(body + 12, "\x01\xff\xff", 3);
  n = v2(h, 0x21, 0x11, 15, body, 15);
  assert_every_split(h, n, MCP_EPROXY_MALFORMED);
}

static void v2_every_version_and_command(void **state)
{
  uint8_t h[64];
  unsigned vc;

  for (vc = 0; vc < 256; vc++) {
    size_t n = v2(h, (uint8_t)vc, 0x11, 12, block4, 12);
    int want = vc == 0x21 ? 28 : vc == 0x20 ? 28 : MCP_EPROXY_MALFORMED;

    assert_int_equal(parse_exact(h, n, NULL), want);
    /* Decided as soon as the byte arrives. */
    if (want < 0)
      assert_int_equal(parse_exact(h, 13, NULL), want);
  }
}

static void v2_every_family_and_protocol(void **state)
{
  uint8_t body[36] = {0}, h[64];
  unsigned fam;

  /*
   * 36 zero bytes fit all three accepted families: an AF_INET6 block, an AF_INET block and
   * eight empty TLVs, or twelve empty TLVs for AF_UNSPEC. Every other value is refused as soon
   * as the byte arrives: UDP (0x12, 0x22), AF_UNIX (0x31, 0x32), protocol UNSPEC with a family
   * (0x10, 0x20), and unknown families or protocols.
   */
  for (fam = 0; fam < 256; fam++) {
    size_t n = v2(h, 0x21, (uint8_t)fam, 36, body, 36);
    int want = fam == 0x11 || fam == 0x21 || fam == 0x00 ? 52 : MCP_EPROXY_FAMILY;

    assert_int_equal(parse_exact(h, n, NULL), want);
    if (want < 0)
      assert_int_equal(parse_exact(h, 14, NULL), want);
  }
}

static void v2_length_must_hold_the_addresses(void **state)
{
  uint8_t body[64] = {0}, h[128];
  size_t n;

  memcpy(body, block4, 12);
  n = v2(h, 0x21, 0x11, 11, body, 11);
  assert_every_split(h, n, MCP_EPROXY_MALFORMED);
  /* Decided with the length field, before the body arrives. */
  assert_int_equal(parse_exact(h, 16, NULL), MCP_EPROXY_MALFORMED);
  n = v2(h, 0x21, 0x11, 0, body, 0);
  assert_every_split(h, n, MCP_EPROXY_MALFORMED);
  n = v2(h, 0x21, 0x21, 35, body, 35);
  assert_every_split(h, n, MCP_EPROXY_MALFORMED);
  n = v2(h, 0x21, 0x21, 12, body, 12);
  assert_every_split(h, n, MCP_EPROXY_MALFORMED);
  /* Truncated: the length promises more than has arrived. */
  n = v2(h, 0x21, 0x11, 12, body, 11);
  assert_int_equal(parse_exact(h, n, NULL), MCP_PROXY_PROTOCOL_NEED_MORE);
}

static void v2_header_over_the_cap_is_too_big(void **state)
{
  static uint8_t h[MCP_PROXY_PROTOCOL_V2_MAX + 16];
  static uint8_t body[MCP_PROXY_PROTOCOL_V2_MAX];
  size_t tlv = MCP_PROXY_PROTOCOL_V2_MAX - 16 - 12 - 3, n;

  /* Exactly at the cap: the addresses and one TLV filling the rest. */
  memcpy(body, block4, 12);
  body[12] = 0xee;
  body[13] = (uint8_t)(tlv >> 8);
  body[14] = (uint8_t)tlv;
  memset(body + 15, 'a', tlv);
  n = v2(h, 0x21, 0x11, (uint16_t)(12 + 3 + tlv), body, 12 + 3 + tlv);
  assert_int_equal(n, MCP_PROXY_PROTOCOL_V2_MAX);
  assert_every_split(h, n, MCP_PROXY_PROTOCOL_V2_MAX);

  /* One byte more, and the largest length there is: refused when the length arrives. */
  body[14] = (uint8_t)(tlv + 1);
  n = v2(h, 0x21, 0x11, (uint16_t)(12 + 3 + tlv + 1), body, 12 + 3 + tlv + 1);
  assert_int_equal(parse_exact(h, 16, NULL), MCP_EPROXY_TOOBIG);
  assert_every_split(h, n, MCP_EPROXY_TOOBIG);
  n = v2(h, 0x21, 0x11, 0xffff, body, 0);
  assert_int_equal(parse_exact(h, 16, NULL), MCP_EPROXY_TOOBIG);
  n = v2(h, 0x20, 0x00, 0xffff, body, 0);
  assert_int_equal(parse_exact(h, 16, NULL), MCP_EPROXY_TOOBIG);
}

static void v2_signature_checked_byte_by_byte(void **state)
{
  uint8_t h[64];
  size_t n = v2(h, 0x21, 0x11, 12, block4, 12), i;

  for (i = 0; i < 12; i++) {
    h[i] ^= 0x20;
    assert_int_equal(parse_exact(h, i + 1, NULL), MCP_EPROXY_NOTPROXY);
    assert_every_split(h, n, MCP_EPROXY_NOTPROXY);
    h[i] ^= 0x20;
  }
  for (i = 0; i < 12; i++)
    assert_int_equal(parse_exact(h, i, NULL), MCP_PROXY_PROTOCOL_NEED_MORE);
}

/* ---- real headers from HAProxy -------------------------------------------------------- */

struct captured {
  const char *file;
  int version;
  const char *src;
  const char *dst;
  int rewritable; /* no TLVs: our writer must produce the same bytes */
};

static const struct captured captured[] = {
    {"haproxy_v1_tcp4.bin", 1, "127.0.0.2", "127.0.0.1", 1},
    {"haproxy_v1_tcp6.bin", 1, "::1", "::1", 1},
    {"haproxy_v2_tcp4.bin", 2, "127.0.0.3", "127.0.0.1", 1},
    {"haproxy_v2_tcp6.bin", 2, "::1", "::1", 1},
    {"haproxy_v2_tlvs.bin", 2, "127.0.0.4", "127.0.0.1", 0},
};

static void haproxy_headers_parse_and_rewrite_identically(void **state)
{
  uint8_t buf[512], out[MCP_PROXY_PROTOCOL_WRITE_MAX];
  mcp_proxy_protocol_t res;
  size_t i, n;
  int w;

  for (i = 0; i < sizeof(captured) / sizeof(captured[0]); i++) {
    const struct captured *c = &captured[i];

    n = load_vector(c->file, buf, sizeof(buf));
    assert_int_equal(parse_exact(buf, n, &res), (int)n);
    assert_every_split(buf, n, (int)n);
    assert_int_equal(res.version, c->version);
    assert_int_equal(res.use_addresses, 1);
    assert_sa(&res.src, c->src, port_of(&res.src));
    assert_sa(&res.dst, c->dst, port_of(&res.dst));
    assert_true(port_of(&res.src) != 0 && port_of(&res.dst) != 0);
    if (!c->rewritable) {
      assert_int_equal(n, 57); /* addresses, a CRC32C TLV and a unique-id TLV */
      continue;
    }
    if (c->version == 1)
      w = mcp_proxy_protocol_write_v1(out, sizeof(out), (struct sockaddr *)&res.src,
                                      (struct sockaddr *)&res.dst);
    else
      w = mcp_proxy_protocol_write_v2(out, sizeof(out), (struct sockaddr *)&res.src,
                                      (struct sockaddr *)&res.dst);
    assert_int_equal(w, (int)n);
    assert_memory_equal(out, buf, n);
  }
}

/* ---- writers ---------------------------------------------------------------------------- */

static void write_v1_matches_the_example(void **state)
{
  struct sockaddr_storage s = sa_of("192.168.0.1", 56324), d = sa_of("192.168.0.11", 443);
  const char *want = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
  uint8_t out[MCP_PROXY_PROTOCOL_WRITE_MAX];

  assert_int_equal(
      mcp_proxy_protocol_write_v1(out, sizeof(out), (struct sockaddr *)&s, (struct sockaddr *)&d),
      strlen(want));
  assert_memory_equal(out, want, strlen(want));
}

static void write_v1_longest_fits(void **state)
{
  const char *ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  struct sockaddr_storage s = sa_of(ip, 65535), d = sa_of(ip, 65535);
  uint8_t out[MCP_PROXY_PROTOCOL_WRITE_MAX];

  assert_int_equal(
      mcp_proxy_protocol_write_v1(out, sizeof(out), (struct sockaddr *)&s, (struct sockaddr *)&d),
      104);
  assert_memory_equal(out, "PROXY TCP6 ffff:", 16);
}

static void write_v2_tcp4_bytes(void **state)
{
  struct sockaddr_storage s = sa_of("192.168.0.1", 56324), d = sa_of("192.168.0.11", 443);
  uint8_t out[MCP_PROXY_PROTOCOL_WRITE_MAX], want[64];
  size_t n = v2(want, 0x21, 0x11, 12, block4, 12);

  assert_int_equal(
      mcp_proxy_protocol_write_v2(out, sizeof(out), (struct sockaddr *)&s, (struct sockaddr *)&d),
      (int)n);
  assert_memory_equal(out, want, n);
}

static void write_mapped_ipv6_as_ipv4(void **state)
{
  struct sockaddr_storage s = sa_of("::ffff:10.0.0.2", 40000), d = sa_of("::ffff:10.0.0.1", 443);
  uint8_t out[MCP_PROXY_PROTOCOL_WRITE_MAX];
  mcp_proxy_protocol_t res;
  int n;

  n = mcp_proxy_protocol_write_v1(out, sizeof(out), (struct sockaddr *)&s, (struct sockaddr *)&d);
  assert_int_equal(n, strlen("PROXY TCP4 10.0.0.2 10.0.0.1 40000 443\r\n"));
  assert_memory_equal(out, "PROXY TCP4 10.0.0.2 10.0.0.1 40000 443\r\n", n);
  n = mcp_proxy_protocol_write_v2(out, sizeof(out), (struct sockaddr *)&s, (struct sockaddr *)&d);
  assert_int_equal(n, 28);
  assert_int_equal(out[13], 0x11);
  assert_int_equal(mcp_proxy_protocol_parse(out, (size_t)n, &res), 28);
  assert_sa(&res.src, "10.0.0.2", 40000);
  assert_sa(&res.dst, "10.0.0.1", 443);
}

static void write_mixed_families_as_ipv6(void **state)
{
  struct sockaddr_storage s = sa_of("10.0.0.2", 40000), d = sa_of("2001:db8::1", 443);
  uint8_t out[MCP_PROXY_PROTOCOL_WRITE_MAX];
  mcp_proxy_protocol_t res;
  int n;

  n = mcp_proxy_protocol_write_v1(out, sizeof(out), (struct sockaddr *)&s, (struct sockaddr *)&d);
  assert_int_equal(mcp_proxy_protocol_parse(out, (size_t)n, &res), n);
  assert_sa(&res.src, "::ffff:10.0.0.2", 40000);
  assert_sa(&res.dst, "2001:db8::1", 443);
  n = mcp_proxy_protocol_write_v2(out, sizeof(out), (struct sockaddr *)&s, (struct sockaddr *)&d);
  assert_int_equal(n, 52);
  assert_int_equal(mcp_proxy_protocol_parse(out, (size_t)n, &res), 52);
  assert_sa(&res.src, "::ffff:10.0.0.2", 40000);
}

static void write_unknown_without_ip_addresses(void **state)
{
  struct sockaddr_storage d = sa_of("10.0.0.1", 443);
  struct sockaddr_un un;
  uint8_t out[MCP_PROXY_PROTOCOL_WRITE_MAX];
  mcp_proxy_protocol_t res;
  int n;

  memset(&un, 0, sizeof(un));
  un.sun_family = AF_UNIX;
  n = mcp_proxy_protocol_write_v1(out, sizeof(out), NULL, (struct sockaddr *)&d);
  assert_int_equal(n, 15);
  assert_memory_equal(out, "PROXY UNKNOWN\r\n", 15);
  n = mcp_proxy_protocol_write_v1(out, sizeof(out), (struct sockaddr *)&un, (struct sockaddr *)&d);
  assert_int_equal(n, 15);
  n = mcp_proxy_protocol_write_v2(out, sizeof(out), (struct sockaddr *)&d, (struct sockaddr *)&un);
  assert_int_equal(n, 16);
  assert_memory_equal(out, V2_SIG "\x21\x00\x00\x00", 16);
  assert_int_equal(mcp_proxy_protocol_parse(out, 16, &res), 16);
  assert_int_equal(res.use_addresses, 0);
}

static void write_refuses_short_buffer(void **state)
{
  struct sockaddr_storage s = sa_of("2001:db8::2", 1), d = sa_of("2001:db8::1", 2);
  uint8_t out[MCP_PROXY_PROTOCOL_WRITE_MAX];
  int n1, n2;

  n1 = mcp_proxy_protocol_write_v1(out, sizeof(out), (struct sockaddr *)&s, (struct sockaddr *)&d);
  n2 = mcp_proxy_protocol_write_v2(out, sizeof(out), (struct sockaddr *)&s, (struct sockaddr *)&d);
  memset(out, 0x5a, sizeof(out));
  assert_int_equal(mcp_proxy_protocol_write_v1(out, (size_t)n1 - 1, (struct sockaddr *)&s,
                                               (struct sockaddr *)&d),
                   MCP_ENOBUFS);
  assert_int_equal(mcp_proxy_protocol_write_v2(out, (size_t)n2 - 1, (struct sockaddr *)&s,
                                               (struct sockaddr *)&d),
                   MCP_ENOBUFS);
  assert_int_equal(out[0], 0x5a);
  assert_int_equal(
      mcp_proxy_protocol_write_v1(out, (size_t)n1, (struct sockaddr *)&s, (struct sockaddr *)&d),
      n1);
  assert_int_equal(
      mcp_proxy_protocol_write_v2(out, (size_t)n2, (struct sockaddr *)&s, (struct sockaddr *)&d),
      n2);
}

/* Random addresses and ports, both families and both versions: what is written parses back. */
static void round_trip_random_addresses(void **state)
{
  uint8_t out[MCP_PROXY_PROTOCOL_WRITE_MAX];
  struct sockaddr_storage s, d;
  mcp_proxy_protocol_t res;
  unsigned seed = 12345;
  int i, n, v;

  for (i = 0; i < 20000; i++) {
    struct sockaddr_storage *both[2] = {&s, &d};
    int k, six = i % 2, j;

    for (k = 0; k < 2; k++) {
      memset(both[k], 0, sizeof(s));
      if (!six) {
        struct sockaddr_in *sin = (struct sockaddr_in *)both[k];

        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = (uint32_t)rand_r(&seed) ^ (uint32_t)rand_r(&seed) << 16;
        sin->sin_port = (uint16_t)rand_r(&seed);
      } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)both[k];

        sin6->sin6_family = AF_INET6;
        for (j = 0; j < 16; j++) /* many zero bytes, so "::" compression happens often */
          sin6->sin6_addr.s6_addr[j] = rand_r(&seed) % 3 ? 0 : (uint8_t)rand_r(&seed);
        if (sin6->sin6_addr.s6_addr[0] == 0 && sin6->sin6_addr.s6_addr[10] == 0)
          sin6->sin6_addr.s6_addr[0] = 0x20; /* not IPv4-mapped */
        sin6->sin6_port = (uint16_t)rand_r(&seed);
      }
    }
    for (v = 1; v <= 2; v++) {
      n = v == 1 ? mcp_proxy_protocol_write_v1(out, sizeof(out), (struct sockaddr *)&s,
                                               (struct sockaddr *)&d)
                 : mcp_proxy_protocol_write_v2(out, sizeof(out), (struct sockaddr *)&s,
                                               (struct sockaddr *)&d);
      assert_true(n > 0);
      assert_int_equal(parse_exact(out, (size_t)n, &res), n);
      assert_int_equal(res.version, v);
      assert_int_equal(res.use_addresses, 1);
      assert_memory_equal(&res.src, &s,
                          six ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
      assert_memory_equal(&res.dst, &d,
                          six ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    }
  }
}

/* ---- garbage ---------------------------------------------------------------------------- */

/* Random bytes, and random bytes after each signature: never a crash, answers monotonic. */
static void random_garbage_is_consistent(void **state)
{
  uint8_t buf[300];
  unsigned seed = 777;
  int i, rc;
  size_t j, n;

  for (i = 0; i < 3000; i++) {
    n = 1 + (size_t)rand_r(&seed) % sizeof(buf);
    for (j = 0; j < n; j++)
      buf[j] = (uint8_t)rand_r(&seed);
    if (i % 3 == 1 && n > 6)
      memcpy(buf, "PROXY ", 6);
    if (i % 3 == 2 && n > 16) {
      memcpy(buf, V2_SIG "\x21", 13);
      buf[14] = 0;
    }
    rc = parse_exact(buf, n, NULL);
    if (rc != MCP_PROXY_PROTOCOL_NEED_MORE)
      assert_every_split(buf, rc > 0 ? (size_t)rc : n, rc);
  }
}

static void strerror_describes_every_code(void **state)
{
  static const int codes[] = {MCP_EPROXY_NOTPROXY, MCP_EPROXY_MALFORMED, MCP_EPROXY_FAMILY,
                              MCP_EPROXY_TOOBIG, MCP_ENOBUFS};
  size_t i;

  for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
    assert_non_null(mcp_strerror(codes[i]));
    assert_true(strlen(mcp_strerror(codes[i])) > 5);
    assert_null(strstr(mcp_strerror(codes[i]), "nknown"));
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(v1_tcp4_example_parses),
      cmocka_unit_test(v1_tcp6_longest_parses),
      cmocka_unit_test(v1_tcp6_short_forms_parse),
      cmocka_unit_test(v1_unknown_uses_peer_address),
      cmocka_unit_test(v1_unknown_worst_case_is_107_bytes),
      cmocka_unit_test(v1_line_of_108_bytes_is_too_big),
      cmocka_unit_test(v1_endless_line_is_too_big),
      cmocka_unit_test(v1_unknown_with_any_text_parses),
      cmocka_unit_test(v1_invalid_fields_are_rejected),
      cmocka_unit_test(v1_garbage_rejected_on_first_bad_byte),
      cmocka_unit_test(v1_nul_byte_is_malformed),
      cmocka_unit_test(v1_port_bounds),
      cmocka_unit_test(v2_tcp4_parses),
      cmocka_unit_test(v2_tcp6_parses),
      cmocka_unit_test(v2_local_uses_peer_address),
      cmocka_unit_test(v2_unspec_uses_peer_address),
      cmocka_unit_test(v2_tlvs_are_skipped),
      cmocka_unit_test(v2_bad_tlvs_are_rejected),
      cmocka_unit_test(v2_every_version_and_command),
      cmocka_unit_test(v2_every_family_and_protocol),
      cmocka_unit_test(v2_length_must_hold_the_addresses),
      cmocka_unit_test(v2_header_over_the_cap_is_too_big),
      cmocka_unit_test(v2_signature_checked_byte_by_byte),
      cmocka_unit_test(haproxy_headers_parse_and_rewrite_identically),
      cmocka_unit_test(write_v1_matches_the_example),
      cmocka_unit_test(write_v1_longest_fits),
      cmocka_unit_test(write_v2_tcp4_bytes),
      cmocka_unit_test(write_mapped_ipv6_as_ipv4),
      cmocka_unit_test(write_mixed_families_as_ipv6),
      cmocka_unit_test(write_unknown_without_ip_addresses),
      cmocka_unit_test(write_refuses_short_buffer),
      cmocka_unit_test(round_trip_random_addresses),
      cmocka_unit_test(random_garbage_is_consistent),
      cmocka_unit_test(strerror_describes_every_code),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
