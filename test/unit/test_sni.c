/*
 * Unit tests of the ClientHello parser (lib/sni.c) through its public API, with real
 * ClientHellos captured from real clients (test/vectors/) and hellos built here byte by byte.
 *
 * Over 600 lines on purpose: one behaviour per test, and the parser has many rules (framing,
 * every length, each strictness rule split at every byte). Splitting it would only scatter the
 * shared hello builders; the hostname rule itself is tested in test_hostname.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mcproxy/error.h"
#include "mcproxy/sni.h"

#define RAW_MAX (4 * MCP_SNI_MAX_INPUT)

/* ---- helpers -------------------------------------------------------------------------- */

struct vector {
  const char *file;
  int expect; /* a positive value means "the hostname below" */
  const char *host;
};

static const struct vector v_openssl12 = {"openssl_tls12.bin", 1, "app.example.com"};
static const struct vector v_openssl13 = {"openssl_tls13.bin", 1, "app.example.com"};
static const struct vector v_nosni = {"openssl_nosni.bin", MCP_SNI_ENOSNI, NULL};
static const struct vector v_curl = {"curl.bin", 1, "app.example.com"};
static const struct vector v_python = {"python_ssl.bin", 1, "py.example.org"};
static const struct vector v_wget = {"wget_gnutls.bin", 1, "localhost"};
static const struct vector v_fragmented = {"curl_fragmented.bin", 1, "app.example.com"};

static const struct vector *const all_vectors[] = {&v_openssl12, &v_openssl13, &v_nosni,
                                                   &v_curl,      &v_python,    &v_wget};
#define N_VECTORS (sizeof(all_vectors) / sizeof(all_vectors[0]))

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
  assert_true(n > 5);
  return n;
}

/* The expected return value for a vector: the hostname's length, or its error. */
static int expected_rc(const struct vector *v)
{
  return v->expect > 0 ? (int)strlen(v->host) : v->expect;
}

static void assert_result(const struct vector *v, int rc, const char *host)
{
  assert_int_equal(rc, expected_rc(v));
  if (rc > 0)
    assert_string_equal(host, v->host);
}

static int parse_whole(const uint8_t *buf, size_t len, char *host)
{
  mcp_sni_t st;

  mcp_sni_init(&st);
  return mcp_sni_parse(&st, buf, len, host);
}

/*
 * Feeds buf one byte at a time with one persistent state; every proper prefix must be
 * NEED_MORE (these inputs end exactly where the ClientHello does). Returns the final result.
 */
static int parse_bytewise(const uint8_t *buf, size_t len, char *host)
{
  mcp_sni_t st;
  size_t i;
  int rc = MCP_SNI_NEED_MORE;

  mcp_sni_init(&st);
  for (i = 1; i <= len; i++) {
    rc = mcp_sni_parse(&st, buf, i, host);
    if (i < len)
      assert_int_equal(rc, MCP_SNI_NEED_MORE);
  }
  return rc;
}

/* Splits buf at every point k (two calls, one state) and checks each gives the expected result. */
static void check_every_split(const struct vector *v, const uint8_t *buf, size_t len)
{
  size_t k;

  for (k = 1; k < len; k++) {
    mcp_sni_t st;
    char host[MCP_HOSTNAME_MAX + 1] = "";

    mcp_sni_init(&st);
    assert_int_equal(mcp_sni_parse(&st, buf, k, host), MCP_SNI_NEED_MORE);
    assert_result(v, mcp_sni_parse(&st, buf, len, host), host);
  }
}

/*
 * Checks that buf[0..len) is refused with expect however it is cut: whole, split in two at
 * every byte (the first part may already be refused, never anything else), and byte by byte.
 */
static void check_rejected_everywhere(const uint8_t *buf, size_t len, int expect)
{
  char host[MCP_HOSTNAME_MAX + 1] = "untouched";
  mcp_sni_t st;
  size_t k;
  int rc = MCP_SNI_NEED_MORE;

  assert_true(expect < 0);
  for (k = 1; k < len; k++) {
    mcp_sni_init(&st);
    rc = mcp_sni_parse(&st, buf, k, host);
    if (rc != MCP_SNI_NEED_MORE)
      assert_int_equal(rc, expect);
    assert_int_equal(mcp_sni_parse(&st, buf, len, host), expect);
  }
  mcp_sni_init(&st);
  rc = MCP_SNI_NEED_MORE;
  for (k = 1; k <= len && rc == MCP_SNI_NEED_MORE; k++)
    rc = mcp_sni_parse(&st, buf, k, host);
  assert_int_equal(rc, expect);
  assert_string_equal(host, "untouched");
}

/* Checks that buf[0..len) gives hostname want, whole, split at every byte and byte by byte. */
static void check_accepted_everywhere(const uint8_t *buf, size_t len, const char *want)
{
  const struct vector v = {"(built)", 1, want};
  char host[MCP_HOSTNAME_MAX + 1] = "";

  assert_result(&v, parse_whole(buf, len, host), host);
  assert_result(&v, parse_bytewise(buf, len, host), host);
  check_every_split(&v, buf, len);
}

/*
 * Re-frames the single-record hello in one[0..len) into records whose payload sizes are taken
 * from sizes[] in turn (the last size repeats). Returns the new length.
 */
static size_t reframe(const uint8_t *one, size_t len, const size_t *sizes, size_t nsizes,
                      uint8_t *out, size_t cap)
{
  const uint8_t *msg = one + 5;
  size_t msglen = (size_t)one[3] << 8 | one[4];
  size_t off = 0, pos = 0, i = 0;

  assert_int_equal(msglen + 5, len);
  while (off < msglen) {
    size_t n = sizes[i < nsizes ? i : nsizes - 1];

    i++;
    if (n > msglen - off)
      n = msglen - off;
    assert_true(pos + 5 + n <= cap);
    out[pos] = 22;
    out[pos + 1] = 3;
    out[pos + 2] = 1;
    out[pos + 3] = (uint8_t)(n >> 8);
    out[pos + 4] = (uint8_t)n;
    memcpy(out + pos + 5, msg + off, n);
    pos += 5 + n;
    off += n;
  }
  return pos;
}

/* A byte writer for building ClientHellos by hand. */
struct wr {
  uint8_t b[RAW_MAX];
  size_t n;
};

static void put8(struct wr *w, unsigned v)
{
  assert_true(w->n < sizeof(w->b));
  w->b[w->n++] = (uint8_t)v;
}

static void put16(struct wr *w, unsigned v)
{
  put8(w, v >> 8);
  put8(w, v);
}

static void put24(struct wr *w, unsigned v)
{
  put8(w, v >> 16);
  put16(w, v);
}

static void putmem(struct wr *w, const void *p, size_t n)
{
  assert_true(w->n + n <= sizeof(w->b));
  memcpy(w->b + w->n, p, n);
  w->n += n;
}

/* Appends a server_name extension carrying one host_name entry. */
static void ext_sni(struct wr *w, const char *name, size_t len)
{
  put16(w, 0);
  put16(w, (unsigned)len + 5);
  put16(w, (unsigned)len + 3);
  put8(w, 0);
  put16(w, (unsigned)len);
  putmem(w, name, len);
}

static void ext_raw(struct wr *w, unsigned type, size_t len, uint8_t fill)
{
  put16(w, type);
  put16(w, (unsigned)len);
  while (len-- > 0)
    put8(w, fill);
}

