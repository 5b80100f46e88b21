#include "reflection.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "descriptors.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"

typedef Grpc__Reflection__V1__ServerReflectionRequest request_t;
typedef Grpc__Reflection__V1__ServerReflectionResponse response_t;

static const char *const services[] = {
    DESCRIPTORS_ADMIN_SERVICE,
    DESCRIPTORS_HEALTH_SERVICE,
    DESCRIPTORS_REFLECTION_V1_SERVICE,
    DESCRIPTORS_REFLECTION_V1ALPHA_SERVICE,
};
#define NSERVICES (sizeof(services) / sizeof(services[0]))
#define MAX_FILES 16 /* a .proto with its imports; ours have none */

/* Everything one answer points at, on the caller's stack (the response holds no allocations
 * of its own apart from what the request unpacking made). */
typedef struct answer_s {
  Grpc__Reflection__V1__FileDescriptorResponse files;
  ProtobufCBinaryData file_bytes[MAX_FILES];
  Grpc__Reflection__V1__ListServiceResponse list;
  Grpc__Reflection__V1__ServiceResponse service[NSERVICES];
  Grpc__Reflection__V1__ServiceResponse *service_ptr[NSERVICES];
  Grpc__Reflection__V1__ExtensionNumberResponse extensions;
  Grpc__Reflection__V1__ErrorResponse error;
  char message[256];
} answer_t;

static void answer_list(response_t *r, answer_t *a);
static void answer_file(response_t *r, answer_t *a, int found, const descriptor_file_t *f,
                        const char *what, const char *name);
static void answer_error(response_t *r, answer_t *a, int code, const char *what, const char *name);
static int pack(const ProtobufCMessage *m, uint8_t **out, size_t *len);

int reflection_answer(const uint8_t *req, size_t req_len, uint8_t **resp, size_t *resp_len)
{
  request_t *rq = grpc__reflection__v1__server_reflection_request__unpack(NULL, req_len, req);
  if (!rq)
    return REFLECTION_STATUS_INVALID_ARGUMENT;
  response_t r = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
  answer_t a;
  memset(&a, 0, sizeof(a));
  r.valid_host = rq->host;
  r.original_request = rq;
  descriptor_file_t f;

  switch (rq->message_request_case) {
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
    answer_list(&r, &a);
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
    answer_file(&r, &a, descriptors_find_file(rq->file_by_filename, &f) == 0, &f, "file",
                rq->file_by_filename);
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
    answer_file(&r, &a, descriptors_find_symbol(rq->file_containing_symbol, &f) == 0, &f, "symbol",
                rq->file_containing_symbol);
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
    if (descriptors_find_symbol(rq->all_extension_numbers_of_type, &f) != 0) {
      answer_error(&r, &a, REFLECTION_STATUS_NOT_FOUND, "type", rq->all_extension_numbers_of_type);
      break;
    }
    grpc__reflection__v1__extension_number_response__init(&a.extensions);
    a.extensions.base_type_name = rq->all_extension_numbers_of_type;
    r.message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
    r.all_extension_numbers_response = &a.extensions;
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
    answer_error(&r, &a, REFLECTION_STATUS_NOT_FOUND, "extension",
                 rq->file_containing_extension && rq->file_containing_extension->containing_type
                     ? rq->file_containing_extension->containing_type
                     : "");
    break;
  default:
    answer_error(&r, &a, REFLECTION_STATUS_INVALID_ARGUMENT, "request", "(no question asked)");
    break;
  }

  int rc = pack(&r.base, resp, resp_len);
  grpc__reflection__v1__server_reflection_request__free_unpacked(rq, NULL);
  return rc;
}

static void answer_list(response_t *r, answer_t *a)
{
  grpc__reflection__v1__list_service_response__init(&a->list);
  for (size_t i = 0; i < NSERVICES; i++) {
    grpc__reflection__v1__service_response__init(&a->service[i]);
    a->service[i].name = (char *)services[i];
    a->service_ptr[i] = &a->service[i];
  }
  a->list.n_service = NSERVICES;
  a->list.service = a->service_ptr;
  r->message_response_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
  r->list_services_response = &a->list;
}

/* The file and everything it imports, or NOT_FOUND naming what was asked for. */
static void answer_file(response_t *r, answer_t *a, int found, const descriptor_file_t *f,
                        const char *what, const char *name)
{
  descriptor_file_t all[MAX_FILES];
  int n = found ? descriptors_with_imports(f, all, MAX_FILES) : -1;
  if (n <= 0) {
    answer_error(r, a, REFLECTION_STATUS_NOT_FOUND, what, name);
    return;
  }
  grpc__reflection__v1__file_descriptor_response__init(&a->files);
  for (int i = 0; i < n; i++) {
    a->file_bytes[i].data = (uint8_t *)all[i].bytes;
    a->file_bytes[i].len = all[i].len;
  }
  a->files.n_file_descriptor_proto = (size_t)n;
  a->files.file_descriptor_proto = a->file_bytes;
  r->message_response_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
  r->file_descriptor_response = &a->files;
}

static void answer_error(response_t *r, answer_t *a, int code, const char *what, const char *name)
{
  grpc__reflection__v1__error_response__init(&a->error);
  snprintf(a->message, sizeof(a->message), "%s not found: %.200s", what, name);
  if (code == REFLECTION_STATUS_INVALID_ARGUMENT)
    snprintf(a->message, sizeof(a->message), "invalid %s %s", what, name);
  a->error.error_code = code;
  a->error.error_message = a->message;
  r->message_response_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
  r->error_response = &a->error;
}

/* Serializes m into a new buffer (at least one byte long, so an empty message is not NULL). */
static int pack(const ProtobufCMessage *m, uint8_t **out, size_t *len)
{
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf)
    return REFLECTION_STATUS_RESOURCE_EXHAUSTED;
  *len = protobuf_c_message_pack(m, buf);
  *out = buf;
  return REFLECTION_STATUS_OK;
}

/* ---- health ------------------------------------------------------------------------------ */

int reflection_health_check(const uint8_t *req, size_t req_len, bool serving, uint8_t **resp,
                            size_t *resp_len)
{
  Grpc__Health__V1__HealthCheckRequest *rq =
      grpc__health__v1__health_check_request__unpack(NULL, req_len, req);
  if (!rq)
    return REFLECTION_STATUS_INVALID_ARGUMENT;
  int known = rq->service[0] == '\0';
  for (size_t i = 0; i < NSERVICES && !known; i++)
    known = strcmp(rq->service, services[i]) == 0;
  grpc__health__v1__health_check_request__free_unpacked(rq, NULL);
  if (!known)
    return REFLECTION_STATUS_NOT_FOUND;

  Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  r.status = serving ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                     : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
  return pack(&r.base, resp, resp_len);
}
