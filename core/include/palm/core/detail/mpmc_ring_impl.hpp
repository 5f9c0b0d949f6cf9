#pragma once
// Bodies of MpmcRing<T> (palm/core/mpmc_ring.hpp). Labels: (P*) push side,
// (C*) pop side; the algorithm and its invariants are in the header.

#include <cstddef>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "palm/core/mpmc_ring.hpp"

namespace palm {

template <class T>
MpmcRing<T>::MpmcRing(std::size_t capacity)
    : cells_(nullptr), mask_(capacity - 1), capacity_(capacity) {
  static_assert(std::is_standard_layout_v<MpmcRing>);
  static_assert(offsetof(MpmcRing, tail_) - offsetof(MpmcRing, cells_) >= kFalseSharingRange);
  static_assert(offsetof(MpmcRing, head_) - offsetof(MpmcRing, tail_) >= kFalseSharingRange);
  static_assert(offsetof(MpmcRing, not_empty_) - offsetof(MpmcRing, head_) >= kFalseSharingRange);
  if (!valid_capacity(capacity)) {
    throw std::invalid_argument("MpmcRing capacity " + std::to_string(capacity) +
                                " is not a power of two in [2, 2^31]; round it up to one");
  }
  cells_ = static_cast<Cell*>(
      ::operator new(sizeof(Cell) * capacity, std::align_val_t{kFalseSharingRange}));
  for (std::size_t i = 0; i < capacity; ++i) {
    Cell* cell = ::new (static_cast<void*>(cells_ + i)) Cell{};
    // relaxed: construction; the ring reaches other threads through whatever
    // hands them its address (thread start, a mutex, a release store).
    cell->seq.store(i, std::memory_order_relaxed);
  }
}

template <class T>
MpmcRing<T>::~MpmcRing() {
  // Cells are trivially destructible (an atomic integer and raw bytes).
  ::operator delete(cells_, std::align_val_t{kFalseSharingRange});
}

template <class T>
bool MpmcRing<T>::try_push_no_wake(const T& item) noexcept {
  return push_one_no_wake([&item](unsigned char* bytes) noexcept { std::memcpy(bytes, &item, sizeof(T)); });
}

template <class T>
template <class Fill>
bool MpmcRing<T>::push_one_no_wake(Fill&& fill) noexcept {
  // (P1) relaxed: a guess of the position to claim; the CAS (P3) checks it.
  std::uint64_t pos = tail_.load(std::memory_order_relaxed);
  Cell* cell = nullptr;
  for (;;) {
    cell = &cells_[pos & mask_];
    // (P2) acquire, pairs with (C4): if the cell is free for lap `pos`, the
    // consumer that emptied it has finished reading before we overwrite it.
    const std::uint64_t seq = cell->seq.load(std::memory_order_acquire);
    const auto dif = static_cast<std::int64_t>(seq - pos);
    if (dif == 0) {
      PALM_MPMC_RING_TEST_HOOK();
      // (P3) Claim; the linearization point of a successful push. relaxed:
      // the claim publishes nothing (the value travels with (P4)) and the
      // cell's freedom was established by (P2). Case failed CAS: another
      // producer claimed `pos`; `pos` is reloaded with the current tail_.
      if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed,
                                      std::memory_order_relaxed)) {
        break;
      }
    } else if (dif < 0) {
      // Case full: the cell still holds position pos - capacity (or its
      // consumer is mid-read). Linearization point: the load (P2).
      return false;
    } else {
      // Case behind: `pos` was claimed already (our tail_ read was stale).
      pos = tail_.load(std::memory_order_relaxed);
    }
  }
  fill(cell->value);
  PALM_MPMC_RING_TEST_HOOK();
  // (P4) Publish. Pairs with (C2): a consumer that reads seq == pos + 1 also
  // sees the value stored above.
  cell->seq.store(pos + 1, std::memory_order_release);
  return true;
}

