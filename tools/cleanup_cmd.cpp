// `palm cleanup`: removes the shared-memory segments that palm processes of
// this user left in /dev/shm when they died without removing them (a farm
// or server killed with SIGKILL, a crash). A segment is removed only when
// the process its header names as owner is gone (its pid and start time:
// a reused pid is not taken for the owner); live servers' segments and
// other users' files are never touched.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "command.hpp"
#include "palm/transport/shm/segment.hpp"

namespace palm::tools {

void add_cleanup_commands(CLI::App& app, std::vector<Command>& out) {
  auto* cmd = app.add_subcommand(
      "cleanup", "Remove the shared-memory segments of dead palm processes from /dev/shm (live ones stay)");
  out.push_back({cmd, [] {
                   const auto removed = shm::remove_stale_segments("palm-");
                   for (const auto& name : removed) std::printf("palm cleanup: removed /dev/shm/%s\n", name.c_str());
                   if (removed.empty()) std::printf("palm cleanup: no segment of a dead palm process in /dev/shm\n");
                   return kExitOk;
                 }});
}

}  // namespace palm::tools
