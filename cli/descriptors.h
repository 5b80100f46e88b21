/*
 * descriptors: the protobuf descriptors of the services the admin server offers, for gRPC server
 * reflection (grpc.reflection.v1 and v1alpha).
 *
 * The bytes are made by the build (cmake/DescriptorEmbed.cmake runs `protoc --descriptor_set_out
 * --include_imports` over each .proto and embeds the FileDescriptorSet), so they always describe
 * the .proto the binary was built from. The standard health and reflection protos come from
 * Debian's grpc-proto package (/usr/share/grpc-proto); their protoc-c messages are built too
 * (grpc/health/v1/health.pb-c.h, grpc/reflection/v1/reflection.pb-c.h,
 * grpc/reflection/v1alpha/reflection.pb-c.h in the build tree).
 *
 * A reflection answer carries serialized FileDescriptorProto messages: descriptors_find_*()
 * return one, pointing into the embedded bytes (static, never freed, any thread).
 */
#ifndef MCP_CLI_DESCRIPTORS_H
#define MCP_CLI_DESCRIPTORS_H

#include <stddef.h>
#include <stdint.h>

/* The fully-qualified names of the services the admin server answers (ListServices). */
#define DESCRIPTORS_ADMIN_SERVICE "mc_proxy.v1.ProxyAdminService"
#define DESCRIPTORS_HEALTH_SERVICE "grpc.health.v1.Health"
#define DESCRIPTORS_REFLECTION_V1_SERVICE "grpc.reflection.v1.ServerReflection"
#define DESCRIPTORS_REFLECTION_V1ALPHA_SERVICE "grpc.reflection.v1alpha.ServerReflection"

/* The FileDescriptorSet of each .proto with its imports, as made by protoc (generated code). */
const uint8_t *descriptors_set_admin(size_t *len);
const uint8_t *descriptors_set_health(size_t *len);
const uint8_t *descriptors_set_reflection_v1(size_t *len);
const uint8_t *descriptors_set_reflection_v1alpha(size_t *len);

/* One FileDescriptorProto inside a set. name and package are not NUL-terminated. */
typedef struct descriptor_file_s {
  const uint8_t *bytes; /* the serialized FileDescriptorProto */
  size_t len;
  const char *name; /* e.g. "mc_proxy/v1/admin.proto" */
  size_t name_len;
  const char *package; /* e.g. "mc_proxy.v1"; empty when the file has none */
  size_t package_len;
} descriptor_file_t;

/*
 * Walks a FileDescriptorSet: fills *f with the file at *offset and advances it. Returns 1 for a
 * file, 0 at the end, -1 when the bytes are malformed. Start with *offset = 0.
 */
int descriptors_next_file(const uint8_t *set, size_t len, size_t *offset, descriptor_file_t *f);

/* Finds the embedded file named filename (FileByFilename). Returns 0 or -1 (not found). */
int descriptors_find_file(const char *filename, descriptor_file_t *f);

/*
 * Finds the embedded file that defines symbol (FileContainingSymbol): a fully-qualified service,
 * method, message or enum name such as "mc_proxy.v1.ProxyAdminService",
 * "mc_proxy.v1.ProxyAdminService.ListRoutes" or "grpc.health.v1.HealthCheckRequest". The part
 * after the package must start with a top-level message, enum or service of that file. Returns
 * 0 or -1 (not found).
 */
int descriptors_find_symbol(const char *symbol, descriptor_file_t *f);

/*
 * Fills out[0..max) with f and every file it imports, transitively (the whole set protoc made
 * for f's .proto; imports first). f must come from descriptors_find_*. Returns the count, or -1
 * when max is too small or f is not an embedded file.
 */
int descriptors_with_imports(const descriptor_file_t *f, descriptor_file_t *out, size_t max);

#endif
