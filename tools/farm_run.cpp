// One run of the local farm: see farm_run.hpp.
#include "farm_run.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "farm_client.hpp"
#include "palm/transport/address.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/shm/host.hpp"

extern char** environ;

namespace palm::tools {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kJoinTimeout = 10s;         // every worker attached
constexpr auto kWorkerStopGrace = 3s;      // SIGTERM, then SIGKILL

// ---- the temp dir: workers' logs, ipc sockets --------------------------------

class TempDir {
 public:
  // In $TMPDIR when it is set, as other tools do, else /tmp.
  TempDir() {
    const char* env = std::getenv("TMPDIR");
    base_ = env != nullptr && *env != '\0' ? env : "/tmp";
    std::string tmpl = base_ + "/palm-farm-XXXXXX";
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
  const std::string& base() const noexcept { return base_; }

 private:
  std::string base_;
  std::string path_;  // "" if mkdtemp failed
};

// A file descriptor, closed with its owner.
class Fd {
 public:
  Fd() = default;
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  int get() const noexcept { return fd_; }

 private:
  int fd_ = -1;
};

// ---- a `palm worker` or `palm farm-client` process ---------------------------------

class FarmProcess {
 public:
  // `command`: the palm subcommand it runs, which prefixes its own error line.
  FarmProcess(std::string name, std::string command, std::string log)
      : name_(std::move(name)), command_(std::move(command)), log_(std::move(log)) {}
  ~FarmProcess() { stop_all({this}); }
  FarmProcess(const FarmProcess&) = delete;
  FarmProcess& operator=(const FarmProcess&) = delete;

  // fork + exec `exe` with `args` and `env`; stdout and stderr to the log
  // file. With `out` (>= 0: a pipe's write end) it becomes the child's
  // kFarmReportFd, stdin comes from `in`, and stdout and stderr stay the
  // farm's (no log file is made): the client's log lines reach the user as
  // they did when it was a thread of the farm. Both fds are the child's:
  // the caller closes its copies. "" or the reason it could not start.
  std::string start(const std::string& exe, const std::vector<std::string>& args,
                    const std::vector<std::string>& env, int in = -1, int out = -1) {
    // Everything the child needs is built before fork: between fork and exec
    // only async-signal-safe calls.
    std::vector<char*> argv, envp;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    const int fd = out >= 0 ? -1 : ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0 && fd < 0) return fmt::format("cannot create {}: {}", log_, std::strerror(errno));
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      const int err = errno;
      if (fd >= 0) ::close(fd);
      return fmt::format("cannot start {}: fork: {}", name_, std::strerror(err));
    }
    if (pid == 0) {
      // The child: the farm's signal mask (SIGINT/SIGTERM blocked) is not
      // the worker's business; it ends if the farm dies. Its own process
      // group: a Ctrl-C at the terminal reaches the farm alone, which then
      // stops the client, the workers and the master in that order (the
      // workers taking it too left while the master still dispatched, and
      // the master warned that each had left).
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(127);
      if (out >= 0) {
        ::dup2(in, STDIN_FILENO);
        // dup2 onto itself keeps close-on-exec: cleared by hand then.
        if (out == kFarmReportFd) {
          ::fcntl(out, F_SETFD, 0);
        } else {
          ::dup2(out, kFarmReportFd);
        }
      } else {
        ::dup2(fd, STDOUT_FILENO);
        ::dup2(fd, STDERR_FILENO);
      }
      ::execve(exe.c_str(), argv.data(), envp.data());
      ::_exit(127);
    }
    if (fd >= 0) ::close(fd);
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
  pid_t pid() const noexcept { return pid_; }