template <class T>
std::size_t MpmcRing<T>::try_push_n_no_wake(const T* items, std::size_t n) noexcept {
  if (n == 0) return 0;
  if (n > capacity_) n = capacity_;
  // (P1) as in try_push.
  std::uint64_t pos = tail_.load(std::memory_order_relaxed);
  std::size_t k = 0;
  for (;;) {
    // Count the free cells from `pos` on. (P2) for each: acquire, pairs with
    // the (C4) that freed it. A cell seen free for its lap stays free until
    // claimed: only the producer that claims its position writes it, and the
    // CAS below fails if anyone claimed from `pos` on.
    k = 0;
    std::int64_t dif = 0;
    while (k < n) {
      const std::uint64_t seq = cells_[(pos + k) & mask_].seq.load(std::memory_order_acquire);
      dif = static_cast<std::int64_t>(seq - (pos + k));
      if (dif != 0) break;
      ++k;
    }
    if (k == 0) {
      if (dif < 0) return 0;  // Case full, as in try_push.
      pos = tail_.load(std::memory_order_relaxed);  // Case behind.
      continue;
    }
    PALM_MPMC_RING_TEST_HOOK();
    // (P3) Claim [pos, pos + k) with one CAS: relaxed, as in try_push. A
    // cell after the k-th that was not free (dif > 0: claimed by others) also
    // makes this CAS fail, since then tail_ has moved past `pos`.
    if (tail_.compare_exchange_weak(pos, pos + k, std::memory_order_relaxed,
                                    std::memory_order_relaxed)) {
      break;
    }
  }
  for (std::size_t j = 0; j < k; ++j) {
    Cell& cell = cells_[(pos + j) & mask_];
    std::memcpy(cell.value, &items[j], sizeof(T));
    // (P4) Publish each position in order, as in try_push.
    cell.seq.store(pos + j + 1, std::memory_order_release);
  }
  return k;
}

template <class T>
bool MpmcRing<T>::try_pop_no_wake(T& out) noexcept {
  return pop_one_no_wake([&out](const unsigned char* bytes) noexcept { std::memcpy(&out, bytes, sizeof(T)); });
}

template <class T>
template <class Drain>
bool MpmcRing<T>::pop_one_no_wake(Drain&& drain) noexcept {
  // (C1) relaxed: a guess of the position to claim; the CAS (C3) checks it.
  std::uint64_t pos = head_.load(std::memory_order_relaxed);
  Cell* cell = nullptr;
  for (;;) {
    cell = &cells_[pos & mask_];
    // (C2) acquire, pairs with (P4): seeing seq == pos + 1 we see the value.
    const std::uint64_t seq = cell->seq.load(std::memory_order_acquire);
    const auto dif = static_cast<std::int64_t>(seq - (pos + 1));
    if (dif == 0) {
      PALM_MPMC_RING_TEST_HOOK();
      // (C3) Claim; the linearization point of a successful pop. relaxed:
      // the value's visibility came with (C2). Case failed CAS: another
      // consumer claimed `pos`; `pos` is reloaded.
      if (head_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed,
                                      std::memory_order_relaxed)) {
        break;
      }
    } else if (dif < 0) {
      // Case empty: position `pos` is not published yet (or its producer is
      // mid-write). Linearization point: the load (C2).
      return false;
    } else {
      // Case behind: `pos` was popped already.
      pos = head_.load(std::memory_order_relaxed);
    }
  }
  drain(static_cast<const unsigned char*>(cell->value));
  PALM_MPMC_RING_TEST_HOOK();
  // (C4) Free the cell for the next lap. release, pairs with (P2): the
  // producer of pos + capacity writes only after our read above.
  cell->seq.store(pos + mask_ + 1, std::memory_order_release);
  return true;
}

template <class T>
std::size_t MpmcRing<T>::try_pop_n_no_wake(T* out, std::size_t max) noexcept {
  if (max == 0) return 0;
  if (max > capacity_) max = capacity_;
  // (C1) as in try_pop.
  std::uint64_t pos = head_.load(std::memory_order_relaxed);
  std::size_t k = 0;
  for (;;) {
    // Count the published cells from `pos` on; (C2) for each. A cell seen
    // full for its lap stays full until claimed: only the consumer that
    // claims its position empties it, and the CAS fails if anyone did.
    k = 0;
    std::int64_t dif = 0;
    while (k < max) {
      const std::uint64_t seq = cells_[(pos + k) & mask_].seq.load(std::memory_order_acquire);
      dif = static_cast<std::int64_t>(seq - (pos + k + 1));
      if (dif != 0) break;
      ++k;
    }
    if (k == 0) {
      if (dif < 0) return 0;  // Case empty, as in try_pop.
      pos = head_.load(std::memory_order_relaxed);  // Case behind.
      continue;
    }
    PALM_MPMC_RING_TEST_HOOK();
    // (C3) Claim [pos, pos + k) with one CAS: relaxed, as in try_pop.
    if (head_.compare_exchange_weak(pos, pos + k, std::memory_order_relaxed,
                                    std::memory_order_relaxed)) {
      break;
    }
  }
  for (std::size_t j = 0; j < k; ++j) {
    Cell& cell = cells_[(pos + j) & mask_];
    std::memcpy(&out[j], cell.value, sizeof(T));
    // (C4) Free each cell for its next lap, as in try_pop.
    cell.seq.store(pos + j + mask_ + 1, std::memory_order_release);
  }
  return k;
}

