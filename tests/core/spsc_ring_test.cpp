// SpscRing in one process, on a heap buffer: format and attach checks, edges
// (full, empty, peek, positions, batches, wrap-around) and a producer thread
// streaming to a consumer thread through doorbells. Threads only: runs under
// TSan (which cannot follow the process test, spsc_ring_proc_test.cpp).

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <thread>

#include "palm/core/doorbell.hpp"
#include "palm/core/spsc_ring.hpp"

namespace palm {
namespace {

using namespace std::chrono_literals;
constexpr auto kNever = 60s;  // a wait that must be woken: a timeout fails

// A zeroed, 128-byte aligned heap region, standing in for a shared mapping.
class Region {
 public:
  explicit Region(std::size_t bytes)
      : bytes_(bytes), mem_(::operator new(bytes, std::align_val_t{kFalseSharingRange})) {
    std::memset(mem_, 0, bytes);
  }
  ~Region() { ::operator delete(mem_, std::align_val_t{kFalseSharingRange}); }
  Region(const Region&) = delete;  // one owner frees
  Region& operator=(const Region&) = delete;
  void* data() const { return mem_; }
  std::byte* bytes() const { return static_cast<std::byte*>(mem_); }
  std::size_t size() const { return bytes_; }

 private:
  std::size_t bytes_;
  void* mem_;
};

using Ring = SpscRing<std::uint64_t>;

Ring* make_ring(Region& region, std::uint32_t capacity) {
  auto ring = Ring::create_at(region.data(), region.size(), capacity);
  EXPECT_TRUE(ring) << ring.error().describe();
  return ring ? *ring : nullptr;
}

TEST(SpscRing, BytesForCoversHeaderAndSlots) {
  EXPECT_EQ(Ring::kHeaderBytes, 384u);
  EXPECT_EQ(Ring::bytes_for(8), 384u + 128u);
  EXPECT_EQ(Ring::bytes_for(64), 384u + 512u);
  EXPECT_EQ(SpscRing<std::uint8_t>::bytes_for(2), 384u + 128u);  // rounded up
  EXPECT_EQ(Ring::bytes_for(1024) % Ring::kAlignment, 0u);
}

TEST(SpscRing, CreateRejectsCapacityThatIsNotAPowerOfTwo) {
  Region region(Ring::bytes_for(1024));
  for (std::uint32_t bad : {0u, 1u, 3u, 100u}) {
    auto ring = Ring::create_at(region.data(), region.size(), bad);
    ASSERT_FALSE(ring) << bad;
    EXPECT_EQ(ring.error().code, Errc::kInvalidArgument);
    EXPECT_NE(ring.error().message.find(std::to_string(bad)), std::string::npos);
  }
}

TEST(SpscRing, CreateRejectsMisalignedOrShortMemory) {
  Region region(Ring::bytes_for(64) + 128);
  auto misaligned = Ring::create_at(region.bytes() + 8, region.size() - 8, 64);
  ASSERT_FALSE(misaligned);
  EXPECT_EQ(misaligned.error().code, Errc::kInvalidArgument);
  auto short_region = Ring::create_at(region.data(), Ring::bytes_for(64) - 1, 64);
  ASSERT_FALSE(short_region);
  EXPECT_EQ(short_region.error().code, Errc::kOutOfRange);
}

TEST(SpscRing, AttachFindsTheCreatedRing) {
  Region region(Ring::bytes_for(64));
  Ring* created = make_ring(region, 64);
  ASSERT_NE(created, nullptr);
  auto attached = Ring::attach_at(region.data(), region.size());
  ASSERT_TRUE(attached) << attached.error().describe();
  EXPECT_EQ(*attached, created);
  EXPECT_EQ((*attached)->capacity(), 64u);
  EXPECT_EQ((*attached)->head(), 0u);
  EXPECT_EQ((*attached)->tail(), 0u);
}

TEST(SpscRing, AttachReportsNotReadyOnZeroedMemory) {
  Region region(Ring::bytes_for(64));
  auto ring = Ring::attach_at(region.data(), region.size());
  ASSERT_FALSE(ring);
  EXPECT_EQ(ring.error().code, Errc::kNotReady);
}

TEST(SpscRing, AttachRejectsBadMagic) {
  Region region(Ring::bytes_for(64));
  ASSERT_NE(make_ring(region, 64), nullptr);
  region.bytes()[0] = std::byte{'X'};
  auto ring = Ring::attach_at(region.data(), region.size());
  ASSERT_FALSE(ring);
  EXPECT_EQ(ring.error().code, Errc::kBadMagic);
}

TEST(SpscRing, AttachRejectsAnotherLayoutVersionNamingBoth) {
  Region region(Ring::bytes_for(64));
  ASSERT_NE(make_ring(region, 64), nullptr);
  const std::uint32_t other = 99;
  std::memcpy(region.bytes() + 8, &other, sizeof(other));  // the version never moves
  auto ring = Ring::attach_at(region.data(), region.size());
  ASSERT_FALSE(ring);
  EXPECT_EQ(ring.error().code, Errc::kVersionMismatch);
  EXPECT_NE(ring.error().message.find("99"), std::string::npos) << ring.error().message;
  EXPECT_NE(ring.error().message.find("version 1"), std::string::npos) << ring.error().message;
}

TEST(SpscRing, AttachRejectsItemsOfAnotherSize) {
  Region region(Ring::bytes_for(64));
  ASSERT_NE(make_ring(region, 64), nullptr);
  auto ring = SpscRing<std::uint32_t>::attach_at(region.data(), region.size());
  ASSERT_FALSE(ring);
  EXPECT_EQ(ring.error().code, Errc::kInvalidArgument);
}

TEST(SpscRing, AttachRejectsARegionTooSmallForTheRing) {
  Region region(Ring::bytes_for(64));
  ASSERT_NE(make_ring(region, 64), nullptr);
  auto ring = Ring::attach_at(region.data(), Ring::bytes_for(32));
  ASSERT_FALSE(ring);
  EXPECT_EQ(ring.error().code, Errc::kOutOfRange);
}

TEST(SpscRing, TryPopFailsWhenEmpty) {
  Region region(Ring::bytes_for(8));
  Ring* ring = make_ring(region, 8);
  ASSERT_NE(ring, nullptr);
  std::uint64_t out = 42;
  EXPECT_FALSE(ring->try_pop(out));
  EXPECT_FALSE(ring->peek(out));
  EXPECT_EQ(out, 42u);
  std::uint64_t batch[4];
  EXPECT_EQ(ring->try_pop_n(batch, 4), 0u);
}

TEST(SpscRing, TryPushFailsWhenFull) {
  Region region(Ring::bytes_for(8));
  Ring* ring = make_ring(region, 8);
  ASSERT_NE(ring, nullptr);
  for (std::uint64_t i = 0; i < 8; ++i) ASSERT_TRUE(ring->try_push(i));
  EXPECT_FALSE(ring->try_push(8));
  EXPECT_EQ(ring->size_approx(), 8u);
  std::uint64_t out = 0;
  ASSERT_TRUE(ring->try_pop(out));
  EXPECT_EQ(out, 0u);
  EXPECT_TRUE(ring->try_push(8));
  EXPECT_FALSE(ring->try_push(9));
}

TEST(SpscRing, PeekDoesNotConsume) {
  Region region(Ring::bytes_for(8));
  Ring* ring = make_ring(region, 8);
  ASSERT_NE(ring, nullptr);
  ASSERT_TRUE(ring->try_push(7));
  ASSERT_TRUE(ring->try_push(8));
  std::uint64_t out = 0;
  ASSERT_TRUE(ring->peek(out));
  EXPECT_EQ(out, 7u);
  ASSERT_TRUE(ring->peek(out));
  EXPECT_EQ(out, 7u);
  EXPECT_EQ(ring->head(), 0u);
  ASSERT_TRUE(ring->try_pop(out));
  EXPECT_EQ(out, 7u);
  ASSERT_TRUE(ring->peek(out));
  EXPECT_EQ(out, 8u);
}

// tail(): items published; head(): items consumed. The owner of a dead
// peer's channel reads them: position p published iff p < tail(), consumed
// iff p < head().
TEST(SpscRing, HeadAndTailCountConsumedAndPublishedPositions) {
  Region region(Ring::bytes_for(4));
  Ring* ring = make_ring(region, 4);
  ASSERT_NE(ring, nullptr);
  std::uint64_t out = 0;
  for (std::uint64_t i = 0; i < 11; ++i) {
    ASSERT_TRUE(ring->try_push(i));
    if (i % 3 != 2) {
      ASSERT_TRUE(ring->try_pop(out));
    }
  }
  EXPECT_EQ(ring->tail(), 11u);
  EXPECT_EQ(ring->head(), 8u);
  EXPECT_EQ(ring->size_approx(), 3u);
  ASSERT_TRUE(ring->peek(out));
  EXPECT_EQ(out, ring->head());  // the item at position head() is the oldest
}

TEST(SpscRing, TryPushNTakesWhatFitsWithOnePublish) {
  Region region(Ring::bytes_for(8));
  Ring* ring = make_ring(region, 8);
  ASSERT_NE(ring, nullptr);
  std::uint64_t in[20];
  for (std::uint64_t i = 0; i < 20; ++i) in[i] = i;
  EXPECT_EQ(ring->try_push_n(in, 5), 5u);
  EXPECT_EQ(ring->tail(), 5u);
  EXPECT_EQ(ring->try_push_n(in + 5, 5), 3u);
  EXPECT_EQ(ring->try_push_n(in + 8, 5), 0u);
  EXPECT_EQ(ring->try_push_n(in, 0), 0u);
  std::uint64_t out[20];
  EXPECT_EQ(ring->try_pop_n(out, 20), 8u);
  for (std::uint64_t i = 0; i < 8; ++i) EXPECT_EQ(out[i], i);
  EXPECT_EQ(ring->head(), 8u);
}

// An item of an odd size: batches that wrap are cut in two copies.
struct Triple {
  std::uint32_t a, b, c;
};

TEST(SpscRing, BatchesWrapAroundManyTimesCapacity) {
  using TripleRing = SpscRing<Triple>;
  Region region(TripleRing::bytes_for(8));
  auto created = TripleRing::create_at(region.data(), region.size(), 8);
  ASSERT_TRUE(created);
  TripleRing* ring = *created;
  std::uint32_t next_in = 0;
  std::uint32_t next_out = 0;
  for (int round = 0; round < 1000; ++round) {
    Triple in[7];
    const std::size_t n = 1 + static_cast<std::size_t>(round) % 7;
    for (std::size_t i = 0; i < n; ++i) {
      const auto v = next_in + static_cast<std::uint32_t>(i);
      in[i] = Triple{v, v * 3, ~v};
    }
    next_in += static_cast<std::uint32_t>(ring->try_push_n(in, n));
    Triple out[8];
    const std::size_t popped = ring->try_pop_n(out, 1 + static_cast<std::size_t>(round) % 5);
    for (std::size_t i = 0; i < popped; ++i, ++next_out) {
      ASSERT_EQ(out[i].a, next_out);
      ASSERT_EQ(out[i].b, next_out * 3);
      ASSERT_EQ(out[i].c, ~next_out);
    }
  }
  Triple single{};
  while (ring->try_pop(single)) ASSERT_EQ(single.a, next_out++);
  EXPECT_EQ(next_out, next_in);
  EXPECT_GT(next_in, 100u * ring->capacity());
  EXPECT_EQ(ring->head(), ring->tail());
}

// A producer thread streams to a consumer thread: the consumer sleeps on its
// doorbell (rung after every publish), the producer on another when full
// (rung by the consumer after every pop, only if it sleeps). Every item
// arrives once, in order; a lost wake-up would time out after kNever.
struct StreamCase {
  std::uint32_t capacity;
  std::size_t batch;  // 1: try_push/try_pop, else the _n forms
  std::chrono::nanoseconds spin;
};

class SpscRingStream : public testing::TestWithParam<StreamCase> {};

TEST_P(SpscRingStream, ItemsArriveOnceInOrder) {
  const StreamCase c = GetParam();
#if defined(PALM_SANITIZE_thread) || defined(PALM_SANITIZE_address)
  constexpr std::uint64_t kItems = 200'000;
#else
  constexpr std::uint64_t kItems = 400'000;
#endif
  Region region(Ring::bytes_for(c.capacity));
  Ring* producer_view = make_ring(region, c.capacity);
  ASSERT_NE(producer_view, nullptr);
  auto consumer_view = Ring::attach_at(region.data(), region.size());
  ASSERT_TRUE(consumer_view);
  Ring* ring = *consumer_view;
  Doorbell data_ready;  // the consumer's
  Doorbell space_free;  // the producer's
  std::atomic<bool> producer_failed{false};

  std::thread producer([&] {
    std::uint64_t batch[64];
    std::uint64_t next = 0;
    while (next < kItems) {
      const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(c.batch, kItems - next));
      for (std::size_t i = 0; i < want; ++i) batch[i] = next + i;
      std::size_t pushed = 0;
      const WaitResult r = space_free.wait_for(
          [&]() noexcept {
            pushed = want == 1 ? (producer_view->try_push(batch[0]) ? 1 : 0)
                               : producer_view->try_push_n(batch, want);
            return pushed != 0;
          },
          kNever, c.spin);
      if (r != WaitResult::kReady) {
        producer_failed.store(true);
        data_ready.shutdown();  // let the consumer out
        return;
      }
      next += pushed;
      data_ready.ring();
    }
  });

