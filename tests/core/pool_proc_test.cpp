// BlockPool across processes: peers attach to a pool in a POSIX shm object
// by name, exchange handles, churn concurrently; a peer SIGKILLed while
// holding blocks has them reclaimed by the owner; a full backing store is an
// error (kNoSpace), never a SIGBUS. Every test ends with every block free.

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "palm/core/pool.hpp"
#include "peer.hpp"
#include "shm_mapping.hpp"

namespace palm {
namespace {

using namespace std::chrono_literals;
using test::Child;
using test::Pipe;
using test::ShmGuard;
using test::spawn_peer;

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr int kWaitMs = 30000;

// Mailbox block: 64-bit words. [0] the peer's slot, [1] a count,
// [kHandles..] handles a peer reports, [kBoxes..] churn mailboxes.
constexpr std::size_t kSlotWord = 0, kCountWord = 1, kHandles = 2, kBoxes = 32, kNumBoxes = 16;

std::atomic_ref<std::uint64_t> word(const BlockView& v, std::size_t i) {
  return std::atomic_ref<std::uint64_t>(reinterpret_cast<std::uint64_t*>(v.data)[i]);
}
std::uint64_t stamp_of(Handle h) { return h.bits() * 0x9E3779B97F4A7C15ULL + 1; }

// The pool's region is a MappedRegion, not a SharedMapping: the pool
// reserves blocks through its fd (posix_fallocate), and MappedRegion forgets
// ASan's poison before it unmaps. map_fd dups the fd; `file` closes ours.
Result<MappedRegion> create_shm(const std::string& name, std::size_t bytes) {
  auto file = test::ShmFile::create(name, bytes);
  if (!file) return errno_error(errno, "shm_open or ftruncate of " + name);
  return MappedRegion::map_fd(file->fd(), file->size());
}

Result<MappedRegion> open_shm(const std::string& name) {
  auto file = test::ShmFile::open(name);
  if (!file) return errno_error(errno, "shm_open or fstat of " + name);
  return MappedRegion::map_fd(file->fd(), file->size());
}

bool readable_within(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, ms) == 1;
}
void signal_fd(int fd) {
  const char c = 1;
  static_cast<void>(::write(fd, &c, 1));
}

int fail(int code, const char* what, const Error& e) {
  std::fprintf(stderr, "peer: %s: %s\n", what, e.describe().c_str());
  return code;
}

// Allocate, fan out through mailboxes, receive, check stamps, release, at
// random; `ready_fd` is signalled after `ready_after` ops; `forever` keeps
// going (until killed, or 30 s). Returns the number of failed checks.
int churn(BlockPool& p, SlotId slot, const BlockView& mailbox, unsigned seed, long ops, int ready_fd,
          long ready_after, bool forever) {
  constexpr std::size_t kSizes[] = {1, 192, 700, 9000, 600000};
  std::mt19937 rng(seed);
  std::vector<Handle> held;
  int failures = 0;
  auto check_stamp = [&](Handle h) {
    auto v = p.resolve(h);
    std::uint64_t s = 0;
    if (v) std::memcpy(&s, v->data, sizeof s);
    if (!v || s != stamp_of(h)) ++failures;
  };
  auto take = [&](Handle h) {
    if (!p.hold(slot, h)) ++failures;
    check_stamp(h);
    held.push_back(h);
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kWaitMs);
  for (long op = 0; forever || op < ops; ++op) {
    if (op == ready_after && ready_fd >= 0) signal_fd(ready_fd);
    if (forever && (op & 1023) == 0 && std::chrono::steady_clock::now() > deadline) break;
    const unsigned dice = rng() % 8;
    const bool full = held.size() >= 16;  // references held stay bounded
    if (dice < 3 && !full) {
      auto h = p.allocate(kSizes[rng() % std::size(kSizes)], slot);
      if (!h) {
        if (h.error().code != Errc::kExhausted) ++failures;
        continue;
      }
      const std::uint64_t s = stamp_of(*h);
      std::memcpy(p.resolve(*h)->data, &s, sizeof s);
      held.push_back(*h);
    } else if (dice < 5 && !full && !held.empty()) {
      const Handle h = held[rng() % held.size()];
      if (!p.add_ref(slot, h, 1) || !p.unhold(slot, h)) {
        ++failures;
        continue;
      }
      // acq_rel: publishes the stamp; acquires the displaced handle's.
      const std::uint64_t prev = word(mailbox, kBoxes + rng() % kNumBoxes).exchange(h.bits(), std::memory_order_acq_rel);
      if (prev != 0) take(Handle::from_bits(prev));
    } else if (dice < 6 && !full) {
      const std::uint64_t got = word(mailbox, kBoxes + rng() % kNumBoxes).exchange(0, std::memory_order_acq_rel);
      if (got != 0) take(Handle::from_bits(got));
    } else if (!held.empty()) {
      const std::size_t i = rng() % held.size();
      check_stamp(held[i]);
      if (!p.release(slot, held[i])) ++failures;
      held[i] = held.back();
      held.pop_back();
    }
  }
  for (Handle h : held) {
    if (!p.release(slot, h)) ++failures;
  }
  return failures;
}

// ---- peers -------------------------------------------------------------------

struct Attached {
  MappedRegion region;
  BlockPool pool;
  SlotId slot;
};

Result<Attached> attach_by_name(const std::string& name) {
  auto region = open_shm(name);
  if (!region) return tl::unexpected(region.error());
  auto pool = BlockPool::attach(region->region());
  if (!pool) return tl::unexpected(pool.error());
  auto slot = pool->attach_process(self_process());
  if (!slot) return tl::unexpected(slot.error());
  return Attached{std::move(*region), *pool, *slot};
}

// args: shm name, handle X (one reference moved to us), mailbox handle.
PALM_TEST_PEER(echo) {
  auto a = attach_by_name(args.at(0));
  if (!a) return fail(10, "attach", a.error());
  BlockPool& p = a->pool;
  const Handle x = Handle::from_bits(std::stoull(args.at(1)));
  const Handle m = Handle::from_bits(std::stoull(args.at(2)));
  if (auto r = p.hold(a->slot, x); !r) return fail(11, "hold x", r.error());
  auto xv = p.resolve(x);
  if (!xv) return fail(12, "resolve x", xv.error());
  if (xv->used != 4 || std::memcmp(xv->data, "ping", 4) != 0) return 13;
  auto y = p.allocate(4, a->slot);
  if (!y) return fail(14, "allocate y", y.error());
  std::memcpy(p.resolve(*y)->data, "pong", 4);
  if (auto r = p.set_used(*y, 4); !r) return fail(15, "set_used", r.error());
  auto mv = p.resolve(m);
  if (!mv) return fail(16, "resolve mailbox", mv.error());
  if (auto r = p.unhold(a->slot, *y); !r) return fail(17, "unhold y", r.error());
  word(*mv, kHandles).store(y->bits(), std::memory_order_release);  // (the exit orders it too)
  if (auto r = p.release(a->slot, x); !r) return fail(18, "release x", r.error());
  auto d = p.detach_process(a->slot);
  if (!d) return fail(19, "detach", d.error());
  return *d == 0 ? 0 : 20;
}

// args: shm name, mailbox handle, ready fd, wait fd. Holds blocks, reports
// them, then waits to be killed.
PALM_TEST_PEER(hold_and_wait) {
  auto a = attach_by_name(args.at(0));
  if (!a) return fail(10, "attach", a.error());
  BlockPool& p = a->pool;
  auto mv = p.resolve(Handle::from_bits(std::stoull(args.at(1))));
  if (!mv) return fail(11, "resolve mailbox", mv.error());
  const std::size_t sizes[] = {100, 300, 4000, 60000, 900000};  // the last is cut from the lazy range
  std::uint64_t n = 0;
  for (std::size_t bytes : sizes) {
    auto h = p.allocate(bytes, a->slot);
    if (!h) return fail(12, "allocate", h.error());
    const std::uint64_t s = stamp_of(*h);
    std::memcpy(p.resolve(*h)->data, &s, sizeof s);
    word(*mv, kHandles + n++).store(h->bits(), std::memory_order_relaxed);  // published by the release below
  }
  if (auto r = p.add_ref(a->slot, Handle::from_bits(word(*mv, kHandles).load()), 2); !r) {
    return fail(13, "add_ref", r.error());
  }
  word(*mv, kSlotWord).store(static_cast<std::uint64_t>(a->slot), std::memory_order_relaxed);
  // release: pairs with the owner's acquire of the count.
  word(*mv, kCountWord).store(n, std::memory_order_release);
  signal_fd(std::stoi(args.at(2)));
  readable_within(std::stoi(args.at(3)), kWaitMs);  // killed before this returns
  return 3;
}

// args: shm name, mailbox handle, seed, ops, ready fd (-1: none), ready
// after, forever (0/1).
PALM_TEST_PEER(churn) {
  auto a = attach_by_name(args.at(0));
  if (!a) return fail(10, "attach", a.error());
  auto mv = a->pool.resolve(Handle::from_bits(std::stoull(args.at(1))));
  if (!mv) return fail(11, "resolve mailbox", mv.error());
  word(*mv, kSlotWord).store(static_cast<std::uint64_t>(a->slot), std::memory_order_release);
  const int failures = churn(a->pool, a->slot, *mv, static_cast<unsigned>(std::stoul(args.at(2))),
                             std::stol(args.at(3)), std::stoi(args.at(4)), std::stol(args.at(5)), args.at(6) == "1");
  if (failures != 0) {
    std::fprintf(stderr, "peer churn: %d failed checks\n", failures);
    return 21;
  }
  auto d = a->pool.detach_process(a->slot);
  if (!d) return fail(22, "detach", d.error());
  return 0;
}

// In a private mount namespace, a 16 MiB tmpfs over /dev/shm: a real ENOSPC.
// Exit 77: no namespace or mount here (the caller skips).
PALM_TEST_PEER(tiny_shm) {
  if (::unshare(CLONE_NEWNS) != 0) return 77;
  if (::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 77;
  if (::mount("palm-test-tmpfs", "/dev/shm", "tmpfs", 0, "size=16m,mode=1777") != 0) return 77;
  // 1. Small classes that do not fit: refused at create, not a SIGBUS later.
  {
    PoolConfig big;
    big.set_blocks(4096, 8192);  // 32 MiB of 4 KiB blocks
    const std::string name = test::unique_name("tiny-big");
    ShmGuard guard(name);
    auto region = create_shm(name, BlockPool::region_bytes(big));
    if (!region) return fail(30, "create_shm", region.error());
    auto pool = BlockPool::create(region->region(), big);
    if (pool || pool.error().code != Errc::kNoSpace) return 31;
    if (pool.error().message.find("small size classes") == std::string::npos) return 32;
    std::fprintf(stderr, "peer tiny_shm: create: %s\n", pool.error().describe().c_str());
  }
  // 2. A pool that fits, whose 64 MiB block does not: kNoSpace when cut.
  const std::string name = test::unique_name("tiny");
  ShmGuard guard(name);
  auto region = create_shm(name, BlockPool::region_bytes(PoolConfig{}));
  if (!region) return fail(33, "create_shm", region.error());
  auto pool = BlockPool::create(region->region());
  if (!pool) return fail(34, "create", pool.error());
  auto slot = pool->attach_process(self_process());
  if (!slot) return fail(35, "attach_process", slot.error());
  auto big = pool->allocate(40 * kMiB, *slot);
  if (big || big.error().code != Errc::kNoSpace) return 36;
  std::fprintf(stderr, "peer tiny_shm: allocate: %s\n", big.error().describe().c_str());
  if (big.error().message.find("64 MiB block") == std::string::npos ||
      big.error().message.find("MiB free in the backing store") == std::string::npos) {
    return 37;
  }
  auto small = pool->allocate(kMiB - 64, *slot);  // 1 MiB still fits
  if (!small) return fail(38, "allocate 1 MiB", small.error());
  if (auto r = pool->release(*slot, *small); !r) return fail(39, "release", r.error());
  return pool->stats().all_free() ? 0 : 40;
}

// ---- tests -------------------------------------------------------------------

class PoolProc : public ::testing::Test {
 protected:
  void SetUp() override {
    auto region = create_shm(guard_.name(), BlockPool::region_bytes(PoolConfig{}));
    ASSERT_TRUE(region) << region.error().describe();
    region_ = std::move(*region);
    auto pool = BlockPool::create(region_.region());
    ASSERT_TRUE(pool) << pool.error().describe();
    pool_.emplace(*pool);
    auto slot = pool_->attach_process(self_process());
    ASSERT_TRUE(slot) << slot.error().describe();
    slot_ = *slot;
    auto m = pool_->allocate(1024, slot_);
    ASSERT_TRUE(m) << m.error().describe();
    mailbox_ = *m;
    std::memset(pool_->resolve(mailbox_)->data, 0, 1024 - 64);
  }

  BlockView mailbox() { return *pool_->resolve(mailbox_); }

  // Moves what is left in the churn mailboxes to the owner and releases it.
  void drain_boxes() {
    for (std::size_t i = 0; i < kNumBoxes; ++i) {
      const std::uint64_t bits = word(mailbox(), kBoxes + i).exchange(0, std::memory_order_acquire);
      if (bits == 0) continue;
      ASSERT_TRUE(pool_->hold(slot_, Handle::from_bits(bits)));
      ASSERT_TRUE(pool_->release(slot_, Handle::from_bits(bits)));
    }
  }

  void expect_all_free_after_mailbox() {
    ASSERT_TRUE(pool_->release(slot_, mailbox_));
    const PoolStats st = pool_->stats();
    EXPECT_TRUE(st.all_free());
    EXPECT_EQ(st.allocated_blocks, 0u);
    EXPECT_EQ(st.attached_processes, 1u);
  }

  ShmGuard guard_{test::unique_name("pool")};
  MappedRegion region_;
  std::optional<BlockPool> pool_;
  SlotId slot_{};
  Handle mailbox_;
};

TEST_F(PoolProc, PeerAttachesByNameAndExchangesHandles) {
  BlockPool& p = *pool_;
  const Handle x = *p.allocate(4, slot_);
  std::memcpy(p.resolve(x)->data, "ping", 4);
  ASSERT_TRUE(p.set_used(x, 4));
  ASSERT_TRUE(p.add_ref(slot_, x, 1));  // one reference for the peer ...
  ASSERT_TRUE(p.unhold(slot_, x));      // ... moved out of our list
  Child peer = spawn_peer("echo", {guard_.name(), std::to_string(x.bits()), std::to_string(mailbox_.bits())});
  ASSERT_EQ(peer.exit_code_within(std::chrono::milliseconds(kWaitMs)), 0);
  const Handle y = Handle::from_bits(word(mailbox(), kHandles).load(std::memory_order_acquire));
  ASSERT_TRUE(p.hold(slot_, y));
  const BlockView yv = *p.resolve(y);
  EXPECT_EQ(yv.used, 4u);
  EXPECT_EQ(std::memcmp(yv.data, "pong", 4), 0);
  ASSERT_TRUE(p.release(slot_, y));
  ASSERT_TRUE(p.release(slot_, x));
  expect_all_free_after_mailbox();
}

TEST_F(PoolProc, KilledPeersBlocksAreReclaimedByTheOwner) {
  BlockPool& p = *pool_;
  Pipe ready, hold_open;
  Child peer = spawn_peer("hold_and_wait", {guard_.name(), std::to_string(mailbox_.bits()), std::to_string(ready.w),
                                            std::to_string(hold_open.r)});
  ASSERT_TRUE(readable_within(ready.r, kWaitMs)) << "the peer never got ready";
  const BlockView mv = mailbox();
  const std::uint64_t n = word(mv, kCountWord).load(std::memory_order_acquire);
  ASSERT_EQ(n, 5u);
  const SlotId peer_slot{static_cast<std::uint32_t>(word(mv, kSlotWord).load(std::memory_order_relaxed))};
  for (std::uint64_t i = 0; i < n; ++i) {
    const Handle h = Handle::from_bits(word(mv, kHandles + i).load(std::memory_order_relaxed));
    auto v = p.resolve(h);
    ASSERT_TRUE(v) << v.error().describe();
    std::uint64_t s = 0;
    std::memcpy(&s, v->data, sizeof s);
    EXPECT_EQ(s, stamp_of(h));
  }
  EXPECT_EQ(p.stats().allocated_blocks, 6u);  // the peer's 5 + the mailbox
  EXPECT_EQ(p.reclaim_dead(peer_slot).error().code, Errc::kInvalidArgument);  // still alive

  const ProcessId id = *p.slot_process(peer_slot);
  EXPECT_EQ(id.pid, peer.pid());
  peer.kill_and_reap();
  EXPECT_FALSE(process_alive(id));
  const ReclaimReport rep = *p.reclaim_dead(peer_slot);
  EXPECT_EQ(rep.references_released, 7u);  // 5 blocks, one of them with 2 more references
  EXPECT_EQ(rep.blocks_freed, 5u);
  EXPECT_EQ(rep.stale_entries, 0u);
  expect_all_free_after_mailbox();
}

TEST_F(PoolProc, ConcurrentPeersChurnAndLeaveEveryBlockFree) {
  const std::string m = std::to_string(mailbox_.bits());
  Child a = spawn_peer("churn", {guard_.name(), m, "11", "3000", "-1", "-1", "0"});
  Child b = spawn_peer("churn", {guard_.name(), m, "22", "3000", "-1", "-1", "0"});
  EXPECT_EQ(churn(*pool_, slot_, mailbox(), 33, 3000, -1, -1, false), 0);
  EXPECT_EQ(a.exit_code_within(std::chrono::milliseconds(kWaitMs)), 0);
  EXPECT_EQ(b.exit_code_within(std::chrono::milliseconds(kWaitMs)), 0);
  drain_boxes();
  expect_all_free_after_mailbox();
}

TEST_F(PoolProc, PeerKilledMidChurnLosesAtMostTheBlockInItsHand) {
  Pipe ready;
  Child peer = spawn_peer("churn", {guard_.name(), std::to_string(mailbox_.bits()), "44", "0",
                                    std::to_string(ready.w), "2000", "1"});
  ASSERT_TRUE(readable_within(ready.r, kWaitMs)) << "the peer never got ready";
  const SlotId peer_slot{static_cast<std::uint32_t>(word(mailbox(), kSlotWord).load(std::memory_order_acquire))};
  peer.kill_and_reap();  // somewhere inside an operation
  auto rep = pool_->reclaim_dead(peer_slot);
  ASSERT_TRUE(rep) << rep.error().describe();
  EXPECT_EQ(rep->stale_entries, 0u);
  drain_boxes();
  // Whatever the kill interrupted: at most one block off every list, or one
  // reference counted but held by no one.
  const AuditReport audit = *pool_->audit();
  std::printf("[ audit   ] released %zu refs of the dead peer; audit: relisted %zu, unheld %zu, refcounts %zu, "
              "uncut %zu\n",
              rep->references_released, audit.free_relisted, audit.unheld_freed, audit.refcounts_fixed,
              audit.uncut_recovered);
  EXPECT_LE(audit.free_relisted + audit.unheld_freed + audit.refcounts_fixed + audit.uncut_recovered, 1u);
  EXPECT_TRUE(pool_->resolve(mailbox_));  // the owner's own block survived the audit
  expect_all_free_after_mailbox();
}

TEST(PoolNoSpace, FullTmpfsIsKNoSpaceAtCreateAndAtCutNeverSigbus) {
  Child peer = spawn_peer("tiny_shm");
  const auto code = peer.exit_code_within(std::chrono::milliseconds(kWaitMs));
  if (code == 77) GTEST_SKIP() << "no private mount namespace here (needs CAP_SYS_ADMIN); see the sealed-memfd test";
  EXPECT_EQ(code, 0);
}

TEST(PoolNoSpace, ReservationFailureIsAnErrorNamingTheBlock) {
  // A memfd that may not grow past its small classes (F_SEAL_GROW), mapped
  // at the pool's full size: cutting a large block must fail at
  // posix_fallocate (EPERM here), with a clear error, never a SIGBUS.
  PoolConfig cfg;
  PoolConfig no_large = cfg;
  for (std::size_t c = 12; c < kMaxSizeClasses; ++c) no_large.blocks[c] = 0;
  const std::size_t prefix = BlockPool::region_bytes(no_large);
  const std::size_t total = BlockPool::region_bytes(cfg);
  ASSERT_LT(prefix, total);
  const int fd = ::memfd_create("palm-sealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(prefix)), 0);
  ASSERT_EQ(::fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK), 0);
  void* base = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(base, MAP_FAILED);
  {
    auto pool = BlockPool::create(Region{static_cast<std::byte*>(base), total, fd, 0}, cfg);
    ASSERT_TRUE(pool) << pool.error().describe();
    const SlotId slot = *pool->attach_process(self_process());
    auto big = pool->allocate(kMiB - 64, slot);
    ASSERT_FALSE(big);
    EXPECT_NE(big.error().code, Errc::kOk);
    EXPECT_NE(big.error().message.find("1 MiB block"), std::string::npos) << big.error().message;
    EXPECT_NE(big.error().message.find("backing store"), std::string::npos) << big.error().message;
    std::printf("[ sealed  ] %s\n", big.error().describe().c_str());
    EXPECT_EQ(pool->stats().classes[12].cut, 0u);
    auto small = pool->allocate(100, slot);
    ASSERT_TRUE(small);
    ASSERT_TRUE(pool->release(slot, *small));
    EXPECT_TRUE(pool->stats().all_free());
  }
  // And a region whose small classes cannot be reserved fails at create.
  const int small_fd = ::memfd_create("palm-sealed-small", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(small_fd, 0);
  ASSERT_EQ(::ftruncate(small_fd, static_cast<off_t>(kMiB)), 0);
  ASSERT_EQ(::fcntl(small_fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK), 0);
  void* small_base = ::mmap(nullptr, prefix, PROT_READ | PROT_WRITE, MAP_SHARED, small_fd, 0);
  ASSERT_NE(small_base, MAP_FAILED);
  auto refused = BlockPool::create(Region{static_cast<std::byte*>(small_base), prefix, small_fd, 0}, no_large);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("small size classes"), std::string::npos) << refused.error().message;
  forget_region_poison(Region{static_cast<std::byte*>(small_base), prefix, small_fd, 0});
  ::munmap(small_base, prefix);
  ::close(small_fd);
  forget_region_poison(Region{static_cast<std::byte*>(base), total, fd, 0});
  ::munmap(base, total);
  ::close(fd);
}

}  // namespace
}  // namespace palm
