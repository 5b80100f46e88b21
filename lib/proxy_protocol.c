/*
 * proxy_protocol: PROXY protocol v1 and v2 headers (see include/mcproxy/proxy_protocol.h).
 *
 * Version 1 is one line of ASCII, at most 107 bytes with its CRLF:
 *
 *   "PROXY TCP4 " src4 " " dst4 " " sport " " dport "\r\n"
 *   "PROXY TCP6 " src6 " " dst6 " " sport " " dport "\r\n"
 *   "PROXY UNKNOWN" [ " " anything without CR or LF ] "\r\n"
 *
 * Version 2 is binary: a 12-byte signature, a version/command byte (0x20 LOCAL, 0x21 PROXY), a
 * family/protocol byte (0x11 TCP over IPv4, 0x21 TCP over IPv6, 0x00 unspecified, others not
 * for us), a 16-bit big-endian length of what follows, then for TCP the source and destination
 * addresses and ports (12 bytes for IPv4, 36 for IPv6), then type-length-value extensions up to
 * the end. The two versions are told apart by their first byte ('P' or CR).
 *
 * Strictness, because the address in the header decides the firewall and the limits:
 *   - v1 fields are single-space separated, none empty; IPv4 addresses are dotted quads of
 *     decimal numbers 0-255 without leading zeros (what inet_pton accepts); IPv6 addresses
 *     are what inet_pton(AF_INET6) accepts; an address of the other family is MCP_EPROXY_FAMILY;
 *     ports are decimal 0-65535 with no sign, no leading zero (except "0" itself) and nothing
 *     around them; the line ends with CR LF and a lone CR or LF is malformed.
 *   - v2 must be version 2 with command LOCAL or PROXY. For PROXY the family is AF_INET or
 *     AF_INET6 with STREAM, or AF_UNSPEC (no addresses: the peer's own are used); the length
 *     must hold the address block, and what follows it must be whole TLVs (type, 16-bit length,
 *     value), which are skipped. LOCAL (a health check from the balancer itself) is accepted
 *     whatever its family byte says and its payload is skipped unread, as the format asks.
 *   - Both are read as a forward walk that stops at the first byte proving the input invalid;
 *     running out of bytes in a valid state is NEED_MORE. That is why a prefix's answer never
 *     changes when more bytes arrive.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "mcproxy/error.h"
#include "mcproxy/proxy_protocol.h"

static const uint8_t v1_sig[6] = {'P', 'R', 'O', 'X', 'Y', ' '};
static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                   0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

#define V2_CMD_LOCAL 0x20
#define V2_CMD_PROXY 0x21
#define V2_FAM_UNSPEC 0x00
#define V2_FAM_TCP4 0x11
#define V2_FAM_TCP6 0x21
#define V2_ADDR4_LEN 12 /* 4 + 4 + 2 + 2 */
#define V2_ADDR6_LEN 36 /* 16 + 16 + 2 + 2 */
#define V2_TLV_HEADER 3

#define V1_ADDR_MAX 45 /* "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255" */
#define V1_PORT_MAX 5

static int parse_v1(const uint8_t *buf, size_t len, mcp_proxy_protocol_t *out);
static int parse_v2(const uint8_t *buf, size_t len, mcp_proxy_protocol_t *out);

int mcp_proxy_protocol_parse(const uint8_t *buf, size_t len, mcp_proxy_protocol_t *out)
{
  const uint8_t *sig;
  size_t siglen, i;

  if (len == 0)
    return MCP_PROXY_PROTOCOL_NEED_MORE;
  if (buf[0] == v1_sig[0]) {
    sig = v1_sig;
    siglen = sizeof(v1_sig);
  } else if (buf[0] == v2_sig[0]) {
    sig = v2_sig;
    siglen = sizeof(v2_sig);
  } else {
    return MCP_EPROXY_NOTPROXY;
  }
  for (i = 1; i < siglen; i++) {
    if (i >= len)
      return MCP_PROXY_PROTOCOL_NEED_MORE;
    if (buf[i] != sig[i])
      return MCP_EPROXY_NOTPROXY;
  }
  return sig == v1_sig ? parse_v1(buf, len, out) : parse_v2(buf, len, out);
}

