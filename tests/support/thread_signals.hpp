#pragma once
// The blocked-signal masks of this process's threads of a given name, read
// from /proc/self/task/*/status (SigBlk): internal threads must block
// SIGINT and SIGTERM (palm/core/quiet_thread.hpp).

#include <signal.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace palm::test {

inline std::vector<std::uint64_t> blocked_signals_of(std::string_view thread_name) {
  std::vector<std::uint64_t> masks;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    std::getline(comm, name);
    if (name != thread_name) continue;
    std::ifstream status(task.path() / "status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("SigBlk:", 0) == 0) masks.push_back(std::stoull(line.substr(7), nullptr, 16));
    }
  }
  return masks;
}

inline bool blocks_stop_signals(std::uint64_t mask) {
  return (mask & (std::uint64_t{1} << (SIGTERM - 1))) != 0 && (mask & (std::uint64_t{1} << (SIGINT - 1))) != 0;
}

}  // namespace palm::test
