// The master bypass (servers/bypass.hpp), in-process: a Master, palm Workers
// in threads and a Client over shm. The client feeds the workers directly
// (the master dispatches none of its messages), every reply once; a worker
// that leaves mid-job has its messages sent to one that joined later; a
// master that does not offer it, or offers no worker on shm, is used as
// usual; a job through it ends on its timeout or cancel flag.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "palm/servers/client.hpp"
#include "palm/servers/master.hpp"
#include "palm/transport/context.hpp"
#include "master_config.hpp"
#include "peer.hpp"
#include "servers_test_util.hpp"
#include "worker_thread.hpp"

namespace palm::servers {
namespace {

using namespace std::chrono_literals;
using test::master_config;
using test::WorkerThread;
using transport::Context;

bool segment_exists(const std::string& name) {
  struct stat st{};
  return ::stat(("/dev/shm/" + name).c_str(), &st) == 0;
}

class BypassTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = Context::create();
    ASSERT_TRUE(c) << c.error().describe();
    ctx_.emplace(std::move(*c));
  }
  // A client asking for the bypass; `wait`: ClientOptions::bypass_wait,
  // `cores`: bypass_cores (by default two workers busy at once, whatever
  // this host has).
  static ClientOptions options(const Master& m, std::chrono::milliseconds wait = 5000ms, std::uint32_t cores = 2) {
    ClientOptions o;
    o.server_name = m.name();
    o.db_address = m.db_address();
    o.transport = shm::TransportMode::kShm;
    o.log_level = LogLevel::kWarning;
    o.timeout = 10000ms;
    o.bypass = true;
    o.bypass_wait = wait;
    o.bypass_cores = cores;
    return o;
  }
  std::unique_ptr<Client> client(const ClientOptions& o) {
    auto c = Client::connect(*ctx_, o);
    EXPECT_TRUE(c) << c.error().describe();
    return c ? std::move(*c) : nullptr;
  }
  // The client's bypass segment (bypass.hpp): palm-bypass-<pid>-<uuid prefix>.
  static std::string bypass_segment(const Client& c) {
    return "palm-bypass-" + std::to_string(::getpid()) + "-" + c.uuid().substr(0, 8);
  }
  // Waits (bounded) until `n` workers joined the client's bypass.
  static void wait_bypass_workers(Client& c, std::uint64_t n) {
    for (int i = 0; i < 500 && c.bypass_stats().workers < n; ++i) std::this_thread::sleep_for(10ms);
    ASSERT_EQ(c.bypass_stats().workers, n);
  }
  static void wait_workers(const Master& m, std::uint64_t n) {
    for (int i = 0; i < 500 && m.dispatch_stats().workers_shm + m.dispatch_stats().workers_tcp < n; ++i) {
      std::this_thread::sleep_for(10ms);
    }
    ASSERT_EQ(m.dispatch_stats().workers_shm + m.dispatch_stats().workers_tcp, n);
  }
  // A job of `n` messages "0".."n-1" through `function`: the replies, by
  // the worker tag before ':' (tag methods), with every number.
  static std::map<std::string, std::multiset<std::string>> job(Client& c, std::string_view function, int n) {
    std::map<std::string, std::multiset<std::string>> by_worker;
    int next = 0;
    auto got = c.job(
        function,
        [&](std::string& payload) {
          if (next == n) return false;
          payload = std::to_string(next++);
          return true;
        },
        [&](std::string_view reply) {
          const auto colon = reply.find(':');
          by_worker[std::string(reply.substr(0, colon))].insert(
              std::string(colon == std::string_view::npos ? reply : reply.substr(colon + 1)));
        });
    EXPECT_TRUE(got) << got.error().describe();
    if (got) {
      EXPECT_EQ(*got, static_cast<std::uint64_t>(n));
    }
    return by_worker;
  }
  static void expect_each_once(const std::map<std::string, std::multiset<std::string>>& by_worker, int n) {
    std::multiset<std::string> all;
    for (const auto& [worker, numbers] : by_worker) all.insert(numbers.begin(), numbers.end());
    ASSERT_EQ(all.size(), static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) EXPECT_EQ(all.count(std::to_string(i)), 1u) << i;
  }
  std::optional<Context> ctx_;
};

