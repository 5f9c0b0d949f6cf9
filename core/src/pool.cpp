#include "palm/core/pool.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace palm {

using detail::atomic_of;
using detail::BlockHeader;
using detail::BlockState;
using detail::ClassInfo;
using detail::ClassState;
using detail::kBlockHeaderBytes;
using detail::kNilIndex;
using detail::PoolHeader;
using detail::ProcessSlot;
using detail::SlotState;

namespace {

constexpr std::uint32_t kNoOwner = 0xFFFFFFFFu;
constexpr std::uint32_t kMaxProcessSlots = 1u << 16;
constexpr std::uint32_t kMinHeld = 16;
constexpr std::uint32_t kMaxHeld = 1u << 20;
constexpr std::uint32_t kEintrRetries = 100;

// Each process has its own ASan shadow of the shared mapping: a block's data
// is poisoned where it is freed and unpoisoned where it is allocated or a
// handle to it is resolved (another process may have freed or allocated it).
void poison(std::byte* p, std::size_t n) noexcept {
#if defined(__SANITIZE_ADDRESS__)
  ASAN_POISON_MEMORY_REGION(p, n);
#else
  static_cast<void>(p);
  static_cast<void>(n);
#endif
}
void unpoison(std::byte* p, std::size_t n) noexcept {
#if defined(__SANITIZE_ADDRESS__)
  ASAN_UNPOISON_MEMORY_REGION(p, n);
#else
  static_cast<void>(p);
  static_cast<void>(n);
#endif
}

constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) noexcept { return (v + a - 1) / a * a; }

std::string bytes_str(std::uint64_t n) {
  constexpr std::uint64_t kKi = 1024, kMi = kKi * 1024, kGi = kMi * 1024;
  if (n >= kGi && n % kGi == 0) return std::to_string(n / kGi) + " GiB";
  if (n >= kMi && n % kMi == 0) return std::to_string(n / kMi) + " MiB";
  if (n >= kKi && n % kKi == 0) return std::to_string(n / kKi) + " KiB";
  return std::to_string(n) + " bytes";
}

std::string free_space(int fd) {
  struct statvfs vfs {};
  if (::fstatvfs(fd, &vfs) != 0) return "free space unknown";
  if (vfs.f_blocks == 0) return "the backing store has no size limit";  // e.g. a memfd
  const std::uint64_t avail = std::uint64_t{vfs.f_bavail} * vfs.f_frsize;
  return bytes_str(avail >> 20 << 20) + " free in the backing store";
}

// The layout for a config, computed identically by region_bytes and create.
struct Geometry {
  std::uint32_t class_count = 0;
  std::uint64_t class_state_offset = 0;
  std::uint64_t slots_offset = 0;
  std::uint64_t held_offset = 0;
  std::uint64_t reserved_prefix = 0;
  std::uint64_t total = 0;
  std::array<ClassInfo, kMaxSizeClasses> classes{};
};

Result<Geometry> geometry(const PoolConfig& cfg) {
  const std::size_t lb = cfg.largest_block;
  if (!std::has_single_bit(lb) || lb < (std::size_t{1} << detail::kLazyBlockShift) ||
      lb > (std::size_t{1} << detail::kMaxBlockShift)) {
    return make_error(Errc::kInvalidArgument, "PoolConfig::largest_block is " + bytes_str(lb) +
                                                  "; it must be a power of two from 1 MiB to 1 GiB");
  }
  if (cfg.process_slots == 0 || cfg.process_slots > kMaxProcessSlots) {
    return make_error(Errc::kInvalidArgument, "PoolConfig::process_slots is " +
                                                  std::to_string(cfg.process_slots) + "; allowed 1.." +
                                                  std::to_string(kMaxProcessSlots));
  }
  if (!std::has_single_bit(cfg.held_per_process) || cfg.held_per_process < kMinHeld ||
      cfg.held_per_process > kMaxHeld) {
    return make_error(Errc::kInvalidArgument,
                      "PoolConfig::held_per_process is " + std::to_string(cfg.held_per_process) +
                          "; it must be a power of two from " + std::to_string(kMinHeld) + " to " +
                          std::to_string(kMaxHeld));
  }
  Geometry g;
  g.class_count = static_cast<std::uint32_t>(std::bit_width(lb) - 1 - detail::kMinBlockShift + 1);
  std::uint64_t off = align_up(sizeof(PoolHeader), kFalseSharingRange);
  g.class_state_offset = off;
  off += std::uint64_t{g.class_count} * sizeof(ClassState);
  g.slots_offset = off = align_up(off, kFalseSharingRange);
  off += std::uint64_t{cfg.process_slots} * sizeof(ProcessSlot);
  g.held_offset = off = align_up(off, kCacheLine);
  off += std::uint64_t{cfg.process_slots} * cfg.held_per_process * sizeof(std::uint64_t);
  for (int pass = 0; pass < 2; ++pass) {  // small classes first, then the lazy range
    for (std::uint32_t c = 0; c < g.class_count; ++c) {
      const unsigned shift = detail::kMinBlockShift + c;
      const bool lazy = shift >= detail::kLazyBlockShift;
      if (lazy != (pass == 1)) continue;
      const std::uint32_t count = cfg.blocks[c];
      if (count > Handle::kMaxIndex) {
        return make_error(Errc::kInvalidArgument,
                          "PoolConfig::blocks for " + bytes_str(std::uint64_t{1} << shift) + " is " +
                              std::to_string(count) + "; at most " + std::to_string(Handle::kMaxIndex));
      }
      off = align_up(off, detail::kPageBytes);
      g.classes[c] = ClassInfo{std::uint64_t{1} << shift, off, count, lazy ? 1u : 0u, 0};
      off += std::uint64_t{count} << shift;
    }
    if (pass == 0) g.reserved_prefix = off = align_up(off, detail::kPageBytes);
  }
  g.total = align_up(off, detail::kPageBytes);
  return g;
}

}  // namespace

