#pragma once
// What `palm server` and `palm master` share: the flags every server takes
// (pylm's Server/Master arguments plus palm's), and serving until a signal
// or the messages limit with the start and stop lines.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "palm/core/error.hpp"
#include "palm/servers/server_template.hpp"

namespace palm::tools {

struct ServeFlags {
  std::string name, db, pull, pub;
  bool pipelined = false;
  std::uint64_t messages = 0;
  std::string log_level = "INFO";
  bool no_shm = false;
};

// Adds --name --db --pull --pub --pipelined --messages --log-level --no-shm.
void add_serve_flags(CLI::App& cmd, ServeFlags& flags, std::string_view messages_help);

// ServerOptions from the flags; kInvalidArgument for a bad --log-level.
[[nodiscard]] Result<servers::ServerOptions> server_options(const ServeFlags& flags);

// One line `palm <command>: <reason>` on stderr (the first line of
// `reason`); returns kExitFailure.
int fail(std::string_view command, std::string_view reason);

// Starts `server`, logs (INFO, the server's logger) its segment and what it
// serves until, waits for SIGINT/SIGTERM or the messages limit, stops it
// (inbound first, the rest drained, bounded) and logs one summary line:
//   summary: <part>.in=N <part>.out=N <part>.errors=N ... <extra()>
// (space-separated key=value tokens, easy to parse). Returns the exit code:
// 0 (the limit), kExitInterrupted (a signal), kExitFailure (start failed:
// one line on stderr). block_stop_signals() must have been called before
// any thread started.
int serve(servers::ServerTemplate& server, std::string_view command, std::uint64_t messages,
          const std::function<std::string()>& extra);

}  // namespace palm::tools
