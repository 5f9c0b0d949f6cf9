// SpscRing between processes: channels in a POSIX shm mapping, producer peer
// processes pushing (producer, seq) items and ringing the consumer's doorbell
// (in the same mapping); this process consumes and checks order and
// exactly-once. A producer SIGKILLed mid-stream leaves the consumer able to
// drain what was published and go on with a new producer on a fresh channel
// (DESIGN.md, "The crash model": a dead peer's channels are discarded whole).

#include <signal.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "palm/core/doorbell.hpp"
#include "palm/core/spsc_ring.hpp"
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
constexpr auto kChildExit = 60s;
#if defined(PALM_SANITIZE_address)
constexpr std::uint64_t kItems = 200'000;
#else
constexpr std::uint64_t kItems = 1'000'000;
#endif

using Ring = SpscRing<std::uint64_t>;
constexpr int kChannels = 4;
constexpr std::uint32_t kCapacity = 64;  // small: the stream wraps thousands of times

// The mapping: doorbells first, then kChannels rings back to back. Zeroed by
// ftruncate (zero doorbells are open ones); rings are formatted by the test.
struct alignas(kFalseSharingRange) Bells {
  Doorbell consumer;                   // this process sleeps here
  Doorbell producer[kChannels];        // producer of channel c sleeps here when full
};
constexpr std::size_t kRingBytes = Ring::bytes_for(kCapacity);
constexpr std::size_t kShmBytes = sizeof(Bells) + kChannels * kRingBytes;
std::byte* channel_memory(void* base, int channel) {
  return static_cast<std::byte*>(base) + sizeof(Bells) + static_cast<std::size_t>(channel) * kRingBytes;
}

std::uint64_t make_item(std::uint64_t producer, std::uint64_t seq) { return (producer << 32) | seq; }

// Exit codes of the producer peer.
constexpr int kOk = 0;
constexpr int kNoMapping = 10;
constexpr int kAttachFailed = 11;
constexpr int kWaitFailed = 12;
constexpr int kTooLong = 13;

// args: shm name, channel, producer id, items, batch. Pushes items (producer,
// 0..items-1) in batches, sleeping on its doorbell when the ring is full and
// ringing the consumer's after every publish. Bounded by 30 s.
PALM_TEST_PEER(spsc_producer) {
  auto map = SharedMapping::open(args.at(0), kShmBytes);
  if (!map) return kNoMapping;
  const int channel = std::stoi(args.at(1));
  const std::uint64_t producer = std::stoull(args.at(2));
  const std::uint64_t items = std::stoull(args.at(3));
  const std::size_t batch = std::stoul(args.at(4));
  auto attached = Ring::attach_at(channel_memory(map->data(), channel), kRingBytes);
  if (!attached) return kAttachFailed;
  Ring* ring = *attached;
  Bells* bells = map->as<Bells>();
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  std::uint64_t buf[64];
  std::uint64_t seq = 0;
  while (seq < items) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(batch, items - seq));
    for (std::size_t i = 0; i < want; ++i) buf[i] = make_item(producer, seq + i);
    std::size_t pushed = 0;
    const WaitResult w = bells->producer[channel].wait_for(
        [&]() noexcept {
          pushed = want == 1 ? (ring->try_push(buf[0]) ? 1 : 0) : ring->try_push_n(buf, want);
          return pushed != 0;
        },
        kNever);
    if (w != WaitResult::kReady) return kWaitFailed;
    seq += pushed;
    bells->consumer.ring();
    if ((seq & 1023) < pushed && std::chrono::steady_clock::now() > deadline) return kTooLong;
  }
  return kOk;
}

// The consumer's view of the channels: per-producer order and exactly-once.
struct Checker {
  std::vector<std::uint64_t> next;  // per producer: the seq expected next
  std::uint64_t received = 0;
  std::uint64_t wrong = 0;  // out of order, duplicated, lost or foreign

  explicit Checker(std::size_t producers) : next(producers, 0) {}
  void accept(std::uint64_t item) {
    const std::uint64_t producer = item >> 32;
    const std::uint64_t seq = item & 0xffffffffu;
    ++received;
    if (producer >= next.size() || seq != next[producer]) {
      ++wrong;
      return;
    }
    ++next[producer];
  }
};

