// BlockPool, the hot paths: addressing, handle validation, the free lists
// and cutting of large blocks, the held lists, and the block operations
// (allocate, release, references, resolve). Layout, create and attach are in
// pool_create.cpp; process slots, reclaim, stats and audit in pool_repair.cpp.
#include "palm/core/pool.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>

#include "pool_internal.hpp"

namespace palm {

using detail::atomic_of;
using detail::BlockHeader;
using detail::BlockState;
using detail::ClassState;
using detail::kBlockHeaderBytes;
using detail::kNilIndex;
using detail::ProcessSlot;
using detail::SlotState;
using detail::bytes_str;
using detail::kNoOwner;
using detail::poison;
using detail::unpoison;

namespace {

constexpr std::uint32_t kEintrRetries = 100;

std::string free_space(int fd) {
  struct statvfs vfs {};
  if (::fstatvfs(fd, &vfs) != 0) return "free space unknown";
  if (vfs.f_blocks == 0) return "the backing store has no size limit";  // e.g. a memfd
  const std::uint64_t avail = std::uint64_t{vfs.f_bavail} * vfs.f_frsize;
  return bytes_str(avail >> 20 << 20) + " free in the backing store";
}

}  // namespace

// ---------------------------------------------------------------------------
// Addressing (indices are checked by the callers)

BlockHeader& BlockPool::block(std::uint32_t c, std::uint32_t index) const noexcept {
  return *reinterpret_cast<BlockHeader*>(classes_[c].area + std::size_t{index} * classes_[c].block_bytes);
}
std::byte* BlockPool::block_data(std::uint32_t c, std::uint32_t index) const noexcept {
  return classes_[c].area + std::size_t{index} * classes_[c].block_bytes + kBlockHeaderBytes;
}
ClassState& BlockPool::class_state(std::uint32_t c) const noexcept {
  return reinterpret_cast<ClassState*>(class_state_)[c];
}
ProcessSlot& BlockPool::slot_at(std::uint32_t s) const noexcept {
  return reinterpret_cast<ProcessSlot*>(slots_)[s];
}
std::uint64_t* BlockPool::held_list(std::uint32_t s) const noexcept {
  return reinterpret_cast<std::uint64_t*>(held_) + std::size_t{s} * held_per_process_;
}

std::size_t BlockPool::max_capacity() const noexcept {
  return classes_[class_count_ - 1].block_bytes - kBlockHeaderBytes;
}
std::size_t BlockPool::class_capacity(std::uint32_t size_class) const noexcept {
  return size_class < class_count_ ? classes_[size_class].block_bytes - kBlockHeaderBytes : 0;
}

Result<std::uint32_t> BlockPool::class_for(std::size_t bytes) const noexcept {
  if (bytes > max_capacity()) {
    return make_error(Errc::kTooLarge,
                      bytes_str(bytes) + " exceed the largest size class: a " +
                          bytes_str(classes_[class_count_ - 1].block_bytes) + " block holds " +
                          std::to_string(max_capacity()) +
                          " bytes (64 are its header); raise PoolConfig::largest_block (up to 1 GiB)");
  }
  const std::size_t need = std::max<std::size_t>(bytes + kBlockHeaderBytes, std::size_t{1} << detail::kMinBlockShift);
  return static_cast<std::uint32_t>(std::bit_width(need - 1)) - detail::kMinBlockShift;
}

Error BlockPool::exhausted(std::uint32_t c) const {
  const LocalClass& lc = classes_[c];
  return Error{Errc::kExhausted, "no free " + bytes_str(lc.block_bytes) + " block (size class " + std::to_string(c) +
                                     ": all " + std::to_string(lc.count) + " blocks " +
                                     (lc.lazy ? "cut and " : "") + "in use); raise it with PoolConfig::set_blocks(" +
                                     std::to_string(lc.block_bytes) + ", n) or release blocks sooner"};
}

// ---------------------------------------------------------------------------
// Validation

Result<void> BlockPool::check_slot(SlotId slot) const noexcept {
  const auto s = static_cast<std::uint32_t>(slot);
  if (s >= process_slots_) {
    return make_error(Errc::kInvalidArgument, "process slot " + std::to_string(s) + " out of range (the pool has " +
                                                  std::to_string(process_slots_) + ")");
  }
  // (S0) relaxed: the caller's own slot, attached by its process before the
  // SlotId reached this thread; only that process or a reclaimer after its
  // death changes it.
  const std::uint64_t w = atomic_of(slot_at(s).state_pid).load(std::memory_order_relaxed);
  if (detail::slot_state(w) != SlotState::kAttached) {
    return make_error(Errc::kInvalidArgument, "process slot " + std::to_string(s) + " is not attached");
  }
  return {};
}

bool BlockPool::slot_ok(SlotId slot) const noexcept {
  const auto s = static_cast<std::uint32_t>(slot);
  // (S0), as in check_slot.
  return s < process_slots_ &&
         detail::slot_state(atomic_of(slot_at(s).state_pid).load(std::memory_order_relaxed)) ==
             SlotState::kAttached;
}

BlockHeader* BlockPool::find(Handle h) const noexcept {
  if (h.is_null()) return nullptr;
  const std::uint32_t c = h.size_class();
  if (c >= class_count_) return nullptr;
  const LocalClass& lc = classes_[c];
  std::uint64_t limit = lc.count;
  // (K1) Pairs with (K3) in cut: an index below `cut` names a block whose
  // bytes are reserved, so reading its header cannot fault.
  if (lc.lazy) limit = std::min<std::uint64_t>(limit, atomic_of(class_state(c).cut).load(std::memory_order_acquire));
  if (h.index() >= limit) return nullptr;
  BlockHeader& b = block(c, h.index());
  // (B1) Pairs with (B2) in allocate: a valid handle shows the header (owner,
  // used) as the allocator set it.
  const std::uint64_t ctl = atomic_of(b.ctl).load(std::memory_order_acquire);
  if (detail::ctl_generation(ctl) != h.generation() || detail::ctl_state(ctl) != BlockState::kAllocated) {
    return nullptr;
  }
  return &b;
}

Error BlockPool::why_bad(SlotId slot, Handle h) const noexcept {
  if (auto r = check_slot(slot); !r) return std::move(r.error());
  return why_bad(h);
}

Error BlockPool::why_bad(Handle h) const noexcept {
  // The checks of find, each with its reason.
  const auto bad = [](Errc code, std::string message) { return Error{code, std::move(message)}; };
  if (h.is_null()) return bad(Errc::kBadHandle, "null handle");
  const std::uint32_t c = h.size_class();
  if (c >= class_count_) {
    return bad(Errc::kBadHandle,
               "handle names size class " + std::to_string(c) + "; the pool has " + std::to_string(class_count_));
  }
  const LocalClass& lc = classes_[c];
  std::uint64_t limit = lc.count;
  // acquire: as (K1) in find.
  if (lc.lazy) limit = std::min<std::uint64_t>(limit, atomic_of(class_state(c).cut).load(std::memory_order_acquire));
  if (h.index() >= limit) {
    return bad(Errc::kBadHandle, "handle names block " + std::to_string(h.index()) + " of size class " +
                                     std::to_string(c) + ", which has " + std::to_string(limit));
  }
  // acquire: as (B1) in find.
  const std::uint64_t ctl = atomic_of(block(c, h.index()).ctl).load(std::memory_order_acquire);
  if (detail::ctl_generation(ctl) != h.generation()) {
    return bad(Errc::kStaleHandle, "handle of generation " + std::to_string(h.generation()) +
                                       "; the block is at generation " +
                                       std::to_string(detail::ctl_generation(ctl)) + " (freed since)");
  }
  if (detail::ctl_state(ctl) != BlockState::kAllocated) {
    return bad(Errc::kStaleHandle, "the block is not allocated (freed)");
  }
  // Freed and allocated again between the two looks.
  return bad(Errc::kStaleHandle, "the block changed while it was checked");
}

Result<BlockHeader*> BlockPool::check(Handle h) const noexcept {
  if (BlockHeader* b = find(h)) return b;
  return tl::unexpected(why_bad(h));
}

// ---------------------------------------------------------------------------
// Free lists (see the algorithm in pool.hpp)

std::uint32_t BlockPool::cut_count(std::uint32_t c) const noexcept {
  if (!classes_[c].lazy) return classes_[c].count;
  // acquire: as (K1).
  return static_cast<std::uint32_t>(
      std::min<std::uint64_t>(atomic_of(class_state(c).cut).load(std::memory_order_acquire), classes_[c].count));
}

std::uint32_t BlockPool::pop(std::uint32_t c) noexcept {
  auto head = atomic_of(class_state(c).head);
  // (F1) Pairs with (F4): the pusher's `next` and freed header are visible.
  // Every later change of head is a CAS (an RMW), so it continues the
  // pusher's release sequence.
  std::uint64_t h = head.load(std::memory_order_acquire);
  std::uint32_t limit = cut_count(c);
  for (;;) {
    const std::uint32_t idx = detail::head_index(h);
    // kNilIndex: empty. Past the blocks that exist (after re-reading the cut
    // count, which only grows): a peer corrupted the head; treat as empty
    // rather than touch unreserved bytes (audit repairs it).
    if (idx >= limit && (idx == kNilIndex || idx >= (limit = cut_count(c)))) return kNilIndex;
    // (F2) relaxed: may be stale if the block was popped meanwhile; then
    // the tag has moved and (F3) fails. Never unmapped: always readable.
    const std::uint32_t next = atomic_of(block(c, idx).next).load(std::memory_order_relaxed);
    // (F3) Commit the pop. acquire on both outcomes: a retry reads `next` of
    // the block the failed CAS loaded.
    if (head.compare_exchange_weak(h, detail::pack_head(next, detail::head_tag(h) + 1), std::memory_order_acquire,
                                   std::memory_order_acquire)) {
      detail::sync_popped(c, idx);
      return idx;
    }
  }
}

void BlockPool::push(std::uint32_t c, std::uint32_t index) noexcept {
  auto head = atomic_of(class_state(c).head);
  // relaxed: a first guess, checked by the CAS.
  std::uint64_t h = head.load(std::memory_order_relaxed);
  for (;;) {
    // relaxed: published by (F4).
    atomic_of(block(c, index).next).store(detail::head_index(h), std::memory_order_relaxed);
    // (F4) Commit the push; release pairs with (F1)/(F3): a popper sees
    // `next`, the Free state and the bumped generation.
    if (head.compare_exchange_weak(h, detail::pack_head(index, detail::head_tag(h) + 1), std::memory_order_release,
                                   std::memory_order_relaxed)) {
      return;
    }
  }
}

Result<void> BlockPool::reserve(std::uint64_t offset, std::uint64_t bytes, int c) const {
  if (region_.fd < 0 || bytes == 0) return {};
  int err = 0;
  for (std::uint32_t i = 0; i < kEintrRetries; ++i) {
    err = ::posix_fallocate(region_.fd, static_cast<off_t>(region_.file_offset + offset), static_cast<off_t>(bytes));
    if (err != EINTR) break;
  }
  if (err == 0) return {};
  const std::string what =
      "posix_fallocate of " + bytes_str(bytes) + " for " +
      (c < 0 ? std::string("the pool's metadata and small size classes")
             : "a " + bytes_str(classes_[static_cast<std::uint32_t>(c)].block_bytes) + " block (size class " +
                   std::to_string(c) + ")") +
      " (" + free_space(region_.fd) + ")";
  if (err == ENOSPC) {
    return make_error(Errc::kNoSpace, what + " failed: the backing store is full; free space in it (/dev/shm) or "
                                             "lower the pool's block counts (PoolConfig::set_blocks)");
  }
  return errno_error(err, what);
}

Result<std::uint32_t> BlockPool::cut(std::uint32_t c) noexcept {
  const LocalClass& lc = classes_[c];
  auto cut = atomic_of(class_state(c).cut);
  // (K2) Pairs with (K3) of other cutters.
  std::uint64_t k = cut.load(std::memory_order_acquire);
  while (k < lc.count) {
    // 1. Reserve first: a failure leaves nothing claimed. Two cutters racing
    //    for index k both reserve it; the loser's reservation is the
    //    winner's block, reused.
    if (auto r = reserve(lc.area_offset + k * lc.block_bytes, lc.block_bytes, static_cast<int>(c)); !r) {
      return tl::unexpected(std::move(r.error()));
    }
    // 2. (K3) Claim index k; release pairs with (K1): a resolver that sees
    //    the new count reads reserved bytes. On failure k is reloaded.
    if (cut.compare_exchange_strong(k, k + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
      // 3. Initialise. No other thread reads this header's fields but ctl
      //    (it reads 0 = Uncut until this store and refuses the handle).
      const auto idx = static_cast<std::uint32_t>(k);
      BlockHeader& b = block(c, idx);
      b.index = idx;
      b.size_class = static_cast<std::uint8_t>(c);
      atomic_of(b.next).store(kNilIndex, std::memory_order_relaxed);
      atomic_of(b.owner).store(kNoOwner, std::memory_order_relaxed);
      atomic_of(b.used).store(0, std::memory_order_relaxed);
      // relaxed: the block is ours until allocate publishes it with (B2).
      atomic_of(b.ctl).store(detail::pack_ctl(1, BlockState::kFree, 0), std::memory_order_relaxed);
      return idx;
    }
  }
  return tl::unexpected(exhausted(c));
}

// ---------------------------------------------------------------------------
// Held lists: one entry per reference, open addressing from the block's
// home (usually found at the first probe), no tombstones (removal scans on
// past empty entries, bounded by the list size). The home is a line of the
// list chosen by the block's index and class, not a hash of the whole handle: the free lists
// are LIFO, so a busy process reuses a few blocks over and over, and their
// entries stay on the same few cache lines. A hash with the generation in it
// sent every allocation to a fresh line of a 512 KiB list (the Context's
// pool): a cache miss on each record and unrecord, 4 % of a tcp farm's
// samples on the one load (perf annotate).
//
// All entry operations are relaxed: an entry carries only its own value, and
// each CAS is atomic on it (the threads of one process agree through its
// modification order). The lists are read by others only (a) by the owner
// after the process's death is confirmed through /proc (the process has
// stopped writing), (b) by audit, which needs a quiescent pool.

std::uint32_t BlockPool::held_home(Handle h) const noexcept {
  // A cache line (8 entries) per block: two threads of a process recording
  // neighbouring blocks do not share a line (with one entry per index they
  // did: a shm farm lost ~6 %). Classes start 0x9E3779B9 (2^32 / phi)
  // apart, modulo the list: spread.
  constexpr std::uint32_t kEntriesPerLine = 64 / sizeof(std::uint64_t);
  return (h.index() * kEntriesPerLine + h.size_class() * 0x9E3779B9u) & (held_per_process_ - 1);
}

bool BlockPool::record(std::uint32_t s, Handle h) noexcept {
  std::uint64_t* list = held_list(s);
  const std::uint32_t mask = held_per_process_ - 1;
  std::uint32_t i = held_home(h);
  for (std::uint32_t n = 0; n < held_per_process_; ++n, i = (i + 1) & mask) {
    auto e = atomic_of(list[i]);
    std::uint64_t cur = e.load(std::memory_order_relaxed);                                 // (H1)
    if (cur == 0 && e.compare_exchange_strong(cur, h.bits(), std::memory_order_relaxed)) {  // (H2)
      return true;
    }
  }
  return false;
}

bool BlockPool::unrecord(std::uint32_t s, Handle h) noexcept {
  std::uint64_t* list = held_list(s);
  const std::uint32_t mask = held_per_process_ - 1;
  std::uint32_t i = held_home(h);
  for (std::uint32_t n = 0; n < held_per_process_; ++n, i = (i + 1) & mask) {
    auto e = atomic_of(list[i]);
    std::uint64_t cur = e.load(std::memory_order_relaxed);                                     // (H3)
    if (cur == h.bits() && e.compare_exchange_strong(cur, 0, std::memory_order_relaxed)) {  // (H4)
      return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------
// Blocks

Result<Handle> BlockPool::allocate(std::size_t bytes, SlotId slot) noexcept {
  auto b = allocate_block(bytes, slot);
  if (!b) return tl::unexpected(std::move(b.error()));
  return b->handle;
}

Result<BlockView> BlockPool::allocate_block(std::size_t bytes, SlotId slot) noexcept {
  // slot_ok first: check_slot's Result costs more than the test, and only a
  // bad slot needs its reason.
  if (!slot_ok(slot)) return tl::unexpected(std::move(check_slot(slot).error()));
  auto cls = class_for(bytes);
  if (!cls) return tl::unexpected(std::move(cls.error()));
  const std::uint32_t c = *cls;
  const auto s = static_cast<std::uint32_t>(slot);

  // 1. Pop (or cut a new large block).
  std::uint32_t idx = pop(c);
  if (idx == kNilIndex) {
    if (!classes_[c].lazy) return tl::unexpected(exhausted(c));
    auto k = cut(c);
    if (!k) return tl::unexpected(std::move(k.error()));
    idx = *k;
  }
  // 2. Mark it Allocated with one reference. The block is ours (popped), so
  //    only a corrupting peer could change ctl meanwhile; the CAS notices.
  BlockHeader& b = block(c, idx);
  atomic_of(b.owner).store(s, std::memory_order_relaxed);  // published by (B2)
  atomic_of(b.used).store(0, std::memory_order_relaxed);   // published by (B2)
  // relaxed: ordered after the pop's acquire (F3) by program order.
  std::uint64_t cur = atomic_of(b.ctl).load(std::memory_order_relaxed);
  const std::uint32_t gen = detail::ctl_generation(cur);
  // (B2) Pairs with (B1): a resolver of the new handle sees owner and used.
  if (detail::ctl_state(cur) != BlockState::kFree ||
      !atomic_of(b.ctl).compare_exchange_strong(cur, detail::pack_ctl(gen, BlockState::kAllocated, 1),
                                                std::memory_order_release, std::memory_order_relaxed)) {
    // Left off the list (lost until audit): never hand out a block in use.
    return make_error(Errc::kMalformed, "block " + std::to_string(idx) + " of size class " + std::to_string(c) +
                                            " was on the free list but not free; run audit");
  }
  const std::size_t cap = classes_[c].block_bytes - kBlockHeaderBytes;
  std::byte* const data = block_data(c, idx);
  unpoison(data, cap);
  const Handle h = Handle::pack(c, idx, gen);
  // 3. Record it in the caller's held list.
  if (!record(s, h)) {
    static_cast<void>(drop_ref(h, nullptr));  // frees it again
    return make_error(Errc::kExhausted, "process slot " + std::to_string(s) + " holds " +
                                            std::to_string(held_per_process_) +
                                            " references already; raise PoolConfig::held_per_process");
  }
  return BlockView{data, cap, 0, h};
}

Result<Handle> BlockPool::allocate_for(std::size_t bytes, SlotId slot, std::chrono::nanoseconds timeout) noexcept {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  for (std::uint32_t attempt = 0;; ++attempt) {
    auto r = allocate(bytes, slot);
    if (r || r.error().code != Errc::kExhausted) return r;
    const auto now = Clock::now();
    if (now - start >= timeout) {
      return make_error(Errc::kTimeout, "waited " +
                                            std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                               now - start).count()) +
                                            " ms: " + r.error().message);
    }
    // Back off: yield a few times (a freer on this core gets to run), then
    // sleep 10 us doubling to 1 ms, never past the deadline.
    if (attempt < 16) {
      ::sched_yield();
    } else {
      const auto nap = std::min<std::chrono::nanoseconds>(
          std::chrono::microseconds(10) * (1u << std::min(attempt - 16, 7u)), std::chrono::milliseconds(1));
      std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(nap, timeout - (now - start)));
    }
  }
}

Result<void> BlockPool::drop_ref(Handle h, bool* freed) noexcept {
  const std::uint32_t c = h.size_class();
  BlockHeader& b = block(c, h.index());
  auto ctl = atomic_of(b.ctl);
  detail::sync_dropped(c, h.index());  // TSan only: (B3)/(B4) across mappings
  // relaxed: a first guess; each CAS below checks it.
  std::uint64_t cur = ctl.load(std::memory_order_relaxed);
  for (;;) {
    if (detail::ctl_generation(cur) != h.generation() || detail::ctl_state(cur) != BlockState::kAllocated ||
        detail::ctl_refs(cur) == 0) {
      return make_error(Errc::kStaleHandle, "the block was freed already (double release?)");
    }
    if (detail::ctl_refs(cur) > 1) {
      // (B3) Drop one of several. release: this holder's use of the data
      // happens-before the free by the last holder's (B4).
      if (ctl.compare_exchange_weak(cur, cur - 1, std::memory_order_release, std::memory_order_relaxed)) return {};
      continue;
    }
    // Last reference. Poison before the free: once (B4) commits, another
    // thread of this process may pop and unpoison the block.
    const std::size_t cap = classes_[c].block_bytes - kBlockHeaderBytes;
    poison(block_data(c, h.index()), cap);
    // (B4) The free, linearization point: Allocated(g,1) -> Free(g+1).
    // acquire: pairs with every holder's (B3) (the earlier decrements are
    // RMWs on ctl, one release sequence). release: pairs with (B1) of a
    // stale resolver (it sees the new generation, not half a free).
    if (ctl.compare_exchange_strong(
            cur, detail::pack_ctl(detail::next_generation(h.generation()), BlockState::kFree, 0),
            std::memory_order_acq_rel, std::memory_order_relaxed)) {
      push(c, h.index());
      if (freed != nullptr) *freed = true;
      return {};
    }
    unpoison(block_data(c, h.index()), cap);  // someone added a reference: retry
  }
}

Result<void> BlockPool::add_ref(SlotId slot, Handle h, std::uint32_t n) noexcept {
  BlockHeader* b = slot_ok(slot) ? find(h) : nullptr;
  if (b == nullptr) return tl::unexpected(why_bad(slot, h));
  if (n == 0) return {};
  auto ctl = atomic_of(b->ctl);
  std::uint64_t cur = ctl.load(std::memory_order_relaxed);  // a first guess; the CAS checks it
  for (;;) {
    if (detail::ctl_generation(cur) != h.generation() || detail::ctl_state(cur) != BlockState::kAllocated ||
        detail::ctl_refs(cur) == 0) {
      return make_error(Errc::kStaleHandle, "add_ref on a block freed meanwhile");
    }
    if (detail::ctl_refs(cur) + std::uint64_t{n} > detail::kMaxRefcount) {
      return make_error(Errc::kOutOfRange, "add_ref of " + std::to_string(n) + " would pass " +
                                               std::to_string(detail::kMaxRefcount) + " references");
    }
    // (B5) relaxed: the caller holds a reference, so the block cannot be
    // freed under it; no data is published by an increment (as shared_ptr).
    if (ctl.compare_exchange_weak(cur, cur + n, std::memory_order_relaxed)) break;
  }
  const auto s = static_cast<std::uint32_t>(slot);
  for (std::uint32_t i = 0; i < n; ++i) {
    if (!record(s, h)) {
      for (std::uint32_t j = 0; j < i; ++j) static_cast<void>(unrecord(s, h));
      for (std::uint32_t j = 0; j < n; ++j) static_cast<void>(drop_ref(h, nullptr));
      return make_error(Errc::kExhausted, "process slot " + std::to_string(s) + " cannot hold " + std::to_string(n) +
                                              " more references (" + std::to_string(held_per_process_) +
                                              " at most); raise PoolConfig::held_per_process");
    }
  }
  return {};
}

Result<void> BlockPool::release(SlotId slot, Handle h) noexcept {
  if (!slot_ok(slot) || find(h) == nullptr) return tl::unexpected(why_bad(slot, h));
  const auto s = static_cast<std::uint32_t>(slot);
  // Unrecord first: a crash before the drop leaks the reference, the reverse
  // order could let reclaim_dead release it a second time.
  if (!unrecord(s, h)) {
    return make_error(Errc::kBadHandle, "process slot " + std::to_string(s) + " holds no reference to this block");
  }
  return drop_ref(h, nullptr);
}

Result<void> BlockPool::hold(SlotId slot, Handle h) noexcept {
  if (!slot_ok(slot) || find(h) == nullptr) return tl::unexpected(why_bad(slot, h));
  const auto s = static_cast<std::uint32_t>(slot);
  if (!record(s, h)) {
    return make_error(Errc::kExhausted, "process slot " + std::to_string(s) + " holds " +
                                            std::to_string(held_per_process_) +
                                            " references already; raise PoolConfig::held_per_process");
  }
  return {};
}

Result<void> BlockPool::unhold(SlotId slot, Handle h) noexcept {
  if (!slot_ok(slot)) return tl::unexpected(why_bad(slot, h));
  if (h.is_null()) return make_error(Errc::kBadHandle, "null handle");
  const auto s = static_cast<std::uint32_t>(slot);
  if (!unrecord(s, h)) {
    return make_error(Errc::kBadHandle, "process slot " + std::to_string(s) + " holds no reference to this block");
  }
  return {};
}

bool BlockPool::sole_reference(Handle h) const noexcept {
  BlockHeader* b = find(h);
  if (b == nullptr) return false;
  // acquire: pairs with every former holder's release decrement (B3), so
  // their reads of the data happen-before the caller's writes.
  const std::uint64_t ctl = atomic_of(b->ctl).load(std::memory_order_acquire);
  return detail::ctl_generation(ctl) == h.generation() && detail::ctl_state(ctl) == BlockState::kAllocated &&
         detail::ctl_refs(ctl) == 1;
}

bool BlockPool::try_resolve(Handle h, BlockView& out) const noexcept {
  BlockHeader* b = find(h);
  if (b == nullptr) return false;
  const std::uint32_t c = h.size_class();
  const std::size_t cap = classes_[c].block_bytes - kBlockHeaderBytes;
  std::byte* data = block_data(c, h.index());
  unpoison(data, cap);
  // relaxed: the writer's used length is published by the channel that
  // carried the handle (or by (B2) for a fresh block).
  const auto used = static_cast<std::size_t>(atomic_of(b->used).load(std::memory_order_relaxed));
  out = BlockView{data, cap, std::min(used, cap), h};
  return true;
}

Result<BlockView> BlockPool::resolve(Handle h) const noexcept {
  BlockView v;
  if (!try_resolve(h, v)) return tl::unexpected(why_bad(h));
  return v;
}

Result<void> BlockPool::set_used(Handle h, std::size_t bytes) noexcept {
  BlockHeader* b = find(h);
  if (b == nullptr) return tl::unexpected(why_bad(h));
  const std::size_t cap = classes_[h.size_class()].block_bytes - kBlockHeaderBytes;
  if (bytes > cap) {
    return make_error(Errc::kOutOfRange, std::to_string(bytes) + " bytes exceed the block's capacity, " +
                                             std::to_string(cap));
  }
  // relaxed: published with the handle by the channel (release/acquire).
  atomic_of(b->used).store(bytes, std::memory_order_relaxed);
  return {};
}

Result<void> BlockPool::set_used(const BlockView& held, std::size_t bytes) noexcept {
  if (bytes > held.capacity) {
    return make_error(Errc::kOutOfRange, std::to_string(bytes) + " bytes exceed the block's capacity, " +
                                             std::to_string(held.capacity));
  }
  // relaxed: as in set_used(Handle).
  atomic_of(block(held.handle.size_class(), held.handle.index()).used).store(bytes, std::memory_order_relaxed);
  return {};
}

Result<std::size_t> BlockPool::used(Handle h) const noexcept {
  BlockHeader* b = find(h);
  if (b == nullptr) return tl::unexpected(why_bad(h));
  // relaxed: see set_used.
  return static_cast<std::size_t>(atomic_of(b->used).load(std::memory_order_relaxed));
}

}  // namespace palm
