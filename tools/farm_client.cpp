// `palm farm-client`: the farm's client process (farm_client.hpp). Not in
// --help: the farm starts it.
#include "farm_client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <memory>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "command.hpp"
#include "palm/servers/client.hpp"
#include "palm/transport/address.hpp"
#include "palm/transport/context.hpp"
#include "payloads.hpp"
#include "signals.hpp"

namespace palm::tools {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kClientTimeout = 30s;  // a job without progress, an eval

std::atomic<bool> g_cancel{false};  // SIGINT / SIGTERM (release; read with acquire)
bool cancelled() { return g_cancel.load(std::memory_order_acquire); }

// One line to the farm, at once (it reads them as they come), in one
// write: nothing else writes to this fd.
void say(std::string line) {
  line += '\n';
  std::string_view rest = line;
  while (!rest.empty()) {
    const ssize_t n = ::write(kFarmReportFd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the farm is gone: its stdin's EOF ends us
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
}

// Until stdin closes (the farm is done with us, or died) or a signal. The
// farm closes stdin first in every way it ends, so the signal is only
// looked for twice a second: the idle farm's cost is being measured.
void idle_until_told() {
  char buf[64];
  while (!cancelled()) {
    pollfd p{STDIN_FILENO, POLLIN, 0};
    const int rc = ::poll(&p, 1, 500);
    if (rc < 0 && errno != EINTR) return;
    if (rc <= 0) continue;
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) return;
  }
}

int run(const FarmClientOptions& o) {
  if (::fcntl(kFarmReportFd, F_GETFD) < 0) {
    std::fprintf(stderr, "palm farm-client: no report pipe on fd %d: `palm farm` starts this command\n",
                 kFarmReportFd);
    return kExitUsage;
  }
  if (!block_stop_signals()) {
    say("error cannot block SIGINT/SIGTERM");
    return kExitFailure;
  }
  StopSignals signals([](int) { g_cancel.store(true, std::memory_order_release); });
  // The farm prints the reason (its one line on stderr): told, not printed.
  const auto failed = [&](std::string_view reason) {
    if (cancelled()) return kExitInterrupted;
    say(fmt::format("error {}", reason.substr(0, reason.find('\n'))));
    return kExitFailure;
  };
  const auto level = servers::parse_log_level(o.log_level);
  if (!level) return failed("--log-level " + o.log_level + ": not DEBUG, INFO, WARNING, ERROR or CRITICAL");
  if (spdlog::get("palm.transport") == nullptr) {
    spdlog::stderr_color_mt("palm.transport")->set_level(servers::to_spdlog(*level));
  }
  if (o.payload < kSeqDigits) return failed(fmt::format("a payload of {} B: at least {}", o.payload, kSeqDigits));

  // Its own pools sized as the master's: replies over ZeroMQ land in them,
  // and a bypass segment is made from them.
  const Sizing sizing = size_for(o.payload);
  auto ctx = transport::Context::create(context_options_for(sizing));
  if (!ctx) return failed(ctx.error().describe());

  servers::ClientOptions co;
  co.server_name = o.server;
  co.db_address = o.db;
  co.transport = o.transport == FarmTransport::kShm ? shm::TransportMode::kShm : shm::TransportMode::kTcp;
  co.log_level = *level;
  co.timeout = kClientTimeout;
  co.cancel = &g_cancel;
  co.window = sizing.window;
  co.bypass = o.bypass;
  if (o.transport == FarmTransport::kIpc) {  // open_auto takes tcp only: the ipc addresses as they are
    co.this_config = true;
    co.push_address = o.push;
    co.sub_address = o.sub;
  }
  auto connected = servers::Client::connect(*ctx, co);
  if (!connected) return failed("client: " + connected.error().describe());
  std::unique_ptr<servers::Client> client = std::move(*connected);
  say(fmt::format("transports {} {}", transport::to_string(client->push_scheme()),
                  transport::to_string(client->sub_scheme())));

  // A progress line at most every 1/128 of a phase: a few hundred writes a run.
  const auto progress = [&](FarmPhase phase, double fraction) {
    if (o.progress) say(fmt::format("progress {} {:.4f}", static_cast<int>(phase), fraction));
  };

  // The jobs: the warm-up, then the measured one; every reply checked.
  // Message numbers run on through both and the evals.
  const Payloads payloads(o.payload, o.method);
  ReplyCheck check(payloads, o.warmup + o.messages + static_cast<std::uint64_t>(o.evals));
  const std::string function = "_." + o.method;
  std::uint64_t next_seq = 0;
  const auto run_job = [&](FarmPhase phase, std::uint64_t count) -> std::optional<std::string> {
    const std::uint64_t first = next_seq, end = next_seq + count;
    const std::uint64_t step = std::max<std::uint64_t>(256, count / 128);
    progress(phase, 0);
    // In place: the producer writes each payload straight into its frame,
    // the check reads each reply where it lies.
    auto replies = client->job_in_place(
        function, payloads.size(),
        [&](std::span<std::byte> out) -> std::optional<std::size_t> {
          if (next_seq == end || cancelled()) return std::nullopt;
          const std::size_t n = payloads.write(next_seq++, out);
          if (o.progress && (next_seq - first) % step == 0) {
            progress(phase, static_cast<double>(next_seq - first) / static_cast<double>(count));
          }
          return n;
        },
        [&](std::span<const std::byte> reply) {
          check(std::string_view(reinterpret_cast<const char*>(reply.data()), reply.size()));
        },
        count);
    if (cancelled()) return "interrupted";
    if (!replies) return "job: " + replies.error().describe();
    if (*replies != count) return fmt::format("job: {} replies to {} messages", *replies, count);
    if (check.bad() != 0) return fmt::format("{} of {} replies wrong for {}", check.bad(), *replies, function);
    return std::nullopt;
  };
  if (o.warmup > 0) {
    if (auto why = run_job(FarmPhase::kWarmup, o.warmup)) return failed(*why);
  }
  const std::uint64_t warm_ok = check.ok();
  const auto t0 = Clock::now();
  if (auto why = run_job(FarmPhase::kJob, o.messages)) return failed(*why);
  const auto t1 = Clock::now();
  const std::uint64_t job_ok = check.ok() - warm_ok;

  // Round trips: sequential evals.
  progress(FarmPhase::kEvals, 0);
  std::string trips = "trips";
  std::string payload;
  for (int i = 0; i < o.evals; ++i) {
    payloads.write(next_seq++, payload);
    const auto a = Clock::now();
    auto reply = client->eval(function, std::string_view(payload));
    const auto b = Clock::now();
    if (cancelled()) return kExitInterrupted;
    if (!reply) return failed("eval: " + reply.error().describe());
    check(*reply);
    fmt::format_to(std::back_inserter(trips), " {:.3f}", std::chrono::duration<double, std::micro>(b - a).count());
    if ((i & 15) == 15) progress(FarmPhase::kEvals, static_cast<double>(i + 1) / o.evals);
  }
  if (check.bad() != 0) return failed(fmt::format("{} of {} eval replies wrong", check.bad(), o.evals));

  say(fmt::format("job {:.9f} {} {}", std::chrono::duration<double>(t1 - t0).count(), job_ok,
                  payloads.traced() ? 1 : 0));
  say(trips);
  const auto b = client->bypass_stats();
  say(fmt::format("bypass {} {} {} {} {}", b.dispatched, b.results, b.duplicates, b.redispatched, b.workers));
  say("done");

  idle_until_told();
  client.reset();
  ctx->shutdown();  // its bypass segment, if any, goes
  signals.stop();
  return cancelled() ? kExitInterrupted : kExitOk;
}

// Reads an unsigned or a double from `word`; false if it is not one whole.
template <class T>
bool number(std::string_view word, T& out) {
  const auto [end, ec] = std::from_chars(word.data(), word.data() + word.size(), out);
  return ec == std::errc() && end == word.data() + word.size();
}

std::vector<std::string_view> words(std::string_view line) {
  std::vector<std::string_view> out;
  while (!line.empty()) {
    const auto start = line.find_first_not_of(' ');
    if (start == std::string_view::npos) break;
    line.remove_prefix(start);
    const auto end = line.find(' ');
    out.push_back(line.substr(0, end));
    line.remove_prefix(end == std::string_view::npos ? line.size() : end);
  }
  return out;
}

}  // namespace

std::vector<std::string> farm_client_args(const FarmClientOptions& o) {
  std::vector<std::string> a = {"farm-client", "--server", o.server, "--db", o.db,
                                "--transport", std::string(to_string(o.transport)), "--method", o.method,
                                "--payload", std::to_string(o.payload), "--warmup", std::to_string(o.warmup),
                                "--messages", std::to_string(o.messages), "--evals", std::to_string(o.evals),
                                "--log-level", o.log_level};
  if (!o.push.empty()) a.insert(a.end(), {"--push", o.push});
  if (!o.sub.empty()) a.insert(a.end(), {"--sub", o.sub});
  if (o.bypass) a.emplace_back("--bypass");
  if (o.progress) a.emplace_back("--progress");
  return a;
}

bool read_farm_client_line(std::string_view line, FarmClientReport& report, std::optional<FarmPhase>& phase,
                           double& fraction) {
  phase.reset();
  if (line.starts_with("error ")) {
    report.error = std::string(line.substr(6));
    return true;
  }
  const auto w = words(line);
  if (w.empty()) return false;
  if (w[0] == "done" && w.size() == 1) {
    report.done = true;
    return true;
  }
  if (w[0] == "transports" && w.size() == 3) {
    report.push = std::string(w[1]);
    report.sub = std::string(w[2]);
    return true;
  }
  if (w[0] == "progress" && w.size() == 3) {
    int p = 0;
    if (!number(w[1], p) || !number(w[2], fraction) || p < 0 || p > static_cast<int>(FarmPhase::kIdle)) return false;
    phase = static_cast<FarmPhase>(p);
    return true;
  }
  if (w[0] == "job" && w.size() == 4) {
    int traced = 0;
    if (!number(w[1], report.seconds) || !number(w[2], report.checked_ok) || !number(w[3], traced)) return false;
    report.traced = traced != 0;
    return true;
  }
  if (w[0] == "trips") {
    report.trips_us.clear();
    for (std::size_t i = 1; i < w.size(); ++i) {
      double us = 0;
      if (!number(w[i], us)) return false;
      report.trips_us.push_back(us);
    }
    return true;
  }
  if (w[0] == "bypass" && w.size() == 6) {
    auto& b = report.bypass;
    return number(w[1], b.dispatched) && number(w[2], b.results) && number(w[3], b.duplicates) &&
           number(w[4], b.redispatched) && number(w[5], b.workers);
  }
  return false;
}

void add_farm_client_commands(CLI::App& app, std::vector<Command>& out) {
  auto o = std::make_shared<FarmClientOptions>();
  auto transport = std::make_shared<std::string>("shm");
  auto* cmd = app.add_subcommand("farm-client", "The client process of `palm farm` (started by it)");
  cmd->group("");  // not in --help
  cmd->add_option("--server", o->server)->required();
  cmd->add_option("--db", o->db)->required();
  cmd->add_option("--push", o->push);
  cmd->add_option("--sub", o->sub);
  cmd->add_option("--transport", *transport)->check(CLI::IsMember({"shm", "tcp", "ipc"}));
  cmd->add_option("--method", o->method)->check(CLI::IsMember({"echo", "upper", "reverse", "sha256"}));
  cmd->add_option("--payload", o->payload)->check(CLI::Range(kSeqDigits, std::size_t{16} << 20));
  cmd->add_option("--warmup", o->warmup);
  cmd->add_option("--messages", o->messages)->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1'000'000'000'000}));
  cmd->add_option("--evals", o->evals)->check(CLI::Range(0, 1'000'000));
  cmd->add_option("--log-level", o->log_level);
  cmd->add_flag("--bypass", o->bypass);
  cmd->add_flag("--progress", o->progress);
  out.push_back({cmd, [o, transport] {
                   o->transport = *parse_farm_transport(*transport);  // checked by the flag
                   return run(*o);
                 }});
}

}  // namespace palm::tools
