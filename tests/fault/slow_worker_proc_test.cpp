// A slow worker is not a dead one (issue "Delivery": "A slow worker (the
// built-in `sleep 2000`) is never declared dead"). One `palm worker` on shm
// or on tcp, with the master's heartbeats at 200 ms (a tcp peer silent for
// 600 ms would count as gone), runs `sleep 2000` twice: each reply comes
// once, after the sleep, from the same worker, and nothing is sent again.
#include <gtest/gtest.h>

#include <chrono>

#include "fault_util.hpp"

namespace palm::fault {
namespace {

class SlowWorker : public ::testing::TestWithParam<std::string> {};

TEST_P(SlowWorker, IsNeverDeclaredDead) {
  const std::string transport = GetParam();
  InProcessFarm farm(FarmOptions{.tag = "slow", .heartbeat = 200ms});
  ASSERT_TRUE(farm.up());
  ASSERT_TRUE(farm.add_worker(transport));
  servers::Client& client = farm.client(4, 20s);

  for (int i = 0; i < 2; ++i) {
    const auto t0 = Clock::now();
    auto r = client.eval("_.sleep", std::string_view("2000"));
    ASSERT_TRUE(r) << r.error().describe();
    EXPECT_EQ(*r, "2000") << "sleep answers with its payload";
    EXPECT_GE(Clock::now() - t0, 2000ms) << "the reply came before the method ran its course";
  }
  const auto s = farm.master().dispatch_stats();
  EXPECT_EQ(s.redispatched, 0u) << "a slow worker's message was sent again";
  EXPECT_EQ(s.duplicates, 0u);
  EXPECT_EQ(s.workers_shm + s.workers_tcp, 1u) << "the slow worker was dropped";
  EXPECT_EQ(transport == "shm" ? s.results_shm : s.results_tcp, 2u);
  ASSERT_EQ(farm.workers().size(), 1u);
  EXPECT_TRUE(farm.workers()[0].proc.child.running());
  EXPECT_EQ(client.stats().stale, 0u);

  farm.stop_workers();
  farm.drop_client();
  farm.expect_pools_full();
}

INSTANTIATE_TEST_SUITE_P(Transports, SlowWorker, ::testing::Values("shm", "tcp"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace palm::fault
