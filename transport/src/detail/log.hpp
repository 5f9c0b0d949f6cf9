#pragma once
// The transport's logger ("palm.transport", stderr). Thread-safe.

#include <cstdint>

#include <spdlog/spdlog.h>

namespace palm::transport::detail {

spdlog::logger& log();

// Throttles a per-message log line: true for the first few occurrences, then
// for one in every 1000 (the counters keep the exact number).
constexpr bool should_log(std::uint64_t occurrence) noexcept {
  return occurrence <= 5 || occurrence % 1000 == 0;
}

}  // namespace palm::transport::detail
