/*
 * proto_check: a look at the protobuf wire bytes of a request that protobuf-c's unpacking cannot
 * give: protobuf-c hands string fields over as NUL-terminated C strings, so "a.example\0junk"
 * would silently become "a.example". Pure function over the bytes; any thread.
 */
#ifndef MCP_CLI_PROTO_CHECK_H
#define MCP_CLI_PROTO_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/*
 * Walks the encoded message p[0..len) of type desc (one that protobuf-c already unpacked) and
 * returns 1 if any string field, at any depth, holds a NUL byte, or if anything in it is
 * unexpected (a bad varint, a length past the end, nesting deeper than 4); else 0.
 */
int proto_has_nul_string(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len);

#endif
