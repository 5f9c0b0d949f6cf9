// BlockPool in one process (threads): sizes, exhaustion, refcounts, handle
// validation, lazy large classes, held lists, audit, the layout header, and a
// multi-thread stress run after which every block is free. Also run under
// TSan. Multi-process behaviour is in pool_proc_test.cpp.

#include "palm/core/pool.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <latch>
#include <random>
#include <thread>
#include <vector>

#include "palm/core/detail/pool_layout.hpp"

namespace palm {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t kMiB = std::size_t{1} << 20;

template <class T>
T must(Result<T> r, const char* what) {
  if (!r) {
    std::fprintf(stderr, "%s: %s\n", what, r.error().describe().c_str());
    std::abort();
  }
  return std::move(*r);
}

// A pool in a fresh memfd, with one attached slot.
class TestPool {
 public:
  explicit TestPool(const PoolConfig& cfg = PoolConfig{})
      : region_(must(MappedRegion::create_anonymous(BlockPool::region_bytes(cfg), "palm-pool-test"), "region")),
        pool_(must(BlockPool::create(region_.region(), cfg), "create")),
        slot_(must(pool_.attach_process(self_process()), "attach_process")) {}

  BlockPool& pool() { return pool_; }
  SlotId slot() const { return slot_; }
  const MappedRegion& region() const { return region_; }
  SlotId new_slot() { return must(pool_.attach_process(self_process()), "attach_process"); }