// ---------------------------------------------------------------------------
// Config, stats

PoolConfig& PoolConfig::set_blocks(std::size_t block_bytes, std::uint32_t count) {
  if (!std::has_single_bit(block_bytes) || block_bytes < (std::size_t{1} << detail::kMinBlockShift) ||
      block_bytes > (std::size_t{1} << detail::kMaxBlockShift)) {
    throw std::invalid_argument("PoolConfig::set_blocks: " + bytes_str(block_bytes) +
                                " is not a block size (a power of two from 256 B to 1 GiB)");
  }
  blocks[static_cast<std::size_t>(std::bit_width(block_bytes) - 1) - detail::kMinBlockShift] = count;
  return *this;
}

bool PoolStats::all_free() const noexcept {
  if (allocated_blocks != 0) return false;
  return std::all_of(classes.begin(), classes.end(),
                     [](const ClassStats& c) { return c.free == c.cut && c.listed == c.cut; });
}

std::size_t BlockPool::region_bytes(const PoolConfig& config) noexcept {
  try {
    auto g = geometry(config);
    return g ? static_cast<std::size_t>(g->total) : 0;
  } catch (...) {  // a message that could not be allocated
    return 0;
  }
}

// ---------------------------------------------------------------------------
// Create, attach

Result<BlockPool> BlockPool::create(Region region, const PoolConfig& config) {
  auto g = geometry(config);
  if (!g) return tl::unexpected(std::move(g.error()));
  if (region.size < g->total) {
    return make_error(Errc::kInvalidArgument, "the region is " + bytes_str(region.size) +
                                                  ", the pool needs " + bytes_str(g->total) +
                                                  " (BlockPool::region_bytes)");
  }
  if (reinterpret_cast<std::uintptr_t>(region.base) % kCacheLine != 0) {
    return make_error(Errc::kInvalidArgument, "the region's base is not 64-byte aligned");
  }
  auto& hdr = *reinterpret_cast<PoolHeader*>(region.base);
  // (V0) Not ready, first: an attacher racing a re-create sees 0, not the
  // old version over half-written fields. No attacher may rely on more.
  atomic_of(hdr.version).store(0, std::memory_order_relaxed);

  BlockPool pool;
  pool.region_ = region;
  // Reserve the metadata and the small classes now (ENOSPC here, never a
  // SIGBUS later); give back (and zero) the lazy range of a reused file.
  if (auto r = pool.reserve(0, g->reserved_prefix, -1); !r) return tl::unexpected(std::move(r.error()));
  if (region.fd >= 0 && g->total > g->reserved_prefix) {
    // Best effort: a filesystem without hole punching keeps its bytes; a
    // fresh file (the usual case) is zero there anyway.
    static_cast<void>(::fallocate(region.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                  static_cast<off_t>(region.file_offset + g->reserved_prefix),
                                  static_cast<off_t>(g->total - g->reserved_prefix)));
  }

  // Everything below is written before (V1); nobody reads it before then.
  // Zero all but the version (an attacher may poll it atomically).
  std::memset(region.base, 0, offsetof(PoolHeader, version));
  std::memset(region.base + offsetof(PoolHeader, header_bytes), 0,
              g->reserved_prefix - offsetof(PoolHeader, header_bytes));
  hdr.magic = detail::kPoolMagic;
  hdr.header_bytes = sizeof(PoolHeader);
  hdr.region_bytes = g->total;
  hdr.reserved_prefix = g->reserved_prefix;
  hdr.creator_pid = static_cast<std::uint32_t>(::getpid());
  hdr.class_count = g->class_count;
  hdr.process_slots = config.process_slots;
  hdr.held_per_process = config.held_per_process;
  hdr.block_header_bytes = kBlockHeaderBytes;
  hdr.class_state_offset = g->class_state_offset;
  hdr.slots_offset = g->slots_offset;
  hdr.held_offset = g->held_offset;
  std::copy(g->classes.begin(), g->classes.end(), hdr.classes);
  pool.bind(region, hdr);

  for (std::uint32_t c = 0; c < pool.class_count_; ++c) {
    const LocalClass& lc = pool.classes_[c];
    ClassState& cs = pool.class_state(c);
    if (lc.lazy) {
      cs.head = detail::pack_head(kNilIndex, 0);
      cs.cut = 0;
      continue;
    }
    // Chain every block: 0 -> 1 -> ... -> count-1 -> nil.
    for (std::uint32_t i = 0; i < lc.count; ++i) {
      BlockHeader& b = pool.block(c, i);
      b = BlockHeader{};
      b.ctl = detail::pack_ctl(1, BlockState::kFree, 0);
      b.next = i + 1 < lc.count ? i + 1 : kNilIndex;
      b.owner = kNoOwner;
      b.index = i;
      b.size_class = static_cast<std::uint8_t>(c);
      poison(pool.block_data(c, i), lc.block_bytes - kBlockHeaderBytes);
    }
    cs.head = detail::pack_head(lc.count > 0 ? 0 : kNilIndex, 0);
    cs.cut = lc.count;
  }
  // (V1) Publish: pairs with (V2) in attach. An attacher that reads this
  // version sees every field written above.
  atomic_of(hdr.version).store(detail::kPoolLayoutVersion, std::memory_order_release);
  return pool;
}

