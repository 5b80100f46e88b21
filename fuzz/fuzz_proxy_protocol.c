/*
 * libFuzzer driver for the PROXY protocol parser and writers (lib/proxy_protocol.c).
 *
 * Besides "no crash, no out-of-bounds read" (ASan, UBSan) it checks properties, and aborts
 * when one fails:
 *   - a result is a known code; "done" means 0 < consumed <= len, within the version's maximum,
 *     and a result that makes sense (version 1 or 2; addresses of one family when used, zeroed
 *     when not);
 *   - exactly the consumed prefix, parsed alone from a buffer of that size, gives the same
 *     length and the same result, and every shorter prefix is "need more"; out is written
 *     only when a header is done;
 *   - feeding the input in growing prefixes (all of them for short inputs, cut points taken
 *     from the data for long ones) gives, at the first answer, the one-shot answer, and every
 *     later prefix repeats it;
 *   - parsing with out = NULL answers the same;
 *   - what was parsed, written again by both writers, parses back to the same addresses (an
 *     IPv4-mapped pair comes back as IPv4, which is what the writers promise);
 *   - the writers, given addresses made from the input, produce headers that parse back.
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcproxy/error.h"
#include "mcproxy/proxy_protocol.h"

static void check(int ok, const char *what)
{
  if (!ok) {
    fprintf(stderr, "fuzz_proxy_protocol: property failed: %s\n", what);
    abort();
  }
}

static int parse_copy(const uint8_t *data, size_t n, mcp_proxy_protocol_t *out)
{
  uint8_t *copy = malloc(n ? n : 1);
  int rc;

  memcpy(copy, data, n);
  rc = mcp_proxy_protocol_parse(copy, n, out);
  free(copy);
  return rc;
}

static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static int is_v4(const struct sockaddr_storage *sa)
{
  return sa->ss_family == AF_INET ||
         memcmp(((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr, mapped_prefix, 12) == 0;
}

/* sa as AF_INET (it is AF_INET or IPv4-mapped) or as AF_INET6 (IPv4 becomes mapped). */
static struct sockaddr_storage as_family(const struct sockaddr_storage *sa, int family)
{
  struct sockaddr_storage out;
  struct sockaddr_in *sin = (struct sockaddr_in *)&out;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out;
  const struct sockaddr_in *from4 = (const struct sockaddr_in *)sa;
  const struct sockaddr_in6 *from6 = (const struct sockaddr_in6 *)sa;

  if (sa->ss_family == family)
    return *sa;
  memset(&out, 0, sizeof(out));
  if (family == AF_INET) {
    sin->sin_family = AF_INET;
    memcpy(&sin->sin_addr, from6->sin6_addr.s6_addr + 12, 4);
    sin->sin_port = from6->sin6_port;
  } else {
    sin6->sin6_family = AF_INET6;
    memcpy(sin6->sin6_addr.s6_addr, mapped_prefix, 12);
    memcpy(sin6->sin6_addr.s6_addr + 12, &from4->sin_addr, 4);
    sin6->sin6_port = from4->sin_port;
  }
  return out;
}

static size_t sa_len(const struct sockaddr_storage *sa)
{
  return sa->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
}

static void check_result(int rc, size_t len, const mcp_proxy_protocol_t *res)
{
  static const mcp_proxy_protocol_t zero;

  if (rc <= 0) {
    check(rc == MCP_PROXY_PROTOCOL_NEED_MORE || rc == MCP_EPROXY_NOTPROXY ||
              rc == MCP_EPROXY_MALFORMED || rc == MCP_EPROXY_FAMILY || rc == MCP_EPROXY_TOOBIG,
          "unknown result code");
    return;
  }
  check((size_t)rc <= len, "consumed more than the input");
  check(res->version == 1 || res->version == 2, "bad version");
  check(res->version == 2 || rc <= MCP_PROXY_PROTOCOL_V1_MAX, "v1 header over 107 bytes");
  check(rc <= MCP_PROXY_PROTOCOL_V2_MAX, "v2 header over the cap");
  if (res->use_addresses) {
    check(res->src.ss_family == AF_INET || res->src.ss_family == AF_INET6, "bad family");
    check(res->src.ss_family == res->dst.ss_family, "families differ");
  } else {
    check(res->use_addresses == 0, "use_addresses not 0/1");
    check(memcmp(&res->src, &zero.src, sizeof(zero.src)) == 0 &&
              memcmp(&res->dst, &zero.dst, sizeof(zero.dst)) == 0,
          "unused addresses not zeroed");
  }
}