/* ---- version 1 ------------------------------------------------------------------------ */

/* The walk's view of the line: the bytes so far, never more than the 107 a line may have. */
struct line {
  const uint8_t *buf;
  size_t len;
};

/*
 * Inside the v1 walk, "not arrived yet" must differ from 0 ("fine, go on"): MORE, which is not
 * one of the codes the parser returns; parse_v1 turns it into MCP_PROXY_PROTOCOL_NEED_MORE.
 */
#define MORE (-1)

/* 0 when byte pos exists, else why not: the line would be too long, or it has not arrived. */
static int line_need(const struct line *l, size_t pos)
{
  if (pos >= MCP_PROXY_PROTOCOL_V1_MAX)
    return MCP_EPROXY_TOOBIG;
  if (pos >= l->len)
    return MORE;
  return 0;
}

enum field_kind { FIELD_WORD, FIELD_ADDR, FIELD_PORT };

static int field_char_ok(enum field_kind kind, uint8_t c)
{
  if (c >= '0' && c <= '9')
    return 1;
  switch (kind) {
  case FIELD_WORD:
    return c >= 'A' && c <= 'Z';
  case FIELD_ADDR:
    return c == '.' || c == ':' || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  case FIELD_PORT:
    return 0;
  }
  return 0;
}

/*
 * Reads one field starting at *pos: 1..max bytes of its character set, ended by a space or a
 * CR (left unread at the new *pos). Returns 0, MORE, or an error.
 */
static int read_field(const struct line *l, size_t *pos, enum field_kind kind, size_t max)
{
  size_t start = *pos, p = start;
  int rc;

  for (;;) {
    rc = line_need(l, p);
    if (rc != 0)
      return rc;
    if (l->buf[p] == ' ' || l->buf[p] == '\r')
      break;
    if (!field_char_ok(kind, l->buf[p]) || p - start >= max)
      return MCP_EPROXY_MALFORMED;
    p++;
  }
  if (p == start)
    return MCP_EPROXY_MALFORMED;
  *pos = p;
  return 0;
}

/* Expects byte c at *pos and steps over it. */
static int expect_byte(const struct line *l, size_t *pos, uint8_t c)
{
  int rc = line_need(l, *pos);

  if (rc != 0)
    return rc;
  if (l->buf[*pos] != c)
    return MCP_EPROXY_MALFORMED;
  (*pos)++;
  return 0;
}

static int word_is(const struct line *l, size_t start, size_t end, const char *word)
{
  size_t n = strlen(word);

  return end - start == n && memcmp(l->buf + start, word, n) == 0;
}

/* Converts the address text buf[start..end) of the family expected into sa. */
static int v1_address(const struct line *l, size_t start, size_t end, int family,
                      struct sockaddr_storage *sa)
{
  char text[V1_ADDR_MAX + 1];
  uint8_t bin[16];
  int other = family == AF_INET ? AF_INET6 : AF_INET;

  memcpy(text, l->buf + start, end - start);
  text[end - start] = '\0';
  memset(sa, 0, sizeof(*sa));
  if (family == AF_INET) {
    struct sockaddr_in *sin = (struct sockaddr_in *)sa;

    if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
      sin->sin_family = AF_INET;
      return 0;
    }
  } else {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)sa;

    if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1) {
      sin6->sin6_family = AF_INET6;
      return 0;
    }
  }
  return inet_pton(other, text, bin) == 1 ? MCP_EPROXY_FAMILY : MCP_EPROXY_MALFORMED;
}

