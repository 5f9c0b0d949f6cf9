#pragma once
// One subcommand of the `palm` command line: each lives in its own file and
// registers itself on the app; palm.cpp runs the one the user picked.
#include <CLI/CLI.hpp>

#include <functional>

namespace palm::tools {

struct Command {
  CLI::App* app = nullptr;   // the subcommand, owned by the parent app
  std::function<int()> run;  // its body once parsed; the process's exit code
};

// Exit codes of every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;     // the job failed (an error, a timeout)
inline constexpr int kExitUsage = 2;       // bad flags (CLI11's own code as well)
inline constexpr int kExitInterrupted = 130;  // SIGINT / SIGTERM

}  // namespace palm::tools
