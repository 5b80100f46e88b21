/*
 * libFuzzer driver for the ClientHello parser (lib/sni.c).
 *
 * Besides "no crash, no out-of-bounds read" (ASan, UBSan) it checks properties, and aborts
 * when one fails:
 *   - chunking does not matter: the input fed in two or three pieces with one persistent
 *     state gives the same result as one whole-buffer call, and a final result reached on a
 *     prefix is the result for the whole input too;
 *   - a hostname returned is what mcp_hostname_normalize makes of itself (valid, lowercase,
 *     NUL-terminated at the returned length) and host is untouched on any other result;
 *   - framing does not matter: the input minus its first 5 bytes, taken as a handshake message
 *     (cut at its declared length) and framed as one record or as many small records (sizes derived
 * from the data), gives the same result either way as long as the small records stay within the
 * input cap;
 *   - strictness: whenever the parser says done (a hostname, or ENOSNI), an independent walk
 *     of the input below finds only handshake records up to the hello, the hello ending
 *     exactly at the end of a record, every length filling its container, no extension type
 *     twice, and either no server_name (ENOSNI) or one with exactly one host_name entry whose
 *     name normalises to the hostname returned (labels never starting or ending with '-');
 *   - mcp_hostname_normalize on the raw input is idempotent, only emits [a-z0-9.-] and never
 *     a label with a hyphen at either end; mcp_hostname_normalize_pattern agrees with it on
 *     plain names and only accepts '*' as a whole first label.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcproxy/error.h"
#include "mcproxy/hostname.h"
#include "mcproxy/sni.h"

#define SENTINEL 0x5a

static void check(int ok, const char *what)
{
  if (!ok) {
    fprintf(stderr, "fuzz_sni: property failed: %s\n", what);
    abort();
  }
}

/* Checks a parse result against the contract; host was filled with SENTINEL before. */
static void check_result(int rc, const char *host)
{
  char again[MCP_HOSTNAME_MAX + 1];

  if (rc <= 0) {
    check((unsigned char)host[0] == SENTINEL, "host written without a positive result");
    check(rc == MCP_SNI_NEED_MORE || (rc <= MCP_SNI_ENOTTLS && rc >= MCP_SNI_ETOOBIG),
          "unknown result code");
    check(mcp_sni_strerror(rc) != NULL, "no description");
    return;
  }
  check(rc <= MCP_HOSTNAME_MAX, "hostname too long");
  check(mcp_sni_strerror(rc) != NULL, "no description");
  check(strlen(host) == (size_t)rc, "hostname length differs from result");
  check(mcp_hostname_normalize(host, (size_t)rc, again) == rc, "hostname not valid");
  check(memcmp(host, again, (size_t)rc + 1) == 0, "hostname not normalised");
}

/* No label of the normalised name name[0..n) starts or ends with a hyphen. */
static int edge_hyphen_free(const char *name, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (name[i] == '-' && (i == 0 || i == n - 1 || name[i - 1] == '.' || name[i + 1] == '.'))
      return 0;
  return 1;
}

static uint32_t be(const uint8_t *p, size_t width)
{
  uint32_t v = 0;

  while (width-- > 0)
    v = v << 8 | *p++;
  return v;
}

/*
 * Takes a vector with a width-byte length at *pos out of msg[0..end), asserting that it fits
 * (the parser said done, so it must). Returns its start; *len gets its length.
 */
static size_t must_vector(const uint8_t *msg, size_t end, size_t *pos, size_t width, size_t *len,
                          const char *what)
{
  size_t start;

  check(end - *pos >= width, what);
  *len = be(msg + *pos, width);
  start = *pos + width;
  check(end - start >= *len, what);
  *pos = start + *len;
  return start;
}

/*
 * The parser said done (rc > 0 with host, or ENOSNI) on data[0..size): re-walks the input on
 * its own terms and aborts if the hello breaks any rule a done hello must keep.
 */
