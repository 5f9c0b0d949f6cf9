#include "palm/core/death_watch.hpp"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "palm/core/quiet_thread.hpp"

namespace palm {
namespace {

struct Entry {
  std::uint64_t id = 0;
  int fd = -1;  // a pidfd
  std::function<void()> on_death;
};

// Process-wide; never destroyed: the thread may still sleep in poll() while
// static destructors run at exit.
struct State {
  std::mutex mu;
  std::vector<Entry> entries;  // watches in force
  // Pidfds of watches that ended. Only the thread closes them, between two
  // polls: an fd it may be polling is never closed (and reused) under it.
  std::vector<int> closing;
  int wake_fd = -1;  // eventfd: a watch was added or ended
  bool running = false;
  std::uint64_t next_id = 1;
};

State& state() {
  static State* const s = [] {
    auto* st = new State;
    // The child of a fork has no watch thread: it starts afresh. prepare
    // takes the lock so the child never inherits it held by a thread that
    // does not exist there.
    ::pthread_atfork([] { state().mu.lock(); }, [] { state().mu.unlock(); },
                     [] {
                       State& c = state();
                       for (const Entry& e : c.entries) ::close(e.fd);
                       for (const int fd : c.closing) ::close(fd);
                       if (c.wake_fd >= 0) ::close(c.wake_fd);
                       c.entries.clear();
                       c.closing.clear();
                       c.wake_fd = -1;
                       c.running = false;
                       c.mu.unlock();
                     });
    return st;
  }();
  return *s;
}

void wake(const State& s) noexcept {
  const std::uint64_t one = 1;
  // An eventfd write fails only when the counter would overflow: the thread
  // is then awake anyway.
  [[maybe_unused]] const ssize_t n = ::write(s.wake_fd, &one, sizeof one);
}

void run(State& s) noexcept {
  (void)::pthread_setname_np(::pthread_self(), "palm-deaths");
  std::vector<pollfd> fds;
  std::vector<std::uint64_t> ids;
  std::unique_lock lock(s.mu);
  for (;;) {
    for (const int fd : s.closing) ::close(fd);
    s.closing.clear();
    fds.assign(1, pollfd{s.wake_fd, POLLIN, 0});
    ids.assign(1, 0);
    for (const Entry& e : s.entries) {
      fds.push_back(pollfd{e.fd, POLLIN, 0});
      ids.push_back(e.id);
    }
    lock.unlock();
    // No timeout: every change writes wake_fd, every death makes its pidfd
    // readable.
    const int r = ::poll(fds.data(), fds.size(), -1);
    lock.lock();
    if (r < 0) continue;  // EINTR, ENOMEM: build the set again and retry
    if ((fds[0].revents & POLLIN) != 0) {
      std::uint64_t count = 0;
      [[maybe_unused]] const ssize_t n = ::read(s.wake_fd, &count, sizeof count);
    }
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      // The watch may have ended since the poll began (its fd is then in
      // `closing`): look it up by id.
      for (auto it = s.entries.begin(); it != s.entries.end(); ++it) {
        if (it->id != ids[i]) continue;
        // Under the lock: Ticket::reset waits for it, so a callback never
        // runs after its ticket ended.
        it->on_death();
        s.closing.push_back(it->fd);
        s.entries.erase(it);
        break;
      }
    }
  }
}

}  // namespace

DeathWatch::Ticket& DeathWatch::Ticket::operator=(Ticket&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = std::exchange(other.id_, 0);
  }
  return *this;
}

void DeathWatch::Ticket::reset() noexcept {
  if (id_ == 0) return;
  State& s = state();
  {
    const std::lock_guard lock(s.mu);
    for (auto it = s.entries.begin(); it != s.entries.end(); ++it) {
      if (it->id != id_) continue;
      s.closing.push_back(it->fd);
      s.entries.erase(it);
      wake(s);  // so the thread stops polling the fd and closes it
      break;
    }
  }
  id_ = 0;
}

DeathWatch::Ticket DeathWatch::watch(const ProcessId& id, std::function<void()> on_death) {
#ifdef SYS_pidfd_open
  State& s = state();
  int fd = id.pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, id.pid, 0)) : -1;
  const int open_errno = errno;
  if (fd < 0 && id.pid > 0 && open_errno != ESRCH) return Ticket{};  // ENOSYS, EPERM: the caller looks itself
  // After the open: a pid reused before it has another start time, and a
  // zombie counts as dead.
  if (fd < 0 || !process_alive(id)) {
    if (fd >= 0) ::close(fd);
    std::uint64_t fired = 0;
    {
      const std::lock_guard lock(s.mu);
      fired = s.next_id++;
    }
    on_death();
    return Ticket{fired};
  }
  std::unique_lock lock(s.mu);
  if (!s.running) {
    if (s.wake_fd < 0) s.wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s.wake_fd < 0) {
      lock.unlock();
      ::close(fd);
      return Ticket{};
    }
    try {
      quiet_thread([&s] { run(s); }).detach();  // lives as long as the process
    } catch (const std::system_error&) {
      lock.unlock();
      ::close(fd);
      return Ticket{};
    }
    s.running = true;
  }
  const std::uint64_t ticket = s.next_id++;
  s.entries.push_back(Entry{ticket, fd, std::move(on_death)});
  wake(s);
  return Ticket{ticket};
#else
  (void)id;
  (void)on_death;
  return Ticket{};
#endif
}

std::size_t DeathWatch::watching() noexcept {
  State& s = state();
  const std::lock_guard lock(s.mu);
  return s.entries.size();
}

}  // namespace palm
