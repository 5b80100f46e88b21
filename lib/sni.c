/*
 * sni: the incremental TLS ClientHello parser (see include/mcproxy/sni.h).
 *
 * The input is a stream of TLS records (RFC 8446 section 5.1, RFC 5246 section 6.2):
 *
 *   record    = type(1) version(2) length(2) fragment(length)
 *   handshake = msg_type(1) length(3) body(length)      carried in type-22 records
 *
 * The ClientHello may be fragmented over any number of records, and even its 4-byte handshake
 * header may be split. The parser walks complete records once each (st->scanned remembers where
 * it stopped), checks every record header as soon as its bytes arrive, and checks the handshake
 * header as soon as its bytes arrive, so that garbage is rejected on the first bytes that prove
 * it is garbage rather than at the handshake timeout. Errors are always found in byte order, so
 * the result for a given prefix does not depend on how the bytes were chunked.
 *
 * Once the records hold the whole handshake message it is parsed in place (one record) or
 * copied out of the records into a stack buffer (several records) and parsed there.
 *
 * What is judged, and what is deliberately not:
 *   - every record before the hello is complete is a handshake record (type 22) whose version
 *     starts with 3; the version's minor byte is not looked at (old and future clients differ);
 *   - the record that completes the hello ends exactly where the hello ends: a second message
 *     or stray bytes behind it in that record are refused, seen as soon as both headers are in;
 *   - the hello's legacy_version is not judged (the backend decides), every vector length is
 *     checked against its container and every container must be filled exactly;
 *   - each extension type at most once (a short list, then a 65536-bit map on the stack: no
 *     quadratic scan an attacker could feed 4,000 extensions to);
 *   - server_name, when present, is a list of exactly one entry, of type host_name, whose
 *     name passes mcp_hostname_normalize (include/mcproxy/hostname.h).
 * The contents of other extensions are opaque here: only their lengths are checked.
 */
#include <string.h>

#include "mcproxy/error.h"
#include "mcproxy/hostname.h"
#include "mcproxy/sni.h"

#define TLS_RECORD_HEADER 5
#define TLS_MAX_FRAGMENT 16384 /* 2^14, the plaintext record limit of every TLS version */
#define TLS_CONTENT_HANDSHAKE 22
#define TLS_HANDSHAKE_HEADER 4
#define TLS_CLIENT_HELLO 1
#define TLS_EXT_SERVER_NAME 0
#define TLS_NAME_TYPE_HOST 0

/*
 * Shortest possible ClientHello body: legacy_version(2) random(32) session_id<0..32>(1)
 * cipher_suites<2..>(2 + 2) compression_methods<1..>(1 + 1).
 */
#define TLS_MIN_HELLO_BODY 41

