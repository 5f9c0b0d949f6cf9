#pragma once
// PALM_ASSERT is for palm's own bugs: it logs file:line and aborts. Data that
// came from another process is never asserted on (a bad handle is an Error).

namespace palm::detail {
[[noreturn]] void assert_fail(const char* expr, const char* file, int line,
                              const char* func) noexcept;
}  // namespace palm::detail

#define PALM_ASSERT(expr)                                                  \
  (__builtin_expect(static_cast<bool>(expr), 1)                            \
       ? static_cast<void>(0)                                              \
       : ::palm::detail::assert_fail(#expr, __FILE__, __LINE__, __func__))
