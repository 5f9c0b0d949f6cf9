// `palm worker` as a process: in pylm mode against the Python peer that
// plays pylm's Master (tests/interop/pylm_master.py), driven by the one that
// plays pylm's Client (pylm_client.py); in palm dispatch mode against a
// master played by this test (a CacheService with palm's keys and
// kDispatcher endpoints on tcp and shm), with PALM_TRANSPORT=shm (so a
// fallback to tcp fails) and =tcp. Every child is bounded by a deadline
// here and killed by its pid only (palm::test::Child); the master's segment
// is removed at the end even on failure (ShmGuard). Loopback ports only.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "palm/servers/cache_service.hpp"
#include "palm/servers/worker.hpp"
#include "palm/transport/auto_select.hpp"
#include "palm/transport/shm/host.hpp"
#include "palm/transport/shm/host_identity.hpp"
#include "peer.hpp"
#include "servers_test_util.hpp"

extern char** environ;

namespace palm::servers {
namespace {

using namespace std::chrono_literals;
using palm::test::Child;
using test::bytes_of;
using test::string_of;
using transport::Delivery;
using transport::EndpointSpec;
using transport::Event;
using transport::Pattern;
using transport::PeerId;
using transport::SendResult;

// A free loopback port now (the kernel's pick; released at once, so another
// process could take it before ours binds: unlikely on a test machine).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

std::string loopback(int port) { return "tcp://127.0.0.1:" + std::to_string(port); }

// Lines of `text` that start with `prefix` (the transport's own log lines
// go to stderr too).
std::vector<std::string> lines_starting(const std::string& text, std::string_view prefix) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t end = std::min(text.find('\n', at), text.size());
    const std::string line = text.substr(at, end - at);
    if (line.starts_with(prefix)) out.push_back(line);
    at = end + 1;
  }
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Starts argv[0] with `argv`, this environment plus `env` (replacing the
// same names), stdout and stderr to files. An unstarted Child on failure.
Child spawn(std::vector<std::string> argv_s, const std::map<std::string, std::string>& env,
            const std::string& out_path, const std::string& err_path) {
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s;
  for (const auto& [k, v] : env) env_s.push_back(k + "=" + v);
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const std::string_view name = entry.substr(0, entry.find('='));
    if (env.count(std::string(name)) == 0) env_s.emplace_back(entry);
  }
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  EXPECT_EQ(rc, 0) << "cannot start " << argv_s[0];
  return rc == 0 ? Child(pid) : Child();
}

// Files of one test's children, removed at the end.
class TempFiles {
 public:
  std::string path(const std::string& tag) {
    paths_.push_back("/tmp/" + palm::test::unique_name(tag) + ".txt");
    return paths_.back();
  }
  ~TempFiles() {
    for (const auto& p : paths_) ::unlink(p.c_str());
  }

