// `palm farm`: palm's main job. A local farm with no configuration: this
// process runs a Master (servers/master.hpp; its cache and ports on
// tcp://127.0.0.1, chosen by the OS, and a shared-memory segment
// "palm-farm-<pid>-<db port>") and a Client; N `palm worker` processes
// (fork + exec of /proc/self/exe) attach to the master over shared memory,
// ZeroMQ tcp or ZeroMQ ipc. The client streams M messages through
// `_.<method>` (Client::job), each with fresh bytes (its sequence number
// first), checks every reply, then times ~1000 sequential evals, and the
// farm prints a summary on stdout.
//
//   --transport shm   workers and client on the master's segment
//               tcp   workers and client on ZeroMQ tcp (PALM_TRANSPORT=tcp)
//               ipc   the master binds its pull, pub and dispatcher on
//                     ipc:// sockets in a temp dir (no segment); workers and
//                     client connect there with ZeroMQ
//
// Workers' stdout and stderr go to a file each in the farm's temp dir: the
// farm reads their start and end lines (transport, messages served) and a
// failing worker's reason. Workers are ended by pid: SIGTERM, a bounded
// wait, then SIGKILL.
//
// Exit codes: 0 every reply checked; 1 an error (one line `palm farm:
// <reason>` on stderr: a worker that fails to start or join, the master's
// segment, a timeout, a wrong reply); 2 bad flags (palm.cpp); 130 SIGINT /
// SIGTERM (the job cancelled, everything stopped, the segment removed).
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "command.hpp"
#include "palm/servers/client.hpp"
#include "palm/servers/log.hpp"
#include "palm/servers/master.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/shm/host.hpp"
#include "serving.hpp"
#include "signals.hpp"

extern char** environ;

namespace palm::tools {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kCommand = "farm";
constexpr std::size_t kSeqDigits = 12;  // the sequence number, first in every payload
constexpr int kEvals = 1000;
constexpr auto kJoinTimeout = 10s;         // every worker attached
constexpr auto kWorkerStopGrace = 3s;      // SIGTERM, then SIGKILL
constexpr auto kClientTimeout = 30s;       // a job without progress, an eval

struct FarmOptions {
  unsigned workers = std::max(1u, std::thread::hardware_concurrency());
  std::uint64_t messages = 200000;
  std::size_t payload = 64;
  std::string method = "echo";
  std::string transport = "shm";
  std::uint32_t credits = 64;
  std::string log_level = "WARNING";
};

// Set on SIGINT / SIGTERM (release); the client's waits and the farm's own
// loops read it (acquire).
std::atomic<bool> g_cancel{false};
bool cancelled() { return g_cancel.load(std::memory_order_acquire); }

// ---- the temp dir: workers' logs, ipc sockets --------------------------------

class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/palm-farm-XXXXXX";
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;  // "" if mkdtemp failed
};

// ---- a `palm worker` process ---------------------------------------------------

