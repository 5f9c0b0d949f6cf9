// One master, one `palm worker` on shm and one on tcp; one of them is
// SIGKILLed while it holds messages (each in turn; frozen first, so that it
// surely does): the other finishes the job alone and the client gets back
// exactly the set of numbers sent.
#include <gtest/gtest.h>

#include "fault_util.hpp"

namespace palm::fault {
namespace {

constexpr std::uint64_t kMessages = 20000;
constexpr std::uint64_t kKillAt = 2000;
constexpr std::uint32_t kWindow = 256;
constexpr std::uint64_t kSlack = kWindow + 64;

class OneDies : public ::testing::TestWithParam<std::string> {};

TEST_P(OneDies, TheOtherFinishesTheJob) {
  const std::string victim_transport = GetParam();
  const std::string survivor = victim_transport == "shm" ? "tcp" : "shm";
  InProcessFarm farm(FarmOptions{.tag = "one"});
  ASSERT_TRUE(farm.up());
  ASSERT_TRUE(farm.add_worker("shm"));
  ASSERT_TRUE(farm.add_worker("tcp"));
  servers::Client& client = farm.client(kWindow);

  GatedJob job(client, "_.echo", kMessages, kKillAt + kSlack);
  ASSERT_TRUE(job.wait_received(kKillAt, 30s)) << job.received();
  // The victim must hold messages: opened a little at a time until it does.
  std::optional<std::size_t> victim;
  // Opened wide: the stream keeps flowing while we look. The victim is
  // frozen once the master sees it hold messages, so it cannot answer
  // them before the kill lands.
  for (std::uint64_t more = 1; !victim && more <= 15 && !job.done(); ++more) {
    job.set_gate(kKillAt + kSlack + more * 1000);
    const std::size_t i = farm.workers()[0].transport == victim_transport ? 0 : 1;
    if (farm.freeze_holding(i, 50ms)) victim = i;
  }
  ASSERT_TRUE(victim) << "the " << victim_transport << " worker held no message";
  const auto before = farm.master().dispatch_stats();
  EXPECT_EQ(farm.kill_worker(*victim), victim_transport);
  const Result<std::uint64_t>& r = job.finish();
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(*r, kMessages);

  const SeqSet& seqs = job.seqs();
  EXPECT_EQ(seqs.bad(), 0u);
  EXPECT_EQ(seqs.twice(), 0u) << "a sequence number came back twice";
  EXPECT_EQ(seqs.lost(), 0u) << "never came back: " << seqs.lost_sample();
  const auto after = farm.master().dispatch_stats();
  EXPECT_GT(after.redispatched, 0u);
  // The survivor did the rest: every result after the kill came over its transport.
  const auto results = [&](const servers::DispatchStats& s, const std::string& t) {
    return t == "shm" ? s.results_shm : s.results_tcp;
  };
  EXPECT_GT(results(after, survivor), results(before, survivor));
  EXPECT_EQ(after.workers_shm + after.workers_tcp, 1u);
  std::printf("%s worker killed: %llu sent, %llu received, lost %llu, twice %llu, re-dispatched %llu\n",
              victim_transport.c_str(), static_cast<unsigned long long>(kMessages),
              static_cast<unsigned long long>(seqs.received()), static_cast<unsigned long long>(seqs.lost()),
              static_cast<unsigned long long>(seqs.twice()), static_cast<unsigned long long>(after.redispatched));

  farm.stop_workers();
  farm.drop_client();
  // The kill lands while the victim works: inside a pool operation's crash
  // window it loses the block in its hand (fault_util.hpp), at most one.
  // (Seen once in ~10 runs: 1 block, freed by the audit.)
  farm.expect_pools_full(1);
}

INSTANTIATE_TEST_SUITE_P(Victim, OneDies, ::testing::Values("shm", "tcp"),
                         [](const auto& p) { return p.param + "_dies"; });

}  // namespace
}  // namespace palm::fault
