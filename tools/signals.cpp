#include "signals.hpp"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
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

StopSignals::StopSignals(std::function<void(int)> on_signal) : on_signal_(std::move(on_signal)) {
  const sigset_t set = stop_set();
  signal_fd_ = ::signalfd(-1, &set, SFD_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC);
  thread_ = std::thread([this] { run(); });
}

StopSignals::~StopSignals() {
  stop();
  if (signal_fd_ >= 0) ::close(signal_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void StopSignals::take(int sig) {
  caught_.store(sig, std::memory_order_release);
  if (on_signal_) on_signal_(sig);
}

void StopSignals::run() {
  const sigset_t set = stop_set();
  if (signal_fd_ >= 0 && wake_fd_ >= 0) {
    // Asleep until a signal or stop(): an idle command costs no wake-ups.
    pollfd fds[2] = {{signal_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    while (!done_.load(std::memory_order_acquire)) {
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;  // cannot wait this way: the loop below polls
      }
      if ((fds[0].revents & POLLIN) != 0) {
        signalfd_siginfo info{};
        if (::read(signal_fd_, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
          const int sig = static_cast<int>(info.ssi_signo);
          if (sig == SIGINT || sig == SIGTERM) {
            take(sig);
            return;
          }
        }
      }
      if ((fds[1].revents & POLLIN) != 0) return;  // stop()
    }
  }
  // Without a signalfd or an eventfd (a descriptor limit): poll in slices.
  const timespec slice{0, 100'000'000};  // 100 ms: notices done_ promptly
  while (!done_.load(std::memory_order_acquire)) {
    const int sig = sigtimedwait(&set, nullptr, &slice);
    if (sig == SIGINT || sig == SIGTERM) {
      take(sig);
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
  if (wake_fd_ >= 0) {
    const std::uint64_t one = 1;
    static_cast<void>(::write(wake_fd_, &one, sizeof one));
  }
  if (thread_.joinable()) thread_.join();
}

bool StopSignals::wait_stopped_for(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return stopped_cv_.wait_for(lock, timeout, [this] { return stopped_; });
}

}  // namespace palm::tools
