// The cache service against the Python peer that plays pylm's Client
// (tests/interop/pylm_client.py, python3-zmq + protobuf): set, get, delete,
// a session's key prefix, the wrong-server check; and transport's
// DiscoveryClient. Starts processes (the Python peer), each bounded by its
// own --timeout and by a deadline here (SIGKILL to that pid only).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "palm/servers/cache_service.hpp"
#include "palm/transport/discovery.hpp"
#include "servers_test_util.hpp"

extern char** environ;

namespace palm::servers {
namespace {

using namespace std::chrono_literals;

struct ClientRun {
  int exit_code = -1;  // -1: killed at the deadline, or not started
  std::string out;     // stdout
};

// Runs /usr/bin/python3 tests/interop/pylm_client.py ARGS with PALM_PB2_DIR
// set, capturing stdout; kills it (its pid only) after `deadline`.
ClientRun run_client(const std::vector<std::string>& args,
               std::chrono::milliseconds deadline = 15s) {
  ClientRun r;
  std::vector<std::string> argv_s = {"/usr/bin/python3",
                                     std::string(PALM_SOURCE_DIR) + "/tests/interop/pylm_client.py"};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s = {std::string("PALM_PB2_DIR=") + PALM_PB2_DIR};
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::string_view(*e).starts_with("PALM_PB2_DIR=")) continue;
    env_s.emplace_back(*e);
  }
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return r;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    return r;
  }
  const auto end = std::chrono::steady_clock::now() + deadline;
  bool killed = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left <= 0ms) {
      ::kill(pid, SIGKILL);  // the process this function started
      killed = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;  // EOF: the child closed stdout (it is exiting)
    r.out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  // After EOF the child is exiting; bound the wait all the same.
  while (!killed && ::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > end) {
      ::kill(pid, SIGKILL);
      killed = true;
      break;
    }
    pollfd none{-1, 0, 0};
    ::poll(&none, 0, 10);  // a bounded wait for the exit, not a sync
  }
  if (killed) {
    ::waitpid(pid, &status, 0);
    return r;
  }
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  return r;
}

class CacheServiceProc : public ::testing::Test {
 protected:
  void SetUp() override {
    CacheServiceOptions o;
    o.name = "my_server";
    o.db_address = "tcp://127.0.0.1:*";
    service_.emplace(ctx_, o);
    auto r = service_->start();
    ASSERT_TRUE(r) << r.error().describe();
    // A Server's preset keys (PROTOCOL.md "Preset keys").
    service_->preset_cache({{"name", "my_server"},
                            {"pull_address", "tcp://127.0.0.1:59619"},
                            {"pub_address", "tcp://127.0.0.1:47437"}});
  }
  std::vector<std::string> with_db(std::vector<std::string> args,
                                   const std::string& server = "my_server") {
    args.insert(args.end(), {"--server", server, "--db", service_->address(), "--timeout", "10"});
    return args;
  }

  transport::Context ctx_ = test::make_context();
  std::optional<CacheService> service_;
};

// FEATURES.md section 2: `set(value, key) -> key`, `get(key) -> bytes`,
// `delete(key) -> key`; PROTOCOL.md: "with a `session` the key sent is
// session+key (no separator), but `get`/`delete` do not prefix".
TEST_F(CacheServiceProc, PylmClientSetsGetsAndDeletes) {
  ClientRun set = run_client(with_db({"set", "a value", "my_key"}));
  EXPECT_EQ(set.exit_code, 0);
  EXPECT_EQ(set.out, "my_key\n");
  EXPECT_EQ(service_->store().get("my_key"), "a value");

  ClientRun get = run_client(with_db({"get", "my_key"}));
  EXPECT_EQ(get.exit_code, 0);
  EXPECT_EQ(get.out, "a value\n");

  ClientRun del = run_client(with_db({"delete", "my_key"}));
  EXPECT_EQ(del.exit_code, 0);
  EXPECT_EQ(del.out, "my_key\n");
  EXPECT_FALSE(service_->store().contains("my_key"));

  ClientRun missing = run_client(with_db({"get", "my_key"}));
  EXPECT_EQ(missing.exit_code, 0);
  EXPECT_EQ(missing.out, "\n");

  ClientRun session = run_client(with_db({"set", "v", "k", "--session", "my_session"}));
  EXPECT_EQ(session.exit_code, 0);
  EXPECT_EQ(session.out, "my_sessionk\n");
  EXPECT_EQ(service_->store().get("my_sessionk"), "v");

  ClientRun generated = run_client(with_db({"set", "v2"}));
  EXPECT_EQ(generated.exit_code, 0);
  ASSERT_EQ(generated.out.size(), 37u) << generated.out;
  const std::string key = generated.out.substr(0, 36);
  EXPECT_TRUE(test::is_uuid4(key)) << key;
  EXPECT_EQ(service_->store().get(key), "v2");
  EXPECT_EQ(service_->stats().errors, 0u);
}

// PROTOCOL.md: "A client gets `name` and raises 'You are connecting to the
// wrong server' if it differs from its `server_name`".
TEST_F(CacheServiceProc, PylmClientOfAnotherServerIsRefusedByItsNameCheck) {
  ClientRun r = run_client(with_db({"get", "name"}, "other_server"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
}

// A palm peer learns the server's keys the way pylm's do (discovery.hpp).
TEST_F(CacheServiceProc, DiscoveryClientGetsPresetKeys) {
  auto dc = transport::DiscoveryClient::connect(ctx_, service_->address(), "my_server");
  ASSERT_TRUE(dc) << dc.error().describe();
  auto name = dc->get("name", 5000ms);
  ASSERT_TRUE(name) << name.error().describe();
  EXPECT_EQ(*name, "my_server");
  auto pub = dc->get("pub_address", 5000ms);
  ASSERT_TRUE(pub);
  EXPECT_EQ(*pub, "tcp://127.0.0.1:47437");
  auto missing = dc->get("nope", 5000ms);
  ASSERT_TRUE(missing);
  EXPECT_EQ(*missing, "");
  auto worker = transport::DiscoveryClient::connect(ctx_, service_->address());  // "_.get"
  ASSERT_TRUE(worker);
  auto pull = worker->get("pull_address", 5000ms);
  ASSERT_TRUE(pull);
  EXPECT_EQ(*pull, "tcp://127.0.0.1:59619");
}

}  // namespace
}  // namespace palm::servers
