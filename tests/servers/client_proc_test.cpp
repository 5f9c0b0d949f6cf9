// palm's Client against the Python peers that play pylm's processes
// (tests/interop/pylm_master.py as a Server or a Master, pylm_worker.py as
// its Workers), over tcp on loopback; and the `palm client` command.
// Every peer is started with posix_spawn and ended by its pid (Child kills
// and reaps it at the end of its scope); every wait is bounded.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "palm/servers/client.hpp"
#include "peer.hpp"
#include "servers_test_util.hpp"

extern char** environ;

namespace palm::servers {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// `n` distinct free TCP ports on 127.0.0.1: bound to port 0 together (so
// the kernel hands out distinct ones), then released for the peer to bind.
// Another process may take one in between: the peer then fails to bind and
// the test fails with a timeout, it does not hang.
std::vector<int> free_ports(std::size_t n) {
  std::vector<int> fds, ports;
  for (std::size_t i = 0; i < n; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) break;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ::close(fd);
      break;
    }
    fds.push_back(fd);
    ports.push_back(ntohs(a.sin_port));
  }
  for (int fd : fds) ::close(fd);
  EXPECT_EQ(ports.size(), n) << "could not find free ports";
  return ports;
}

// prefix + the number (appended: g++ 12 warns falsely, -Wrestrict, on
// "literal" + std::to_string(n)).
std::string numbered(std::string prefix, int n) {
  prefix += std::to_string(n);
  return prefix;
}

std::string loopback(int port) { return "tcp://127.0.0.1:" + std::to_string(port); }

// The environment with PALM_PB2_DIR set for the Python peers.
std::vector<std::string> peer_env() {
  std::vector<std::string> env = {std::string("PALM_PB2_DIR=") + PALM_PB2_DIR};
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::string_view(*e).starts_with("PALM_PB2_DIR=")) continue;
    env.emplace_back(*e);
  }
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Starts /usr/bin/python3 tests/interop/SCRIPT ARGS (stdout and stderr
// inherited: ctest keeps them for a failure).
palm::test::Child spawn_python(const std::string& script, std::vector<std::string> args) {
  std::vector<std::string> argv_s = {"/usr/bin/python3", std::string(PALM_SOURCE_DIR) + "/tests/interop/" + script};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<std::string> env_s = peer_env();
  auto argv = c_strings(argv_s);
  auto envp = c_strings(env_s);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), envp.data());
  EXPECT_EQ(rc, 0) << "posix_spawn " << script;
  return rc == 0 ? palm::test::Child(pid) : palm::test::Child();
}

// Ends a peer by its pid: SIGTERM, then a bounded wait (Child SIGKILLs it
// at the end of its scope if it is still running).
void stop(palm::test::Child& peer) {
  if (!peer.running()) return;
  peer.signal(SIGTERM);
  EXPECT_TRUE(peer.wait_for(10s).has_value()) << "pid " << peer.pid() << " ignored SIGTERM";
}

struct CliRun {
  int exit_code = -1;  // -1: killed at the deadline, or not started
  std::string out, err;
};

// Runs `argv` (no shell) with PALM_PB2_DIR set, capturing stdout and
// stderr; SIGKILLs it (its pid only) after `deadline`.
CliRun run_capture(std::vector<std::string> argv_s, std::chrono::milliseconds deadline = 20s) {
  CliRun r;
  std::vector<std::string> env_s = peer_env();
  auto argv = c_strings(argv_s);
  auto envp = c_strings(env_s);
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return r;
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    return r;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&fa, err[1], STDERR_FILENO);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  ::close(err[1]);
  if (rc != 0) {
    ::close(out[0]);
    ::close(err[0]);
    return r;
  }
  palm::test::Child child(pid);
  const auto end = Clock::now() + deadline;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  int open_fds = 2;
  while (open_fds > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
    if (left <= 0ms) break;
    if (::poll(fds, 2, static_cast<int>(left.count())) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      } else {
        sinks[i]->append(buf, static_cast<std::size_t>(n));
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
  if (auto code = child.exit_code_within(std::max(left, 100ms))) r.exit_code = *code;
  return r;  // ~Child kills and reaps it if still running
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t nl = text.find('\n', start);
    if (nl == std::string::npos) {
      out.push_back(text.substr(start));
      break;
    }
    out.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

// A Python pylm Server (pylm_master.py --server) named my_server.
class ClientVsServer : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto ports = free_ports(3);
    ASSERT_EQ(ports.size(), 3u);
    db_ = loopback(ports[0]);
    pull_ = loopback(ports[1]);
    pub_ = loopback(ports[2]);
    server_ = spawn_python("pylm_master.py", {"--server", "--name", "my_server", "--db", db_, "--pull", pull_,
                                              "--pub", pub_, "--lifetime", "100", "--log-level", "WARNING"});
    ASSERT_TRUE(server_.running());
  }
  void TearDown() override { stop(server_); }

  ClientOptions options() const {
    ClientOptions o;
    o.server_name = "my_server";
    o.db_address = db_;
    o.timeout = 10s;
    o.log_level = LogLevel::kWarning;
    return o;
  }
  std::unique_ptr<Client> connect(ClientOptions o) {
    auto c = Client::connect(ctx_, std::move(o));
    EXPECT_TRUE(c) << c.error().describe();
    return c ? std::move(*c) : nullptr;
  }

  transport::Context ctx_ = test::make_context();
  std::string db_, pull_, pub_;
  palm::test::Child server_;
};