struct Fixture {
  ShmGuard guard;
  std::optional<SharedMapping> map;
  Ring* rings[kChannels] = {};

  explicit Fixture(const std::string& tag)
      : guard(unique_name(tag)), map(SharedMapping::create(guard.name(), kShmBytes)) {
    if (!map) return;
    for (int c = 0; c < kChannels; ++c) {
      auto ring = Ring::create_at(channel_memory(map->data(), c), kRingBytes, kCapacity);
      if (ring) rings[c] = *ring;
    }
  }
  bool ok() const { return map && rings[kChannels - 1] != nullptr; }
  Bells* bells() const { return map->as<Bells>(); }
};

Child spawn_producer(const Fixture& f, int channel, std::uint64_t producer, std::uint64_t items,
                     std::size_t batch) {
  return spawn_peer("spsc_producer", {f.guard.name(), std::to_string(channel),
                                      std::to_string(producer), std::to_string(items),
                                      std::to_string(batch)});
}

// Consumes `items_each` items from each of `channels` producers (producer c
// on channel c) until all arrived or a wait failed. Returns false if a wait
// timed out (a lost wake-up).
bool consume(Fixture& f, int channels, std::uint64_t items_each, Checker& checker) {
  const std::uint64_t total = items_each * static_cast<std::uint64_t>(channels);
  std::uint64_t buf[64];
  while (checker.received < total) {
    const WaitResult w = f.bells()->consumer.wait_for(
        [&]() noexcept {
          bool any = false;
          for (int c = 0; c < channels; ++c) {
            const std::size_t got = f.rings[c]->try_pop_n(buf, 64);
            for (std::size_t i = 0; i < got; ++i) checker.accept(buf[i]);
            if (got != 0) {
              f.bells()->producer[c].ring_if_waiting();
              any = true;
            }
          }
          return any;
        },
        kNever);
    if (w != WaitResult::kReady) return false;
  }
  return true;
}

class SpscRingProcStream : public testing::TestWithParam<std::size_t> {};

TEST_P(SpscRingProcStream, AProducerProcessStreamsInOrder) {
  const std::size_t batch = GetParam();
  Fixture f("spsc-stream");
  ASSERT_TRUE(f.ok()) << "shm " << f.guard.name();
  Child producer = spawn_producer(f, 0, 0, kItems, batch);
  Checker checker(1);
  EXPECT_TRUE(consume(f, 1, kItems, checker)) << "the consumer's wait timed out";
  EXPECT_EQ(checker.wrong, 0u);
  EXPECT_EQ(checker.next[0], kItems);
  EXPECT_EQ(producer.exit_code_within(kChildExit), kOk);
  EXPECT_EQ(f.rings[0]->tail(), kItems);
  EXPECT_EQ(f.rings[0]->head(), kItems);
}

INSTANTIATE_TEST_SUITE_P(Processes, SpscRingProcStream, testing::Values(1, 16, 64));

TEST(SpscRingProc, SeveralProducerProcessesOneConsumerEachOnItsChannel) {
  constexpr int kProducers = 3;
  const std::uint64_t each = kItems / kProducers;
  Fixture f("spsc-many");
  ASSERT_TRUE(f.ok()) << "shm " << f.guard.name();
  std::vector<Child> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.push_back(spawn_producer(f, p, static_cast<std::uint64_t>(p), each, 1 + 7 * p));
  }
  Checker checker(kProducers);
  EXPECT_TRUE(consume(f, kProducers, each, checker)) << "the consumer's wait timed out";
  EXPECT_EQ(checker.wrong, 0u);
  for (int p = 0; p < kProducers; ++p) {
    EXPECT_EQ(checker.next[static_cast<std::size_t>(p)], each) << "producer " << p;
    EXPECT_EQ(producers[static_cast<std::size_t>(p)].exit_code_within(kChildExit), kOk);
  }
}

// The producer is SIGKILLed while the consumer (a thread here) is draining
// its channel, at whatever instruction it is. Everything it published is then
// drained, whole and in order (the consumed count ends equal to tail()), and
// a new producer on a fresh channel of the same mapping is served.
class SpscRingProcKill : public testing::TestWithParam<std::uint64_t> {};

