# mcp_protobuf_c_generate(OUT_VAR PROTO_ROOT PROTO_FILE...): runs protoc-c at build time on each
# PROTO_FILE (relative to PROTO_ROOT) and appends the generated .pb-c.c files to OUT_VAR. The
# output goes to the current binary dir, keeping the proto's package path
# (mc_proxy/v1/admin.pb-c.h), so include it as "mc_proxy/v1/admin.pb-c.h". Nothing generated is
# ever written to the source tree.
find_program(PROTOC_C_EXECUTABLE NAMES protoc-c protoc-gen-c REQUIRED)

function(mcp_protobuf_c_generate out_var proto_root)
  set(sources)
  foreach(rel ${ARGN})
    string(REGEX REPLACE "\\.proto$" "" stem "${rel}")
    set(c "${CMAKE_CURRENT_BINARY_DIR}/${stem}.pb-c.c")
    set(h "${CMAKE_CURRENT_BINARY_DIR}/${stem}.pb-c.h")
    add_custom_command(
      OUTPUT "${c}" "${h}"
      COMMAND "${PROTOC_C_EXECUTABLE}" "--c_out=${CMAKE_CURRENT_BINARY_DIR}" "-I${proto_root}"
              "${proto_root}/${rel}"
      DEPENDS "${proto_root}/${rel}"
      COMMENT "protoc-c ${rel}"
      VERBATIM)
    list(APPEND sources "${c}")
  endforeach()
  set(${out_var} ${${out_var}} ${sources} PARENT_SCOPE)
endfunction()
