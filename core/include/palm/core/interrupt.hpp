#pragma once
// A request to end a wait early, pending until the wait it ends takes it
// (Endpoint::interrupt): a thread told to stop is woken once instead of
// waking every few hundred milliseconds to look at its stop flag. Pending,
// so a raise that comes between the waiter's last look at its flag and the
// start of its wait is not lost: that wait ends at once.

#include <atomic>

namespace palm {

class Interrupt {
 public:
  // Any thread. Raise, then ring the doorbell the waiter sleeps on: release
  // pairs with take()'s acquire, so what the raiser wrote before (a stop
  // flag) is seen by the waiter that takes it.
  void raise() noexcept { flag_.store(true, std::memory_order_release); }
  // True once per raise. The relaxed load first keeps the common case (no
  // interrupt) free of a read-modify-write in a spinning wait's predicate.
  bool take() noexcept {
    return flag_.load(std::memory_order_relaxed) && flag_.exchange(false, std::memory_order_acquire);
  }

 private:
  std::atomic<bool> flag_{false};
};

}  // namespace palm
