// The farm end to end (issue "Servers I", Bench): a client -> a Master ->
// N `palm worker` processes -> the Master -> the client, 64 B echo, over shm
// and over tcp in one run, with 1, 2 and 4 workers.
//
// The Master and the Client run in this process (threads); each worker is a
// real `palm worker` process (fork + exec), attached over shared memory
// (PALM_TRANSPORT=shm) or over tcp (PALM_TRANSPORT=tcp), as is the client.
// Every case starts a fresh farm, warms it up, then measures:
//   throughput   one job of kJob messages (the client sends and drains at
//                once, `window` in flight): msgs_per_s
//   round trip   kTrips sequential evals: p50_us, p99_us (exact, sorted)
// Run with scripts/bench.sh farm_bench (repetitions, medians).

#include <benchmark/benchmark.h>
#include <signal.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "palm/servers/client.hpp"
#include "palm/servers/master.hpp"
#include "palm/transport/context.hpp"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using palm::servers::LogLevel;
namespace shm = palm::shm;

constexpr std::uint64_t kJob = 50'000;
constexpr int kTrips = 2'000;
constexpr std::size_t kPayload = 64;

// A `palm worker` process, ended by pid.
class WorkerProcess {
 public:
  WorkerProcess(const std::string& db, const char* transport, int index) {
    const std::string name = "bench-worker-" + std::to_string(index);
    std::vector<std::string> args = {PALM_BINARY, "worker", "--name", name, "--db", db,
                                     "--transport", transport, "--credits", "64",
                                     "--log-level", "WARNING"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    const int rc = posix_spawn(&pid_, PALM_BINARY, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error("cannot start " PALM_BINARY);
  }
  ~WorkerProcess() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 300; ++i) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(10ms);
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
  }
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

 private:
  pid_t pid_ = -1;
};

void BM_Farm(benchmark::State& state) {
  const bool use_shm = state.range(0) == 0;
  const auto workers = static_cast<int>(state.range(1));
  const char* transport = use_shm ? "shm" : "tcp";
  spdlog::set_level(spdlog::level::warn);
  state.SetLabel(std::string(transport) + ", " + std::to_string(workers) + " workers");

  auto ctx = palm::transport::Context::create();
  if (!ctx) return state.SkipWithError(ctx.error().describe().c_str());
  palm::servers::MasterConfig cfg;
  cfg.server.name = "bench-master-" + std::to_string(::getpid());
  cfg.server.db_address = "tcp://127.0.0.1:*";
  cfg.server.log_level = LogLevel::kWarning;
  cfg.pull_address = cfg.pub_address = "tcp://127.0.0.1:*";
  cfg.worker_pull_address = cfg.worker_push_address = "tcp://127.0.0.1:*";
  palm::servers::Master master(*ctx, cfg);
  if (auto r = master.start(); !r) return state.SkipWithError(r.error().describe().c_str());

  std::vector<std::unique_ptr<WorkerProcess>> procs;
  for (int i = 0; i < workers; ++i) {
    procs.push_back(std::make_unique<WorkerProcess>(master.db_address(), transport, i));
  }
  for (int i = 0; i < 1000; ++i) {
    const auto s = master.dispatch_stats();
    if (static_cast<int>(s.workers_shm + s.workers_tcp) == workers) break;
    std::this_thread::sleep_for(10ms);
  }

  palm::servers::ClientOptions co;
  co.server_name = cfg.server.name;
  co.db_address = master.db_address();
  co.transport = use_shm ? shm::TransportMode::kShm : shm::TransportMode::kTcp;
  co.log_level = LogLevel::kWarning;
  co.timeout = 30s;
  auto client = palm::servers::Client::connect(*ctx, co);
  if (!client) return state.SkipWithError(client.error().describe().c_str());

  // The producer writes fresh bytes into every message; the client checks
  // every reply (echo: the same bytes).
  std::uint64_t sent = 0, checked = 0, bad = 0;
  std::string payload(kPayload, 'x');
  const auto next_until = [&](std::uint64_t limit) {
    return [&, limit](std::string& out) {
      if (sent == limit) return false;
      std::snprintf(payload.data(), payload.size(), "%020llu", static_cast<unsigned long long>(sent));
      ++sent;
      out = payload;
      return true;
    };
  };
  const auto check = [&](std::string_view reply) {
    ++checked;
    if (reply.size() != kPayload) ++bad;
  };
  if (auto r = (*client)->job("_.echo", next_until(2000), check); !r) {
    return state.SkipWithError(r.error().describe().c_str());
  }

  double msgs_per_s = 0, p50 = 0, p99 = 0;
  for (auto _ : state) {
    sent = 0;
    const auto t0 = std::chrono::steady_clock::now();
    auto r = (*client)->job("_.echo", next_until(kJob), check);
    const auto t1 = std::chrono::steady_clock::now();
    if (!r || *r != kJob) {
      const auto s = master.dispatch_stats();
      std::fprintf(stderr,
                   "farm: dispatched shm %llu tcp %llu; results shm %llu tcp %llu; duplicates %llu; "
                   "in flight %llu\n",
                   static_cast<unsigned long long>(s.dispatched_shm),
                   static_cast<unsigned long long>(s.dispatched_tcp),
                   static_cast<unsigned long long>(s.results_shm),
                   static_cast<unsigned long long>(s.results_tcp),
                   static_cast<unsigned long long>(s.duplicates),
                   static_cast<unsigned long long>(s.in_flight));
      for (const auto& p : master.stats()) {
        std::fprintf(stderr, "farm: part %s in %llu out %llu errors %llu depth %zu\n", p.name.c_str(),
                     static_cast<unsigned long long>(p.messages_in),
                     static_cast<unsigned long long>(p.messages_out),
                     static_cast<unsigned long long>(p.errors), p.queue_depth);
      }
      return state.SkipWithError(r ? "short job" : r.error().describe().c_str());
    }
    const double secs = std::chrono::duration<double>(t1 - t0).count();
    state.SetIterationTime(secs);
    msgs_per_s = static_cast<double>(kJob) / secs;

    std::vector<double> trips;
    trips.reserve(kTrips);
    for (int i = 0; i < kTrips; ++i) {
      const auto a = std::chrono::steady_clock::now();
      auto reply = (*client)->eval("_.echo", std::string_view(payload));
      const auto b = std::chrono::steady_clock::now();
      if (!reply) return state.SkipWithError(reply.error().describe().c_str());
      check(*reply);
      trips.push_back(std::chrono::duration<double, std::micro>(b - a).count());
    }
    std::sort(trips.begin(), trips.end());
    p50 = trips[trips.size() / 2];
    p99 = trips[trips.size() * 99 / 100];
  }
  if (bad != 0) return state.SkipWithError("a reply did not match its message");
  state.counters["msgs_per_s"] = msgs_per_s;
  state.counters["p50_us"] = p50;
  state.counters["p99_us"] = p99;
  const auto s = master.dispatch_stats();
  state.counters["via_shm"] = static_cast<double>(s.dispatched_shm);
  state.counters["via_tcp"] = static_cast<double>(s.dispatched_tcp);
  client->reset();
  procs.clear();
  master.stop();
}

BENCHMARK(BM_Farm)
    ->ArgsProduct({{0, 1}, {1, 2, 4}})
    ->ArgNames({"tcp", "workers"})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
