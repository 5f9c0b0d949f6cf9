// `palm server` and `palm master` as processes, with `palm worker`s and
// `palm client` (and pylm_client.py where the pylm side's view matters):
// replies over shm and tcp, every result of a job once and spread over the
// workers, pylm's error cases answered b'0' with serving going on, the
// messages limit, SIGTERM. Mixed farms and interop with the Python peers:
// farm_interop_proc_test.cpp. Helpers: farm_proc_util.hpp.
#include <signal.h>

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>

#include "farm_proc_util.hpp"
#include "palm/servers/server_template.hpp"
#include "servers_test_util.hpp"
#include "wire_client.hpp"

namespace palm::servers::farm {
namespace {

// The tcp address of `what` ("inbound pull", "outbound pub") from the start lines.
std::string bound(const Served& s, const std::string& what) {
  const auto line = wait_line(s.proc.out, what + " bound on tcp://", 1s);
  EXPECT_TRUE(line) << s.proc.output();
  return line ? line->substr(line->find("tcp://")) : std::string();
}

// Stops `s` with SIGTERM: exit 130, the segment gone; returns the summary line.
std::string stop_with_sigterm(Served& s) {
  s.proc.child.signal(SIGTERM);
  EXPECT_EQ(s.proc.child.exit_code_within(15s), 130) << s.proc.output() << s.proc.errors();
  if (s.segment) {
    EXPECT_FALSE(segment_exists(s.segment->name())) << s.segment->name();
  }
  const auto summary = wait_line(s.proc.out, " - INFO - summary: ", 1s);
  EXPECT_TRUE(summary) << s.proc.output();
  return summary.value_or("");
}

// Stage out of range can only be sent by a client that sets `stage`: a bare
// wire client (tcp) does. Returns the reply's payload and error.
test::Reply send_stage_out_of_range(const Served& s, const std::string& probe_function) {
  auto ctx = test::make_context();
  test::WireClient c;
  c.connect(ctx, bound(s, "inbound pull"), bound(s, "outbound pub"), s.db, s.name, shm::TransportMode::kTcp,
            "stage-client", probe_function);
  c.send("a message", s.name + ".foo " + s.name + ".echo", {}, 2);
  return c.receive();
}

// FEATURES.md 5, example "single": `Client got:  b'you sent me a message'`.
TEST(FarmProc, ServerAnswersPalmClientOverShmAndTcp) {
  TempFiles files;
  Served s = start_served(files, "server", palm::test::unique_name("srv"));
  ASSERT_FALSE(s.db.empty());
  for (const std::string transport : {"shm", "tcp"}) {
    const Finished r = run_palm(files,
                           {"client", "--server", s.name, "--db", s.db, "--function", s.name + ".foo",
                            "--messages", "3", "--payload", "a message"},
                           {{"PALM_TRANSPORT", transport}});
    EXPECT_EQ(r.exit_code, 0) << transport << ": " << r.err;
    EXPECT_EQ(r.out, "you sent me a message\nyou sent me a message\nyou sent me a message\n") << transport;
    if (transport == "shm") {
      // PALM_TRANSPORT=shm refuses tcp; the server's transport saw it attach.
      EXPECT_TRUE(wait_line(s.proc.err, "attached to shm://" + s.segment->name() + "/inbound", 5s))
          << s.proc.errors();
    }
  }
  const std::string summary = stop_with_sigterm(s);
  EXPECT_EQ(counter(summary, "exec.in"), 6u) << summary;
  EXPECT_EQ(counter(summary, "exec.errors"), 0u) << summary;
}

// PROTOCOL.md "Message flow": an unknown Server method, a wrong server name,
// a stage out of range kill pylm's execution thread; a method exception
// gives b'0'. palm answers b'0' to each and goes on serving.
TEST(FarmProc, ServerErrorsAnswerZeroAndServingGoesOn) {
  TempFiles files;
  Served s = start_served(files, "server", palm::test::unique_name("srv"));
  ASSERT_FALSE(s.db.empty());
  for (const std::string& function : {s.name + ".nope", std::string("other.foo"), s.name + ".fail", s.name + ".foo"}) {
    const Finished r = run_python(files, "pylm_client.py",
                             {"--server", s.name, "--db", s.db, "--function", function, "--mode", "job",
                              "--messages", "1", "--timeout", "15"});
    EXPECT_EQ(r.exit_code, 0) << function << ": " << r.err;
    EXPECT_EQ(r.out, function == s.name + ".foo" ? "you sent me a message\n" : "0\n") << function;
  }
  const test::Reply stage = send_stage_out_of_range(s, s.name + ".echo");
  EXPECT_EQ(stage.payload, "0");
  EXPECT_NE(stage.error.find("out of range"), std::string::npos) << stage.error;
  EXPECT_TRUE(wait_line(s.proc.out, "You called other, instead of " + s.name, 1s)) << s.proc.output();
  // Still serving after all of them.
  const Finished after = run_palm(files, {"client", "--server", s.name, "--db", s.db, "--function", s.name + ".upper",
                                     "--messages", "1", "--payload", "still here"});
  EXPECT_EQ(after.out, "STILL HERE\n") << after.err;
  const std::string summary = stop_with_sigterm(s);
  EXPECT_EQ(counter(summary, "unknown_method"), 1u) << summary;
  EXPECT_EQ(counter(summary, "wrong_server"), 1u) << summary;
  EXPECT_EQ(counter(summary, "method_failed"), 1u) << summary;
  EXPECT_EQ(counter(summary, "stage_out_of_range"), 1u) << summary;
}

// PROTOCOL.md: "A worker replaces only the payload ...: b'0' for an unknown
// method or an exception"; palm answers a bad stage too, and the master goes on.
TEST(FarmProc, MasterErrorsAnswerZeroAndServingGoesOn) {
  TempFiles files;
  Served m = start_served(files, "master", palm::test::unique_name("mst"));
  ASSERT_FALSE(m.db.empty());
  Proc w = spawn_palm(files, {"worker", "--name", "w", "--db", m.db}, {{"PALM_TRANSPORT", "shm"}});
  ASSERT_TRUE(wait_line(m.proc.out, "(1 workers)")) << m.proc.output() << w.errors();
  for (const std::string& function : {m.name + ".nope", m.name + ".fail", m.name + ".foo"}) {
    const Finished r = run_python(files, "pylm_client.py",
                             {"--server", m.name, "--db", m.db, "--function", function, "--mode", "job",
                              "--messages", "1", "--timeout", "15"});
    EXPECT_EQ(r.exit_code, 0) << function << ": " << r.err;
    EXPECT_EQ(r.out, function == m.name + ".foo" ? "w processed a message\n" : "0\n") << function;
  }
  const test::Reply stage = send_stage_out_of_range(m, m.name + ".echo");
  EXPECT_EQ(stage.payload, "0");
  EXPECT_NE(stage.error.find("out of range"), std::string::npos) << stage.error;
  const Finished after = run_palm(files, {"client", "--server", m.name, "--db", m.db, "--function", m.name + ".upper",
                                     "--messages", "1", "--payload", "still here"});
  EXPECT_EQ(after.out, "STILL HERE\n") << after.err;
  // The worker first: over shm a worker whose master left exits 1.
  w.child.signal(SIGTERM);
  EXPECT_EQ(w.child.exit_code_within(15s), 130) << w.errors();
  const std::string summary = stop_with_sigterm(m);
  EXPECT_GE(counter(summary, "results.shm").value_or(0), 5u) << summary;
}

// PROTOCOL.md "`messages` limits": "Server ... `messages=N`: stop after N
// messages"; the master after publishing N results. Exit 0, segment gone.
TEST(FarmProc, MessagesLimitEndsServerAndMasterWithExit0) {
  TempFiles files;
  Served s = start_served(files, "server", palm::test::unique_name("srv"), {"--messages", "5"});
  ASSERT_FALSE(s.db.empty());
  const Finished r = run_palm(files, {"client", "--server", s.name, "--db", s.db, "--function", s.name + ".echo",
                                 "--messages", "5", "--payload", "x"});
  EXPECT_EQ(r.out, "x\nx\nx\nx\nx\n") << r.err;
  EXPECT_EQ(s.proc.child.exit_code_within(15s), 0) << s.proc.output();
  EXPECT_FALSE(segment_exists(s.segment->name()));

  Served m = start_served(files, "master", palm::test::unique_name("mst"), {"--messages", "5"});
  ASSERT_FALSE(m.db.empty());
  Proc w = spawn_palm(files, {"worker", "--name", "w", "--db", m.db}, {{"PALM_TRANSPORT", "tcp"}});
  ASSERT_TRUE(wait_line(m.proc.out, "(1 workers)")) << m.proc.output() << w.errors();
  const Finished j = run_palm(files, {"client", "--server", m.name, "--db", m.db, "--function", m.name + ".echo",
                                 "--job", "--messages", "5", "--payload", "y"},
                         {{"PALM_TRANSPORT", "tcp"}});
  EXPECT_EQ(j.out, "y\ny\ny\ny\ny\n") << j.err;
  EXPECT_EQ(m.proc.child.exit_code_within(15s), 0) << m.proc.output();
  EXPECT_FALSE(segment_exists(m.segment->name()));
  const auto summary = wait_line(m.proc.out, " - INFO - summary: ", 1s);
  ASSERT_TRUE(summary);
  EXPECT_EQ(counter(*summary, "dispatched.tcp"), 5u) << *summary;
}

// Master + N palm workers over shm or tcp (PALM_TRANSPORT on workers and
// client): a job of 2000 distinct payloads, every result exactly once, and
// every worker got some (FEATURES.md 5, example "parallel": "spread over
// the workers").
class MasterFarm : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(MasterFarm, EveryResultOnceSpreadOverTheWorkers) {
  const auto& [transport, workers] = GetParam();
  constexpr int kMessages = 2000;
  TempFiles files;
  Served m = start_served(files, "master", palm::test::unique_name("mst"));
  ASSERT_FALSE(m.db.empty());
  std::vector<Proc> ws;
  for (int i = 0; i < workers; ++i) {
    ws.push_back(spawn_palm(files, {"worker", "--name", fmt::format("w{}", i), "--db", m.db, "--credits", "4"},
                            {{"PALM_TRANSPORT", transport}}));
  }
  const std::string joined = fmt::format("({} workers)", workers);
  ASSERT_TRUE(wait_line(m.proc.out, joined)) << m.proc.output();
  EXPECT_FALSE(wait_line(m.proc.out, fmt::format("joined over {}", transport == "shm" ? "tcp" : "shm"), 0ms));