/*
 * Wraps a ClientHello around the extensions block in ext (ext == NULL: no extensions at all)
 * and frames it as one handshake record. Returns the raw length in out.
 */
static size_t make_hello_ex(const struct wr *ext, size_t sid_len, size_t suites_len,
                            size_t comp_len, uint8_t *out)
{
  static struct wr body, raw;
  uint8_t random[32];
  size_t i;

  memset(random, 0xAB, sizeof(random));
  body.n = 0;
  put16(&body, 0x0303);
  putmem(&body, random, sizeof(random));
  put8(&body, (unsigned)sid_len);
  for (i = 0; i < sid_len; i++)
    put8(&body, 0x11);
  /* cipher_suites: a GREASE value, then TLS_AES_128_GCM_SHA256, then filler. */
  put16(&body, (unsigned)suites_len);
  for (i = 0; i < suites_len; i++)
    put8(&body, i < 4 ? "\x2a\x2a\x13\x01"[i] : 0x13);
  put8(&body, (unsigned)comp_len); /* compression_methods: null */
  for (i = 0; i < comp_len; i++)
    put8(&body, 0);
  if (ext != NULL) {
    put16(&body, (unsigned)ext->n);
    putmem(&body, ext->b, ext->n);
  }
  raw.n = 0;
  put8(&raw, 22);
  put16(&raw, 0x0301);
  put16(&raw, (unsigned)body.n + 4);
  put8(&raw, 1);
  put24(&raw, (unsigned)body.n);
  putmem(&raw, body.b, body.n);
  memcpy(out, raw.b, raw.n);
  return raw.n;
}

static size_t make_hello(const struct wr *ext, uint8_t *out)
{
  return make_hello_ex(ext, 0, 4, 1, out);
}

/* Builds a hello whose only extension is an SNI with name[0..len) and parses it whole. */
static int parse_sni_name(const char *name, size_t len, char *host)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  size_t n;

  ext.n = 0;
  ext_sni(&ext, name, len);
  n = make_hello(&ext, raw);
  return parse_whole(raw, n, host);
}

/* ---- real vectors ----------------------------------------------------------------------- */

static void vector_whole_gives_capture_hostname(void **state)
{
  const struct vector *v = *state;
  uint8_t buf[8192];
  char host[MCP_HOSTNAME_MAX + 1] = "";
  size_t len = load_vector(v->file, buf, sizeof(buf));

  assert_result(v, parse_whole(buf, len, host), host);
}

static void vector_byte_by_byte_gives_capture_hostname(void **state)
{
  const struct vector *v = *state;
  uint8_t buf[8192];
  char host[MCP_HOSTNAME_MAX + 1] = "";
  size_t len = load_vector(v->file, buf, sizeof(buf));

  assert_result(v, parse_bytewise(buf, len, host), host);
}

static void vector_every_split_gives_capture_hostname(void **state)
{
  const struct vector *v = *state;
  uint8_t buf[8192];
  size_t len = load_vector(v->file, buf, sizeof(buf));

  check_every_split(v, buf, len);
}

static void vector_every_truncation_stays_need_more(void **state)
{
  const struct vector *v = *state;
  uint8_t buf[8192];
  char host[MCP_HOSTNAME_MAX + 1] = "untouched";
  size_t len = load_vector(v->file, buf, sizeof(buf)), k;

  for (k = 0; k < len; k++)
    assert_int_equal(parse_whole(buf, k, host), MCP_SNI_NEED_MORE);
  assert_string_equal(host, "untouched");
}

static void vector_with_trailing_records_still_parses(void **state)
{
  const struct vector *v = *state;
  uint8_t buf[8192];
  char host[MCP_HOSTNAME_MAX + 1] = "";
  size_t len = load_vector(v->file, buf, sizeof(buf));
  /* An early-data (application_data) record and then bytes that are not even TLS. */
  static const uint8_t tail[] = {23, 3, 3, 0, 4, 1, 2, 3, 4, 'G', 'E', 'T', ' '};

  memcpy(buf + len, tail, sizeof(tail));
  assert_result(v, parse_whole(buf, len + sizeof(tail), host), host);
  assert_result(v, parse_bytewise(buf, len, host), host);
}

/* ---- multi-record reassembly -------------------------------------------------------------- */

static void check_reframed(const size_t *sizes, size_t nsizes, size_t expect_records)
{
  size_t i;

  for (i = 0; i < N_VECTORS; i++) {
    const struct vector *v = all_vectors[i];
    static uint8_t one[8192], multi[RAW_MAX];
    char host[MCP_HOSTNAME_MAX + 1] = "";
    size_t len = load_vector(v->file, one, sizeof(one));
    size_t mlen = reframe(one, len, sizes, nsizes, multi, sizeof(multi));
    mcp_sni_t st;

    mcp_sni_init(&st);
    assert_result(v, mcp_sni_parse(&st, multi, mlen, host), host);
    if (expect_records != 0)
      assert_int_equal(st.records, expect_records);
    assert_int_equal(st.scanned, mlen);
    assert_int_equal(st.hs_have, len - 5);
    assert_int_equal(st.hs_total, len - 5);
    assert_result(v, parse_bytewise(multi, mlen, host), host);
    check_every_split(v, multi, mlen);
  }
}

static void multi_record_hello_in_three_records_reassembles(void **state)
{
  const size_t sizes[] = {40, 60, 16384};

  check_reframed(sizes, 3, 3);
}

static void multi_record_handshake_header_split_reassembles(void **state)
{
  /* msg_type alone in the first record, the 24-bit length split over the next two. */
  const size_t sizes[] = {1, 2, 1, 16384};

  check_reframed(sizes, 4, 4);
}

static void multi_record_one_byte_records_reassemble(void **state)
{
  const size_t sizes[] = {1};

  check_reframed(sizes, 1, 0);
}

static void multi_record_split_inside_sni_reassembles(void **state)
{
  const size_t sizes[] = {7, 100, 3, 5, 16384};

  check_reframed(sizes, 5, 0);
}

static void state_counts_complete_records_only(void **state)
{
  static uint8_t one[8192], multi[RAW_MAX];
  const size_t sizes[] = {10, 20, 16384};
  char host[MCP_HOSTNAME_MAX + 1];
  size_t len = load_vector(v_curl.file, one, sizeof(one));
  size_t mlen = reframe(one, len, sizes, 3, multi, sizeof(multi));
  mcp_sni_t st;

  mcp_sni_init(&st);
  /* Two complete records (15 + 25 bytes) and 7 bytes of the third. */
  assert_int_equal(mcp_sni_parse(&st, multi, 47, host), MCP_SNI_NEED_MORE);
  assert_int_equal(st.records, 2);
  assert_int_equal(st.scanned, 40);
  assert_int_equal(st.hs_have, 30);
  assert_int_equal(st.hs_total, len - 5);
  assert_int_equal(mcp_sni_parse(&st, multi, mlen, host), (int)strlen(v_curl.host));
  assert_int_equal(st.records, 3);
}

static void parse_again_after_result_gives_same_result(void **state)
{
  uint8_t buf[8192];
  char host[MCP_HOSTNAME_MAX + 1];
  size_t len = load_vector(v_python.file, buf, sizeof(buf));
  mcp_sni_t st;

  mcp_sni_init(&st);
  assert_int_equal(mcp_sni_parse(&st, buf, len, host), 14);
  memset(host, 0, sizeof(host));
  assert_int_equal(mcp_sni_parse(&st, buf, len, host), 14);
  assert_string_equal(host, "py.example.org");
}

