// `palm master` with workers of both kinds and clients of both kinds: the
// cache from a client and from a worker, a mixed farm (a palm worker over
// shm, one over tcp, a Python pylm worker) with every result once and the
// master's per-transport counters, the Python client and workers on a palm
// master, and palm's client and workers on the Python master
// (tests/interop/pylm_master.py). Helpers: farm_proc_util.hpp.
#include <signal.h>

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "farm_proc_util.hpp"

namespace palm::servers::farm {
namespace {

// Splits "<worker> processed x<N>" lines: each N's count, each worker's.
struct Tally {
  std::map<int, int> numbers;
  std::map<std::string, int> workers;
  int bad = 0;
};
Tally tally(const std::vector<std::string>& lines) {
  Tally t;
  for (const auto& line : lines) {
    const auto at = line.find(" processed x");
    if (at == std::string::npos) {
      ++t.bad;
      continue;
    }
    ++t.workers[line.substr(0, at)];
    ++t.numbers[std::stoi(line.substr(at + 12))];
  }
  return t;
}

void expect_each_once(const Tally& t, int n) {
  EXPECT_EQ(t.bad, 0);
  ASSERT_EQ(t.numbers.size(), static_cast<std::size_t>(n));
  for (const auto& [number, count] : t.numbers) {
    EXPECT_EQ(count, 1) << "x" << number;
    EXPECT_TRUE(number >= 0 && number < n) << number;
  }
}

// A Python pylm worker on `db`, connected (its "Ready:" line).
Proc start_pylm_worker(TempFiles& files, const std::string& db, const std::string& name) {
  Proc p = spawn_python(files, "pylm_worker.py", {"--name", name, "--db", db, "--lifetime", "120"});
  EXPECT_TRUE(wait_line(p.out, "Ready: pulling from")) << p.output() << p.errors();
  return p;
}

std::string stop_master(Served& m) {
  m.proc.child.signal(SIGTERM);
  EXPECT_EQ(m.proc.child.exit_code_within(15s), 130) << m.proc.output() << m.proc.errors();
  EXPECT_FALSE(segment_exists(m.segment->name()));
  return wait_line(m.proc.out, " - INFO - summary: ", 1s).value_or("");
}

// FEATURES.md 5, example "cache": the client sets a value, a worker reads it
// by the message's cache key: b'workerN cached data a message'.
TEST(FarmInteropProc, CacheFromThePalmClientAndFromAPylmWorker) {
  TempFiles files;
  Served m = start_served(files, "master", palm::test::unique_name("mst"));
  ASSERT_FALSE(m.db.empty());
  const auto client = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"client", "--server", m.name, "--db", m.db});
    return run_palm(files, args);
  };
  EXPECT_EQ(client({"--set", " cached data ", "--key", "k1"}).out, "k1\n");
  EXPECT_EQ(client({"--get", "k1"}).out, " cached data \n");
  const Finished fresh = client({"--set", "v"});  // the server makes a uuid4 key
  ASSERT_EQ(fresh.out.size(), 37u) << fresh.out << fresh.err;
  EXPECT_EQ(client({"--get", fresh.out.substr(0, 36)}).out, "v\n");

  Proc w = start_pylm_worker(files, m.db, "worker1");
  const Finished r = run_python(files, "pylm_client.py",
                                {"--server", m.name, "--db", m.db, "--function", m.name + ".cached", "--cache",
                                 "k1", "--mode", "job", "--messages", "1", "--timeout", "15"});
  EXPECT_EQ(r.out, "worker1 cached data a message\n") << r.err;

  EXPECT_EQ(client({"--delete", "k1"}).out, "k1\n");
  EXPECT_EQ(client({"--get", "k1"}).out, "\n");
  w.child.signal(SIGTERM);
  EXPECT_EQ(w.child.exit_code_within(15s), 0);
  stop_master(m);
}

