/* proto_check: finds NUL bytes in the string fields of an encoded message. See proto_check.h. */
#include "proto_check.h"

#include <string.h>

#define MAX_DEPTH 4

static int read_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *out)
{
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*i >= len)
      return -1;
    uint8_t b = p[(*i)++];
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

static int scan(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len, int depth)
{
  if (depth > MAX_DEPTH)
    return 1;
  size_t i = 0;
  while (i < len) {
    uint64_t key, v;
    if (read_varint(p, len, &i, &key) != 0)
      return 1;
    switch (key & 7) {
    case 0: /* varint */
      if (read_varint(p, len, &i, &v) != 0)
        return 1;
      break;
    case 1: /* 64-bit */
      if (len - i < 8)
        return 1;
      i += 8;
      break;
    case 5: /* 32-bit */
      if (len - i < 4)
        return 1;
      i += 4;
      break;
    case 2: { /* length-delimited: a string, bytes or a nested message */
      if (read_varint(p, len, &i, &v) != 0 || v > len - i)
        return 1;
      const ProtobufCFieldDescriptor *f =
          key >> 3 <= UINT32_MAX
              ? protobuf_c_message_descriptor_get_field(desc, (unsigned)(key >> 3))
              : NULL;
      if (f && f->type == PROTOBUF_C_TYPE_STRING && memchr(p + i, 0, (size_t)v))
        return 1;
      if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
          scan(f->descriptor, p + i, (size_t)v, depth + 1))
        return 1;
      i += (size_t)v;
      break;
    }
    default:
      return 1;
    }
  }
  return 0;
}

int proto_has_nul_string(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len)
{
  return scan(desc, p, len, 0);
}