static void shrinking_buffer_is_rejected(void **state)
{
  uint8_t buf[8192];
  char host[MCP_HOSTNAME_MAX + 1];
  size_t len = load_vector(v_fragmented.file, buf, sizeof(buf));
  mcp_sni_t st;

  /* Two records (1 and 2 payload bytes) are walked; then 8 bytes cannot hold them. */
  mcp_sni_init(&st);
  assert_int_equal(mcp_sni_parse(&st, buf, 13, host), MCP_SNI_NEED_MORE);
  assert_int_equal(st.scanned, 13);
  assert_int_equal(mcp_sni_parse(&st, buf, 8, host), MCP_SNI_EMALFORMED);
  assert_int_equal(mcp_sni_parse(&st, buf, len, host), 15);
}

static void max_size_hello_in_one_record_accepted(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  char host[MCP_HOSTNAME_MAX + 1];
  size_t n, pad;

  /* Body = 2+32+1+2+4+1+1 + 2 + SNI(4+5+11) + padding(4+pad) = 16380 (handshake 16384). */
  pad = 16380 - (43 + 2 + 20 + 4);
  ext.n = 0;
  ext_sni(&ext, "big.example", 11);
  ext_raw(&ext, 21, pad, 0);
  n = make_hello(&ext, raw);
  assert_int_equal(n, 5 + MCP_SNI_MAX_HANDSHAKE);
  assert_int_equal(parse_whole(raw, n, host), 11);
  assert_string_equal(host, "big.example");

  /* One byte more is over the handshake cap, seen as soon as the header is in. */
  ext.n = 0;
  ext_sni(&ext, "big.example", 11);
  ext_raw(&ext, 21, pad + 1, 0);
  n = make_hello(&ext, raw);
  {
    static uint8_t multi[RAW_MAX];
    const size_t sizes[] = {16000, 16384};
    size_t mlen = reframe(raw, n, sizes, 2, multi, sizeof(multi));

    assert_int_equal(parse_whole(multi, 9, host), MCP_SNI_ETOOBIG);
    assert_int_equal(parse_whole(multi, mlen, host), MCP_SNI_ETOOBIG);
  }
}

static void max_size_hello_in_two_records_accepted(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX], multi[RAW_MAX];
  const size_t sizes[] = {16000, 16384};
  char host[MCP_HOSTNAME_MAX + 1];
  size_t n, mlen;

  ext.n = 0;
  ext_raw(&ext, 21, 16380 - (43 + 2 + 21 + 4), 0); /* SNI of 12 bytes below */
  ext_sni(&ext, "last.example", 12);
  n = make_hello(&ext, raw);
  assert_int_equal(n, 5 + MCP_SNI_MAX_HANDSHAKE);
  mlen = reframe(raw, n, sizes, 2, multi, sizeof(multi));
  assert_int_equal(mlen, n + 5);
  assert_int_equal(parse_whole(multi, mlen, host), 12);
  assert_string_equal(host, "last.example");
  assert_int_equal(parse_bytewise(multi, mlen, host), 12);
}

static void tiny_records_overhead_is_capped(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX], multi[8 * RAW_MAX];
  const size_t sizes[] = {1};
  char host[MCP_HOSTNAME_MAX + 1];
  size_t n, mlen, i;
  mcp_sni_t st;
  int rc = MCP_SNI_NEED_MORE;

  /* 4000 handshake bytes in 1-byte records need 24000 raw bytes, over MCP_SNI_MAX_INPUT. */
  ext.n = 0;
  ext_sni(&ext, "a.example", 9);
  ext_raw(&ext, 21, 4000, 0);
  n = make_hello(&ext, raw);
  mlen = reframe(raw, n, sizes, 1, multi, sizeof(multi));
  mcp_sni_init(&st);
  for (i = 6; i <= mlen && rc == MCP_SNI_NEED_MORE; i += 6)
    rc = mcp_sni_parse(&st, multi, i, host);
  assert_int_equal(rc, MCP_SNI_ETOOBIG);
  assert_true(i - 6 <= MCP_SNI_MAX_INPUT + 6);
  assert_int_equal(parse_whole(multi, mlen, host), MCP_SNI_ETOOBIG);
}

/* ---- not TLS / not a ClientHello ------------------------------------------------------- */

static void http_request_is_not_tls(void **state)
{
  const char *req = "GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n";
  char host[MCP_HOSTNAME_MAX + 1];

  assert_int_equal(parse_whole((const uint8_t *)req, strlen(req), host), MCP_SNI_ENOTTLS);
}

static void first_byte_alone_proves_not_tls(void **state)
{
  char host[MCP_HOSTNAME_MAX + 1];

  assert_int_equal(parse_whole((const uint8_t *)"G", 1, host), MCP_SNI_ENOTTLS);
  assert_int_equal(parse_whole((const uint8_t *)"\x17", 1, host), MCP_SNI_ENOTTLS);
  assert_int_equal(parse_whole((const uint8_t *)"\x16", 1, host), MCP_SNI_NEED_MORE);
  assert_int_equal(parse_whole((const uint8_t *)"", 0, host), MCP_SNI_NEED_MORE);
}

static void sslv2_hello_is_not_tls(void **state)
{
  /* SSLv2-compatible CLIENT-HELLO: 2-byte length with the high bit set, msg type 1, 3.1. */
  static const uint8_t v2[] = {0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10};
  char host[MCP_HOSTNAME_MAX + 1];

  assert_int_equal(parse_whole(v2, sizeof(v2), host), MCP_SNI_ENOTTLS);
  assert_int_equal(parse_whole(v2, 1, host), MCP_SNI_ENOTTLS);
}

static void bad_record_version_is_not_tls(void **state)
{
  char host[MCP_HOSTNAME_MAX + 1];

  assert_int_equal(parse_whole((const uint8_t *)"\x16\x02", 2, host), MCP_SNI_ENOTTLS);
  assert_int_equal(parse_whole((const uint8_t *)"\x16\x04", 2, host), MCP_SNI_ENOTTLS);
  /* Only the major byte tells TLS apart; the minor byte is the backend's business. */
  assert_int_equal(parse_whole((const uint8_t *)"\x16\x03\x00", 3, host), MCP_SNI_NEED_MORE);
  assert_int_equal(parse_whole((const uint8_t *)"\x16\x03\x04", 3, host), MCP_SNI_NEED_MORE);
  assert_int_equal(parse_whole((const uint8_t *)"\x16\x03\x05", 3, host), MCP_SNI_NEED_MORE);
  assert_int_equal(parse_whole((const uint8_t *)"\x16\x03\xff", 3, host), MCP_SNI_NEED_MORE);
}

static void record_version_minor_byte_is_not_judged(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX], multi[RAW_MAX];
  static const uint8_t minors[] = {0x00, 0x01, 0x03, 0x04, 0x05, 0x7f, 0xff};
  const size_t sizes[] = {30, 16384};
  size_t i, n, mlen;

  ext.n = 0;
  ext_sni(&ext, "v.example", 9);
  for (i = 0; i < sizeof(minors); i++) {
    n = make_hello(&ext, raw);
    raw[2] = minors[i];
    check_accepted_everywhere(raw, n, "v.example");
    /* In a later record too. */
    mlen = reframe(raw, n, sizes, 2, multi, sizeof(multi));
    multi[35 + 2] = minors[i];
    check_accepted_everywhere(multi, mlen, "v.example");
  }
}

