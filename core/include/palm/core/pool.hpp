#pragma once
// BlockPool: fixed-size blocks in a region shared by processes, named by
// 64-bit Handles, reference-counted for fan-out, with a per-process list of
// the references each process holds so that a dead process's blocks can be
// returned. The layout is in detail/pool_layout.hpp.
//
// Size classes: block size 256 B << c (the block includes a 64-byte header;
// capacity = block size - 64), up to PoolConfig::largest_block (64 MiB by
// default). Classes under 1 MiB are preallocated at create and their bytes
// reserved (posix_fallocate) then; classes from 1 MiB are cut lazily from a
// sparse range of the same file, each block reserved when first cut, then
// kept on its free list for reuse. A full backing store is an error
// (kNoSpace naming the size and the space free), never a SIGBUS.
//
// Free lists (one per class): a Treiber stack of block indices. The head is
// one 64-bit word {index, tag}; the link `next` lives in the free block's
// header.
//   pop:  h = head (acquire); if nil: empty. n = block[h.index].next;
//         CAS head h -> {n, h.tag+1}.
//     - success: the block is ours; no one else can pop it until it is
//       pushed again.
//     - failure (head changed: another pop or push committed): retry with
//       the value the CAS loaded. `n` may have been stale (the block was
//       popped and reused meanwhile); reading it is harmless, because blocks
//       are never unmapped and the tag makes the CAS fail.
//     - ABA: A popped, B popped, A pushed leaves index A on top again, but
//       with a tag bumped three times, so a CAS prepared with the old
//       {A, t} and the old next (B) fails. The tag would have to wrap 2^32
//       times inside one pop for ABA to pass.
//   push: h = head; block[i].next = h.index; CAS head h -> {i, h.tag+1}
//         (release: a popper that sees i also sees next and the freed header).
//     - failure: retry with the loaded head; `next` is rewritten each try.
// One CAS commits each operation, so a process dying inside one leaves the
// stack intact and loses at most the block in its hand.
//
// Block state: one control word per block {generation, state, refcount},
// changed only by CAS that also checks the caller's handle's generation:
//   Free(g) --allocate--> Allocated(g, 1) --add_ref n--> Allocated(g, r+n)
//   Allocated(g, r>1) --release--> Allocated(g, r-1)
//   Allocated(g, 1) --release--> Free(g+1)   (linearization point of a free)
// A release of a free block, of a block of another generation, or a second
// release of the same reference is refused (kStaleHandle / kBadHandle).
//
// Held lists: each attached process has a slot with a bounded list of the
// references it holds (one entry per reference; interchangeable entries, so
// the threads of one process update it with single CASes). allocate adds an
// entry, release removes one; hold/unhold move references in or out through
// channels. The channel layer decides the order, keeping one invariant: a
// reference is never in two lists at once (two entries could be released
// twice after a crash; none only leaks it). So a sender unholds before it
// publishes, and a receiver holds after it has taken the handle.
//
// Crash windows (a process may die at any instruction; "owner" is the
// region's owner, who runs reclaim_dead after confirming the death, and
// audit when the pool is quiescent). Each step is one atomic operation:
//
//  allocate      1 pop (CAS head)    2 mark Allocated (CAS ctl)   3 record
//   died after 1: block Free, off the list: lost until audit.
//   died after 2: block Allocated(1), in no held list: lost until audit.
//   died after 3: held; reclaim_dead releases it.
//  cut (large)   1 reserve (fallocate) 2 claim index (CAS cut) 3 init header
//   died after 1: space reserved, no block: reused by the next cutter.
//   died after 2: block Uncut below `cut`: lost until audit (re-reserves it).
//  release       1 validate   2 unrecord (CAS entry h->0)   3 drop ref (CAS)
//                [at 0: 3 frees (CAS ctl), 4 push (CAS head)]
//   died after 2: a reference in no list: the block leaks (audit); never a
//                 double release (the reverse order could release it twice).
//   died after 3 (freed): block Free, off the list: lost until audit.
//  add_ref n     1 add n (CAS ctl)   2 record n entries
//   died in 2:    references without entries: leak (audit), never a
//                 premature free (entries are recorded only for references
//                 that exist).
//  hold          1 validate   2 record (CAS entry 0->h)
//  unhold        1 unrecord (CAS entry h->0)
//   a reference between the sender's unhold and the receiver's hold is in
//   no list: if either dies then, the block leaks until audit.
//  reclaim_dead / detach   for each entry: 1 take it (exchange -> 0),
//                          2 drop the reference; then free the slot.
//   died between 1 and 2: that reference leaks (audit); the next
//   reclaim_dead of the slot (state Reclaiming) finishes the others.
//  attach_process 1 claim (CAS Free -> {Claiming, pid})  2 start time,
//                 clear list   3 Attached (store)
//   died after 1 or 2: a Claiming slot naming the pid: reclaim_dead frees it.
//
// Under ASan each process poisons a block's data when it frees it and
// unpoisons it when it allocates or resolves it (each process has its own
// shadow), so touching a freed block is reported; whoever unmaps the region
// calls forget_region_poison first (MappedRegion does).
//
// Thread-safety: every member is thread-safe; the block and held-list
// operations are lock-free (allocate_for sleeps between tries); audit and
// stats need a quiescent pool to be exact. Handles are validated on every
// use and never dereferenced when invalid.

