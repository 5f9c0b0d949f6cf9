#pragma once
// SpscRing<T>: a single-producer single-consumer ring laid out in a caller's
// memory (typically a mapping shared by two processes): the channel between
// two processes, one per (peer, direction) (DESIGN.md, "The crash model").
//
// Layout (an ABI between processes; bump kSpscRingVersion on any change):
//   [0, 128)    header, written once by create_at, read-only after:
//               magic, version (offset 8, stored last), capacity, item size
//               and alignment, total bytes
//   [128, 256)  producer line: tail (published), cached_head (producer only)
//   [256, 384)  consumer line: head (published), cached_tail (consumer only)
//   [384, ...)  capacity slots of sizeof(T) bytes, rounded up to 128
// No pointers: positions are 64-bit counters that never wrap, and slot(p) is
// p & (capacity - 1) bytes past the header. The state is plain fixed-width
// integers, accessed through std::atomic_ref where both sides touch it, so it
// is standard-layout and trivially copyable: the bytes are all of it.
//
// Positions, and what the owner reads after a peer died:
//   tail()  items ever published; the item at position p is published (will
//           be seen by the consumer) iff p < tail().
//   head()  items ever consumed; the item at position p was consumed (popped
//           by the consumer) iff p < head(). Always head() <= tail() <=
//           head() + capacity().
// Crash model:
//   - producer killed at any instruction: an item is published by one release
//     store of tail (one aligned 64-bit word), so it is either published
//     whole or not at all; the consumer drains up to tail() and goes on (the
//     owner discards the channel and gives the next producer a fresh one).
//   - consumer killed: an item it read but did not pop (head not yet stored)
//     is still in the ring; head() tells the owner what was consumed.
//   - a peer that writes garbage into the shared words cannot make the other
//     side read or write outside the ring (slots are masked); it can only
//     garble the channel, which the owner discards (a bug, not an attack:
//     the trust boundary is the uid).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "palm/core/error.hpp"
#include "palm/core/layout.hpp"

namespace palm {
namespace detail {

// "PALMSPSC" read as a little-endian 64-bit word.
inline constexpr std::uint64_t kSpscRingMagic = 0x43535053'4d4c4150;
inline constexpr std::uint32_t kSpscRingVersion = 1;

// The shared state of an SpscRing, at the start of its memory.
struct SpscRingState {
  // --- header: written by create_at only, then read-only -------------------
  std::uint64_t magic;        // kSpscRingMagic
  std::uint32_t version;      // kSpscRingVersion, stored last (release); 0: not ready
  std::uint32_t slot_count;   // capacity in items, a power of two
  std::uint32_t item_size;    // sizeof(T) of the creator
  std::uint32_t item_align;   // alignof(T) of the creator
  std::uint64_t total_bytes;  // bytes_for(capacity)
  std::uint8_t pad0[kFalseSharingRange - 32];
  // --- producer line -------------------------------------------------------
  std::uint64_t tail_pos;     // producer writes (release), anyone reads (acquire)
  std::uint64_t cached_head;  // producer only: a head it read, <= the real head
  std::uint8_t pad1[kFalseSharingRange - 16];
  // --- consumer line -------------------------------------------------------
  std::uint64_t head_pos;     // consumer writes (release), anyone reads (acquire)
  std::uint64_t cached_tail;  // consumer only: a tail it read, <= the real tail
  std::uint8_t pad2[kFalseSharingRange - 16];
};

static_assert(std::is_standard_layout_v<SpscRingState>);
static_assert(std::is_trivially_copyable_v<SpscRingState>);
static_assert(offsetof(SpscRingState, version) == 8, "the version never moves");
static_assert(offsetof(SpscRingState, tail_pos) - offsetof(SpscRingState, total_bytes) >= 64 &&
              offsetof(SpscRingState, tail_pos) % kFalseSharingRange == 0);
static_assert(offsetof(SpscRingState, head_pos) - offsetof(SpscRingState, tail_pos) >= kFalseSharingRange);
static_assert(sizeof(SpscRingState) == 3 * kFalseSharingRange);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic_ref<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic_ref<std::uint64_t>::required_alignment <= alignof(std::uint64_t));

inline std::atomic_ref<std::uint64_t> shared_word(const std::uint64_t& word) noexcept {
  // Never a const object: the ring's memory is writable; const_cast only
  // serves the const readers (head(), tail()).
  return std::atomic_ref<std::uint64_t>(const_cast<std::uint64_t&>(word));
}
inline std::atomic_ref<std::uint32_t> shared_word(const std::uint32_t& word) noexcept {
  return std::atomic_ref<std::uint32_t>(const_cast<std::uint32_t&>(word));
}

}  // namespace detail