Result<BlockPool> BlockPool::attach(Region region) {
  if (region.base == nullptr || region.size < sizeof(PoolHeader)) {
    return make_error(Errc::kInvalidArgument, "the region (" + bytes_str(region.size) +
                                                  ") is smaller than a pool header");
  }
  if (reinterpret_cast<std::uintptr_t>(region.base) % kCacheLine != 0) {
    return make_error(Errc::kInvalidArgument, "the region's base is not 64-byte aligned");
  }
  auto& hdr = *reinterpret_cast<PoolHeader*>(region.base);
  // (V2) Pairs with (V1): a non-zero version makes the header visible.
  const std::uint32_t version = atomic_of(hdr.version).load(std::memory_order_acquire);
  if (version == 0) {
    return make_error(Errc::kNotReady, "the pool's layout version is 0: its creator has not finished; retry");
  }
  if (hdr.magic != detail::kPoolMagic) {
    return make_error(Errc::kBadMagic, "the region does not start with a palm block pool (magic " +
                                           std::to_string(hdr.magic) + ")");
  }
  if (version != detail::kPoolLayoutVersion) {
    return make_error(Errc::kVersionMismatch, "the pool has layout version " + std::to_string(version) +
                                                  ", this build reads version " +
                                                  std::to_string(detail::kPoolLayoutVersion));
  }
  // The header came from another process: check every size before use.
  const auto malformed = [](const std::string& what) { return make_error(Errc::kMalformed, "pool header: " + what); };
  if (hdr.header_bytes != sizeof(PoolHeader) || hdr.block_header_bytes != kBlockHeaderBytes) {
    return malformed("header or block-header size differs from this build's");
  }
  if (hdr.region_bytes > region.size) {
    return malformed("the pool spans " + bytes_str(hdr.region_bytes) + ", the region is " + bytes_str(region.size));
  }
  if (hdr.class_count == 0 || hdr.class_count > kMaxSizeClasses || hdr.process_slots == 0 ||
      hdr.process_slots > kMaxProcessSlots || !std::has_single_bit(hdr.held_per_process) ||
      hdr.held_per_process < kMinHeld || hdr.held_per_process > kMaxHeld) {
    return malformed("class count, process slots or held-list size out of range");
  }
  const std::uint64_t end = hdr.region_bytes;
  if (hdr.class_state_offset % kFalseSharingRange != 0 || hdr.slots_offset % kFalseSharingRange != 0 ||
      hdr.held_offset % kCacheLine != 0 ||
      hdr.class_state_offset + std::uint64_t{hdr.class_count} * sizeof(ClassState) > end ||
      hdr.slots_offset + std::uint64_t{hdr.process_slots} * sizeof(ProcessSlot) > end ||
      hdr.held_offset + std::uint64_t{hdr.process_slots} * hdr.held_per_process * 8 > end) {
    return malformed("a table lies outside the region");
  }
  for (std::uint32_t c = 0; c < hdr.class_count; ++c) {
    const ClassInfo& ci = hdr.classes[c];
    const unsigned shift = detail::kMinBlockShift + c;
    if (ci.block_bytes != (std::uint64_t{1} << shift) || ci.count > Handle::kMaxIndex ||
        ci.lazy != (shift >= detail::kLazyBlockShift ? 1u : 0u) || ci.area_offset % detail::kPageBytes != 0 ||
        ci.area_offset + (std::uint64_t{ci.count} << shift) > end) {
      return malformed("size class " + std::to_string(c) + " is inconsistent");
    }
  }
  BlockPool pool;
  pool.bind(region, hdr);
  // This process's shadow starts unpoisoned: poison what is free now.
  for (std::uint32_t c = 0; c < pool.class_count_; ++c) {
    const std::uint32_t n = pool.cut_count(c);
    for (std::uint32_t i = 0; i < n; ++i) {
      // relaxed: a hint for the sanitizer only; resolve unpoisons what it validates.
      if (detail::ctl_state(atomic_of(pool.block(c, i).ctl).load(std::memory_order_relaxed)) == BlockState::kFree) {
        poison(pool.block_data(c, i), pool.classes_[c].block_bytes - kBlockHeaderBytes);
      }
    }
  }
  return pool;
}

