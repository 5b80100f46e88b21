/*
 * proxy_protocol: reading and writing PROXY protocol headers, version 1 (text) and 2 (binary).
 *
 * A load balancer in front of mc-proxy may start every connection with one PROXY header that
 * names the original client; mc-proxy may send one to a backend. lib/proxy_protocol.c's first
 * comment sums up both formats and what this parser is strict about.
 *
 * The parser is a pure function over all bytes received so far, like the ClientHello parser:
 * no allocation, no I/O, no state between calls. The caller reads into its buffer and calls
 * mcp_proxy_protocol_parse() with the whole buffer after each read; the result is "need more",
 * "done, the header is the first N bytes" or an error. The parser walks the bytes in order and
 * stops at the first one that proves the input is not a valid header, so garbage is rejected
 * as soon as it arrives, and the answer for a prefix never depends on how it was chunked. It
 * never looks at a byte past the end of the header, so whatever follows it (the ClientHello)
 * is the caller's.
 *
 * The writers fill a caller buffer; all functions are thread-safe (no shared state).
 */
#ifndef MCPROXY_PROXY_PROTOCOL_H
#define MCPROXY_PROXY_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "mcproxy/error.h"

/* Signals: libmcproxy never installs a signal handler or changes a signal mask. It writes to
 * sockets with send(2) (MSG_NOSIGNAL) and splice(2), and splice raises SIGPIPE when a peer has
 * gone, so a program that runs listeners must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) before
 * it starts one. */
#ifdef __cplusplus
extern "C" {
#endif

/* Longest version 1 header: the whole line including its CRLF. */
#define MCP_PROXY_PROTOCOL_V1_MAX 107
/* The fixed part of a version 2 header (signature, version/command, family, length). */
#define MCP_PROXY_PROTOCOL_V2_HEADER 16
/*
 * Longest version 2 header accepted: the 16 fixed bytes plus at most 4080 bytes of addresses
 * and TLVs. The format allows 65535 bytes after the fixed part; no sender we know of comes
 * near 4 KiB (addresses take at most 36 bytes, the TLVs load balancers add a few hundred), and
 * a lower cap keeps the bytes buffered before the ClientHello small. A header announcing more
 * is rejected (MCP_EPROXY_TOOBIG) as soon as its length field arrives.
 */
#define MCP_PROXY_PROTOCOL_V2_MAX 4096
/* Most bytes the caller ever has to buffer to get a result: the larger of the two maxima. */
#define MCP_PROXY_PROTOCOL_MAX_INPUT MCP_PROXY_PROTOCOL_V2_MAX
/* A buffer this large always holds what the writers produce (v1 needs at most 104 bytes). */
#define MCP_PROXY_PROTOCOL_WRITE_MAX 108

/* mcp_proxy_protocol_parse(): not enough bytes yet to decide. */
#define MCP_PROXY_PROTOCOL_NEED_MORE 0

/*
 * A parsed header. Written by mcp_proxy_protocol_parse() only when it returns a length.
 *
 * use_addresses is 1 when the header carries the client's addresses (v1 TCP4/TCP6, v2 PROXY
 * with AF_INET or AF_INET6): src is then the client (its port included) and dst the address
 * the client connected to, both AF_INET or both AF_INET6, exactly as the header gave them (an
 * IPv4-mapped IPv6 address in a TCP6 header stays AF_INET6; mcp_client_limits_key and the
 * firewall treat it as IPv4). use_addresses is 0 for v1 UNKNOWN, v2 LOCAL and v2 PROXY with
 * AF_UNSPEC: the connection's own peer is the client, and src and dst are zeroed (AF_UNSPEC).
 * Owned by the caller.
 */
typedef struct mcp_proxy_protocol_s {
  int version;       /* 1 or 2 */
  int use_addresses; /* 1: src/dst below are the client's; 0: use the peer's own address */
  struct sockaddr_storage src;
  struct sockaddr_storage dst;
} mcp_proxy_protocol_t;

/*
 * Parses buf[0..len), every byte received so far on the connection (the same prefix each call,
 * only longer). Returns:
 *   MCP_PROXY_PROTOCOL_NEED_MORE  the bytes so far are a valid beginning of a header;
 *   N > 0                         the header is exactly buf[0..N); *out is filled in; the
 *                                 bytes after it belong to the next protocol;
 *   MCP_EPROXY_NOTPROXY           the input does not start with either signature;
 *   MCP_EPROXY_MALFORMED          a field or length that does not parse or does not add up;
 *   MCP_EPROXY_FAMILY             a v1 protocol other than TCP4/TCP6/UNKNOWN, an address not of
 *                                 the announced family, or v2 with AF_UNIX, a datagram or
 *                                 unknown protocol;
 *   MCP_EPROXY_TOOBIG             v1 line without CRLF within 107 bytes, v2 over the cap.
 * Once a call returns a length or an error, every longer buffer with the same prefix gives the
 * same answer. out may be NULL when only the length is wanted.
 */
int mcp_proxy_protocol_parse(const uint8_t *buf, size_t len, mcp_proxy_protocol_t *out);

/*
 * Write a version 1 or 2 header for a connection from src (the client) to dst (the address it
 * connected to) into buf (cap bytes; MCP_PROXY_PROTOCOL_WRITE_MAX always suffices). Returns the
 * header's length, or MCP_ENOBUFS when cap is too small (buf is then untouched).
 *
 * IPv4-mapped IPv6 addresses are written as IPv4. Both IPv4 -> TCP4 / AF_INET; otherwise both
 * IP -> TCP6 / AF_INET6 with any IPv4 address written IPv4-mapped. When either address is
 * NULL or not IP (a unix socket), v1 writes "PROXY UNKNOWN\r\n" and v2 a PROXY command with
 * AF_UNSPEC and no addresses, which tells the backend to use the connection's own peer.
 */
int mcp_proxy_protocol_write_v1(uint8_t *buf, size_t cap, const struct sockaddr *src,
                                const struct sockaddr *dst);
int mcp_proxy_protocol_write_v2(uint8_t *buf, size_t cap, const struct sockaddr *src,
                                const struct sockaddr *dst);

#ifdef __cplusplus
}
#endif

#endif
