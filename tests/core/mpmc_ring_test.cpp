// MpmcRing: edges (full, empty, wrap-around, batches, timeouts, shutdown) and
// N producers x M consumers stress after a start barrier, items carrying
// (producer, sequence): each arrives exactly once, and the sequence of each
// producer seen by any one consumer increases. 1, 3 and far more threads than
// the 2 cores. Threads only: runs under TSan.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

// The test-only hook, defined before the header: yields inside the claim
// windows of the CAS loops when a stress test turns it on. The ring is
// instantiated here for this file's own Item type only (no other translation
// unit sees this hook).
namespace palm_mpmc_test {
inline std::atomic<bool> g_yield_in_claims{false};
inline void claim_hook() noexcept {
  // relaxed: a switch set before the threads start.
  if (g_yield_in_claims.load(std::memory_order_relaxed)) std::this_thread::yield();
}
}  // namespace palm_mpmc_test
#define PALM_MPMC_RING_TEST_HOOK() ::palm_mpmc_test::claim_hook()

#include <gtest/gtest.h>

#include "palm/core/mpmc_ring.hpp"

namespace palm {
namespace {

using namespace std::chrono_literals;

#if defined(PALM_SANITIZE_thread) || defined(PALM_SANITIZE_address)
constexpr std::uint64_t kStressItems = 150'000;  // per run, over all producers
#else
constexpr std::uint64_t kStressItems = 200'000;
#endif
// No run may take longer; hitting it fails the run (it never ends a passing one).
constexpr auto kStressDeadline = 30s;
// "Never" for a blocking wait that must be woken: a timeout fails the test.
constexpr auto kNever = 60s;

struct Item {
  std::uint64_t v;
};
Item make_item(std::uint64_t producer, std::uint64_t seq) { return Item{(producer << 32) | seq}; }
std::uint64_t producer_of(Item item) { return item.v >> 32; }
std::uint64_t seq_of(Item item) { return item.v & 0xffffffffu; }

using Ring = MpmcRing<Item>;

TEST(MpmcRing, RejectsCapacityThatIsNotAPowerOfTwo) {
  EXPECT_THROW(Ring(0), std::invalid_argument);
  EXPECT_THROW(Ring(1), std::invalid_argument);
  EXPECT_THROW(Ring(3), std::invalid_argument);
  EXPECT_THROW(Ring(1000), std::invalid_argument);
  EXPECT_FALSE(Ring::valid_capacity(6));
  EXPECT_TRUE(Ring::valid_capacity(2));
  EXPECT_TRUE(Ring::valid_capacity(1024));
  Ring ring(2);
  EXPECT_EQ(ring.capacity(), 2u);
}

TEST(MpmcRing, TryPopFailsWhenEmpty) {
  Ring ring(8);
  Item out{42};
  EXPECT_FALSE(ring.try_pop(out));
  EXPECT_EQ(out.v, 42u);  // untouched
  Item batch[4];
  EXPECT_EQ(ring.try_pop_n(batch, 4), 0u);
  EXPECT_EQ(ring.size_approx(), 0u);
}

TEST(MpmcRing, TryPushFailsWhenFull) {
  Ring ring(8);
  for (std::uint64_t i = 0; i < 8; ++i) ASSERT_TRUE(ring.try_push(Item{i}));
  EXPECT_FALSE(ring.try_push(Item{99}));
  EXPECT_EQ(ring.size_approx(), 8u);
  Item out{};
  ASSERT_TRUE(ring.try_pop(out));
  EXPECT_EQ(out.v, 0u);
  EXPECT_TRUE(ring.try_push(Item{8}));
  EXPECT_FALSE(ring.try_push(Item{100}));
}

TEST(MpmcRing, PopsInPushOrder) {
  Ring ring(16);
  for (std::uint64_t i = 0; i < 10; ++i) ASSERT_TRUE(ring.try_push(Item{i}));
  for (std::uint64_t i = 0; i < 10; ++i) {
    Item out{};
    ASSERT_TRUE(ring.try_pop(out));
    EXPECT_EQ(out.v, i);
  }
}

TEST(MpmcRing, WrapsAroundManyTimesItsCapacity) {
  Ring ring(4);
  std::uint64_t next_in = 0;
  std::uint64_t next_out = 0;
  // 1000 rounds of a varying fill level: ~600 laps of the 4 cells.
  for (int round = 0; round < 1000; ++round) {
    const int fill = 1 + round % 4;
    for (int i = 0; i < fill; ++i) ASSERT_TRUE(ring.try_push(Item{next_in++}));
    for (int i = 0; i < fill; ++i) {
      Item out{};
      ASSERT_TRUE(ring.try_pop(out));
      ASSERT_EQ(out.v, next_out++);
    }
  }
  EXPECT_EQ(ring.size_approx(), 0u);
  EXPECT_GT(next_in, 100u * ring.capacity());
}

TEST(MpmcRing, TryPushNTakesWhatFits) {
  Ring ring(8);
  Item in[20];
  for (std::uint64_t i = 0; i < 20; ++i) in[i] = Item{i};
  EXPECT_EQ(ring.try_push_n(in, 5), 5u);
  EXPECT_EQ(ring.try_push_n(in + 5, 5), 3u);
  EXPECT_EQ(ring.try_push_n(in + 8, 5), 0u);
  EXPECT_EQ(ring.try_push_n(in, 0), 0u);
  Item out[20];
  EXPECT_EQ(ring.try_pop_n(out, 20), 8u);
  for (std::uint64_t i = 0; i < 8; ++i) EXPECT_EQ(out[i].v, i);
}

TEST(MpmcRing, BatchLargerThanCapacityIsCut) {
  Ring ring(8);
  Item in[20];
  for (std::uint64_t i = 0; i < 20; ++i) in[i] = Item{i};
  EXPECT_EQ(ring.try_push_n(in, 20), 8u);
  Item out[20];
  EXPECT_EQ(ring.try_pop_n(out, 3), 3u);
  EXPECT_EQ(ring.try_pop_n(out + 3, 20), 5u);
  for (std::uint64_t i = 0; i < 8; ++i) EXPECT_EQ(out[i].v, i);
}

TEST(MpmcRing, BatchesWrapAround) {
  Ring ring(8);
  std::uint64_t next_in = 0;
  std::uint64_t next_out = 0;
  for (int round = 0; round < 500; ++round) {
    Item in[7];
    const std::size_t n = 1 + static_cast<std::size_t>(round) % 7;
    for (std::size_t i = 0; i < n; ++i) in[i] = Item{next_in + i};
    const std::size_t pushed = ring.try_push_n(in, n);
    next_in += pushed;
    Item out[8];
    const std::size_t popped = ring.try_pop_n(out, 1 + static_cast<std::size_t>(round) % 5);
    for (std::size_t i = 0; i < popped; ++i) ASSERT_EQ(out[i].v, next_out++);
  }
  Item out[8];
  const std::size_t rest = ring.try_pop_n(out, 8);
  for (std::size_t i = 0; i < rest; ++i) ASSERT_EQ(out[i].v, next_out++);
  EXPECT_EQ(next_out, next_in);
  EXPECT_GT(next_in, 100u * ring.capacity());
}

TEST(MpmcRing, PopForTimesOutWhenNothingComes) {
  Ring ring(8);
  Item out{7};
  EXPECT_EQ(ring.pop_for(out, 3ms), WaitResult::kTimeout);
  EXPECT_EQ(ring.pop_for(out, 0ms), WaitResult::kTimeout);
  EXPECT_EQ(out.v, 7u);
  EXPECT_EQ(ring.size_approx(), 0u);
}

TEST(MpmcRing, PushForTimesOutWhenFull) {
  Ring ring(2);
  ASSERT_EQ(ring.push_for(Item{1}, 3ms), WaitResult::kReady);
  ASSERT_EQ(ring.push_for(Item{2}, 3ms), WaitResult::kReady);
  EXPECT_EQ(ring.push_for(Item{3}, 3ms), WaitResult::kTimeout);
  EXPECT_EQ(ring.push_for(Item{3}, 0ms), WaitResult::kTimeout);
  Item out{};
  ASSERT_EQ(ring.pop_for(out, 3ms), WaitResult::kReady);
  EXPECT_EQ(out.v, 1u);
  ASSERT_EQ(ring.pop_for(out, 3ms), WaitResult::kReady);
  EXPECT_EQ(out.v, 2u);
  EXPECT_EQ(ring.pop_for(out, 1ms), WaitResult::kTimeout);
}

TEST(MpmcRing, ShutdownWakesABlockedPop) {
  Ring ring(8);
  WaitResult result = WaitResult::kReady;
  std::thread consumer([&] {
    Item out{};
    result = ring.pop_for(out, kNever);
  });
  ring.shutdown();  // before or after the consumer sleeps: either way it ends
  consumer.join();
  EXPECT_EQ(result, WaitResult::kShutdown);
  EXPECT_TRUE(ring.is_shutdown());
}

TEST(MpmcRing, ShutdownWakesABlockedPush) {
  Ring ring(2);
  ASSERT_TRUE(ring.try_push(Item{1}));
  ASSERT_TRUE(ring.try_push(Item{2}));
  WaitResult result = WaitResult::kReady;
  std::thread producer([&] { result = ring.push_for(Item{3}, kNever); });
  ring.shutdown();
  producer.join();
  EXPECT_EQ(result, WaitResult::kShutdown);
}

TEST(MpmcRing, ConsumersDrainAfterShutdown) {
  Ring ring(8);
  for (std::uint64_t i = 0; i < 3; ++i) ASSERT_TRUE(ring.try_push(Item{i}));
  ring.shutdown();
  Item out{};
  for (std::uint64_t i = 0; i < 3; ++i) {
    ASSERT_EQ(ring.pop_for(out, kNever), WaitResult::kReady);
    EXPECT_EQ(out.v, i);
  }
  EXPECT_EQ(ring.pop_for(out, kNever), WaitResult::kShutdown);
}

// Two threads hand a token back and forth through two rings with blocking
// pops and no spin budget to speak of: a lost wake-up would leave a thread
// asleep for kNever, which fails the test; nothing else times out.
TEST(MpmcRing, BlockingPingPongNeverLosesAWakeup) {
#if defined(PALM_SANITIZE_thread) || defined(PALM_SANITIZE_address)
  constexpr std::uint64_t kRounds = 10'000;
#else
  constexpr std::uint64_t kRounds = 50'000;
#endif
  Ring ping(2);
  Ring pong(2);
  std::atomic<int> failures{0};
  std::thread echo([&] {
    for (std::uint64_t i = 0; i < kRounds; ++i) {
      Item item{};
      if (ping.pop_for(item, kNever) != WaitResult::kReady || item.v != i ||
          pong.push_for(item, kNever) != WaitResult::kReady) {
        failures.fetch_add(1, std::memory_order_relaxed);  // relaxed: read after join
        return;
      }
    }
  });
  std::uint64_t round = 0;
  for (; round < kRounds; ++round) {
    if (ping.push_for(Item{round}, kNever) != WaitResult::kReady) break;
    Item back{};
    if (pong.pop_for(back, kNever) != WaitResult::kReady || back.v != round) break;
  }
  // On a failure, let the echo thread out of its wait before joining it.
  ping.shutdown();
  pong.shutdown();
  echo.join();
  EXPECT_EQ(round, kRounds) << "the ping-pong stopped early: a wait timed out";
  EXPECT_EQ(failures.load(), 0);
}

// --- N producers x M consumers ---------------------------------------------

enum class Form { kSingle, kBatch, kBlocking, kInPlace };

struct StressCase {
  int producers;
  int consumers;
  std::size_t capacity;
  Form form;
  bool yield_in_claims;
};

std::string case_name(const testing::TestParamInfo<StressCase>& info) {
  const StressCase& c = info.param;
  const char* form = c.form == Form::kSingle     ? "Single"
                     : c.form == Form::kBatch    ? "Batch"
                     : c.form == Form::kBlocking ? "Blocking"
                                                 : "InPlace";
  return std::to_string(c.producers) + "P" + std::to_string(c.consumers) + "C_cap" +
         std::to_string(c.capacity) + "_" + form + (c.yield_in_claims ? "_YieldHook" : "");
}

class MpmcRingStress : public testing::TestWithParam<StressCase> {
 protected:
  void TearDown() override { palm_mpmc_test::g_yield_in_claims.store(false); }
};

TEST_P(MpmcRingStress, EachItemArrivesOnceInPerProducerOrder) {
  const StressCase c = GetParam();
  palm_mpmc_test::g_yield_in_claims.store(c.yield_in_claims);
  const std::uint64_t per_producer = kStressItems / static_cast<std::uint64_t>(c.producers);
  const std::uint64_t total = per_producer * static_cast<std::uint64_t>(c.producers);
  constexpr std::size_t kBatch = 16;

  Ring ring(c.capacity);
  // seen[p * per_producer + seq]: how many times that item arrived.
  std::unique_ptr<std::atomic<std::uint8_t>[]> seen(new std::atomic<std::uint8_t>[total]);
  for (std::uint64_t i = 0; i < total; ++i) seen[i].store(0, std::memory_order_relaxed);
  std::atomic<std::uint64_t> consumed{0};
  std::atomic<int> out_of_order{0};
  std::atomic<int> duplicates{0};
  std::atomic<int> foreign{0};
  std::atomic<int> stuck{0};  // a thread hit the deadline or a blocking call failed
  std::latch start(c.producers + c.consumers);
  const auto deadline = std::chrono::steady_clock::now() + kStressDeadline;
  // Counters below are read after join(), which orders them: relaxed.
  const auto fail = [](std::atomic<int>& counter) { counter.fetch_add(1, std::memory_order_relaxed); };

  std::vector<std::thread> threads;
  for (int p = 0; p < c.producers; ++p) {
    threads.emplace_back([&, p] {
      start.arrive_and_wait();
      const auto producer = static_cast<std::uint64_t>(p);
      std::uint64_t seq = 0;
      while (seq < per_producer) {
        if (std::chrono::steady_clock::now() > deadline) return fail(stuck);
        switch (c.form) {
          case Form::kSingle:
            if (ring.try_push(make_item(producer, seq))) {
              ++seq;
            } else {
              std::this_thread::yield();
            }
            break;
          case Form::kBatch: {
            Item batch[kBatch];
            // Varying batch sizes, 1..kBatch.
            const std::uint64_t want = std::min<std::uint64_t>(1 + seq % kBatch, per_producer - seq);
            for (std::uint64_t i = 0; i < want; ++i) batch[i] = make_item(producer, seq + i);
            const std::size_t pushed = ring.try_push_n(batch, want);
            seq += pushed;
            if (pushed == 0) std::this_thread::yield();
            break;
          }
          case Form::kBlocking:
            if (ring.push_for(make_item(producer, seq), kNever) != WaitResult::kReady) {
              return fail(stuck);
            }
            ++seq;
            break;
          case Form::kInPlace:
            if (ring.try_push_in_place([&](Item& item) { item = make_item(producer, seq); })) {
              ++seq;
            } else {
              std::this_thread::yield();
            }
            break;
        }
      }
    });
  }
  for (int k = 0; k < c.consumers; ++k) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      std::vector<std::int64_t> last(static_cast<std::size_t>(c.producers), -1);
      const auto accept = [&](Item item) {
        const std::uint64_t producer = producer_of(item);
        const std::uint64_t seq = seq_of(item);
        if (producer >= static_cast<std::uint64_t>(c.producers) || seq >= per_producer) {
          return fail(foreign);
        }
        if (static_cast<std::int64_t>(seq) <= last[producer]) fail(out_of_order);
        last[producer] = static_cast<std::int64_t>(seq);
        // relaxed: the count is read after join.
        if (seen[producer * per_producer + seq].fetch_add(1, std::memory_order_relaxed) != 0) {
          fail(duplicates);
        }
      };
      // relaxed: a progress count; the items' contents travel with the ring.
      while (consumed.load(std::memory_order_relaxed) < total) {
        if (std::chrono::steady_clock::now() > deadline) return fail(stuck);
        std::size_t got = 0;
        switch (c.form) {
          case Form::kSingle: {
            Item item{};
            if (ring.try_pop(item)) {
              accept(item);
              got = 1;
            }
            break;
          }
          case Form::kBatch: {
            Item batch[kBatch];
            got = ring.try_pop_n(batch, kBatch);
            for (std::size_t i = 0; i < got; ++i) accept(batch[i]);
            break;
          }
          case Form::kBlocking: {
            Item item{};
            const WaitResult r = ring.pop_for(item, kNever);
            if (r == WaitResult::kShutdown) return;  // the last item was taken
            if (r != WaitResult::kReady) return fail(stuck);
            accept(item);
            got = 1;
            break;
          }
          case Form::kInPlace:
            got = ring.try_pop_in_place([&](const Item& item) { accept(item); }) ? 1 : 0;
            break;
        }
        if (got == 0) {
          std::this_thread::yield();
        } else if (consumed.fetch_add(got, std::memory_order_relaxed) + got == total &&
                   c.form == Form::kBlocking) {
          ring.shutdown();  // wake the consumers still asleep: nothing more comes
        }
      }
    });
  }
  for (auto& t : threads) t.join();

  EXPECT_EQ(stuck.load(), 0) << "a thread hit the deadline or a blocking call failed";
  EXPECT_EQ(foreign.load(), 0);
  EXPECT_EQ(duplicates.load(), 0);
  EXPECT_EQ(out_of_order.load(), 0);
  EXPECT_EQ(consumed.load(), total);
  std::uint64_t missing = 0;
  for (std::uint64_t i = 0; i < total; ++i) missing += seen[i].load() == 1 ? 0 : 1;
  EXPECT_EQ(missing, 0u);
  EXPECT_EQ(ring.size_approx(), 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Threads, MpmcRingStress,
    testing::Values(StressCase{1, 1, 64, Form::kSingle, false},
                    StressCase{1, 1, 64, Form::kBatch, false},
                    StressCase{1, 1, 64, Form::kBlocking, false},
                    StressCase{3, 3, 64, Form::kSingle, false},
                    StressCase{3, 3, 64, Form::kBatch, false},
                    StressCase{3, 3, 8, Form::kBlocking, false},
                    StressCase{3, 1, 16, Form::kSingle, false},
                    StressCase{1, 3, 16, Form::kBatch, false},
                    StressCase{3, 3, 4, Form::kSingle, true},
                    StressCase{3, 3, 64, Form::kInPlace, false},
                    StressCase{3, 3, 4, Form::kInPlace, true},
                    StressCase{3, 3, 16, Form::kBatch, true},
                    StressCase{16, 16, 32, Form::kSingle, false},
                    StressCase{16, 16, 32, Form::kBatch, false},
                    StressCase{16, 16, 8, Form::kBlocking, false},
                    StressCase{12, 4, 2, Form::kBlocking, false}),
    case_name);

}  // namespace
}  // namespace palm
