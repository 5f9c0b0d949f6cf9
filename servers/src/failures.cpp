#include "palm/servers/failures.hpp"

namespace palm::servers {

const char* to_string(Failure failure) noexcept {
  switch (failure) {
    case Failure::kWrongServer: return "wrong server";
    case Failure::kBadStep: return "bad step";
    case Failure::kStageOutOfRange: return "stage out of range";
    case Failure::kUnknownMethod: return "unknown method";
    case Failure::kNoResult: return "no result";
    case Failure::kMethodFailed: return "method failed";
    case Failure::kCount: break;
  }
  return "?";
}

void FailureCounters::record(Failure failure, spdlog::logger& logger,
                             const std::string& reason) noexcept {
  const std::uint64_t n =
      counts_[static_cast<std::size_t>(failure)].fetch_add(1, std::memory_order_relaxed) + 1;
  if (!should_log_nth(n)) return;
  try {
    if (n <= 10) {
      logger.error("{}", reason);
    } else {
      logger.error("{} ({} {} so far)", reason, n, to_string(failure));
    }
  } catch (...) {
    // Logging never takes a server down.
  }
}

std::uint64_t FailureCounters::total() const noexcept {
  std::uint64_t n = 0;
  for (const auto& c : counts_) n += c.load(std::memory_order_relaxed);
  return n;
}

}  // namespace palm::servers
