# TICKFAN_FUZZ: build the libFuzzer targets (tests/fuzz). Needs clang
# (CC=clang) and its fuzzer runtime. Everything, the core library included,
# is then compiled with coverage instrumentation for the fuzzer and with
# ASan+UBSan, so a finding in the library is seen where it happens.
option(TICKFAN_FUZZ "Build the libFuzzer targets in tests/fuzz (clang only, ASan+UBSan)" OFF)

if(TICKFAN_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "TICKFAN_FUZZ=ON needs clang (configure with CC=clang); "
                        "the C compiler is ${CMAKE_C_COMPILER_ID} (${CMAKE_C_COMPILER})")
  endif()
  if(TICKFAN_SANITIZE STREQUAL "thread")
    message(FATAL_ERROR "TICKFAN_FUZZ=ON builds with ASan+UBSan; it cannot be combined with "
                        "TICKFAN_SANITIZE=thread")
  endif()
  include(CheckCSourceCompiles)
  set(CMAKE_REQUIRED_FLAGS "-fsanitize=fuzzer,address,undefined")
  check_c_source_compiles([=[
    #include <stddef.h>
    #include <stdint.h>
    int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { return 0; }
  ]=] TICKFAN_HAVE_LIBFUZZER)
  unset(CMAKE_REQUIRED_FLAGS)
  if(NOT TICKFAN_HAVE_LIBFUZZER)
    message(FATAL_ERROR "TICKFAN_FUZZ=ON: ${CMAKE_C_COMPILER} cannot link -fsanitize=fuzzer "
                        "(Debian: install libclang-rt-14-dev)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link -fno-omit-frame-pointer -g)
  if(NOT TICKFAN_SANITIZE STREQUAL "address")
    add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined)
    add_link_options(-fsanitize=address,undefined)
  endif()
endif()