 private:
  std::vector<std::string> paths_;
};

const std::map<std::string, std::string> kPythonEnv = {{"PALM_PB2_DIR", PALM_PB2_DIR}};

struct PeerRun {
  std::optional<int> exit_code;  // nullopt: killed at the deadline
  std::string out;
};

// Runs a Python peer (tests/interop/NAME) to its end, bounded by `deadline`.
PeerRun run_python(TempFiles& files, const std::string& script, std::vector<std::string> args,
               std::chrono::milliseconds deadline = 20s) {
  args.insert(args.begin(), {"/usr/bin/python3", std::string(PALM_SOURCE_DIR) + "/tests/interop/" + script});
  const std::string out = files.path("out"), err = files.path("err");
  Child c = spawn(args, kPythonEnv, out, err);
  PeerRun r;
  r.exit_code = c.exit_code_within(deadline);
  if (!r.exit_code) c.kill_and_reap();
  r.out = read_file(out);
  if (r.exit_code != 0) ADD_FAILURE() << script << " stderr: " << read_file(err);
  return r;
}

Child spawn_worker(TempFiles& files, std::vector<std::string> args, const std::string& transport,
                   std::string& out, std::string& err) {
  args.insert(args.begin(), {PALM_BINARY, "worker"});
  out = files.path("worker-out");
  err = files.path("worker-err");
  return spawn(args, {{"PALM_TRANSPORT", transport}}, out, err);
}

// PROTOCOL.md "Message flow": "A worker replaces only the payload and
// pushes the message back: b'0' for an unknown method or an exception";
// "A Worker runs the second '.'-separated field and ignores the server
// part".
TEST(WorkerProc, PalmWorkerServesAPylmMasterForAPylmClient) {
  TempFiles files;
  std::vector<int> ports;
  for (int i = 0; i < 5; ++i) ports.push_back(free_port());
  for (int p : ports) ASSERT_GT(p, 0);
  const std::string db = loopback(ports[0]);
  Child master = spawn({"/usr/bin/python3", std::string(PALM_SOURCE_DIR) + "/tests/interop/pylm_master.py",
                        "--name", "master", "--db", db, "--pull", loopback(ports[1]), "--pub",
                        loopback(ports[2]), "--worker-pull", loopback(ports[3]), "--worker-push",
                        loopback(ports[4]), "--lifetime", "60"},
                       kPythonEnv, files.path("master-out"), files.path("master-err"));
  ASSERT_TRUE(master.running());
  // The master answers its cache: it is up.
  const PeerRun name = run_python(files, "pylm_client.py", {"get", "name", "--server", "master", "--db", db});
  ASSERT_EQ(name.exit_code, 0);
  ASSERT_EQ(name.out, "master\n");

  const std::vector<std::pair<std::string, std::string>> calls = {
      {"_.echo", "hello"}, {"x.upper", "HELLO"}, {"x.fail", "0"}, {"x.nope", "0"}, {"x.foo", "w processed hello"}};
  std::string out, err;
  Child worker = spawn_worker(files, {"--name", "w", "--db", db, "--messages", std::to_string(calls.size())},
                              "auto", out, err);
  ASSERT_TRUE(worker.running());
  for (const auto& [function, expected] : calls) {
    const PeerRun r = run_python(files, "pylm_client.py",
                             {"--server", "master", "--db", db, "--function", function, "--payload", "hello",
                              "--timeout", "15"});
    EXPECT_EQ(r.exit_code, 0) << function;
    EXPECT_EQ(r.out, expected + "\n") << function;
  }
  // --messages: exit 0 once they are answered.
  EXPECT_EQ(worker.exit_code_within(15s), 0) << read_file(err);
  const std::string log = read_file(out);
  EXPECT_NE(log.find("pylm push/pull"), std::string::npos) << log;
  EXPECT_NE(log.find("over tcp"), std::string::npos) << log;
  EXPECT_EQ(log.find("over shm"), std::string::npos) << log;
  EXPECT_NE(log.find("ERROR - Worker w: x.fail: method 'fail' raised"), std::string::npos) << log;
  master.signal(SIGTERM);
  EXPECT_EQ(master.exit_code_within(15s), 0);
}

// palm dispatch against a master played by this process.
class WorkerDispatchProc : public ::testing::Test {
 protected:
  void SetUp() override {
    auto id = shm::host_identity();
    ASSERT_TRUE(id) << id.error().describe();
    auto t = master_.open(EndpointSpec::bind_to(Pattern::kDispatcher, "tcp://127.0.0.1:*"));
    ASSERT_TRUE(t) << t.error().describe();
    tcp_ = std::move(*t);
    auto s = master_.open(EndpointSpec::bind_to(Pattern::kDispatcher, "shm://" + segment_.name() + "/dispatch"));
    ASSERT_TRUE(s) << s.error().describe();
    shm_ = std::move(*s);
    const std::string port = tcp_->address().substr(tcp_->address().rfind(':') + 1);
    transport::ShmService service{segment_.name(), "dispatch", dynamic_cast<shm::ShmEndpoint&>(*shm_).nonce()};
    CacheServiceOptions o;
    o.name = "master";
    o.db_address = "tcp://127.0.0.1:*";
    cache_.emplace(master_, o);
    auto r = cache_->start();
    ASSERT_TRUE(r) << r.error().describe();
    cache_->preset_cache({{"name", "master"},
                          {std::string(kDispatchKey), tcp_->address()},
                          {std::string(transport::kHostKey), id->to_string()},
                          {transport::shm_key(port), service.to_string()}});
  }
  void TearDown() override {
    if (cache_) cache_->stop();
  }

