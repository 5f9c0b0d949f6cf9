// A producer much faster than the farm (DESIGN.md "Backpressure without
// deadlock"): the client asks for 20 000 messages in flight (its window is
// capped at its SUB channel's 1024: Client::master_window), the master 16
// (its window: the workers' credits would take 128). Memory stays bounded: the master's
// in-flight count never passes its window, the segment's pool is never
// exhausted (what is allocated is bounded by the channels' capacities, not
// by the producer), and nothing is dropped: the exact set comes back.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "fault_util.hpp"

namespace palm::fault {
namespace {

constexpr std::uint64_t kMessages = 20000;
constexpr std::uint32_t kMasterWindow = 16;
constexpr std::uint32_t kClientWindow = 20000;
// The channels a message may wait in (client -> master, the master's
// inbound route, master -> client), 1024 each, plus what is in flight.
constexpr std::size_t kBound = 3 * 1024 + 2 * kMasterWindow + 64;

TEST(Backpressure, AFastProducerIsHeldBackWithNothingDropped) {
  InProcessFarm farm(FarmOptions{.tag = "bp", .window = kMasterWindow, .credits = 64});
  ASSERT_TRUE(farm.up());
  ASSERT_TRUE(farm.add_worker("shm"));
  ASSERT_TRUE(farm.add_worker("shm"));
  servers::Client& client = farm.client(kClientWindow);
  const std::size_t before = farm.segment_pool().stats().allocated_blocks;

  // Sampled every millisecond while the job runs.
  std::atomic<bool> stop{false};  // release by the test, acquire by the sampler
  std::uint64_t max_in_flight = 0;
  std::size_t max_allocated = 0;
  std::vector<ClassStats> low;  // per class, the fewest free blocks seen
  std::uint64_t samples = 0;
  std::thread sampler([&] {
    while (!stop.load(std::memory_order_acquire)) {
      max_in_flight = std::max(max_in_flight, farm.master().dispatch_stats().in_flight);
      const PoolStats st = farm.segment_pool().stats();
      max_allocated = std::max(max_allocated, st.allocated_blocks);
      if (low.empty()) low = st.classes;
      for (std::size_t c = 0; c < st.classes.size() && c < low.size(); ++c) {
        low[c].free = std::min(low[c].free, st.classes[c].free);
      }
      ++samples;
      std::this_thread::sleep_for(1ms);
    }
  });
  GatedJob job(client, "_.echo", kMessages, kMessages);
  const Result<std::uint64_t>& r = job.finish();
  stop.store(true, std::memory_order_release);
  sampler.join();

  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(*r, kMessages);
  const SeqSet& seqs = job.seqs();
  EXPECT_EQ(seqs.bad(), 0u);
  EXPECT_EQ(seqs.twice(), 0u);
  EXPECT_EQ(seqs.lost(), 0u) << "never came back: " << seqs.lost_sample();
  EXPECT_GT(samples, 10u);
  EXPECT_LE(max_in_flight, kMasterWindow);
  const ClassStats* busiest = nullptr;  // the class the messages use
  for (const auto& c : low) {
    EXPECT_TRUE(c.cut == 0 || c.free > 0) << "the pool's class of " << c.block_bytes << " B ran out";
    if (busiest == nullptr || c.cut - c.free > busiest->cut - busiest->free) busiest = &c;
  }
  ASSERT_NE(busiest, nullptr);
  EXPECT_LE(max_allocated - before, kBound) << "allocation grew with the producer, not the channels";
  std::printf("backpressure: %llu messages, max in flight %llu (window %u), max blocks allocated %zu, "
              "fewest free %u of %u blocks of %zu B, %llu samples\n",
              static_cast<unsigned long long>(kMessages), static_cast<unsigned long long>(max_in_flight),
              kMasterWindow, max_allocated, busiest->free, busiest->cut, busiest->block_bytes, static_cast<unsigned long long>(samples));

  farm.stop_workers();
  farm.drop_client();
  farm.expect_pools_full();
}

}  // namespace
}  // namespace palm::fault
