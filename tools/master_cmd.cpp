// `palm master`: pylm's Master (FEATURES.md section 1; examples "parallel",
// "applications") as a process, with palm's per-worker dispatch
// (servers/master.hpp): palm workers over shm (this host) or tcp, pylm
// workers on worker_push/worker_pull. Serves until SIGINT/SIGTERM (exit
// 130, a clean stop: drained, the segment removed) or --messages results
// (exit 0); an error is one line `palm master: <reason>` on stderr and exit 1.
// The summary line at stop adds the dispatch counters:
//   dispatched.shm=N dispatched.tcp=N dispatched.pylm=N results.shm=N
//   results.tcp=N results.pylm=N duplicates=N redispatched=N
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "command.hpp"
#include "palm/servers/master.hpp"
#include "palm/transport/context.hpp"
#include "serving.hpp"
#include "signals.hpp"

namespace palm::tools {
namespace {

constexpr std::string_view kCommand = "master";

struct MasterFlags {
  ServeFlags serve;
  std::string worker_push, worker_pull, dispatch;
  std::uint32_t window = 512;
  std::uint32_t pylm_credits = 32;
  std::int64_t pylm_timeout_ms = 30000;
};

int run_master(const MasterFlags& f) {
  // Before any thread starts: every thread inherits the mask (signals.hpp).
  if (!block_stop_signals()) return fail(kCommand, "cannot block SIGINT/SIGTERM");
  auto options = server_options(f.serve);
  if (!options) return fail(kCommand, options.error().message);
  servers::MasterConfig cfg;
  cfg.server = std::move(*options);
  cfg.pull_address = f.serve.pull;
  cfg.pub_address = f.serve.pub;
  cfg.worker_push_address = f.worker_push;
  cfg.worker_pull_address = f.worker_pull;
  cfg.dispatch_address = f.dispatch;
  cfg.pipelined = f.serve.pipelined;
  cfg.messages = f.serve.messages;
  cfg.window = f.window;
  cfg.pylm_credits = f.pylm_credits;
  cfg.pylm_timeout = std::chrono::milliseconds(f.pylm_timeout_ms);
  cfg.bypass = true;  // the default hooks: local clients that ask may feed the workers directly

  auto ctx = transport::Context::create();
  if (!ctx) return fail(kCommand, ctx.error().describe());
  int code = kExitFailure;
  {
    servers::Master master(*ctx, std::move(cfg));
    code = serve(master, kCommand, f.serve.messages, [&master] {
      // Its dispatch counters, as `palm stat` shows them (without the line's name).
      std::string line = master.stats_extra();
      return " " + line.substr(line.find(' ') + 1);
    });
  }
  ctx->shutdown();  // removes the segment before the process ends
  return code;
}

}  // namespace

void add_master_commands(CLI::App& app, std::vector<Command>& out) {
  auto f = std::make_shared<MasterFlags>();
  auto* cmd = app.add_subcommand(
      "master",
      "pylm's Master: hands each client message to a worker (`palm worker` over shm or tcp, pylm workers "
      "on --wpush/--wpull) and publishes the results; the cache on --db");
  add_serve_flags(*cmd, f->serve, "Stop after publishing this many results (0: no limit)");
  cmd->add_option("--wpush,--worker-push", f->worker_push,
                  "Bind the PUSH pylm workers pull work from: worker_push_address")
      ->required();
  cmd->add_option("--wpull,--worker-pull", f->worker_pull,
                  "Bind the PULL pylm workers push results to: worker_pull_address")
      ->required();
  cmd->add_option("--dispatch", f->dispatch,
                  "Bind palm workers' tcp dispatch here (default: the host of --wpush, any port; announced "
                  "as __palm.dispatch)");
  cmd->add_option("--window", f->window, "Messages in flight to workers at most")
      ->check(CLI::Range(1u, 1u << 20))
      ->capture_default_str();
  cmd->add_option("--pylm-credits", f->pylm_credits, "Of those, in flight to pylm workers at most")
      ->check(CLI::Range(1u, 1u << 20))
      ->capture_default_str();
  cmd->add_option("--pylm-timeout", f->pylm_timeout_ms,
                  "A message a pylm worker has not answered in this many ms is sent again")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  out.push_back({cmd, [f] { return run_master(*f); }});
}

}  // namespace palm::tools