/* Converts the port text buf[start..end) (1..5 digits, checked by read_field) into sa. */
static int v1_port(const struct line *l, size_t start, size_t end, struct sockaddr_storage *sa)
{
  uint32_t v = 0;
  size_t i;

  if (end - start > 1 && l->buf[start] == '0')
    return MCP_EPROXY_MALFORMED;
  for (i = start; i < end; i++)
    v = v * 10 + (uint32_t)(l->buf[i] - '0');
  if (v > 65535)
    return MCP_EPROXY_MALFORMED;
  if (sa->ss_family == AF_INET)
    ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)v);
  else
    ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)v);
  return 0;
}

/* After "PROXY UNKNOWN": nothing, or a space and any bytes but CR and LF; then CR LF. */
static int v1_unknown_rest(const struct line *l, size_t pos)
{
  int rc;

  for (;;) {
    rc = line_need(l, pos);
    if (rc != 0)
      return rc;
    if (l->buf[pos] == '\r')
      break;
    if (l->buf[pos] == '\n')
      return MCP_EPROXY_MALFORMED;
    pos++;
  }
  pos++;
  rc = expect_byte(l, &pos, '\n');
  return rc != 0 ? rc : (int)pos;
}

static int walk_v1(const uint8_t *buf, size_t len, mcp_proxy_protocol_t *out);

static int parse_v1(const uint8_t *buf, size_t len, mcp_proxy_protocol_t *out)
{
  int rc = walk_v1(buf, len, out);

  return rc == MORE ? MCP_PROXY_PROTOCOL_NEED_MORE : rc;
}

/* The line after "PROXY ": the protocol word, then what that word calls for. */
static int walk_v1(const uint8_t *buf, size_t len, mcp_proxy_protocol_t *out)
{
  struct line l = {buf, len};
  mcp_proxy_protocol_t res;
  size_t pos = sizeof(v1_sig), start, end;
  struct sockaddr_storage *sa[2] = {&res.src, &res.dst};
  int family, rc, i;

  memset(&res, 0, sizeof(res));
  res.version = 1;
  start = pos;
  rc = read_field(&l, &pos, FIELD_WORD, 7);
  if (rc != 0)
    return rc;
  if (word_is(&l, start, pos, "UNKNOWN")) {
    if (buf[pos] == ' ')
      pos++;
    rc = v1_unknown_rest(&l, pos);
    if (rc > 0 && out != NULL)
      *out = res;
    return rc;
  }
  if (word_is(&l, start, pos, "TCP4"))
    family = AF_INET;
  else if (word_is(&l, start, pos, "TCP6"))
    family = AF_INET6;
  else
    return MCP_EPROXY_FAMILY;

  /* Source and destination address, then source and destination port, each after a space. */
  for (i = 0; i < 4; i++) {
    rc = expect_byte(&l, &pos, ' ');
    if (rc != 0)
      return rc;
    start = pos;
    rc = read_field(&l, &pos, i < 2 ? FIELD_ADDR : FIELD_PORT, i < 2 ? V1_ADDR_MAX : V1_PORT_MAX);
    if (rc != 0)
      return rc;
    end = pos;
    rc = i < 2 ? v1_address(&l, start, end, family, sa[i]) : v1_port(&l, start, end, sa[i - 2]);
    if (rc != 0)
      return rc;
  }
  rc = expect_byte(&l, &pos, '\r');
  if (rc == 0)
    rc = expect_byte(&l, &pos, '\n');
  if (rc != 0)
    return rc;
  res.use_addresses = 1;
  if (out != NULL)
    *out = res;
  return (int)pos;
}

/* ---- version 2 ------------------------------------------------------------------------ */

static uint16_t get16(const uint8_t *p)
{
  return (uint16_t)(p[0] << 8 | p[1]);
}

/* The TLVs in buf[0..n): each a type byte, a 16-bit length and that many bytes, exactly. */
static int v2_check_tlvs(const uint8_t *buf, size_t n)
{
  size_t pos = 0;

  while (pos < n) {
    if (n - pos < V2_TLV_HEADER)
      return MCP_EPROXY_MALFORMED;
    if (get16(buf + pos + 1) > n - pos - V2_TLV_HEADER)
      return MCP_EPROXY_MALFORMED;
    pos += V2_TLV_HEADER + get16(buf + pos + 1);
  }
  return 0;
}

