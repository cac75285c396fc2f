# Build options. TICKFAN_SANITIZE: "" (off), "address" (ASan+UBSan) or "thread" (TSan).
set(TICKFAN_SANITIZE "" CACHE STRING "Sanitizer build: address (ASan+UBSan) or thread (TSan)")

if(TICKFAN_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
elseif(TICKFAN_SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(NOT TICKFAN_SANITIZE STREQUAL "")
  message(FATAL_ERROR "TICKFAN_SANITIZE='${TICKFAN_SANITIZE}': expected '', 'address' or 'thread'")
endif()

include(${CMAKE_CURRENT_LIST_DIR}/fuzz.cmake)
