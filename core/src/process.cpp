#include "palm/core/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace palm {

std::optional<std::uint64_t> process_start_time(pid_t pid) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return std::nullopt;
  buf[n] = '\0';
  // Field 2 (comm) is parenthesised and may hold spaces or ')': parse from
  // the last ')'. Then field 3 is the state, and field 22 the start time.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr) return std::nullopt;
  ++p;
  char state = 0;
  int field = 2;
  while (*p != '\0' && field < 22) {
    while (*p == ' ') ++p;
    ++field;
    if (field == 3) state = *p;
    if (field == 22) break;
    while (*p != '\0' && *p != ' ') ++p;
  }
  if (field != 22) return std::nullopt;
  if (state == 'Z' || state == 'X') return std::nullopt;  // exited, not reaped
  return std::strtoull(p, nullptr, 10);
}

ProcessId self_process() noexcept {
  // Not cached across fork: a child has its own pid.
  const pid_t pid = ::getpid();
  return ProcessId{pid, process_start_time(pid).value_or(0)};
}

bool process_alive(const ProcessId& id) noexcept {
  if (id.pid <= 0) return false;
  const auto st = process_start_time(id.pid);
  return st && *st == id.start_time;
}

ProcessWatch::ProcessWatch(const ProcessId& id) noexcept : id_(id) {
  if (id.pid <= 0) {
    dead_.store(true, std::memory_order_relaxed);
    return;
  }
#ifdef SYS_pidfd_open
  fd_ = static_cast<int>(::syscall(SYS_pidfd_open, id.pid, 0));
  if (fd_ < 0) fd_ = -1;  // ENOSYS, EPERM (seccomp), ESRCH (gone): /proc decides below
#endif
  // After the open: if the pid was reused before it, the start time differs.
  if (!process_alive(id)) {
    close_fd();
    dead_.store(true, std::memory_order_relaxed);
  }
}

ProcessWatch::ProcessWatch(ProcessWatch&& other) noexcept
    : id_(other.id_), fd_(other.fd_), dead_(other.dead_.load(std::memory_order_relaxed)) {
  other.fd_ = -1;
}

ProcessWatch& ProcessWatch::operator=(ProcessWatch&& other) noexcept {
  if (this != &other) {
    close_fd();
    id_ = other.id_;
    fd_ = other.fd_;
    dead_.store(other.dead_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    other.fd_ = -1;
  }
  return *this;
}

ProcessWatch::~ProcessWatch() { close_fd(); }

void ProcessWatch::close_fd() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool ProcessWatch::alive() const noexcept {
  if (dead_.load(std::memory_order_relaxed)) return false;
  bool alive = true;
  if (fd_ >= 0) {
    // A pidfd polls readable once its process has exited (zombie included).
    pollfd p{fd_, POLLIN, 0};
    const int r = ::poll(&p, 1, 0);
    if (r > 0) {
      alive = false;
    } else if (r < 0) {
      alive = process_alive(id_);  // EINTR, ENOMEM: ask /proc this once
    }
  } else {
    alive = process_alive(id_);
  }
  if (!alive) dead_.store(true, std::memory_order_relaxed);
  return alive;
}

}  // namespace palm