static void server_hello_is_not_a_client_hello(void **state)
{
  static const uint8_t sh[] = {22, 3, 3, 0, 80, 2};
  char host[MCP_HOSTNAME_MAX + 1];

  assert_int_equal(parse_whole(sh, sizeof(sh), host), MCP_SNI_ENOTHELLO);
}

static void non_handshake_record_after_first_is_malformed(void **state)
{
  static uint8_t one[8192], multi[RAW_MAX];
  const size_t sizes[] = {50, 16384};
  char host[MCP_HOSTNAME_MAX + 1];
  size_t len = load_vector(v_curl.file, one, sizeof(one));

  reframe(one, len, sizes, 2, multi, sizeof(multi));
  multi[55] = 21; /* an alert where the second handshake record should be */
  assert_int_equal(parse_whole(multi, 56, host), MCP_SNI_EMALFORMED);
}

/* ---- lying lengths ---------------------------------------------------------------------- */

static void zero_length_record_is_malformed(void **state)
{
  static const uint8_t r[] = {22, 3, 1, 0, 0, 22, 3, 1, 0, 4};
  char host[MCP_HOSTNAME_MAX + 1];

  assert_int_equal(parse_whole(r, sizeof(r), host), MCP_SNI_EMALFORMED);
}

static void record_longer_than_16384_is_malformed(void **state)
{
  static const uint8_t r1[] = {22, 3, 1, 0x40, 0x01};
  static const uint8_t r2[] = {22, 3, 1, 0xff, 0xff};
  char host[MCP_HOSTNAME_MAX + 1];

  assert_int_equal(parse_whole(r1, sizeof(r1), host), MCP_SNI_EMALFORMED);
  assert_int_equal(parse_whole(r2, sizeof(r2), host), MCP_SNI_EMALFORMED);
}

static void bytes_after_hello_in_its_record_are_malformed(void **state)
{
  uint8_t buf[8192];
  char host[MCP_HOSTNAME_MAX + 1];
  size_t len = load_vector(v_curl.file, buf, sizeof(buf));

  /* The record holds 100 bytes more than the hello: refused, whatever those bytes are. */
  buf[3] = (uint8_t)((len - 5 + 100) >> 8);
  buf[4] = (uint8_t)(len - 5 + 100);
  memset(buf + len, 0, 100);
  check_rejected_everywhere(buf, len + 100, MCP_SNI_EMALFORMED);
  /* Seen as soon as the record header and the handshake header are both in. */
  assert_int_equal(parse_whole(buf, 9, host), MCP_SNI_EMALFORMED);
  assert_int_equal(parse_whole(buf, 8, host), MCP_SNI_NEED_MORE);

  /* One trailing byte is enough. */
  buf[3] = (uint8_t)((len - 5 + 1) >> 8);
  buf[4] = (uint8_t)(len - 5 + 1);
  check_rejected_everywhere(buf, len + 1, MCP_SNI_EMALFORMED);
}

static void second_handshake_message_in_hello_record_is_malformed(void **state)
{
  static uint8_t buf[8192], twice[RAW_MAX];
  size_t len = load_vector(v_python.file, buf, sizeof(buf));
  size_t hs = len - 5;

  /* The same ClientHello twice in one record: a backend might read either. */
  memcpy(twice, buf, len);
  memcpy(twice + len, buf + 5, hs);
  twice[3] = (uint8_t)((2 * hs) >> 8);
  twice[4] = (uint8_t)(2 * hs);
  check_rejected_everywhere(twice, len + hs, MCP_SNI_EMALFORMED);
}

static void bytes_after_hello_in_later_record_are_malformed(void **state)
{
  static uint8_t one[8192], multi[RAW_MAX];
  const size_t sizes[] = {40, 16384};
  size_t len = load_vector(v_openssl13.file, one, sizeof(one));
  size_t mlen = reframe(one, len, sizes, 2, multi, sizeof(multi));
  size_t last = 45; /* the second record's header */
  size_t n = ((size_t)multi[last + 3] << 8 | multi[last + 4]) + 3;

  /* The second record grows by three bytes past the hello's end. */
  multi[last + 3] = (uint8_t)(n >> 8);
  multi[last + 4] = (uint8_t)n;
  memcpy(multi + mlen, "\x01\x02\x03", 3);
  check_rejected_everywhere(multi, mlen + 3, MCP_SNI_EMALFORMED);
}

static void whole_records_after_hello_are_not_looked_at(void **state)
{
  static uint8_t buf[8192];
  size_t len = load_vector(v_curl.file, buf, sizeof(buf));
  char host[MCP_HOSTNAME_MAX + 1];

  /* A record of another type, even a malformed one, after the hello's last record is fine. */
  memcpy(buf + len, "\x17\x03\x03\xff\xff", 5);
  assert_int_equal(parse_whole(buf, len + 5, host), 15);
  memcpy(buf + len, "\x16\x03\x03\x00\x00", 5);
  assert_int_equal(parse_whole(buf, len + 5, host), 15);
}

static void handshake_length_over_16k_is_too_big(void **state)
{
  static const uint8_t r1[] = {22, 3, 1, 0x40, 0x00, 1, 0x00, 0x3f, 0xfd};
  static const uint8_t r2[] = {22, 3, 1, 0x40, 0x00, 1, 0xff, 0xff, 0xff};
  char host[MCP_HOSTNAME_MAX + 1];

  assert_int_equal(parse_whole(r1, sizeof(r1), host), MCP_SNI_ETOOBIG);
  assert_int_equal(parse_whole(r2, sizeof(r2), host), MCP_SNI_ETOOBIG);
  /* 0x3ffc + 4 = 16384 is allowed: the parser waits for it. */
  static const uint8_t ok[] = {22, 3, 1, 0x40, 0x00, 1, 0x00, 0x3f, 0xfc};
  assert_int_equal(parse_whole(ok, sizeof(ok), host), MCP_SNI_NEED_MORE);
}

static void handshake_length_too_small_is_malformed(void **state)
{
  uint8_t buf[8192];
  char host[MCP_HOSTNAME_MAX + 1];
  size_t len = load_vector(v_openssl13.file, buf, sizeof(buf));

  /* Too short to be any ClientHello. */
  buf[6] = 0, buf[7] = 0, buf[8] = 10;
  assert_int_equal(parse_whole(buf, len, host), MCP_SNI_EMALFORMED);
  assert_int_equal(parse_whole(buf, 9, host), MCP_SNI_EMALFORMED);

  /* One byte short of the real length: the extensions block overruns the message. */
  len = load_vector(v_openssl13.file, buf, sizeof(buf));
  buf[8] = (uint8_t)(buf[8] - 1);
  assert_int_equal(parse_whole(buf, len, host), MCP_SNI_EMALFORMED);
}

