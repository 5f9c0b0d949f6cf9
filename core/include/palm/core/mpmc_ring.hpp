#pragma once
// MpmcRing<T>: a bounded multi-producer multi-consumer ring for the threads of
// ONE process (the router between the parts of a server). Never shared across
// processes: a producer that dies between claiming a slot and publishing it
// would block every consumer behind it for ever (DESIGN.md, "The crash model").
//
// Algorithm (Dmitry Vyukov's bounded MPMC queue, per-slot sequence numbers):
//   tail_  the next position to claim for a push (producers CAS it up)
//   head_  the next position to claim for a pop  (consumers CAS it up)
//   Positions are 64-bit and never wrap (2^64 pushes is centuries);
//   position p lives in cell p & mask_. Each cell's seq says whose turn it is:
//     seq == p             empty, awaiting the push of position p
//     seq == p + 1         full, holding position p, awaiting its pop
//     seq == p + capacity  emptied, awaiting the push of position p + capacity
// A push claims position p = tail_ when cell(p).seq == p (CAS tail_ p -> p+1),
// writes the value, then publishes seq = p + 1. A pop claims p = head_ when
// cell(p).seq == p + 1 (CAS head_ p -> p+1), reads, then frees the cell for
// the next lap: seq = p + capacity. Invariants: head_ <= tail_ <= head_ +
// capacity (as counts of claims); a cell is written only by the one producer
// that claimed its position and read only by the one consumer that claimed it.
// ABA: none, positions are never reused (a CAS on tail_ from p succeeds only
// if no other push claimed p in between).
// Progress: claiming is lock-free (a failed CAS means another thread
// claimed); but a producer preempted between its claim and its publish makes
// the consumers of that one position see the ring as empty until it runs
// again (and a slow consumer likewise makes producers see it full): try_*
// may report empty/full transiently while other cells hold items/room.
//
// Blocking forms sleep on two Doorbells owned by the ring: not_empty_
// (consumers wait, every successful push rings it if someone waits) and
// not_full_ (producers wait, every successful pop rings it if someone waits).
// A ring costs a fence and a load while nobody sleeps (ring_if_waiting).
//
// The shared state uses indices, not pointers; the cell array is a heap
// buffer the ring owns (its address is read-only after construction).

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>

#include "palm/core/doorbell.hpp"
#include "palm/core/layout.hpp"

// Test-only hook called inside the claim windows of the CAS loops; a test
// defines it (before including this header) to yield and widen race windows.
#ifndef PALM_MPMC_RING_TEST_HOOK
#define PALM_MPMC_RING_TEST_HOOK() static_cast<void>(0)
#endif

namespace palm {

template <class T>
class MpmcRing {
  static_assert(std::is_trivially_copyable_v<T>, "MpmcRing moves items by memcpy");
  static_assert(alignof(T) <= kFalseSharingRange);

 public:
  // Largest capacity: positions and sizes stay far from overflow.
  static constexpr std::size_t kMaxCapacity = std::size_t{1} << 31;

  // True for a power of two in [2, kMaxCapacity].
  static constexpr bool valid_capacity(std::size_t capacity) noexcept {
    return capacity >= 2 && capacity <= kMaxCapacity && (capacity & (capacity - 1)) == 0;
  }

  // Allocates `capacity` cells. Throws std::invalid_argument (naming the
  // value and the rule) if !valid_capacity(capacity): a bad configuration
  // caught at the API edge; std::bad_alloc if memory runs out.
  explicit MpmcRing(std::size_t capacity);
  ~MpmcRing();
  // Not copyable or movable: waiting threads hold the doorbells' addresses
  // and the ring's cells are shared by every thread using it.
  MpmcRing(const MpmcRing&) = delete;
  MpmcRing& operator=(const MpmcRing&) = delete;

  // All operations below are thread-safe for any number of producers and
  // consumers. try_* never block and are lock-free in the sense above.

  // Pushes a copy of `item`; false if the ring is (transiently) full.
  bool try_push(const T& item) noexcept;
  // Pushes items[0..k) for the largest k <= n that fits now, claimed with one
  // CAS, published in order, one wake-up. Returns k (0 if full).
  std::size_t try_push_n(const T* items, std::size_t n) noexcept;
  // Pops the oldest item into `out`; false if (transiently) empty.
  bool try_pop(T& out) noexcept;
  // Pops up to `max` of the oldest items into out[0..k), claimed with one
  // CAS, in order. Returns k (0 if empty).
  std::size_t try_pop_n(T* out, std::size_t max) noexcept;
  // try_push and try_pop with the item made and read in its cell: write(T&)
  // fills a default-initialized T there, read(const T&) reads it before the
  // cell is freed. For a large item (the router's, ~250 bytes), nothing is
  // built aside and copied in or out. Both must be quick, never block nor
  // throw: the cell is claimed, and its turn held, while they run.
  template <class Write>
  bool try_push_in_place(Write&& write) noexcept;
  template <class Read>
  bool try_pop_in_place(Read&& read) noexcept;

