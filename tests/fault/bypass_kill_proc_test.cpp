// The master bypass (servers/bypass.hpp) while workers die: nothing lost,
// nothing twice. A Master and a bypass Client in this process, 4 `palm
// worker` processes over shm serving the client's own dispatcher; 40 000
// messages stream through `echo`, each with its own sequence number. Every
// kInterval replies the test lets work flow, SIGKILLs a worker and starts a
// replacement (the master tells it of the bypass; it attaches to the
// client). The client must get back exactly the set of numbers sent, none
// twice, having sent again what the dead held; the master must have
// dispatched none of them; its segment's pool must be full at the end.
#include <gtest/gtest.h>

#include <thread>

#include "fault_util.hpp"

namespace palm::fault {
namespace {

constexpr std::uint64_t kMessages = 40000;
constexpr std::uint64_t kInterval = 2000;
constexpr std::uint32_t kWindow = 256;  // the client's
constexpr std::uint64_t kSlack = kWindow + 64;

TEST(BypassKillLoop, ExactSetWhileTheClientsWorkersAreKilled) {
  InProcessFarm farm(FarmOptions{.tag = "bpkill", .bypass = true});
  ASSERT_TRUE(farm.up());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(farm.add_worker("shm"));
  servers::Client& client = farm.client(kWindow);
  ASSERT_TRUE(client.bypass_enabled());
  ASSERT_TRUE(eventually([&] { return client.bypass_stats().workers == 4; }, 10s, 10ms))
      << client.bypass_stats().workers << " of 4 workers attached to the client's dispatcher";

  GatedJob job(client, "_.echo", kMessages, kInterval + kSlack);
  std::uint64_t kills = 0;
  for (std::uint64_t mark = kInterval; mark + kInterval < kMessages; mark += kInterval) {
    if (!job.wait_received(mark, 60s)) {
      ADD_FAILURE() << "the job stalled at " << job.received() << " replies";
      break;
    }
    // Work flows while one dies: each worker holds some of the window.
    job.set_gate(mark + kInterval + kSlack);
    farm.kill_worker(static_cast<std::size_t>(kills % farm.workers().size()));
    ++kills;
    if (!farm.add_worker("shm")) break;
  }
  const Result<std::uint64_t>& job_result = job.finish();
  ASSERT_TRUE(job_result) << job_result.error().describe();
  EXPECT_EQ(*job_result, kMessages);
  const SeqSet& seqs = job.seqs();
  EXPECT_EQ(seqs.bad(), 0u) << "replies that echo no message sent";
  EXPECT_EQ(seqs.twice(), 0u) << "a sequence number came back twice";
  EXPECT_EQ(seqs.lost(), 0u) << "never came back: " << seqs.lost_sample();
  EXPECT_EQ(kills, kMessages / kInterval - 2);
  const servers::BypassStats bs = client.bypass_stats();
  EXPECT_GT(bs.redispatched, 0u) << "no kill caught a worker holding messages";
  EXPECT_GE(bs.results, kMessages);
  EXPECT_EQ(farm.master().dispatch_stats().dispatched_shm, 0u) << "the master carried none of them";
  std::printf("bypass kill loop: %llu messages, %llu kills, re-dispatched %llu, duplicates dropped %llu\n",
              static_cast<unsigned long long>(kMessages), static_cast<unsigned long long>(kills),
              static_cast<unsigned long long>(bs.redispatched), static_cast<unsigned long long>(bs.duplicates));
  std::fflush(stdout);

  farm.stop_workers();
  farm.drop_client();
  farm.expect_pools_full(kills / 10);
}

}  // namespace
}  // namespace palm::fault
