# mcp_descriptor_embed(OUT_VAR FUNC PROTO_ROOT PROTO_FILE): at build time runs
#   protoc --descriptor_set_out=... --include_imports -I PROTO_ROOT PROTO_FILE
# and turns the resulting FileDescriptorSet into a C file in the current binary dir that
# defines `const uint8_t *FUNC(size_t *len)` returning the bytes. The generated .c is appended
# to OUT_VAR. Nothing generated is written to the source tree; the bytes always match the
# .proto the build used (see cli/descriptors.h for how they are served).
find_program(PROTOC_EXECUTABLE NAMES protoc REQUIRED)
set(MCP_EMBED_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/EmbedBytes.cmake)

function(mcp_descriptor_embed out_var func proto_root rel)
  set(desc "${CMAKE_CURRENT_BINARY_DIR}/descriptors/${func}.pb")
  set(c "${CMAKE_CURRENT_BINARY_DIR}/descriptors/${func}.c")
  add_custom_command(
    OUTPUT "${c}"
    COMMAND ${CMAKE_COMMAND} -E make_directory "${CMAKE_CURRENT_BINARY_DIR}/descriptors"
    COMMAND "${PROTOC_EXECUTABLE}" "--descriptor_set_out=${desc}" --include_imports
            "-I${proto_root}" "${proto_root}/${rel}"
    COMMAND ${CMAKE_COMMAND} "-DIN=${desc}" "-DOUT=${c}" "-DFUNC=${func}" -P "${MCP_EMBED_SCRIPT}"
    DEPENDS "${proto_root}/${rel}" "${MCP_EMBED_SCRIPT}"
    COMMENT "protoc descriptor set ${rel}"
    VERBATIM)
  set(${out_var} ${${out_var}} "${c}" PARENT_SCOPE)
endfunction()