  // SIGTERM to each, a bounded wait for all, then SIGKILL for the rest.
  static void stop_all(const std::vector<FarmProcess*>& procs) {
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

  // Why it ended early: its own `palm <command>: <reason>` line, else its
  // status.
  std::string failure() const {
    const std::string prefix = "palm " + command_ + ": ";
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
  FarmWorkerReport report() const {
    FarmWorkerReport r;
    r.name = name_;
    const std::string prefix = "palm worker " + name_ + ": ";
    for (const auto& line : log_lines()) {
      if (!line.starts_with(prefix)) continue;
      const std::string_view rest = std::string_view(line).substr(prefix.size());
      if (const auto over = rest.find(" over "); over != std::string_view::npos) {
        const auto word = rest.substr(over + 6);
        r.transport = std::string(word.substr(0, word.find(' ')));
      }
      unsigned long long n = 0, e = 0;
      if (std::sscanf(std::string(rest).c_str(), "%llu messages, %llu errors", &n, &e) == 2) r.messages = n;
    }
    return r;
  }

 private:
  std::string name_;
  std::string command_;
  std::string log_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

constexpr std::size_t kMessageRoom = 1024;                 // fields, frame header, topic
constexpr std::size_t kPoolBudget = std::size_t{256} << 20;  // per pool, for the payload's class
constexpr std::uint32_t kClientWindow = 256;

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

// The CPU time of a whole process (every thread, the dead ones included),
// in ns: its CPU-time clock, exact to the scheduler's accounting (pid 0:
// this process). /proc/<pid>/stat utime + stime (clock ticks) if the clock
// cannot be had.
std::optional<std::int64_t> process_cpu_ns(pid_t pid) {
  clockid_t clock = CLOCK_PROCESS_CPUTIME_ID;
  if (pid == 0 || ::clock_getcpuclockid(pid, &clock) == 0) {
    timespec ts{};
    if (::clock_gettime(clock, &ts) == 0) return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  }
  std::ifstream in(fmt::format("/proc/{}/stat", pid == 0 ? ::getpid() : pid));
  std::string stat;
  if (!std::getline(in, stat)) return std::nullopt;
  // Fields after "pid (comm) ": state is the 3rd field, utime the 14th.
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  unsigned long long utime = 0, stime = 0;
  if (std::sscanf(stat.c_str() + close + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                  &stime) != 2) {
    return std::nullopt;
  }
  const long tick = ::sysconf(_SC_CLK_TCK);
  return static_cast<std::int64_t>((utime + stime) * (1'000'000'000ULL / static_cast<unsigned long long>(tick)));
}

// The master's tcp address number `k` from the base: tcp://HOST:* when no
// base port is set, else tcp://HOST:PORT+k.
std::string tcp_address(const FarmRunOptions& o, unsigned k) {
  const std::string host = o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host;
  if (o.port == 0) return fmt::format("tcp://{}:*", host);
  return fmt::format("tcp://{}:{}", host, o.port + k);
}

}  // namespace

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

transport::ContextOptions context_options_for(const Sizing& sizing) {
  transport::ContextOptions options;
  options.pool.set_blocks(sizing.block, sizing.blocks);
  options.shm.pool.set_blocks(sizing.block, sizing.blocks);
  return options;
}

std::string_view to_string(FarmTransport t) noexcept {
  switch (t) {
    case FarmTransport::kShm: return "shm";
    case FarmTransport::kTcp: return "tcp";
    case FarmTransport::kIpc: return "ipc";
  }
  return "?";
}

std::optional<FarmTransport> parse_farm_transport(std::string_view s) noexcept {
  if (s == "shm") return FarmTransport::kShm;
  if (s == "tcp") return FarmTransport::kTcp;
  if (s == "ipc") return FarmTransport::kIpc;
  return std::nullopt;
}

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  // The epsilon keeps 0.999 * 2000 at 1998, not 1997.
  const auto i = static_cast<std::size_t>(q * static_cast<double>(sorted.size()) + 1e-9);
  return sorted[std::min(i, sorted.size() - 1)];
}

void add_farm_address_flags(CLI::App& cmd, std::string& host, std::uint16_t& port) {
  cmd.add_option("--host", host, "Where the master binds: a local address (ZeroMQ tcp)")
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            if (s.empty() || s.find_first_of(" /*[]") != std::string::npos) return "not an address: " + s;
            return {};
          },
          "ADDRESS"))
      ->capture_default_str();
  cmd.add_option("--port", port,
                 "The master's cache port; the next five for its pull, pub, worker push, worker pull and "
                 "dispatcher (default: all chosen by the OS)")
      ->check(CLI::Range(1, 65535 - 5));
}

std::string format_rate(double per_s) {
  if (per_s >= 1e6) return fmt::format("{:.2f} M", per_s / 1e6);
  if (per_s >= 1e3) return fmt::format("{:.0f} k", per_s / 1e3);
  return fmt::format("{:.0f}", per_s);
}

std::string format_bytes(std::size_t n) {
  if (n >= (1u << 20) && n % (1u << 20) == 0) return fmt::format("{} MiB", n >> 20);
  if (n >= (1u << 10) && n % (1u << 10) == 0) return fmt::format("{} KiB", n >> 10);
  return fmt::format("{} B", n);
}

tl::expected<FarmRunResult, std::string> run_farm_once(const FarmRunOptions& o) {
  const auto cancelled = [&] { return o.cancel != nullptr && o.cancel->load(std::memory_order_acquire); };
  const auto progress = [&](FarmPhase phase, double fraction) {
    if (o.progress) o.progress(phase, fraction);
  };
  const auto failed = [&](std::string_view reason) {
    return tl::unexpected<std::string>(cancelled() ? std::string("interrupted") : std::string(reason));
  };
  if (o.payload < kSeqDigits) return failed(fmt::format("a payload of {} B: at least {}", o.payload, kSeqDigits));
  if (o.workers == 0 || o.messages == 0) return failed("no workers or no messages");
  if (o.bypass && o.transport != FarmTransport::kShm) return failed("the bypass is for shm only (--transport shm)");
  progress(FarmPhase::kStart, 0);

  const bool ipc = o.transport == FarmTransport::kIpc;
  const bool shm = o.transport == FarmTransport::kShm;
  // What the workers and the client ask for: ZeroMQ for tcp and ipc.
  const std::string_view peer_mode = shm ? "shm" : "tcp";
  TempDir dir;
  if (dir.path().empty()) return failed(fmt::format("cannot create a temp dir in {}: {}", dir.base(), std::strerror(errno)));

  const Sizing sizing = size_for(o.payload);
  auto ctx = transport::Context::create(context_options_for(sizing));
  if (!ctx) return failed(ctx.error().describe());
  const std::uint32_t credits = shm ? o.credits : std::min(o.credits, sizing.zmq_credits);

  servers::MasterConfig cfg;
  cfg.server.name = fmt::format("farm-{}", ::getpid());
  cfg.server.db_address = tcp_address(o, 0);
  cfg.server.log_level = o.log_level;
  cfg.server.shm = !ipc;
  cfg.bypass = true;  // the default hooks: clients may bypass the master (only a --bypass one does)
  if (ipc) {
    cfg.pull_address = "ipc://" + dir.path() + "/pull";
    cfg.pub_address = "ipc://" + dir.path() + "/pub";
    cfg.worker_push_address = "ipc://" + dir.path() + "/wpush";
    cfg.worker_pull_address = "ipc://" + dir.path() + "/wpull";
    cfg.dispatch_address = "ipc://" + dir.path() + "/dispatch";
  } else {
    cfg.pull_address = tcp_address(o, 1);
    cfg.pub_address = tcp_address(o, 2);
    cfg.worker_push_address = tcp_address(o, 3);
    cfg.worker_pull_address = tcp_address(o, 4);
    if (o.port != 0) cfg.dispatch_address = tcp_address(o, 5);  // else: worker_push's host, port chosen
  }
  FarmRunResult res;
  std::vector<std::unique_ptr<FarmProcess>> procs;
  {
    servers::Master master(*ctx, cfg);
    std::unique_ptr<FarmProcess> client;
    Fd report_fd, client_stdin;  // the client's report (read) and its stdin (written)
    // Every way out of this block: the client (told by its stdin closing,
    // and by SIGTERM), the workers, the master.
    const auto teardown = [&] {
      client_stdin.reset();
      if (client) FarmProcess::stop_all({client.get()});
      // The workers leave now, as they should: not a warning.
      auto& log = master.logger();
      if (log.level() < spdlog::level::err) log.set_level(spdlog::level::err);
      std::vector<FarmProcess*> ps;
      for (auto& p : procs) ps.push_back(p.get());
      FarmProcess::stop_all(ps);
      master.stop();
    };
    const auto give_up = [&](std::string_view reason) {
      teardown();
      return failed(reason);
    };

    if (auto r = master.start(); !r) return failed(r.error().describe());
    res.segment = master.segment();

    // The workers.
    const std::string exe = exe_path();
    const auto env = worker_env(peer_mode);
    for (unsigned i = 0; i < o.workers; ++i) {
      const std::string name = fmt::format("farm-worker-{}", i);
      auto& p = procs.emplace_back(std::make_unique<FarmProcess>(name, "worker", dir.path() + "/" + name + ".log"));
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

    // The client: a process of its own (farm_client.hpp). Its report comes
    // line by line through a pipe; closing the other pipe, its stdin, lets
    // it go once the farm is done with it.
    FarmClientOptions fc;
    fc.server = cfg.server.name;
    fc.db = master.db_address();
    fc.transport = o.transport;
    if (ipc) {
      fc.push = master.pull_address();
      fc.sub = master.pub_address();
    }
    fc.method = o.method;
    fc.payload = o.payload;
    fc.warmup = o.warmup;
    fc.messages = o.messages;
    fc.evals = o.evals;
    fc.bypass = o.bypass;
    fc.progress = static_cast<bool>(o.progress);
    fc.log_level = servers::to_string(o.log_level);
    int report_pipe[2] = {-1, -1}, stop_pipe[2] = {-1, -1};
    if (::pipe2(report_pipe, O_CLOEXEC) != 0 || ::pipe2(stop_pipe, O_CLOEXEC) != 0) {
      const int err = errno;
      for (int fd : {report_pipe[0], report_pipe[1], stop_pipe[0], stop_pipe[1]}) {
        if (fd >= 0) ::close(fd);
      }
      return give_up(fmt::format("cannot make the client's pipes: {}", std::strerror(err)));
    }
    report_fd.reset(report_pipe[0]);
    client_stdin.reset(stop_pipe[1]);
    client = std::make_unique<FarmProcess>("the client", "farm-client", "");  // its output stays the farm's
    std::vector<std::string> client_args = farm_client_args(fc);
    client_args.insert(client_args.begin(), exe);
    const std::string started = client->start(exe, client_args, env, stop_pipe[0], report_pipe[1]);
    ::close(stop_pipe[0]);
    ::close(report_pipe[1]);
    if (!started.empty()) return give_up(started);

    FarmClientReport report;
    std::string partial;  // a line not yet ended
    bool eof = false;
    while (!report.done && !report.error && !eof) {
      if (cancelled()) return give_up("interrupted");
      pollfd p{report_fd.get(), POLLIN, 0};
      const int rc = ::poll(&p, 1, 50);
      if (rc < 0 && errno != EINTR) return give_up(fmt::format("poll: {}", std::strerror(errno)));
      if (rc <= 0) continue;
      char buf[16384];
      const ssize_t n = ::read(report_fd.get(), buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return give_up(fmt::format("reading the client: {}", std::strerror(errno)));
      }
      eof = n == 0;
      partial.append(buf, static_cast<std::size_t>(n));
      for (auto nl = partial.find('\n'); nl != std::string::npos; nl = partial.find('\n')) {
        std::optional<FarmPhase> phase;
        double fraction = 0;
        if (read_farm_client_line(std::string_view(partial).substr(0, nl), report, phase, fraction) && phase) {
          progress(*phase, fraction);
        }
        partial.erase(0, nl + 1);
      }
    }
    if (report.error) return give_up(*report.error);
    if (!report.done) {
      FarmProcess::stop_all({client.get()});
      return give_up("client: " + client->failure());
    }
    if (!(report.seconds > 0)) return give_up("the client reported no time for its job");
    res.client_pid = client->pid();
    res.client_push = report.push;
    res.client_sub = report.sub;
    res.checked_ok = report.checked_ok;
    res.traced = report.traced;
    res.trips_us = std::move(report.trips_us);
    res.bypass = report.bypass;
    if (o.bypass) {
      const std::uint64_t all = o.warmup + o.messages + static_cast<std::uint64_t>(o.evals);
      if (res.bypass.results < all) {
        return give_up(fmt::format("the bypass carried {} of {} messages (client log: is it offered, did workers join?)",
                                   res.bypass.results, all));
      }
    }
    std::sort(res.trips_us.begin(), res.trips_us.end());

    // Idle cost: the whole farm, every process, every thread, at rest.
    if (o.idle.count() > 0) {
      // Sleeps `span`, in slices that notice a cancel; the progress runs
      // over the settling and the window together.
      const auto idle_start = Clock::now();
      const auto idle_total = std::chrono::duration<double>(o.idle_settle + o.idle);
      const auto nap = [&](std::chrono::milliseconds span) {
        const auto until = Clock::now() + span;
        for (auto now = Clock::now(); now < until; now = Clock::now()) {
          if (cancelled()) return false;
          std::this_thread::sleep_for(std::min<Clock::duration>(50ms, until - now));
          progress(FarmPhase::kIdle, (Clock::now() - idle_start) / idle_total);
        }
        return !cancelled();
      };
      const auto farm_cpu = [&]() -> std::optional<std::int64_t> {
        auto total = process_cpu_ns(0);
        const auto c = process_cpu_ns(client->pid());
        if (!total || !c) return std::nullopt;
        *total += *c;
        for (auto& p : procs) {
          const auto w = process_cpu_ns(p->pid());
          if (!total || !w) return std::nullopt;
          *total += *w;
        }
        return total;
      };
      // This thread measures (it naps in 50 ms slices for the progress
      // bar): it is not the farm, so its own CPU time is taken out.
      const auto own_cpu = [] {
        timespec ts{};
        ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
      };
      if (!nap(o.idle_settle)) return give_up("interrupted");
      const auto cpu0 = farm_cpu();
      const std::int64_t own0 = own_cpu();
      const auto a = Clock::now();
      if (!nap(o.idle)) return give_up("interrupted");
      const std::int64_t own1 = own_cpu();
      const auto cpu1 = farm_cpu();
      const auto b = Clock::now();
      if (!cpu0 || !cpu1) return give_up("cannot read the CPU time of the farm's processes");
      const std::int64_t farm_ns = std::max<std::int64_t>(0, *cpu1 - *cpu0 - (own1 - own0));
      res.idle_cpu_percent = 100.0 * static_cast<double>(farm_ns) /
                             static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count());
    }

    res.dispatch = master.dispatch_stats();
    teardown();
    for (auto& p : procs) res.workers.push_back(p->report());

    res.messages = o.messages;
    res.seconds = report.seconds;
    res.msgs_per_s = static_cast<double>(o.messages) / res.seconds;
    res.mb_per_s = res.msgs_per_s * static_cast<double>(o.payload) / 1e6;
  }
  ctx->shutdown();  // removes the master's segment
  if (cancelled()) return failed("interrupted");
  if (!res.segment.empty()) {
    std::error_code ec;
    if (std::filesystem::exists("/dev/shm/" + res.segment, ec)) {
      return failed(fmt::format("the master's segment is still in /dev/shm/{}", res.segment));
    }
  }
  return res;
}

}  // namespace palm::tools
