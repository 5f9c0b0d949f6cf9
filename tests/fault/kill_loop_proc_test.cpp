// Nothing lost, nothing twice, while workers die (DESIGN.md "The farm":
// results reach the client exactly once, execution is at least once). A
// Master and a Client in this process, 4 `palm worker` processes; 100 000
// messages stream through `echo`, each with its own sequence number. Every
// `kInterval` replies the test SIGKILLs a worker that the master's table
// shows holding messages, and starts a replacement over the same transport.
// The client must get back exactly the set of numbers sent, none twice; the
// master must have re-dispatched; every block of the segment's pool must be
// free at the end. Over shm, over tcp (ZMTP heartbeats of 200 ms on the
// master's side), and mixed (2 + 2).
//
// Pacing: while a replacement starts, the producer runs at most kSlack
// messages past the next kill's mark, so kills come every kInterval messages
// however fast the farm is (else a fast farm streams 100 000 messages while
// one worker starts). While the victim is sought the gate is open: work
// flows and workers hold some.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "fault_util.hpp"

namespace palm::fault {
namespace {

constexpr std::uint64_t kMessages = 100000;
constexpr std::uint64_t kInterval = 500;
constexpr std::uint32_t kWindow = 256;  // the client's
constexpr std::uint64_t kSlack = kWindow + 64;

struct Param {
  std::string name;
  std::vector<std::string> transports;  // one per worker
};

class KillLoop : public ::testing::TestWithParam<Param> {};

TEST_P(KillLoop, ExactSetWhileWorkersAreKilled) {
  const Param& param = GetParam();
  InProcessFarm farm(FarmOptions{.tag = "kill"});
  ASSERT_TRUE(farm.up());
  for (const auto& t : param.transports) ASSERT_TRUE(farm.add_worker(t));
  servers::Client& client = farm.client(kWindow);

  // The producer waits at the gate (a mutex and a condition variable: it
  // may wait for a worker to start); the kill loop moves it.
  std::mutex mu;
  std::condition_variable cv;
  std::uint64_t gate = kInterval + kSlack;  // under mu
  std::atomic<std::uint64_t> received{0};  // relaxed: the kill loop polls it
  std::atomic<bool> job_done{false};       // release by the job thread, acquire by the loop
  SeqSet seqs(kMessages);
  Result<std::uint64_t> job_result = 0;

  const auto t0 = Clock::now();
  std::thread job([&] {
    std::uint64_t sent = 0;
    std::string text;
    job_result = client.job(
        "_.echo",
        [&](std::string& payload) {
          if (sent == kMessages) return false;
          std::unique_lock lock(mu);
          if (!cv.wait_for(lock, 30s, [&] { return sent < gate; })) return false;  // the loop failed
          lock.unlock();
          payload = payload_of(sent++);
          return true;
        },
        [&](std::string_view reply) {
          seqs.add(reply);
          received.fetch_add(1, std::memory_order_relaxed);
        },
        kMessages);
    job_done.store(true, std::memory_order_release);
    cv.notify_all();
  });

  std::uint64_t kills = 0, kills_shm = 0, kills_tcp = 0;
  std::size_t turn = 0;
  const auto set_gate = [&](std::uint64_t g) {
    {
      const std::lock_guard lock(mu);
      gate = std::min(g, kMessages);
    }
    cv.notify_all();
  };
  const auto deadline = Clock::now() + 150s;
  while (!job_done.load(std::memory_order_acquire) && Clock::now() < deadline) {
    // The producer waits at the gate only once `received` passed the next
    // kill's mark (gate - kSlack >= mark, got >= sent - kWindow): no deadlock.
    // No kill in the last interval: the job ends after the last one.
    const std::uint64_t mark = (kills + 1) * kInterval;
    if (mark + kInterval >= kMessages) break;
    if (received.load(std::memory_order_relaxed) < mark) {
      std::this_thread::sleep_for(1ms);
      continue;
    }
    // Open by one more interval while a holder is sought (work flows, so
    // some worker holds some), one more every 50 ms it is not found.
    std::optional<std::size_t> victim;
    for (std::uint64_t more = 1; !victim && more <= 40; ++more) {
      set_gate(mark + kSlack + more * kInterval);
      victim = farm.holder(turn, 50ms);
    }
    ++turn;
    if (!victim) {
      ADD_FAILURE() << "no worker held a message for 2 s after " << received.load() << " replies";
      break;
    }
    // Closed before the kill: the producer stays within kSlack of the next
    // mark while the replacement starts.
    set_gate(mark + kInterval + kSlack);
    const std::string transport = farm.kill_worker(*victim);
    ++kills;
    ++(transport == "shm" ? kills_shm : kills_tcp);
    if (!farm.add_worker(transport)) break;
  }
  {
    // Whatever happened, let the producer finish (or give up) and join it.
    const std::lock_guard lock(mu);
    gate = kMessages;
  }
  cv.notify_all();
  job.join();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();

  ASSERT_TRUE(job_result) << job_result.error().describe();
  EXPECT_EQ(*job_result, kMessages);
  const servers::DispatchStats ds = farm.master().dispatch_stats();
  EXPECT_EQ(seqs.bad(), 0u) << "replies that echo no message sent";
  EXPECT_EQ(seqs.twice(), 0u) << "a sequence number came back twice";
  EXPECT_EQ(seqs.lost(), 0u) << "never came back: " << seqs.lost_sample();
  EXPECT_EQ(seqs.received(), kMessages);
  EXPECT_EQ(kills, kMessages / kInterval - 2);
  EXPECT_GT(ds.redispatched, 0u);
  for (const auto& t : param.transports) {
    // Every transport of the variant lost workers (mixed: both).
    EXPECT_GT(t == "shm" ? kills_shm : kills_tcp, 0u) << t;
  }
  // A duplicate that came late would be dropped by the client as stale at
  // its next call: there is none.
  std::this_thread::sleep_for(100ms);
  auto last = client.eval("_.echo", payload_of(0));
  ASSERT_TRUE(last) << last.error().describe();
  EXPECT_EQ(*last, payload_of(0));
  EXPECT_EQ(client.stats().stale, 0u) << "a reply came after the job ended";

  std::printf(
      "kill loop %s: %llu messages sent, %llu results received, %llu kills (%llu shm, %llu tcp), lost %llu, "
      "delivered twice %llu, re-dispatched %llu, duplicates dropped by the master %llu, %.1f s\n",
      param.name.c_str(), static_cast<unsigned long long>(kMessages),
      static_cast<unsigned long long>(seqs.received()), static_cast<unsigned long long>(kills),
      static_cast<unsigned long long>(kills_shm), static_cast<unsigned long long>(kills_tcp),
      static_cast<unsigned long long>(seqs.lost()), static_cast<unsigned long long>(seqs.twice()),
      static_cast<unsigned long long>(ds.redispatched), static_cast<unsigned long long>(ds.duplicates), secs);
  std::fflush(stdout);

  farm.stop_workers();
  farm.drop_client();
  farm.expect_pools_full();
}

INSTANTIATE_TEST_SUITE_P(Transports, KillLoop,
                         ::testing::Values(Param{"shm", {"shm", "shm", "shm", "shm"}},
                                           Param{"tcp", {"tcp", "tcp", "tcp", "tcp"}},
                                           Param{"mixed", {"shm", "tcp", "shm", "tcp"}}),
                         [](const auto& p) { return p.param.name; });

}  // namespace
}  // namespace palm::fault