#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "palm/core/detail/pool_layout.hpp"
#include "palm/core/error.hpp"
#include "palm/core/handle.hpp"
#include "palm/core/process.hpp"
#include "palm/core/region.hpp"

namespace palm {

// A process slot of a pool (index into its process table).
enum class SlotId : std::uint32_t {};

inline constexpr std::size_t kMaxSizeClasses = detail::kMaxClasses;

struct PoolConfig {
  // Blocks per class, index = class (block size 256 B << class). Small
  // classes: preallocated (a few MiB in all); large classes (>= 1 MiB): the
  // most that may be cut.
  static constexpr std::array<std::uint32_t, kMaxSizeClasses> default_blocks() noexcept {
    return {2048, 1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 2,  // 256 B .. 512 KiB: 6.5 MiB
            16, 8, 8, 4, 4, 2, 2,                               // 1 .. 64 MiB: 352 MiB sparse
            1, 1, 1, 1};                                        // 128 MiB .. 1 GiB if enabled
  }

  // The largest block (a power of two, 1 MiB .. 1 GiB). Its capacity is 64
  // bytes less. Requests above it fail with kTooLarge.
  std::size_t largest_block = std::size_t{64} << 20;
  std::array<std::uint32_t, kMaxSizeClasses> blocks = default_blocks();
  // Processes that may attach at once.
  std::uint32_t process_slots = 32;
  // References one process may hold at once (a power of two, 16 .. 2^20).
  std::uint32_t held_per_process = 1024;

  // Sets the block count of the class of `block_bytes` (a power of two,
  // 256 B .. 1 GiB). Throws std::invalid_argument otherwise (a config error).
  PoolConfig& set_blocks(std::size_t block_bytes, std::uint32_t count);
};

// A validated block. `data` stays valid while the caller holds a reference;
// `used` is a snapshot.
struct BlockView {
  std::byte* data = nullptr;
  std::size_t capacity = 0;
  std::size_t used = 0;
  Handle handle;
};

struct ClassStats {
  std::size_t block_bytes = 0;
  std::size_t capacity = 0;
  std::uint32_t count = 0;      // configured (large: the most that may be cut)
  std::uint32_t cut = 0;        // blocks that exist
  std::uint32_t free = 0;       // blocks in state Free
  std::uint32_t allocated = 0;  // blocks in state Allocated
  std::uint32_t listed = 0;     // blocks on the free list
  bool lazy = false;
};

struct PoolStats {
  std::vector<ClassStats> classes;
  std::size_t free_blocks = 0;
  std::size_t allocated_blocks = 0;
  std::uint32_t attached_processes = 0;  // slots not Free
  // No block allocated, every existing block free and on its free list.
  bool all_free() const noexcept;
};

struct ReclaimReport {
  std::size_t references_released = 0;
  std::size_t blocks_freed = 0;
  std::size_t stale_entries = 0;  // entries naming a block already freed
};

struct AuditReport {
  std::size_t slots_reclaimed = 0;     // dead processes' slots
  std::size_t free_relisted = 0;       // Free blocks that were off the list
  std::size_t unheld_freed = 0;        // Allocated blocks no live slot holds
  std::size_t refcounts_fixed = 0;     // Allocated blocks whose count != entries
  std::size_t uncut_recovered = 0;     // claimed but uninitialised large blocks
  std::size_t stale_entries_dropped = 0;
};

class BlockPool {
 public:
  // Bytes a region needs for `config` (sparse: large classes are reserved
  // only when cut). Throws nothing; an invalid config gives 0.
  static std::size_t region_bytes(const PoolConfig& config) noexcept;

