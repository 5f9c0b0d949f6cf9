#pragma once
// Doorbell: the one futex word a consuming thread sleeps on, rung by the
// producers of any of its channels (threads of this process or of others).
//
// Layout (placeable in shared memory: 128 bytes, standard layout, fixed-width
// fields, no pointers; 128 zero bytes are a valid open doorbell):
//   seq_       futex word; bumped by every ring() (any thread, any process)
//   sleepers_  waiters announced as about to sleep (written by waiters)
//   shutdown_  0 open, 1 shut (written by shutdown())
// The fields are plain integers accessed only through std::atomic_ref, so the
// state stays trivially copyable: the mapping's bytes are all of it.
//
// The protocol (no lost wake-up). Waiter:
//   (W1) s = seq                       load
//        ready()? -> kReady
//   (W2) ++sleepers                    announce (seq_cst RMW)
//   (F)  seq_cst fence
//   (W3) seq == s?  ready()? again     recheck
//   (W4) FUTEX_WAIT(&seq, s)           the kernel rechecks seq == s atomically
//   (W5) --sleepers
// Ringer, after publishing its data:
//   (R1) ++seq                         store  (seq_cst RMW)
//   (R2) sleepers != 0 ? FUTEX_WAKE    load   (seq_cst)
// (W2)->(W3) and (R1)->(R2) are a store-then-load pair on two words (Dekker):
// in the single total order of seq_cst operations either (W3) sees (R1) (the
// waiter does not sleep, or FUTEX_WAIT returns EAGAIN), or (R2) sees (W2)
// (the ringer wakes it, and the kernel's own check at (W4) orders the rest).
// ring_if_waiting() drops (R1) when nobody sleeps; it is correct because the
// waiter rechecks ready() after (F): see (N1) there.
//
// Crash model: a waiter process killed while announced leaves sleepers_ too
// high; the only cost is a FUTEX_WAKE syscall on each ring that finds nobody.
// A ringer killed between (R1) and (R2) leaves a waiter asleep until its
// timeout or the next ring, no worse than a ringer killed before publishing.
// Every wait has a deadline, so no thread waits for a dead process for ever.

#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "palm/core/layout.hpp"

// TSan does not model std::atomic_thread_fence (and g++ rejects it under
// -fsanitize=thread): there, ring_if_waiting pairs with the waiter through an
// RMW on the sleepers word instead, see (N1').
#if defined(__SANITIZE_THREAD__)
#define PALM_DOORBELL_FENCELESS 1
#else
#define PALM_DOORBELL_FENCELESS 0
#endif

