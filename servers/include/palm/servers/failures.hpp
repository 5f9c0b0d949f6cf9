#pragma once
// Why a message could not be served, counted per kind (PROTOCOL.md "Message
// flow": each of these stalls or kills a part in pylm; palm answers b'0' with
// the reason in its error field and goes on), and the log throttle: the
// first few of a kind are logged, then one in a thousand.

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include <spdlog/logger.h>

namespace palm::servers {

enum class Failure : std::uint8_t {
  kWrongServer,     // "You called X, instead of Y"
  kBadStep,         // a step without exactly one '.' (or none, for a worker)
  kStageOutOfRange, // the stage indexes past the function's steps
  kUnknownMethod,   // no method of that name
  kNoResult,        // the method returned nothing where a result is due
  kMethodFailed,    // the method threw
  kCount
};
const char* to_string(Failure failure) noexcept;

class FailureCounters {
 public:
  // Counts one; logs it at ERROR on `logger` unless throttled.
  void record(Failure failure, spdlog::logger& logger, const std::string& reason) noexcept;
  std::uint64_t count(Failure failure) const noexcept {
    return counts_[static_cast<std::size_t>(failure)].load(std::memory_order_relaxed);
  }
  std::uint64_t total() const noexcept;

 private:
  // Relaxed: independent counts; fetch_add because several threads (a
  // server's parts) may record.
  std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(Failure::kCount)> counts_{};
};

// True for the 1st..10th occurrence and then every 1000th.
constexpr bool should_log_nth(std::uint64_t n) noexcept { return n <= 10 || n % 1000 == 0; }

}  // namespace palm::servers
