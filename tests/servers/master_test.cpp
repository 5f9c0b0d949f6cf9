// Master in-process with palm Workers in threads: per-worker dispatch over shm
// and tcp at once, every result once, scatter/gather/handle_stream, the
// messages limit, and a worker leaving mid-stream. (Processes, pylm workers
// and the command line: farm_proc_test.cpp, farm_interop_proc_test.cpp.)
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "palm/servers/master.hpp"
#include "palm/servers/worker.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/shm/host.hpp"
#include "master_config.hpp"
#include "peer.hpp"
#include "servers_test_util.hpp"
#include "wire_client.hpp"
#include "worker_thread.hpp"

namespace palm::servers {
namespace {

using namespace std::chrono_literals;
using transport::Context;
using test::master_config;
using test::WorkerThread;

class MasterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = Context::create();
    ASSERT_TRUE(c) << c.error().describe();
    ctx_.emplace(std::move(*c));
  }
  void connect(Master& m, shm::TransportMode mode = shm::TransportMode::kTcp, std::string topic = "client-1") {
    client_.connect(*ctx_, m.pull_address(), m.pub_address(), m.db_address(), m.name(), mode,
                    std::move(topic), "_.echo");
  }
  std::optional<Context> ctx_;
  test::WireClient client_;
};

TEST_F(MasterTest, ShmAndTcpWorkersServeOneMasterEachResultOnce) {
  Master master(*ctx_, master_config());
  ASSERT_TRUE(master.start());
  palm::test::ShmGuard guard(master.segment());
  EXPECT_EQ(master.cache().get("__palm.dispatch").value_or(""), master.dispatch_address());
  WorkerThread a(*ctx_, master.db_address(), shm::TransportMode::kShm, "a");
  WorkerThread b(*ctx_, master.db_address(), shm::TransportMode::kShm, "b");
  WorkerThread c(*ctx_, master.db_address(), shm::TransportMode::kTcp, "c");
  EXPECT_EQ(a.worker().stats().receive_scheme, transport::Scheme::kShm);
  EXPECT_EQ(c.worker().stats().receive_scheme, transport::Scheme::kTcp);
  for (int i = 0; i < 200 && master.dispatch_stats().workers_shm + master.dispatch_stats().workers_tcp < 3; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(master.dispatch_stats().workers_shm, 2u);
  ASSERT_EQ(master.dispatch_stats().workers_tcp, 1u);
  connect(master);

  const int n = 600;
  for (int i = 0; i < n; ++i) client_.send(std::to_string(i), "_.tag");
  std::multiset<std::string> numbers;
  std::map<std::string, int> by_worker;
  std::set<std::string> caches;
  for (int i = 0; i < n; ++i) {
    const auto r = client_.receive();
    const auto colon = r.payload.find(':');
    ASSERT_NE(colon, std::string::npos) << r.payload;
    ++by_worker[r.payload.substr(0, colon)];
    numbers.insert(r.payload.substr(colon + 1));
    EXPECT_EQ(r.topic, "client-1");
    EXPECT_EQ(r.dispatch_id, 0u) << "the dispatch id stays inside the master";
    EXPECT_TRUE(test::is_uuid4(r.cache)) << r.cache;
    caches.insert(r.cache);
  }
  std::set<std::string> expected;
  for (int i = 0; i < n; ++i) expected.insert(std::to_string(i));
  EXPECT_EQ(std::set<std::string>(numbers.begin(), numbers.end()), expected);
  EXPECT_EQ(numbers.size(), static_cast<std::size_t>(n));
  EXPECT_EQ(caches.size(), static_cast<std::size_t>(n)) << "one uuid4 stamped per message";
  EXPECT_GT(by_worker["a"], 0);
  EXPECT_GT(by_worker["b"], 0);
  EXPECT_GT(by_worker["c"], 0);
  const auto s = master.dispatch_stats();
  EXPECT_GE(s.dispatched_shm, static_cast<std::uint64_t>(by_worker["a"] + by_worker["b"]));
  EXPECT_GE(s.dispatched_tcp, static_cast<std::uint64_t>(by_worker["c"]));
  EXPECT_EQ(s.duplicates, 0u);
  EXPECT_EQ(s.in_flight, 0u);
  // Nothing left after a quiet moment.
  transport::Delivery d;
  EXPECT_EQ(client_.sub().recv_for(d, 200ms), WaitResult::kTimeout);
}

// "Feed the busiest workers, let the rest sleep": a trickle (one message in
// flight at a time) stays on the first worker, so the others can sleep; a
// burst of slow messages still spreads once one worker holds a run.
class MasterFeeding : public MasterTest, public ::testing::WithParamInterface<shm::TransportMode> {};

// A shm client's trickle comes back within µs: its worker must not be taken
// for a fast one (that may hold all its credits) by round trips alone.
TEST_P(MasterFeeding, ATrickleStaysOnOneWorkerAndABurstSpreads) {
  Master master(*ctx_, master_config());
  ASSERT_TRUE(master.start());
  palm::test::ShmGuard guard(master.segment());
  WorkerThread a(*ctx_, master.db_address(), shm::TransportMode::kShm, "a", 64);
  for (int i = 0; i < 200 && master.dispatch_stats().workers_shm < 1; ++i) std::this_thread::sleep_for(10ms);
  WorkerThread b(*ctx_, master.db_address(), shm::TransportMode::kShm, "b", 64);
  for (int i = 0; i < 200 && master.dispatch_stats().workers_shm < 2; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(master.dispatch_stats().workers_shm, 2u);
  connect(master, GetParam());

  std::map<std::string, int> trickle;
  for (int i = 0; i < 40; ++i) {
    client_.send(std::to_string(i), "_.tag");
    const auto r = client_.receive();
    ++trickle[r.payload.substr(0, r.payload.find(':'))];
  }
  EXPECT_EQ(trickle["a"], 40) << "b got " << trickle["b"];

  // 2 ms each: the master holds many at once, so "a" fills its run of 16.
  const int n = 60;
  for (int i = 0; i < n; ++i) client_.send(std::to_string(i), "_.slow");
  std::map<std::string, int> burst;
  for (int i = 0; i < n; ++i) {
    const auto r = client_.receive();
    ++burst[r.payload.substr(0, r.payload.find(':'))];
  }
  EXPECT_EQ(burst["a"] + burst["b"], n);
  EXPECT_GT(burst["b"], 0);
  EXPECT_GE(burst["a"], 16);
}

INSTANTIATE_TEST_SUITE_P(Client, MasterFeeding,
                         ::testing::Values(shm::TransportMode::kTcp, shm::TransportMode::kShm),
                         [](const auto& tp) { return tp.param == shm::TransportMode::kShm ? "Shm" : "Tcp"; });

TEST_F(MasterTest, WorkerErrorsComeBackAsZeroWithTheReason) {
  Master master(*ctx_, master_config());
  ASSERT_TRUE(master.start());
  palm::test::ShmGuard guard(master.segment());
  WorkerThread a(*ctx_, master.db_address(), shm::TransportMode::kShm, "a");
  connect(master);
  client_.send("x", "_.fail");
  auto r = client_.receive();
  EXPECT_EQ(r.payload, "0");
  EXPECT_NE(r.error.find("fail was called"), std::string::npos) << r.error;
  client_.send("x", "_.nope");
  r = client_.receive();
  EXPECT_EQ(r.payload, "0");
  EXPECT_NE(r.error.find("nope"), std::string::npos) << r.error;
  client_.send("abc", "_.upper");
  EXPECT_EQ(client_.receive().payload, "ABC");
  client_.send("abc", "_.fill");  // written straight into the result's block
  EXPECT_EQ(client_.receive().payload, "filled:abc");
}

class ScatterGatherMaster : public Master {
 public:
  using Master::Master;
  ~ScatterGatherMaster() override { stop(); }  // the parts call the hooks below
  // Two messages per input: the payload and its reverse.
  void scatter(const MessageView& m, Emitter& out) override {
    out.emit_same();
    std::string reversed(reinterpret_cast<const char*>(m.payload.data()), m.payload.size());
    std::reverse(reversed.begin(), reversed.end());
    out.emit(change_payload(m, test::bytes_of(reversed)));
  }
  // Counts results; every second one is dropped, the others renamed.
  void gather(const MessageView& m, Emitter& out) override {
    if (++gathered_ % 2 == 0) return;
    const std::string payload = "gathered " + test::string_of(m.payload);
    out.emit(change_payload(m, test::bytes_of(payload)));
  }
  void handle_stream(const MessageView&, StreamEdit& edit) override { edit.topic = "all-" + edit.topic; }
  std::atomic<int> gathered_{0};
};

TEST_F(MasterTest, ScatterGatherAndHandleStreamOverride) {
  ScatterGatherMaster master(*ctx_, master_config());
  ASSERT_TRUE(master.start());
  palm::test::ShmGuard guard(master.segment());
  WorkerThread a(*ctx_, master.db_address(), shm::TransportMode::kShm, "a", 1);  // one at a time
  client_.connect(*ctx_, master.pull_address(), master.pub_address(), master.db_address(), master.name(),
                  shm::TransportMode::kTcp, "all-client-1", "_.echo", "client-1");
  const int before = master.gathered_.load();
  for (int i = 0; i < 10; ++i) client_.send("ab" + std::to_string(i), "_.echo");
  std::set<std::string> got;
  for (int i = 0; i < 10; ++i) {
    const auto r = client_.receive();
    EXPECT_EQ(r.topic, "all-client-1");
    EXPECT_EQ(r.payload.rfind("gathered ", 0), 0u) << r.payload;
    got.insert(r.payload);
  }
  EXPECT_EQ(got.size(), 10u);
  // The last gather may be one that drops its result: it runs after the
  // tenth reply was published.
  for (int i = 0; i < 200 && master.gathered_.load() - before < 20; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(master.gathered_.load() - before, 20);
}

TEST_F(MasterTest, AWorkerThatLeavesHasItsMessagesSentToAnother) {
  Master master(*ctx_, master_config());
  ASSERT_TRUE(master.start());
  palm::test::ShmGuard guard(master.segment());
  auto slow = std::make_unique<WorkerThread>(*ctx_, master.db_address(), shm::TransportMode::kShm, "slow", 4);
  connect(master);
  // The slow worker takes four 300 ms sleeps, then leaves before finishing.
  for (int i = 0; i < 4; ++i) client_.send("300", "_.sleep");
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(master.dispatch_stats().in_flight, 4u);
  std::thread leave([&] { slow.reset(); });  // stops, and closes its endpoint: it leaves
  WorkerThread fast(*ctx_, master.db_address(), shm::TransportMode::kShm, "fast", 4);
  int got = 0;
  for (int i = 0; i < 4; ++i) got += client_.receive().payload == "300";
  leave.join();
  EXPECT_EQ(got, 4);
  transport::Delivery d;
  EXPECT_EQ(client_.sub().recv_for(d, 500ms), WaitResult::kTimeout) << "nothing twice";
}

TEST_F(MasterTest, TheMessagesLimitStopsTheMaster) {
  constexpr int kLimit = 40;
  Master master(*ctx_, master_config(kLimit));
  ASSERT_TRUE(master.start());
  palm::test::ShmGuard guard(master.segment());
  WorkerThread a(*ctx_, master.db_address(), shm::TransportMode::kShm, "a");
  connect(master);
  const int left = kLimit - client_.probes();  // every probe's result counts
  ASSERT_GT(left, 0);
  for (int i = 0; i < left; ++i) client_.send("m", "_.echo");
  for (int i = 0; i < left; ++i) EXPECT_EQ(client_.receive().payload, "m");
  EXPECT_TRUE(master.wait(5s));
}

}  // namespace
}  // namespace palm::servers

namespace palm::servers {
namespace {

// Every block comes back: after a stream through master and workers over
// shm, the segment's pool holds nothing but what is still referenced.
TEST_F(MasterTest, ThePoolIsFullAgainAfterAStream) {
  Master master(*ctx_, master_config());
  ASSERT_TRUE(master.start());
  palm::test::ShmGuard guard(master.segment());
  WorkerThread a(*ctx_, master.db_address(), shm::TransportMode::kShm, "a", 16);
  WorkerThread b(*ctx_, master.db_address(), shm::TransportMode::kShm, "b", 16);
  connect(master, shm::TransportMode::kShm);
  auto* shm_push = dynamic_cast<shm::ShmEndpoint*>(&client_.push());
  ASSERT_NE(shm_push, nullptr);
  const auto allocated = [&] { return shm_push->pool().stats().allocated_blocks; };
  const std::size_t before = allocated();
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < 200; ++i) client_.send(std::to_string(i), "_.echo");
    for (int i = 0; i < 200; ++i) ASSERT_FALSE(client_.receive().payload.empty());
  }
  std::size_t after = allocated();
  for (int i = 0; i < 100 && after > before; ++i) {
    std::this_thread::sleep_for(10ms);
    after = allocated();
  }
  EXPECT_LE(after, before) << "blocks still allocated after 4000 messages";
}

}  // namespace
}  // namespace palm::servers