 private:
  MappedRegion region_;
  BlockPool pool_;
  SlotId slot_;
};

PoolConfig tiny_config() {
  PoolConfig cfg;
  cfg.blocks = {};  // nothing but what each test asks for
  cfg.set_blocks(256, 4).set_blocks(4096, 4).set_blocks(1 * kMiB, 2).set_blocks(64 * kMiB, 1);
  return cfg;
}

std::uint64_t stamp_of(Handle h) { return h.bits() * 0x9E3779B97F4A7C15ULL + 1; }

TEST(Handle, PacksFieldsAndNullIsZero) {
  const Handle h = Handle::pack(18, Handle::kMaxIndex, 0xFFFFFFFFu);
  EXPECT_EQ(h.size_class(), 18u);
  EXPECT_EQ(h.index(), Handle::kMaxIndex);
  EXPECT_EQ(h.generation(), 0xFFFFFFFFu);
  EXPECT_EQ(Handle::from_bits(h.bits()), h);
  EXPECT_TRUE(Handle{}.is_null());
  EXPECT_FALSE(Handle::pack(0, 0, 1).is_null());
  EXPECT_LT(Handle::pack(0, 1, 1), Handle::pack(0, 2, 1));
  EXPECT_NE(Handle::pack(0, 1, 1), Handle::pack(0, 1, 2));
}

TEST(BlockPool, ClassesRoundUpIncludingTheBlockHeader) {
  TestPool t;
  BlockPool& p = t.pool();
  EXPECT_EQ(p.class_capacity(0), 192u);
  EXPECT_EQ(*p.class_for(0), 0u);
  EXPECT_EQ(*p.class_for(192), 0u);
  EXPECT_EQ(*p.class_for(193), 1u);
  EXPECT_EQ(*p.class_for(1 * kMiB - 64), 12u);
  EXPECT_EQ(*p.class_for(1 * kMiB), 13u);
  EXPECT_EQ(p.max_capacity(), 64 * kMiB - 64);
  EXPECT_EQ(*p.class_for(p.max_capacity()), 18u);
  EXPECT_EQ(p.class_count(), 19u);
}

TEST(BlockPool, AllocatedBlockIsWritableAndReleaseFreesIt) {
  TestPool t;
  BlockPool& p = t.pool();
  const Handle h = must(p.allocate(900, t.slot()), "allocate");
  const BlockView v = must(p.resolve(h), "resolve");
  EXPECT_EQ(v.capacity, 1024u - 64u);
  EXPECT_EQ(v.used, 0u);
  std::memset(v.data, 0xAB, v.capacity);
  ASSERT_TRUE(p.set_used(h, 900));
  EXPECT_EQ(*p.used(h), 900u);
  EXPECT_EQ(p.set_used(h, v.capacity + 1).error().code, Errc::kOutOfRange);
  EXPECT_EQ(p.stats().allocated_blocks, 1u);
  ASSERT_TRUE(p.release(t.slot(), h));
  EXPECT_TRUE(p.stats().all_free());
}

TEST(BlockPool, AllocateBlockViewsTheNewBlockAsResolveDoes) {
  TestPool t(tiny_config());
  BlockPool& p = t.pool();
  const BlockView v = must(p.allocate_block(3000, t.slot()), "allocate_block");
  const BlockView r = must(p.resolve(v.handle), "resolve");
  EXPECT_EQ(v.data, r.data);
  EXPECT_EQ(v.capacity, 4096u - 64u);
  EXPECT_EQ(v.capacity, r.capacity);
  EXPECT_EQ(v.used, 0u);
  EXPECT_TRUE(p.holds(t.slot(), v.handle));
  std::memset(v.data, 0xCD, v.capacity);
  ASSERT_TRUE(p.set_used(v, 3000));
  EXPECT_EQ(*p.used(v.handle), 3000u);
  EXPECT_EQ(must(p.resolve(v.handle), "resolve").used, 3000u);
  EXPECT_EQ(p.set_used(v, v.capacity + 1).error().code, Errc::kOutOfRange);
  EXPECT_EQ(*p.used(v.handle), 3000u);  // a refused length changes nothing
  // The errors of allocate: a bad slot, a size over the largest class.
  EXPECT_EQ(p.allocate_block(10, SlotId{9999}).error().code, Errc::kInvalidArgument);
  EXPECT_EQ(p.allocate_block(p.max_capacity() + 1, t.slot()).error().code, Errc::kTooLarge);
  ASSERT_TRUE(p.release(t.slot(), v.handle));
  EXPECT_TRUE(p.stats().all_free());
}

TEST(BlockPool, ExhaustedNamesTheClassAndCountThenSucceedsAfterAFree) {
  TestPool t(tiny_config());
  BlockPool& p = t.pool();
  std::vector<Handle> hs;
  for (int i = 0; i < 4; ++i) hs.push_back(must(p.allocate(100, t.slot()), "allocate"));
  auto r = p.allocate(100, t.slot());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kExhausted);
  EXPECT_NE(r.error().message.find("256 bytes block"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("all 4 blocks"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("set_blocks(256"), std::string::npos) << r.error().message;
  ASSERT_TRUE(p.release(t.slot(), hs.back()));
  hs.back() = must(p.allocate(100, t.slot()), "allocate after a free");
  for (Handle h : hs) ASSERT_TRUE(p.release(t.slot(), h));
  EXPECT_TRUE(p.stats().all_free());
}

TEST(BlockPool, AllocateForTimesOutWhenNothingIsFreed) {
  TestPool t(tiny_config());
  BlockPool& p = t.pool();
  std::vector<Handle> hs;
  for (int i = 0; i < 4; ++i) hs.push_back(must(p.allocate(4000, t.slot()), "allocate"));
  auto r = p.allocate_for(4000, t.slot(), 20ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kTimeout);
  EXPECT_NE(r.error().message.find("4 KiB block"), std::string::npos) << r.error().message;
  for (Handle h : hs) ASSERT_TRUE(p.release(t.slot(), h));
}

TEST(BlockPool, AllocateForSucceedsWhenAnotherThreadFrees) {
  TestPool t(tiny_config());
  BlockPool& p = t.pool();
  std::vector<Handle> hs;
  for (int i = 0; i < 4; ++i) hs.push_back(must(p.allocate(4000, t.slot()), "allocate"));
  std::latch start(2);
  std::thread freer([&] {
    start.arrive_and_wait();
    EXPECT_TRUE(p.release(t.slot(), hs[0]));  // threads of one process share its slot
  });
  start.arrive_and_wait();
  // Whether the free lands before or during the wait, the bounded wait sees it.
  const Handle h = must(p.allocate_for(4000, t.slot(), 30s), "allocate_for");
  freer.join();
  ASSERT_TRUE(p.release(t.slot(), h));
  for (std::size_t i = 1; i < hs.size(); ++i) ASSERT_TRUE(p.release(t.slot(), hs[i]));
  EXPECT_TRUE(p.stats().all_free());
}

TEST(BlockPool, FanOutReferencesMoveBetweenSlotsAndTheLastReleaseFrees) {
  TestPool t;
  BlockPool& p = t.pool();
  const SlotId a = t.slot(), b = t.new_slot(), c = t.new_slot();
  const Handle h = must(p.allocate(64, a), "allocate");
  ASSERT_TRUE(p.add_ref(a, h, 2));  // three references, all held by a
  ASSERT_TRUE(p.unhold(a, h));      // sent to b ...
  ASSERT_TRUE(p.hold(b, h));        // ... received by b
  ASSERT_TRUE(p.unhold(a, h));
  ASSERT_TRUE(p.hold(c, h));
  ASSERT_TRUE(p.release(c, h));
  ASSERT_TRUE(p.resolve(h));
  ASSERT_TRUE(p.release(b, h));
  ASSERT_TRUE(p.resolve(h));
  EXPECT_EQ(p.release(b, h).error().code, Errc::kBadHandle);  // b holds none any more
  ASSERT_TRUE(p.release(a, h));
  EXPECT_EQ(p.resolve(h).error().code, Errc::kStaleHandle);
  EXPECT_EQ(p.release(a, h).error().code, Errc::kStaleHandle);
  EXPECT_TRUE(p.stats().all_free());
}

TEST(BlockPool, StaleHandleIsRejectedByEveryCall) {
  TestPool t(tiny_config());
  BlockPool& p = t.pool();
  const Handle old = must(p.allocate(10, t.slot()), "allocate");
  ASSERT_TRUE(p.release(t.slot(), old));
  EXPECT_EQ(p.resolve(old).error().code, Errc::kStaleHandle);
  EXPECT_EQ(p.used(old).error().code, Errc::kStaleHandle);
  EXPECT_EQ(p.set_used(old, 1).error().code, Errc::kStaleHandle);
  EXPECT_EQ(p.add_ref(t.slot(), old, 1).error().code, Errc::kStaleHandle);
  EXPECT_EQ(p.hold(t.slot(), old).error().code, Errc::kStaleHandle);
  EXPECT_EQ(p.release(t.slot(), old).error().code, Errc::kStaleHandle);
  // The block comes back under a new generation; the old handle stays stale.
  const Handle fresh = must(p.allocate(10, t.slot()), "allocate");
  EXPECT_EQ(fresh.index(), old.index());
  EXPECT_NE(fresh.generation(), old.generation());
  EXPECT_EQ(p.resolve(old).error().code, Errc::kStaleHandle);
  EXPECT_TRUE(p.resolve(fresh));
  ASSERT_TRUE(p.release(t.slot(), fresh));
  EXPECT_TRUE(p.stats().all_free());
}

TEST(BlockPool, OutOfRangeHandlesAreBadHandles) {
  TestPool t(tiny_config());
  BlockPool& p = t.pool();
  EXPECT_EQ(p.resolve(Handle{}).error().code, Errc::kBadHandle);
  EXPECT_EQ(p.resolve(Handle::pack(40, 0, 1)).error().code, Errc::kBadHandle);  // no class 40
  EXPECT_EQ(p.resolve(Handle::pack(0, 4, 1)).error().code, Errc::kBadHandle);   // 4 blocks: 0..3
  EXPECT_EQ(p.resolve(Handle::pack(1, 0, 1)).error().code, Errc::kBadHandle);   // 512 B: 0 blocks
  EXPECT_EQ(p.resolve(Handle::pack(12, 0, 1)).error().code, Errc::kBadHandle);  // 1 MiB: none cut yet
  EXPECT_EQ(p.release(t.slot(), Handle::pack(0, Handle::kMaxIndex, 1)).error().code, Errc::kBadHandle);
  EXPECT_EQ(p.release(SlotId{999}, Handle::pack(0, 0, 1)).error().code, Errc::kInvalidArgument);
  // A free block of the right generation is not allocated: stale, not readable.
  EXPECT_EQ(p.resolve(Handle::pack(0, 0, 1)).error().code, Errc::kStaleHandle);
  EXPECT_TRUE(p.stats().all_free());
}

TEST(BlockPool, DoubleReleaseIsRefusedWithoutCorruption) {
  TestPool t(tiny_config());
  BlockPool& p = t.pool();
  const Handle h = must(p.allocate(10, t.slot()), "allocate");
  ASSERT_TRUE(p.release(t.slot(), h));
  auto again = p.release(t.slot(), h);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::kStaleHandle);
  // The free list holds each block once: four distinct blocks, then none.
  std::vector<Handle> hs;
  for (int i = 0; i < 4; ++i) hs.push_back(must(p.allocate(10, t.slot()), "allocate"));
  for (int i = 0; i < 4; ++i) {
    for (int j = i + 1; j < 4; ++j) EXPECT_NE(hs[i].index(), hs[j].index());
  }
  EXPECT_EQ(p.allocate(10, t.slot()).error().code, Errc::kExhausted);
  for (Handle x : hs) ASSERT_TRUE(p.release(t.slot(), x));
  EXPECT_TRUE(p.stats().all_free());
}

TEST(BlockPool, ReleaseOfAReferenceTheSlotDoesNotHoldIsRefused) {
  TestPool t;
  BlockPool& p = t.pool();
  const SlotId other = t.new_slot();
  const Handle h = must(p.allocate(10, t.slot()), "allocate");
  EXPECT_EQ(p.release(other, h).error().code, Errc::kBadHandle);
  EXPECT_EQ(p.unhold(other, h).error().code, Errc::kBadHandle);
  EXPECT_TRUE(p.resolve(h));  // untouched
  ASSERT_TRUE(p.release(t.slot(), h));
  EXPECT_TRUE(p.stats().all_free());
}

TEST(BlockPool, LargeClassIsCutLazilyThenReused) {
  TestPool t(tiny_config());
  BlockPool& p = t.pool();
  constexpr std::uint32_t k64MiB = 18;
  EXPECT_EQ(p.stats().classes[k64MiB].cut, 0u);
  const Handle h = must(p.allocate(p.max_capacity(), t.slot()), "allocate 64 MiB");
  EXPECT_EQ(h.size_class(), k64MiB);
  EXPECT_EQ(p.stats().classes[k64MiB].cut, 1u);
  const BlockView v = must(p.resolve(h), "resolve");
  v.data[0] = std::byte{1};
  v.data[v.capacity - 1] = std::byte{2};
  ASSERT_TRUE(p.release(t.slot(), h));
  const Handle again = must(p.allocate(40 * kMiB, t.slot()), "allocate again");
  EXPECT_EQ(again.index(), h.index());
  EXPECT_EQ(p.stats().classes[k64MiB].cut, 1u);  // reused, not cut again
  EXPECT_EQ(p.allocate(40 * kMiB, t.slot()).error().code, Errc::kExhausted);  // count 1
  ASSERT_TRUE(p.release(t.slot(), again));
  EXPECT_TRUE(p.stats().all_free());
}

TEST(BlockPool, TooLargeNamesTheLimit) {
  TestPool t(tiny_config());
  auto r = t.pool().allocate(t.pool().max_capacity() + 1, t.slot());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kTooLarge);
  EXPECT_NE(r.error().message.find("64 MiB block"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("largest_block"), std::string::npos) << r.error().message;
}

TEST(BlockPool, FullHeldListIsExhaustedAndGivesTheBlockBack) {
  PoolConfig cfg = tiny_config();
  cfg.held_per_process = 16;
  cfg.set_blocks(256, 32);
  TestPool t(cfg);
  BlockPool& p = t.pool();
  std::vector<Handle> hs;
  for (int i = 0; i < 16; ++i) hs.push_back(must(p.allocate(10, t.slot()), "allocate"));
  auto r = p.allocate(10, t.slot());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kExhausted);
  EXPECT_NE(r.error().message.find("held_per_process"), std::string::npos) << r.error().message;
  EXPECT_EQ(p.add_ref(t.slot(), hs[0], 1).error().code, Errc::kExhausted);
  EXPECT_EQ(p.stats().allocated_blocks, 16u);
  for (Handle h : hs) ASSERT_TRUE(p.release(t.slot(), h));
  EXPECT_TRUE(p.stats().all_free());
}