TEST_F(BypassTest, TheClientFeedsTheWorkersDirectlyEveryReplyOnce) {
  Master master(*ctx_, master_config(0, /*bypass=*/true));
  ASSERT_TRUE(master.start());
  palm::test::ShmGuard guard(master.segment());
  EXPECT_EQ(master.cache().get(std::string(kBypassKey)).value_or(""), "1");
  WorkerThread a(*ctx_, master.db_address(), shm::TransportMode::kShm, "a", 4);
  WorkerThread b(*ctx_, master.db_address(), shm::TransportMode::kShm, "b", 4);
  wait_workers(master, 2);
  auto c = client(options(master));
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->bypass_enabled());
  const std::string segment = bypass_segment(*c);
  palm::test::ShmGuard bypass_guard(segment);  // removed by the client; this if it fails
  EXPECT_TRUE(segment_exists(segment));
  wait_bypass_workers(*c, 2);

  constexpr int kN = 600;
  const auto by_worker = job(*c, "_.tag", kN);
  expect_each_once(by_worker, kN);
  // Credits of 4 each, two cores: both take some.
  EXPECT_EQ(by_worker.count("a"), 1u);
  EXPECT_EQ(by_worker.count("b"), 1u);
  auto one = c->eval("_.tag", std::string_view("last"));
  ASSERT_TRUE(one) << one.error().describe();
  EXPECT_TRUE(*one == "a:last" || *one == "b:last") << *one;

  const BypassStats s = c->bypass_stats();
  EXPECT_EQ(s.workers, 2u);
  EXPECT_EQ(s.results, kN + 1u);
  EXPECT_EQ(s.dispatched, kN + 1u);
  EXPECT_EQ(s.duplicates, 0u);
  EXPECT_EQ(c->stats().received, kN + 1u);
  EXPECT_EQ(c->stats().sent, kN + 1u) << "the bypass request is not a message of the caller's";
  const DispatchStats d = master.dispatch_stats();
  EXPECT_EQ(d.dispatched_shm + d.dispatched_tcp, 0u) << "the master dispatched none of them";
  EXPECT_EQ(d.duplicates, 0u) << "the workers' answers to the bypass request are not results";
  // A worker counts a message once its result is sent: the client may have
  // the last reply first.
  const auto served = [&] { return a.worker().stats().messages + b.worker().stats().messages; };
  for (int i = 0; i < 200 && served() < kN + 1u; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(served(), kN + 1u);

  c.reset();
  EXPECT_FALSE(segment_exists(segment)) << "the client removes its segment";
}

