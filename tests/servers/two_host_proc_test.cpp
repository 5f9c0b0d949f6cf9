// Transport auto-selection across two "hosts" (DESIGN.md "Transports and
// auto-selection"): two network namespaces joined by a veth pair
// (198.18.0.1/30 and 198.18.0.2/30, the benchmarking range), the second with
// its own /dev/shm (a tmpfs in a mount namespace of its own), so its host
// identity differs from the server's by the /dev/shm alone.
//
//   namespace A: the server process. A Context binding one kPull on
//                tcp://198.18.0.1:PORT and on shm://SEGMENT/pull, and a
//                servers::CacheService on tcp://198.18.0.1:DBPORT presetting
//                __palm.host and __palm.shm:PORT. It counts what each pull
//                receives and reports the counts when asked.
//   namespace B: a peer with its own /dev/shm. open_auto on the tcp address
//                must pick tcp; with PALM_TRANSPORT=shm it must fail naming
//                the /dev/shm.
//   namespace A: the same peer beside the server must pick shm.
//
// The server's counts prove which endpoint carried the messages. Peers are
// processes of this binary (spawn_peer) that enter their namespaces
// themselves before any thread starts: setns(2) into /var/run/netns/NAME
// (what `ip netns exec` does) and, for B, unshare(CLONE_NEWNS) + a private
// tmpfs on /dev/shm (what `unshare -m sh -c 'mount -t tmpfs ...'` does).
// Namespaces and links are made with iproute2 (`ip`), named after this
// process's pid, and removed by an RAII guard whether the tests pass or not;
// children are killed by pid first. Needs root (CAP_SYS_ADMIN and
// CAP_NET_ADMIN): without it the tests fail saying so.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "palm/core/codec.hpp"
#include "palm/servers/cache_service.hpp"
#include "palm/transport/auto_select.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/shm/host.hpp"
#include "palm/transport/shm/host_identity.hpp"
#include "peer.hpp"

extern char** environ;

namespace palm::servers {
namespace {

using namespace std::chrono_literals;
using transport::Context;
using transport::Delivery;
using transport::EndpointSpec;
using transport::Pattern;
using transport::SendResult;

constexpr const char* kServerIp = "198.18.0.1";
constexpr const char* kPeerIp = "198.18.0.2";
constexpr int kMessages = 200;

// ---- running ip(8) -----------------------------------------------------------

struct CommandRun {
  int exit_code = -1;  // -1: not started, or killed at the deadline
  std::string output;  // stdout and stderr
};

// Runs argv (PATH lookup) with a deadline; kills that pid only if it is late.
CommandRun run_command(const std::vector<std::string>& args, std::chrono::milliseconds deadline = 10s) {
  CommandRun r;
  std::vector<std::string> argv_s = args;
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return r;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDERR_FILENO);
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    r.output = std::string("cannot run ") + args[0] + ": " + std::strerror(rc);
    return r;
  }
  const auto end = std::chrono::steady_clock::now() + deadline;
  bool killed = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    if (left <= 0ms) {
      ::kill(pid, SIGKILL);  // the process this function started
      killed = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[1024];
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;  // EOF: the command is done
    r.output.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!killed && WIFEXITED(st)) r.exit_code = WEXITSTATUS(st);
  return r;
}

std::string describe(const std::vector<std::string>& args, const CommandRun& r) {
  std::string s;
  for (const auto& a : args) s += (s.empty() ? "" : " ") + a;
  return "`" + s + "` exited " + std::to_string(r.exit_code) + ": " + r.output;
}

// ---- the two hosts -------------------------------------------------------------

// A zombie is dead too (a reaper slow to collect it still answers kill(0)).
bool pid_alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const std::size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

// The pid in "<prefix><pid>-...", or 0.
pid_t pid_in(const std::string& name, const std::string& prefix) {
  if (name.rfind(prefix, 0) != 0) return 0;
  return static_cast<pid_t>(std::atol(name.c_str() + prefix.size()));
}

// What a test process left when it died before its guards ran (SIGKILL, a
// crash): namespaces "palm-2h-<pid>-a|b" and segments
// "palm-test-<pid>-N-2h" of dead pids. Removed at the next start.
void remove_stale_leftovers() {
  const CommandRun list = run_command({"ip", "netns", "list"});
  std::istringstream in(list.output);
  std::string line;
  while (std::getline(in, line)) {
    const std::string name = line.substr(0, line.find(' '));
    const pid_t pid = pid_in(name, "palm-2h-");
    if (pid > 0 && pid != ::getpid() && !pid_alive(pid)) run_command({"ip", "netns", "del", name});
  }
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm", ec)) {
    const std::string name = entry.path().filename().string();
    const pid_t pid = pid_in(name, "palm-test-");
    if (pid > 0 && pid != ::getpid() && name.ends_with("-2h") && !pid_alive(pid)) {
      ::shm_unlink(("/" + name).c_str());
    }
  }
}