static uint32_t get16(const uint8_t *p)
{
  return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t get24(const uint8_t *p)
{
  return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}

void mcp_sni_init(mcp_sni_t *st)
{
  memset(st, 0, sizeof(*st));
}

const char *mcp_sni_strerror(int rc)
{
  if (rc > 0)
    return "hostname found";
  switch (rc) {
  case MCP_SNI_NEED_MORE:
    return "ClientHello incomplete, need more data";
  case MCP_SNI_ENOTTLS:
    return "not a TLS handshake";
  case MCP_SNI_ENOTHELLO:
    return "handshake message is not a ClientHello";
  case MCP_SNI_EMALFORMED:
    return "malformed ClientHello";
  case MCP_SNI_ENOSNI:
    return "ClientHello has no server name";
  case MCP_SNI_EBADNAME:
    return "server name is not a valid hostname";
  case MCP_SNI_ETOOBIG:
    return "ClientHello too large";
  default:
    return "unknown SNI parser result";
  }
}

/*
 * Checks the first avail (0..5) bytes of the record header at p, as far as they go. The first
 * record decides whether this is TLS at all, so its failures are ENOTTLS; a later record with a
 * bad header is a broken TLS stream, hence EMALFORMED.
 */
static int check_record_header(const uint8_t *p, size_t avail, int first)
{
  int bad = first ? MCP_SNI_ENOTTLS : MCP_SNI_EMALFORMED;
  uint32_t n;

  if (avail >= 1 && p[0] != TLS_CONTENT_HANDSHAKE)
    return bad;
  /* The major version tells TLS from other protocols; the minor byte is not judged. */
  if (avail >= 2 && p[1] != 3)
    return bad;
  if (avail < TLS_RECORD_HEADER)
    return 0;
  n = get16(p + 3);
  /* RFC 8446 5.1: handshake records are never empty; no plaintext fragment exceeds 2^14. */
  if (n == 0 || n > TLS_MAX_FRAGMENT)
    return MCP_SNI_EMALFORMED;
  return 0;
}

/*
 * Copies handshake bytes [0, want) out of the records in buf[0..end) into out and returns how
 * many were available. Every record header below end has been checked already; the last
 * record may be cut short by end.
 */
static size_t copy_handshake(const uint8_t *buf, size_t end, uint8_t *out, size_t want)
{
  size_t pos = 0, got = 0;

  while (got < want && end - pos > TLS_RECORD_HEADER) {
    size_t n = get16(buf + pos + 3);
    size_t avail = end - pos - TLS_RECORD_HEADER;
    size_t take = n < avail ? n : avail;

    if (take > want - got)
      take = want - got;
    memcpy(out + got, buf + pos + TLS_RECORD_HEADER, take);
    got += take;
    if (avail <= n)
      break;
    pos += TLS_RECORD_HEADER + n;
  }
  return got;
}

/*
 * Checks the handshake header once at least one of its bytes is in buf[0..end): the message
 * type as soon as it is there, the length as soon as all four bytes are. Sets st->hs_total.
 */
static int check_handshake_header(mcp_sni_t *st, const uint8_t *buf, size_t end)
{
  uint8_t hdr[TLS_HANDSHAKE_HEADER];
  size_t got = copy_handshake(buf, end, hdr, sizeof(hdr));
  uint32_t body;

  if (got >= 1 && hdr[0] != TLS_CLIENT_HELLO)
    return MCP_SNI_ENOTHELLO;
  if (got < TLS_HANDSHAKE_HEADER)
    return 0;
  body = get24(hdr + 1);
  if (body > MCP_SNI_MAX_HANDSHAKE - TLS_HANDSHAKE_HEADER)
    return MCP_SNI_ETOOBIG;
  if (body < TLS_MIN_HELLO_BODY)
    return MCP_SNI_EMALFORMED;
  st->hs_total = TLS_HANDSHAKE_HEADER + body;
  return 0;
}

/* Reads a length-prefixed vector (1 or 2 length bytes) at *pos, which must fit in n bytes. */
static int take_vector(const uint8_t *p, size_t n, size_t *pos, size_t lenbytes, size_t *start,
                       size_t *vlen)
{
  size_t v;

  if (n - *pos < lenbytes)
    return MCP_SNI_EMALFORMED;
  v = lenbytes == 1 ? p[*pos] : get16(p + *pos);
  *pos += lenbytes;
  if (n - *pos < v)
    return MCP_SNI_EMALFORMED;
  *start = *pos;
  *vlen = v;
  *pos += v;
  return 0;
}

/*
 * Parses a server_name extension body: a ServerNameList that fills the extension exactly and
 * holds exactly one entry, name_type host_name(0) + opaque name<0..2^16-1>, that fills the list
 * exactly. Several entries (even of other types) are refused: which one a backend would use is
 * anybody's guess. An empty name is left to the hostname check (EBADNAME).
 */
static int parse_server_name(const uint8_t *p, size_t n, const uint8_t **name, size_t *name_len)
{
  size_t pos = 0, start, len;

  if (take_vector(p, n, &pos, 2, &start, &len) != 0 || pos != n || len == 0)
    return MCP_SNI_EMALFORMED;
  pos = start;
  if (p[pos++] != TLS_NAME_TYPE_HOST)
    return MCP_SNI_EMALFORMED;
  if (take_vector(p, n, &pos, 2, &start, &len) != 0 || pos != n)
    return MCP_SNI_EMALFORMED;
  *name = p + start;
  *name_len = len;
  return 0;
}

/*
 * The extension types seen so far in one hello. A real hello has 10-25 extensions: they are
 * kept in a short list and compared in turn. Past SEEN_LIST of them the list moves into a
 * 65536-bit map, so a hello of thousands of extensions costs no quadratic scan; clearing that
 * map (8 KiB) only when it is needed keeps it off the common path (docs/PERFORMANCE.md).
 */
#define SEEN_LIST 32

typedef struct seen_s {
  uint32_t n;
  uint16_t list[SEEN_LIST];
  uint64_t map[65536 / 64]; /* valid only once n > SEEN_LIST */
} seen_t;

static int map_mark(uint64_t *map, uint32_t type)
{
  uint64_t bit = (uint64_t)1 << (type % 64);
  int dup = (map[type / 64] & bit) != 0;

  map[type / 64] |= bit;
  return dup;
}

/* Marks extension type as seen; returns 1 if it was already there. */
static int seen_before(seen_t *seen, uint32_t type)
{
  if (seen->n < SEEN_LIST) {
    for (uint32_t i = 0; i < seen->n; i++)
      if (seen->list[i] == type)
        return 1;
    seen->list[seen->n++] = (uint16_t)type;
    return 0;
  }
  if (seen->n == SEEN_LIST) {
    memset(seen->map, 0, sizeof(seen->map));
    for (uint32_t i = 0; i < SEEN_LIST; i++)
      map_mark(seen->map, seen->list[i]);
    seen->n++;
  }
  return map_mark(seen->map, type);
}

/* Parses a complete ClientHello body of n bytes and extracts the host_name into host. */
static int parse_hello(const uint8_t *p, size_t n, char *host)
{
  const uint8_t *name = NULL;
  size_t name_len = 0, pos = 0, start, len, ext_end;
  seen_t seen;
  char tmp[MCP_HOSTNAME_MAX + 1];
  int rc;

  /* legacy_version (not judged) and random. */
  if (n < 2 + 32)
    return MCP_SNI_EMALFORMED;
  pos = 2 + 32;
  if (take_vector(p, n, &pos, 1, &start, &len) != 0 || len > 32)
    return MCP_SNI_EMALFORMED;
  if (take_vector(p, n, &pos, 2, &start, &len) != 0 || len < 2 || len % 2 != 0)
    return MCP_SNI_EMALFORMED;
  if (take_vector(p, n, &pos, 1, &start, &len) != 0 || len < 1)
    return MCP_SNI_EMALFORMED;

  /* Extensions are optional before TLS 1.2: no extensions means no server_name. */
  if (pos == n)
    return MCP_SNI_ENOSNI;
  if (take_vector(p, n, &pos, 2, &start, &len) != 0 || pos != n)
    return MCP_SNI_EMALFORMED;

  ext_end = n;
  pos = start;
  seen.n = 0;
  while (pos < ext_end) {
    uint32_t type;

    if (ext_end - pos < 2)
      return MCP_SNI_EMALFORMED;
    type = get16(p + pos);
    pos += 2;
    if (take_vector(p, ext_end, &pos, 2, &start, &len) != 0)
      return MCP_SNI_EMALFORMED;
    /* One extension of a type at most (GREASE values included): two would be ambiguous. */
    if (seen_before(&seen, type))
      return MCP_SNI_EMALFORMED;
    if (type != TLS_EXT_SERVER_NAME)
      continue; /* ECH (the outer SNI is what we route on) and the rest: opaque. */
    rc = parse_server_name(p + start, len, &name, &name_len);
    if (rc != 0)
      return rc;
  }

  if (name == NULL)
    return MCP_SNI_ENOSNI;
  rc = mcp_hostname_normalize((const char *)name, name_len, tmp);
  if (rc < 0)
    return MCP_SNI_EBADNAME;
  memcpy(host, tmp, (size_t)rc + 1);
  return rc;
}

/*
 * Walks the records from st->scanned on. Returns 1 once the records hold the whole handshake
 * message, MCP_SNI_NEED_MORE if they do not yet, or an error.
 */
static int walk_records(mcp_sni_t *st, const uint8_t *buf, size_t len)
{
  while (st->hs_total == 0 || st->hs_have < st->hs_total) {
    size_t pos = st->scanned;
    size_t avail = len - pos;
    size_t payload, end, n;
    int rc;

    rc = check_record_header(buf + pos, avail < 5 ? avail : 5, st->records == 0);
    if (rc != 0)
      return rc;
    if (avail < TLS_RECORD_HEADER)
      return MCP_SNI_NEED_MORE;
    n = get16(buf + pos + 3);
    end = pos + TLS_RECORD_HEADER + n;
    if (end > MCP_SNI_MAX_INPUT)
      return MCP_SNI_ETOOBIG;

    payload = avail - TLS_RECORD_HEADER < n ? avail - TLS_RECORD_HEADER : n;
    if (st->hs_total == 0 && payload > 0) {
      rc = check_handshake_header(st, buf, pos + TLS_RECORD_HEADER + payload);
      if (rc != 0)
        return rc;
    }
    /* The record that completes the hello must end with it: nothing may follow inside. */
    if (st->hs_total != 0 && st->hs_have + n > st->hs_total)
      return MCP_SNI_EMALFORMED;
    if (payload < n)
      return MCP_SNI_NEED_MORE;

    st->scanned = (uint32_t)end;
    st->hs_have += (uint32_t)n;
    st->records++;
  }
  return 1;
}

int mcp_sni_parse(mcp_sni_t *st, const uint8_t *buf, size_t len, char *host)
{
  uint8_t msg[MCP_SNI_MAX_HANDSHAKE];
  size_t body;
  int rc;

  /* The caller promised a growing prefix; a shorter one cannot be walked from st. */
  if (len < st->scanned)
    return MCP_SNI_EMALFORMED;
  if (len == 0)
    return MCP_SNI_NEED_MORE;

  rc = walk_records(st, buf, len);
  if (rc != 1)
    return rc;

  body = st->hs_total - TLS_HANDSHAKE_HEADER;
  /* The usual case: the whole message sits in the first record, parse it where it is. */
  if (get16(buf + 3) >= st->hs_total)
    return parse_hello(buf + TLS_RECORD_HEADER + TLS_HANDSHAKE_HEADER, body, host);

  if (copy_handshake(buf, st->scanned, msg, st->hs_total) != st->hs_total)
    return MCP_SNI_EMALFORMED; /* Unreachable: hs_have == hs_total says the bytes are there. */
  return parse_hello(msg + TLS_HANDSHAKE_HEADER, body, host);
}
