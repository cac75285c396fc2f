# The gRPC C core that tickfan_common (and so every layer, binary and test) links:
# the imported target tickfan::grpc, and TICKFAN_GRPC_NDEBUG, whether that
# core was built with NDEBUG ("true", "false" or "unknown"), which tickfand
# logs at start.
#
# TICKFAN_GRPC_PREFIX empty: Debian's libgrpc + libgpr through pkg-config
# (or whatever PKG_CONFIG_PATH finds first, e.g. /opt/grpc in the image).
# TICKFAN_GRPC_PREFIX set: that prefix's include/, lib/libgrpc_unsecure.so
# and lib/libgpr.so, as scripts/build-grpc-ndebug installs them. The unsecure
# core has everything tickfan uses, insecure credentials included; tickfan
# uses no TLS. Its lib/ goes into the build and install RPATH, so the binaries
# load it rather than Debian's libgpr.so.29 (same soname).
add_library(tickfan::grpc INTERFACE IMPORTED)

if(TICKFAN_GRPC_PREFIX)
  set(_grpc_prefix ${TICKFAN_GRPC_PREFIX})
  foreach(f include/grpc/grpc.h include/grpc/grpc_security.h lib/libgrpc_unsecure.so lib/libgpr.so)
    if(NOT EXISTS ${_grpc_prefix}/${f})
      message(FATAL_ERROR "TICKFAN_GRPC_PREFIX='${_grpc_prefix}': ${_grpc_prefix}/${f} does not exist; "
                          "build it with: scripts/build-grpc-ndebug ${_grpc_prefix}")
    endif()
  endforeach()
  set_target_properties(tickfan::grpc PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES ${_grpc_prefix}/include
    INTERFACE_LINK_LIBRARIES "${_grpc_prefix}/lib/libgrpc_unsecure.so;${_grpc_prefix}/lib/libgpr.so")
  list(APPEND CMAKE_BUILD_RPATH ${_grpc_prefix}/lib)
  list(APPEND CMAKE_INSTALL_RPATH ${_grpc_prefix}/lib)

  # BUILD-INFO is written by scripts/build-grpc-ndebug; a prefix made some
  # other way is linked all the same, its build type unknown.
  set(TICKFAN_GRPC_NDEBUG unknown)
  if(EXISTS ${_grpc_prefix}/BUILD-INFO)
    file(STRINGS ${_grpc_prefix}/BUILD-INFO _grpc_flags REGEX "^CFLAGS:")
    if(_grpc_flags MATCHES "-DNDEBUG")
      set(TICKFAN_GRPC_NDEBUG true)
    else()
      set(TICKFAN_GRPC_NDEBUG false)
    endif()
  endif()
  message(STATUS "gRPC: ${_grpc_prefix} (libgrpc_unsecure, libgpr; NDEBUG: ${TICKFAN_GRPC_NDEBUG})")
else()
  pkg_check_modules(GRPC REQUIRED IMPORTED_TARGET grpc gpr)
  set_target_properties(tickfan::grpc PROPERTIES INTERFACE_LINK_LIBRARIES PkgConfig::GRPC)
  # Debian's libgrpc is built without NDEBUG (CMAKE_BUILD_TYPE is commented
  # out in its debian/rules); of another gRPC nothing is known here.
  if(GRPC_grpc_PREFIX STREQUAL "/usr")
    set(TICKFAN_GRPC_NDEBUG false)
  else()
    set(TICKFAN_GRPC_NDEBUG unknown)
  endif()
  message(STATUS "gRPC: pkg-config grpc ${GRPC_grpc_VERSION} in ${GRPC_grpc_PREFIX} (NDEBUG: ${TICKFAN_GRPC_NDEBUG})")
endif()
