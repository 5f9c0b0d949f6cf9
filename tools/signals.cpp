#include "signals.hpp"

#include <pthread.h>

#include <ctime>

namespace palm::tools {
namespace {

sigset_t stop_set() noexcept {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

bool block_stop_signals() noexcept {
  const sigset_t set = stop_set();
  return pthread_sigmask(SIG_BLOCK, &set, nullptr) == 0;
}

StopSignals::StopSignals(std::function<void(int)> on_signal)
    : on_signal_(std::move(on_signal)), thread_([this] { run(); }) {}

StopSignals::~StopSignals() { stop(); }

void StopSignals::run() {
  const sigset_t set = stop_set();
  const timespec slice{0, 100'000'000};  // 100 ms: notices done_ promptly
  while (!done_.load(std::memory_order_acquire)) {
    const int sig = sigtimedwait(&set, nullptr, &slice);
    if (sig == SIGINT || sig == SIGTERM) {
      caught_.store(sig, std::memory_order_release);
      if (on_signal_) on_signal_(sig);
      return;
    }
  }
}

void StopSignals::stop() noexcept {
  {
    std::lock_guard lock(mutex_);
    stopped_ = true;
  }
  stopped_cv_.notify_all();
  done_.store(true, std::memory_order_release);
  if (thread_.joinable()) thread_.join();
}

bool StopSignals::wait_stopped_for(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return stopped_cv_.wait_for(lock, timeout, [this] { return stopped_; });
}

}  // namespace palm::tools
