/*
 * sni: an incremental, allocation-free TLS ClientHello parser.
 *
 * The caller buffers every byte the client has sent so far (it must forward them unchanged to
 * the backend anyway) and calls mcp_sni_parse() after each read with the whole buffer. The
 * parser walks the TLS records, reassembles the handshake message across as many records as
 * it takes (up to MCP_SNI_MAX_HANDSHAKE bytes of handshake message) and, once the ClientHello is
 * complete, checks it strictly and extracts the server_name extension's host_name.
 *
 * Strict, because a proxy and a backend that read one hello differently can be steered apart.
 * A hello is refused when a length overruns or does not fill its container, an extension type
 * appears twice, the server_name list is not exactly one host_name entry, the hello does not
 * end exactly at the end of a TLS record, a record other than handshake arrives before it is
 * complete, or the name is not a hostname (include/mcproxy/hostname.h). The record-layer version's
 * minor byte and the hello's legacy_version are not judged: the backend decides those. Records
 * after the hello's last record (early data, anything) are not looked at.
 *
 * It never reads past a length it has not checked against what remains, never allocates, does
 * no I/O and needs no libuv, so it can be fuzzed on its own. Thread-safe: all state is in the
 * caller's mcp_sni_t.
 */
#ifndef MCPROXY_SNI_H
#define MCPROXY_SNI_H

#include <stddef.h>
#include <stdint.h>

#include "mcproxy/error.h"    /* the MCP_SNI_* results */
#include "mcproxy/hostname.h" /* MCP_HOSTNAME_MAX and the hostname rule */

/* Signals: libmcproxy never installs a signal handler or changes a signal mask. It writes to
 * sockets with send(2) (MSG_NOSIGNAL) and splice(2), and splice raises SIGPIPE when a peer has
 * gone, so a program that runs listeners must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) before
 * it starts one. */
#ifdef __cplusplus
extern "C" {
#endif

/* Longest handshake message (the ClientHello, header included) the parser accepts. */
#define MCP_SNI_MAX_HANDSHAKE 16384
/*
 * Most raw bytes (records with their headers) the caller should ever need to buffer. A
 * ClientHello that has not completed within this many bytes is rejected with MCP_SNI_ETOOBIG.
 */
#define MCP_SNI_MAX_INPUT (MCP_SNI_MAX_HANDSHAKE + 2048)

/*
 * Parser progress between calls, so that a ClientHello arriving a byte at a time is not
 * re-walked from the start on every read. Zero it (or call mcp_sni_init) before the first call.
 * Owned by the caller; the parser only reads and writes it inside mcp_sni_parse().
 */
typedef struct mcp_sni_s {
  uint32_t scanned;  /* raw bytes of complete records already walked */
  uint32_t hs_have;  /* handshake bytes contained in those records */
  uint32_t hs_total; /* 4 + declared ClientHello length once known, else 0 */
  uint32_t records;  /* complete records walked */
} mcp_sni_t;

void mcp_sni_init(mcp_sni_t *st);

/*
 * Parses buf[0..len), all bytes received so far (the same prefix each call, only longer).
 * Returns MCP_SNI_NEED_MORE until the ClientHello is complete; then the length (1..253) of the
 * hostname written NUL-terminated, lowercase and without a trailing dot into host (which must
 * hold MCP_HOSTNAME_MAX + 1 bytes); or one of the negative MCP_SNI_E* codes (error.h), after which
 * the connection should be closed. Never writes to host unless it returns a positive length.
 */
int mcp_sni_parse(mcp_sni_t *st, const uint8_t *buf, size_t len, char *host);

/* Static description of an MCP_SNI_* result. */
const char *mcp_sni_strerror(int rc);

#ifdef __cplusplus
}
#endif

#endif
