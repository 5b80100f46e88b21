/*
 * reflection: answers gRPC server reflection and health requests, message by message, with no
 * transport (the admin server reads a request off a call and sends back what this returns).
 *
 * Reflection: grpc.reflection.v1 and v1alpha (ServerReflection/ServerReflectionInfo, a
 * bidirectional stream) have the same messages and field numbers, so one function answers both;
 * the admin server serves both method paths with it. It lists the services in descriptors.h and
 * answers file_by_filename / file_containing_symbol with the build's descriptors (the file and
 * everything it imports); extensions are not used by our protos, so file_containing_extension
 * is NOT_FOUND and all_extension_numbers_of_type is an empty list for a known message.
 *
 * Health: grpc.health.v1.Health/Check for the whole server ("") or one of the listed services.
 *
 * Pure functions of their input and the embedded descriptors; any thread. See docs/METRICS.md.
 */
#ifndef MCP_CLI_REFLECTION_H
#define MCP_CLI_REFLECTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* gRPC status codes these functions return (the numbers of the gRPC spec). */
#define REFLECTION_STATUS_OK 0
#define REFLECTION_STATUS_INVALID_ARGUMENT 3
#define REFLECTION_STATUS_NOT_FOUND 5
#define REFLECTION_STATUS_RESOURCE_EXHAUSTED 8

/*
 * Answers one serialized ServerReflectionRequest with a serialized ServerReflectionResponse in
 * *resp (malloc'd, the caller frees). Lookup failures are answered inside the response (its
 * error_response, as the protocol wants), so the stream goes on. Returns REFLECTION_STATUS_OK,
 * REFLECTION_STATUS_INVALID_ARGUMENT when req does not parse (end the call with it), or
 * REFLECTION_STATUS_RESOURCE_EXHAUSTED when memory ran out.
 */
int reflection_answer(const uint8_t *req, size_t req_len, uint8_t **resp, size_t *resp_len);

/*
 * Answers one serialized HealthCheckRequest with a serialized HealthCheckResponse in *resp
 * (malloc'd): SERVING when serving is true, else NOT_SERVING (draining). Returns
 * REFLECTION_STATUS_OK, REFLECTION_STATUS_NOT_FOUND for a service name we do not serve (end the
 * call with that status, no message), REFLECTION_STATUS_INVALID_ARGUMENT for a request that does
 * not parse, or REFLECTION_STATUS_RESOURCE_EXHAUSTED.
 */
int reflection_health_check(const uint8_t *req, size_t req_len, bool serving, uint8_t **resp,
                            size_t *resp_len);

#endif