namespace palm {

// The outcome of a bounded wait. Not an error: a timeout is ordinary.
enum class WaitResult : std::uint8_t {
  kReady,     // the predicate held (for ring push/pop forms: the item moved)
  kTimeout,   // the deadline passed first
  kShutdown,  // the doorbell was shut down (and the predicate did not hold)
};

const char* to_string(WaitResult result) noexcept;

namespace detail {

enum class FutexWait : std::uint8_t {
  kWoken,        // FUTEX_WAKE, or a spurious return: recheck
  kChanged,      // EAGAIN: the word was no longer `expected`
  kInterrupted,  // EINTR: a signal handler ran
  kTimedOut,     // ETIMEDOUT: `deadline` passed
};

// FUTEX_WAIT_BITSET (shared, not private: works across processes) on `word`
// while it equals `expected`, until the absolute CLOCK_MONOTONIC `deadline`
// (steady_clock's clock). time_point::max() waits without a deadline.
FutexWait futex_wait_until(std::uint32_t* word, std::uint32_t expected,
                           std::chrono::steady_clock::time_point deadline) noexcept;
// FUTEX_WAKE (shared) of at most `count` waiters on `word`.
void futex_wake(std::uint32_t* word, std::uint32_t count) noexcept;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Whether this thread's last slow wait timed out: an idle thread. Its next
// wait skips the spin, so an idle farm costs one futex wait per timeout per
// thread and no spinning; a thread woken by a ring spins again.
inline thread_local bool idle_waiter = false;

}  // namespace detail

class alignas(kFalseSharingRange) Doorbell {
 public:
  using Clock = std::chrono::steady_clock;
  // The spin budget before a waiter sleeps. A wake-up costs ~27 µs on this
  // machine (DESIGN.md "Waiting, on 2 vCPUs") and the spin yields the CPU
  // at every round, so a waiter that spins about twice that long catches the
  // next hand-off of a busy farm without costing its peers their core:
  // `palm farm` (2 workers, 64 B) moved 170-180 k msg/s with 5 µs, 480-540 k
  // with 50 µs, side by side (BENCHMARKS.md). An idle thread still sleeps.
  static constexpr std::chrono::nanoseconds kDefaultSpin = std::chrono::microseconds(50);
  // The spin of waits that name none: kDefaultSpin, or PALM_SPIN_US (0 to
  // 1000 µs) from the environment, read once per process, for tuning a
  // machine without rebuilding.
  static std::chrono::nanoseconds default_spin() noexcept;
  // A spin also lasts at least this many rounds (the first few pause, the
  // rest yield), whatever the clock says. When the core is shared, each
  // sched_yield may hand it to a peer for tens of µs, so a budget in time
  // alone ends after a handful of rounds and the waiter sleeps; the ring
  // that wakes it then costs the ringer a FUTEX_WAKE and both a context
  // switch, each a microsecond-scale syscall here. Counted in rounds, the
  // waiter stays in the rotation while its peers take their turns and finds
  // their batch on return. `palm farm` (64 B, 3 runs side by side,
  // PALM_SPIN_ROUNDS=0 against 16): 2 workers 125 k -> 317 k msg/s median,
  // 8 workers 167 k -> 289 k (BENCHMARKS.md). More rounds add little
  // throughput and cost latency: spinners compete with the thread that has
  // the work. Alone on a core a yield returns at once (~1.2 µs), so the
  // spin's CPU stays near the time budget.
  static constexpr unsigned kDefaultSpinRounds = 16;
  // kDefaultSpinRounds, or PALM_SPIN_ROUNDS (0 to 4096) from the
  // environment, read once per process.
  static unsigned default_spin_rounds() noexcept;
  // Wakes every waiter (shutdown()).
  static constexpr std::uint32_t kWakeAll = 0x7fffffff;

  // An open doorbell with no waiter (all zero).
  constexpr Doorbell() noexcept = default;
  // Copy and move are deleted: the futex key is the object's address; a copy
  // would be a bell that nobody rings.
  Doorbell(const Doorbell&) = delete;
  Doorbell& operator=(const Doorbell&) = delete;
  ~Doorbell() = default;

  // Formats an open doorbell at `mem` (kFalseSharingRange bytes, aligned to
  // kFalseSharingRange; asserted: a misplaced layout is palm's bug).
  static Doorbell* create_at(void* mem) noexcept;
  // The doorbell another process (or thread) formatted at `mem`. Zero-filled
  // memory is also a valid open doorbell.
  static Doorbell* attach_at(void* mem) noexcept;

  // --- ringer side: any thread of any process; lock-free; never blocks ----

  // Publish first, then ring: a waiter that wakes sees everything stored
  // before the call. Wakes at most `max_woken` sleeping waiters (one by
  // default: one doorbell per consuming thread); calls the kernel only if a
  // waiter announced that it sleeps.
  void ring(std::uint32_t max_woken = 1) noexcept;
  // Cheaper ring for a publisher that rings after every item: when no waiter
  // is announced it costs a fence and a load (no write to the shared word).
  // Correct only for waiters whose predicate reads the data published before
  // this call (as wait_*(ready) does): see (N1).
  void ring_if_waiting(std::uint32_t max_woken = 1) noexcept;
  // Sticky: every present and future wait returns kShutdown (unless its
  // predicate holds: kReady wins, so consumers can drain). Wakes all waiters.
  void shutdown() noexcept;
  // May be stale on return (another thread may shut down right after).
  bool is_shutdown() const noexcept;

