// A short-lived pusher process: it attaches, pushes and exits (_exit) before
// the host's monitor has registered it, after closing its endpoint or
// without. What it published is complete (each item's tail store was a
// release, channel.hpp) and reaches the bound pull; the pool gets every
// block back (the dead one's slot reclaimed). The monitor is held still
// (monitor_gate.hpp) from before the pusher attaches until it exited, so
// the host first sees its entry Leaving (closed) or Attached by a dead pid.
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "monitor_gate.hpp"
#include "palm/transport/shm/host.hpp"
#include "peer.hpp"
#include "shm_test_util.hpp"

namespace palm::shm {
namespace {

using namespace std::chrono_literals;
using palm::test::Child;
using palm::test::ShmGuard;
using palm::test::spawn_peer;
using palm::test::unique_name;
using test::GateOpener;
using test::monitor_gate;
using test::numbered;
using test::read_numbered;
using test::small_host;
using test::to;
using transport::Delivery;
using transport::Pattern;
using transport::SendResult;

// args: segment, count, "close" | "exit". Pushes ids [0, count) to
// "results", then closes its endpoint (or not) and _exits: no destructor,
// no atexit handler runs after the last push (or the close).
PALM_TEST_PEER(short_pusher) {
  auto push = connect(args.at(0), Pattern::kPush, to("results"));
  if (!push) {
    std::fprintf(stderr, "short_pusher: %s\n", push.error().describe().c_str());
    ::_exit(2);
  }
  const std::uint64_t count = std::stoull(args.at(1));
  for (std::uint64_t i = 0; i < count; ++i) {
    auto f = numbered(**push, i);
    if (!f || (*push)->send_for(*f, 5s, {}) != SendResult::kQueued) ::_exit(3);
  }
  if (args.at(2) == "close") push->reset();
  std::fflush(nullptr);
  ::_exit(0);
}

class ShortPusher : public ::testing::TestWithParam<const char*> {};

TEST_P(ShortPusher, WhatItPublishedBeforeExitingUnregisteredIsDelivered) {
  const std::string mode = GetParam();
  constexpr std::uint64_t kCount = 200;  // < the channel's capacity: never full
  ShmGuard g(unique_name("short-" + mode));
  auto gate = monitor_gate();
  auto host = Host::create(g.name(), small_host(256));
  ASSERT_TRUE(host) << host.error().describe();
  auto results = host->bind(Pattern::kPull, "results");
  auto stall = host->bind(Pattern::kPull, "stall");
  ASSERT_TRUE(results && stall);
  // Hold the monitor in the registration of another peer (this process's).
  gate->arm("attached to shm://" + g.name() + "/stall");
  auto staller = connect(g.name(), Pattern::kPush, to("stall"));
  // Last: opened first when the test ends (the endpoints' close and the
  // host's shutdown wait for the monitor).
  GateOpener opener{gate};
  ASSERT_TRUE(staller) << staller.error().describe();
  ASSERT_TRUE(gate->wait_held(20s)) << "the monitor did not register the first peer";
  Child pusher = spawn_peer("short_pusher", {g.name(), std::to_string(kCount), mode});
  ASSERT_EQ(pusher.exit_code_within(20s), 0) << "the pusher pushed all and exited";
  gate->open();
  std::vector<Delivery> got;
  std::multiset<std::uint64_t> ids;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (got.size() < kCount && std::chrono::steady_clock::now() < deadline) {
    Delivery d;
    if ((*results)->recv_for(d, 500ms) != WaitResult::kReady) continue;
    auto n = read_numbered(d.frame);
    ASSERT_TRUE(n) << "a numbered message";
    ids.insert(n->id);
    got.push_back(std::move(d));
  }
  ASSERT_EQ(got.size(), kCount) << "what the pusher published before it exited is delivered";
  for (std::uint64_t i = 0; i < kCount; ++i) EXPECT_EQ(ids.count(i), 1u) << i;
  got.clear();  // frames go before the endpoint they came from (host.hpp)
  staller->reset();
  EXPECT_TRUE(host->wait_peer_count(0, 20s)) << "both entries discarded";
  Delivery extra;
  EXPECT_FALSE((*results)->try_recv(extra)) << "each message once";
  EXPECT_EQ((*results)->stats().messages_in, kCount);
  // An entry left Attached is discarded as dead, found by the liveness
  // check; a Leaving one as dead too if that check ran in the same scan
  // (its process is gone by then), else as departed.
  if (mode == "exit") {
    EXPECT_EQ(host->dead_peers(), 1u);
  } else {
    EXPECT_LE(host->dead_peers(), 1u);
  }
  host->shutdown();
  EXPECT_TRUE(host->pool().stats().all_free()) << "every block back in the pool, the dead pusher's slot too";
}

INSTANTIATE_TEST_SUITE_P(CloseOrNot, ShortPusher, ::testing::Values("close", "exit"));

}  // namespace
}  // namespace palm::shm
