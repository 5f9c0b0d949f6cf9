#pragma once
// Being told when a process dies instead of looking again and again.
//
// A thread that waits for a peer in shared memory cannot be woken by a peer
// that was SIGKILLed: nobody rings its doorbell. It used to wake every
// 250 ms to look at the peer's pid, and so did every such wait of every
// process: on this VM each wake-up costs ~150 µs of CPU (the context switch
// and the timer, most of it in the hypervisor), so the periodic looks were
// nearly all of an idle farm's CPU (8 workers: ~100 wake-ups a second).
//
// DeathWatch keeps one thread per process, asleep in poll() on a pidfd per
// watched process (a pidfd polls readable once its process exited, zombie
// included), and runs the callbacks of the processes that exit: a waiter's
// callback rings the doorbell it sleeps on, and the waiter sleeps until its
// deadline. The thread starts on the first watch; it ends at exit. Where
// pidfd_open is refused (old kernels, seccomp) watch() returns an empty
// ticket and the caller keeps looking itself (ProcessWatch).

#include <cstdint>
#include <functional>

#include "palm/core/process.hpp"

namespace palm {

class DeathWatch {
 public:
  // One watch. Its destructor ends it: when the destructor returns, the
  // callback is not running and will not run. Move-only.
  class Ticket {
   public:
    Ticket() noexcept = default;
    Ticket(Ticket&& other) noexcept : id_(other.id_) { other.id_ = 0; }
    Ticket& operator=(Ticket&& other) noexcept;
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    ~Ticket() { reset(); }

    // True while it watches (or its callback ran): the caller need not look.
    explicit operator bool() const noexcept { return id_ != 0; }
    // Ends the watch now (as the destructor).
    void reset() noexcept;

   private:
    friend class DeathWatch;
    explicit Ticket(std::uint64_t id) noexcept : id_(id) {}
    std::uint64_t id_ = 0;
  };

  // Calls `on_death` once, from the watch's thread, when the process `id`
  // exits; at once, from this thread, if it is not alive now. The callback
  // runs under the watch's lock: it must be short and must not watch or end
  // a watch (ringing a doorbell, storing a flag). Returns an empty ticket
  // (and never calls `on_death`) where this process cannot open pidfds.
  // Thread-safe. After fork() the child starts with no watches.
  static Ticket watch(const ProcessId& id, std::function<void()> on_death);

  // Watches in force (tests).
  static std::size_t watching() noexcept;
};

}  // namespace palm
