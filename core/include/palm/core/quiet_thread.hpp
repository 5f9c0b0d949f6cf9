#pragma once
// Internal threads (the ZeroMQ bridge, a shm host's monitor, the death
// watch) take no signal: a process that waits for SIGINT / SIGTERM with
// sigwait or a signalfd (the palm commands) must not have one delivered to
// a thread of ours, where its default action would end the process. A
// thread inherits its creator's mask, so it is created with every signal
// blocked, and the creator's mask is put back.

#include <pthread.h>
#include <signal.h>

#include <thread>
#include <utility>

namespace palm {

template <class F>
std::thread quiet_thread(F&& fn) {
  sigset_t all;
  sigset_t was;
  ::sigfillset(&all);
  (void)::pthread_sigmask(SIG_BLOCK, &all, &was);
  struct Restore {
    const sigset_t& mask;
    ~Restore() { (void)::pthread_sigmask(SIG_SETMASK, &mask, nullptr); }
  } restore{was};
  return std::thread(std::forward<F>(fn));  // may throw std::system_error: the mask is restored
}

}  // namespace palm
