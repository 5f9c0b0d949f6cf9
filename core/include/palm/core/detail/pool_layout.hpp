#pragma once
// The block pool's shared layout: an ABI between processes. Every struct here
// is standard-layout, trivially copyable, fixed-width and explicitly padded;
// fields that more than one thread or process writes are plain integers
// accessed only through std::atomic_ref (a std::atomic member would make the
// struct non-trivially-copyable, and atomic_ref on a lock-free type is
// address-free, so it works across processes). Bump kPoolLayoutVersion on any
// change of width, order or meaning.
//
// Region map (offsets from the region's base; see BlockPool::region_bytes):
//
//   0                 PoolHeader (magic, version, sizes, class table)
//   class_state_off   ClassState[class_count]     free-list heads, cut counts
//   slots_off         ProcessSlot[process_slots]  attached processes
//   held_off          u64[process_slots][held_per_process]  held lists
//   (page aligned)    small classes' blocks, preallocated    } reserved at
//                                                            } create
//   reserved_prefix   large classes' ranges, cut lazily (sparse)
//
// A block is a BlockHeader (64 bytes) followed by its data; the block size
// of class c is 256 B << c.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "palm/core/layout.hpp"

namespace palm::detail {

inline constexpr std::uint64_t kPoolMagic = 0x4C4F4F504D4C4150ULL;  // "PALMPOOL"
inline constexpr std::uint32_t kPoolLayoutVersion = 1;

inline constexpr unsigned kMinBlockShift = 8;     // 256 B
inline constexpr unsigned kLazyBlockShift = 20;   // classes from 1 MiB are cut lazily
inline constexpr unsigned kMaxBlockShift = 30;    // 1 GiB: the configurable limit
inline constexpr std::size_t kMaxClasses = kMaxBlockShift - kMinBlockShift + 1;  // 23
inline constexpr std::size_t kBlockHeaderBytes = 64;
inline constexpr std::size_t kPageBytes = 4096;
inline constexpr std::uint32_t kNilIndex = 0xFFFFFFFFu;

// ---------------------------------------------------------------------------
// Class table entry. Written by the creator before the version store; read
// only after an attacher's acquire load of the version; constant after.
struct ClassInfo {
  std::uint64_t block_bytes;  // 0  256 B << class
  std::uint64_t area_offset;  // 8  first block, from the region's base
  std::uint32_t count;        // 16 blocks (small: preallocated; large: max cut)
  std::uint32_t lazy;         // 20 1: cut on demand from the sparse range
  std::uint64_t reserved;     // 24 zero
};
static_assert(sizeof(ClassInfo) == 32);

// The region's first bytes. Creator-written; `version` is stored last.
struct PoolHeader {
  std::uint64_t magic;               // 0   kPoolMagic
  std::uint32_t version;             // 8   atomic_ref: 0 = not ready. Never moves.
  std::uint32_t header_bytes;        // 12  sizeof(PoolHeader)
  std::uint64_t region_bytes;        // 16  the whole (sparse) layout
  std::uint64_t reserved_prefix;     // 24  [0, this) reserved at create
  std::uint32_t creator_pid;         // 32
  std::uint32_t class_count;         // 36  classes in use (<= kMaxClasses)
  std::uint32_t process_slots;       // 40
  std::uint32_t held_per_process;    // 44  power of two
  std::uint32_t block_header_bytes;  // 48  kBlockHeaderBytes
  std::uint32_t reserved0;           // 52
  std::uint64_t class_state_offset;  // 56
  std::uint64_t slots_offset;        // 64
  std::uint64_t held_offset;         // 72
  std::uint8_t reserved1[48];        // 80
  ClassInfo classes[kMaxClasses];    // 128
};
static_assert(offsetof(PoolHeader, version) == 8, "the version never moves");
static_assert(offsetof(PoolHeader, classes) == 128);
static_assert(sizeof(PoolHeader) == 128 + 32 * kMaxClasses);

// ---------------------------------------------------------------------------
// Per-class shared state: the free-list head and the cut count, 128 bytes
// apart (the head is CAS'd on every allocate/free; the cut count is read on
// every resolve of a large block and written only when a block is cut).
//
// head  {index:32 (low) | tag:32 (high)}: the top free block, kNilIndex if
//       none; the tag is bumped by every successful CAS (defeats ABA).
// cut   blocks of this class that exist: small classes = count, constant;
//       large classes grow 0 -> count as blocks are cut, never shrink.
struct ClassState {
  std::uint64_t head;                                // 0   any allocator/freer
  std::uint8_t pad0[kFalseSharingRange - 8];         // 8
  std::uint64_t cut;                                 // 128 cutters (CAS)
  std::uint8_t pad1[kFalseSharingRange - 8];         // 136
};
static_assert(sizeof(ClassState) == 2 * kFalseSharingRange);
static_assert(offsetof(ClassState, cut) - offsetof(ClassState, head) >= kFalseSharingRange);

constexpr std::uint64_t pack_head(std::uint32_t index, std::uint32_t tag) noexcept {
  return (std::uint64_t{tag} << 32) | index;
}
constexpr std::uint32_t head_index(std::uint64_t h) noexcept { return static_cast<std::uint32_t>(h); }
constexpr std::uint32_t head_tag(std::uint64_t h) noexcept { return static_cast<std::uint32_t>(h >> 32); }

// ---------------------------------------------------------------------------
// A process slot. state_pid = {state:32 (low) | pid:32 (high)}, so a claim
// writes the claimer's pid in the same CAS that takes the slot: a slot is
// never taken without naming whom to check for death.
//   Free -> Claiming (CAS, attach_process) -> Attached (store, release)
//   Attached -> Reclaiming (CAS: detach_process, or reclaim_dead by the owner)
//   Claiming/Reclaiming -> Reclaiming (reclaim_dead: a claimer or reclaimer died)
//   Reclaiming -> Free (store, release) once the held list is drained.
enum class SlotState : std::uint32_t { kFree = 0, kClaiming = 1, kAttached = 2, kReclaiming = 3 };

struct ProcessSlot {
  std::uint64_t state_pid;     // 0  atomic_ref; claimer, the process, the owner
  std::uint64_t start_time;    // 8  atomic_ref; claimer, before Attached
  std::uint64_t attach_count;  // 16 atomic_ref; bumped per attach (diagnostics)
  std::uint8_t pad[kFalseSharingRange - 24];
};
static_assert(sizeof(ProcessSlot) == kFalseSharingRange);

constexpr std::uint64_t pack_slot(SlotState s, std::uint32_t pid) noexcept {
  return (std::uint64_t{pid} << 32) | static_cast<std::uint32_t>(s);
}
constexpr SlotState slot_state(std::uint64_t w) noexcept {
  return static_cast<SlotState>(static_cast<std::uint32_t>(w));
}
constexpr std::uint32_t slot_pid(std::uint64_t w) noexcept { return static_cast<std::uint32_t>(w >> 32); }

// ---------------------------------------------------------------------------
// The block header, first 64 bytes of every block; data follows.
//
// ctl = {refcount:24 (bits 0-23) | state:8 (24-31) | generation:32 (32-63)}:
// one word, so every check-and-change (add a reference, drop one, free at
// zero, allocate) is one CAS that also checks the generation the caller's
// handle names. A free bumps the generation in the same CAS that frees.
enum class BlockState : std::uint8_t { kUncut = 0, kFree = 1, kAllocated = 2 };

struct BlockHeader {
  std::uint64_t ctl;         // 0  atomic_ref; see above
  std::uint64_t used;        // 8  atomic_ref; bytes in use, set by the writer
  std::uint32_t next;        // 16 atomic_ref; free-list link (valid while free)
  std::uint32_t owner;       // 20 atomic_ref; slot that allocated it (diagnostics)
  std::uint32_t index;       // 24 this block's index in its class; constant
  std::uint8_t size_class;   // 28 constant
  std::uint8_t reserved[35]; // 29 zero
};
static_assert(sizeof(BlockHeader) == kBlockHeaderBytes);
static_assert(offsetof(BlockHeader, ctl) % 8 == 0 && offsetof(BlockHeader, used) % 8 == 0);

inline constexpr std::uint32_t kMaxRefcount = (1u << 24) - 1;

constexpr std::uint64_t pack_ctl(std::uint32_t generation, BlockState s, std::uint32_t refs) noexcept {
  return (std::uint64_t{generation} << 32) | (std::uint64_t{static_cast<std::uint8_t>(s)} << 24) |
         (refs & kMaxRefcount);
}
constexpr std::uint32_t ctl_generation(std::uint64_t c) noexcept { return static_cast<std::uint32_t>(c >> 32); }
constexpr BlockState ctl_state(std::uint64_t c) noexcept {
  return static_cast<BlockState>(static_cast<std::uint8_t>(c >> 24));
}
constexpr std::uint32_t ctl_refs(std::uint64_t c) noexcept {
  return static_cast<std::uint32_t>(c) & kMaxRefcount;
}
// Generations run 1, 2, ..., 2^32-1, 1, ...: never 0, so no handle is null.
constexpr std::uint32_t next_generation(std::uint32_t g) noexcept { return g == 0xFFFFFFFFu ? 1 : g + 1; }

// ---------------------------------------------------------------------------
template <class S>
inline constexpr bool kSharedLayout = std::is_standard_layout_v<S> && std::is_trivially_copyable_v<S>;
static_assert(kSharedLayout<ClassInfo> && kSharedLayout<PoolHeader> && kSharedLayout<ClassState> &&
              kSharedLayout<ProcessSlot> && kSharedLayout<BlockHeader>);
static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free &&
                  std::atomic_ref<std::uint32_t>::is_always_lock_free,
              "shared atomics must be lock-free (address-free across processes)");
static_assert(std::atomic_ref<std::uint64_t>::required_alignment <= alignof(std::uint64_t));
static_assert(std::atomic_ref<std::uint32_t>::required_alignment <= alignof(std::uint32_t));

// The one way shared fields are touched concurrently.
template <class T>
inline std::atomic_ref<T> atomic_of(T& field) noexcept {
  return std::atomic_ref<T>(field);
}

}  // namespace palm::detail
