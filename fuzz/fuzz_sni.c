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
 *     and framed as one record or as many small records (sizes derived from the data), gives
 *     the same result either way as long as the small records stay within the input cap;
 *   - mcp_hostname_normalize on the raw input is idempotent and only emits [a-z0-9.-].
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcproxy/error.h"
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
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  fuzz_parse(data, size);
  fuzz_framing(data, size);
  fuzz_normalize(data, size);
  return 0;
}