  // Lays out a new pool in `region` (zeroed or not: everything is written)
  // and reserves the metadata and small classes with posix_fallocate when
  // region.fd >= 0. Not thread-safe with other users of the region (there are
  // none yet: attachers see kNotReady until the version is stored, last).
  [[nodiscard]] static Result<BlockPool> create(Region region, const PoolConfig& config = {});
  // Opens a pool another process (or object) created. kNotReady while the
  // creator is still writing, kBadMagic for a region that is not a pool,
  // kVersionMismatch for another layout, kMalformed for inconsistent sizes.
  [[nodiscard]] static Result<BlockPool> attach(Region region);

  // A BlockPool is a view of the region (pointers and a local copy of the
  // class table): copy it freely; the mapping must outlive every copy.
  BlockPool(const BlockPool&) = default;
  BlockPool& operator=(const BlockPool&) = default;

  // ---- processes --------------------------------------------------------
  // Claims a free slot for process `id` (normally self_process()). Several
  // slots may name one process (e.g. one per thread in tests).
  [[nodiscard]] Result<SlotId> attach_process(const ProcessId& id);
  // Clean exit: releases every reference the slot still holds (returns how
  // many), then frees the slot. The slot's process only, once its threads
  // stopped using the slot.
  [[nodiscard]] Result<std::size_t> detach_process(SlotId slot);
  // The owner only, for a slot whose process it confirmed dead; the pool
  // re-checks (pid + start time) and refuses a live one (kInvalidArgument).
  // Releases one reference per held-list entry, then frees the slot.
  [[nodiscard]] Result<ReclaimReport> reclaim_dead(SlotId slot);
  // Whether `slot`'s held list has an entry for `h`: for the owner, about a
  // dead slot nobody writes any more (a live one's answer is stale at once).
  bool holds(SlotId slot, Handle h) const noexcept;
  // The identity recorded in a slot (start_time 0 while it is being claimed).
  [[nodiscard]] Result<ProcessId> slot_process(SlotId slot) const;

  // ---- blocks -----------------------------------------------------------
  // A block of at least `bytes` capacity, with one reference, recorded in
  // `slot`'s held list. Lock-free. kExhausted if the class has no free block
  // (or the held list is full), kTooLarge above the largest class, kNoSpace
  // if cutting a large block finds the backing store full.
  [[nodiscard]] Result<Handle> allocate(std::size_t bytes, SlotId slot) noexcept;
  // As allocate, returning the new block as resolve would (used 0): for a
  // writer that fills the block at once (frames), without looking the handle
  // up again.
  [[nodiscard]] Result<BlockView> allocate_block(std::size_t bytes, SlotId slot) noexcept;
  // As allocate, but waits up to `timeout` for a block of an exhausted class
  // (yield, then sleeps of up to 1 ms; no unbounded spin). kTimeout with the
  // class named when it runs out; other errors at once.
  [[nodiscard]] Result<Handle> allocate_for(std::size_t bytes, SlotId slot,
                                            std::chrono::nanoseconds timeout) noexcept;
  // Adds `n` references (fan-out), recorded in `slot`'s held list: they
  // leave it through unhold as they are sent. The caller holds a reference.
  [[nodiscard]] Result<void> add_ref(SlotId slot, Handle h, std::uint32_t n = 1) noexcept;
  // Drops one of `slot`'s references; frees the block at zero. A release of
  // a freed block or of a reference the slot does not hold is refused.
  [[nodiscard]] Result<void> release(SlotId slot, Handle h) noexcept;
  // A reference moved in (received through a channel): record it.
  [[nodiscard]] Result<void> hold(SlotId slot, Handle h) noexcept;
  // A reference moved out (sent through a channel): forget it, the count is
  // unchanged. kBadHandle if `slot` holds no reference to `h`.
  [[nodiscard]] Result<void> unhold(SlotId slot, Handle h) noexcept;

  // Whether the caller's reference to `h` is the only one (refcount 1): no
  // other holder, in any process, can read the block any more, so the
  // caller may change it before it passes it on. False for an invalid handle.
  bool sole_reference(Handle h) const noexcept;
  // Validates `h` and returns its block. Valid only while the caller holds
  // a reference; a racing free by a buggy peer makes the view stale.
  [[nodiscard]] Result<BlockView> resolve(Handle h) const noexcept;
  // resolve without the error: false for a handle resolve refuses. For hot
  // paths that only need to know (no Result to build and move).
  [[nodiscard]] bool try_resolve(Handle h, BlockView& out) const noexcept;
  // Sets the used length (<= capacity). Published to readers by the channel
  // that carries the handle (its release/acquire).
  [[nodiscard]] Result<void> set_used(Handle h, std::size_t bytes) noexcept;
  // The same for a block the caller holds and viewed (allocate_block,
  // resolve): the view's handle is not validated again.
  [[nodiscard]] Result<void> set_used(const BlockView& held, std::size_t bytes) noexcept;
  [[nodiscard]] Result<std::size_t> used(Handle h) const noexcept;