static void check_done_is_strict(const uint8_t *data, size_t size, int rc, const char *host)
{
  static uint8_t msg[MCP_SNI_MAX_HANDSHAKE];
  static uint8_t seen[65536];
  size_t at = 0, have = 0, total = 0, pos, len, start, ext_end, name_at = 0, name_len = 0;
  int has_sni = 0;
  char again[MCP_HOSTNAME_MAX + 1];

  /* Records: handshake only, until the one the hello ends in, which it must end exactly. */
  for (;;) {
    size_t n;

    check(size - at >= 5, "done: record header missing");
    check(data[at] == 22 && data[at + 1] == 3, "done: a record that is not handshake");
    n = be(data + at + 3, 2);
    check(n >= 1 && n <= 16384 && size - at - 5 >= n, "done: bad record length");
    check(have + n <= sizeof(msg), "done: over the handshake cap");
    memcpy(msg + have, data + at + 5, n);
    have += n;
    at += 5 + n;
    if (have >= 4) {
      check(msg[0] == 1, "done: not a ClientHello");
      total = 4 + be(msg + 1, 3);
      check(have <= total, "done: bytes after the hello in its last record");
      if (have == total)
        break;
    }
  }

  /* The hello body: fixed fields, then an optional extensions block filling it exactly. */
  pos = 4 + 2 + 32;
  check(total >= pos, "done: hello too short");
  must_vector(msg, total, &pos, 1, &len, "done: session id overruns");
  check(len <= 32, "done: session id over 32");
  must_vector(msg, total, &pos, 2, &len, "done: cipher suites overrun");
  check(len >= 2 && len % 2 == 0, "done: bad cipher suites length");
  must_vector(msg, total, &pos, 1, &len, "done: compression overruns");
  check(len >= 1, "done: no compression method");
  if (pos == total) {
    check(rc == MCP_SNI_ENOSNI, "done: a hostname from a hello without extensions");
    return;
  }
  start = must_vector(msg, total, &pos, 2, &len, "done: extensions overrun");
  check(pos == total, "done: bytes after the extensions");
  memset(seen, 0, sizeof(seen));
  ext_end = pos;
  pos = start;
  while (pos < ext_end) {
    uint32_t type;
    size_t body, blen, p2, lstart, llen;

    check(ext_end - pos >= 2, "done: truncated extension header");
    type = be(msg + pos, 2);
    pos += 2;
    check(!seen[type], "done: the same extension type twice");
    seen[type] = 1;
    body = must_vector(msg, ext_end, &pos, 2, &blen, "done: extension overruns");
    if (type != 0)
      continue;
    has_sni = 1;
    p2 = body;
    lstart = must_vector(msg, body + blen, &p2, 2, &llen, "done: server_name list overruns");
    check(p2 == body + blen && llen >= 1, "done: server_name list does not fill it");
    p2 = lstart;
    check(msg[p2] == 0, "done: server_name entry is not a host_name");
    p2++;
    name_at = must_vector(msg, lstart + llen, &p2, 2, &name_len, "done: host_name overruns");
    check(p2 == lstart + llen, "done: more than one server_name entry");
  }
  if (!has_sni) {
    check(rc == MCP_SNI_ENOSNI, "done: a hostname without a server_name extension");
    return;
  }
  check(rc > 0, "done: ENOSNI although a server_name is present");
  check(mcp_hostname_normalize((const char *)msg + name_at, name_len, again) == rc,
        "done: host_name does not normalise to the result");
  check(strcmp(again, host) == 0, "done: hostname differs from the host_name");
  check(edge_hyphen_free(host, (size_t)rc), "done: a label with a hyphen at an edge");
}

/* Feeds data in pieces ending at cuts[0] < cuts[1] < ... (the last one is size). */
static int parse_chunked(const uint8_t *data, const size_t *cuts, size_t ncuts, char *host,
                         size_t *final_at)
{
  mcp_sni_t st;
  int rc = MCP_SNI_NEED_MORE;
  size_t i;

  mcp_sni_init(&st);
  for (i = 0; i < ncuts && rc == MCP_SNI_NEED_MORE; i++) {
    rc = mcp_sni_parse(&st, data, cuts[i], host);
    *final_at = cuts[i];
  }
  return rc;
}