  // Deferred wake-ups, for a thread that moves items one by one but wants one
  // wake-up per batch (the ZeroMQ bridge: it pops until ZeroMQ refuses an
  // item, so it cannot claim a batch up front without holding more than one
  // item back; it pushes what it parsed as it parses it). Each *_unsignaled
  // call is try_push/try_pop without ringing; the caller must then call
  // signal_pushed(k) / signal_popped(k) for the k items it moved, before it
  // blocks or sleeps itself (a waiter may sleep until then). Rings once,
  // waking up to k waiters. Correct because the ring is a ring_if_waiting
  // after the moves were published: see Doorbell (N1).
  bool try_push_unsignaled(const T& item) noexcept { return try_push_no_wake(item); }
  bool try_pop_unsignaled(T& out) noexcept { return try_pop_no_wake(out); }
  void signal_pushed(std::size_t k) noexcept {
    if (k != 0) not_empty_.ring_if_waiting(static_cast<std::uint32_t>(k));
  }
  void signal_popped(std::size_t k) noexcept {
    if (k != 0) not_full_.ring_if_waiting(static_cast<std::uint32_t>(k));
  }

  // Blocking forms: spin a few µs, then sleep until the item moved (kReady),
  // `timeout` passed (kTimeout) or shutdown() (kShutdown). After shutdown
  // they never sleep: they still complete if they can at once.
  WaitResult push_for(const T& item, std::chrono::nanoseconds timeout) noexcept;
  WaitResult pop_for(T& out, std::chrono::nanoseconds timeout) noexcept;
  // As above, ending early with kTimeout once `cut()` returns true (an
  // Interrupt taken): looked at whenever the ring is, so whoever makes it
  // true then calls wake_waiters(). `spin`: the budget before sleeping (0
  // where the other side is slow to come: Endpoint::wait_spin).
  template <class Cut>
  WaitResult push_for(const T& item, std::chrono::nanoseconds timeout, Cut&& cut,
                      std::chrono::nanoseconds spin = Doorbell::default_spin()) noexcept;
  template <class Cut>
  WaitResult pop_for(T& out, std::chrono::nanoseconds timeout, Cut&& cut,
                     std::chrono::nanoseconds spin = Doorbell::default_spin()) noexcept;
  // Wakes every blocked push_for/pop_for to look again (not sticky).
  void wake_waiters() noexcept {
    not_empty_.ring(Doorbell::kWakeAll);
    not_full_.ring(Doorbell::kWakeAll);
  }

  // Wakes every blocked push_for/pop_for (they return kShutdown unless they
  // can complete at once); sticky. try_* keep working: consumers can drain.
  void shutdown() noexcept;
  bool is_shutdown() const noexcept { return not_empty_.is_shutdown(); }

  // Items in the ring, racy: stale on return, in [0, capacity()].
  std::size_t size_approx() const noexcept;
  std::size_t capacity() const noexcept { return capacity_; }

 private:
  struct Cell {
    std::atomic<std::uint64_t> seq;  // turn, see the header comment
    alignas(T) unsigned char value[sizeof(T)];  // written by the claiming producer
  };
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

  bool try_push_no_wake(const T& item) noexcept;
  std::size_t try_push_n_no_wake(const T* items, std::size_t n) noexcept;
  bool try_pop_no_wake(T& out) noexcept;
  // The claim and publication of one push or pop; `fill(bytes)` writes the
  // claimed cell, `drain(bytes)` reads it.
  template <class Fill>
  bool push_one_no_wake(Fill&& fill) noexcept;
  template <class Drain>
  bool pop_one_no_wake(Drain&& drain) noexcept;
  std::size_t try_pop_n_no_wake(T* out, std::size_t max) noexcept;

  // Read-only after construction (shared by all, never written again).
  alignas(kFalseSharingRange) Cell* cells_;
  std::uint64_t mask_;
  std::size_t capacity_;
  // Written by producers (CAS), read by consumers in size_approx only.
  alignas(kFalseSharingRange) std::atomic<std::uint64_t> tail_{0};
  // Written by consumers (CAS), read by producers in size_approx only.
  alignas(kFalseSharingRange) std::atomic<std::uint64_t> head_{0};
  // Consumers sleep here; producers ring.
  Doorbell not_empty_;
  // Producers sleep here; consumers ring.
  Doorbell not_full_;
};

}  // namespace palm

#include "palm/core/detail/mpmc_ring_impl.hpp"
