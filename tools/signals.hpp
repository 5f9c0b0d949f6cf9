#pragma once
// SIGINT and SIGTERM for the `palm` subcommands, without signal handlers:
// block_stop_signals() blocks both in the calling thread before any other
// thread starts (every thread inherits the mask, so the kernel delivers them
// to nobody), and a StopSignals thread takes them from a signalfd (asleep in
// poll until one comes or stop() is called) and runs
// the command's reaction (stop a server or a worker, set a flag) on itself,
// an ordinary thread: no code runs in a signal handler.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace palm::tools {

// Blocks SIGINT and SIGTERM in the calling thread. Call it first in a
// command, before anything starts a thread (a Context does). False if the
// mask could not be set.
[[nodiscard]] bool block_stop_signals() noexcept;

class StopSignals {
 public:
  // Starts the waiting thread. On the first SIGINT or SIGTERM it calls
  // `on_signal(sig)` on that thread, once, then ends. block_stop_signals()
  // must have been called.
  explicit StopSignals(std::function<void(int)> on_signal);
  ~StopSignals();  // stop()
  StopSignals(const StopSignals&) = delete;  // owns a thread
  StopSignals& operator=(const StopSignals&) = delete;

  // Ends the waiting (at once: an eventfd wakes the thread) and joins the
  // thread. Idempotent; not from
  // on_signal itself.
  void stop() noexcept;
  // The signal taken (SIGINT or SIGTERM), 0 if none. Final after stop().
  int caught() const noexcept { return caught_.load(std::memory_order_acquire); }
  // For on_signal: waits up to `timeout` for stop(); true if it came.
  bool wait_stopped_for(std::chrono::milliseconds timeout);

 private:
  void run();
  void take(int sig);

  std::function<void(int)> on_signal_;
  std::mutex mutex_;
  std::condition_variable stopped_cv_;
  bool stopped_ = false;  // under mutex_
  int signal_fd_ = -1;  // SIGINT and SIGTERM, read by the thread
  int wake_fd_ = -1;    // written by stop()
  // done_: set by stop() (release), read by the thread after each wake-up
  // (acquire); the mutex above covers wait_stopped_for.
  std::atomic<bool> done_{false};
  // caught_: stored by the thread before on_signal runs (release), read by
  // caught() (acquire); after the join every value is final.
  std::atomic<int> caught_{0};
  std::thread thread_;
};

}  // namespace palm::tools