static void v2_addresses(const uint8_t *p, uint8_t fam, mcp_proxy_protocol_t *res)
{
  if (fam == V2_FAM_TCP4) {
    struct sockaddr_in *src = (struct sockaddr_in *)&res->src;
    struct sockaddr_in *dst = (struct sockaddr_in *)&res->dst;

    src->sin_family = dst->sin_family = AF_INET;
    memcpy(&src->sin_addr, p, 4);
    memcpy(&dst->sin_addr, p + 4, 4);
    memcpy(&src->sin_port, p + 8, 2);
    memcpy(&dst->sin_port, p + 10, 2);
  } else {
    struct sockaddr_in6 *src = (struct sockaddr_in6 *)&res->src;
    struct sockaddr_in6 *dst = (struct sockaddr_in6 *)&res->dst;

    src->sin6_family = dst->sin6_family = AF_INET6;
    memcpy(&src->sin6_addr, p, 16);
    memcpy(&dst->sin6_addr, p + 16, 16);
    memcpy(&src->sin6_port, p + 32, 2);
    memcpy(&dst->sin6_port, p + 34, 2);
  }
  res->use_addresses = 1;
}

static int parse_v2(const uint8_t *buf, size_t len, mcp_proxy_protocol_t *out)
{
  mcp_proxy_protocol_t res;
  size_t total, block;
  uint8_t cmd, fam;
  int rc;

  if (len < 13)
    return MCP_PROXY_PROTOCOL_NEED_MORE;
  cmd = buf[12];
  if (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY)
    return MCP_EPROXY_MALFORMED;
  if (len < 14)
    return MCP_PROXY_PROTOCOL_NEED_MORE;
  fam = buf[13];
  if (cmd == V2_CMD_PROXY && fam != V2_FAM_UNSPEC && fam != V2_FAM_TCP4 && fam != V2_FAM_TCP6)
    return MCP_EPROXY_FAMILY;
  if (len < MCP_PROXY_PROTOCOL_V2_HEADER)
    return MCP_PROXY_PROTOCOL_NEED_MORE;
  total = MCP_PROXY_PROTOCOL_V2_HEADER + (size_t)get16(buf + 14);
  if (total > MCP_PROXY_PROTOCOL_V2_MAX)
    return MCP_EPROXY_TOOBIG;
  block = 0;
  if (cmd == V2_CMD_PROXY && fam != V2_FAM_UNSPEC)
    block = fam == V2_FAM_TCP4 ? V2_ADDR4_LEN : V2_ADDR6_LEN;
  if (total - MCP_PROXY_PROTOCOL_V2_HEADER < block)
    return MCP_EPROXY_MALFORMED;
  if (len < total)
    return MCP_PROXY_PROTOCOL_NEED_MORE;

  memset(&res, 0, sizeof(res));
  res.version = 2;
  if (cmd == V2_CMD_PROXY) {
    rc = v2_check_tlvs(buf + MCP_PROXY_PROTOCOL_V2_HEADER + block,
                       total - MCP_PROXY_PROTOCOL_V2_HEADER - block);
    if (rc != 0)
      return rc;
    if (block != 0)
      v2_addresses(buf + MCP_PROXY_PROTOCOL_V2_HEADER, fam, &res);
  }
  if (out != NULL)
    *out = res;
  return (int)total;
}

/* ---- writers -------------------------------------------------------------------------- */

/* An endpoint as the writers see it: 16 address bytes (IPv4 as ::ffff:a.b.c.d), the port. */
struct endpoint {
  uint8_t addr[16];
  uint16_t port; /* network order */
  int is4;       /* IPv4, or IPv4-mapped IPv6 */
};

