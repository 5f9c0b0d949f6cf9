#include "palm/core/assert.hpp"

#include <cstdio>
#include <cstdlib>

namespace palm::detail {

void assert_fail(const char* expr, const char* file, int line,
                 const char* func) noexcept {
  // stdio only: an assertion may fire inside the logger or an allocator.
  std::fprintf(stderr, "palm: assertion failed: %s (%s:%d, %s)\n", expr, file,
               line, func);
  std::fflush(stderr);
  std::abort();
}

}  // namespace palm::detail