class WorkerProcess {
 public:
  WorkerProcess(std::string name, std::string log) : name_(std::move(name)), log_(std::move(log)) {}
  ~WorkerProcess() { stop_all({this}); }
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  // fork + exec `exe` with `args` and `env`; stdout and stderr to the log
  // file. "" or the reason it could not start.
  std::string start(const std::string& exe, const std::vector<std::string>& args,
                    const std::vector<std::string>& env) {
    // Everything the child needs is built before fork: between fork and exec
    // only async-signal-safe calls.
    std::vector<char*> argv, envp;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return fmt::format("cannot create {}: {}", log_, std::strerror(errno));
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      const int err = errno;
      ::close(fd);
      return fmt::format("cannot start worker {}: fork: {}", name_, std::strerror(err));
    }
    if (pid == 0) {
      // The child: the farm's signal mask (SIGINT/SIGTERM blocked) is not
      // the worker's business; it ends if the farm dies.
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
      ::execve(exe.c_str(), argv.data(), envp.data());
      ::_exit(127);
    }
    ::close(fd);
    pid_ = pid;
    return {};
  }

  // True once it has ended (reaped); its wait status in status().
  bool exited() {
    if (pid_ <= 0) return true;
    if (reaped_) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      reaped_ = true;
      status_ = status;
    }
    return reaped_;
  }
  int status() const noexcept { return status_; }
  const std::string& name() const noexcept { return name_; }

  // SIGTERM to each, a bounded wait for all, then SIGKILL for the rest.
  static void stop_all(const std::vector<WorkerProcess*>& procs) {
    for (auto* p : procs) {
      if (!p->exited()) ::kill(p->pid_, SIGTERM);
    }
    const auto deadline = Clock::now() + kWorkerStopGrace;
    for (;;) {
      bool all = true;
      for (auto* p : procs) all = p->exited() && all;
      if (all || Clock::now() >= deadline) break;
      std::this_thread::sleep_for(10ms);
    }
    for (auto* p : procs) {
      if (p->exited()) continue;
      ::kill(p->pid_, SIGKILL);
      int status = 0;
      ::waitpid(p->pid_, &status, 0);
      p->reaped_ = true;
      p->status_ = status;
    }
  }

  std::vector<std::string> log_lines() const {
    std::vector<std::string> lines;
    std::ifstream in(log_);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

  // Why it ended early: its own `palm worker: <reason>` line, else its
  // status.
  std::string failure() const {
    const std::string prefix = "palm worker: ";
    const auto lines = log_lines();
    for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
      if (it->starts_with(prefix)) return it->substr(prefix.size());
    }
    if (WIFEXITED(status_)) return fmt::format("exited with {}", WEXITSTATUS(status_));
    if (WIFSIGNALED(status_)) return fmt::format("killed by signal {}", WTERMSIG(status_));
    return "ended";
  }

  // From its start line "palm worker NAME: palm dispatch: ... over T (...)"
  // and its end line "palm worker NAME: N messages, E errors".
  struct Report {
    std::string transport = "?";
    std::optional<std::uint64_t> messages, errors;
  };
  Report report() const {
    Report r;
    const std::string prefix = "palm worker " + name_ + ": ";
    for (const auto& line : log_lines()) {
      if (!line.starts_with(prefix)) continue;
      const std::string_view rest = std::string_view(line).substr(prefix.size());
      if (const auto over = rest.find(" over "); over != std::string_view::npos) {
        const auto word = rest.substr(over + 6);
        r.transport = std::string(word.substr(0, word.find(' ')));
      }
      unsigned long long n = 0, e = 0;
      if (std::sscanf(std::string(rest).c_str(), "%llu messages, %llu errors", &n, &e) == 2) {
        r.messages = n;
        r.errors = e;
      }
    }
    return r;
  }

 private:
  std::string name_;
  std::string log_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

// ---- payloads and their replies ------------------------------------------------

// Message `seq`: its number in kSeqDigits decimal digits, then lower-case
// letters that shift with it: fresh bytes in every message.
class Payloads {
 public:
  Payloads(std::size_t size, std::string method) : size_(size), method_(std::move(method)) {
    const std::size_t filler = size_ - kSeqDigits;
    lower_.resize(filler + 26);
    for (std::size_t i = 0; i < lower_.size(); ++i) lower_[i] = static_cast<char>('a' + i % 26);
    upper_ = lower_;
    for (char& c : upper_) c = static_cast<char>(c - 'a' + 'A');
  }

  void write(std::uint64_t seq, std::string& out) const {
    out.resize(size_);
    char digits[32];
    std::snprintf(digits, sizeof digits, "%0*llu", static_cast<int>(kSeqDigits),
                  static_cast<unsigned long long>(seq));
    std::memcpy(out.data(), digits, kSeqDigits);
    std::memcpy(out.data() + kSeqDigits, lower_.data() + offset(seq), size_ - kSeqDigits);
  }

  // The sequence number the reply answers, if it is the right reply to
  // some message (sha256: 0 when it is 64 lower-case hex digits; the
  // digest is not traced back to its message).
  std::optional<std::uint64_t> check(std::string_view reply) const {
    if (method_ == "sha256") {
      if (reply.size() != 64) return std::nullopt;
      for (char c : reply) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return std::nullopt;
      }
      return 0;
    }
    if (reply.size() != size_) return std::nullopt;
    std::string reversed;
    if (method_ == "reverse") {
      reversed.assign(reply.rbegin(), reply.rend());
      reply = reversed;
    }
    std::uint64_t seq = 0;
    for (std::size_t i = 0; i < kSeqDigits; ++i) {
      const char c = reply[i];
      if (c < '0' || c > '9') return std::nullopt;
      seq = seq * 10 + static_cast<std::uint64_t>(c - '0');
    }
    const std::string& letters = method_ == "upper" ? upper_ : lower_;
    if (std::memcmp(reply.data() + kSeqDigits, letters.data() + offset(seq), size_ - kSeqDigits) != 0) {
      return std::nullopt;
    }
    return seq;
  }

  bool traced() const noexcept { return method_ != "sha256"; }

 private:
  static std::size_t offset(std::uint64_t seq) noexcept { return static_cast<std::size_t>(seq % 26); }

  std::size_t size_;
  std::string method_;
  std::string lower_, upper_;  // the filler, 26 bytes longer: a window per seq
};