void BlockPool::bind(Region region, const PoolHeader& header) noexcept {
  region_ = region;
  header_ = reinterpret_cast<PoolHeader*>(region.base);
  class_count_ = header.class_count;
  process_slots_ = header.process_slots;
  held_per_process_ = header.held_per_process;
  held_shift_ = 64u - static_cast<unsigned>(std::bit_width(header.held_per_process) - 1);
  class_state_ = region.base + header.class_state_offset;
  slots_ = region.base + header.slots_offset;
  held_ = region.base + header.held_offset;
  for (std::uint32_t c = 0; c < class_count_; ++c) {
    const ClassInfo& ci = header.classes[c];
    classes_[c] = LocalClass{region.base + ci.area_offset, ci.area_offset, ci.block_bytes, ci.count, ci.lazy != 0};
  }
}

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

Result<BlockHeader*> BlockPool::check(Handle h) const noexcept {
  if (h.is_null()) return make_error(Errc::kBadHandle, "null handle");
  const std::uint32_t c = h.size_class();
  if (c >= class_count_) {
    return make_error(Errc::kBadHandle, "handle names size class " + std::to_string(c) + "; the pool has " +
                                            std::to_string(class_count_));
  }
  const LocalClass& lc = classes_[c];
  std::uint64_t limit = lc.count;
  if (lc.lazy) {
    // (K1) Pairs with (K3) in cut: an index below `cut` names a block whose
    // bytes are reserved, so reading its header cannot fault.
    limit = std::min<std::uint64_t>(limit, atomic_of(class_state(c).cut).load(std::memory_order_acquire));
  }
  if (h.index() >= limit) {
    return make_error(Errc::kBadHandle, "handle names block " + std::to_string(h.index()) + " of size class " +
                                            std::to_string(c) + ", which has " + std::to_string(limit));
  }
  BlockHeader& b = block(c, h.index());
  // (B1) Pairs with (B2) in allocate: a valid handle shows the header (owner,
  // used) as the allocator set it.
  const std::uint64_t ctl = atomic_of(b.ctl).load(std::memory_order_acquire);
  if (detail::ctl_generation(ctl) != h.generation()) {
    return make_error(Errc::kStaleHandle, "handle of generation " + std::to_string(h.generation()) +
                                              "; the block is at generation " +
                                              std::to_string(detail::ctl_generation(ctl)) + " (freed since)");
  }
  if (detail::ctl_state(ctl) != BlockState::kAllocated) {
    return make_error(Errc::kStaleHandle, "the block is not allocated (freed)");
  }
  return &b;
}

// ---------------------------------------------------------------------------
// Free lists (see the algorithm in pool.hpp)

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
// Held lists: one entry per reference, open addressing from a hash of the
// handle (usually found at the first probe), no tombstones (removal scans on
// past empty entries, bounded by the list size).
//
// All entry operations are relaxed: an entry carries only its own value, and
// each CAS is atomic on it (the threads of one process agree through its
// modification order). The lists are read by others only (a) by the owner
// after the process's death is confirmed through /proc (the process has
// stopped writing), (b) by audit, which needs a quiescent pool.