TEST_P(SpscRingProcKill, KilledProducerLeavesTheConsumerAbleToGoOn) {
  const std::uint64_t kill_after = GetParam();  // items received before the kill
  Fixture f("spsc-kill");
  ASSERT_TRUE(f.ok()) << "shm " << f.guard.name();
  Ring* dead_channel = f.rings[0];
  Child producer = spawn_producer(f, 0, 0, 0xffffffffu, 1 + kill_after % 13);

  Doorbell progress;  // the consumer thread rings it after each batch
  std::atomic<std::uint64_t> received{0};
  std::atomic<bool> producer_dead{false};
  std::atomic<bool> consumer_failed{false};
  Checker checker(1);
  std::thread consumer([&] {
    std::uint64_t buf[64];
    for (;;) {
      std::size_t got = 0;
      bool dead = false;
      const WaitResult w = f.bells()->consumer.wait_for(
          [&]() noexcept {
            got = dead_channel->try_pop_n(buf, 64);
            // acquire: pairs with the release below, after the reap.
            dead = producer_dead.load(std::memory_order_acquire);
            return got != 0 || dead;
          },
          kNever);
      if (w != WaitResult::kReady) {
        consumer_failed.store(true);
        break;
      }
      for (std::size_t i = 0; i < got; ++i) checker.accept(buf[i]);
      f.bells()->producer[0].ring_if_waiting();
      // release: the main thread reads `checker` only after join; this count
      // is only its progress signal.
      received.store(checker.received, std::memory_order_release);
      progress.ring();
      if (dead) {
        // The producer is reaped: tail() is final. Drain the rest.
        while ((got = dead_channel->try_pop_n(buf, 64)) != 0) {
          for (std::size_t i = 0; i < got; ++i) checker.accept(buf[i]);
        }
        break;
      }
    }
  });
  const WaitResult w = progress.wait_for(
      [&] { return received.load(std::memory_order_acquire) >= kill_after; }, kNever);
  producer.kill_and_reap();  // mid-stream: it pushes as fast as we consume
  producer_dead.store(true, std::memory_order_release);
  f.bells()->consumer.ring();
  consumer.join();
  ASSERT_EQ(w, WaitResult::kReady) << "no progress from the producer";
  EXPECT_FALSE(consumer_failed.load());
  EXPECT_EQ(producer.exit_code_within(0ms), -SIGKILL) << "the producer ended before the kill";

  EXPECT_EQ(checker.wrong, 0u);
  EXPECT_GE(checker.received, kill_after);
  EXPECT_EQ(checker.received, dead_channel->tail()) << "every published item, once";
  EXPECT_EQ(dead_channel->head(), dead_channel->tail());
  const std::uint64_t final_tail = dead_channel->tail();

  // Go on: a new producer on a fresh channel.
  const std::uint64_t fresh_items = kItems / 10;
  Child next = spawn_producer(f, 1, 1, fresh_items, 8);
  Checker fresh(2);
  fresh.next[0] = ~std::uint64_t{0};  // nothing more may come from producer 0
  std::uint64_t buf[64];
  while (fresh.received < fresh_items) {
    const WaitResult got_some = f.bells()->consumer.wait_for(
        [&]() noexcept {
          const std::size_t got = f.rings[1]->try_pop_n(buf, 64);
          for (std::size_t i = 0; i < got; ++i) fresh.accept(buf[i]);
          if (got != 0) f.bells()->producer[1].ring_if_waiting();
          return got != 0;
        },
        kNever);
    ASSERT_EQ(got_some, WaitResult::kReady) << "the consumer's wait timed out";
  }
  EXPECT_EQ(fresh.wrong, 0u);
  EXPECT_EQ(fresh.next[1], fresh_items);
  EXPECT_EQ(next.exit_code_within(kChildExit), kOk);
  EXPECT_EQ(dead_channel->tail(), final_tail) << "the dead channel stays as it was";
}

INSTANTIATE_TEST_SUITE_P(Processes, SpscRingProcKill, testing::Values(1, 1000, 20011));

}  // namespace
}  // namespace palm