  PeerId wait_joined(transport::Endpoint& dispatcher) {
    for (int i = 0; i < 150; ++i) {
      Delivery d;
      if (dispatcher.recv_for(d, 100ms) != WaitResult::kReady) continue;
      if (d.event == Event::kPeerJoined) {
        EXPECT_EQ(d.credits, 4u);
        return d.peer;
      }
    }
    ADD_FAILURE() << "no worker joined";
    return PeerId::kNone;
  }

  // Dispatches echo/upper/fail/foo to the worker process; checks results.
  void dispatch_and_check(transport::Endpoint& dispatcher) {
    const PeerId peer = wait_joined(dispatcher);
    ASSERT_NE(peer, PeerId::kNone);
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"_.echo", "hello"}, {"x.upper", "HELLO"}, {"x.fail", "0"}, {"x.foo", "w processed hello"}};
    // All in flight at once: 4 credits.
    for (std::size_t i = 0; i < cases.size(); ++i) {
      MessageView m;
      m.client = "ff63be28-4c36-44d1-87a7-5e16c404c9dc";
      m.function = cases[i].first;
      m.payload = bytes_of("hello");
      m.dispatch_id = 500 + i;
      m.flags = 1;
      auto f = master_.build(m);
      ASSERT_TRUE(f);
      ASSERT_EQ(dispatcher.send_for(*f, 5s, {peer}), SendResult::kQueued) << i;
    }
    EXPECT_EQ(dispatcher.credits(peer), 0u);
    std::map<std::uint64_t, std::pair<std::string, std::string>> results;  // by dispatch_id
    for (int i = 0; i < 150 && results.size() < cases.size(); ++i) {
      Delivery d;
      if (dispatcher.recv_for(d, 100ms) != WaitResult::kReady || d.event != Event::kMessage) continue;
      auto v = d.frame.view();
      ASSERT_TRUE(v);
      EXPECT_EQ(v->message.client, "ff63be28-4c36-44d1-87a7-5e16c404c9dc");
      EXPECT_EQ(v->message.flags, 1u);
      results[v->message.dispatch_id] = {string_of(v->message.payload), std::string(v->message.error)};
    }
    ASSERT_EQ(results.size(), cases.size());
    for (std::size_t i = 0; i < cases.size(); ++i) {
      EXPECT_EQ(results[500 + i].first, cases[i].second) << cases[i].first;
      EXPECT_EQ(results[500 + i].second.empty(), cases[i].second != "0") << results[500 + i].second;
    }
    // Each result returned its credit. The worker stays for a fifth message
    // (--messages 5), so it is still attached when this is read.
    EXPECT_EQ(dispatcher.credits(peer), 4u);
    MessageView last;
    last.function = "_.echo";
    last.payload = bytes_of("last");
    last.dispatch_id = 999;
    auto f = master_.build(last);
    ASSERT_TRUE(f);
    ASSERT_EQ(dispatcher.send_for(*f, 5s, {peer}), SendResult::kQueued);
    bool answered = false;
    for (int i = 0; i < 150 && !answered; ++i) {
      Delivery d;
      if (dispatcher.recv_for(d, 100ms) != WaitResult::kReady || d.event != Event::kMessage) continue;
      auto v = d.frame.view();
      ASSERT_TRUE(v);
      answered = v->message.dispatch_id == 999 && string_of(v->message.payload) == "last";
    }
    EXPECT_TRUE(answered);
  }

  palm::test::ShmGuard segment_{palm::test::unique_name("wproc")};
  transport::Context master_ = test::make_context();
  std::unique_ptr<transport::Endpoint> tcp_, shm_;
  std::optional<CacheService> cache_;
  TempFiles files_;
};