// Two network namespaces joined by a veth pair. The destructor deletes both
// namespaces (which deletes the pair); processes still inside keep theirs
// alive until they exit, so owners kill their children first.
class TwoHosts {
 public:
  TwoHosts()
      : a_("palm-2h-" + std::to_string(::getpid()) + "-a"),
        b_("palm-2h-" + std::to_string(::getpid()) + "-b"),
        veth_a_("p2h" + std::to_string(::getpid()) + "a"),
        veth_b_("p2h" + std::to_string(::getpid()) + "b") {}
  TwoHosts(const TwoHosts&) = delete;  // one owner deletes the namespaces
  TwoHosts& operator=(const TwoHosts&) = delete;
  ~TwoHosts() {
    for (const std::string& ns : created_) run_command({"ip", "netns", "del", ns});
    // A pair not yet moved into a namespace lives in ours.
    if (link_made_) run_command({"ip", "link", "del", veth_a_});
  }

  // Creates both; an error names the command and why it failed.
  std::optional<std::string> create() {
    if (::geteuid() != 0) {
      return "this test makes network namespaces and mounts a tmpfs: it needs root "
             "(CAP_SYS_ADMIN, CAP_NET_ADMIN); euid is " + std::to_string(::geteuid());
    }
    remove_stale_leftovers();
    const std::vector<std::vector<std::string>> steps = {
        {"ip", "netns", "add", a_},
        {"ip", "netns", "add", b_},
        {"ip", "link", "add", veth_a_, "type", "veth", "peer", "name", veth_b_},
        {"ip", "link", "set", veth_a_, "netns", a_},
        {"ip", "link", "set", veth_b_, "netns", b_},
        {"ip", "-n", a_, "addr", "add", std::string(kServerIp) + "/30", "dev", veth_a_},
        {"ip", "-n", b_, "addr", "add", std::string(kPeerIp) + "/30", "dev", veth_b_},
        {"ip", "-n", a_, "link", "set", "lo", "up"},
        {"ip", "-n", b_, "link", "set", "lo", "up"},
        {"ip", "-n", a_, "link", "set", veth_a_, "up"},
        {"ip", "-n", b_, "link", "set", veth_b_, "up"},
    };
    for (std::size_t i = 0; i < steps.size(); ++i) {
      const CommandRun r = run_command(steps[i]);
      if (r.exit_code != 0) {
        return "cannot make the two hosts (network namespaces need CAP_SYS_ADMIN and "
               "CAP_NET_ADMIN): " + describe(steps[i], r);
      }
      if (i < 2) created_.push_back(steps[i][3]);
      if (i == 2) link_made_ = true;
      if (i == 3) link_made_ = false;  // in namespace A now: deleted with it
    }
    return std::nullopt;
  }

  const std::string& a() const { return a_; }
  const std::string& b() const { return b_; }

 private:
  std::string a_, b_, veth_a_, veth_b_;
  std::vector<std::string> created_;
  bool link_made_ = false;
};

// What a peer does first, single-threaded: die with the test process; join network namespace `netns`
// and, with `own_shm`, a mount namespace of its own with a fresh tmpfs on
// /dev/shm (private: the mount does not propagate back). Returns an error
// text, or "" when done.
std::string enter_host(const std::string& netns, bool own_shm) {
  // A test process killed outright takes its peers with it (its guard
  // cannot run; the next run removes the namespaces it left).
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return std::string("prctl: ") + std::strerror(errno);
  if (::getppid() == 1) return "the test process is gone";
  const std::string path = "/var/run/netns/" + netns;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "open " + path + ": " + std::strerror(errno);
  const int rc = ::setns(fd, CLONE_NEWNET);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return "setns(" + path + ", CLONE_NEWNET): " + std::strerror(err);
  if (!own_shm) return {};
  if (::unshare(CLONE_NEWNS) != 0) return std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno);
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return std::string("mount --make-rprivate /: ") + std::strerror(errno);
  }
  if (::mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m") != 0) {
    return std::string("mount tmpfs /dev/shm: ") + std::strerror(errno);
  }
  return {};
}

transport::ContextOptions small_options() {
  transport::ContextOptions o;
  o.transport.command_timeout = 5s;
  return o;
}

// The payload of message i, and the check the server makes.
std::string payload_of(int i) { return "two-hosts " + std::to_string(i); }

