// `palm bench`: the bench suite. The same farm as `palm farm` (farm_run.hpp:
// this process runs the Master and the Client, N `palm worker` processes
// attach to it) over shm, shm with the master bypassed (shm-bypass: the
// client feeds the workers, servers/bypass.hpp), ZeroMQ ipc and ZeroMQ tcp
// in one run, for every payload and worker count asked; each case is a fresh farm, repeated
// --runs times (runs interleaved: run 1 of every case, then run 2, ...), the
// median of each figure shown.
//
// Each run of a case: a warm-up job (a tenth of the messages, at most
// 2000), then the measured job (throughput: the client streams the messages
// with a window in flight; msgs/s and MB/s of payload), then --evals
// (default_evals) sequential evals (latency: each a full round trip client -> master ->
// worker -> master -> client; p50, p99, p99.9 exact from the sorted
// samples). The producer writes fresh bytes into every message (its
// sequence number first) and every reply is checked; a wrong or missing
// one fails the bench, and so does a message carried by another transport
// than the case's. For the first payload of the list, the first run then
// lets the farm rest and measures its idle cost: the CPU time of every
// thread of this process and of every worker over --idle seconds (after
// 0.5 s of settling), as % of one core; once per transport and worker
// count, as it does not depend on the payload.
//
// Output: a table on stdout (ratios of the first transport to the others),
// --csv FILE (kBenchCsvHeader, one row per case), --plot FILE.svg. A
// progress bar on stderr when it is a terminal.
//
// Exit codes: 0 every case ran and every reply was right; 1 an error (one
// line `palm bench: <case>: <reason>`); 2 bad flags; 130 SIGINT / SIGTERM
// (the running farm stopped, its segment removed, nothing written).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "bench.hpp"
#include "command.hpp"
#include "farm_run.hpp"
#include "palm/servers/log.hpp"
#include "serving.hpp"
#include "signals.hpp"

namespace palm::tools {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kCommand = "bench";

struct BenchOptions {
  std::vector<std::string> transports = {"shm", "shm-bypass", "ipc", "tcp"};
  std::vector<std::size_t> payloads = {64, 4096, 65536, 1u << 20};
  std::vector<unsigned> workers = {1, 2, 4, 8};
  std::uint64_t messages = 0;  // 0: per payload (default_messages)
  unsigned runs = 3;
  int evals = 0;      // 0: per payload (default_evals)
  double idle = 2.0;  // seconds; 0: not measured
  bool quick = false;
  std::string csv, plot;
  std::string method = "echo";
  std::uint32_t credits = 64;
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::string log_level = "WARNING";
};

// --quick: every transport still, fewer cases, messages and samples.
constexpr std::size_t kQuickPayloads[] = {64, 65536};
constexpr unsigned kQuickWorkers[] = {1, 2};
constexpr double kQuickIdle = 1.0;

// Messages of a case's measured job: about a second or two on this
// machine's slowest transport, fewer as payloads grow.
std::uint64_t default_messages(std::size_t payload, bool quick) {
  std::uint64_t n = 0;
  if (payload <= 1024) {
    n = 20000;
  } else if (payload <= 16384) {
    n = 10000;
  } else if (payload <= 262144) {
    n = 2000;
  } else {
    n = 200;
  }
  return quick ? std::max<std::uint64_t>(100, n / 5) : n;
}

// Round trips timed per run: 2000, enough for a p99.9 (the 1998th of 2000
// sorted samples); 1000 from 512 KiB, where a ZeroMQ round trip takes
// milliseconds (the full suite stays within about ten minutes; its p99.9
// is then the 999th of 1000); 500 with --quick.
int default_evals(std::size_t payload, bool quick) {
  if (quick) return 500;
  return payload >= (std::size_t{512} << 10) ? 1000 : 2000;
}

// Set on SIGINT / SIGTERM (release); the farm's loops read it (acquire).
std::atomic<bool> g_cancel{false};
bool cancelled() { return g_cancel.load(std::memory_order_acquire); }

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  double a = 0, b = 0, c = 0;
  if (!(in >> a >> b >> c)) return "?";
  return fmt::format("{:.2f} {:.2f} {:.2f}", a, b, c);
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

std::string join(const auto& items, auto&& format) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + format(i);
  return out;
}

