/*
 * Unit tests of cli/descriptors.c and the build's descriptor sets: every embedded set splits
 * into well-formed files, lookups by file name and by symbol (service, method, message, enum)
 * find the right file and refuse unknown names, malformed bytes are refused, Debian's protobuf
 * for Python (which has never seen our .proto) reads the embedded admin.proto descriptor back
 * with its service and methods, and the protoc-c health/reflection messages round-trip.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "descriptors.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"

static int name_is(const descriptor_file_t *f, const char *name)
{
  return f->name_len == strlen(name) && memcmp(f->name, name, f->name_len) == 0;
}

static int package_is(const descriptor_file_t *f, const char *pkg)
{
  return f->package_len == strlen(pkg) && memcmp(f->package, pkg, f->package_len) == 0;
}

static void every_set_splits_into_its_file(void **state)
{
  const uint8_t *(*sets[])(size_t *) = {descriptors_set_admin, descriptors_set_health,
                                        descriptors_set_reflection_v1,
                                        descriptors_set_reflection_v1alpha};
  const char *names[] = {"mc_proxy/v1/admin.proto", "grpc/health/v1/health.proto",
                         "grpc/reflection/v1/reflection.proto",
                         "grpc/reflection/v1alpha/reflection.proto"};
  const char *packages[] = {"mc_proxy.v1", "grpc.health.v1", "grpc.reflection.v1",
                            "grpc.reflection.v1alpha"};
  for (size_t i = 0; i < 4; i++) {
    size_t len, off = 0;
    const uint8_t *set = sets[i](&len);
    assert_true(len > 100);
    descriptor_file_t f;
    int files = 0, found = 0;
    int r;
    while ((r = descriptors_next_file(set, len, &off, &f)) == 1) {
      files++;
      if (name_is(&f, names[i])) {
        found = 1;
        assert_true(package_is(&f, packages[i]));
        assert_true(f.bytes > set && f.bytes + f.len <= set + len);
      }
    }
    assert_int_equal(r, 0);
    assert_int_equal(off, len);
    assert_true(files >= 1);
    assert_true(found);
  }
}

static void find_file_by_name(void **state)
{
  descriptor_file_t f;
  assert_int_equal(descriptors_find_file("grpc/health/v1/health.proto", &f), 0);
  assert_true(package_is(&f, "grpc.health.v1"));
  assert_int_equal(descriptors_find_file("mc_proxy/v1/admin.proto", &f), 0);
  assert_true(package_is(&f, "mc_proxy.v1"));
  assert_int_equal(descriptors_find_file("mc_proxy/v1/admin", &f), -1);
  assert_int_equal(descriptors_find_file("", &f), -1);
}

static void find_symbol_by_service_method_message_enum(void **state)
{
  descriptor_file_t f;
  assert_int_equal(descriptors_find_symbol(DESCRIPTORS_ADMIN_SERVICE, &f), 0);
  assert_true(name_is(&f, "mc_proxy/v1/admin.proto"));
  /* A method of the service, named as grpcurl asks for it. */
  assert_int_equal(descriptors_find_symbol(DESCRIPTORS_ADMIN_SERVICE ".ListRoutes", &f), 0);
  assert_true(name_is(&f, "mc_proxy/v1/admin.proto"));
  assert_int_equal(descriptors_find_symbol("mc_proxy.v1.ListRoutesRequest", &f), 0);
  assert_true(name_is(&f, "mc_proxy/v1/admin.proto"));
  assert_int_equal(descriptors_find_symbol("grpc.health.v1.HealthCheckResponse", &f), 0);
  assert_true(name_is(&f, "grpc/health/v1/health.proto"));
  /* A nested enum is found through its top-level message. */
  assert_int_equal(descriptors_find_symbol("grpc.health.v1.HealthCheckResponse.ServingStatus", &f),
                   0);
  assert_int_equal(descriptors_find_symbol(DESCRIPTORS_HEALTH_SERVICE, &f), 0);
  assert_int_equal(descriptors_find_symbol(DESCRIPTORS_REFLECTION_V1_SERVICE, &f), 0);
  assert_true(name_is(&f, "grpc/reflection/v1/reflection.proto"));
  assert_int_equal(descriptors_find_symbol(DESCRIPTORS_REFLECTION_V1ALPHA_SERVICE, &f), 0);
  assert_true(name_is(&f, "grpc/reflection/v1alpha/reflection.proto"));
}