/*
 * Writes src -> dst with both writers and checks they parse back as promised: both IPv4 (or
 * mapped) -> AF_INET, otherwise both AF_INET6 with IPv4 written mapped.
 */
static void check_rewrite(const struct sockaddr_storage *src, const struct sockaddr_storage *dst)
{
  int family = is_v4(src) && is_v4(dst) ? AF_INET : AF_INET6;
  struct sockaddr_storage want_src = as_family(src, family), want_dst = as_family(dst, family);
  uint8_t out[MCP_PROXY_PROTOCOL_WRITE_MAX];
  mcp_proxy_protocol_t back;
  int v, n;

  for (v = 1; v <= 2; v++) {
    n = v == 1 ? mcp_proxy_protocol_write_v1(out, sizeof(out), (const struct sockaddr *)src,
                                             (const struct sockaddr *)dst)
               : mcp_proxy_protocol_write_v2(out, sizeof(out), (const struct sockaddr *)src,
                                             (const struct sockaddr *)dst);
    check(n > 0 && n <= MCP_PROXY_PROTOCOL_WRITE_MAX, "writer length");
    check(parse_copy(out, (size_t)n, &back) == n, "written header does not parse");
    check(back.version == v && back.use_addresses == 1, "written header: wrong kind");
    check(back.src.ss_family == family && back.dst.ss_family == family, "rewrite: family");
    check(memcmp(&back.src, &want_src, sa_len(&want_src)) == 0, "rewrite: source differs");
    check(memcmp(&back.dst, &want_dst, sa_len(&want_dst)) == 0, "rewrite: destination differs");
  }
}

static void fuzz_parse(const uint8_t *data, size_t size)
{
  mcp_proxy_protocol_t whole, res;
  size_t i, step;
  int rc, seen = 0;

  memset(&whole, 0x5a, sizeof(whole));
  rc = mcp_proxy_protocol_parse(data, size, &whole);
  check_result(rc, size, &whole);
  check(rc > 0 || ((const uint8_t *)&whole)[0] == 0x5a, "out written without a header");
  check(mcp_proxy_protocol_parse(data, size, NULL) == rc, "out = NULL answers differently");

  if (rc > 0) {
    memset(&res, 0x5a, sizeof(res));
    check(parse_copy(data, (size_t)rc, &res) == rc, "consumed prefix alone differs");
    check(memcmp(&res, &whole, sizeof(res)) == 0, "consumed prefix alone: other result");
  }

  /* Growing prefixes: every one for short inputs, about 64 cut points for long ones. */
  step = size <= 512 ? 1 : size / 64;
  for (i = 0;; i = i + step > size ? size : i + step) {
    int r = parse_copy(data, i, &res);

    if (!seen && r == MCP_PROXY_PROTOCOL_NEED_MORE) {
      check(rc <= 0 || i < (size_t)rc, "need more after the whole header");
    } else {
      check(r == rc, "incremental answer differs from one-shot");
      check(seen || step > 1 || rc <= 0 || i == (size_t)rc, "answer before the header ended");
      if (rc > 0)
        check(memcmp(&res, &whole, sizeof(res)) == 0, "incremental result differs");
      seen = 1;
    }
    if (i == size)
      break;
  }
  check(seen || rc == MCP_PROXY_PROTOCOL_NEED_MORE, "one-shot answered, prefixes never did");

  if (rc > 0 && whole.use_addresses)
    check_rewrite(&whole.src, &whole.dst);
}

/* Addresses made from the input: both families, mapped or not, any bytes and ports. */
static void fuzz_writers(const uint8_t *data, size_t size)
{
  struct sockaddr_storage sa[2];
  size_t pos = 0;
  int k;

  if (size < 2 * 19)
    return;
  for (k = 0; k < 2; k++) {
    uint8_t kind = data[pos++];

    memset(&sa[k], 0, sizeof(sa[k]));
    if (kind % 3 == 0) {
      struct sockaddr_in *sin = (struct sockaddr_in *)&sa[k];

      sin->sin_family = AF_INET;
      memcpy(&sin->sin_addr, data + pos, 4);
      memcpy(&sin->sin_port, data + pos + 4, 2);
    } else {
      struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&sa[k];

      sin6->sin6_family = AF_INET6;
      memcpy(&sin6->sin6_addr, data + pos, 16);
      if (kind % 3 == 2) /* IPv4-mapped */
        memcpy(&sin6->sin6_addr, mapped_prefix, 12);
      memcpy(&sin6->sin6_port, data + pos + 16, 2);
    }
    pos += 18;
  }
  check_rewrite(&sa[0], &sa[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  fuzz_parse(data, size);
  fuzz_writers(data, size);
  return 0;
}
