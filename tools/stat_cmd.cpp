// `palm stat --db ADDRESS`: a running palm server's counters, read from its
// cache (the key servers::kStatsKey, which every palm server computes at
// each get): per part messages in and out, bytes, errors, stalls, queue
// depth and latency p50/p99, and a master's dispatch counters. Printed as
// the server answers: space-separated key=value tokens, a line a part.
// `--every SECONDS` asks again until Ctrl-C. Errors (no answer, not a palm
// server): one line on stderr, exit 1.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "command.hpp"
#include "palm/servers/server_template.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/discovery.hpp"
#include "serving.hpp"
#include "signals.hpp"

namespace palm::tools {
namespace {

constexpr std::string_view kCommand = "stat";

struct StatOptions {
  std::string db;
  std::int64_t timeout_ms = 2000;
  double every_s = 0;
};

std::atomic<bool> g_stop{false};  // SIGINT / SIGTERM (release; read with acquire)

int run_stat(const StatOptions& o) {
  if (!block_stop_signals()) return fail(kCommand, "cannot block SIGINT/SIGTERM");
  StopSignals signals([](int) { g_stop.store(true, std::memory_order_release); });
  auto ctx = transport::Context::create();
  if (!ctx) return fail(kCommand, ctx.error().describe());
  int code = kExitOk;
  {
    auto db = transport::DiscoveryClient::connect(*ctx, o.db);
    if (!db) return fail(kCommand, o.db + ": " + db.error().describe());
    for (bool first = true;; first = false) {
      if (!first) {
        // Slices of 100 ms: a Ctrl-C ends the wait at once.
        const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.every_s);
        while (std::chrono::steady_clock::now() < until && !g_stop.load(std::memory_order_acquire)) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        if (g_stop.load(std::memory_order_acquire)) {
          code = kExitInterrupted;
          break;
        }
        std::fputs("\n", stdout);
      }
      auto text = db->get(servers::kStatsKey, std::chrono::milliseconds(o.timeout_ms));
      if (!text) {
        code = fail(kCommand, fmt::format("{}: {}", o.db, text.error().describe()));
        break;
      }
      if (text->empty()) {
        code = fail(kCommand, fmt::format("{} has no {}: not a palm server (a pylm one?)", o.db,
                                          servers::kStatsKey));
        break;
      }
      std::fputs(text->c_str(), stdout);
      std::fflush(stdout);
      if (o.every_s <= 0) break;
    }
  }
  ctx->shutdown();
  signals.stop();
  return code;
}

}  // namespace

void add_stat_commands(CLI::App& app, std::vector<Command>& out) {
  auto o = std::make_shared<StatOptions>();
  auto* cmd = app.add_subcommand("stat", "A running palm server's counters (per part, and a master's dispatch)");
  cmd->add_option("--db", o->db, "The server's cache address (db_address), e.g. tcp://127.0.0.1:5559")->required();
  cmd->add_option("--timeout", o->timeout_ms, "Milliseconds to wait for the answer")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{600000}))
      ->capture_default_str();
  cmd->add_option("--every", o->every_s, "Ask again every SECONDS until Ctrl-C (0: once)")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  out.push_back({cmd, [o] { return run_stat(*o); }});
}

}  // namespace palm::tools
