# Build options shared by every palm target.
option(PALM_WERROR "Treat warnings as errors" OFF)
option(PALM_BUILD_TESTS "Build the GoogleTest suite" ON)
option(PALM_BUILD_BENCH "Build the Google Benchmark micro-benchmarks" ON)
set(PALM_SANITIZE "" CACHE STRING "Sanitizer build: '' , 'address' (ASan+UBSan) or 'thread' (TSan)")
set_property(CACHE PALM_SANITIZE PROPERTY STRINGS "" address thread)

add_library(palm_options INTERFACE)
target_compile_options(palm_options INTERFACE -Wall -Wextra -Wpedantic -Wshadow
  -Wnon-virtual-dtor -Wold-style-cast -Wcast-align)
if(PALM_WERROR)
  target_compile_options(palm_options INTERFACE -Werror)
endif()

if(PALM_SANITIZE STREQUAL "address")
  set(_palm_san -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
elseif(PALM_SANITIZE STREQUAL "thread")
  set(_palm_san -fsanitize=thread -fno-omit-frame-pointer)
elseif(PALM_SANITIZE)
  message(FATAL_ERROR "PALM_SANITIZE must be empty, 'address' or 'thread', not '${PALM_SANITIZE}'")
endif()
if(_palm_san)
  # Sanitizer builds run at -O1: fast enough for the stress tests, still
  # precise stacks.
  target_compile_options(palm_options INTERFACE ${_palm_san} -O1 -g)
  # GCC 12 reports maybe-uninitialized inside libstdc++'s <regex> and
  # <functional> once the sanitizers instrument them (false positives; the
  # plain builds keep the warning).
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    target_compile_options(palm_options INTERFACE -Wno-maybe-uninitialized)
  endif()
  target_link_options(palm_options INTERFACE ${_palm_san})
  target_compile_definitions(palm_options INTERFACE PALM_SANITIZE_${PALM_SANITIZE}=1)
endif()
