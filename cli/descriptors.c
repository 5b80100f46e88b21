#include "descriptors.h"

#include <string.h>

/*
 * A minimal walk over protobuf wire format, enough to split a FileDescriptorSet (field 1:
 * repeated FileDescriptorProto) and read names out of a FileDescriptorProto. The input is what
 * protoc wrote at build time, but every length is still checked against what remains.
 */

/* FileDescriptorProto field numbers (google/protobuf/descriptor.proto). */
enum { FILE_NAME = 1, FILE_PACKAGE = 2, FILE_MESSAGE = 4, FILE_ENUM = 5, FILE_SERVICE = 6 };
/* DescriptorProto, EnumDescriptorProto and ServiceDescriptorProto all keep their name in 1. */
enum { ANY_NAME = 1 };

typedef struct field_s {
  unsigned number;
  unsigned wire_type;
  const uint8_t *data; /* wire type 2 only */
  size_t len;
} field_t;

static int read_varint(const uint8_t *p, size_t len, size_t *off, uint64_t *v)
{
  *v = 0;
  for (unsigned shift = 0; shift < 64; shift += 7) {
    if (*off >= len)
      return -1;
    uint8_t b = p[(*off)++];
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80))
      return 0;
  }
  return -1;
}

/* Reads the field at *off; returns 1, 0 at the end of p, -1 when malformed. */
static int next_field(const uint8_t *p, size_t len, size_t *off, field_t *f)
{
  if (*off == len)
    return 0;
  uint64_t key, v;
  if (read_varint(p, len, off, &key) != 0)
    return -1;
  f->number = (unsigned)(key >> 3);
  f->wire_type = (unsigned)(key & 7);
  f->data = NULL;
  f->len = 0;
  switch (f->wire_type) {
  case 0:
    return read_varint(p, len, off, &v) == 0 ? 1 : -1;
  case 1:
  case 5: {
    size_t n = f->wire_type == 1 ? 8 : 4;
    if (len - *off < n)
      return -1;
    *off += n;
    return 1;
  }
  case 2:
    if (read_varint(p, len, off, &v) != 0 || v > len - *off)
      return -1;
    f->data = p + *off;
    f->len = (size_t)v;
    *off += (size_t)v;
    return 1;
  default:
    return -1; /* groups (3, 4) never appear in descriptors */
  }
}

int descriptors_next_file(const uint8_t *set, size_t len, size_t *offset, descriptor_file_t *f)
{
  field_t fld;
  int r;
  while ((r = next_field(set, len, offset, &fld)) == 1) {
    if (fld.number != 1 || fld.wire_type != 2)
      continue;
    memset(f, 0, sizeof(*f));
    f->bytes = fld.data;
    f->len = fld.len;
    f->package = "";
    size_t off = 0;
    field_t in;
    int ri;
    while ((ri = next_field(fld.data, fld.len, &off, &in)) == 1) {
      if (in.wire_type != 2)
        continue;
      if (in.number == FILE_NAME) {
        f->name = (const char *)in.data;
        f->name_len = in.len;
      } else if (in.number == FILE_PACKAGE) {
        f->package = (const char *)in.data;
        f->package_len = in.len;
      }
    }
    return ri == 0 && f->name ? 1 : -1;
  }
  return r;
}

/* ---- lookups over every embedded set ----------------------------------------------------- */

typedef const uint8_t *(*set_fn)(size_t *len);
static const set_fn sets[] = {descriptors_set_admin, descriptors_set_health,
                              descriptors_set_reflection_v1, descriptors_set_reflection_v1alpha};

/* Calls match(f, arg) on every embedded file; fills *out with the first that matches. */
static int find(int (*match)(const descriptor_file_t *f, const char *arg), const char *arg,
                descriptor_file_t *out)
{
  for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
    size_t len, off = 0;
    const uint8_t *set = sets[i](&len);
    descriptor_file_t f;
    while (descriptors_next_file(set, len, &off, &f) == 1) {
      if (match(&f, arg)) {
        *out = f;
        return 0;
      }
    }
  }
  return -1;
}

static int match_name(const descriptor_file_t *f, const char *name)
{
  return strlen(name) == f->name_len && memcmp(name, f->name, f->name_len) == 0;
}

int descriptors_find_file(const char *filename, descriptor_file_t *f)
{
  return find(match_name, filename, f);
}

/* Whether the file has a top-level message, enum or service called name[0..len). */
static int defines(const descriptor_file_t *f, const char *name, size_t len)
{
  size_t off = 0;
  field_t fld;
  while (next_field(f->bytes, f->len, &off, &fld) == 1) {
    if (fld.wire_type != 2 ||
        (fld.number != FILE_MESSAGE && fld.number != FILE_ENUM && fld.number != FILE_SERVICE))
      continue;
    size_t o = 0;
    field_t in;
    while (next_field(fld.data, fld.len, &o, &in) == 1)
      if (in.number == ANY_NAME && in.wire_type == 2 && in.len == len &&
          memcmp(in.data, name, len) == 0)
        return 1;
  }
  return 0;
}

static int match_symbol(const descriptor_file_t *f, const char *symbol)
{
  size_t n = strlen(symbol);
  const char *rest = symbol;
  if (f->package_len) {
    if (n <= f->package_len + 1 || memcmp(symbol, f->package, f->package_len) != 0 ||
        symbol[f->package_len] != '.')
      return 0;
    rest = symbol + f->package_len + 1;
  }
  const char *dot = strchr(rest, '.');
  size_t first = dot ? (size_t)(dot - rest) : strlen(rest);
  return first > 0 && defines(f, rest, first);
}

int descriptors_find_symbol(const char *symbol, descriptor_file_t *f)
{
  return find(match_symbol, symbol, f);
}

int descriptors_with_imports(const descriptor_file_t *f, descriptor_file_t *out, size_t max)
{
  for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
    size_t len, off = 0;
    const uint8_t *set = sets[i](&len);
    uintptr_t lo = (uintptr_t)set, at = (uintptr_t)f->bytes;
    if (at < lo || at - lo > len || f->len > len - (at - lo))
      continue;
    size_t n = 0;
    descriptor_file_t g;
    while (descriptors_next_file(set, len, &off, &g) == 1) {
      if (n == max)
        return -1;
      out[n++] = g;
    }
    return (int)n;
  }
  return -1;
}
