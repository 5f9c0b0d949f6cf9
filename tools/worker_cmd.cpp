// `palm worker`: a pylm-compatible Worker (servers/worker.hpp) with the
// built-in methods (echo upper reverse sha256 sleep fail) and pylm's example
// `foo` (b"<name> processed " + payload, as tests/interop/pylm_worker.py).
//
// Signals: SIGINT and SIGTERM are taken by a StopSignals thread
// (signals.hpp), which calls Worker::stop(): no code runs in a signal
// handler. A stop by signal exits 130 (kExitInterrupted, as every
// palm subcommand), the messages limit 0, an error 1 with one line
// `palm worker: <reason>` on stderr.
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "command.hpp"
#include "signals.hpp"
#include "palm/servers/log.hpp"
#include "palm/servers/method.hpp"
#include "palm/servers/worker.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/shm/host_identity.hpp"

namespace palm::tools {
namespace {

struct WorkerCmdOptions {
  std::string name;
  std::string db;
  std::string push;
  std::string pull;
  std::uint64_t messages = 0;
  std::uint32_t credits = 16;
  std::int64_t master_timeout_ms = 5000;
  std::string transport;  // "" = PALM_TRANSPORT
  std::string log_level = "INFO";
};

int fail(const std::string& reason) {
  std::fprintf(stderr, "palm worker: %s\n", reason.c_str());
  return kExitFailure;
}

int run_worker(const WorkerCmdOptions& o) {
  servers::WorkerOptions wo;
  wo.name = o.name;
  wo.db_address = o.db;
  wo.push_address = o.push;
  wo.pull_address = o.pull;
  wo.messages = o.messages;
  wo.credits = o.credits;
  wo.master_timeout = std::chrono::milliseconds(o.master_timeout_ms);
  if (!o.transport.empty()) {
    auto mode = shm::parse_transport_mode(o.transport);
    if (!mode) return fail(mode.error().message);
    wo.transport = *mode;
  }
  const auto level = servers::parse_log_level(o.log_level);
  if (!level) return fail("--log-level " + o.log_level + ": not DEBUG, INFO, WARNING, ERROR or CRITICAL");
  wo.log_level = *level;

  // Before any thread starts: every thread inherits the mask (signals.hpp).
  if (!block_stop_signals()) return fail("cannot block SIGINT/SIGTERM");

  auto ctx = transport::Context::create();
  if (!ctx) return fail(ctx.error().describe());
  servers::MethodTable methods;
  servers::add_builtin_methods(methods);
  std::string name_for_foo;  // set below, before any message is served
  methods.on("foo", [&name_for_foo](const servers::Call& call) {
    return servers::Output(name_for_foo + " processed " + std::string(call.payload_text()));
  });
  servers::Worker worker(*ctx, std::move(wo), std::move(methods));
  name_for_foo = worker.name();

  StopSignals signals([&worker](int) { worker.stop(); });

  if (auto c = worker.connect(); !c) {
    signals.stop();
    return fail(c.error().describe());
  }
  const char* mode = worker.mode() == servers::Worker::Mode::kPalmDispatch ? "palm dispatch" : "pylm push/pull";
  std::printf("palm worker %s: %s: %s\n", worker.name().c_str(), mode, worker.transport_summary().c_str());
  std::fflush(stdout);
  auto r = worker.run();
  signals.stop();
  const auto s = worker.stats();
  std::printf("palm worker %s: %llu messages, %llu errors\n", worker.name().c_str(),
              static_cast<unsigned long long>(s.messages),
              static_cast<unsigned long long>(s.errors.total()));
  std::fflush(stdout);
  if (!r) return fail(r.error().describe());
  return signals.caught() != 0 ? kExitInterrupted : kExitOk;
}

}  // namespace

void add_worker_commands(CLI::App& app, std::vector<Command>& out) {
  auto o = std::make_shared<WorkerCmdOptions>();
  auto* cmd = app.add_subcommand("worker", "A worker of a pylm or palm Master");
  cmd->add_option("--name", o->name, "Worker name (default: a uuid4)");
  cmd->add_option("--db", o->db, "The master's db_address (its cache)")->required();
  cmd->add_option("--push", o->push, "Where results go: the master's worker_pull_address (default: asked)");
  cmd->add_option("--pull", o->pull, "Where work comes from: the master's worker_push_address (default: asked)");
  cmd->add_option("--messages", o->messages, "Stop after this many messages (0: no limit)")->capture_default_str();
  cmd->add_option("--credits", o->credits, "palm dispatch: messages in flight")
      ->check(CLI::Range(1u, 1u << 20))
      ->capture_default_str();
  cmd->add_option("--master-timeout", o->master_timeout_ms,
                  "Over tcp: exit (1) once the connection to the master stayed down this many ms (0: wait for "
                  "ever; over shm its death is seen at once)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--transport", o->transport, "auto, shm or tcp (default: PALM_TRANSPORT, else auto)")
      ->check(CLI::IsMember({"auto", "shm", "tcp"}));
  cmd->add_option("--log-level", o->log_level, "DEBUG, INFO, WARNING, ERROR or CRITICAL")->capture_default_str();
  out.push_back({cmd, [o] { return run_worker(*o); }});
}

}  // namespace palm::tools