// The progress bar on stderr: one line redrawn in place, at most 10 times
// a second, nothing at all when stderr is not a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(std::size_t total) : enabled_(::isatty(STDERR_FILENO) == 1), total_(total) {}
  ~ProgressBar() { clear(); }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void begin(std::size_t index, std::string label) {
    index_ = index;
    label_ = std::move(label);
    phase_ = "start";
    within_ = 0;
    draw(true);
  }

  // A case's phases in the share of its time they usually take.
  void update(FarmPhase phase, double fraction) {
    static constexpr struct {
      const char* name;
      double from, to;
    } kPhases[] = {{"start", 0.0, 0.1}, {"warm-up", 0.1, 0.2}, {"job", 0.2, 0.6}, {"evals", 0.6, 0.9},
                   {"idle", 0.9, 1.0}};
    const auto& p = kPhases[static_cast<int>(phase)];
    phase_ = p.name;
    within_ = p.from + (p.to - p.from) * std::clamp(fraction, 0.0, 1.0);
    draw(false);
  }

  void clear() {
    if (!enabled_ || !drawn_) return;
    std::fputs("\r\x1b[K", stderr);
    std::fflush(stderr);
    drawn_ = false;
  }

 private:
  void draw(bool force) {
    if (!enabled_) return;
    const auto now = Clock::now();
    if (!force && now - last_ < 100ms) return;
    last_ = now;
    constexpr int kWidth = 30;
    const double done = (static_cast<double>(index_) + within_) / static_cast<double>(total_);
    const int filled = static_cast<int>(done * kWidth);
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    std::string eta = "--:--";
    if (done > 0.02) {
      const auto left = static_cast<long>(elapsed / done - elapsed);
      eta = fmt::format("{}:{:02}", left / 60, left % 60);
    }
    fmt::print(stderr, "\r[{}{}] {:3.0f}% case {}/{} {} ({}) ETA {}\x1b[K", std::string(filled, '#'),
               std::string(kWidth - filled, '.'), done * 100, index_ + 1, total_, label_, phase_, eta);
    std::fflush(stderr);
    drawn_ = true;
  }

  const bool enabled_;
  const std::size_t total_;
  const Clock::time_point start_ = Clock::now();
  Clock::time_point last_{};
  std::size_t index_ = 0;
  std::string label_;
  const char* phase_ = "start";
  double within_ = 0;
  bool drawn_ = false;
};

struct Case {
  std::string transport;  // the label in the reports
  FarmTransport farm;
  bool bypass;  // "shm-bypass": the client feeds the workers (servers/bypass.hpp)
  std::size_t payload;
  unsigned workers;
};

struct Samples {
  std::vector<double> msgs_per_s, mb_per_s, p50, p99, p999, idle;
};

// What a run must show besides right replies: every message went over the
// transport the case names (the master's dispatch counters, the client's
// endpoints, the workers' own start lines).
std::string check_transport(const Case& c, const FarmRunResult& r) {
  const bool shm = c.farm == FarmTransport::kShm;
  const auto total = r.dispatch.dispatched_shm + r.dispatch.dispatched_tcp;
  const auto on_wrong = shm ? r.dispatch.dispatched_tcp : r.dispatch.dispatched_shm;
  if (c.bypass) {
    // run_farm_once checked that the bypass carried every message.
    if (total != 0) return fmt::format("the master dispatched {} messages: the bypass was to carry them all", total);
  } else if (total == 0 || on_wrong != 0) {
    return fmt::format("the master dispatched {} messages over shm and {} over ZeroMQ", r.dispatch.dispatched_shm,
                       r.dispatch.dispatched_tcp);
  }
  if (r.client_push != to_string(c.farm) || r.client_sub != to_string(c.farm)) {
    return fmt::format("the client pushed over {} and subscribed over {}", r.client_push, r.client_sub);
  }
  for (const auto& w : r.workers) {
    if (w.transport != to_string(c.farm)) return fmt::format("worker {} ran over {}", w.name, w.transport);
  }
  return {};
}