// ---- the server (namespace A) ----------------------------------------------------

// Counts deliveries of one pull endpoint on a thread until stopped.
class Counter {
 public:
  Counter(transport::Endpoint& ep, std::mutex& m, std::condition_variable& cv)
      : ep_(ep), m_(m), cv_(cv), thread_([this] { run(); }) {}
  Counter(const Counter&) = delete;  // owns a thread
  Counter& operator=(const Counter&) = delete;
  ~Counter() {
    stop_.store(true, std::memory_order_relaxed);  // relaxed: polled, joined below
    thread_.join();
  }
  int good = 0;  // under m_
  int bad = 0;   // under m_

 private:
  void run() {
    while (!stop_.load(std::memory_order_relaxed)) {
      Delivery d;
      if (ep_.recv_for(d, 20ms) != WaitResult::kReady) continue;
      auto v = d.frame.view();
      const bool ok = v && std::string_view(reinterpret_cast<const char*>(v->message.payload.data()),
                                            v->message.payload.size())
                               .starts_with("two-hosts ");
      d.frame.reset();  // before the endpoint (a shm frame points into its pool)
      {
        std::lock_guard lock(m_);
        ++(ok ? good : bad);
      }
      cv_.notify_all();
    }
  }
  transport::Endpoint& ep_;
  std::mutex& m_;
  std::condition_variable& cv_;
  std::atomic<bool> stop_{false};
  std::thread thread_;  // last: starts once the members above exist
};

// args: NETNS SEGMENT REPORT_FD COMMAND_FD
// Reports "ready PORT DBPORT"; then answers commands: "wait T S" (waits up
// to 10 s for at least T tcp and S shm messages) -> "counts tcp=X shm=Y
// bad=Z"; "exit". Any error: "error ...", exit 1. With no command for 60 s
// it exits (the test is gone).
PALM_TEST_PEER(two_host_server) {
  const int report = std::atoi(args.at(2).c_str());
  const int command = std::atoi(args.at(3).c_str());
  const auto fail = [&](const std::string& what) {
    test::write_line(report, "error " + what);
    return 1;
  };
  if (auto e = enter_host(args.at(0), false); !e.empty()) return fail(e);
  const std::string segment = args.at(1);
  auto ctx = Context::create(small_options());
  if (!ctx) return fail(ctx.error().describe());
  auto tcp = ctx->open(EndpointSpec::bind_to(Pattern::kPull, std::string("tcp://") + kServerIp + ":*"));
  if (!tcp) return fail("tcp bind: " + tcp.error().describe());
  auto shm = ctx->open(EndpointSpec::bind_to(Pattern::kPull, "shm://" + segment + "/pull"));
  if (!shm) return fail("shm bind: " + shm.error().describe());
  const std::string port = (*tcp)->address().substr((*tcp)->address().rfind(':') + 1);
  auto id = shm::host_identity();
  if (!id) return fail(id.error().describe());
  transport::ShmService service;
  service.segment = segment;
  service.service = "pull";
  service.nonce = dynamic_cast<shm::ShmEndpoint&>(**shm).nonce();

  CacheServiceOptions co;
  co.name = "two_hosts";
  co.db_address = std::string("tcp://") + kServerIp + ":*";
  CacheService cache(*ctx, co);
  cache.preset_cache({{std::string(transport::kHostKey), id->to_string()},
                      {transport::shm_key(port), service.to_string()}});
  if (auto r = cache.start(); !r) return fail("cache: " + r.error().describe());
  const std::string db_port = cache.address().substr(cache.address().rfind(':') + 1);

  std::mutex m;
  std::condition_variable cv;
  {
    Counter on_tcp(**tcp, m, cv);
    Counter on_shm(**shm, m, cv);
    test::write_line(report, "ready " + port + " " + db_port);
    for (;;) {
      auto line = test::read_line(command, 60s);
      if (!line || *line == "exit") break;
      int want_tcp = 0, want_shm = 0;
      if (std::sscanf(line->c_str(), "wait %d %d", &want_tcp, &want_shm) != 2) return fail("bad command " + *line);
      std::unique_lock lock(m);
      cv.wait_for(lock, 10s, [&] { return on_tcp.good >= want_tcp && on_shm.good >= want_shm; });
      test::write_line(report, "counts tcp=" + std::to_string(on_tcp.good) + " shm=" +
                                   std::to_string(on_shm.good) + " bad=" + std::to_string(on_tcp.bad + on_shm.bad));
    }
  }
  cache.stop();
  (*tcp)->close();
  (*shm)->close();
  ctx->shutdown();  // removes the segment
  return 0;
}