static void fuzz_parse(const uint8_t *data, size_t size)
{
  char whole_host[MCP_HOSTNAME_MAX + 1], host[MCP_HOSTNAME_MAX + 1];
  size_t cuts[3], at;
  uint32_t h = (uint32_t)size * 2654435761u;
  mcp_sni_t st;
  int whole, rc;

  memset(whole_host, SENTINEL, sizeof(whole_host));
  mcp_sni_init(&st);
  whole = mcp_sni_parse(&st, data, size, whole_host);
  check_result(whole, whole_host);
  if (whole > 0 || whole == MCP_SNI_ENOSNI)
    check_done_is_strict(data, size, whole, whole_host);

  /* Split points derived from the data, so the fuzzer can steer them. */
  if (size > 0)
    h ^= (uint32_t)data[size / 2] << 8 | data[size - 1];
  cuts[0] = size ? h % (size + 1) : 0;
  h = h * 2654435761u + 1;
  cuts[1] = cuts[0] + (size - cuts[0] ? h % (size - cuts[0] + 1) : 0);
  cuts[2] = size;

  memset(host, SENTINEL, sizeof(host));
  rc = parse_chunked(data, cuts + 1, 2, host, &at);
  check_result(rc, host);
  check(rc == whole, "two-piece parse differs from whole-buffer parse");
  if (rc > 0)
    check(strcmp(host, whole_host) == 0, "two-piece hostname differs");

  memset(host, SENTINEL, sizeof(host));
  rc = parse_chunked(data, cuts, 3, host, &at);
  check(rc == whole, "three-piece parse differs from whole-buffer parse");
  if (rc > 0)
    check(strcmp(host, whole_host) == 0, "three-piece hostname differs");

  /* The prefix that gave the final result must give it on its own too. */
  if (rc != MCP_SNI_NEED_MORE && at < size) {
    memset(host, SENTINEL, sizeof(host));
    mcp_sni_init(&st);
    check(mcp_sni_parse(&st, data, at, host) == rc, "prefix result differs");
  }

  /* Calling again after a result repeats it. */
  memset(host, SENTINEL, sizeof(host));
  mcp_sni_init(&st);
  rc = mcp_sni_parse(&st, data, size, host);
  check(mcp_sni_parse(&st, data, size, host) == rc, "second call differs");
}

/* Appends a handshake record carrying msg[0..n) at out + *pos. */
static void put_record(uint8_t *out, size_t *pos, const uint8_t *msg, size_t n)
{
  out[*pos] = 22;
  out[*pos + 1] = 3;
  out[*pos + 2] = 1;
  out[*pos + 3] = (uint8_t)(n >> 8);
  out[*pos + 4] = (uint8_t)n;
  memcpy(out + *pos + 5, msg, n);
  *pos += 5 + n;
}