bool writable(const std::string& path, std::string& why) {
  std::ofstream f(path, std::ios::trunc);
  if (!f) why = fmt::format("cannot write {}: {}", path, std::strerror(errno));
  return static_cast<bool>(f);
}

bool write_file(const std::string& path, const std::string& text, std::string& why) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
  f.close();
  if (!f) why = fmt::format("cannot write {}: {}", path, std::strerror(errno));
  return static_cast<bool>(f);
}

int run_bench(BenchOptions o, const CLI::App& cmd) {
  // Before any thread starts: every thread inherits the mask (signals.hpp).
  if (!block_stop_signals()) return fail(kCommand, "cannot block SIGINT/SIGTERM");
  StopSignals signals([](int) { g_cancel.store(true, std::memory_order_release); });

  if (o.quick) {  // what the user did not set
    if (cmd.count("--payloads") == 0) o.payloads.assign(std::begin(kQuickPayloads), std::end(kQuickPayloads));
    if (cmd.count("--workers") == 0) o.workers.assign(std::begin(kQuickWorkers), std::end(kQuickWorkers));
    if (cmd.count("--runs") == 0) o.runs = 1;
    if (cmd.count("--idle") == 0) o.idle = kQuickIdle;
  }
  const auto level = servers::parse_log_level(o.log_level);
  if (!level) return fail(kCommand, "--log-level " + o.log_level + ": not DEBUG, INFO, WARNING, ERROR or CRITICAL");
  if (spdlog::get("palm.transport") == nullptr) {
    spdlog::stderr_color_mt("palm.transport")->set_level(servers::to_spdlog(*level));
  }
  // Each once, in the order given.
  const auto dedupe = [](auto& v) {
    auto out = v;
    out.clear();
    for (const auto& x : v) {
      if (std::find(out.begin(), out.end(), x) == out.end()) out.push_back(x);
    }
    v = std::move(out);
  };
  dedupe(o.transports);
  dedupe(o.payloads);
  dedupe(o.workers);
  // Files first: a bad path fails now, not after the runs.
  std::string why;
  if (!o.csv.empty() && !writable(o.csv, why)) return fail(kCommand, why);
  if (!o.plot.empty() && !writable(o.plot, why)) return fail(kCommand, why);

  std::vector<Case> cases;
  for (const auto& t : o.transports) {
    for (std::size_t p : o.payloads) {
      for (unsigned w : o.workers) {
        const bool bypass = t == "shm-bypass";
        cases.push_back({t, bypass ? FarmTransport::kShm : *parse_farm_transport(t), bypass, p, w});
      }
    }
  }
  const std::string load_before = load_average();
  const auto t_start = Clock::now();
  std::map<std::tuple<std::string, std::size_t, unsigned>, Samples> samples;
  ProgressBar bar(cases.size() * o.runs);
  for (unsigned run = 0; run < o.runs; ++run) {
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      const std::string label = fmt::format("{} {} {} worker{}", c.transport, format_bytes(c.payload), c.workers,
                                            c.workers == 1 ? "" : "s");
      bar.begin(run * cases.size() + i,
                o.runs == 1 ? label : fmt::format("{}, run {}/{}", label, run + 1, o.runs));
      FarmRunOptions f;
      f.workers = c.workers;
      f.messages = o.messages != 0 ? o.messages : default_messages(c.payload, o.quick);
      // A tenth of the job, and at least 100 messages: enough to fill the
      // client's window a few times, so a large payload's blocks are cut
      // and first touched in every process before the timing starts.
      f.warmup = std::clamp<std::uint64_t>(std::max<std::uint64_t>(f.messages / 10, 100), 1, 2000);
      f.evals = o.evals != 0 ? o.evals : default_evals(c.payload, o.quick);
      f.payload = c.payload;
      f.method = o.method;
      f.transport = c.farm;
      f.bypass = c.bypass;
      f.credits = o.credits;
      f.log_level = *level;
      f.host = o.host;
      f.port = o.port;
      if (run == 0 && c.payload == o.payloads.front() && o.idle > 0) {
        f.idle = std::chrono::milliseconds(static_cast<long>(o.idle * 1000));
      }
      f.cancel = &g_cancel;
      f.progress = [&bar](FarmPhase phase, double fraction) { bar.update(phase, fraction); };
      auto r = run_farm_once(f);
      if (cancelled()) break;
      std::string reason;
      if (!r) {
        reason = r.error();
      } else if (r->traced && r->checked_ok != f.messages) {
        reason = fmt::format("{} of {} replies checked", r->checked_ok, f.messages);
      } else {
        reason = check_transport(c, *r);
      }
      if (!reason.empty()) {
        bar.clear();
        return fail(kCommand, fmt::format("{}: {}", label, reason));
      }
      auto& s = samples[{c.transport, c.payload, c.workers}];
      s.msgs_per_s.push_back(r->msgs_per_s);
      s.mb_per_s.push_back(r->mb_per_s);
      s.p50.push_back(percentile(r->trips_us, 0.50));
      s.p99.push_back(percentile(r->trips_us, 0.99));
      s.p999.push_back(percentile(r->trips_us, 0.999));
      if (r->idle_cpu_percent) s.idle.push_back(*r->idle_cpu_percent);
    }
    if (cancelled()) break;
  }
  bar.clear();
  signals.stop();
  if (cancelled()) return kExitInterrupted;
  const double minutes = std::chrono::duration<double>(Clock::now() - t_start).count() / 60;

  std::vector<BenchRow> rows;
  for (const auto& c : cases) {
    const auto& s = samples[{c.transport, c.payload, c.workers}];
    BenchRow r;
    r.transport = c.transport;
    r.payload = c.payload;
    r.workers = c.workers;
    r.messages = o.messages != 0 ? o.messages : default_messages(c.payload, o.quick);
    r.runs = o.runs;
    r.msgs_per_s = median(s.msgs_per_s);
    r.mb_per_s = median(s.mb_per_s);
    r.p50_us = median(s.p50);
    r.p99_us = median(s.p99);
    r.p999_us = median(s.p999);
    if (!s.idle.empty()) r.idle_cpu_percent = median(s.idle);
    rows.push_back(r);
  }

  const std::string what =
      fmt::format("_.{} over {}; payloads {}; workers {}", o.method, join(o.transports, [](auto& t) { return t; }),
                  join(o.payloads, [](auto p) { return format_bytes(p); }),
                  join(o.workers, [](auto w) { return std::to_string(w); }));
  // "64 B 20000/2000, 1 MiB 200/1000": each payload's messages and round trips.
  const std::string per_payload = join(o.payloads, [&](auto p) {
    return fmt::format("{} {}/{}", format_bytes(p), o.messages != 0 ? o.messages : default_messages(p, o.quick),
                       o.evals != 0 ? o.evals : default_evals(p, o.quick));
  });
  std::string out = fmt::format("palm bench: {}\n", what);
  out += fmt::format(
      "  {} run{} per case (medians shown); per run: a job of M messages (throughput), then R sequential evals "
      "(round trips), M/R: {}; every reply checked; {:.1f} min\n",
      o.runs, o.runs == 1 ? "" : "s", per_payload, minutes);
  const std::string machine = fmt::format("{} cores, load average {} before, {} after",
                                          std::thread::hardware_concurrency(), load_before, load_average());
  out += fmt::format("  {}, {}\n\n", machine, utc_now());
  out += bench_table(rows, o.transports);
  if (o.idle > 0) {
    out += fmt::format("(idle: over {:.1f} s after the first run of each {} case, 0.5 s after its last eval)\n", o.idle,
                       format_bytes(o.payloads.front()));
  }
  std::fputs(out.c_str(), stdout);
  std::fflush(stdout);

  if (!o.csv.empty() && !write_file(o.csv, bench_csv(rows), why)) return fail(kCommand, why);
  if (!o.plot.empty()) {
    const std::string title = fmt::format("palm bench: the farm (_.{}) over {}", o.method,
                                          join(o.transports, [](auto& t) { return t; }));
    const std::string subtitle = fmt::format(
        "medians of {} run{} per case; per run a job of M messages (throughput), then R sequential evals (round "
        "trips), M/R: {}\n{}, {}",
        o.runs, o.runs == 1 ? "" : "s", per_payload, machine, utc_now());
    if (!write_file(o.plot, bench_svg(rows, o.transports, title, subtitle), why)) return fail(kCommand, why);
  }
  return kExitOk;
}

}  // namespace

