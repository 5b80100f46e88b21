# FindGrpcCore: gRPC's core C library (libgrpc + libgpr). Its pkg-config file drags in some 80
# abseil libraries the C API does not need, so link the two libraries directly. Defines
# GrpcCore_FOUND and the imported target GrpcCore::grpc.
find_path(GrpcCore_INCLUDE_DIR grpc/grpc.h)
find_library(GrpcCore_GRPC_LIBRARY grpc)
find_library(GrpcCore_GPR_LIBRARY gpr)

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(GrpcCore
  REQUIRED_VARS GrpcCore_INCLUDE_DIR GrpcCore_GRPC_LIBRARY GrpcCore_GPR_LIBRARY)

if(GrpcCore_FOUND AND NOT TARGET GrpcCore::grpc)
  add_library(GrpcCore::gpr UNKNOWN IMPORTED)
  set_target_properties(GrpcCore::gpr PROPERTIES
    IMPORTED_LOCATION "${GrpcCore_GPR_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${GrpcCore_INCLUDE_DIR}")
  add_library(GrpcCore::grpc UNKNOWN IMPORTED)
  set_target_properties(GrpcCore::grpc PROPERTIES
    IMPORTED_LOCATION "${GrpcCore_GRPC_LIBRARY}"
    INTERFACE_LINK_LIBRARIES GrpcCore::gpr)
endif()
mark_as_advanced(GrpcCore_INCLUDE_DIR GrpcCore_GRPC_LIBRARY GrpcCore_GPR_LIBRARY)
