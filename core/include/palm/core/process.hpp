#pragma once
// Process identity on one host: a pid alone is reused, so palm names a
// process by (pid, start time), the start time being field 22 of
// /proc/<pid>/stat (clock ticks since boot). Liveness on one host is this
// pair, never a heartbeat.

#include <sys/types.h>

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

// This process's identity (computed once).
ProcessId self_process() noexcept;

// True while the process (pid, start_time) runs. A false answer is final: a
// pid reused by another process has another start time. A live but stopped
// or slow process is alive.
bool process_alive(const ProcessId& id) noexcept;

}  // namespace palm