static void unknown_symbols_are_not_found(void **state)
{
  descriptor_file_t f;
  const char *bad[] = {"",
                       "mc_proxy.v1",
                       "mc_proxy.v1.",
                       "mc_proxy.v1.NoSuchThing",
                       "mc_proxy.v2.ProxyAdminService",
                       "grpc.health.v1.Healthy",
                       "ProxyAdminService",
                       "mc_proxy.v1ProxyAdminService"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_equal(descriptors_find_symbol(bad[i], &f), -1);
}

static void with_imports_lists_the_whole_set(void **state)
{
  descriptor_file_t f, all[4];
  assert_int_equal(descriptors_find_file("mc_proxy/v1/admin.proto", &f), 0);
  assert_int_equal(descriptors_with_imports(&f, all, 4), 1); /* admin.proto imports nothing */
  assert_ptr_equal(all[0].bytes, f.bytes);
  assert_int_equal(descriptors_with_imports(&f, all, 0), -1); /* no room */
  uint8_t elsewhere[8] = {0};
  descriptor_file_t stranger = {.bytes = elsewhere, .len = sizeof(elsewhere)};
  assert_int_equal(descriptors_with_imports(&stranger, all, 4), -1);
}

static void malformed_sets_are_refused(void **state)
{
  descriptor_file_t f;
  size_t off = 0;
  const uint8_t truncated[] = {0x0a, 0x10, 0x0a, 0x02, 'a'}; /* length past the end */
  assert_int_equal(descriptors_next_file(truncated, sizeof(truncated), &off, &f), -1);
  off = 0;
  const uint8_t no_name[] = {0x0a, 0x03, 0x12, 0x01, 'p'}; /* a file with only a package */
  assert_int_equal(descriptors_next_file(no_name, sizeof(no_name), &off, &f), -1);
  off = 0;
  const uint8_t long_varint[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  assert_int_equal(descriptors_next_file(long_varint, sizeof(long_varint), &off, &f), -1);
  off = 0;
  assert_int_equal(descriptors_next_file(NULL, 0, &off, &f), 0);
  /* Every truncation of the real admin set is refused or ends cleanly, never read past. */
  size_t len;
  const uint8_t *set = descriptors_set_admin(&len);
  for (size_t cut = 0; cut < len; cut++) {
    uint8_t *copy = malloc(cut ? cut : 1);
    memcpy(copy, set, cut);
    off = 0;
    int r;
    while ((r = descriptors_next_file(copy, cut, &off, &f)) == 1)
      assert_true(off <= cut);
    assert_true(r == 0 || r == -1);
    free(copy);
  }
}

/* The number of rpc lines in the source admin.proto the build compiled. */
static int count_rpcs(void)
{
  FILE *fp = fopen(MCP_TEST_SOURCE_DIR "/../proto/mc_proxy/v1/admin.proto", "r");
  assert_non_null(fp);
  char line[512];
  int n = 0;
  while (fgets(line, sizeof(line), fp)) {
    const char *p = line + strspn(line, " \t");
    if (strncmp(p, "rpc ", 4) == 0)
      n++;
  }
  fclose(fp);
  assert_true(n > 0);
  return n;
}

/* Debian's python3-protobuf reads the embedded descriptor with no .proto at hand. */
static void python_protobuf_reads_admin_descriptor(void **state)
{
  if (access("/usr/bin/python3", X_OK) != 0 ||
      system("/usr/bin/python3 -c 'import google.protobuf.descriptor_pb2' 2>/dev/null") != 0) {
    print_message("SKIP: /usr/bin/python3 with python3-protobuf not installed\n");
    skip();
  }
  descriptor_file_t f;
  assert_int_equal(descriptors_find_file("mc_proxy/v1/admin.proto", &f), 0);
  char path[] = "/tmp/mcp-desc-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, f.bytes, f.len), (ssize_t)f.len);
  close(fd);
  char cmd[512];
  snprintf(cmd, sizeof(cmd),
           "/usr/bin/python3 -c 'import sys; from google.protobuf import descriptor_pb2 as d; "
           "f = d.FileDescriptorProto.FromString(open(sys.argv[1], \"rb\").read()); "
           "print(f.package + \".\" + f.service[0].name, len(f.service[0].method))' %s",
           path);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  char out[256] = "";
  size_t n = fread(out, 1, sizeof(out) - 1, p);
  out[n] = '\0';
  pclose(p);
  unlink(path);
  char want[256];
  snprintf(want, sizeof(want), "%s %d\n", DESCRIPTORS_ADMIN_SERVICE, count_rpcs());
  assert_string_equal(out, want);
}

static void health_response_round_trips(void **state)
{
  Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  r.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
  uint8_t buf[16];
  size_t n = grpc__health__v1__health_check_response__pack(&r, buf);
  assert_int_equal(n, 2);
  assert_int_equal(buf[0], 0x08); /* field 1, varint */
  assert_int_equal(buf[1], 2);    /* NOT_SERVING */
  Grpc__Health__V1__HealthCheckResponse *u =
      grpc__health__v1__health_check_response__unpack(NULL, n, buf);
  assert_non_null(u);
  assert_int_equal(u->status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
  grpc__health__v1__health_check_response__free_unpacked(u, NULL);
}

/* A v1 reflection answer carrying the embedded file, read back through the v1alpha messages
 * (the two versions share field numbers, so one server can answer both). */
static void reflection_response_carries_descriptor(void **state)
{
  descriptor_file_t f;
  assert_int_equal(descriptors_find_symbol(DESCRIPTORS_ADMIN_SERVICE, &f), 0);
  ProtobufCBinaryData file = {f.len, (uint8_t *)f.bytes};
  Grpc__Reflection__V1__FileDescriptorResponse fdr =
      GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
  fdr.n_file_descriptor_proto = 1;
  fdr.file_descriptor_proto = &file;
  Grpc__Reflection__V1__ServerReflectionResponse r =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
  r.message_response_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
  r.file_descriptor_response = &fdr;
  size_t n = grpc__reflection__v1__server_reflection_response__get_packed_size(&r);
  uint8_t *buf = malloc(n);
  assert_int_equal(grpc__reflection__v1__server_reflection_response__pack(&r, buf), n);
  Grpc__Reflection__V1alpha__ServerReflectionResponse *u =
      grpc__reflection__v1alpha__server_reflection_response__unpack(NULL, n, buf);
  assert_non_null(u);
  assert_int_equal(
      u->message_response_case,
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
  assert_int_equal(u->file_descriptor_response->n_file_descriptor_proto, 1);
  assert_int_equal(u->file_descriptor_response->file_descriptor_proto[0].len, f.len);
  assert_memory_equal(u->file_descriptor_response->file_descriptor_proto[0].data, f.bytes, f.len);
  grpc__reflection__v1alpha__server_reflection_response__free_unpacked(u, NULL);
  free(buf);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_set_splits_into_its_file),
      cmocka_unit_test(find_file_by_name),
      cmocka_unit_test(find_symbol_by_service_method_message_enum),
      cmocka_unit_test(unknown_symbols_are_not_found),
      cmocka_unit_test(with_imports_lists_the_whole_set),
      cmocka_unit_test(malformed_sets_are_refused),
      cmocka_unit_test(python_protobuf_reads_admin_descriptor),
      cmocka_unit_test(health_response_round_trips),
      cmocka_unit_test(reflection_response_carries_descriptor),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