TEST_F(BypassTest, AWorkerThatLeavesHasItsMessagesSentToOneThatJoinedLater) {
  Master master(*ctx_, master_config(0, /*bypass=*/true));
  ASSERT_TRUE(master.start());
  palm::test::ShmGuard guard(master.segment());
  auto slow = std::make_unique<WorkerThread>(*ctx_, master.db_address(), shm::TransportMode::kShm, "slow", 4);
  wait_workers(master, 1);
  auto c = client(options(master));
  ASSERT_NE(c, nullptr);
  palm::test::ShmGuard bypass_guard(bypass_segment(*c));
  std::unique_ptr<WorkerThread> fast;
  // The slow worker takes four 300 ms sleeps; 100 ms in, another worker
  // joins (the master tells it of the bypass) and the slow one leaves
  // after the sleep it is in: the three it holds go to the new one.
  std::thread change([&] {
    std::this_thread::sleep_for(100ms);
    fast = std::make_unique<WorkerThread>(*ctx_, master.db_address(), shm::TransportMode::kShm, "fast", 4);
    slow.reset();
  });
  int next = 0;
  std::multiset<std::string> replies;
  auto got = c->job(
      "_.sleep",
      [&](std::string& payload) {
        if (next++ == 4) return false;
        payload = "300";
        return true;
      },
      [&](std::string_view reply) { replies.insert(std::string(reply)); });
  change.join();
  ASSERT_TRUE(got) << got.error().describe();
  EXPECT_EQ(*got, 4u);
  EXPECT_EQ(replies.count("300"), 4u);
  const BypassStats s = c->bypass_stats();
  EXPECT_GE(s.redispatched, 1u);
  EXPECT_EQ(s.results, 4u);
  // A worker counts a message once its result is sent: the client may have
  // the reply first.
  for (int i = 0; i < 200 && fast->worker().stats().messages < s.redispatched; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_GE(fast->worker().stats().messages, s.redispatched);
  EXPECT_EQ(master.dispatch_stats().dispatched_shm, 0u);
}

// More workers than cores: a stream of fast messages keeps only as many
// busy as the client's cores (BypassDispatcher::busy_window), so the others
// can sleep. Here one core: one worker serves the whole job.
TEST_F(BypassTest, AFastStreamKeepsOneWorkerPerCoreBusy) {
  Master master(*ctx_, master_config(0, /*bypass=*/true));
  ASSERT_TRUE(master.start());
  palm::test::ShmGuard guard(master.segment());
  WorkerThread a(*ctx_, master.db_address(), shm::TransportMode::kShm, "a", 4);
  WorkerThread b(*ctx_, master.db_address(), shm::TransportMode::kShm, "b", 4);
  WorkerThread c(*ctx_, master.db_address(), shm::TransportMode::kShm, "c", 4);
  wait_workers(master, 3);
  auto c1 = client(options(master, 5000ms, /*cores=*/1));
  ASSERT_NE(c1, nullptr);
  palm::test::ShmGuard bypass_guard(bypass_segment(*c1));
  wait_bypass_workers(*c1, 3);
  const auto by_worker = job(*c1, "_.tag", 400);
  expect_each_once(by_worker, 400);
  EXPECT_EQ(by_worker.size(), 1u) << "workers that served: " << by_worker.size();
}

// A job through the bypass that sends and receives nothing for `timeout`
// ends in kTimeout naming the bypass, its late reply dropped as stale by
// the next call; one whose cancel flag is raised ends "interrupted".
TEST_F(BypassTest, AJobWithoutProgressEndsOnItsTimeoutOrCancelFlag) {
  Master master(*ctx_, master_config(0, /*bypass=*/true));
  ASSERT_TRUE(master.start());
  palm::test::ShmGuard guard(master.segment());
  WorkerThread a(*ctx_, master.db_address(), shm::TransportMode::kShm, "a", 4);
  wait_workers(master, 1);
  std::atomic<bool> cancel{false};
  ClientOptions o = options(master);
  o.timeout = 200ms;
  o.cancel = &cancel;
  auto c = client(o);
  ASSERT_NE(c, nullptr);
  palm::test::ShmGuard bypass_guard(bypass_segment(*c));
  wait_bypass_workers(*c, 1);
  // One message the worker answers well past the timeout; `raise`: the
  // cancel flag goes up with it.
  const auto one_slow = [&](bool raise) {
    bool sent = false;
    return c->job(
        "_.sleep",
        [&](std::string& payload) {
          if (std::exchange(sent, true)) return false;
          if (raise) cancel.store(true);
          payload = "700";  // ms
          return true;
        },
        [](std::string_view) {});
  };

  auto timed_out = one_slow(false);
  ASSERT_FALSE(timed_out);
  EXPECT_EQ(timed_out.error().code, Errc::kTimeout) << timed_out.error().describe();
  EXPECT_NE(timed_out.error().message.find("job '_.sleep' through the bypass at shm://"), std::string::npos)
      << timed_out.error().message;
  EXPECT_NE(timed_out.error().message.find("0 replies of 1 sent came (1 workers attached)"), std::string::npos)
      << timed_out.error().message;
  EXPECT_EQ(c->stats().timeouts, 1u);
  // A worker counts a message once its result is sent.
  for (int i = 0; i < 300 && a.worker().stats().messages < 1; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(a.worker().stats().messages, 1u);
  auto next = c->eval("_.tag", std::string_view("next"));
  ASSERT_TRUE(next) << next.error().describe();
  EXPECT_EQ(*next, "a:next");
  EXPECT_EQ(c->stats().stale, 1u);
  EXPECT_EQ(c->bypass_stats().results, 2u);

  auto interrupted = one_slow(true);
  ASSERT_FALSE(interrupted);
  EXPECT_EQ(interrupted.error().code, Errc::kClosed) << interrupted.error().describe();
  EXPECT_EQ(interrupted.error().message, "interrupted");
  EXPECT_EQ(c->stats().timeouts, 1u) << "cancelled, not timed out";
  EXPECT_EQ(c->bypass_stats().dispatched, 3u);
}

TEST_F(BypassTest, AMasterThatDoesNotOfferItIsUsedAsUsual) {
  Master master(*ctx_, master_config(0, /*bypass=*/false));
  ASSERT_TRUE(master.start());
  palm::test::ShmGuard guard(master.segment());
  EXPECT_EQ(master.cache().get(std::string(kBypassKey)).value_or("?"), "");
  WorkerThread a(*ctx_, master.db_address(), shm::TransportMode::kShm, "a", 4);
  wait_workers(master, 1);
  auto c = client(options(master));
  ASSERT_NE(c, nullptr);
  EXPECT_FALSE(c->bypass_enabled());
  expect_each_once(job(*c, "_.tag", 50), 50);
  EXPECT_EQ(master.dispatch_stats().dispatched_shm, 50u);
}

TEST_F(BypassTest, WithoutAWorkerOnShmTheMasterCarriesTheJob) {
  Master master(*ctx_, master_config(0, /*bypass=*/true));
  ASSERT_TRUE(master.start());
  palm::test::ShmGuard guard(master.segment());
  WorkerThread t(*ctx_, master.db_address(), shm::TransportMode::kTcp, "t", 4);
  wait_workers(master, 1);
  auto c = client(options(master, 300ms));
  ASSERT_NE(c, nullptr);
  palm::test::ShmGuard bypass_guard(bypass_segment(*c));
  ASSERT_TRUE(c->bypass_enabled());
  // A worker on tcp cannot attach to a segment: nobody joins within the
  // wait, and the job goes through the master.
  expect_each_once(job(*c, "_.tag", 50), 50);
  EXPECT_EQ(c->bypass_stats().workers, 0u);
  EXPECT_EQ(c->bypass_stats().dispatched, 0u);
  EXPECT_EQ(master.dispatch_stats().dispatched_tcp, 50u);
}

}  // namespace
}  // namespace palm::servers