// FEATURES.md 2: "eval(function, payload: bytes, messages=1, cache=''): one
// message; one reply"; pylm_wire.py: foo -> b'you sent me ' + payload.
TEST_F(ClientVsServer, EvalReturnsTheServersReply) {
  auto c = connect(options());
  ASSERT_NE(c, nullptr);
  // A pylm server publishes no segment: tcp both ways.
  EXPECT_EQ(c->push_scheme(), transport::Scheme::kTcp);
  EXPECT_EQ(c->sub_scheme(), transport::Scheme::kTcp);
  EXPECT_EQ(c->push_address(), pull_);
  EXPECT_EQ(c->sub_address(), pub_);
  EXPECT_TRUE(test::is_uuid4(c->uuid())) << c->uuid();
  EXPECT_TRUE(test::is_uuid4(c->pipeline())) << c->pipeline();
  EXPECT_NE(c->pipeline(), c->uuid());

  auto r = c->eval("my_server.foo", std::string_view(" a message"));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(*r, "you sent me  a message");
  // Function as a list of steps (one here).
  auto list = c->eval(std::vector<std::string>{"my_server.echo"}, "echoed");
  ASSERT_TRUE(list) << list.error().describe();
  EXPECT_EQ(*list, "echoed");
  // A method exception gives b'0' (PROTOCOL.md "Message flow").
  auto failed = c->eval("my_server.fail", std::string_view("x"));
  ASSERT_TRUE(failed) << failed.error().describe();
  EXPECT_EQ(*failed, "0");
  const ClientStats s = c->stats();
  EXPECT_EQ(s.sent, 3u);
  EXPECT_EQ(s.received, 3u);
  EXPECT_EQ(s.wrong_topic, 0u);
  EXPECT_EQ(s.timeouts, 0u);
}

// A job of 3 payloads awaiting messages=3; then eval awaiting 2 replies
// where the server sends 1: kTimeout naming how many came.
TEST_F(ClientVsServer, JobOfThreeAndEvalAwaitingMoreThanCome) {
  ClientOptions o = options();
  o.timeout = 1500ms;
  auto c = connect(o);
  ASSERT_NE(c, nullptr);
  std::vector<std::string> payloads = {"a", "b", "c"}, replies;
  std::size_t i = 0;
  auto n = c->job(
      "my_server.foo",
      [&](std::string& p) {
        if (i == payloads.size()) return false;
        p = payloads[i++];
        return true;
      },
      [&](std::string_view reply) { replies.emplace_back(reply); }, 3);
  ASSERT_TRUE(n) << n.error().describe();
  EXPECT_EQ(*n, 3u);
  std::sort(replies.begin(), replies.end());
  EXPECT_EQ(replies, (std::vector<std::string>{"you sent me a", "you sent me b", "you sent me c"}));

  const auto start = Clock::now();
  auto two = c->eval("my_server.foo", test::bytes_of("once"), 2);
  const auto took = Clock::now() - start;
  ASSERT_FALSE(two);
  EXPECT_EQ(two.error().code, Errc::kTimeout);
  EXPECT_NE(two.error().message.find("1 of 2 replies came"), std::string::npos) << two.error().message;
  EXPECT_GE(took, 1400ms);
  EXPECT_LT(took, 6s);
  EXPECT_EQ(c->stats().timeouts, 1u);
}