TEST(BlockPool, ProcessSlotsRunOutAndDetachReleasesWhatTheSlotHeld) {
  PoolConfig cfg = tiny_config();
  cfg.process_slots = 2;
  TestPool t(cfg);
  BlockPool& p = t.pool();
  const SlotId second = t.new_slot();
  EXPECT_EQ(p.attach_process(self_process()).error().code, Errc::kExhausted);
  static_cast<void>(must(p.allocate(10, second), "allocate"));
  static_cast<void>(must(p.allocate(4000, second), "allocate"));
  EXPECT_EQ(must(p.detach_process(second), "detach"), 2u);
  EXPECT_TRUE(p.stats().all_free());
  EXPECT_EQ(p.stats().attached_processes, 1u);
  EXPECT_EQ(p.allocate(10, second).error().code, Errc::kInvalidArgument);  // detached
  EXPECT_TRUE(p.attach_process(self_process()));
}

TEST(BlockPool, ReclaimDeadRefusesALiveProcess) {
  TestPool t;
  auto r = t.pool().reclaim_dead(t.slot());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kInvalidArgument);
  EXPECT_NE(r.error().message.find("alive"), std::string::npos);
}

TEST(BlockPool, AuditRecoversBlocksLostInCrashWindows) {
  TestPool t(tiny_config());
  BlockPool& p = t.pool();
  // A reference that left the held list and never arrived (a receiver died
  // between a sender's unhold and its own hold).
  const Handle lost = must(p.allocate(10, t.slot()), "allocate");
  ASSERT_TRUE(p.unhold(t.slot(), lost));
  // References added but never recorded (died inside add_ref).
  const Handle kept = must(p.allocate(4000, t.slot()), "allocate");
  ASSERT_TRUE(p.add_ref(t.slot(), kept, 2));
  ASSERT_TRUE(p.unhold(t.slot(), kept));
  ASSERT_TRUE(p.unhold(t.slot(), kept));
  // Free blocks that fell off their list (died between a pop and marking
  // the block): drop the whole 256 B list.
  auto* hdr = reinterpret_cast<detail::PoolHeader*>(t.region().data());
  auto* states = reinterpret_cast<detail::ClassState*>(t.region().data() + hdr->class_state_offset);
  states[0].head = detail::pack_head(detail::kNilIndex, 7);
  EXPECT_FALSE(p.stats().all_free());

  const AuditReport rep = must(p.audit(), "audit");
  EXPECT_EQ(rep.unheld_freed, 1u);
  EXPECT_EQ(rep.refcounts_fixed, 1u);
  EXPECT_EQ(rep.free_relisted, 3u);  // the 256 B blocks that were free
  EXPECT_TRUE(p.resolve(kept));
  ASSERT_TRUE(p.release(t.slot(), kept));
  EXPECT_TRUE(p.stats().all_free());
}