static void fuzz_framing(const uint8_t *data, size_t size)
{
  static uint8_t one[5 + MCP_SNI_MAX_HANDSHAKE], many[6 * MCP_SNI_MAX_HANDSHAKE];
  char host_one[MCP_HOSTNAME_MAX + 1], host_many[MCP_HOSTNAME_MAX + 1];
  const uint8_t *msg = data + 5;
  size_t n = size > 5 ? size - 5 : 0, off = 0, pos1 = 0, pos = 0;
  uint32_t h, max;
  mcp_sni_t st;
  int rc_one, rc_many;

  /*
   * Only the hello itself is re-framed: bytes after it would sit inside its record in one
   * framing (refused) and in records of their own in another (not looked at).
   */
  if (n >= 4 && n > 4 + be(msg + 1, 3))
    n = 4 + be(msg + 1, 3);
  if (n == 0 || n > MCP_SNI_MAX_HANDSHAKE)
    return;
  /* The bytes that would be the record header pick the record sizes: 1..max payload bytes. */
  h = (uint32_t)data[1] << 24 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 8 | data[4];
  max = 1 + data[0] % 64;
  while (off < n) {
    size_t len;

    h = h * 1103515245u + 12345u;
    len = 1 + (h >> 16) % max;
    if (len > n - off)
      len = n - off;
    put_record(many, &pos, msg + off, len);
    off += len;
  }
  put_record(one, &pos1, msg, n);

  memset(host_one, SENTINEL, sizeof(host_one));
  memset(host_many, SENTINEL, sizeof(host_many));
  mcp_sni_init(&st);
  rc_one = mcp_sni_parse(&st, one, pos1, host_one);
  mcp_sni_init(&st);
  rc_many = mcp_sni_parse(&st, many, pos, host_many);
  check_result(rc_one, host_one);
  check_result(rc_many, host_many);
  if (pos > MCP_SNI_MAX_INPUT) {
    check(rc_many == rc_one || rc_many == MCP_SNI_ETOOBIG, "framing: unexpected result");
    return;
  }
  check(rc_one == rc_many, "framing: one record and many records differ");
  if (rc_many > 0 || rc_many == MCP_SNI_ENOSNI)
    check_done_is_strict(many, pos, rc_many, host_many);
  if (rc_one > 0)
    check(strcmp(host_one, host_many) == 0, "framing: hostnames differ");
}

static void fuzz_normalize(const uint8_t *data, size_t size)
{
  char out[MCP_HOSTNAME_MAX + 1], again[MCP_HOSTNAME_MAX + 1];
  int rc, i;

  if (size > MCP_HOSTNAME_MAX + 8)
    size = MCP_HOSTNAME_MAX + 8;
  rc = mcp_hostname_normalize((const char *)data, size, out);
  if (rc < 0) {
    check(rc == MCP_EINVAL, "normalize: unexpected error code");
    return;
  }
  check(rc > 0 && rc <= MCP_HOSTNAME_MAX && out[rc] == '\0', "normalize: bad length");
  for (i = 0; i < rc; i++)
    check((out[i] >= 'a' && out[i] <= 'z') || (out[i] >= '0' && out[i] <= '9') || out[i] == '-' ||
              out[i] == '.',
          "normalize: bad output byte");
  check(mcp_hostname_normalize(out, (size_t)rc, again) == rc && strcmp(out, again) == 0,
        "normalize: not idempotent");
  check(edge_hyphen_free(out, (size_t)rc), "normalize: a label with a hyphen at an edge");
}

static void fuzz_pattern(const uint8_t *data, size_t size)
{
  char out[MCP_HOSTNAME_MAX + 1], plain[MCP_HOSTNAME_MAX + 1];
  int rc, rc_plain;

  if (size > MCP_HOSTNAME_MAX + 8)
    size = MCP_HOSTNAME_MAX + 8;
  rc = mcp_hostname_normalize_pattern((const char *)data, size, out);
  if (size == 0 || data[0] != '*') {
    /* Not a pattern: exactly what mcp_hostname_normalize says. */
    rc_plain = mcp_hostname_normalize((const char *)data, size, plain);
    check(rc == rc_plain, "pattern: differs from normalize on a plain name");
    if (rc > 0)
      check(strcmp(out, plain) == 0, "pattern: output differs from normalize");
    return;
  }
  if (rc < 0) {
    check(rc == MCP_EINVAL, "pattern: unexpected error code");
    return;
  }
  check(rc >= 3 && rc <= MCP_HOSTNAME_MAX && out[rc] == '\0', "pattern: bad length");
  check(out[0] == '*' && out[1] == '.', "pattern: not a whole first label");
  check(memchr(out + 1, '*', (size_t)rc - 1) == NULL, "pattern: a second star");
  check(mcp_hostname_normalize(out + 2, (size_t)rc - 2, plain) == rc - 2 &&
            strcmp(out + 2, plain) == 0,
        "pattern: the suffix is not a normalised hostname");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  fuzz_parse(data, size);
  fuzz_framing(data, size);
  fuzz_normalize(data, size);
  fuzz_pattern(data, size);
  return 0;
}