void add_bench_commands(CLI::App& app, std::vector<Command>& out) {
  auto o = std::make_shared<BenchOptions>();
  auto* cmd = app.add_subcommand(
      "bench",
      "The bench suite: the farm of `palm farm` over shm, shm with the master bypassed, ZeroMQ ipc and ZeroMQ "
      "tcp, for several payloads and "
      "worker counts, each case repeated; throughput, round-trip percentiles and idle CPU (medians)");
  cmd->add_option("--transports", o->transports,
                  "Transports, comma-separated: shm, shm-bypass (the client feeding the workers directly, the "
                  "master bypassed), ipc, tcp")
      ->delimiter(',')
      ->check(CLI::IsMember({"shm", "shm-bypass", "ipc", "tcp"}))
      ->capture_default_str();
  cmd->add_option("--payloads", o->payloads, "Payload sizes, comma-separated (64, 4k, 64k, 1m: k = 1024)")
      ->delimiter(',')
      ->transform(CLI::AsSizeValue(false))
      ->check(CLI::Range(kSeqDigits, std::size_t{16} << 20))
      ->capture_default_str();
  cmd->add_option("-w,--workers", o->workers, "Worker counts, comma-separated")
      ->delimiter(',')
      ->check(CLI::Range(1u, 64u))
      ->capture_default_str();
  cmd->add_option("-n,--messages", o->messages,
                  "Messages of each measured job (default: by payload, 20000 for 64 B down to 200 for 1 MiB)")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1'000'000'000}));
  cmd->add_option("--runs", o->runs, "Runs of each case (medians shown)")
      ->check(CLI::Range(1u, 100u))
      ->capture_default_str();
  cmd->add_option("--evals", o->evals,
                  "Round trips timed per run, sequential evals (default: 2000, 1000 from 512 KiB, 500 with --quick)")
      ->check(CLI::Range(1, 1'000'000));
  cmd->add_option("--idle", o->idle,
                  "Seconds the idle farm's CPU is measured, once per transport and worker count (0: not measured)")
      ->check(CLI::Range(0.0, 60.0))
      ->capture_default_str();
  cmd->add_flag("--quick", o->quick,
                "Under a minute: payloads 64 B and 64 KiB, 1 and 2 workers, 1 run, fewer messages (flags given "
                "win)");
  cmd->add_option("--csv", o->csv, "Write one row per case to this CSV file");
  cmd->add_option("--plot", o->plot, "Draw throughput and latency into this SVG file");
  cmd->add_option("--method", o->method, "The workers' method: echo, upper, reverse or sha256")
      ->check(CLI::IsMember({"echo", "upper", "reverse", "sha256"}))
      ->capture_default_str();
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
  out.push_back({cmd, [o, cmd] { return run_bench(*o, *cmd); }});
}

}  // namespace palm::tools