// ---- the peer (namespace B or A) ---------------------------------------------------

// args: NETNS OWN_SHM(0|1) MODE(auto|shm) TCP_ADDRESS DB_ADDRESS N REPORT_FD
// Reports "opened scheme=S shm=D tcp=D fallbacks=D" (the endpoint's scheme,
// the changes of auto_choice_counts) and "sent N copies=C", or
// "refused MESSAGE" when open_auto fails, or "error ...".
PALM_TEST_PEER(two_host_peer) {
  const int report = std::atoi(args.at(6).c_str());
  const auto fail = [&](const std::string& what) {
    test::write_line(report, "error " + what);
    return 1;
  };
  // Before any thread: setenv is not thread-safe; setns/unshare want one.
  if (args.at(2) == "shm") {
    ::setenv("PALM_TRANSPORT", "shm", 1);
  } else {
    ::unsetenv("PALM_TRANSPORT");
  }
  if (auto e = enter_host(args.at(0), args.at(1) == "1"); !e.empty()) return fail(e);
  auto ctx = Context::create(small_options());
  if (!ctx) return fail(ctx.error().describe());
  const auto before = transport::auto_choice_counts();
  transport::AutoOptions ao;
  ao.discovery_timeout = 5s;
  auto push = transport::open_auto(*ctx, EndpointSpec::connect_to(Pattern::kPush, args.at(3)), args.at(4), ao);
  if (!push) {
    test::write_line(report, "refused " + push.error().message);
    return 0;
  }
  const auto after = transport::auto_choice_counts();
  test::write_line(report, std::string("opened scheme=") + transport::to_string((*push)->scheme()) +
                               " shm=" + std::to_string(after.shm - before.shm) +
                               " tcp=" + std::to_string(after.tcp - before.tcp) +
                               " fallbacks=" + std::to_string(after.fallbacks - before.fallbacks));
  auto* on_shm = dynamic_cast<shm::ShmEndpoint*>(push->get());
  const int n = std::atoi(args.at(5).c_str());
  for (int i = 0; i < n; ++i) {
    const std::string text = payload_of(i);
    MessageView m;
    m.function = "two_hosts.count";
    m.payload = std::as_bytes(std::span<const char>(text.data(), text.size()));
    // In the segment's pool when on shm: the frame crosses without a copy.
    auto frame = on_shm ? on_shm->build(m) : ctx->build(m);
    if (!frame) return fail("build: " + frame.error().describe());
    const SendResult r = (*push)->send_for(*frame, 5s);
    if (r != SendResult::kQueued) return fail("send " + std::to_string(i) + ": " + transport::to_string(r));
  }
  const std::uint64_t copies = on_shm ? on_shm->copies() : 0;
  (*push)->close();  // flushes (tcp: bounded by the linger); shm: what was sent is delivered
  test::write_line(report, "sent " + std::to_string(n) + " copies=" + std::to_string(copies));
  ctx->shutdown();
  return 0;
}

// ---- the tests -----------------------------------------------------------------------

struct Counts {
  int tcp = -1, shm = -1, bad = -1;
};

// The namespaces and the server, shared by the tests of the suite (one
// server: its counts accumulate; each test waits for its own increase).
struct Bench {
  test::ShmGuard segment{test::unique_name("2h")};  // the server's segment, if it is killed
  TwoHosts hosts;
  test::Pipe server_report, server_command;
  test::Child server;  // destroyed (killed by pid) before the namespaces
  std::string tcp_address, db_address;
  std::string error;  // why the bench could not start

  Bench() {
    if (auto e = hosts.create()) {
      error = *e;
      return;
    }
    server = test::spawn_peer("two_host_server", {hosts.a(), segment.name(), std::to_string(server_report.w),
                                                  std::to_string(server_command.r)});
    auto ready = server_report.read_line(20s);
    if (!ready || ready->rfind("ready ", 0) != 0) {
      error = "the server did not start: " + ready.value_or("no report within 20 s");
      return;
    }
    std::istringstream in(ready->substr(6));
    std::string port, db_port;
    in >> port >> db_port;
    tcp_address = std::string("tcp://") + kServerIp + ":" + port;
    db_address = std::string("tcp://") + kServerIp + ":" + db_port;
  }
  Bench(const Bench&) = delete;  // owns processes and namespaces
  Bench& operator=(const Bench&) = delete;
  ~Bench() {
    if (server.running()) {
      test::write_line(server_command.w, "exit");
      if (!server.exit_code_within(10s)) server.kill_and_reap();
    }
  }