template <class T>
class SpscRing : private detail::SpscRingState {
  static_assert(std::is_trivially_copyable_v<T>, "items cross processes as bytes");
  static_assert(alignof(T) <= kFalseSharingRange);

 public:
  // The memory given to create_at/attach_at must be aligned to this.
  static constexpr std::size_t kAlignment = kFalseSharingRange;
  static constexpr std::uint32_t kMaxCapacity = std::uint32_t{1} << 31;
  static constexpr std::size_t kHeaderBytes = sizeof(detail::SpscRingState);

  // True for a power of two in [2, kMaxCapacity].
  static constexpr bool valid_capacity(std::uint32_t capacity) noexcept {
    return capacity >= 2 && capacity <= kMaxCapacity && (capacity & (capacity - 1)) == 0;
  }
  // Bytes a ring of `capacity` items occupies (a multiple of kAlignment, so
  // rings can be laid out back to back).
  static constexpr std::size_t bytes_for(std::uint32_t capacity) noexcept {
    const std::size_t slots = std::size_t{capacity} * sizeof(T);
    return kHeaderBytes + (slots + kAlignment - 1) / kAlignment * kAlignment;
  }

  // Formats an empty ring of `capacity` items at `mem` (`mem_bytes` long,
  // aligned to kAlignment) and returns it; the version is stored last, so an
  // attacher never sees a half-made ring. Not thread-safe against other
  // users of `mem`. Errors: kInvalidArgument (null, misaligned, capacity not
  // a power of two), kOutOfRange (mem_bytes < bytes_for(capacity)).
  [[nodiscard]] static Result<SpscRing*> create_at(void* mem, std::size_t mem_bytes,
                                                   std::uint32_t capacity);
  // Validates the ring another thread or process formatted at `mem` and
  // returns it. Errors: kNotReady (version 0: still being created),
  // kBadMagic, kVersionMismatch (names both), kInvalidArgument (misaligned,
  // or items of another size), kMalformed / kOutOfRange (sizes that do not
  // fit `mem_bytes`).
  [[nodiscard]] static Result<SpscRing*> attach_at(void* mem, std::size_t mem_bytes);

  // Not copyable or movable: the object is a view of the mapping's bytes; a
  // copy of the header without its slots would index past its end.
  SpscRing(const SpscRing&) = delete;
  SpscRing& operator=(const SpscRing&) = delete;

  // --- producer: one thread of one process at a time; wait-free ----------
  // Pushes a copy of `item`; false if full.
  bool try_push(const T& item) noexcept;
  // Pushes items[0..k) for the largest k <= n that fits, with one publish.
  // Returns k (0 if full).
  std::size_t try_push_n(const T* items, std::size_t n) noexcept;

  // --- consumer: one thread of one process at a time; wait-free ----------
  // Pops the oldest item into `out`; false if empty.
  bool try_pop(T& out) noexcept;
  // Pops up to `max` of the oldest items into out[0..k), with one release of
  // their slots. Returns k (0 if empty).
  std::size_t try_pop_n(T* out, std::size_t max) noexcept;
  // Copies the oldest item into `out` without consuming it; false if empty.
  bool peek(T& out) noexcept;
  // Consumes the item peek() returned (peek must have returned true).
  void consume_peeked() noexcept;

  // --- anyone: racy reads, stale on return (see the header comment) ------
  // Items consumed so far: the position of the oldest unconsumed item.
  std::uint64_t head() const noexcept;
  // Items published so far: the position the next push will take.
  std::uint64_t tail() const noexcept;
  // Items in the ring, in [0, capacity()].
  std::size_t size_approx() const noexcept;
  std::uint32_t capacity() const noexcept { return slot_count; }

 private:
  SpscRing() = default;  // zero state; only create_at makes one

  std::byte* slots() noexcept { return reinterpret_cast<std::byte*>(this) + kHeaderBytes; }
  std::byte* slot(std::uint64_t pos) noexcept {
    return slots() + (pos & (std::uint64_t{slot_count} - 1)) * sizeof(T);
  }
  // Copies n items between `items` and the slots from position `pos` on,
  // in at most two pieces (the second after the wrap).
  void copy_in(std::uint64_t pos, const T* items, std::size_t n) noexcept;
  void copy_out(std::uint64_t pos, T* items, std::size_t n) noexcept;
};

}  // namespace palm

#include "palm/core/detail/spsc_ring_impl.hpp"
