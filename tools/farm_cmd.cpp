// `palm farm`: palm's main job. A local farm with no configuration: this
// process runs a Master, N `palm worker` processes and a `palm farm-client`
// process attach to it over shared memory, ZeroMQ tcp or ZeroMQ ipc (farm_run.hpp: one run of
// the farm, shared with `palm bench`). The client streams M messages
// through `_.<method>`, each with fresh bytes, checks every reply, then
// times ~1000 sequential evals, and the farm prints a summary on stdout.
//
//   --transport shm   workers and client on the master's segment
//               tcp   workers and client on ZeroMQ tcp (PALM_TRANSPORT=tcp)
//               ipc   the master binds its pull, pub and dispatcher on
//                     ipc:// sockets in a temp dir (no segment); workers and
//                     client connect there with ZeroMQ
//   --host, --port    where the master binds (default 127.0.0.1, ports
//                     chosen by the OS; --port P: P for its cache, P+1 ...
//                     P+5 for the rest)
//
// Exit codes: 0 every reply checked; 1 an error (one line `palm farm:
// <reason>` on stderr: a worker that fails to start or join, the master's
// segment or ports, a timeout, a wrong reply); 2 bad flags (palm.cpp); 130
// SIGINT / SIGTERM (the job cancelled, everything stopped, the segment
// removed).
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "command.hpp"
#include "farm_run.hpp"
#include "palm/servers/log.hpp"
#include "serving.hpp"
#include "signals.hpp"