  // Waits (bounded, in the server) until it counted at least these many.
  Counts wait_counts(int tcp, int shm) {
    Counts c;
    if (!test::write_line(server_command.w, "wait " + std::to_string(tcp) + " " + std::to_string(shm))) return c;
    auto line = server_report.read_line(20s);
    if (!line) return c;
    std::sscanf(line->c_str(), "counts tcp=%d shm=%d bad=%d", &c.tcp, &c.shm, &c.bad);
    return c;
  }
};

struct PeerRun {
  std::string opened;   // "opened ..." or "refused ..." or "error ..."
  std::string sent;     // "sent ..." (empty when refused)
  std::optional<int> exit_code;
};

class TwoHostAutoSelect : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { bench_ = new Bench(); }
  static void TearDownTestSuite() {
    delete bench_;
    bench_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(bench_->error.empty()) << bench_->error; }

  // Runs the peer in `netns` (with its own /dev/shm or not) to completion.
  static PeerRun run_peer(const std::string& netns, bool own_shm, const std::string& mode) {
    test::Pipe report;
    test::Child peer = test::spawn_peer(
        "two_host_peer", {netns, own_shm ? "1" : "0", mode, bench_->tcp_address, bench_->db_address,
                          std::to_string(kMessages), std::to_string(report.w)});
    PeerRun r;
    r.opened = report.read_line(20s).value_or("no report within 20 s");
    if (r.opened.rfind("opened ", 0) == 0) r.sent = report.read_line(20s).value_or("no report within 20 s");
    r.exit_code = peer.exit_code_within(20s);  // killed by its Child otherwise
    return r;
  }

  static Bench* bench_;
};
Bench* TwoHostAutoSelect::bench_ = nullptr;

// Another /dev/shm (a container's, another machine's): the published host
// identity differs, auto mode stays on TCP and the tcp pull gets them all.
TEST_F(TwoHostAutoSelect, APeerOnAnotherHostChoosesTcp) {
  const Counts before = bench_->wait_counts(0, 0);
  ASSERT_GE(before.tcp, 0) << "the server did not report";
  const PeerRun r = run_peer(bench_->hosts.b(), true, "auto");
  EXPECT_EQ(r.opened, "opened scheme=tcp shm=0 tcp=1 fallbacks=0");
  EXPECT_EQ(r.sent, "sent " + std::to_string(kMessages) + " copies=0");
  EXPECT_EQ(r.exit_code, 0);
  const Counts after = bench_->wait_counts(before.tcp + kMessages, before.shm);
  EXPECT_EQ(after.tcp - before.tcp, kMessages);
  EXPECT_EQ(after.shm - before.shm, 0);
  EXPECT_EQ(after.bad, 0);
}

// PALM_TRANSPORT=shm where shm is impossible: an error naming the difference.
TEST_F(TwoHostAutoSelect, ShmModeOnAnotherHostIsAnErrorNamingTheDevShm) {
  const Counts before = bench_->wait_counts(0, 0);
  const PeerRun r = run_peer(bench_->hosts.b(), true, "shm");
  ASSERT_EQ(r.opened.rfind("refused ", 0), 0u) << r.opened;
  EXPECT_NE(r.opened.find("PALM_TRANSPORT=shm"), std::string::npos) << r.opened;
  EXPECT_NE(r.opened.find("different /dev/shm"), std::string::npos) << r.opened;
  EXPECT_EQ(r.exit_code, 0);
  const Counts after = bench_->wait_counts(0, 0);
  EXPECT_EQ(after.tcp, before.tcp);
  EXPECT_EQ(after.shm, before.shm);
}

// Beside the server (its network namespace, its /dev/shm, its pid
// namespace): auto mode attaches to the published segment, nothing copied.
TEST_F(TwoHostAutoSelect, APeerBesideTheServerChoosesShm) {
  const Counts before = bench_->wait_counts(0, 0);
  ASSERT_GE(before.shm, 0) << "the server did not report";
  const PeerRun r = run_peer(bench_->hosts.a(), false, "auto");
  EXPECT_EQ(r.opened, "opened scheme=shm shm=1 tcp=0 fallbacks=0");
  EXPECT_EQ(r.sent, "sent " + std::to_string(kMessages) + " copies=0");
  EXPECT_EQ(r.exit_code, 0);
  const Counts after = bench_->wait_counts(before.tcp, before.shm + kMessages);
  EXPECT_EQ(after.shm - before.shm, kMessages);
  EXPECT_EQ(after.tcp - before.tcp, 0);
  EXPECT_EQ(after.bad, 0);
}

}  // namespace
}  // namespace palm::servers