#if defined(__SANITIZE_ADDRESS__)
TEST(BlockPoolAsan, TouchingAFreedBlockIsCaught) {
  TestPool t(tiny_config());
  BlockPool& p = t.pool();
  const Handle h = must(p.allocate(100, t.slot()), "allocate");
  std::byte* data = must(p.resolve(h), "resolve").data;
  data[0] = std::byte{1};
  ASSERT_TRUE(p.release(t.slot(), h));
  EXPECT_DEATH(data[0] = std::byte{2}, "use-after-poison");
}
#endif

// ---- the layout header ------------------------------------------------------

TEST(BlockPoolLayout, AttachSharesTheCreatorsBlocks) {
  TestPool t(tiny_config());
  BlockPool other = must(BlockPool::attach(t.region().region()), "attach");
  const Handle h = must(t.pool().allocate(100, t.slot()), "allocate");
  std::memcpy(must(t.pool().resolve(h), "resolve").data, "hello", 5);
  const BlockView v = must(other.resolve(h), "resolve in the attached view");
  EXPECT_EQ(std::memcmp(v.data, "hello", 5), 0);
  ASSERT_TRUE(other.release(t.slot(), h));
  EXPECT_TRUE(t.pool().stats().all_free());
}

TEST(BlockPoolLayout, AttachToAnUnfinishedRegionIsNotReady) {
  MappedRegion r = must(MappedRegion::create_anonymous(BlockPool::region_bytes(tiny_config())), "region");
  EXPECT_EQ(BlockPool::attach(r.region()).error().code, Errc::kNotReady);
}