  const Finished r = run_palm(files,
                         {"client", "--server", m.name, "--db", m.db, "--function", m.name + ".foo", "--job",
                          "--numbered", "--messages", std::to_string(kMessages), "--payload", "x"},
                         {{"PALM_TRANSPORT", transport}}, 60s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::multiset<int> numbers;
  std::set<std::string> who;
  for (const auto& line : r.lines()) {
    const auto at = line.find(" processed x");
    ASSERT_NE(at, std::string::npos) << line;
    who.insert(line.substr(0, at));
    numbers.insert(std::stoi(line.substr(at + 12)));
  }
  ASSERT_EQ(numbers.size(), static_cast<std::size_t>(kMessages));
  EXPECT_EQ(std::set<int>(numbers.begin(), numbers.end()).size(), numbers.size()) << "a result came twice";
  EXPECT_EQ(*numbers.begin(), 0);
  EXPECT_EQ(*numbers.rbegin(), kMessages - 1);
  EXPECT_EQ(who.size(), static_cast<std::size_t>(workers)) << "a worker got no message";

  for (auto& w : ws) {  // the workers first: over shm a worker whose master left exits 1
    w.child.signal(SIGTERM);
    EXPECT_EQ(w.child.exit_code_within(15s), 130) << w.errors();
  }
  const std::string summary = stop_with_sigterm(m);
  EXPECT_EQ(counter(summary, fmt::format("dispatched.{}", transport)), static_cast<std::uint64_t>(kMessages))
      << summary;
  EXPECT_EQ(counter(summary, "duplicates"), 0u) << summary;
}

INSTANTIATE_TEST_SUITE_P(ShmAndTcp, MasterFarm,
                         ::testing::Combine(::testing::Values("shm", "tcp"), ::testing::Values(1, 2, 4)),
                         [](const auto& p) {
                           return std::get<0>(p.param) + "_" + std::to_string(std::get<1>(p.param)) +
                                  "_workers";
                         });

// SIGTERM mid-job: the master stops cleanly, exit 130 within the bound, its
// segment gone from /dev/shm.
TEST(FarmProc, SigtermStopsTheMasterMidJob) {
  TempFiles files;
  Served m = start_served(files, "master", palm::test::unique_name("mst"));
  ASSERT_FALSE(m.db.empty());
  Proc w = spawn_palm(files, {"worker", "--name", "w", "--db", m.db}, {{"PALM_TRANSPORT", "shm"}});
  ASSERT_TRUE(wait_line(m.proc.out, "(1 workers)")) << m.proc.output();
  // pylm_client.py flushes each reply line as it comes.
  Proc client = spawn_python(files, "pylm_client.py",
                             {"--server", m.name, "--db", m.db, "--function", m.name + ".sleep", "--mode", "job",
                              "--messages", "2000", "--payload", "3", "--timeout", "30"});
  // Mid-run: some replies came, far from all (2000 x 3 ms on one worker).
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  while (lines_of(client.output()).size() < 20 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_GE(lines_of(client.output()).size(), 20u) << client.errors();
  const std::string summary = stop_with_sigterm(m);
  EXPECT_LT(counter(summary, "outbound.in").value_or(2000), 2000u) << summary;
  client.child.kill_and_reap();  // it would wait for the rest until its --timeout
  w.child.signal(SIGTERM);
  EXPECT_TRUE(w.child.exit_code_within(15s).has_value());
}

}  // namespace
}  // namespace palm::servers::farm