// One palm worker over shm, one over tcp, one Python pylm worker on one
// palm master: every result of 600 once, and the master's summary shows
// dispatches over each of shm, tcp and pylm's PUSH.
TEST(FarmInteropProc, MixedFarmShmTcpAndPylmWorkers) {
  constexpr int kMessages = 600;
  TempFiles files;
  Served m = start_served(files, "master", palm::test::unique_name("mst"));
  ASSERT_FALSE(m.db.empty());
  Proc py = start_pylm_worker(files, m.db, "py");
  // One credit each: the palm workers are often full, so pylm's PUSH gets
  // work too (palm workers are tried first).
  Proc ws = spawn_palm(files, {"worker", "--name", "ws", "--db", m.db, "--credits", "1"}, {{"PALM_TRANSPORT", "shm"}});
  Proc wt = spawn_palm(files, {"worker", "--name", "wt", "--db", m.db, "--credits", "1"}, {{"PALM_TRANSPORT", "tcp"}});
  ASSERT_TRUE(wait_line(m.proc.out, "(2 workers)")) << m.proc.output();
  EXPECT_TRUE(wait_line(m.proc.out, "joined over shm", 0ms));
  EXPECT_TRUE(wait_line(m.proc.out, "joined over tcp", 0ms));

  const Finished r = run_palm(files,
                              {"client", "--server", m.name, "--db", m.db, "--function", m.name + ".foo", "--job",
                               "--numbered", "--messages", std::to_string(kMessages), "--payload", "x"},
                              {}, 60s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Tally t = tally(r.lines());
  expect_each_once(t, kMessages);
  for (const char* name : {"ws", "wt", "py"}) EXPECT_GT(t.workers.count(name), 0u) << name << " got nothing";

  for (Proc* w : {&ws, &wt}) {
    w->child.signal(SIGTERM);
    EXPECT_EQ(w->child.exit_code_within(15s), 130) << w->errors();
  }
  py.child.signal(SIGTERM);
  EXPECT_EQ(py.child.exit_code_within(15s), 0);
  const std::string summary = stop_master(m);
  ASSERT_FALSE(summary.empty()) << m.proc.output();
  for (const char* kind : {"shm", "tcp", "pylm"}) {
    EXPECT_GT(counter(summary, fmt::format("dispatched.{}", kind)).value_or(0), 0u) << summary;
  }
  EXPECT_EQ(counter(summary, "dispatched.shm").value_or(0) + counter(summary, "dispatched.tcp").value_or(0) +
                counter(summary, "dispatched.pylm").value_or(0) - counter(summary, "redispatched").value_or(0),
            static_cast<std::uint64_t>(kMessages))
      << summary;
  EXPECT_EQ(counter(summary, "duplicates"), 0u) << summary;
}

// pylm's side only, a palm master between: the Python client's job through
// two Python workers (FEATURES.md 5, example "parallel").
TEST(FarmInteropProc, PythonClientAndPythonWorkersOnAPalmMaster) {
  TempFiles files;
  Served m = start_served(files, "master", palm::test::unique_name("mst"));
  ASSERT_FALSE(m.db.empty());
  Proc p1 = start_pylm_worker(files, m.db, "p1");
  Proc p2 = start_pylm_worker(files, m.db, "p2");
  const Finished r = run_python(files, "pylm_client.py",
                                {"--server", m.name, "--db", m.db, "--function", m.name + ".foo", "--mode", "job",
                                 "--messages", "50", "--timeout", "30"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = r.lines();
  ASSERT_EQ(lines.size(), 50u) << r.out;
  for (const auto& line : lines) {
    EXPECT_TRUE(line == "p1 processed a message" || line == "p2 processed a message") << line;
  }
  for (Proc* p : {&p1, &p2}) {
    p->child.signal(SIGTERM);
    EXPECT_EQ(p->child.exit_code_within(15s), 0);
  }
  const std::string summary = stop_master(m);
  EXPECT_EQ(counter(summary, "dispatched.pylm"), 50u) << summary;
}

// palm's side only, the Python master between: palm workers in pylm mode
// (the master publishes no palm keys) and palm's client, over tcp.
TEST(FarmInteropProc, PalmClientAndPalmWorkersOnThePythonMaster) {
  constexpr int kMessages = 200;
  TempFiles files;
  const auto ports = free_ports(5);
  ASSERT_EQ(ports.size(), 5u);
  const std::string db = loopback(ports[0]);
  Proc master = spawn_python(files, "pylm_master.py",
                             {"--name", "master", "--db", db, "--pull", loopback(ports[1]), "--pub",
                              loopback(ports[2]), "--worker-pull", loopback(ports[3]), "--worker-push",
                              loopback(ports[4]), "--lifetime", "120"});
  // Its cache answers: it is up.
  const Finished name = run_python(files, "pylm_client.py", {"get", "name", "--server", "master", "--db", db});
  ASSERT_EQ(name.out, "master\n") << name.err << master.errors();
  Proc w1 = spawn_palm(files, {"worker", "--name", "w1", "--db", db});
  Proc w2 = spawn_palm(files, {"worker", "--name", "w2", "--db", db});
  for (Proc* w : {&w1, &w2}) ASSERT_TRUE(wait_line(w->out, "pylm push/pull")) << w->output() << w->errors();

  const Finished r = run_palm(files,
                              {"client", "--server", "master", "--db", db, "--function", "master.foo", "--job",
                               "--numbered", "--messages", std::to_string(kMessages), "--payload", "x"},
                              {}, 60s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Tally t = tally(r.lines());
  expect_each_once(t, kMessages);
  for (const auto& [worker, count] : t.workers) EXPECT_TRUE(worker == "w1" || worker == "w2") << worker;

  for (Proc* w : {&w1, &w2}) {
    w->child.signal(SIGTERM);
    EXPECT_EQ(w->child.exit_code_within(15s), 130) << w->errors();
  }
  master.child.signal(SIGTERM);
  EXPECT_EQ(master.child.exit_code_within(15s), 0) << master.errors();
}

}  // namespace
}  // namespace palm::servers::farm
