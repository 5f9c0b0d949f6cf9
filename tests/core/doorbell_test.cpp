// Doorbell between threads: outcomes (ready, timeout, shutdown), and stress
// that proves no lost wake-up without relying on any timed wait: each wait
// has a 60 s timeout and reaching it FAILS the test; every ring in these
// tests is needed for progress (a hand-off waits for its answer), so one lost
// wake-up would stall a thread until that timeout. Threads only: runs under
// TSan (doorbell_proc_test.cpp does the same across processes).

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <thread>
#include <vector>

#include "palm/core/doorbell.hpp"

namespace palm {
namespace {

using namespace std::chrono_literals;
constexpr auto kNever = 60s;  // a wait that must be woken: a timeout fails
constexpr std::chrono::nanoseconds kNoSpin{0};

#if defined(PALM_SANITIZE_thread) || defined(PALM_SANITIZE_address)
constexpr std::uint64_t kRounds = 20'000;
#else
constexpr std::uint64_t kRounds = 50'000;
#endif

TEST(Doorbell, IsOneFalseSharingRangeAndZeroMeansOpen) {
  EXPECT_EQ(sizeof(Doorbell), kFalseSharingRange);
  auto* mem = static_cast<std::byte*>(::operator new(2 * sizeof(Doorbell), std::align_val_t{128}));
  std::memset(mem, 0xab, sizeof(Doorbell));
  std::memset(mem + sizeof(Doorbell), 0, sizeof(Doorbell));
  Doorbell* formatted = Doorbell::create_at(mem);
  Doorbell* zeroed = Doorbell::attach_at(mem + sizeof(Doorbell));
  for (Doorbell* bell : {formatted, zeroed}) {
    EXPECT_FALSE(bell->is_shutdown());
    EXPECT_EQ(bell->sequence_approx(), 0u);
    EXPECT_EQ(bell->waiters_approx(), 0u);
    EXPECT_EQ(bell->wait_for([] { return false; }, 0ms), WaitResult::kTimeout);
  }
  ::operator delete(mem, std::align_val_t{128});
}

TEST(Doorbell, WaitReturnsReadyAtOnceWhenThePredicateHolds) {
  Doorbell bell;
  int calls = 0;
  EXPECT_EQ(bell.wait_for([&] { return ++calls > 0; }, 0ms), WaitResult::kReady);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(bell.wait_for([] { return true; }, kNever), WaitResult::kReady);
}

TEST(Doorbell, WaitTimesOutWhenNothingRings) {
  Doorbell bell;
  EXPECT_EQ(bell.wait_for([] { return false; }, 0ms), WaitResult::kTimeout);
  EXPECT_EQ(bell.wait_for([] { return false; }, 2ms, kNoSpin), WaitResult::kTimeout);
  EXPECT_EQ(bell.wait_for([] { return false; }, 2ms), WaitResult::kTimeout);
  // A spin budget longer than the timeout ends at the timeout.
  EXPECT_EQ(bell.wait_for([] { return false; }, 2ms, 10s), WaitResult::kTimeout);
  EXPECT_EQ(bell.wait_until([] { return false; }, Doorbell::Clock::now() - 1s),
            WaitResult::kTimeout);
  EXPECT_EQ(bell.waiters_approx(), 0u);
}

TEST(Doorbell, WaitSeesThePredicateTurnTrueAtTheDeadline) {
  // The last look after the deadline: a predicate that becomes true while
  // the waiter sleeps, with no ring, is still reported as ready.
  Doorbell bell;
  int calls = 0;
  EXPECT_EQ(bell.wait_for([&] { return ++calls > 3; }, 1ms, kNoSpin), WaitResult::kReady);
}

TEST(Doorbell, ASpinLastsItsRoundsEvenWhenItsTimeBudgetIsSpent) {
  // A 1 ns budget is spent at the first clock read; the round count keeps
  // the waiter looking (then it sleeps until the timeout). A fresh thread:
  // a thread whose last wait timed out skips the spin (idle_waiter).
  std::uint64_t calls = 0;
  WaitResult r = WaitResult::kReady;
  std::thread waiter([&] {
    Doorbell bell;
    // 500 ms: the rounds end at the deadline too, and each yield may hand
    // the core away for a while when the tests run in parallel (13 of 16
    // rounds in 20 ms were seen under ASan).
    r = bell.wait_for([&] { return ++calls, false; }, 500ms, std::chrono::nanoseconds(1));
  });
  waiter.join();
  EXPECT_EQ(r, WaitResult::kTimeout);
  EXPECT_GE(calls, Doorbell::default_spin_rounds());
  // With no spin asked for, the rounds do not apply: a handful of looks.
  calls = 0;
  std::thread sleeper([&] {
    Doorbell bell;
    r = bell.wait_for([&] { return ++calls, false; }, 5ms, kNoSpin);
  });
  sleeper.join();
  EXPECT_EQ(r, WaitResult::kTimeout);
  EXPECT_LT(calls, 16u);
}

TEST(Doorbell, RingBumpsTheSequence) {
  Doorbell bell;
  bell.ring();
  bell.ring(4);
  EXPECT_EQ(bell.sequence_approx(), 2u);
  EXPECT_EQ(bell.waiters_approx(), 0u);
}

TEST(Doorbell, RingIfWaitingDoesNotWriteWhenNobodySleeps) {
  Doorbell bell;
  bell.ring_if_waiting();
  EXPECT_EQ(bell.sequence_approx(), 0u);
}

TEST(Doorbell, ShutdownWakesASleepingWaiter) {
  Doorbell bell;
  WaitResult result = WaitResult::kReady;
  std::thread waiter([&] { result = bell.wait_for([] { return false; }, kNever, kNoSpin); });
  bell.shutdown();  // before or after it sleeps: either way the wait ends
  waiter.join();
  EXPECT_EQ(result, WaitResult::kShutdown);
  EXPECT_TRUE(bell.is_shutdown());
  EXPECT_EQ(bell.waiters_approx(), 0u);
}

TEST(Doorbell, ShutdownIsStickyButReadyWins) {
  Doorbell bell;
  bell.shutdown();
  EXPECT_EQ(bell.wait_for([] { return false; }, kNever), WaitResult::kShutdown);
  EXPECT_EQ(bell.wait_for([] { return true; }, kNever), WaitResult::kReady);
}

TEST(Doorbell, ShutdownWakesEveryWaiter) {
  Doorbell bell;
  std::atomic<int> shut{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < 6; ++i) {
    waiters.emplace_back([&] {
      if (bell.wait_for([] { return false; }, kNever, kNoSpin) == WaitResult::kShutdown) {
        shut.fetch_add(1);
      }
    });
  }
  bell.shutdown();
  for (auto& t : waiters) t.join();
  EXPECT_EQ(shut.load(), 6);
}

// Two threads hand a turn back and forth, each sleeping on its own doorbell
// until the turn is its own. Every ring is needed: the other side waits for
// it. Each form of ringing and waiting, with and without the spin phase; and
// with a predicate that yields after it read "not yet", which widens the
// window between the waiter's check and its announcement (the window a
// broken protocol loses wake-ups in).
struct PingPongCase {
  bool ring_if_waiting;
  std::chrono::nanoseconds spin;
  bool yield_in_predicate = false;
};

class DoorbellPingPong : public testing::TestWithParam<PingPongCase> {};

TEST_P(DoorbellPingPong, NeverLosesAWakeup) {
  const PingPongCase c = GetParam();
  Doorbell bell_a;
  Doorbell bell_b;
  std::atomic<std::uint64_t> turn{0};  // odd: B's move, even: A's
  const auto ring = [&](Doorbell& bell) {
    if (c.ring_if_waiting) {
      bell.ring_if_waiting();
    } else {
      bell.ring();
    }
  };
  // acquire: pairs with the release store of the turn by the other thread.
  const auto turn_is = [&](std::uint64_t value) {
    const bool mine = turn.load(std::memory_order_acquire) == value;
    if (!mine && c.yield_in_predicate) std::this_thread::yield();
    return mine;
  };
  std::atomic<bool> b_failed{false};
  std::thread b([&] {
    for (std::uint64_t r = 0; r < kRounds; ++r) {
      const WaitResult w = bell_b.wait_for([&] { return turn_is(2 * r + 1); }, kNever, c.spin);
      if (w != WaitResult::kReady) {
        b_failed.store(true);
        return;
      }
      turn.store(2 * r + 2, std::memory_order_release);
      ring(bell_a);
    }
  });
  std::uint64_t r = 0;
  for (; r < kRounds; ++r) {
    turn.store(2 * r + 1, std::memory_order_release);
    ring(bell_b);
    const WaitResult w = bell_a.wait_for([&] { return turn_is(2 * r + 2); }, kNever, c.spin);
    if (w != WaitResult::kReady) break;
  }
  bell_b.shutdown();  // on failure, let B out
  b.join();
  EXPECT_EQ(r, kRounds) << "a wait timed out: a wake-up was lost";
  EXPECT_FALSE(b_failed.load());
  EXPECT_EQ(bell_a.waiters_approx(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Threads, DoorbellPingPong,
                         testing::Values(PingPongCase{false, kNoSpin},
                                         PingPongCase{true, kNoSpin},
                                         PingPongCase{false, Doorbell::kDefaultSpin},
                                         PingPongCase{true, Doorbell::kDefaultSpin},
                                         PingPongCase{false, kNoSpin, true},
                                         PingPongCase{true, kNoSpin, true}));

// Many producers ring one consumer: each producer publishes one item, rings
// the consumer's doorbell, then sleeps on its own doorbell until the consumer
// acknowledges it; so every ring is needed. Half the producers ring with
// ring(), half with ring_if_waiting().
class DoorbellManyProducers : public testing::TestWithParam<int> {};

TEST_P(DoorbellManyProducers, OneConsumerHearsEveryRing) {
  const int producers = GetParam();
  const std::uint64_t per_producer = kRounds / static_cast<std::uint64_t>(producers) + 1;
  Doorbell consumer_bell;
  std::vector<std::unique_ptr<Doorbell>> producer_bells;
  std::unique_ptr<std::atomic<std::uint64_t>[]> published(new std::atomic<std::uint64_t>[producers]);
  std::unique_ptr<std::atomic<std::uint64_t>[]> acked(new std::atomic<std::uint64_t>[producers]);
  for (int p = 0; p < producers; ++p) {
    producer_bells.push_back(std::make_unique<Doorbell>());
    published[p].store(0);
    acked[p].store(0);
  }
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      for (std::uint64_t i = 1; i <= per_producer; ++i) {
        // release: pairs with the consumer's acquire in its predicate.
        published[p].store(i, std::memory_order_release);
        if (p % 2 == 0) {
          consumer_bell.ring();
        } else {
          consumer_bell.ring_if_waiting();
        }
        const WaitResult w = producer_bells[static_cast<std::size_t>(p)]->wait_for(
            [&] { return acked[p].load(std::memory_order_acquire) == i; }, kNever, kNoSpin);
        if (w != WaitResult::kReady) {
          failed.fetch_add(1);
          return;
        }
      }
    });
  }
  const std::uint64_t total = per_producer * static_cast<std::uint64_t>(producers);
  std::uint64_t seen = 0;
  while (seen < total) {
    const WaitResult w = consumer_bell.wait_for(
        [&] {
          bool any = false;
          for (int p = 0; p < producers; ++p) {
            const std::uint64_t v = published[p].load(std::memory_order_acquire);
            if (v != acked[p].load(std::memory_order_relaxed)) {  // relaxed: we write it
              ++seen;
              acked[p].store(v, std::memory_order_release);
              producer_bells[static_cast<std::size_t>(p)]->ring();
              any = true;
            }
          }
          return any;
        },
        kNever, kNoSpin);
    if (w != WaitResult::kReady) break;
  }
  for (auto& bell : producer_bells) bell->shutdown();  // on failure, let them out
  for (auto& t : threads) t.join();
  EXPECT_EQ(seen, total) << "the consumer's wait timed out: a wake-up was lost";
  EXPECT_EQ(failed.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Threads, DoorbellManyProducers, testing::Values(1, 3, 16));

// Several waiters on one doorbell, each ring() waking one: the main thread
// hands out one ticket at a time and waits until some waiter took it, so a
// wake-up that reached nobody would stall it.
TEST(Doorbell, WakingOneOfManyWaitersLosesNoTicket) {
  constexpr int kWaiters = 4;
  const std::uint64_t tickets = kRounds / 2;
  Doorbell waiters_bell;
  Doorbell main_bell;
  std::atomic<std::uint64_t> offered{0};
  std::atomic<std::uint64_t> taken{0};
  std::atomic<std::uint64_t> per_waiter_total{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.emplace_back([&] {
      std::uint64_t mine = 0;
      for (;;) {
        const WaitResult w = waiters_bell.wait_for(
            [&] {
              std::uint64_t t = taken.load(std::memory_order_acquire);
              while (t < offered.load(std::memory_order_acquire)) {
                if (taken.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel)) return true;
              }
              return false;
            },
            kNever, kNoSpin);
        if (w != WaitResult::kReady) break;  // shutdown: all tickets handed out
        ++mine;
        main_bell.ring();
      }
      per_waiter_total.fetch_add(mine);
    });
  }
  std::uint64_t t = 0;
  for (; t < tickets; ++t) {
    offered.store(t + 1, std::memory_order_release);
    waiters_bell.ring();  // wakes one
    const WaitResult w = main_bell.wait_for(
        [&] { return taken.load(std::memory_order_acquire) == t + 1; }, kNever, kNoSpin);
    if (w != WaitResult::kReady) break;
  }
  waiters_bell.shutdown();
  for (auto& th : waiters) th.join();
  EXPECT_EQ(t, tickets) << "a ticket's wake-up was lost";
  EXPECT_EQ(per_waiter_total.load(), t);
}

}  // namespace
}  // namespace palm