bool BlockPool::record(std::uint32_t s, Handle h) noexcept {
  std::uint64_t* list = held_list(s);
  const std::uint32_t mask = held_per_process_ - 1;
  auto i = static_cast<std::uint32_t>((h.bits() * 0x9E3779B97F4A7C15ULL) >> held_shift_);
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
  auto i = static_cast<std::uint32_t>((h.bits() * 0x9E3779B97F4A7C15ULL) >> held_shift_);
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
  if (auto r = check_slot(slot); !r) return tl::unexpected(std::move(r.error()));
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
  unpoison(block_data(c, idx), classes_[c].block_bytes - kBlockHeaderBytes);
  const Handle h = Handle::pack(c, idx, gen);
  // 3. Record it in the caller's held list.
  if (!record(s, h)) {
    static_cast<void>(drop_ref(h, nullptr));  // frees it again
    return make_error(Errc::kExhausted, "process slot " + std::to_string(s) + " holds " +
                                            std::to_string(held_per_process_) +
                                            " references already; raise PoolConfig::held_per_process");
  }
  return h;
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
  if (auto r = check_slot(slot); !r) return tl::unexpected(std::move(r.error()));
  auto b = check(h);
  if (!b) return tl::unexpected(std::move(b.error()));
  if (n == 0) return {};
  auto ctl = atomic_of((*b)->ctl);
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
  if (auto r = check_slot(slot); !r) return tl::unexpected(std::move(r.error()));
  if (auto b = check(h); !b) return tl::unexpected(std::move(b.error()));
  const auto s = static_cast<std::uint32_t>(slot);
  // Unrecord first: a crash before the drop leaks the reference, the reverse
  // order could let reclaim_dead release it a second time.
  if (!unrecord(s, h)) {
    return make_error(Errc::kBadHandle, "process slot " + std::to_string(s) + " holds no reference to this block");
  }
  return drop_ref(h, nullptr);
}

Result<void> BlockPool::hold(SlotId slot, Handle h) noexcept {
  if (auto r = check_slot(slot); !r) return tl::unexpected(std::move(r.error()));
  if (auto b = check(h); !b) return tl::unexpected(std::move(b.error()));
  const auto s = static_cast<std::uint32_t>(slot);
  if (!record(s, h)) {
    return make_error(Errc::kExhausted, "process slot " + std::to_string(s) + " holds " +
                                            std::to_string(held_per_process_) +
                                            " references already; raise PoolConfig::held_per_process");
  }
  return {};
}

Result<void> BlockPool::unhold(SlotId slot, Handle h) noexcept {
  if (auto r = check_slot(slot); !r) return tl::unexpected(std::move(r.error()));
  if (h.is_null()) return make_error(Errc::kBadHandle, "null handle");
  const auto s = static_cast<std::uint32_t>(slot);
  if (!unrecord(s, h)) {
    return make_error(Errc::kBadHandle, "process slot " + std::to_string(s) + " holds no reference to this block");
  }
  return {};
}

Result<BlockView> BlockPool::resolve(Handle h) const noexcept {
  auto b = check(h);
  if (!b) return tl::unexpected(std::move(b.error()));
  const std::uint32_t c = h.size_class();
  const std::size_t cap = classes_[c].block_bytes - kBlockHeaderBytes;
  std::byte* data = block_data(c, h.index());
  unpoison(data, cap);
  // relaxed: the writer's used length is published by the channel that
  // carried the handle (or by (B2) for a fresh block).
  const auto used = static_cast<std::size_t>(atomic_of((*b)->used).load(std::memory_order_relaxed));
  return BlockView{data, cap, std::min(used, cap), h};
}

Result<void> BlockPool::set_used(Handle h, std::size_t bytes) noexcept {
  auto b = check(h);
  if (!b) return tl::unexpected(std::move(b.error()));
  const std::size_t cap = classes_[h.size_class()].block_bytes - kBlockHeaderBytes;
  if (bytes > cap) {
    return make_error(Errc::kOutOfRange, std::to_string(bytes) + " bytes exceed the block's capacity, " +
                                             std::to_string(cap));
  }
  // relaxed: published with the handle by the channel (release/acquire).
  atomic_of((*b)->used).store(bytes, std::memory_order_relaxed);
  return {};
}

Result<std::size_t> BlockPool::used(Handle h) const noexcept {
  auto b = check(h);
  if (!b) return tl::unexpected(std::move(b.error()));
  // relaxed: see set_used.
  return static_cast<std::size_t>(atomic_of((*b)->used).load(std::memory_order_relaxed));
}

// ---------------------------------------------------------------------------
// Processes

