// The `palm` command line.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "command.hpp"

namespace palm::tools {
// Each defined in its own file; each adds its subcommands to `app` and their
// bodies to `out`.
void add_demo_commands(CLI::App& app, std::vector<Command>& out);
void add_worker_commands(CLI::App& app, std::vector<Command>& out);
void add_client_commands(CLI::App& app, std::vector<Command>& out);
void add_server_commands(CLI::App& app, std::vector<Command>& out);
void add_master_commands(CLI::App& app, std::vector<Command>& out);
void add_farm_commands(CLI::App& app, std::vector<Command>& out);
void add_farm_client_commands(CLI::App& app, std::vector<Command>& out);
void add_bench_commands(CLI::App& app, std::vector<Command>& out);
void add_cleanup_commands(CLI::App& app, std::vector<Command>& out);
void add_stat_commands(CLI::App& app, std::vector<Command>& out);
}  // namespace palm::tools

int main(int argc, char** argv) {
  CLI::App app{"palm: clusters of micro-services over shared memory and ZeroMQ"};
  app.require_subcommand(1);
  std::vector<palm::tools::Command> commands;
  palm::tools::add_farm_commands(app, commands);
  palm::tools::add_farm_client_commands(app, commands);
  palm::tools::add_bench_commands(app, commands);
  palm::tools::add_demo_commands(app, commands);
  palm::tools::add_worker_commands(app, commands);
  palm::tools::add_client_commands(app, commands);
  palm::tools::add_server_commands(app, commands);
  palm::tools::add_master_commands(app, commands);
  palm::tools::add_stat_commands(app, commands);
  palm::tools::add_cleanup_commands(app, commands);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and friends exit 0 with CLI11's text; a usage error is one line
    // on stderr and exit code 2, whatever CLI11's own code for it.
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "palm: %s (see --help)\n", e.what());
    return palm::tools::kExitUsage;
  }
  for (auto& command : commands) {
    if (command.app != nullptr && command.app->parsed()) return command.run();
  }
  return palm::tools::kExitUsage;
}
