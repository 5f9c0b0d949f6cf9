#include "palm/servers/counters.hpp"

#include <bit>
#include <cmath>

namespace palm::servers {

void LatencyHistogram::record(std::chrono::nanoseconds latency) noexcept {
  const auto ns = static_cast<std::uint64_t>(latency.count() < 0 ? 0 : latency.count());
  std::size_t bucket = ns == 0 ? 0 : static_cast<std::size_t>(std::bit_width(ns) - 1);
  if (bucket >= kBuckets) bucket = kBuckets - 1;
  // One writer per histogram (the part's thread), so load + store is exact.
  auto& c = counts_[bucket];
  c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

LatencyHistogram::Snapshot LatencyHistogram::snapshot() const noexcept {
  Snapshot s;
  for (std::size_t i = 0; i < kBuckets; ++i) s.counts[i] = counts_[i].load(std::memory_order_relaxed);
  return s;
}

std::uint64_t LatencyHistogram::Snapshot::total() const noexcept {
  std::uint64_t n = 0;
  for (auto c : counts) n += c;
  return n;
}

std::chrono::nanoseconds LatencyHistogram::Snapshot::quantile(double q) const noexcept {
  const std::uint64_t n = total();
  if (n == 0) return std::chrono::nanoseconds(0);
  const auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(n)));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    seen += counts[i];
    if (seen >= rank && counts[i] != 0) {
      return std::chrono::nanoseconds(std::int64_t{1} << (i + 1));
    }
  }
  return std::chrono::nanoseconds(std::int64_t{1} << kBuckets);
}

PartStats PartCounters::snapshot(std::string name, std::size_t queue_depth) const {
  PartStats s;
  s.name = std::move(name);
  s.messages_in = messages_in.load(std::memory_order_relaxed);
  s.messages_out = messages_out.load(std::memory_order_relaxed);
  s.bytes_in = bytes_in.load(std::memory_order_relaxed);
  s.bytes_out = bytes_out.load(std::memory_order_relaxed);
  s.errors = errors.load(std::memory_order_relaxed);
  s.stalls = stalls.load(std::memory_order_relaxed);
  s.queue_depth = queue_depth;
  s.latency = latency.snapshot();
  return s;
}

}  // namespace palm::servers