  // --- waiter side ---------------------------------------------------------
  // Waits until `ready()` returns true (kReady), the deadline passes
  // (kTimeout) or the doorbell is shut down (kShutdown). `ready` is called
  // repeatedly, by this thread only; it may consume (e.g. try_pop), and once
  // it returns true the wait returns kReady at once. Spins for `spin` first
  // (yielding the CPU inside the spin), then sleeps on the futex. Blocks;
  // thread-safe (several threads may wait on one doorbell, but each ring()
  // wakes `max_woken` of them).
  template <class Pred>
  WaitResult wait_until(Pred&& ready, Clock::time_point deadline,
                        std::chrono::nanoseconds spin = default_spin()) noexcept(
      std::is_nothrow_invocable_v<Pred&>);
  template <class Pred>
  WaitResult wait_for(Pred&& ready, std::chrono::nanoseconds timeout,
                      std::chrono::nanoseconds spin = default_spin()) noexcept(
      std::is_nothrow_invocable_v<Pred&>);

  // Racy reads, for tests and stats: stale on return.
  std::uint32_t sequence_approx() const noexcept;
  std::uint32_t waiters_approx() const noexcept;

 private:
  // The spin and sleep phases, after a first ready() that returned false.
  template <class Pred>
  WaitResult wait_slow(Pred& ready, Clock::time_point deadline,
                       std::chrono::nanoseconds spin) noexcept(std::is_nothrow_invocable_v<Pred&>);
  static std::atomic_ref<std::uint32_t> ref(const std::uint32_t& word) noexcept {
    // The fields are never const objects; const_cast only serves const reads.
    return std::atomic_ref<std::uint32_t>(const_cast<std::uint32_t&>(word));
  }
  void wake(std::uint32_t max_woken) noexcept;  // FUTEX_WAKE, out of line

  std::uint32_t seq_ = 0;       // written by ringers (any process)
  std::uint32_t sleepers_ = 0;  // written by waiters (any process)
  std::uint32_t shutdown_ = 0;  // written by shutdown()
  std::uint8_t pad_[kFalseSharingRange - 3 * sizeof(std::uint32_t)] = {};