TEST(BlockPoolLayout, AttachToAForeignRegionIsBadMagic) {
  TestPool t(tiny_config());
  auto* hdr = reinterpret_cast<detail::PoolHeader*>(t.region().data());
  hdr->magic = 0x1234;
  EXPECT_EQ(BlockPool::attach(t.region().region()).error().code, Errc::kBadMagic);
}

TEST(BlockPoolLayout, AttachToAnotherLayoutVersionNamesBoth) {
  TestPool t(tiny_config());
  auto* hdr = reinterpret_cast<detail::PoolHeader*>(t.region().data());
  hdr->version = 99;
  auto r = BlockPool::attach(t.region().region());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kVersionMismatch);
  EXPECT_NE(r.error().message.find("version 99"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("version " + std::to_string(detail::kPoolLayoutVersion)), std::string::npos);
}

TEST(BlockPoolLayout, AttachChecksSizesFromTheHeader) {
  TestPool t(tiny_config());
  auto* hdr = reinterpret_cast<detail::PoolHeader*>(t.region().data());
  Region small = t.region().region();
  small.size = hdr->region_bytes - 4096;
  EXPECT_EQ(BlockPool::attach(small).error().code, Errc::kMalformed);
  hdr->classes[3].area_offset += 64;  // no longer page aligned
  EXPECT_EQ(BlockPool::attach(t.region().region()).error().code, Errc::kMalformed);
}