static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Returns 1 and fills e when sa is an IP address, else 0. */
static int endpoint_of(const struct sockaddr *sa, struct endpoint *e)
{
  if (sa == NULL)
    return 0;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

    memcpy(e->addr, mapped_prefix, 12);
    memcpy(e->addr + 12, &sin->sin_addr, 4);
    e->port = sin->sin_port;
    e->is4 = 1;
    return 1;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

    memcpy(e->addr, &sin6->sin6_addr, 16);
    e->port = sin6->sin6_port;
    e->is4 = memcmp(e->addr, mapped_prefix, 12) == 0;
    return 1;
  }
  return 0;
}

/* Appends text without its NUL; returns the new position. */
static size_t put_text(uint8_t *out, size_t pos, const char *text)
{
  while (*text != '\0')
    out[pos++] = (uint8_t)*text++;
  return pos;
}

/* Appends the decimal form of v; returns the new position. */
static size_t put_uint(uint8_t *out, size_t pos, unsigned v)
{
  char digits[5];
  int n = 0;

  do {
    digits[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (n > 0)
    out[pos++] = (uint8_t)digits[--n];
  return pos;
}

/* Appends the address text of e (IPv4 dotted quad when v4, else IPv6). */
static size_t put_addr(uint8_t *out, size_t pos, const struct endpoint *e, int v4)
{
  char text[INET6_ADDRSTRLEN];

  inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? e->addr + 12 : e->addr, text, sizeof(text));
  return put_text(out, pos, text);
}

int mcp_proxy_protocol_write_v1(uint8_t *buf, size_t cap, const struct sockaddr *src,
                                const struct sockaddr *dst)
{
  uint8_t line[MCP_PROXY_PROTOCOL_WRITE_MAX];
  struct endpoint s, d;
  size_t pos;
  int v4;

  memcpy(line, v1_sig, sizeof(v1_sig));
  pos = sizeof(v1_sig);
  if (!endpoint_of(src, &s) || !endpoint_of(dst, &d)) {
    pos = put_text(line, pos, "UNKNOWN");
  } else {
    v4 = s.is4 && d.is4;
    pos = put_text(line, pos, v4 ? "TCP4 " : "TCP6 ");
    pos = put_addr(line, pos, &s, v4);
    line[pos++] = ' ';
    pos = put_addr(line, pos, &d, v4);
    line[pos++] = ' ';
    pos = put_uint(line, pos, ntohs(s.port));
    line[pos++] = ' ';
    pos = put_uint(line, pos, ntohs(d.port));
  }
  line[pos++] = '\r';
  line[pos++] = '\n';
  if (pos > cap)
    return MCP_ENOBUFS;
  memcpy(buf, line, pos);
  return (int)pos;
}

int mcp_proxy_protocol_write_v2(uint8_t *buf, size_t cap, const struct sockaddr *src,
                                const struct sockaddr *dst)
{
  struct endpoint s, d;
  size_t block, total;
  int known, v4;

  known = endpoint_of(src, &s) && endpoint_of(dst, &d);
  v4 = known && s.is4 && d.is4;
  block = !known ? 0 : v4 ? V2_ADDR4_LEN : V2_ADDR6_LEN;
  total = MCP_PROXY_PROTOCOL_V2_HEADER + block;
  if (total > cap)
    return MCP_ENOBUFS;
  memcpy(buf, v2_sig, sizeof(v2_sig));
  buf[12] = V2_CMD_PROXY;
  buf[13] = !known ? V2_FAM_UNSPEC : v4 ? V2_FAM_TCP4 : V2_FAM_TCP6;
  buf[14] = 0;
  buf[15] = (uint8_t)block;
  if (v4) {
    memcpy(buf + 16, s.addr + 12, 4);
    memcpy(buf + 20, d.addr + 12, 4);
    memcpy(buf + 24, &s.port, 2);
    memcpy(buf + 26, &d.port, 2);
  } else if (known) {
    memcpy(buf + 16, s.addr, 16);
    memcpy(buf + 32, d.addr, 16);
    memcpy(buf + 48, &s.port, 2);
    memcpy(buf + 50, &d.port, 2);
  }
  return (int)total;
}