// The job streams 1000 payloads and gets exactly their 1000 replies.
TEST_F(ClientVsServer, JobOfAThousandGetsEveryReplyOnce) {
  ClientOptions o = options();
  o.window = 64;
  auto c = connect(o);
  ASSERT_NE(c, nullptr);
  constexpr int kMessages = 1000;
  int next = 0;
  std::vector<std::string> replies, expected;
  for (int k = 0; k < kMessages; ++k) expected.push_back(numbered("you sent me p", k));
  auto n = c->job(
      "my_server.foo",
      [&](std::string& p) {
        if (next == kMessages) return false;
        p = numbered("p", next++);
        return true;
      },
      [&](std::string_view reply) { replies.emplace_back(reply); });
  ASSERT_TRUE(n) << n.error().describe();
  EXPECT_EQ(*n, static_cast<std::uint64_t>(kMessages));
  std::sort(replies.begin(), replies.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(replies, expected);
  EXPECT_EQ(c->stats().sent, static_cast<std::uint64_t>(kMessages));
}

// FEATURES.md 2: set(value, key) -> key, get(key) -> bytes, delete(key) ->
// key; PROTOCOL.md: "with a `session` the key sent is session+key (no
// separator), but `get`/`delete` do not prefix".
TEST_F(ClientVsServer, SetGetDeleteWithAndWithoutSession) {
  auto c = connect(options());
  ASSERT_NE(c, nullptr);
  auto key = c->set(std::string_view("a value"), "my_key");
  ASSERT_TRUE(key) << key.error().describe();
  EXPECT_EQ(*key, "my_key");
  auto value = c->get("my_key");
  ASSERT_TRUE(value);
  EXPECT_EQ(*value, "a value");
  auto removed = c->remove("my_key");
  ASSERT_TRUE(removed);
  EXPECT_EQ(*removed, "my_key");
  auto gone = c->get("my_key");
  ASSERT_TRUE(gone);
  EXPECT_EQ(*gone, "");

  auto generated = c->set(std::string_view("v2"));
  ASSERT_TRUE(generated);
  EXPECT_TRUE(test::is_uuid4(*generated)) << *generated;
  auto v2 = c->get(*generated);
  ASSERT_TRUE(v2);
  EXPECT_EQ(*v2, "v2");

  ClientOptions so = options();
  so.session = "my_session";
  so.settle = 0ms;
  auto s = connect(so);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->pipeline(), "my_session");
  auto skey = s->set(std::string_view("v"), "k");
  ASSERT_TRUE(skey) << skey.error().describe();
  EXPECT_EQ(*skey, "my_sessionk");  // the key the server stored
  auto unprefixed = s->get("k");
  ASSERT_TRUE(unprefixed);
  EXPECT_EQ(*unprefixed, "");
  auto prefixed = c->get("my_sessionk");
  ASSERT_TRUE(prefixed);
  EXPECT_EQ(*prefixed, "v");
  auto sdel = s->remove("my_sessionk");
  ASSERT_TRUE(sdel);
  EXPECT_EQ(*sdel, "my_sessionk");
  auto after = c->get("my_sessionk");
  ASSERT_TRUE(after);
  EXPECT_EQ(*after, "");
}

// PROTOCOL.md: "A client gets `name` and raises 'You are connecting to the
// wrong server' if it differs from its `server_name`".
TEST_F(ClientVsServer, WrongServerNameIsRefused) {
  ClientOptions o = options();
  o.server_name = "other_server";
  auto c = Client::connect(ctx_, o);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, Errc::kInvalidArgument);
  EXPECT_EQ(c.error().message, "You are connecting to the wrong server: asked for 'other_server', the server at " +
                                   db_ + " is 'my_server'");
}

// FEATURES.md 2: "`this_config=True` fetches nothing": the addresses given
// are used as they are.
TEST_F(ClientVsServer, ThisConfigUsesTheGivenAddresses) {
  ClientOptions o = options();
  o.this_config = true;
  o.push_address = pull_;
  o.sub_address = pub_;
  o.server_name = "my_server";
  // pylm's slow joiner: a tcp subscription reaches a pylm server after an
  // unknown time; give a loaded machine more than pylm's 0.5 s.
  o.settle = 2000ms;
  auto c = connect(o);
  ASSERT_NE(c, nullptr);
  auto r = c->eval("my_server.foo", std::string_view("x"));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(*r, "you sent me x");

  ClientOptions missing = options();
  missing.this_config = true;
  auto refused = Client::connect(ctx_, missing);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::kInvalidArgument);
}

