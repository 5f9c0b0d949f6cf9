#include "palm/servers/step.hpp"

#include <fmt/format.h>

namespace palm::servers {
namespace {

// Python's str.split() separators that can appear in a function name.
constexpr bool is_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

}  // namespace

std::size_t step_count(std::string_view function) noexcept {
  std::size_t count = 0;
  bool in_word = false;
  for (char c : function) {
    if (is_space(c)) {
      in_word = false;
    } else if (!in_word) {
      in_word = true;
      ++count;
    }
  }
  return count == 0 ? 1 : count;
}

Result<std::string_view> current_step(std::string_view function, std::int64_t stage) {
  // pylm tests `' ' in function` only: other whitespace alone does not split.
  if (function.find(' ') == std::string_view::npos) return function;
  std::int64_t index = 0;
  std::size_t i = 0;
  while (i < function.size()) {
    while (i < function.size() && is_space(function[i])) ++i;
    if (i == function.size()) break;
    std::size_t end = i;
    while (end < function.size() && !is_space(function[end])) ++end;
    if (index == stage) return function.substr(i, end - i);
    ++index;
    i = end;
  }
  return make_error(Errc::kOutOfRange,
                    fmt::format("stage {} is out of range of function '{}' ({} steps)", stage,
                                function, index));
}

Result<ServerStep> split_server_step(std::string_view step) {
  const auto dot = step.find('.');
  if (dot == std::string_view::npos || step.find('.', dot + 1) != std::string_view::npos) {
    return make_error(Errc::kMalformed,
                      fmt::format("step '{}' is not 'server.method' (exactly one '.')", step));
  }
  return ServerStep{step.substr(0, dot), step.substr(dot + 1)};
}

Result<std::string_view> worker_method(std::string_view step) {
  const auto dot = step.find('.');
  if (dot == std::string_view::npos) {
    return make_error(Errc::kMalformed, fmt::format("step '{}' has no '.' before the method", step));
  }
  auto rest = step.substr(dot + 1);
  return rest.substr(0, rest.find('.'));
}

}  // namespace palm::servers
