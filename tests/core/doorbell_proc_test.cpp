// Doorbell across processes (non-private futex in a POSIX shm mapping): a
// ping-pong of many thousands of rounds between this process and a peer, many
// producer processes ringing one consumer, shutdown across processes, and a
// waiter killed while asleep. No lost wake-up, proved without timed waits:
// every wait has a 60 s timeout and reaching it FAILS the test, and every
// ring is needed for progress.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "palm/core/doorbell.hpp"
#include "peer.hpp"
#include "shm_mapping.hpp"

namespace palm {
namespace {

using namespace std::chrono_literals;
using test::Child;
using test::SharedMapping;
using test::ShmGuard;
using test::spawn_peer;
using test::unique_name;

constexpr auto kNever = 60s;  // a wait that must be woken: a timeout fails
constexpr std::chrono::nanoseconds kNoSpin{0};
constexpr auto kChildExit = 60s;  // how long a finished peer may take to exit
#if defined(PALM_SANITIZE_address)
constexpr std::uint64_t kRounds = 20'000;
#else
constexpr std::uint64_t kRounds = 50'000;
#endif

std::atomic_ref<std::uint64_t> shared(std::uint64_t& word) { return std::atomic_ref<std::uint64_t>(word); }

// Zero-filled by ftruncate: zeroed doorbells are open doorbells.
constexpr int kMaxProducers = 8;
struct alignas(kFalseSharingRange) Shared {
  Doorbell parent_bell;
  Doorbell child_bell;
  Doorbell producer_bells[kMaxProducers];
  alignas(kFalseSharingRange) std::uint64_t turn;  // ping-pong: odd = child's move
  alignas(kFalseSharingRange) std::uint64_t published[kMaxProducers];
  alignas(kFalseSharingRange) std::uint64_t acked[kMaxProducers];
};

// Exit codes of the peers.
constexpr int kOk = 0;
constexpr int kNoMapping = 10;
constexpr int kWaitFailed = 11;

// args: shm name, rounds, spin (ns), ring_if_waiting (0/1), yield in the
// predicate after "not yet" (0/1: widens the check-to-announce window).
PALM_TEST_PEER(pingpong_child) {
  auto map = SharedMapping::open(args.at(0), sizeof(Shared));
  if (!map) return kNoMapping;
  Shared* shm = map->as<Shared>();
  const std::uint64_t rounds = std::stoull(args.at(1));
  const std::chrono::nanoseconds spin{std::stoll(args.at(2))};
  const bool if_waiting = args.at(3) == "1";
  const bool yield = args.at(4) == "1";
  for (std::uint64_t r = 0; r < rounds; ++r) {
    const WaitResult w = shm->child_bell.wait_for(
        [&] {
          // acquire: pairs with the parent's release store of the turn.
          const bool mine = shared(shm->turn).load(std::memory_order_acquire) == 2 * r + 1;
          if (!mine && yield) std::this_thread::yield();
          return mine;
        },
        kNever, spin);
    if (w != WaitResult::kReady) return kWaitFailed;
    shared(shm->turn).store(2 * r + 2, std::memory_order_release);
    if (if_waiting) {
      shm->parent_bell.ring_if_waiting();
    } else {
      shm->parent_bell.ring();
    }
  }
  return kOk;
}

// args: shm name, producer index, items. Publishes one item at a time, rings
// the consumer (the parent), sleeps until it is acknowledged.
PALM_TEST_PEER(ringing_producer) {
  auto map = SharedMapping::open(args.at(0), sizeof(Shared));
  if (!map) return kNoMapping;
  Shared* shm = map->as<Shared>();
  const auto p = static_cast<std::size_t>(std::stoul(args.at(1)));
  const std::uint64_t items = std::stoull(args.at(2));
  for (std::uint64_t i = 1; i <= items; ++i) {
    shared(shm->published[p]).store(i, std::memory_order_release);
    if (p % 2 == 0) {
      shm->parent_bell.ring();
    } else {
      shm->parent_bell.ring_if_waiting();
    }
    const WaitResult w = shm->producer_bells[p].wait_for(
        [&] { return shared(shm->acked[p]).load(std::memory_order_acquire) == i; }, kNever, kNoSpin);
    if (w != WaitResult::kReady) return kWaitFailed;
  }
  return kOk;
}

// args: shm name. Sleeps on child_bell until shut down: exit 0 on kShutdown.
PALM_TEST_PEER(shutdown_waiter) {
  auto map = SharedMapping::open(args.at(0), sizeof(Shared));
  if (!map) return kNoMapping;
  const WaitResult w = map->as<Shared>()->child_bell.wait_for([] { return false; }, kNever, kNoSpin);
  return w == WaitResult::kShutdown ? kOk : kWaitFailed;
}

struct PingPongCase {
  bool ring_if_waiting;
  std::chrono::nanoseconds spin;
  bool yield_in_predicate = false;
};

class DoorbellProcPingPong : public testing::TestWithParam<PingPongCase> {};

TEST_P(DoorbellProcPingPong, NeverLosesAWakeupAcrossProcesses) {
  const PingPongCase c = GetParam();
  ShmGuard guard(unique_name("bell-pingpong"));
  auto map = SharedMapping::create(guard.name(), sizeof(Shared));
  ASSERT_TRUE(map) << "shm_open/mmap " << guard.name();
  Shared* shm = map->as<Shared>();
  Child child = spawn_peer("pingpong_child", {guard.name(), std::to_string(kRounds),
                                              std::to_string(c.spin.count()),
                                              c.ring_if_waiting ? "1" : "0",
                                              c.yield_in_predicate ? "1" : "0"});
  std::uint64_t r = 0;
  for (; r < kRounds; ++r) {
    shared(shm->turn).store(2 * r + 1, std::memory_order_release);
    if (c.ring_if_waiting) {
      shm->child_bell.ring_if_waiting();
    } else {
      shm->child_bell.ring();
    }
    const WaitResult w = shm->parent_bell.wait_for(
        [&] {
          const bool mine = shared(shm->turn).load(std::memory_order_acquire) == 2 * r + 2;
          if (!mine && c.yield_in_predicate) std::this_thread::yield();
          return mine;
        },
        kNever, c.spin);
    if (w != WaitResult::kReady) break;
  }
  EXPECT_EQ(r, kRounds) << "the parent's wait timed out: a wake-up was lost";
  EXPECT_EQ(child.exit_code_within(kChildExit), kOk);
}

INSTANTIATE_TEST_SUITE_P(Processes, DoorbellProcPingPong,
                         testing::Values(PingPongCase{false, kNoSpin},
                                         PingPongCase{true, kNoSpin},
                                         PingPongCase{false, Doorbell::kDefaultSpin},
                                         PingPongCase{true, kNoSpin, true}));

TEST(DoorbellProc, ManyProducerProcessesRingOneConsumer) {
  constexpr int kProducers = 4;
  const std::uint64_t per_producer = kRounds / kProducers;
  ShmGuard guard(unique_name("bell-many"));
  auto map = SharedMapping::create(guard.name(), sizeof(Shared));
  ASSERT_TRUE(map) << "shm_open/mmap " << guard.name();
  Shared* shm = map->as<Shared>();
  std::vector<Child> children;
  for (int p = 0; p < kProducers; ++p) {
    children.push_back(spawn_peer("ringing_producer", {guard.name(), std::to_string(p),
                                                       std::to_string(per_producer)}));
  }
  const std::uint64_t total = per_producer * kProducers;
  std::uint64_t seen = 0;
  while (seen < total) {
    const WaitResult w = shm->parent_bell.wait_for(
        [&] {
          bool any = false;
          for (int p = 0; p < kProducers; ++p) {
            const std::uint64_t v = shared(shm->published[p]).load(std::memory_order_acquire);
            // relaxed: only this process writes acked.
            if (v != shared(shm->acked[p]).load(std::memory_order_relaxed)) {
              ++seen;
              shared(shm->acked[p]).store(v, std::memory_order_release);
              shm->producer_bells[p].ring();
              any = true;
            }
          }
          return any;
        },
        kNever, kNoSpin);
    if (w != WaitResult::kReady) break;
  }
  EXPECT_EQ(seen, total) << "the consumer's wait timed out: a wake-up was lost";
  for (auto& child : children) EXPECT_EQ(child.exit_code_within(kChildExit), kOk);
}

TEST(DoorbellProc, ShutdownWakesAWaiterInAnotherProcess) {
  ShmGuard guard(unique_name("bell-shutdown"));
  auto map = SharedMapping::create(guard.name(), sizeof(Shared));
  ASSERT_TRUE(map) << "shm_open/mmap " << guard.name();
  Child child = spawn_peer("shutdown_waiter", {guard.name()});
  // Before or after the peer sleeps: shutdown is sticky, its wait ends.
  map->as<Shared>()->child_bell.shutdown();
  EXPECT_EQ(child.exit_code_within(kChildExit), kOk);
}

// A waiter SIGKILLed while asleep leaves its announcement behind (sleepers_
// stays 1). The doorbell must still work: rings cost a needless FUTEX_WAKE,
// and a new waiter is still woken.
TEST(DoorbellProc, AWaiterKilledAsleepLeavesTheDoorbellUsable) {
  ShmGuard guard(unique_name("bell-killed"));
  auto map = SharedMapping::create(guard.name(), sizeof(Shared));
  ASSERT_TRUE(map) << "shm_open/mmap " << guard.name();
  Shared* shm = map->as<Shared>();
  Child child = spawn_peer("shutdown_waiter", {guard.name()});
  // Wait (bounded) until the peer announced itself: it is then in or about
  // to enter FUTEX_WAIT.
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (shm->child_bell.waiters_approx() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  ASSERT_EQ(shm->child_bell.waiters_approx(), 1u);
  child.kill_and_reap();
  EXPECT_EQ(shm->child_bell.waiters_approx(), 1u) << "the dead waiter's announcement stays";

  // A new waiter (a thread here) on the same doorbell, woken by every ring;
  // it answers each value on the parent's doorbell.
  std::atomic<std::uint64_t> value{0};
  std::atomic<std::uint64_t> answered{0};
  std::atomic<bool> failed{false};
  std::thread waiter([&] {
    for (std::uint64_t i = 1; i <= 1000; ++i) {
      if (shm->child_bell.wait_for([&] { return value.load(std::memory_order_acquire) >= i; },
                                   kNever, kNoSpin) != WaitResult::kReady) {
        failed.store(true);
        return;
      }
      answered.store(i, std::memory_order_release);
      shm->parent_bell.ring();
    }
  });
  std::uint64_t i = 1;
  for (; i <= 1000; ++i) {
    value.store(i, std::memory_order_release);
    shm->child_bell.ring();
    if (shm->parent_bell.wait_for([&] { return answered.load(std::memory_order_acquire) == i; },
                                  kNever, kNoSpin) != WaitResult::kReady) {
      break;
    }
  }
  shm->child_bell.shutdown();  // on failure, let the thread out
  waiter.join();
  EXPECT_FALSE(failed.load());
  EXPECT_EQ(i, 1001u);
}

}  // namespace
}  // namespace palm
