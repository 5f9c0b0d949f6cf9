#pragma once
// Bodies of SpscRing<T> (palm/core/spsc_ring.hpp). Labels: (P*) producer,
// (C*) consumer, (H*) header. Only two threads touch the hot words: the
// producer writes tail_pos and reads head_pos, the consumer the reverse, so
// no CAS is needed: each side publishes with a release store of its own
// counter and learns the other's with an acquire load, and only when its
// cached copy says full (producer) or empty (consumer).

#include <cstdint>
#include <cstring>
#include <new>
#include <string>

#include "palm/core/spsc_ring.hpp"

namespace palm {

template <class T>
Result<SpscRing<T>*> SpscRing<T>::create_at(void* mem, std::size_t mem_bytes,
                                           std::uint32_t capacity) {
  static_assert(std::is_standard_layout_v<SpscRing>);
  static_assert(sizeof(SpscRing) == kHeaderBytes, "SpscRing adds no state to its layout");
  if (mem == nullptr) return make_error(Errc::kInvalidArgument, "SpscRing::create_at: null memory");
  if (reinterpret_cast<std::uintptr_t>(mem) % kAlignment != 0) {
    return make_error(Errc::kInvalidArgument,
                      "SpscRing::create_at: memory is not aligned to " +
                          std::to_string(kAlignment) + " bytes; place rings at multiples of " +
                          std::to_string(kAlignment) + " in the mapping");
  }
  if (!valid_capacity(capacity)) {
    return make_error(Errc::kInvalidArgument,
                      "SpscRing capacity " + std::to_string(capacity) +
                          " is not a power of two in [2, 2^31]; round it up to one");
  }
  if (mem_bytes < bytes_for(capacity)) {
    return make_error(Errc::kOutOfRange,
                      "SpscRing of " + std::to_string(capacity) + " items of " +
                          std::to_string(sizeof(T)) + " bytes needs " +
                          std::to_string(bytes_for(capacity)) + " bytes, the region has " +
                          std::to_string(mem_bytes) + "; use bytes_for() to size it");
  }
  // (H0) Unpublish first, in case the memory held a ring: an attacher that
  // reads 0 waits. relaxed is enough against attachers that respect (H2);
  // reformatting a ring that is in use is the caller's bug.
  detail::shared_word(static_cast<detail::SpscRingState*>(mem)->version)
      .store(0, std::memory_order_relaxed);
  auto* ring = ::new (mem) SpscRing();  // value-initialized: all zero
  ring->magic = detail::kSpscRingMagic;
  ring->slot_count = capacity;
  ring->item_size = static_cast<std::uint32_t>(sizeof(T));
  ring->item_align = static_cast<std::uint32_t>(alignof(T));
  ring->total_bytes = bytes_for(capacity);
  // (H1) Publish the format, version last. release, pairs with (H2) in
  // attach_at: an attacher that reads the version sees every field above
  // (and the zero counters). A creator killed before this store leaves a
  // ring that reports kNotReady, never a half-made one.
  detail::shared_word(ring->version).store(detail::kSpscRingVersion, std::memory_order_release);
  return ring;
}

template <class T>
Result<SpscRing<T>*> SpscRing<T>::attach_at(void* mem, std::size_t mem_bytes) {
  if (mem == nullptr) return make_error(Errc::kInvalidArgument, "SpscRing::attach_at: null memory");
  if (reinterpret_cast<std::uintptr_t>(mem) % kAlignment != 0) {
    return make_error(Errc::kInvalidArgument, "SpscRing::attach_at: memory is not aligned to " +
                                                  std::to_string(kAlignment) + " bytes");
  }
  if (mem_bytes < kHeaderBytes) {
    return make_error(Errc::kOutOfRange, "SpscRing::attach_at: region of " +
                                             std::to_string(mem_bytes) +
                                             " bytes is smaller than the ring header (" +
                                             std::to_string(kHeaderBytes) + ")");
  }
  auto* state = static_cast<detail::SpscRingState*>(mem);
  // (H2) acquire, pairs with (H1): reading the version, we see the header.
  const std::uint32_t version =
      detail::shared_word(state->version).load(std::memory_order_acquire);
  if (version == 0) {
    return make_error(Errc::kNotReady, "SpscRing::attach_at: the ring is still being created");
  }
  if (state->magic != detail::kSpscRingMagic) {
    return make_error(Errc::kBadMagic, "SpscRing::attach_at: the region does not hold a palm ring");
  }
  if (version != detail::kSpscRingVersion) {
    return make_error(Errc::kVersionMismatch,
                      "SpscRing layout version " + std::to_string(version) +
                          " in the region, this build speaks version " +
                          std::to_string(detail::kSpscRingVersion) +
                          "; run peers built from the same palm");
  }
  if (state->item_size != sizeof(T) || state->item_align != alignof(T)) {
    return make_error(Errc::kInvalidArgument,
                      "SpscRing holds items of " + std::to_string(state->item_size) +
                          " bytes (alignment " + std::to_string(state->item_align) +
                          "), the attacher expects " + std::to_string(sizeof(T)) +
                          " (alignment " + std::to_string(alignof(T)) + ")");
  }
  if (!valid_capacity(state->slot_count) || state->total_bytes != bytes_for(state->slot_count)) {
    return make_error(Errc::kMalformed, "SpscRing header is inconsistent: capacity " +
                                            std::to_string(state->slot_count) + ", " +
                                            std::to_string(state->total_bytes) + " bytes");
  }
  if (state->total_bytes > mem_bytes) {
    return make_error(Errc::kOutOfRange, "SpscRing of " + std::to_string(state->total_bytes) +
                                             " bytes does not fit the region of " +
                                             std::to_string(mem_bytes) + " bytes");
  }
  // launder: the ring was made by placement new here or in another process.
  return std::launder(static_cast<SpscRing*>(static_cast<void*>(state)));
}

template <class T>
void SpscRing<T>::copy_in(std::uint64_t pos, const T* items, std::size_t n) noexcept {
  const std::size_t cap = slot_count;
  const std::size_t first = static_cast<std::size_t>(pos & (cap - 1));
  const std::size_t run = n < cap - first ? n : cap - first;
  std::memcpy(slots() + first * sizeof(T), items, run * sizeof(T));
  if (run < n) std::memcpy(slots(), items + run, (n - run) * sizeof(T));
}

template <class T>
void SpscRing<T>::copy_out(std::uint64_t pos, T* items, std::size_t n) noexcept {
  const std::size_t cap = slot_count;
  const std::size_t first = static_cast<std::size_t>(pos & (cap - 1));
  const std::size_t run = n < cap - first ? n : cap - first;
  std::memcpy(items, slots() + first * sizeof(T), run * sizeof(T));
  if (run < n) std::memcpy(items + run, slots(), (n - run) * sizeof(T));
}

template <class T>
bool SpscRing<T>::try_push(const T& item) noexcept {
  // (P1) relaxed: the producer is the only writer of tail_pos.
  const std::uint64_t tail = detail::shared_word(tail_pos).load(std::memory_order_relaxed);
  if (tail - cached_head >= slot_count) {
    // (P2) Full by the cache: re-read head_pos. acquire, pairs with (C3): the
    // consumer finished reading a slot before it released it, so we may
    // overwrite it.
    cached_head = detail::shared_word(head_pos).load(std::memory_order_acquire);
    if (tail - cached_head >= slot_count) return false;
  }
  std::memcpy(slot(tail), &item, sizeof(T));
  // (P3) Publish; the linearization point of the push. release, pairs with
  // (C2): a consumer that reads tail + 1 sees the item. A producer killed
  // before this store published nothing; after it, the whole item.
  detail::shared_word(tail_pos).store(tail + 1, std::memory_order_release);
  return true;
}

template <class T>
std::size_t SpscRing<T>::try_push_n(const T* items, std::size_t n) noexcept {
  // (P1) as in try_push.
  const std::uint64_t tail = detail::shared_word(tail_pos).load(std::memory_order_relaxed);
  // A used count beyond capacity (a peer's corruption of head_pos) reads as
  // full, so we never write more than capacity slots.
  const auto room_after = [this, tail]() noexcept -> std::uint64_t {
    const std::uint64_t used = tail - cached_head;
    return used >= slot_count ? 0 : slot_count - used;
  };
  std::uint64_t room = room_after();
  if (room < n) {
    // (P2) as in try_push: the cache is short of n, re-read.
    cached_head = detail::shared_word(head_pos).load(std::memory_order_acquire);
    room = room_after();
  }
  const std::size_t k = room < n ? static_cast<std::size_t>(room) : n;
  if (k == 0) return 0;
  copy_in(tail, items, k);
  // (P3) One publish for the batch, as in try_push: all k or none.
  detail::shared_word(tail_pos).store(tail + k, std::memory_order_release);
  return k;
}

template <class T>
bool SpscRing<T>::try_pop(T& out) noexcept {
  // (C1) relaxed: the consumer is the only writer of head_pos.
  const std::uint64_t head = detail::shared_word(head_pos).load(std::memory_order_relaxed);
  if (head == cached_tail) {
    // (C2) Empty by the cache: re-read tail_pos. acquire, pairs with (P3):
    // we see the items published up to it.
    cached_tail = detail::shared_word(tail_pos).load(std::memory_order_acquire);
    if (head == cached_tail) return false;
  }
  std::memcpy(&out, slot(head), sizeof(T));
  // (C3) Consume; the linearization point of the pop. release, pairs with
  // (P2): the producer overwrites the slot only after our read above. A
  // consumer killed before this store leaves the item in the ring.
  detail::shared_word(head_pos).store(head + 1, std::memory_order_release);
  return true;
}

template <class T>
std::size_t SpscRing<T>::try_pop_n(T* out, std::size_t max) noexcept {
  // (C1) as in try_pop.
  const std::uint64_t head = detail::shared_word(head_pos).load(std::memory_order_relaxed);
  std::uint64_t avail = cached_tail - head;
  if (avail < max) {
    // (C2) as in try_pop: the cache is short of max, re-read.
    cached_tail = detail::shared_word(tail_pos).load(std::memory_order_acquire);
    avail = cached_tail - head;
  }
  // A tail more than capacity ahead is a peer's corruption; masking keeps us
  // inside the ring whatever it wrote.
  if (avail > slot_count) avail = slot_count;
  const std::size_t k = avail < max ? static_cast<std::size_t>(avail) : max;
  if (k == 0) return 0;
  copy_out(head, out, k);
  // (C3) One release of the k slots, as in try_pop.
  detail::shared_word(head_pos).store(head + k, std::memory_order_release);
  return k;
}

template <class T>
bool SpscRing<T>::peek(T& out) noexcept {
  // (C1), (C2) as in try_pop; nothing is released.
  const std::uint64_t head = detail::shared_word(head_pos).load(std::memory_order_relaxed);
  if (head == cached_tail) {
    cached_tail = detail::shared_word(tail_pos).load(std::memory_order_acquire);
    if (head == cached_tail) return false;
  }
  std::memcpy(&out, slot(head), sizeof(T));
  return true;
}

template <class T>
void SpscRing<T>::consume_peeked() noexcept {
  const std::uint64_t head = detail::shared_word(head_pos).load(std::memory_order_relaxed);  // (C1)
  // (C3) as in try_pop: release, the producer reuses the slot only after
  // our read of it in peek().
  detail::shared_word(head_pos).store(head + 1, std::memory_order_release);
}

template <class T>
std::uint64_t SpscRing<T>::head() const noexcept {
  // acquire, pairs with (C3): a reader that sees position p consumed also
  // sees everything the consumer did before consuming it.
  return detail::shared_word(head_pos).load(std::memory_order_acquire);
}

template <class T>
std::uint64_t SpscRing<T>::tail() const noexcept {
  // acquire, pairs with (P3): a reader that sees position p published also
  // sees the item's bytes.
  return detail::shared_word(tail_pos).load(std::memory_order_acquire);
}

template <class T>
std::size_t SpscRing<T>::size_approx() const noexcept {
  // head first: tail only grows, so tail - head >= 0 but for a racing
  // corruption; clamp to [0, capacity].
  const std::uint64_t h = head();
  const std::uint64_t t = tail();
  if (t <= h) return 0;
  return t - h > slot_count ? slot_count : static_cast<std::size_t>(t - h);
}

}  // namespace palm