static void handshake_length_longer_than_records_waits(void **state)
{
  uint8_t buf[8192];
  char host[MCP_HOSTNAME_MAX + 1];
  size_t len = load_vector(v_openssl12.file, buf, sizeof(buf));
  mcp_sni_t st;

  buf[8] = (uint8_t)(buf[8] + 1);
  mcp_sni_init(&st);
  assert_int_equal(mcp_sni_parse(&st, buf, len, host), MCP_SNI_NEED_MORE);
  /* The missing byte arrives in a second record: now the hello has one trailing byte. */
  memcpy(buf + len, "\x16\x03\x01\x00\x01\x00", 6);
  assert_int_equal(mcp_sni_parse(&st, buf, len + 6, host), MCP_SNI_EMALFORMED);
}

static void extensions_length_overflowing_is_malformed(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  char host[MCP_HOSTNAME_MAX + 1];
  size_t n;

  ext.n = 0;
  ext_sni(&ext, "a.example", 9);
  n = make_hello(&ext, raw);
  /* The extensions block length sits right after compression methods: 5+4+43 bytes in. */
  raw[52] = 0xff, raw[53] = 0xff;
  assert_int_equal(parse_whole(raw, n, host), MCP_SNI_EMALFORMED);
  raw[52] = 0, raw[53] = (uint8_t)(ext.n - 1); /* shorter: leaves a trailing byte */
  assert_int_equal(parse_whole(raw, n, host), MCP_SNI_EMALFORMED);
}

static void extension_length_overflowing_is_malformed(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  char host[MCP_HOSTNAME_MAX + 1];
  size_t n;

  ext.n = 0;
  ext_raw(&ext, 0x0a0a, 0, 0);
  ext_sni(&ext, "a.example", 9);
  n = make_hello(&ext, raw);
  /* The SNI extension's own length: after the 4-byte GREASE extension and its 2-byte type. */
  raw[54 + 4 + 2] = 0xff, raw[54 + 4 + 3] = 0xff;
  assert_int_equal(parse_whole(raw, n, host), MCP_SNI_EMALFORMED);
  raw[54 + 4 + 2] = 0, raw[54 + 4 + 3] = 15;
  assert_int_equal(parse_whole(raw, n, host), MCP_SNI_EMALFORMED);
}

static void truncated_extension_header_is_malformed(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  char host[MCP_HOSTNAME_MAX + 1];

  ext.n = 0;
  ext_sni(&ext, "a.example", 9);
  put8(&ext, 0x00); /* a lone byte where a 4-byte extension header should start */
  assert_int_equal(parse_whole(raw, make_hello(&ext, raw), host), MCP_SNI_EMALFORMED);
  /* One byte where the 2-byte extensions block length should be. */
  {
    size_t n = make_hello(NULL, raw);
    /* Append one byte to the body and fix up the lengths. */
    raw[n] = 0;
    raw[4] = (uint8_t)(raw[4] + 1);
    raw[8] = (uint8_t)(raw[8] + 1);
    assert_int_equal(parse_whole(raw, n + 1, host), MCP_SNI_EMALFORMED);
  }
}

static void server_name_list_overflowing_is_malformed(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  char host[MCP_HOSTNAME_MAX + 1];
  size_t n;

  ext.n = 0;
  ext_sni(&ext, "a.example", 9);
  n = make_hello(&ext, raw);
  /* ServerNameList length at 54 + 4. */
  raw[58] = 0xff, raw[59] = 0xff;
  assert_int_equal(parse_whole(raw, n, host), MCP_SNI_EMALFORMED);
  raw[58] = 0, raw[59] = 11; /* one short of the extension */
  assert_int_equal(parse_whole(raw, n, host), MCP_SNI_EMALFORMED);
  raw[58] = 0, raw[59] = 0; /* the list may not be empty */
  assert_int_equal(parse_whole(raw, n, host), MCP_SNI_EMALFORMED);
}

static void server_name_entry_overflowing_is_malformed(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  char host[MCP_HOSTNAME_MAX + 1];
  size_t n;

  ext.n = 0;
  ext_sni(&ext, "a.example", 9);
  n = make_hello(&ext, raw);
  /* host_name length at 54 + 4 + 2 + 1. */
  raw[61] = 0xff, raw[62] = 0xff;
  assert_int_equal(parse_whole(raw, n, host), MCP_SNI_EMALFORMED);
  raw[61] = 0, raw[62] = 10;
  assert_int_equal(parse_whole(raw, n, host), MCP_SNI_EMALFORMED);
}

static void bad_fixed_fields_are_malformed(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX], copy[RAW_MAX];
  char host[MCP_HOSTNAME_MAX + 1];
  size_t n;

  ext.n = 0;
  ext_sni(&ext, "a.example", 9);
  n = make_hello(&ext, raw);
  assert_int_equal(parse_whole(raw, n, host), 9);

  memcpy(copy, raw, n);
  copy[9] = 2; /* legacy_version 2.x is the backend's business */
  assert_int_equal(parse_whole(copy, n, host), 9);
  memcpy(copy, raw, n);
  copy[43] = 33; /* session_id longer than 32 */
  assert_int_equal(parse_whole(copy, n, host), MCP_SNI_EMALFORMED);
  memcpy(copy, raw, n);
  copy[45] = 3; /* odd cipher_suites length */
  assert_int_equal(parse_whole(copy, n, host), MCP_SNI_EMALFORMED);
  memcpy(copy, raw, n);
  copy[44] = 0xff, copy[45] = 0xfe; /* cipher_suites overrunning the message */
  assert_int_equal(parse_whole(copy, n, host), MCP_SNI_EMALFORMED);
  memcpy(copy, raw, n);
  copy[50] = 0; /* no compression method */
  assert_int_equal(parse_whole(copy, n, host), MCP_SNI_EMALFORMED);
  memcpy(copy, raw, n);
  copy[50] = 0xff; /* compression methods overrunning */
  assert_int_equal(parse_whole(copy, n, host), MCP_SNI_EMALFORMED);
}

static void fixed_field_limits_are_enforced(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  char host[MCP_HOSTNAME_MAX + 1];

  ext.n = 0;
  ext_sni(&ext, "a.example", 9);
  /* Well-formed apart from the one rule each line breaks. */
  assert_int_equal(parse_whole(raw, make_hello_ex(&ext, 32, 2, 1, raw), host), 9);
  assert_int_equal(parse_whole(raw, make_hello_ex(&ext, 0, 6, 3, raw), host), 9);
  assert_int_equal(parse_whole(raw, make_hello_ex(&ext, 33, 4, 1, raw), host), MCP_SNI_EMALFORMED);
  assert_int_equal(parse_whole(raw, make_hello_ex(&ext, 0, 5, 1, raw), host), MCP_SNI_EMALFORMED);
  assert_int_equal(parse_whole(raw, make_hello_ex(&ext, 0, 0, 1, raw), host), MCP_SNI_EMALFORMED);
  assert_int_equal(parse_whole(raw, make_hello_ex(&ext, 0, 4, 0, raw), host), MCP_SNI_EMALFORMED);
}

static void legacy_version_is_not_judged(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  static const unsigned versions[] = {0x0000, 0x0002, 0x0200, 0x0300, 0x0304,
                                      0x7f1c, 0xfefd, 0xfeff, 0xffff};
  size_t i, n;

  ext.n = 0;
  ext_sni(&ext, "lv.example", 10);
  for (i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
    n = make_hello(&ext, raw);
    raw[9] = (uint8_t)(versions[i] >> 8);
    raw[10] = (uint8_t)versions[i];
    check_accepted_everywhere(raw, n, "lv.example");
  }
  /* Together with a record version of 0x0300, as the reproduction sent it. */
  n = make_hello(&ext, raw);
  raw[1] = 3, raw[2] = 0, raw[9] = 0, raw[10] = 0;
  check_accepted_everywhere(raw, n, "lv.example");
}

