#pragma once
// Process identity on one host: a pid alone is reused, so palm names a
// process by (pid, start time), the start time being field 22 of
// /proc/<pid>/stat (clock ticks since boot). Liveness on one host is this
// pair, never a heartbeat.

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <optional>

namespace palm {

struct ProcessId {
  pid_t pid = 0;
  std::uint64_t start_time = 0;  // /proc/<pid>/stat field 22
  friend bool operator==(const ProcessId&, const ProcessId&) = default;
};

// The start time of `pid`, or nullopt if no such process (or a zombie: it is
// dead for palm's purposes). Thread-safe; reads /proc.
std::optional<std::uint64_t> process_start_time(pid_t pid) noexcept;

// This process's identity. Reads /proc on every call (not cached: a forked
// child has its own), so keep it off periodic paths.
ProcessId self_process() noexcept;

// True while the process (pid, start_time) runs. A false answer is final: a
// pid reused by another process has another start time. A live but stopped
// or slow process is alive.
bool process_alive(const ProcessId& id) noexcept;

// process_alive for a process looked at again and again (a peer, a
// segment's owner): a pidfd opened once (and checked against the start
// time after opening, so it names that process and not a reuse of its
// pid), then each look is one poll(), which also sees a zombie. Reading
// /proc/<pid>/stat instead costs an open, a read, a parse and a close per
// look: most of an idle farm's CPU, with every peer looked at 10 times a
// second. Where pidfd_open is refused (an old kernel, a seccomp filter) it
// falls back to process_alive. Thread-safe; move-only.
class ProcessWatch {
 public:
  ProcessWatch() noexcept = default;
  explicit ProcessWatch(const ProcessId& id) noexcept;
  ProcessWatch(ProcessWatch&& other) noexcept;
  ProcessWatch& operator=(ProcessWatch&& other) noexcept;
  ProcessWatch(const ProcessWatch&) = delete;
  ProcessWatch& operator=(const ProcessWatch&) = delete;
  ~ProcessWatch();

  const ProcessId& id() const noexcept { return id_; }
  // As process_alive(id()): false is final.
  bool alive() const noexcept;
  // Whether a pidfd backs it (false: the /proc fallback). For tests.
  bool has_pidfd() const noexcept { return fd_ >= 0; }

 private:
  void close_fd() noexcept;

  ProcessId id_{};
  int fd_ = -1;
  // Sticky once seen dead. relaxed: a flag that publishes nothing; a thread
  // that misses it looks again and gets the same answer.
  mutable std::atomic<bool> dead_{false};
};

}  // namespace palm