// Every reply checked: right for its message, each message answered once.
class ReplyCheck {
 public:
  ReplyCheck(const Payloads& payloads, std::uint64_t total) : payloads_(payloads), seen_(total, false) {}

  void operator()(std::string_view reply) {
    const auto seq = payloads_.check(reply);
    if (!seq) {
      ++bad_;
      return;
    }
    if (payloads_.traced()) {
      if (*seq >= seen_.size() || seen_[*seq]) {
        ++bad_;
        return;
      }
      seen_[*seq] = true;
    }
    ++ok_;
  }
  std::uint64_t ok() const noexcept { return ok_; }
  std::uint64_t bad() const noexcept { return bad_; }

 private:
  const Payloads& payloads_;
  std::vector<bool> seen_;
  std::uint64_t ok_ = 0, bad_ = 0;
};

// ---- the summary ---------------------------------------------------------------

std::string rate(double per_s) {
  if (per_s >= 1e6) return fmt::format("{:.2f} M", per_s / 1e6);
  if (per_s >= 1e3) return fmt::format("{:.0f} k", per_s / 1e3);
  return fmt::format("{:.0f}", per_s);
}

std::string bytes(std::size_t n) {
  if (n >= (1u << 20) && n % (1u << 20) == 0) return fmt::format("{} MiB", n >> 20);
  if (n >= (1u << 10) && n % (1u << 10) == 0) return fmt::format("{} KiB", n >> 10);
  return fmt::format("{} B", n);
}

// Pools sized for the payload: the farm's Context and segment hold the
// client's window of messages several times over (its queue, the master's
// routes and in-flight table, the replies), within a memory budget; the
// client's window shrinks when big blocks are few. Workers on ZeroMQ
// receive into their own Context's default pool: their credits are cut to
// what its class holds.
struct Sizing {
  std::size_t block = 256;        // the size class of one message
  std::uint32_t blocks = 0;       // its count in the farm's pools
  std::uint32_t window = 256;     // the client's messages in flight
  std::uint32_t zmq_credits = 0;  // a worker's credits at most on tcp/ipc
};

constexpr std::size_t kMessageRoom = 1024;                 // fields, frame header, topic
constexpr std::size_t kPoolBudget = std::size_t{256} << 20;  // per pool, for the payload's class
constexpr std::uint32_t kClientWindow = 256;

Sizing size_for(std::size_t payload) {
  Sizing z;
  z.block = std::max<std::size_t>(256, std::bit_ceil(payload + kMessageRoom));
  const auto cls = static_cast<std::size_t>(std::countr_zero(z.block) - std::countr_zero(std::size_t{256}));
  const std::uint32_t have = std::max(transport::default_context_pool().blocks[cls], shm::default_host_pool().blocks[cls]);
  const auto budget = static_cast<std::uint32_t>(std::min<std::size_t>(4 * kClientWindow, kPoolBudget / z.block));
  z.blocks = std::max(have, budget);
  z.window = std::clamp<std::uint32_t>(z.blocks / 4, 1, kClientWindow);
  z.zmq_credits = std::max<std::uint32_t>(1, transport::default_context_pool().blocks[cls] / 4);
  return z;
}

std::string exe_path() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("/proc/self/exe") : p.string();
}

// The environment with PALM_TRANSPORT set to `mode`.
std::vector<std::string> worker_env(std::string_view mode) {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (std::string_view(*e).starts_with("PALM_TRANSPORT=")) continue;
    env.emplace_back(*e);
  }
  env.push_back(fmt::format("PALM_TRANSPORT={}", mode));
  return env;
}

// ---- the farm ------------------------------------------------------------------

