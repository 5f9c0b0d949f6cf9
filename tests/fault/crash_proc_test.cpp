// A client or a master SIGKILLed mid-job (DESIGN.md "The crash model").
//
// Client killed: the master (in this process) drops what it still had for
// the dead client within a bounded time, serves another client afterwards
// (the exact set), and every block comes back.
//
// Master killed (`palm master`): its `palm worker`s and `palm client`s,
// over shm and over tcp, notice within a bounded time, say so in one line
// and exit 1; nothing hangs. A master restarted with the same name and ports
// removes the dead one's segment and new workers attach to it.
#include <signal.h>

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "fault_util.hpp"

namespace palm::fault {
namespace {

using servers::farm::counter;
using servers::farm::lines_of;
using servers::farm::Served;
using servers::farm::spawn_palm;
using servers::farm::wait_line;

class ClientKilled : public ::testing::TestWithParam<std::string> {};

TEST_P(ClientKilled, TheMasterDropsItsResultsAndServesTheNext) {
  const std::string transport = GetParam();
  InProcessFarm farm(FarmOptions{.tag = "ck"});
  ASSERT_TRUE(farm.up());
  ASSERT_TRUE(farm.add_worker("shm"));
  ASSERT_TRUE(farm.add_worker("shm"));
  servers::Master& master = farm.master();
  const std::size_t baseline = farm.segment_pool().stats().allocated_blocks;

  // A `palm client` streaming a long job (200 000 messages).
  Proc client = spawn_palm(farm.files(),
                           {"client", "--server", master.name(), "--db", master.db_address(), "--function",
                            "_.echo", "--job", "--numbered", "--messages", "200000", "--payload", "x", "--settle",
                            "0"},
                           {{"PALM_TRANSPORT", transport}});
  const auto results = [&] {
    const auto s = master.dispatch_stats();
    return s.results_shm + s.results_tcp;
  };
  ASSERT_TRUE(eventually([&] { return results() >= 5000; }, 20s)) << client.errors();
  client.child.signal(SIGKILL);
  ASSERT_EQ(client.child.exit_code_within(5s), -SIGKILL);
  const auto killed_at = Clock::now();

  // Within 5 s: nothing in flight, no result for 100 ms, every block the
  // dead client's messages and results took back in the pool.
  const std::uint64_t at_kill = results();
  std::uint64_t last = ~std::uint64_t{0};  // the first look is never quiet
  const bool settled = eventually(
      [&] {
        const std::uint64_t now = results();
        const bool quiet = now == last;
        last = now;
        return quiet && master.dispatch_stats().in_flight == 0 &&
               farm.segment_pool().stats().allocated_blocks <= baseline;
      },
      5s, 100ms);
  const double secs = std::chrono::duration<double>(Clock::now() - killed_at).count();
  EXPECT_TRUE(settled) << "in flight " << master.dispatch_stats().in_flight << ", blocks allocated "
                       << farm.segment_pool().stats().allocated_blocks << " (baseline " << baseline << ")";
  std::printf("client over %s killed after %llu results; %llu more went to nobody; the master settled in %.2f s\n",
              transport.c_str(), static_cast<unsigned long long>(at_kill),
              static_cast<unsigned long long>(last - at_kill), secs);

  // Another client: served, the exact set.
  servers::Client& next = farm.client(64);
  GatedJob job(next, "_.echo", 2000, 2000);
  const Result<std::uint64_t>& r = job.finish();
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(*r, 2000u);
  EXPECT_EQ(job.seqs().lost(), 0u);
  EXPECT_EQ(job.seqs().twice(), 0u);
  EXPECT_EQ(job.seqs().bad(), 0u);

  farm.stop_workers();
  farm.drop_client();
  farm.expect_pools_full();
}

INSTANTIATE_TEST_SUITE_P(Transports, ClientKilled, ::testing::Values("shm", "tcp"),
                         [](const auto& p) { return p.param; });

// The tcp address `what` ("inbound pull", "dispatch dispatcher", ...) from
// a server's start lines.
std::string bound(const Proc& p, const std::string& what) {
  const auto line = wait_line(p.out, what + " bound on tcp://", 1s);
  EXPECT_TRUE(line) << what << ": " << p.output();
  return line ? line->substr(line->find("tcp://")) : std::string();
}

std::string port_of(const std::string& address) { return address.substr(address.rfind(':') + 1); }

// The lines of `text` that start with `prefix`.
std::vector<std::string> lines_starting(const std::string& text, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& l : lines_of(text)) {
    if (l.starts_with(prefix)) out.push_back(l);
  }
  return out;
}

TEST(MasterKilled, WorkersAndClientsSayItAndExitThenARestartedMasterTakesWorkers) {
  TempFiles files;
  const std::string name = palm::test::unique_name("mk");
  Served m = servers::farm::start_served(files, "master", name);
  ASSERT_FALSE(m.db.empty());
  const std::string segment = m.segment->name();
  // Every address in effect, for the restart.
  const std::vector<std::string> ports = {port_of(m.db), port_of(bound(m.proc, "inbound pull")),
                                          port_of(bound(m.proc, "outbound pub")),
                                          port_of(bound(m.proc, "dispatch push")),
                                          port_of(bound(m.proc, "dispatch pull")),
                                          port_of(bound(m.proc, "dispatch dispatcher"))};

  // Workers on shm and on tcp; clients on shm and on tcp, each mid-job on
  // `sleep` (2 ms a message, 5000 messages: about 5 s for the farm).
  std::map<std::string, Proc> procs;
  for (const std::string t : {"shm", "tcp"}) {
    procs.emplace("worker " + t, spawn_palm(files,
                                            {"worker", "--name", "w" + t, "--db", m.db, "--master-timeout", "2000",
                                             "--log-level", "WARNING"},
                                            {{"PALM_TRANSPORT", t}}));
  }
  ASSERT_TRUE(wait_line(m.proc.out, "(2 workers)")) << m.proc.output();
  for (const std::string t : {"shm", "tcp"}) {
    procs.emplace("client " + t,
                  spawn_palm(files,
                             {"client", "--server", name, "--db", m.db, "--function", name + ".sleep", "--job",
                              "--messages", "5000", "--payload", "2", "--timeout", "3000", "--settle", "0"},
                             {{"PALM_TRANSPORT", t}}));
  }
  std::this_thread::sleep_for(1500ms);  // mid-job: each client connected and answered for a while
  for (auto& [what, p] : procs) ASSERT_TRUE(p.child.running()) << what << " ended early: " << p.errors();

  const pid_t dead_pid = m.proc.child.pid();
  m.proc.child.signal(SIGKILL);
  ASSERT_EQ(m.proc.child.exit_code_within(5s), -SIGKILL);
  const auto killed_at = Clock::now();
  EXPECT_TRUE(servers::farm::segment_exists(segment)) << "a SIGKILLed master leaves its segment";

  // Bounds: a shm peer sees its master's pid gone within its liveness
  // checks; a tcp worker after --master-timeout (2 s), a tcp client after
  // --timeout (3 s). 10 s for all.
  std::map<std::string, std::pair<int, double>> ended;  // exit code, seconds after the kill
  eventually(
      [&] {
        for (auto& [what, p] : procs) {
          if (ended.count(what) != 0) continue;
          if (const auto code = p.child.exit_code_within(0ms)) {
            ended[what] = {*code, std::chrono::duration<double>(Clock::now() - killed_at).count()};
          }
        }
        return ended.size() == procs.size();
      },
      10s, 10ms);
  for (auto& [what, p] : procs) {
    ASSERT_EQ(ended.count(what), 1u) << what << " still runs 10 s after its master died: " << p.errors();
    const auto [code, secs] = ended[what];
    EXPECT_EQ(code, 1) << what << ": " << p.errors();
    const std::string prefix = what.starts_with("worker") ? "palm worker: " : "palm client: ";
    const auto said = lines_starting(p.errors(), prefix);
    ASSERT_EQ(said.size(), 1u) << what << ": " << p.errors();
    EXPECT_NE(said[0].find(what.starts_with("worker") ? "the master is gone" : "the server is gone"),
              std::string::npos)
        << what << ": " << said[0];
    std::printf("%s exited %d after %.2f s: %s\n", what.c_str(), code, secs, said[0].c_str());
  }

  // Restarted with the same name and ports: the stale segment removed, a
  // fresh one made, workers attach over shm and tcp, a client is served.
  Proc again = spawn_palm(files, {"master", "--name", name, "--db", "tcp://127.0.0.1:" + ports[0], "--pull",
                                  "tcp://127.0.0.1:" + ports[1], "--pub", "tcp://127.0.0.1:" + ports[2], "--wpush",
                                  "tcp://127.0.0.1:" + ports[3], "--wpull", "tcp://127.0.0.1:" + ports[4],
                                  "--dispatch", "tcp://127.0.0.1:" + ports[5]});
  ASSERT_TRUE(wait_line(again.out, "serving until")) << again.output() << again.errors();
  EXPECT_TRUE(wait_line(again.err, "removing the segment of dead owner pid " + std::to_string(dead_pid), 1s))
      << again.errors();
  EXPECT_TRUE(servers::farm::segment_exists(segment));
  std::vector<Proc> workers;
  for (const std::string t : {"shm", "tcp"}) {
    workers.push_back(spawn_palm(files, {"worker", "--name", "again-" + t, "--db", m.db, "--log-level", "WARNING"},
                                 {{"PALM_TRANSPORT", t}}));
  }
  ASSERT_TRUE(wait_line(again.out, "(2 workers)")) << again.output();
  EXPECT_TRUE(wait_line(again.out, "joined over shm", 0ms));
  EXPECT_TRUE(wait_line(again.out, "joined over tcp", 0ms));
  const auto r = servers::farm::run_palm(files, {"client", "--server", name, "--db", m.db, "--function",
                                                 name + ".echo", "--job", "--numbered", "--messages", "100",
                                                 "--payload", "y", "--settle", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.lines().size(), 100u);
  for (auto& w : workers) {
    w.child.signal(SIGTERM);
    EXPECT_EQ(w.child.exit_code_within(15s), 130) << w.errors();
  }
  again.child.signal(SIGTERM);
  EXPECT_EQ(again.child.exit_code_within(15s), 130) << again.errors();
  EXPECT_FALSE(servers::farm::segment_exists(segment));
  const auto summary = wait_line(again.out, " - INFO - summary: ", 1s);
  ASSERT_TRUE(summary);
  EXPECT_EQ(counter(*summary, "dispatched.shm").value_or(0) + counter(*summary, "dispatched.tcp").value_or(0), 100u)
      << *summary;
}

}  // namespace
}  // namespace palm::fault