Result<SlotId> BlockPool::attach_process(const ProcessId& id) {
  if (id.pid <= 0) return make_error(Errc::kInvalidArgument, "attach_process: pid " + std::to_string(id.pid));
  const auto pid = static_cast<std::uint32_t>(id.pid);
  for (std::uint32_t s = 0; s < process_slots_; ++s) {
    ProcessSlot& slot = slot_at(s);
    auto word = atomic_of(slot.state_pid);
    std::uint64_t w = word.load(std::memory_order_relaxed);  // a hint; the CAS checks it
    if (detail::slot_state(w) != SlotState::kFree) continue;
    // (S1) Claim, naming the pid in the same CAS (a claimer that dies next
    // leaves a slot the owner can check). acquire pairs with (S3) of the
    // slot's last reclaimer: its drained list is visible.
    if (!word.compare_exchange_strong(w, detail::pack_slot(SlotState::kClaiming, pid), std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
      continue;
    }
    // relaxed: published by (S2).
    atomic_of(slot.start_time).store(id.start_time, std::memory_order_relaxed);
    atomic_of(slot.attach_count).fetch_add(1, std::memory_order_relaxed);  // diagnostics only
    std::uint64_t* list = held_list(s);
    for (std::uint32_t i = 0; i < held_per_process_; ++i) {
      // Empty after a complete drain; cleared anyway (relaxed, published by
      // (S2)): a reference left by a damaged list is lost, never released twice.
      atomic_of(list[i]).store(0, std::memory_order_relaxed);
    }
    // (S2) Attached. Pairs with (S4) in reclaim_dead: a reclaimer that sees
    // Attached sees the start time.
    word.store(detail::pack_slot(SlotState::kAttached, pid), std::memory_order_release);
    return SlotId{s};
  }
  return make_error(Errc::kExhausted, "all " + std::to_string(process_slots_) +
                                          " process slots are taken; raise PoolConfig::process_slots or reclaim "
                                          "dead processes");
}

Result<ProcessId> BlockPool::slot_process(SlotId slot) const {
  const auto s = static_cast<std::uint32_t>(slot);
  if (s >= process_slots_) return make_error(Errc::kInvalidArgument, "process slot " + std::to_string(s) + " out of range");
  // (S4') acquire: pairs with (S2), as (S4).
  const std::uint64_t w = atomic_of(slot_at(s).state_pid).load(std::memory_order_acquire);
  return ProcessId{static_cast<pid_t>(detail::slot_pid(w)),
                   atomic_of(slot_at(s).start_time).load(std::memory_order_relaxed)};
}

ReclaimReport BlockPool::drain(std::uint32_t s) noexcept {
  ReclaimReport report;
  std::uint64_t* list = held_list(s);
  for (std::uint32_t i = 0; i < held_per_process_; ++i) {
    // 1. Take the entry (relaxed, see the held-list note): a reclaimer that
    //    dies after this leaks the reference instead of releasing it twice.
    const std::uint64_t bits = atomic_of(list[i]).exchange(0, std::memory_order_relaxed);
    if (bits == 0) continue;
    const Handle h = Handle::from_bits(bits);
    // 2. Drop the reference (validated: an entry naming a freed or
    //    out-of-range block is counted, not followed).
    bool freed = false;
    if (check(h) && drop_ref(h, &freed)) {
      ++report.references_released;
      if (freed) ++report.blocks_freed;
    } else {
      ++report.stale_entries;
    }
  }
  return report;
}

Result<std::size_t> BlockPool::detach_process(SlotId slot) {
  if (auto r = check_slot(slot); !r) return tl::unexpected(std::move(r.error()));
  const auto s = static_cast<std::uint32_t>(slot);
  auto word = atomic_of(slot_at(s).state_pid);
  std::uint64_t w = word.load(std::memory_order_relaxed);  // checked by the CAS
  // (S5) Attached -> Reclaiming: one drainer. A crash after this leaves a
  // Reclaiming slot that reclaim_dead finishes.
  if (!word.compare_exchange_strong(w, detail::pack_slot(SlotState::kReclaiming, detail::slot_pid(w)),
                                    std::memory_order_acquire, std::memory_order_relaxed) ||
      detail::slot_state(w) != SlotState::kAttached) {
    return make_error(Errc::kInvalidArgument, "process slot " + std::to_string(s) + " changed state during detach");
  }
  const ReclaimReport report = drain(s);
  atomic_of(slot_at(s).start_time).store(0, std::memory_order_relaxed);  // published by (S3)
  // (S3) Free. release pairs with (S1) of the next claimer.
  word.store(detail::pack_slot(SlotState::kFree, 0), std::memory_order_release);
  return report.references_released;
}

Result<ReclaimReport> BlockPool::reclaim_dead(SlotId slot) {
  const auto s = static_cast<std::uint32_t>(slot);
  if (s >= process_slots_) {
    return make_error(Errc::kInvalidArgument, "process slot " + std::to_string(s) + " out of range");
  }
  auto word = atomic_of(slot_at(s).state_pid);
  // (S4) Pairs with (S2): an Attached slot shows its start time.
  std::uint64_t w = word.load(std::memory_order_acquire);
  const SlotState state = detail::slot_state(w);
  if (state == SlotState::kFree) return make_error(Errc::kInvalidArgument, "process slot " + std::to_string(s) + " is free");
  const ProcessId id{static_cast<pid_t>(detail::slot_pid(w)),
                     atomic_of(slot_at(s).start_time).load(std::memory_order_relaxed)};
  // A claimer that died before writing its start time left 0: check the pid
  // alone. A reused pid then reads as alive and the slot waits: a leak,
  // never a release on behalf of a live process.
  const bool alive = id.start_time == 0 ? process_start_time(id.pid).has_value() : process_alive(id);
  if (alive) {
    return make_error(Errc::kInvalidArgument, "process " + std::to_string(id.pid) + " (slot " + std::to_string(s) +
                                                  ") is alive; only a dead process's slot is reclaimed");
  }
  if (state != SlotState::kReclaiming) {
    // (S5') As (S5). A Reclaiming slot was left by a reclaimer (a previous
    // owner) that died: finish its drain.
    if (!word.compare_exchange_strong(w, detail::pack_slot(SlotState::kReclaiming, detail::slot_pid(w)),
                                      std::memory_order_acquire, std::memory_order_relaxed)) {
      return make_error(Errc::kInvalidArgument, "process slot " + std::to_string(s) + " changed state during reclaim");
    }
  }
  const ReclaimReport report = drain(s);
  atomic_of(slot_at(s).start_time).store(0, std::memory_order_relaxed);  // published by (S3')
  // (S3') As (S3).
  word.store(detail::pack_slot(SlotState::kFree, 0), std::memory_order_release);
  return report;
}

// ---------------------------------------------------------------------------
// Inspection and repair

std::uint32_t BlockPool::cut_count(std::uint32_t c) const noexcept {
  if (!classes_[c].lazy) return classes_[c].count;
  // acquire: as (K1).
  return static_cast<std::uint32_t>(
      std::min<std::uint64_t>(atomic_of(class_state(c).cut).load(std::memory_order_acquire), classes_[c].count));
}

std::uint32_t BlockPool::walk_free_list(std::uint32_t c, std::vector<bool>* listed) const {
  const std::uint32_t n = cut_count(c);
  std::vector<bool> seen(n, false);
  std::uint32_t length = 0;
  // acquire: as (F1). The walk is exact only in a quiescent pool; a cycle
  // or an index out of range (corruption) ends it.
  std::uint32_t idx = detail::head_index(atomic_of(class_state(c).head).load(std::memory_order_acquire));
  while (idx < n && !seen[idx]) {
    seen[idx] = true;
    ++length;
    idx = atomic_of(block(c, idx).next).load(std::memory_order_relaxed);  // quiescent: any order
  }
  if (listed != nullptr) *listed = std::move(seen);
  return length;
}

PoolStats BlockPool::stats() const {
  PoolStats out;
  for (std::uint32_t c = 0; c < class_count_; ++c) {
    const LocalClass& lc = classes_[c];
    ClassStats cs;
    cs.block_bytes = lc.block_bytes;
    cs.capacity = lc.block_bytes - kBlockHeaderBytes;
    cs.count = lc.count;
    cs.cut = cut_count(c);
    cs.lazy = lc.lazy;
    for (std::uint32_t i = 0; i < cs.cut; ++i) {
      // relaxed: a snapshot, exact only when quiescent.
      const BlockState st = detail::ctl_state(atomic_of(block(c, i).ctl).load(std::memory_order_relaxed));
      if (st == BlockState::kFree) ++cs.free;
      if (st == BlockState::kAllocated) ++cs.allocated;
    }
    cs.listed = walk_free_list(c, nullptr);
    out.free_blocks += cs.free;
    out.allocated_blocks += cs.allocated;
    out.classes.push_back(cs);
  }
  for (std::uint32_t s = 0; s < process_slots_; ++s) {
    // relaxed: a snapshot.
    if (detail::slot_state(atomic_of(slot_at(s).state_pid).load(std::memory_order_relaxed)) != SlotState::kFree) {
      ++out.attached_processes;
    }
  }
  return out;
}

Result<AuditReport> BlockPool::audit() {
  AuditReport report;
  const auto self = static_cast<std::uint32_t>(::getpid());
  // 1. Every other process must be dead; reclaim their slots.
  std::vector<std::uint32_t> live;
  for (std::uint32_t s = 0; s < process_slots_; ++s) {
    const std::uint64_t w = atomic_of(slot_at(s).state_pid).load(std::memory_order_acquire);  // as (S4)
    const SlotState st = detail::slot_state(w);
    if (st == SlotState::kFree) continue;
    if (detail::slot_pid(w) == self && st == SlotState::kAttached) {
      live.push_back(s);
      continue;
    }
    auto r = reclaim_dead(SlotId{s});
    if (!r) {
      return make_error(Errc::kInvalidArgument, "audit needs a quiescent pool: " + r.error().message);
    }
    ++report.slots_reclaimed;
  }
  // 2. The live slots' entries are the truth: count references per handle,
  //    dropping entries that name no allocated block.
  std::unordered_map<std::uint64_t, std::uint32_t> refs;
  for (const std::uint32_t s : live) {
    std::uint64_t* list = held_list(s);
    for (std::uint32_t i = 0; i < held_per_process_; ++i) {
      auto e = atomic_of(list[i]);
      const std::uint64_t bits = e.load(std::memory_order_relaxed);  // quiescent
      if (bits == 0) continue;
      if (check(Handle::from_bits(bits))) {
        ++refs[bits];
      } else {
        e.store(0, std::memory_order_relaxed);
        ++report.stale_entries_dropped;
      }
    }
  }
  // 3. Fix each block, then rebuild each free list from the states. Plain
  //    (relaxed) accesses: no other thread or process uses the pool.
  for (std::uint32_t c = 0; c < class_count_; ++c) {
    const LocalClass& lc = classes_[c];
    const std::size_t cap = lc.block_bytes - kBlockHeaderBytes;
    std::vector<bool> listed;
    walk_free_list(c, &listed);
    const std::uint32_t n = cut_count(c);
    std::uint32_t first = kNilIndex;
    std::uint32_t last = kNilIndex;
    for (std::uint32_t i = 0; i < n; ++i) {
      BlockHeader& b = block(c, i);
      auto ctl = atomic_of(b.ctl);
      const std::uint64_t cur = ctl.load(std::memory_order_relaxed);
      const std::uint32_t gen = detail::ctl_generation(cur);
      switch (detail::ctl_state(cur)) {
        case BlockState::kAllocated: {
          const auto it = refs.find(Handle::pack(c, i, gen).bits());
          const std::uint32_t r = it == refs.end() ? 0 : it->second;
          if (r == detail::ctl_refs(cur)) continue;
          if (r > 0) {
            ctl.store(detail::pack_ctl(gen, BlockState::kAllocated, r), std::memory_order_relaxed);
            ++report.refcounts_fixed;
            continue;
          }
          poison(block_data(c, i), cap);
          ctl.store(detail::pack_ctl(detail::next_generation(gen), BlockState::kFree, 0), std::memory_order_relaxed);
          ++report.unheld_freed;
          break;
        }
        case BlockState::kFree:
          if (!listed[i]) ++report.free_relisted;
          break;
        default:  // Uncut below `cut` (a cutter died), or a damaged state
          if (lc.lazy && !reserve(lc.area_offset + std::uint64_t{i} * lc.block_bytes, lc.block_bytes,
                                  static_cast<int>(c))) {
            continue;  // still not reserved: leave it out of the list
          }
          b.index = i;
          b.size_class = static_cast<std::uint8_t>(c);
          atomic_of(b.used).store(0, std::memory_order_relaxed);
          atomic_of(b.owner).store(kNoOwner, std::memory_order_relaxed);
          poison(block_data(c, i), cap);
          ctl.store(detail::pack_ctl(detail::next_generation(gen), BlockState::kFree, 0), std::memory_order_relaxed);
          ++report.uncut_recovered;
          break;
      }
      // Free now: append to the rebuilt list (in index order).
      atomic_of(b.next).store(kNilIndex, std::memory_order_relaxed);
      if (last == kNilIndex) {
        first = i;
      } else {
        atomic_of(block(c, last).next).store(i, std::memory_order_relaxed);
      }
      last = i;
    }
    auto head = atomic_of(class_state(c).head);
    const std::uint64_t old = head.load(std::memory_order_relaxed);
    // release: as (F4), for whoever uses the pool after the audit.
    head.store(detail::pack_head(first, detail::head_tag(old) + 1), std::memory_order_release);
  }
  return report;
}

}  // namespace palm