namespace palm::tools {
namespace {

constexpr std::string_view kCommand = "farm";
constexpr int kEvals = 1000;

struct FarmOptions {
  unsigned workers = std::max(1u, std::thread::hardware_concurrency());
  std::uint64_t messages = 200000;
  std::size_t payload = 64;
  std::string method = "echo";
  std::string transport = "shm";
  bool bypass = false;
  std::uint32_t credits = 64;
  std::string log_level = "WARNING";
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
};

// Set on SIGINT / SIGTERM (release); the client's waits and the farm's own
// loops read it (acquire).
std::atomic<bool> g_cancel{false};
bool cancelled() { return g_cancel.load(std::memory_order_acquire); }

int run_farm(const FarmOptions& o) {
  // Before any thread starts: every thread inherits the mask (signals.hpp).
  if (!block_stop_signals()) return fail(kCommand, "cannot block SIGINT/SIGTERM");
  StopSignals signals([](int) { g_cancel.store(true, std::memory_order_release); });
  const auto failed = [&](std::string_view reason) {
    if (cancelled()) return kExitInterrupted;
    return fail(kCommand, reason);
  };

  const auto level = servers::parse_log_level(o.log_level);
  if (!level) return failed("--log-level " + o.log_level + ": not DEBUG, INFO, WARNING, ERROR or CRITICAL");
  // The transport's own logger (auto-selection lines) at the same level.
  if (spdlog::get("palm.transport") == nullptr) {
    spdlog::stderr_color_mt("palm.transport")->set_level(servers::to_spdlog(*level));
  }

  FarmRunOptions run;
  run.workers = o.workers;
  run.messages = o.messages;
  run.evals = kEvals;
  run.payload = o.payload;
  run.method = o.method;
  run.transport = *parse_farm_transport(o.transport);  // checked by the flag
  run.credits = o.credits;
  run.bypass = o.bypass;
  run.log_level = *level;
  run.host = o.host;
  run.port = o.port;
  run.cancel = &g_cancel;
  auto r = run_farm_once(run);
  signals.stop();
  if (cancelled()) return kExitInterrupted;
  if (!r) return failed(r.error());

  const std::string function = "_." + o.method;
  const double per_s = r->msgs_per_s;
  std::string summary;
  summary += fmt::format("palm farm: {} messages of {} through {}, {} worker{} over {}{}\n", o.messages,
                         format_bytes(o.payload), function, o.workers, o.workers == 1 ? "" : "s", o.transport,
                         o.bypass ? ", the client feeding them directly (bypass)" : "");
  summary += fmt::format("  {:.2f} s, {} messages/s, {:.1f} MB/s of payload\n", r->seconds, format_rate(per_s),
                         r->mb_per_s);
  summary += fmt::format("  round trip p50 {:.0f} us, p99 {:.0f} us ({} evals)\n", percentile(r->trips_us, 0.50),
                         percentile(r->trips_us, 0.99), kEvals);
  std::string workers_line = "  workers:";
  for (std::size_t i = 0; i < r->workers.size(); ++i) {
    const auto& w = r->workers[i];
    workers_line += fmt::format("{} {} {} {}", i == 0 ? "" : ",", w.name, w.transport,
                                w.messages ? std::to_string(*w.messages) : std::string("?"));
  }
  summary += workers_line + "\n";
  summary += fmt::format("  client: process {}, sending over {}, replies over {}\n", r->client_pid, r->client_push,
                         r->client_sub);
  const auto& d = r->dispatch;
  summary += fmt::format("  master dispatched: shm {}, {} {} (redispatched {}, duplicates {})\n", d.dispatched_shm,
                         o.transport == "ipc" ? "ipc" : "tcp", d.dispatched_tcp, d.redispatched, d.duplicates);
  if (o.bypass) {
    const auto& b = r->bypass;
    summary += fmt::format("  client dispatched directly: {} (redispatched {}, duplicates {})\n", b.dispatched,
                           b.redispatched, b.duplicates);
  }
  summary += fmt::format("  every reply checked: {} ok{}\n", r->checked_ok, r->traced ? "" : " (64 hex digits each)");
  if (!r->segment.empty()) summary += fmt::format("  segment {} removed\n", r->segment);
  std::fputs(summary.c_str(), stdout);
  std::fflush(stdout);
  return kExitOk;
}

}  // namespace

void add_farm_commands(CLI::App& app, std::vector<Command>& out) {
  auto o = std::make_shared<FarmOptions>();
  auto* cmd = app.add_subcommand(
      "farm",
      "palm's main job: a local Master, N `palm worker` processes and a Client over shared memory (or "
      "ZeroMQ tcp / ipc); streams messages through a method, checks every reply, prints throughput and "
      "latency");
  cmd->add_option("-w,--workers", o->workers, "Worker processes (default: the number of cores)")
      ->check(CLI::Range(1u, 1024u))
      ->capture_default_str();
  cmd->add_option("-n,--messages", o->messages, "Messages streamed through the farm")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1'000'000'000'000}))
      ->capture_default_str();
  cmd->add_option("-s,--payload", o->payload,
                  "Payload bytes per message (its sequence number first: at least 12)")
      ->check(CLI::Range(kSeqDigits, std::size_t{16} << 20))
      ->capture_default_str();
  cmd->add_option("--method", o->method, "The workers' method: echo, upper, reverse or sha256")
      ->check(CLI::IsMember({"echo", "upper", "reverse", "sha256"}))
      ->capture_default_str();
  cmd->add_option("--transport", o->transport,
                  "shm (shared memory), tcp (ZeroMQ tcp) or ipc (ZeroMQ ipc sockets, no segment)")
      ->check(CLI::IsMember({"shm", "tcp", "ipc"}))
      ->capture_default_str();
  cmd->add_flag("--bypass", o->bypass,
               "The client feeds the workers directly over shm, the master only hands them over "
               "(the master bypass; --transport shm only)");
  cmd->add_option("--credits", o->credits, "Messages each worker holds at most")
      ->check(CLI::Range(1u, 1u << 20))
      ->capture_default_str();
  add_farm_address_flags(*cmd, o->host, o->port);
  cmd->add_option("--log-level", o->log_level, "The master's and client's log level (DEBUG ... CRITICAL)")
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            return servers::parse_log_level(s) ? std::string() : "not DEBUG, INFO, WARNING, ERROR or CRITICAL";
          },
          "LEVEL"))
      ->capture_default_str();
  out.push_back({cmd, [o] { return run_farm(*o); }});
}

}  // namespace palm::tools
