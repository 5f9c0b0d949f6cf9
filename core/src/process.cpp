#include "palm/core/process.hpp"

#include <fcntl.h>
#include <unistd.h>

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

}  // namespace palm