static void empty_cipher_suites_is_malformed(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  char host[MCP_HOSTNAME_MAX + 1];
  size_t n;

  /* Cut the 4 cipher suite bytes out and fix up every length around them. */
  ext.n = 0;
  ext_sni(&ext, "a.example", 9);
  n = make_hello(&ext, raw);
  raw[44] = 0, raw[45] = 0;
  memmove(raw + 46, raw + 50, n - 50);
  n -= 4;
  raw[3] = (uint8_t)((n - 5) >> 8), raw[4] = (uint8_t)(n - 5);
  raw[7] = (uint8_t)((n - 9) >> 8), raw[8] = (uint8_t)(n - 9);
  assert_int_equal(parse_whole(raw, n, host), MCP_SNI_EMALFORMED);
}

/* ---- extension handling ------------------------------------------------------------------ */

static void hello_without_extensions_has_no_sni(void **state)
{
  static uint8_t raw[RAW_MAX];
  char host[MCP_HOSTNAME_MAX + 1] = "untouched";

  assert_int_equal(parse_whole(raw, make_hello(NULL, raw), host), MCP_SNI_ENOSNI);
  assert_string_equal(host, "untouched");
}

static void empty_extensions_block_has_no_sni(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  char host[MCP_HOSTNAME_MAX + 1];

  ext.n = 0;
  assert_int_equal(parse_whole(raw, make_hello(&ext, raw), host), MCP_SNI_ENOSNI);
}

static void duplicate_server_name_is_malformed(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  char host[MCP_HOSTNAME_MAX + 1];

  ext.n = 0;
  ext_sni(&ext, "a.example", 9);
  ext_raw(&ext, 10, 4, 0);
  ext_sni(&ext, "b.example", 9);
  assert_int_equal(parse_whole(raw, make_hello(&ext, raw), host), MCP_SNI_EMALFORMED);
}

static void grease_extensions_are_skipped(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  char host[MCP_HOSTNAME_MAX + 1];

  ext.n = 0;
  ext_raw(&ext, 0x0a0a, 0, 0);
  ext_raw(&ext, 0x1a1a, 1, 0);
  ext_sni(&ext, "grease.example", 14);
  ext_raw(&ext, 0xfafa, 7, 0xfa);
  assert_int_equal(parse_whole(raw, make_hello(&ext, raw), host), 14);
  assert_string_equal(host, "grease.example");
}

static void ech_extension_uses_outer_sni(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  char host[MCP_HOSTNAME_MAX + 1];

  ext.n = 0;
  ext_sni(&ext, "public.example", 14);
  ext_raw(&ext, 0xfe0d, 200, 0x5a); /* encrypted_client_hello with an opaque inner hello */
  assert_int_equal(parse_whole(raw, make_hello(&ext, raw), host), 14);
  assert_string_equal(host, "public.example");
}

/* Appends a server_name extension whose list holds the entries (type, name) given. */
static void ext_sni_list(struct wr *w, size_t count, const unsigned *types,
                         const char *const *names)
{
  size_t i, list = 0;

  for (i = 0; i < count; i++)
    list += 3 + strlen(names[i]);
  put16(w, 0);
  put16(w, (unsigned)list + 2);
  put16(w, (unsigned)list);
  for (i = 0; i < count; i++) {
    put8(w, types[i]);
    put16(w, (unsigned)strlen(names[i]));
    putmem(w, names[i], strlen(names[i]));
  }
}

static void server_name_with_two_entries_is_malformed(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  static const unsigned two_hosts[] = {0, 0}, other_first[] = {0x2a, 0}, other_last[] = {0, 7};
  static const char *const names[] = {"first.example", "other.example"};
  size_t n;

  /* A proxy taking the first and a backend taking the last would route one hello two ways. */
  ext.n = 0;
  ext_sni_list(&ext, 2, two_hosts, names);
  n = make_hello(&ext, raw);
  check_rejected_everywhere(raw, n, MCP_SNI_EMALFORMED);
  ext.n = 0;
  ext_sni_list(&ext, 2, other_first, names);
  check_rejected_everywhere(raw, make_hello(&ext, raw), MCP_SNI_EMALFORMED);
  ext.n = 0;
  ext_sni_list(&ext, 2, other_last, names);
  check_rejected_everywhere(raw, make_hello(&ext, raw), MCP_SNI_EMALFORMED);
  /* Exactly one host_name entry is what passes. */
  ext.n = 0;
  ext_sni_list(&ext, 1, two_hosts, names);
  check_accepted_everywhere(raw, make_hello(&ext, raw), "first.example");
}

static void server_name_entry_of_other_type_is_malformed(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  static const unsigned types[] = {7};
  static const char *const names[] = {"abc.example"};

  ext.n = 0;
  ext_sni_list(&ext, 1, types, names);
  check_rejected_everywhere(raw, make_hello(&ext, raw), MCP_SNI_EMALFORMED);
}

static void duplicate_extension_type_is_malformed(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  static const unsigned types[] = {10, 0x0a0a, 0xfe0d, 0xffff, 0x0001};
  size_t i;

  for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
    /* The twin right behind, or far apart with the SNI between them. */
    ext.n = 0;
    ext_raw(&ext, types[i], 2, 0x11);
    ext_raw(&ext, types[i], 0, 0);
    ext_sni(&ext, "d.example", 9);
    check_rejected_everywhere(raw, make_hello(&ext, raw), MCP_SNI_EMALFORMED);
    ext.n = 0;
    ext_raw(&ext, types[i], 4, 0x22);
    ext_sni(&ext, "d.example", 9);
    ext_raw(&ext, 43, 3, 0x33);
    ext_raw(&ext, types[i], 4, 0x22);
    check_rejected_everywhere(raw, make_hello(&ext, raw), MCP_SNI_EMALFORMED);
  }
  /* The same types once each, with distinct GREASE values, pass. */
  ext.n = 0;
  for (i = 0; i < sizeof(types) / sizeof(types[0]); i++)
    ext_raw(&ext, types[i], 1, 0x44);
  ext_raw(&ext, 0x1a1a, 0, 0);
  ext_sni(&ext, "d.example", 9);
  check_accepted_everywhere(raw, make_hello(&ext, raw), "d.example");
}

/*
 * The parser keeps the first 32 extension types in a list and moves to a bitmap past that
 * (lib/sni.c): a twin must be caught on either side of the switch, and across it.
 */