// A stopped server: eval ends in kTimeout within its bound, and so does a
// cache request.
TEST_F(ClientVsServer, StoppedServerTimesOut) {
  ClientOptions o = options();
  o.timeout = 1000ms;
  o.settle = 100ms;
  auto c = connect(o);
  ASSERT_NE(c, nullptr);
  stop(server_);
  const auto start = Clock::now();
  auto r = c->eval("my_server.foo", std::string_view("x"));
  const auto took = Clock::now() - start;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kTimeout) << r.error().describe();
  EXPECT_GE(took, 900ms);
  EXPECT_LT(took, 5s);
  auto g = c->get("k");
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error().code, Errc::kTimeout) << g.error().describe();
  EXPECT_EQ(c->stats().timeouts, 2u);
}

// A Python Master and two Python Workers: every result comes back once.
TEST(ClientVsMaster, JobThroughMasterAndTwoWorkersReturnsEveryResultOnce) {
  const auto ports = free_ports(5);
  ASSERT_EQ(ports.size(), 5u);
  const std::string db = loopback(ports[0]);
  palm::test::Child master = spawn_python(
      "pylm_master.py", {"--name", "my_master", "--db", db, "--pull", loopback(ports[1]), "--pub",
                         loopback(ports[2]), "--worker-pull", loopback(ports[3]), "--worker-push",
                         loopback(ports[4]), "--lifetime", "100", "--log-level", "WARNING"});
  ASSERT_TRUE(master.running());
  std::vector<palm::test::Child> workers;
  for (const char* name : {"worker1", "worker2"}) {
    workers.push_back(spawn_python("pylm_worker.py", {"--db", db, "--name", name, "--lifetime", "100",
                                                      "--log-level", "WARNING"}));
  }
  transport::Context ctx = test::make_context();
  ClientOptions o;
  o.server_name = "my_master";
  o.db_address = db;
  o.log_level = LogLevel::kWarning;
  auto c = Client::connect(ctx, o);
  ASSERT_TRUE(c) << c.error().describe();

  constexpr int kMessages = 300;
  int next = 0;
  std::map<std::string, int> seen;  // payload -> times
  std::map<std::string, int> by_worker;
  auto n = (*c)->job(
      "my_master.foo",
      [&](std::string& p) {
        if (next == kMessages) return false;
        p = numbered("p", next++);
        return true;
      },
      [&](std::string_view reply) {
        // "<worker> processed <payload>"
        const std::size_t at = reply.find(" processed ");
        ASSERT_NE(at, std::string_view::npos) << reply;
        ++by_worker[std::string(reply.substr(0, at))];
        ++seen[std::string(reply.substr(at + 11))];
      });
  ASSERT_TRUE(n) << n.error().describe();
  EXPECT_EQ(*n, static_cast<std::uint64_t>(kMessages));
  ASSERT_EQ(seen.size(), static_cast<std::size_t>(kMessages));
  for (int k = 0; k < kMessages; ++k) EXPECT_EQ(seen[numbered("p", k)], 1) << k;
  for (const auto& [worker, count] : by_worker) {
    EXPECT_TRUE(worker == "worker1" || worker == "worker2") << worker;
  }
  for (auto& w : workers) stop(w);
  stop(master);
}

// `palm client` as pylm's example launcher: ten replies, one a line.
TEST_F(ClientVsServer, PalmClientCommandPrintsEveryReply) {
  CliRun r = run_capture({PALM_CLI, "client", "--server", "my_server", "--db", db_, "--function", "my_server.foo"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_of(r.out), std::vector<std::string>(10, "you sent me  a message")) << r.out;

  CliRun job = run_capture({PALM_CLI, "client", "--server", "my_server", "--db", db_, "--function", "my_server.foo",
                         "--payload", "x", "--messages", "5", "--job", "--settle", "100"});
  EXPECT_EQ(job.exit_code, 0) << job.err;
  EXPECT_EQ(lines_of(job.out), std::vector<std::string>(5, "you sent me x")) << job.out;

  CliRun set = run_capture({PALM_CLI, "client", "--server", "my_server", "--db", db_, "--set", "v", "--key", "k"});
  EXPECT_EQ(set.exit_code, 0) << set.err;
  EXPECT_EQ(set.out, "k\n");
  CliRun get = run_capture({PALM_CLI, "client", "--server", "my_server", "--db", db_, "--get", "k"});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(get.out, "v\n");
}

TEST_F(ClientVsServer, PalmClientCommandRefusesTheWrongServer) {
  CliRun r = run_capture({PALM_CLI, "client", "--server", "other_server", "--db", db_, "--function", "other_server.foo"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  const auto err = lines_of(r.err);
  ASSERT_EQ(err.size(), 1u) << r.err;
  EXPECT_EQ(err[0], "palm client: You are connecting to the wrong server: asked for 'other_server', the server at " +
                        db_ + " is 'my_server'");
}

}  // namespace
}  // namespace palm::servers