  std::uint64_t expected = 0;
  bool in_order = true;
  std::uint64_t batch[64];
  while (expected < kItems && in_order) {
    std::size_t got = 0;
    const WaitResult r = data_ready.wait_for(
        [&]() noexcept {
          got = c.batch == 1 ? (ring->try_pop(batch[0]) ? 1 : 0) : ring->try_pop_n(batch, c.batch);
          return got != 0;
        },
        kNever, c.spin);
    if (r != WaitResult::kReady) break;
    for (std::size_t i = 0; i < got; ++i) in_order = in_order && batch[i] == expected++;
    space_free.ring_if_waiting();
  }
  space_free.shutdown();  // on failure, let the producer out
  producer.join();
  EXPECT_FALSE(producer_failed.load());
  EXPECT_TRUE(in_order);
  EXPECT_EQ(expected, kItems);
  EXPECT_EQ(ring->head(), kItems);
  EXPECT_EQ(ring->tail(), kItems);
}

INSTANTIATE_TEST_SUITE_P(Threads, SpscRingStream,
                         testing::Values(StreamCase{8, 1, Doorbell::kDefaultSpin},
                                         StreamCase{8, 1, std::chrono::nanoseconds{0}},
                                         StreamCase{1024, 1, Doorbell::kDefaultSpin},
                                         StreamCase{16, 7, Doorbell::kDefaultSpin},
                                         StreamCase{1024, 64, Doorbell::kDefaultSpin},
                                         StreamCase{2, 2, std::chrono::nanoseconds{0}}));

}  // namespace
}  // namespace palm
