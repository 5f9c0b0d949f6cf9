#pragma once
// Counters of a part (DESIGN.md "Servers and the router"): messages, bytes,
// errors, queue depth and a latency histogram, readable while it runs.
//
// Each counter has one writer (the part's thread) and any number of readers:
// relaxed atomics. A snapshot is a set of relaxed loads; each value was exact
// at some moment, not all at the same one.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace palm::servers {

// Latencies in power-of-two nanosecond buckets: bucket i holds [2^i, 2^(i+1))
// ns (bucket 0 also holds 0). 40 buckets reach 2^40 ns, about 18 minutes.
class LatencyHistogram {
 public:
  static constexpr std::size_t kBuckets = 40;
  void record(std::chrono::nanoseconds latency) noexcept;
  struct Snapshot {
    std::array<std::uint64_t, kBuckets> counts{};
    std::uint64_t total() const noexcept;
    // The upper bound of the bucket holding the q-quantile (0 < q <= 1);
    // 0 ns when empty. Within a factor of 2 of the true value.
    std::chrono::nanoseconds quantile(double q) const noexcept;
  };
  Snapshot snapshot() const noexcept;

 private:
  std::array<std::atomic<std::uint64_t>, kBuckets> counts_{};
};

struct PartStats {
  std::string name;
  std::uint64_t messages_in = 0;   // taken from its endpoints or its route
  std::uint64_t messages_out = 0;  // handed on (a route, an endpoint)
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  std::uint64_t errors = 0;        // messages it could not serve (answered b'0', dropped)
  std::uint64_t stalls = 0;        // times it waited for room downstream
  std::size_t queue_depth = 0;     // items waiting in its route (approx.)
  LatencyHistogram::Snapshot latency;  // per message, receipt to hand-off
};

// The live counters; PartStats is their snapshot.
struct PartCounters {
  std::atomic<std::uint64_t> messages_in{0}, messages_out{0}, bytes_in{0}, bytes_out{0},
      errors{0}, stalls{0};
  LatencyHistogram latency;

  // Single-writer increments: a relaxed load and store, no locked instruction.
  static void bump(std::atomic<std::uint64_t>& counter, std::uint64_t by = 1) noexcept {
    counter.store(counter.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
  }
  PartStats snapshot(std::string name, std::size_t queue_depth) const;
};

}  // namespace palm::servers