  friend struct DoorbellLayoutCheck;
};

struct DoorbellLayoutCheck {
  static_assert(sizeof(Doorbell) == kFalseSharingRange);
  static_assert(alignof(Doorbell) == kFalseSharingRange);
  static_assert(std::is_standard_layout_v<Doorbell>);
  static_assert(std::is_trivially_destructible_v<Doorbell>);
  static_assert(offsetof(Doorbell, seq_) == 0, "the futex word is first");
  static_assert(std::atomic_ref<std::uint32_t>::is_always_lock_free);
  static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
  static_assert(std::atomic_ref<std::uint32_t>::required_alignment <= alignof(std::uint32_t));
};

// ---------------------------------------------------------------------------
// Inline bodies (hot path).

inline void Doorbell::ring(std::uint32_t max_woken) noexcept {
  // (R1) Bump: the store of the store-then-load pair (R1)->(R2), against the
  // waiter's (W2)->(W3). seq_cst RMW: in the total order either (W3) reads
  // this bump (the waiter does not sleep; or FUTEX_WAIT, which compares the
  // word atomically, returns EAGAIN) or (R2) reads the waiter's announcement.
  // Its release half pairs with (W1)/(W3): a waiter that reads this value
  // also sees what the caller published before ring().
  ref(seq_).fetch_add(1, std::memory_order_seq_cst);
  // (R2) The load of the pair: seq_cst, see (R1).
  if (ref(sleepers_).load(std::memory_order_seq_cst) != 0) wake(max_woken);
}

inline void Doorbell::ring_if_waiting(std::uint32_t max_woken) noexcept {
#if PALM_DOORBELL_FENCELESS
  // (N1') One RMW instead of (N1)+(N2), for TSan, which does not model
  // fences (g++ refuses them under -fsanitize=thread). An RMW reads the
  // latest value of sleepers_: if it follows (W2) in sleepers_'s order it
  // reads the announcement and we ring; if it precedes (W2), then (W2) reads
  // from it (or from a later RMW of its release sequence), so our release
  // synchronizes with (W2)'s acquire and the waiter's ready() sees the
  // publication. Costs a write to the line, so it is not the default.
  if (ref(sleepers_).fetch_add(0, std::memory_order_seq_cst) != 0) ring(max_woken);
#else
  // (N1) Orders the caller's publication (stored before this call) before
  // the load of sleepers_ (N2): store-then-load against the waiter's
  // (W2)->(F)->ready(). If (F) precedes (N1) in the seq_cst order, the
  // waiter's ready() after (F) sees the publication and it does not sleep;
  // otherwise (N2) sees the announcement (W2) and we ring. When we ring,
  // (R1) follows (N2), which read (W2), which follows the waiter's (W1): so
  // (W1) read an older seq_ and FUTEX_WAIT(seq_, s) cannot miss the bump.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // (N2) relaxed: ordered by the fence (N1).
  if (ref(sleepers_).load(std::memory_order_relaxed) != 0) ring(max_woken);
#endif
}

inline bool Doorbell::is_shutdown() const noexcept {
  // (S2) acquire, pairs with (S1) in shutdown(): nothing is published with
  // the flag; acquire only keeps the check from moving above the caller's
  // preceding reads. A stale 0 is caught by the seq_ recheck (W3).
  return ref(shutdown_).load(std::memory_order_acquire) != 0;
}

inline std::uint32_t Doorbell::sequence_approx() const noexcept {
  // relaxed: a statistic, stale on return.
  return ref(seq_).load(std::memory_order_relaxed);
}

inline std::uint32_t Doorbell::waiters_approx() const noexcept {
  // relaxed: a statistic, stale on return.
  return ref(sleepers_).load(std::memory_order_relaxed);
}

template <class Pred>
WaitResult Doorbell::wait_for(Pred&& ready, std::chrono::nanoseconds timeout,
                              std::chrono::nanoseconds spin) noexcept(
    std::is_nothrow_invocable_v<Pred&>) {
  // The fast path reads no clock.
  if (ready()) return WaitResult::kReady;
  if (is_shutdown()) return WaitResult::kShutdown;
  const Clock::time_point now = Clock::now();
  // Saturate: a huge timeout means "no deadline", not an overflow.
  const Clock::time_point deadline =
      timeout >= Clock::time_point::max() - now ? Clock::time_point::max()
      : timeout.count() <= 0                    ? now
                                                : now + std::chrono::duration_cast<Clock::duration>(timeout);
  const WaitResult r = wait_slow(ready, deadline, detail::idle_waiter ? std::chrono::nanoseconds(0) : spin);
  detail::idle_waiter = r == WaitResult::kTimeout;
  return r;
}

template <class Pred>
WaitResult Doorbell::wait_until(Pred&& ready, Clock::time_point deadline,
                                std::chrono::nanoseconds spin) noexcept(
    std::is_nothrow_invocable_v<Pred&>) {
  if (ready()) return WaitResult::kReady;
  if (is_shutdown()) return WaitResult::kShutdown;
  const WaitResult r = wait_slow(ready, deadline, detail::idle_waiter ? std::chrono::nanoseconds(0) : spin);
  detail::idle_waiter = r == WaitResult::kTimeout;
  return r;
}

template <class Pred>
WaitResult Doorbell::wait_slow(Pred& ready, Clock::time_point deadline,
                               std::chrono::nanoseconds spin) noexcept(
    std::is_nothrow_invocable_v<Pred&>) {
  Clock::time_point now = Clock::now();

  // Phase 1: spin for the time budget and at least the round count (never
  // past the deadline). A few rounds of pause for a hand-off already in
  // flight (~45 ns between the cores), then sched_yield: with more runnable
  // threads than cores, the producer we wait for may need this CPU.
  if (spin.count() > 0 && now < deadline) {
    const Clock::time_point spin_end =
        deadline - now > spin ? now + std::chrono::duration_cast<Clock::duration>(spin)
                              : deadline;
    constexpr unsigned kPauseRounds = 8;
    const unsigned min_rounds = default_spin_rounds();
    for (unsigned round = 0; (now < spin_end || round < min_rounds) && now < deadline; ++round) {
      if (round < kPauseRounds) {
        detail::cpu_relax();
      } else {
        ::sched_yield();
      }
      if (ready()) return WaitResult::kReady;
      if (is_shutdown()) return WaitResult::kShutdown;
      now = Clock::now();
    }
  }

  // Phase 2: sleep. Each round either returns or ends with a FUTEX_WAIT that
  // returned (woken, word changed, signal) or a seq_ change seen at (W3).
  // Bounded: every round rereads the clock, and FUTEX_WAIT itself ends at the
  // deadline.
  struct Announcement {  // (W2)/(W5), undone even if ready() throws
    Doorbell& bell;
    explicit Announcement(Doorbell& b) noexcept : bell(b) {
      // (W2) Announce: the store of the pair (W2)->(W3), against (R1)->(R2).
      // seq_cst RMW (a counter: several threads may wait on one doorbell).
      ref(bell.sleepers_).fetch_add(1, std::memory_order_seq_cst);
#if !PALM_DOORBELL_FENCELESS
      // (F) Orders (W2) before the ready() recheck below, for
      // ring_if_waiting's (N1); the seq_ recheck (W3) is seq_cst already.
      // (With (N1'), (W2)'s acquire half does this job.)
      std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
    }
    ~Announcement() {
      // (W5) relaxed: a stale count only costs a ringer one needless
      // FUTEX_WAKE; nothing is published through it.
      ref(bell.sleepers_).fetch_sub(1, std::memory_order_relaxed);
    }
    Announcement(const Announcement&) = delete;
    Announcement& operator=(const Announcement&) = delete;
  };

  while (now < deadline) {
    // (W1) The value to sleep on. seq_cst (a plain load on x86): it must come
    // before (W2) in the total order, so that a bump that follows a ringer's
    // reading of (W2) is never the value we sleep on. Its acquire half pairs
    // with (R1): if it reads a bump, ready() sees what was published before.
    const std::uint32_t seen = ref(seq_).load(std::memory_order_seq_cst);
    if (ready()) return WaitResult::kReady;
    if (is_shutdown()) return WaitResult::kShutdown;
    {
      Announcement announced(*this);
      // (W3) The load of the pair: any ring since (W1) means "look again".
      if (ref(seq_).load(std::memory_order_seq_cst) != seen) {
        now = Clock::now();
        continue;
      }
      if (ready()) return WaitResult::kReady;
      if (is_shutdown()) return WaitResult::kShutdown;
      // (W4) The kernel compares seq_ with `seen` under its bucket lock, so a
      // bump after (W3) either makes this return EAGAIN or finds us queued.
      const detail::FutexWait slept = detail::futex_wait_until(&seq_, seen, deadline);
      if (slept == detail::FutexWait::kTimedOut) break;
      // kWoken, kChanged (EAGAIN) and kInterrupted (EINTR): recheck.
    }
    now = Clock::now();
  }
  // The deadline passed: one last look, so an item published just before it
  // (whose wake-up went to nobody) is not reported as a timeout.
  if (ready()) return WaitResult::kReady;
  if (is_shutdown()) return WaitResult::kShutdown;
  return WaitResult::kTimeout;
}

}  // namespace palm