  // ---- inspection and repair -------------------------------------------
  // Counts by scanning block headers: exact only when the pool is quiescent.
  PoolStats stats() const;
  // For a quiescent pool: no live process but the caller's, which is not
  // using the pool meanwhile (kInvalidArgument naming a live one otherwise).
  // Reclaims dead slots, then treats the live slots' held lists as the truth:
  // Allocated blocks no entry names are freed, refcounts set to the number
  // of entries, claimed-but-uninitialised large blocks finished, and the free
  // lists rebuilt from block states. References kept outside held lists (in
  // channels) count as lost: hold them first.
  [[nodiscard]] Result<AuditReport> audit();

  std::size_t class_count() const noexcept { return class_count_; }
  // Usable bytes of the largest class.
  std::size_t max_capacity() const noexcept;
  // Class index for `bytes`, or kTooLarge.
  [[nodiscard]] Result<std::uint32_t> class_for(std::size_t bytes) const noexcept;
  std::size_t class_capacity(std::uint32_t size_class) const noexcept;
  Region region() const noexcept { return region_; }

 private:
  struct LocalClass {
    std::byte* area = nullptr;
    std::uint64_t area_offset = 0;
    std::size_t block_bytes = 0;
    std::uint32_t count = 0;
    bool lazy = false;
  };

  BlockPool() = default;
  void bind(Region region, const detail::PoolHeader& header) noexcept;

  detail::BlockHeader& block(std::uint32_t c, std::uint32_t index) const noexcept;
  std::byte* block_data(std::uint32_t c, std::uint32_t index) const noexcept;
  detail::ClassState& class_state(std::uint32_t c) const noexcept;
  detail::ProcessSlot& slot_at(std::uint32_t s) const noexcept;
  std::uint64_t* held_list(std::uint32_t s) const noexcept;
  std::uint32_t held_home(Handle h) const noexcept;  // where a probe starts

  Result<void> check_slot(SlotId slot) const noexcept;
  // find, or why not as a Result.
  Result<detail::BlockHeader*> check(Handle h) const noexcept;
  // The hot checks: a bool, or the header of a live block (nullptr when
  // not), no Result built. Every handle operation runs them (about 17 per
  // message in the master), and a Result with its std::string error costs
  // ~50 instructions even when it holds a value.
  bool slot_ok(SlotId slot) const noexcept;
  detail::BlockHeader* find(Handle h) const noexcept;
  // Why find or slot_ok refused (cold: the same checks, with reasons).
  [[gnu::cold]] Error why_bad(SlotId slot, Handle h) const noexcept;
  [[gnu::cold]] Error why_bad(Handle h) const noexcept;
  std::uint32_t pop(std::uint32_t c) noexcept;
  void push(std::uint32_t c, std::uint32_t index) noexcept;
  Result<std::uint32_t> cut(std::uint32_t c) noexcept;
  Result<void> reserve(std::uint64_t offset, std::uint64_t bytes, int size_class) const;  // -1: metadata
  Result<void> drop_ref(Handle h, bool* freed) noexcept;
  bool record(std::uint32_t s, Handle h) noexcept;
  bool unrecord(std::uint32_t s, Handle h) noexcept;
  ReclaimReport drain(std::uint32_t s) noexcept;
  std::uint32_t cut_count(std::uint32_t c) const noexcept;
  std::uint32_t walk_free_list(std::uint32_t c, std::vector<bool>* listed) const;
  Error exhausted(std::uint32_t c) const;

  Region region_{};
  detail::PoolHeader* header_ = nullptr;
  std::array<LocalClass, kMaxSizeClasses> classes_{};
  std::uint32_t class_count_ = 0;
  std::uint32_t process_slots_ = 0;
  std::uint32_t held_per_process_ = 0;
  std::byte* class_state_ = nullptr;
  std::byte* slots_ = nullptr;
  std::byte* held_ = nullptr;
};

}  // namespace palm