static void duplicate_found_past_the_short_list(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  /* Where the twin of the first extension goes: in the list, the switch itself, the map. */
  static const size_t twin_at[] = {5, 31, 32, 33, 70};
  size_t i, k;

  for (k = 0; k < sizeof(twin_at) / sizeof(twin_at[0]); k++) {
    ext.n = 0;
    for (i = 0; i < 80; i++) {
      unsigned type = i == twin_at[k] ? 100 : 100 + (unsigned)i;
      ext_raw(&ext, type, 1, 0x55);
    }
    ext_sni(&ext, "e.example", 9);
    check_rejected_everywhere(raw, make_hello(&ext, raw), MCP_SNI_EMALFORMED);
  }
  /* A twin of an extension seen after the switch (both in the map). */
  ext.n = 0;
  for (i = 0; i < 60; i++)
    ext_raw(&ext, 200 + (unsigned)i, 0, 0);
  ext_raw(&ext, 250, 0, 0);
  ext_sni(&ext, "e.example", 9);
  check_rejected_everywhere(raw, make_hello(&ext, raw), MCP_SNI_EMALFORMED);
  /* 31, 32, 33 and 80 distinct extensions pass. */
  static const size_t counts[] = {31, 32, 33, 80};
  for (k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
    ext.n = 0;
    for (i = 0; i < counts[k]; i++)
      ext_raw(&ext, 300 + (unsigned)i * 7, 1, 0x66);
    ext_sni(&ext, "e.example", 9);
    check_accepted_everywhere(raw, make_hello(&ext, raw), "e.example");
  }
}

static void non_handshake_record_inside_hello_is_refused(void **state)
{
  static uint8_t one[8192], multi[RAW_MAX], bad[RAW_MAX];
  static const uint8_t types[] = {20, 21, 23, 24, 0, 0xff};
  const size_t sizes[] = {60, 16384};
  size_t len = load_vector(v_curl.file, one, sizeof(one));
  size_t mlen = reframe(one, len, sizes, 2, multi, sizeof(multi)), i;

  for (i = 0; i < sizeof(types); i++) {
    /* A whole record of another type slipped in between the hello's two records. */
    memcpy(bad, multi, 65);
    memcpy(bad + 65, "\x00\x03\x03\x00\x01\x01", 6);
    bad[65] = types[i];
    memcpy(bad + 71, multi + 65, mlen - 65);
    check_rejected_everywhere(bad, mlen + 6, MCP_SNI_EMALFORMED);
    /* As the very first record it is not TLS to us at all. */
    memcpy(bad, multi, mlen);
    bad[0] = types[i];
    check_rejected_everywhere(bad, mlen, MCP_SNI_ENOTTLS);
  }
}

/* ---- hostnames inside SNI --------------------------------------------------------------- */

static void uppercase_sni_is_lowercased(void **state)
{
  char host[MCP_HOSTNAME_MAX + 1];

  assert_int_equal(parse_sni_name("App.EXAMPLE.com", 15, host), 15);
  assert_string_equal(host, "app.example.com");
}

static void sni_trailing_dot_is_dropped(void **state)
{
  char host[MCP_HOSTNAME_MAX + 1];

  assert_int_equal(parse_sni_name("app.example.com.", 16, host), 15);
  assert_string_equal(host, "app.example.com");
}

static void sni_label_with_edge_hyphen_is_bad_name(void **state)
{
  static struct wr ext;
  static uint8_t raw[RAW_MAX];
  static const char *const bad[] = {"-a.example.com", "a-.example.com", "a.-example.com",
                                    "a.example-.com", "a.example.com-", "-",
                                    "a.-.b"};
  size_t i;

  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    ext.n = 0;
    ext_sni(&ext, bad[i], strlen(bad[i]));
    check_rejected_everywhere(raw, make_hello(&ext, raw), MCP_SNI_EBADNAME);
  }
  ext.n = 0;
  ext_sni(&ext, "xn--bcher-kva.a-b.example", 25);
  check_accepted_everywhere(raw, make_hello(&ext, raw), "xn--bcher-kva.a-b.example");
}

static void bad_sni_hostnames_are_rejected(void **state)
{
  char host[MCP_HOSTNAME_MAX + 1] = "untouched";
  char long_label[64], long_name[254];

  memset(long_label, 'a', sizeof(long_label));
  memset(long_name, 'a', sizeof(long_name));
  for (size_t i = 50; i < sizeof(long_name); i += 50)
    long_name[i] = '.';
  assert_int_equal(parse_sni_name("a_b.example", 11, host), MCP_SNI_EBADNAME);
  assert_int_equal(parse_sni_name("a..example", 10, host), MCP_SNI_EBADNAME);
  assert_int_equal(parse_sni_name(".example", 8, host), MCP_SNI_EBADNAME);
  assert_int_equal(parse_sni_name("", 0, host), MCP_SNI_EBADNAME);
  assert_int_equal(parse_sni_name(".", 1, host), MCP_SNI_EBADNAME);
  assert_int_equal(parse_sni_name("a.example..", 11, host), MCP_SNI_EBADNAME);
  assert_int_equal(parse_sni_name(long_label, 64, host), MCP_SNI_EBADNAME);
  assert_int_equal(parse_sni_name(long_name, 254, host), MCP_SNI_EBADNAME);
  assert_int_equal(parse_sni_name("evil.com\0.example", 17, host), MCP_SNI_EBADNAME);
  assert_int_equal(parse_sni_name("caf\xc3\xa9.example", 13, host), MCP_SNI_EBADNAME);
  assert_int_equal(parse_sni_name("127.0.0.1:443", 13, host), MCP_SNI_EBADNAME);
  assert_string_equal(host, "untouched");
}

static void longest_sni_hostname_is_accepted(void **state)
{
  char host[MCP_HOSTNAME_MAX + 1];
  char name[254];

  memset(name, 'a', sizeof(name));
  name[63] = name[127] = name[191] = '.';
  assert_int_equal(parse_sni_name(name, 253, host), 253);
  assert_memory_equal(host, name, 253);
  assert_int_equal(host[253], '\0');
  name[253] = '.'; /* 253 + a trailing dot is still 253 */
  assert_int_equal(parse_sni_name(name, 254, host), 253);
}

/* ---- hostile input ---------------------------------------------------------------------- */

static uint64_t rng_state;

