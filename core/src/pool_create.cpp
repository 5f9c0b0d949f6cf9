// BlockPool, setting up: the config, the layout a config gives (geometry),
// create and attach. The hot paths are in pool.cpp.
#include "palm/core/pool.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "pool_internal.hpp"

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
using detail::bytes_str;
using detail::kNoOwner;
using detail::poison;

namespace {

constexpr std::uint32_t kMaxProcessSlots = 1u << 16;
constexpr std::uint32_t kMinHeld = 16;
constexpr std::uint32_t kMaxHeld = 1u << 20;

constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) noexcept { return (v + a - 1) / a * a; }

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
  class_state_ = region.base + header.class_state_offset;
  slots_ = region.base + header.slots_offset;
  held_ = region.base + header.held_offset;
  for (std::uint32_t c = 0; c < class_count_; ++c) {
    const ClassInfo& ci = header.classes[c];
    classes_[c] = LocalClass{region.base + ci.area_offset, ci.area_offset, ci.block_bytes, ci.count, ci.lazy != 0};
  }
}

}  // namespace palm
