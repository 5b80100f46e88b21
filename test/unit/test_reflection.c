/*
 * Unit tests of cli/reflection.c. The client side is protoc itself with Debian's standard
 * reflection and health protos (/usr/share/grpc-proto): requests are made with
 * `protoc --encode` from text and answers read with `protoc --decode`, so the check does not
 * depend on our own protoc-c code or on ever having seen admin.proto. Both reflection versions
 * (v1, v1alpha) are asked. The descriptor bytes in the answers are compared with the build's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "descriptors.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "reflection.h"

#define PROTO_DIR "/usr/share/grpc-proto"
#define V1 "grpc.reflection.v1.ServerReflection", "grpc/reflection/v1/reflection.proto"
#define V1ALPHA                                                                                    \
  "grpc.reflection.v1alpha.ServerReflection", "grpc/reflection/v1alpha/reflection.proto"
#define HEALTH "grpc.health.v1.Health", "grpc/health/v1/health.proto"

/* Runs protoc --encode/--decode=<type> over in; returns the malloc'd output and its length. */
static uint8_t *protoc(const char *mode, const char *type, const char *proto, const void *in,
                       size_t in_len, size_t *out_len)
{
  char in_path[] = "/tmp/mcp-refl-in-XXXXXX", out_path[] = "/tmp/mcp-refl-out-XXXXXX";
  int fd = mkstemp(in_path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, in, in_len), (ssize_t)in_len);
  close(fd);
  fd = mkstemp(out_path);
  assert_true(fd >= 0);
  close(fd);
  char cmd[1024];
  snprintf(cmd, sizeof(cmd), "protoc --%s=%s -I%s %s < %s > %s", mode, type, PROTO_DIR, proto,
           in_path, out_path);
  int rc = system(cmd);
  assert_int_equal(rc, 0);
  FILE *f = fopen(out_path, "rb");
  assert_non_null(f);
  uint8_t *out = malloc(1 << 20);
  assert_non_null(out);
  *out_len = fread(out, 1, (1 << 20) - 1, f);
  out[*out_len] = 0;
  fclose(f);
  unlink(in_path);
  unlink(out_path);
  return out;
}

/* Asks reflection (message type prefix "grpc.reflection.vX") the text request; returns the
 * answer as protoc's text (malloc'd). */
static char *ask(const char *service, const char *proto, const char *text)
{
  char req_type[128], resp_type[128];
  const char *dot = strrchr(service, '.');
  snprintf(req_type, sizeof(req_type), "%.*s.ServerReflectionRequest", (int)(dot - service),
           service);
  snprintf(resp_type, sizeof(resp_type), "%.*s.ServerReflectionResponse", (int)(dot - service),
           service);
  size_t req_len, resp_len, text_len;
  uint8_t *req = protoc("encode", req_type, proto, text, strlen(text), &req_len);
  uint8_t *resp = NULL;
  assert_int_equal(reflection_answer(req, req_len, &resp, &resp_len), REFLECTION_STATUS_OK);
  char *out = (char *)protoc("decode", resp_type, proto, resp, resp_len, &text_len);
  free(req);
  free(resp);
  return out;
}

static void list_services_names_all_four(void **state)
{
  const char *versions[][2] = {{V1}, {V1ALPHA}};
  for (int v = 0; v < 2; v++) {
    char *out = ask(versions[v][0], versions[v][1], "host: \"h1\" list_services: \"\"");
    assert_non_null(strstr(out, "valid_host: \"h1\""));
    assert_non_null(strstr(out, "original_request {"));
    assert_non_null(strstr(out, "name: \"" DESCRIPTORS_ADMIN_SERVICE "\""));
    assert_non_null(strstr(out, "name: \"grpc.health.v1.Health\""));
    assert_non_null(strstr(out, "name: \"grpc.reflection.v1.ServerReflection\""));
    assert_non_null(strstr(out, "name: \"grpc.reflection.v1alpha.ServerReflection\""));
    free(out);
  }
}

