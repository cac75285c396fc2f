# Build options. TICKFAN_SANITIZE: "" (off), "address" (ASan+UBSan) or "thread" (TSan).
set(TICKFAN_SANITIZE "" CACHE STRING "Sanitizer build: address (ASan+UBSan) or thread (TSan)")

if(TICKFAN_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
elseif(TICKFAN_SANITIZE STREQUAL "thread")
  # TSan does not model atomic_thread_fence; GCC says so at every fence
  # (-Wtsan). Every fence here orders atomic accesses only (the ring log's
  # and last-value cache's shared bytes are atomic too, see src/common/seqcopy.h),
  # so no plain data depends on a fence for its ordering: quiet the warning.
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  if(CMAKE_C_COMPILER_ID STREQUAL "GNU")
    add_compile_options(-Wno-tsan)
  endif()
  add_link_options(-fsanitize=thread)
elseif(NOT TICKFAN_SANITIZE STREQUAL "")
  message(FATAL_ERROR "TICKFAN_SANITIZE='${TICKFAN_SANITIZE}': expected '', 'address' or 'thread'")
endif()

include(${CMAKE_CURRENT_LIST_DIR}/fuzz.cmake)

# TICKFAN_GRPC_PREFIX: empty (default) links Debian's gRPC C core (pkg-config
# grpc + gpr). A directory links that prefix's libgrpc_unsecure and libgpr
# instead, with its headers and an RPATH to its lib/: the NDEBUG build that
# scripts/build-grpc-ndebug installs (default /opt/tickfan-grpc-ndebug). See
# cmake/grpc.cmake and perf/README.md "gRPC built with NDEBUG".
set(TICKFAN_GRPC_PREFIX "" CACHE PATH
    "Link gRPC from this prefix (libgrpc_unsecure + libgpr, see scripts/build-grpc-ndebug) instead of pkg-config's")
