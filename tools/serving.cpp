#include "serving.hpp"

#include <cstdio>

#include <fmt/format.h>

#include "command.hpp"
#include "palm/servers/log.hpp"
#include "signals.hpp"

namespace palm::tools {

void add_serve_flags(CLI::App& cmd, ServeFlags& f, std::string_view messages_help) {
  cmd.add_option("--name", f.name, "The server's name (clients call \"NAME.method\"; cache key `name`)")
      ->required();
  cmd.add_option("--db", f.db,
                 "Bind the cache service (REQ/REP) here: db_address, e.g. tcp://127.0.0.1:5555 (port * = any)")
      ->required();
  cmd.add_option("--pull", f.pull, "Bind the PULL that clients push to: pull_address")->required();
  cmd.add_option("--pub", f.pub, "Bind the PUB the results are published on: pub_address")->required();
  cmd.add_flag("--pipelined", f.pipelined,
               "Publish under the server's own name with stage + 1 (for a next step), not the client's uuid");
  cmd.add_option("--messages", f.messages, std::string(messages_help))->capture_default_str();
  cmd.add_option("--log-level", f.log_level, "DEBUG, INFO, WARNING, ERROR or CRITICAL (or 10..50)")
      ->capture_default_str();
  cmd.add_flag("--no-shm", f.no_shm,
               "Serve tcp only: no shared-memory segment for palm peers of this host");
}

Result<servers::ServerOptions> server_options(const ServeFlags& f) {
  servers::ServerOptions o;
  o.name = f.name;
  o.db_address = f.db;
  const auto level = servers::parse_log_level(f.log_level);
  if (!level) {
    return make_error(Errc::kInvalidArgument,
                      "--log-level " + f.log_level + ": not DEBUG, INFO, WARNING, ERROR or CRITICAL");
  }
  o.log_level = *level;
  o.shm = !f.no_shm;
  return o;
}

int fail(std::string_view command, std::string_view reason) {
  const std::string_view line = reason.substr(0, reason.find('\n'));
  std::fprintf(stderr, "palm %.*s: %.*s\n", static_cast<int>(command.size()), command.data(),
               static_cast<int>(line.size()), line.data());
  return kExitFailure;
}

int serve(servers::ServerTemplate& server, std::string_view command, std::uint64_t messages,
          const std::function<std::string()>& extra) {
  // request_stop() is async-signal-safe, but it runs on the StopSignals
  // thread anyway (signals.hpp).
  StopSignals signals([&server](int) { server.request_stop(); });
  if (auto r = server.start(); !r) {
    signals.stop();
    return fail(command, r.error().describe());
  }
  auto& log = server.logger();
  if (server.segment().empty()) {
    log.info("no shared memory (--no-shm): palm peers of this host use tcp");
  } else {
    log.info("shm segment {} (/dev/shm/{})", server.segment(), server.segment());
  }
  if (messages != 0) {
    log.info("serving until SIGINT/SIGTERM or {} messages", messages);
  } else {
    log.info("serving until SIGINT/SIGTERM");
  }
  while (!server.wait(std::chrono::milliseconds(1000))) {
  }
  const int caught = signals.caught();
  if (caught != 0) log.info("signal {}: stopping", caught == SIGINT ? "SIGINT" : "SIGTERM");
  server.stop();
  signals.stop();

  std::string summary = "summary:";
  for (const auto& s : server.stats()) {
    summary += fmt::format(" {0}.in={1} {0}.out={2} {0}.errors={3}", s.name, s.messages_in,
                           s.messages_out, s.errors);
  }
  if (extra) summary += extra();
  log.info("{}", summary);
  log.flush();
  std::fflush(stdout);
  return signals.caught() != 0 ? kExitInterrupted : kExitOk;
}

}  // namespace palm::tools