/* The answer to file_containing_symbol carries exactly the build's admin.proto descriptor. */
static void symbol_answer_carries_admin_descriptor(void **state)
{
  size_t req_len, resp_len;
  const char *text = "file_containing_symbol: \"" DESCRIPTORS_ADMIN_SERVICE "\"";
  uint8_t *req = protoc("encode", "grpc.reflection.v1alpha.ServerReflectionRequest",
                        "grpc/reflection/v1alpha/reflection.proto", text, strlen(text), &req_len);
  uint8_t *resp = NULL;
  assert_int_equal(reflection_answer(req, req_len, &resp, &resp_len), REFLECTION_STATUS_OK);
  Grpc__Reflection__V1__ServerReflectionResponse *r =
      grpc__reflection__v1__server_reflection_response__unpack(NULL, resp_len, resp);
  assert_non_null(r);
  assert_int_equal(
      r->message_response_case,
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
  descriptor_file_t f;
  assert_int_equal(descriptors_find_file("mc_proxy/v1/admin.proto", &f), 0);
  assert_int_equal(r->file_descriptor_response->n_file_descriptor_proto, 1);
  assert_int_equal(r->file_descriptor_response->file_descriptor_proto[0].len, f.len);
  assert_memory_equal(r->file_descriptor_response->file_descriptor_proto[0].data, f.bytes, f.len);
  grpc__reflection__v1__server_reflection_response__free_unpacked(r, NULL);
  free(req);
  free(resp);
}

static void file_by_name_and_method_symbol_are_found(void **state)
{
  char *out = ask(V1, "file_by_filename: \"grpc/health/v1/health.proto\"");
  assert_non_null(strstr(out, "file_descriptor_response {"));
  assert_non_null(strstr(out, "file_descriptor_proto: \""));
  free(out);
  out = ask(V1ALPHA, "file_containing_symbol: \"grpc.health.v1.Health.Check\"");
  assert_non_null(strstr(out, "file_descriptor_proto: \""));
  free(out);
}

static void unknown_names_answer_not_found_in_stream(void **state)
{
  const char *questions[] = {
      "file_containing_symbol: \"mc_proxy.v1.Nope\"",
      "file_by_filename: \"mc_proxy/v1/nope.proto\"",
      "file_containing_extension { containing_type: \"mc_proxy.v1.Route\" extension_number: 9 }",
      "all_extension_numbers_of_type: \"no.Such\"",
  };
  for (size_t i = 0; i < sizeof(questions) / sizeof(questions[0]); i++) {
    char *out = ask(V1, questions[i]);
    if (!strstr(out, "error_code: 5"))
      print_message("%s -> %s\n", questions[i], out);
    assert_non_null(strstr(out, "error_response {"));
    assert_non_null(strstr(out, "error_code: 5"));
    assert_null(strstr(out, "file_descriptor_proto"));
    free(out);
  }
}

static void extension_numbers_of_known_type_are_empty(void **state)
{
  char *out = ask(V1ALPHA, "all_extension_numbers_of_type: \"grpc.health.v1.HealthCheckRequest\"");
  assert_non_null(strstr(out, "all_extension_numbers_response {"));
  assert_non_null(strstr(out, "base_type_name: \"grpc.health.v1.HealthCheckRequest\""));
  assert_null(strstr(out, "extension_number:"));
  free(out);
}

static void empty_question_is_invalid_argument_in_stream(void **state)
{
  char *out = ask(V1, "host: \"x\"");
  assert_non_null(strstr(out, "error_code: 3"));
  free(out);
}

static void garbage_request_is_invalid_argument(void **state)
{
  const uint8_t garbage[] = {0x22, 0x10, 'a'}; /* field 4, length past the end */
  uint8_t *resp = NULL;
  size_t len = 0;
  assert_int_equal(reflection_answer(garbage, sizeof(garbage), &resp, &len),
                   REFLECTION_STATUS_INVALID_ARGUMENT);
  assert_null(resp);
}

/* ---- health ------------------------------------------------------------------------------ */

/* Asks Health/Check with the text request; returns the status code and protoc's text. */
static int check(const char *text, bool serving, char **out)
{
  size_t req_len, resp_len, out_len;
  uint8_t *req = protoc("encode", "grpc.health.v1.HealthCheckRequest",
                        "grpc/health/v1/health.proto", text, strlen(text), &req_len);
  uint8_t *resp = NULL;
  int rc = reflection_health_check(req, req_len, serving, &resp, &resp_len);
  *out = NULL;
  if (rc == REFLECTION_STATUS_OK)
    *out = (char *)protoc("decode", "grpc.health.v1.HealthCheckResponse",
                          "grpc/health/v1/health.proto", resp, resp_len, &out_len);
  free(req);
  free(resp);
  return rc;
}

static void health_follows_serving(void **state)
{
  char *out;
  assert_int_equal(check("", true, &out), REFLECTION_STATUS_OK);
  assert_string_equal(out, "status: SERVING\n");
  free(out);
  assert_int_equal(check("", false, &out), REFLECTION_STATUS_OK);
  assert_string_equal(out, "status: NOT_SERVING\n");
  free(out);
  assert_int_equal(check("service: \"" DESCRIPTORS_ADMIN_SERVICE "\"", true, &out),
                   REFLECTION_STATUS_OK);
  assert_string_equal(out, "status: SERVING\n");
  free(out);
}

static void health_of_unknown_service_is_not_found(void **state)
{
  char *out;
  assert_int_equal(check("service: \"other.Service\"", true, &out), REFLECTION_STATUS_NOT_FOUND);
  assert_null(out);
  const uint8_t garbage[] = {0x0a, 0x05, 'a'};
  uint8_t *resp = NULL;
  size_t len;
  assert_int_equal(reflection_health_check(garbage, sizeof(garbage), true, &resp, &len),
                   REFLECTION_STATUS_INVALID_ARGUMENT);
  assert_null(resp);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(list_services_names_all_four),
      cmocka_unit_test(symbol_answer_carries_admin_descriptor),
      cmocka_unit_test(file_by_name_and_method_symbol_are_found),
      cmocka_unit_test(unknown_names_answer_not_found_in_stream),
      cmocka_unit_test(extension_numbers_of_known_type_are_empty),
      cmocka_unit_test(empty_question_is_invalid_argument_in_stream),
      cmocka_unit_test(garbage_request_is_invalid_argument),
      cmocka_unit_test(health_follows_serving),
      cmocka_unit_test(health_of_unknown_service_is_not_found),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