TEST_F(WorkerDispatchProc, OverShmWhenPalmTransportIsShm) {
  std::string out, err;
  Child worker = spawn_worker(files_, {"--name", "w", "--db", cache_->address(), "--messages", "5", "--credits", "4"},
                              "shm", out, err);
  ASSERT_TRUE(worker.running());
  dispatch_and_check(*shm_);
  EXPECT_EQ(worker.exit_code_within(15s), 0) << read_file(err);
  const std::string log = read_file(out);
  EXPECT_NE(log.find("palm dispatch"), std::string::npos) << log;
  EXPECT_NE(log.find("over shm (shm://" + segment_.name() + "/dispatch)"), std::string::npos) << log;
}

TEST_F(WorkerDispatchProc, OverTcpWhenPalmTransportIsTcp) {
  std::string out, err;
  Child worker = spawn_worker(files_, {"--name", "w", "--db", cache_->address(), "--messages", "5", "--credits", "4"},
                              "tcp", out, err);
  ASSERT_TRUE(worker.running());
  dispatch_and_check(*tcp_);
  EXPECT_EQ(worker.exit_code_within(15s), 0) << read_file(err);
  const std::string log = read_file(out);
  EXPECT_NE(log.find("over tcp"), std::string::npos) << log;
  EXPECT_EQ(log.find("over shm"), std::string::npos) << log;
}

// The master's segment goes away: the worker says so in one line and exits 1.
TEST_F(WorkerDispatchProc, MasterGoneEndsTheWorkerWithOneLine) {
  std::string out, err;
  Child worker = spawn_worker(files_, {"--name", "w", "--db", cache_->address(), "--credits", "4"}, "shm", out, err);
  ASSERT_TRUE(worker.running());
  ASSERT_NE(wait_joined(*shm_), PeerId::kNone);
  cache_->stop();
  master_.shutdown();
  EXPECT_EQ(worker.exit_code_within(15s), 1);
  const std::string text = read_file(err);
  const auto lines = lines_starting(text, "palm worker: ");
  ASSERT_EQ(lines.size(), 1u) << text;
  EXPECT_NE(lines[0].find("peer dead: the master is gone"), std::string::npos) << text;
}

// SIGTERM: a clean stop, exit 130 (kExitInterrupted).
TEST_F(WorkerDispatchProc, SigtermStopsTheWorker) {
  std::string out, err;
  Child worker = spawn_worker(files_, {"--name", "w", "--db", cache_->address(), "--credits", "4"}, "shm", out, err);
  ASSERT_TRUE(worker.running());
  ASSERT_NE(wait_joined(*shm_), PeerId::kNone);
  worker.signal(SIGTERM);
  EXPECT_EQ(worker.exit_code_within(15s), 130) << read_file(err);
  EXPECT_TRUE(lines_starting(read_file(err), "palm worker: ").empty()) << read_file(err);
  EXPECT_EQ(lines_starting(read_file(out), "palm worker w: 0 messages").size(), 1u) << read_file(out);
}

TEST(WorkerProcCli, MissingMasterIsOneLineAndExit1) {
  TempFiles files;
  std::string out, err;
  Child worker = spawn_worker(files, {"--db", loopback(free_port()), "--transport", "tcp"}, "auto", out, err);
  ASSERT_TRUE(worker.running());
  EXPECT_EQ(worker.exit_code_within(20s), 1);
  const std::string text = read_file(err);
  const auto lines = lines_starting(text, "palm worker: ");
  ASSERT_EQ(lines.size(), 1u) << text;
  EXPECT_TRUE(lines[0].starts_with("palm worker: timeout: ")) << text;
}

}  // namespace
}  // namespace palm::servers