int run_farm(const FarmOptions& o) {
  // Before any thread starts: every thread inherits the mask (signals.hpp).
  if (!block_stop_signals()) return fail(kCommand, "cannot block SIGINT/SIGTERM");
  StopSignals signals([](int) { g_cancel.store(true, std::memory_order_release); });
  int code = kExitFailure;
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

  const bool ipc = o.transport == "ipc";
  // What the workers and the client ask for: ZeroMQ for tcp and ipc.
  const std::string_view peer_mode = o.transport == "shm" ? "shm" : "tcp";
  TempDir dir;
  if (dir.path().empty()) return failed(fmt::format("cannot create a temp dir in /tmp: {}", std::strerror(errno)));

  const Sizing sizing = size_for(o.payload);
  transport::ContextOptions ctx_options;
  ctx_options.pool.set_blocks(sizing.block, sizing.blocks);
  ctx_options.shm.pool.set_blocks(sizing.block, sizing.blocks);
  auto ctx = transport::Context::create(ctx_options);
  if (!ctx) return failed(ctx.error().describe());
  const std::uint32_t credits = ipc || o.transport == "tcp" ? std::min(o.credits, sizing.zmq_credits) : o.credits;

  servers::MasterConfig cfg;
  cfg.server.name = fmt::format("farm-{}", ::getpid());
  cfg.server.db_address = "tcp://127.0.0.1:*";
  cfg.server.log_level = *level;
  cfg.server.shm = !ipc;
  if (ipc) {
    cfg.pull_address = "ipc://" + dir.path() + "/pull";
    cfg.pub_address = "ipc://" + dir.path() + "/pub";
    cfg.worker_push_address = "ipc://" + dir.path() + "/wpush";
    cfg.worker_pull_address = "ipc://" + dir.path() + "/wpull";
    cfg.dispatch_address = "ipc://" + dir.path() + "/dispatch";
  } else {
    cfg.pull_address = cfg.pub_address = "tcp://127.0.0.1:*";
    cfg.worker_push_address = cfg.worker_pull_address = "tcp://127.0.0.1:*";
  }
  std::string segment;
  std::vector<std::unique_ptr<WorkerProcess>> procs;
  std::vector<WorkerProcess::Report> reports;
  servers::DispatchStats dispatch;
  std::string summary;
  {
    servers::Master master(*ctx, cfg);
    std::unique_ptr<servers::Client> client;
    // Every way out of this block: the client, the workers, the master.
    const auto teardown = [&] {
      client.reset();
      // The workers leave now, as they should: not a warning.
      auto& log = master.logger();
      if (log.level() < spdlog::level::err) log.set_level(spdlog::level::err);
      std::vector<WorkerProcess*> ps;
      for (auto& p : procs) ps.push_back(p.get());
      WorkerProcess::stop_all(ps);
      master.stop();
    };
    const auto give_up = [&](std::string_view reason) {
      teardown();
      return failed(reason);
    };

    if (auto r = master.start(); !r) return failed(r.error().describe());
    segment = master.segment();

    // The workers.
    const std::string exe = exe_path();
    const auto env = worker_env(peer_mode);
    for (unsigned i = 0; i < o.workers; ++i) {
      const std::string name = fmt::format("farm-worker-{}", i);
      auto& p = procs.emplace_back(std::make_unique<WorkerProcess>(name, dir.path() + "/" + name + ".log"));
      const std::vector<std::string> args = {exe,      "worker",        "--name",    name,
                                             "--db",   master.db_address(), "--transport", std::string(peer_mode),
                                             "--credits", std::to_string(credits), "--log-level", "WARNING"};
      if (auto why = p->start(exe, args, env); !why.empty()) return give_up(why);
    }
    // Until the master sees every one of them.
    const auto join_deadline = Clock::now() + kJoinTimeout;
    for (;;) {
      const auto s = master.dispatch_stats();
      const auto attached = s.workers_shm + s.workers_tcp;
      if (attached >= o.workers) break;
      if (cancelled()) return give_up("interrupted");
      for (auto& p : procs) {
        if (p->exited()) return give_up(fmt::format("worker {}: {}", p->name(), p->failure()));
      }
      if (Clock::now() >= join_deadline) {
        return give_up(fmt::format("{} of {} workers joined the master in {} s", attached, o.workers,
                                   std::chrono::duration_cast<std::chrono::seconds>(kJoinTimeout).count()));
      }
      std::this_thread::sleep_for(10ms);
    }

    // The client.
    servers::ClientOptions co;
    co.server_name = cfg.server.name;
    co.db_address = master.db_address();
    co.transport = o.transport == "shm" ? shm::TransportMode::kShm : shm::TransportMode::kTcp;
    co.log_level = *level;
    co.timeout = kClientTimeout;
    co.cancel = &g_cancel;
    co.window = sizing.window;
    if (ipc) {  // open_auto takes tcp only: the ipc addresses as they are
      co.this_config = true;
      co.push_address = master.pull_address();
      co.sub_address = master.pub_address();
    }
    auto c = servers::Client::connect(*ctx, co);
    if (!c) return give_up("client: " + c.error().describe());
    client = std::move(*c);

    // The job: M messages streamed, every reply checked.
    const Payloads payloads(o.payload, o.method);
    ReplyCheck check(payloads, o.messages + kEvals);
    const std::string function = "_." + o.method;
    std::uint64_t sent = 0;
    const auto t0 = Clock::now();
    auto replies = client->job(
        function,
        [&](std::string& payload) {
          if (sent == o.messages || cancelled()) return false;
          payloads.write(sent++, payload);
          return true;
        },
        [&](std::string_view reply) { check(reply); }, o.messages);
    const auto t1 = Clock::now();
    if (cancelled()) return give_up("interrupted");
    if (!replies) return give_up("job: " + replies.error().describe());
    if (*replies != o.messages) {
      return give_up(fmt::format("job: {} replies to {} messages", *replies, o.messages));
    }
    const std::uint64_t job_ok = check.ok();
    if (check.bad() != 0) {
      return give_up(fmt::format("{} of {} replies wrong for {}", check.bad(), *replies, function));
    }

    // Round trips: sequential evals.
    std::vector<double> trips;
    trips.reserve(kEvals);
    std::string payload;
    for (int i = 0; i < kEvals; ++i) {
      payloads.write(o.messages + static_cast<std::uint64_t>(i), payload);
      const auto a = Clock::now();
      auto reply = client->eval(function, std::string_view(payload));
      const auto b = Clock::now();
      if (cancelled()) return give_up("interrupted");
      if (!reply) return give_up("eval: " + reply.error().describe());
      check(*reply);
      trips.push_back(std::chrono::duration<double, std::micro>(b - a).count());
    }
    if (check.bad() != 0) return give_up(fmt::format("{} of {} eval replies wrong", check.bad(), kEvals));
    std::sort(trips.begin(), trips.end());

    dispatch = master.dispatch_stats();
    teardown();
    for (auto& p : procs) reports.push_back(p->report());

    const double secs = std::chrono::duration<double>(t1 - t0).count();
    const double per_s = static_cast<double>(o.messages) / secs;
    const std::string via = o.transport;
    summary += fmt::format("palm farm: {} messages of {} through {}, {} worker{} over {}\n", o.messages,
                           bytes(o.payload), function, o.workers, o.workers == 1 ? "" : "s", via);
    summary += fmt::format("  {:.2f} s, {} messages/s, {:.1f} MB/s of payload\n", secs, rate(per_s),
                           per_s * static_cast<double>(o.payload) / 1e6);
    summary += fmt::format("  round trip p50 {:.0f} us, p99 {:.0f} us ({} evals)\n",
                           trips[trips.size() / 2], trips[trips.size() * 99 / 100], kEvals);
    std::string workers_line = "  workers:";
    for (std::size_t i = 0; i < procs.size(); ++i) {
      const auto& r = reports[i];
      workers_line += fmt::format("{} {} {} {}", i == 0 ? "" : ",", procs[i]->name(), r.transport,
                                  r.messages ? std::to_string(*r.messages) : std::string("?"));
    }
    summary += workers_line + "\n";
    summary += fmt::format(
        "  master dispatched: shm {}, {} {} (redispatched {}, duplicates {})\n", dispatch.dispatched_shm,
        ipc ? "ipc" : "tcp", dispatch.dispatched_tcp, dispatch.redispatched, dispatch.duplicates);
    summary += fmt::format("  every reply checked: {} ok{}\n", job_ok,
                           payloads.traced() ? "" : " (64 hex digits each)");
    code = kExitOk;
  }
  ctx->shutdown();  // removes the master's segment
  signals.stop();
  if (cancelled()) return kExitInterrupted;
  if (!segment.empty()) {
    std::error_code ec;
    if (std::filesystem::exists("/dev/shm/" + segment, ec)) {
      return fail(kCommand, fmt::format("the master's segment is still in /dev/shm/{}", segment));
    }
    summary += fmt::format("  segment {} removed\n", segment);
  }
  std::fputs(summary.c_str(), stdout);
  std::fflush(stdout);
  return code;
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
  cmd->add_option("--credits", o->credits, "Messages each worker holds at most")
      ->check(CLI::Range(1u, 1u << 20))
      ->capture_default_str();
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