template <class T>
bool MpmcRing<T>::try_push(const T& item) noexcept {
  if (!try_push_no_wake(item)) return false;
  not_empty_.ring_if_waiting(1);
  return true;
}

template <class T>
std::size_t MpmcRing<T>::try_push_n(const T* items, std::size_t n) noexcept {
  const std::size_t k = try_push_n_no_wake(items, n);
  // One ring for the batch; it may wake up to k sleeping consumers (one per
  // item), so a batch never leaves items behind a sleeping consumer.
  if (k != 0) not_empty_.ring_if_waiting(static_cast<std::uint32_t>(k));
  return k;
}

template <class T>
template <class Write>
bool MpmcRing<T>::try_push_in_place(Write&& write) noexcept {
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>);
  // The cell's bytes become a T (default-initialized: nothing written for
  // members without initializers); the consumer reads that object.
  if (!push_one_no_wake([&write](unsigned char* bytes) noexcept { write(*::new (static_cast<void*>(bytes)) T); })) {
    return false;
  }
  not_empty_.ring_if_waiting(1);
  return true;
}

template <class T>
template <class Read>
bool MpmcRing<T>::try_pop_in_place(Read&& read) noexcept {
  if (!pop_one_no_wake([&read](const unsigned char* bytes) noexcept {
        read(*std::launder(reinterpret_cast<const T*>(bytes)));
      })) {
    return false;
  }
  not_full_.ring_if_waiting(1);
  return true;
}

template <class T>
bool MpmcRing<T>::try_pop(T& out) noexcept {
  if (!try_pop_no_wake(out)) return false;
  not_full_.ring_if_waiting(1);
  return true;
}

template <class T>
std::size_t MpmcRing<T>::try_pop_n(T* out, std::size_t max) noexcept {
  const std::size_t k = try_pop_n_no_wake(out, max);
  if (k != 0) not_full_.ring_if_waiting(static_cast<std::uint32_t>(k));
  return k;
}

template <class T>
WaitResult MpmcRing<T>::push_for(const T& item, std::chrono::nanoseconds timeout) noexcept {
  return push_for(item, timeout, []() noexcept { return false; });
}

template <class T>
WaitResult MpmcRing<T>::pop_for(T& out, std::chrono::nanoseconds timeout) noexcept {
  return pop_for(out, timeout, []() noexcept { return false; });
}

template <class T>
template <class Cut>
WaitResult MpmcRing<T>::push_for(const T& item, std::chrono::nanoseconds timeout, Cut&& cut,
                                 std::chrono::nanoseconds spin) noexcept {
  // The predicate is the push itself: kReady and `pushed` mean it happened.
  bool pushed = false;
  const WaitResult result = not_full_.wait_for(
      [&]() noexcept {
        pushed = try_push_no_wake(item);
        return pushed || cut();
      },
      timeout, spin);
  if (result != WaitResult::kReady) return result;
  if (!pushed) return WaitResult::kTimeout;  // cut short
  not_empty_.ring_if_waiting(1);
  return result;
}

template <class T>
template <class Cut>
WaitResult MpmcRing<T>::pop_for(T& out, std::chrono::nanoseconds timeout, Cut&& cut,
                                std::chrono::nanoseconds spin) noexcept {
  bool popped = false;
  const WaitResult result = not_empty_.wait_for(
      [&]() noexcept {
        popped = try_pop_no_wake(out);
        return popped || cut();
      },
      timeout, spin);
  if (result != WaitResult::kReady) return result;
  if (!popped) return WaitResult::kTimeout;  // cut short
  not_full_.ring_if_waiting(1);
  return result;
}

template <class T>
void MpmcRing<T>::shutdown() noexcept {
  not_empty_.shutdown();
  not_full_.shutdown();
}

template <class T>
std::size_t MpmcRing<T>::size_approx() const noexcept {
  // relaxed: a racy size by contract. head_ first: tail_ only grows, so the
  // difference is rarely negative; clamp what the race leaves.
  const std::uint64_t head = head_.load(std::memory_order_relaxed);
  const std::uint64_t tail = tail_.load(std::memory_order_relaxed);
  if (tail <= head) return 0;
  const std::uint64_t size = tail - head;
  return size > capacity_ ? capacity_ : static_cast<std::size_t>(size);
}

}  // namespace palm