static uint32_t rng(void)
{
  /* xorshift64*: deterministic, so a failure reproduces. */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

/*
 * Feeds buf[0..len) in random chunks with one state until a final result, and checks it is
 * what a single whole-buffer call says about the shortest prefix that gave it.
 */
static void check_random_chunking(const uint8_t *buf, size_t len)
{
  char host[MCP_HOSTNAME_MAX + 1], host2[MCP_HOSTNAME_MAX + 1];
  size_t have = 0;
  mcp_sni_t st;
  int rc = MCP_SNI_NEED_MORE, whole;

  mcp_sni_init(&st);
  while (have < len && rc == MCP_SNI_NEED_MORE) {
    size_t step = 1 + rng() % (rng() % 4 == 0 ? 2000 : 16);

    have = have + step > len ? len : have + step;
    rc = mcp_sni_parse(&st, buf, have, host);
  }
  whole = parse_whole(buf, have, host2);
  assert_int_equal(rc, whole);
  if (rc > 0)
    assert_string_equal(host, host2);
  assert_int_equal(parse_whole(buf, len, host2), rc);
}

static void random_garbage_never_crashes(void **state)
{
  static uint8_t buf[64 * 1024];
  size_t i, round;

  rng_state = 0x6d63702d736e6921ULL;
  for (round = 0; round < 64; round++) {
    for (i = 0; i < sizeof(buf); i++)
      buf[i] = (uint8_t)rng();
    /* Half the rounds start like a TLS handshake record so the garbage gets past byte one. */
    if (round % 2 == 1) {
      buf[0] = 22, buf[1] = 3, buf[2] = rng() % 5;
      buf[3] &= 0x3f;
      buf[5] = 1;
      buf[6] = 0;
    }
    for (i = 0; i < 8; i++)
      check_random_chunking(buf, sizeof(buf));
  }
}

static void mutated_vectors_never_crash(void **state)
{
  static uint8_t orig[8192], multi[RAW_MAX], buf[RAW_MAX];
  size_t v, round, i;

  rng_state = 0x0123456789abcdefULL;
  for (v = 0; v < N_VECTORS; v++) {
    size_t len = load_vector(all_vectors[v]->file, orig, sizeof(orig));
    const size_t sizes[] = {1 + v * 37, 3, 100};
    size_t mlen = reframe(orig, len, sizes, 3, multi, sizeof(multi));

    for (round = 0; round < 2000; round++) {
      const uint8_t *src = round % 2 ? multi : orig;
      size_t n = round % 2 ? mlen : len;
      size_t flips = 1 + rng() % 4;

      memcpy(buf, src, n);
      for (i = 0; i < flips; i++) {
        size_t at = rng() % n;
        /* Mostly small nudges to length bytes, sometimes arbitrary values. */
        buf[at] = rng() % 2 ? (uint8_t)(buf[at] + (rng() % 5) - 2) : (uint8_t)rng();
      }
      /* Sometimes cut the tail, so truncated structures are hit too. */
      if (rng() % 4 == 0)
        n -= rng() % n;
      check_random_chunking(buf, n);
    }
  }
}

static void strerror_describes_every_result(void **state)
{
  static const int codes[] = {MCP_SNI_NEED_MORE,  MCP_SNI_ENOTTLS, MCP_SNI_ENOTHELLO,
                              MCP_SNI_EMALFORMED, MCP_SNI_ENOSNI,  MCP_SNI_EBADNAME,
                              MCP_SNI_ETOOBIG};
  const char *unknown = mcp_sni_strerror(-1);
  size_t i, j;

  for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
    assert_non_null(mcp_sni_strerror(codes[i]));
    assert_string_not_equal(mcp_sni_strerror(codes[i]), unknown);
    for (j = 0; j < i; j++)
      assert_string_not_equal(mcp_sni_strerror(codes[i]), mcp_sni_strerror(codes[j]));
  }
  assert_string_not_equal(mcp_sni_strerror(15), unknown);
}

/* One cmocka test entry running vector_<fn> on vector v, named after both. */
#define VECTOR_TEST(fn, v, name)                                                                   \
  {                                                                                                \
    "vector_" name "_" #fn, vector_##fn, NULL, NULL, (void *)&(v)                                  \
  }
#define VECTOR_TESTS(v, name)                                                                      \
  VECTOR_TEST(whole_gives_capture_hostname, v, name),                                              \
      VECTOR_TEST(byte_by_byte_gives_capture_hostname, v, name),                                   \
      VECTOR_TEST(every_split_gives_capture_hostname, v, name),                                    \
      VECTOR_TEST(every_truncation_stays_need_more, v, name),                                      \
      VECTOR_TEST(with_trailing_records_still_parses, v, name)

int main(void)
{
  const struct CMUnitTest tests[] = {
      VECTOR_TESTS(v_openssl12, "openssl_tls12"),
      VECTOR_TESTS(v_openssl13, "openssl_tls13"),
      VECTOR_TESTS(v_nosni, "openssl_nosni"),
      VECTOR_TESTS(v_curl, "curl"),
      VECTOR_TESTS(v_python, "python_ssl"),
      VECTOR_TESTS(v_wget, "wget_gnutls"),
      VECTOR_TESTS(v_fragmented, "curl_fragmented"),
      cmocka_unit_test(multi_record_hello_in_three_records_reassembles),
      cmocka_unit_test(multi_record_handshake_header_split_reassembles),
      cmocka_unit_test(multi_record_one_byte_records_reassemble),
      cmocka_unit_test(multi_record_split_inside_sni_reassembles),
      cmocka_unit_test(state_counts_complete_records_only),
      cmocka_unit_test(parse_again_after_result_gives_same_result),
      cmocka_unit_test(shrinking_buffer_is_rejected),
      cmocka_unit_test(max_size_hello_in_one_record_accepted),
      cmocka_unit_test(max_size_hello_in_two_records_accepted),
      cmocka_unit_test(tiny_records_overhead_is_capped),
      cmocka_unit_test(http_request_is_not_tls),
      cmocka_unit_test(first_byte_alone_proves_not_tls),
      cmocka_unit_test(sslv2_hello_is_not_tls),
      cmocka_unit_test(bad_record_version_is_not_tls),
      cmocka_unit_test(server_hello_is_not_a_client_hello),
      cmocka_unit_test(non_handshake_record_after_first_is_malformed),
      cmocka_unit_test(zero_length_record_is_malformed),
      cmocka_unit_test(record_longer_than_16384_is_malformed),
      cmocka_unit_test(record_version_minor_byte_is_not_judged),
      cmocka_unit_test(bytes_after_hello_in_its_record_are_malformed),
      cmocka_unit_test(second_handshake_message_in_hello_record_is_malformed),
      cmocka_unit_test(bytes_after_hello_in_later_record_are_malformed),
      cmocka_unit_test(whole_records_after_hello_are_not_looked_at),
      cmocka_unit_test(non_handshake_record_inside_hello_is_refused),
      cmocka_unit_test(handshake_length_over_16k_is_too_big),
      cmocka_unit_test(handshake_length_too_small_is_malformed),
      cmocka_unit_test(handshake_length_longer_than_records_waits),
      cmocka_unit_test(extensions_length_overflowing_is_malformed),
      cmocka_unit_test(extension_length_overflowing_is_malformed),
      cmocka_unit_test(truncated_extension_header_is_malformed),
      cmocka_unit_test(server_name_list_overflowing_is_malformed),
      cmocka_unit_test(server_name_entry_overflowing_is_malformed),
      cmocka_unit_test(bad_fixed_fields_are_malformed),
      cmocka_unit_test(fixed_field_limits_are_enforced),
      cmocka_unit_test(legacy_version_is_not_judged),
      cmocka_unit_test(empty_cipher_suites_is_malformed),
      cmocka_unit_test(hello_without_extensions_has_no_sni),
      cmocka_unit_test(empty_extensions_block_has_no_sni),
      cmocka_unit_test(duplicate_server_name_is_malformed),
      cmocka_unit_test(grease_extensions_are_skipped),
      cmocka_unit_test(ech_extension_uses_outer_sni),
      cmocka_unit_test(server_name_with_two_entries_is_malformed),
      cmocka_unit_test(server_name_entry_of_other_type_is_malformed),
      cmocka_unit_test(duplicate_extension_type_is_malformed),
      cmocka_unit_test(duplicate_found_past_the_short_list),
      cmocka_unit_test(sni_label_with_edge_hyphen_is_bad_name),
      cmocka_unit_test(uppercase_sni_is_lowercased),
      cmocka_unit_test(sni_trailing_dot_is_dropped),
      cmocka_unit_test(bad_sni_hostnames_are_rejected),
      cmocka_unit_test(longest_sni_hostname_is_accepted),
      cmocka_unit_test(random_garbage_never_crashes),
      cmocka_unit_test(mutated_vectors_never_crash),
      cmocka_unit_test(strerror_describes_every_result),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