TEST(BlockPoolLayout, CreateRefusesATooSmallRegionAndABadConfig) {
  MappedRegion r = must(MappedRegion::create_anonymous(1 * kMiB), "region");
  EXPECT_EQ(BlockPool::create(r.region(), tiny_config()).error().code, Errc::kInvalidArgument);
  PoolConfig bad = tiny_config();
  bad.largest_block = 3 * kMiB;
  EXPECT_EQ(BlockPool::region_bytes(bad), 0u);
  EXPECT_EQ(BlockPool::create(r.region(), bad).error().code, Errc::kInvalidArgument);
  EXPECT_THROW(bad.set_blocks(300, 1), std::invalid_argument);
}

// ---- stress ------------------------------------------------------------------

#if defined(PALM_SANITIZE_thread) || defined(PALM_SANITIZE_address)
constexpr int kOpsPerThread = 50000;
#else
constexpr int kOpsPerThread = 200000;
#endif

// Threads, each with its own slot, allocate across classes (small and
// lazily cut), fan out through shared mailboxes (add_ref + unhold, then hold
// on the other side), check every block's stamp on receipt and release at
// random. Afterwards every block is free and on its list.
void stress(int threads) {
  PoolConfig cfg;
  cfg.blocks = {};
  cfg.set_blocks(256, 64).set_blocks(1024, 32).set_blocks(16384, 16).set_blocks(1 * kMiB, 4).set_blocks(2 * kMiB, 4);
  cfg.largest_block = 2 * kMiB;
  TestPool t(cfg);
  BlockPool& p = t.pool();
  constexpr std::size_t kSizes[] = {1, 192, 700, 9000, 600000, 1500000};
  constexpr int kBoxes = 16;
  std::atomic<std::uint64_t> boxes[kBoxes] = {};
  std::atomic<int> failures{0};
  std::atomic<long> exhausted{0};
  std::latch start(threads);

  auto worker = [&](int id) {
    const SlotId slot = must(p.attach_process(self_process()), "attach_process");
    std::mt19937 rng(static_cast<unsigned>(id) * 7919u + 1);
    std::vector<Handle> held;
    auto check_stamp = [&](Handle h) {
      auto v = p.resolve(h);
      std::uint64_t s = 0;
      if (v) std::memcpy(&s, v->data, sizeof s);
      if (!v || s != stamp_of(h)) failures.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
    };
    auto take = [&](Handle h) {
      if (!p.hold(slot, h)) failures.fetch_add(1, std::memory_order_relaxed);
      check_stamp(h);
      held.push_back(h);
    };
    start.arrive_and_wait();
    for (int op = 0; op < kOpsPerThread; ++op) {
      const unsigned dice = rng() % 8;
      // Allocating, sending and receiving add references this thread
      // holds; at 24 it only releases, so each holds about 25 at most.
      const bool full = held.size() >= 24;
      if (dice < 3 && !full) {
        auto h = p.allocate(kSizes[rng() % std::size(kSizes)], slot);
        if (!h) {
          if (h.error().code != Errc::kExhausted) failures.fetch_add(1, std::memory_order_relaxed);
          exhausted.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
          continue;
        }
        const std::uint64_t s = stamp_of(*h);
        std::memcpy(must(p.resolve(*h), "resolve").data, &s, sizeof s);
        held.push_back(*h);
      } else if (dice < 5 && !full && !held.empty()) {
        // Send one more reference of a held block to a mailbox.
        const Handle h = held[rng() % held.size()];
        if (!p.add_ref(slot, h, 1) || !p.unhold(slot, h)) {
          failures.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        // acq_rel: release publishes the stamp; acquire pairs with the
        // sender of a displaced handle.
        const std::uint64_t prev = boxes[rng() % kBoxes].exchange(h.bits(), std::memory_order_acq_rel);
        if (prev != 0) take(Handle::from_bits(prev));
      } else if (dice < 6 && !full) {
        // acquire: pairs with the sender's exchange.
        const std::uint64_t got = boxes[rng() % kBoxes].exchange(0, std::memory_order_acq_rel);
        if (got != 0) take(Handle::from_bits(got));
      } else if (!held.empty()) {
        const std::size_t i = rng() % held.size();
        check_stamp(held[i]);
        if (!p.release(slot, held[i])) failures.fetch_add(1, std::memory_order_relaxed);
        held[i] = held.back();
        held.pop_back();
      }
    }
    for (Handle h : held) {
      if (!p.release(slot, h)) failures.fetch_add(1, std::memory_order_relaxed);
    }
    if (!p.detach_process(slot)) failures.fetch_add(1, std::memory_order_relaxed);
  };

  std::vector<std::thread> ts;
  for (int i = 0; i < threads; ++i) ts.emplace_back(worker, i);
  for (auto& th : ts) th.join();
  for (auto& box : boxes) {
    const std::uint64_t bits = box.exchange(0, std::memory_order_acquire);  // threads joined: any order
    if (bits == 0) continue;
    ASSERT_TRUE(p.hold(t.slot(), Handle::from_bits(bits)));
    ASSERT_TRUE(p.release(t.slot(), Handle::from_bits(bits)));
  }
  EXPECT_EQ(failures.load(), 0);
  const PoolStats st = p.stats();
  EXPECT_TRUE(st.all_free());
  EXPECT_EQ(st.attached_processes, 1u);
  for (const ClassStats& c : st.classes) {
    EXPECT_EQ(c.free, c.cut);
    EXPECT_EQ(c.listed, c.cut);
    EXPECT_LE(c.cut, c.count);
  }
  std::printf("[ stress  ] %d threads x %d ops, %ld allocations found the class exhausted\n", threads, kOpsPerThread,
              exhausted.load());
}

TEST(BlockPoolStress, OneThread) { stress(1); }
TEST(BlockPoolStress, ThreeThreads) { stress(3); }
TEST(BlockPoolStress, SixteenThreadsOnTwoCores) { stress(16); }

}  // namespace
}  // namespace palm
