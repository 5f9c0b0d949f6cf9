// A pusher that attaches, pushes and leaves before the host's monitor has
// registered it: what it published is complete (each item's tail store was
// a release, channel.hpp) and reaches the bound pull; the pool gets every
// block back. The monitor is held still (monitor_gate.hpp) from before the
// pusher attaches until after it left, so the host first sees its entry
// Leaving. Threads only (the pusher is in this process): runs under TSan
// too; shm_departed_peer_proc_test.cpp has pushers that are processes.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <set>
#include <vector>

#include "monitor_gate.hpp"
#include "palm/transport/shm/host.hpp"
#include "peer.hpp"
#include "shm_test_util.hpp"

namespace palm::shm {
namespace {

using namespace std::chrono_literals;
using palm::test::ShmGuard;
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

TEST(ShmDepartedPeer, WhatAPusherPublishedBeforeItLeftUnregisteredIsDelivered) {
  constexpr std::uint64_t kCount = 200;  // < the channel's capacity: never full
  ShmGuard g(unique_name("departed"));
  auto gate = monitor_gate();
  auto host = Host::create(g.name(), small_host(256));
  ASSERT_TRUE(host) << host.error().describe();
  auto results = host->bind(Pattern::kPull, "results");
  auto stall = host->bind(Pattern::kPull, "stall");
  ASSERT_TRUE(results && stall);
  // Hold the monitor in the registration of another peer.
  gate->arm("attached to shm://" + g.name() + "/stall");
  auto staller = connect(g.name(), Pattern::kPush, to("stall"));
  // Last: opened first when the test ends (the endpoints' close and the
  // host's shutdown wait for the monitor).
  GateOpener opener{gate};
  ASSERT_TRUE(staller) << staller.error().describe();
  ASSERT_TRUE(gate->wait_held(20s)) << "the monitor did not register the first peer";
  {
    auto push = connect(g.name(), Pattern::kPush, to("results"));
    ASSERT_TRUE(push) << push.error().describe();
    for (std::uint64_t i = 0; i < kCount; ++i) {
      auto f = numbered(**push, i);
      ASSERT_TRUE(f);
      ASSERT_EQ((*push)->send_for(*f, 5s, {}), SendResult::kQueued) << i;
    }
  }  // closed: its entry is Leaving, never seen Attached by the monitor
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
  ASSERT_EQ(got.size(), kCount) << "what the pusher published before it left is delivered";
  for (std::uint64_t i = 0; i < kCount; ++i) EXPECT_EQ(ids.count(i), 1u) << i;
  Delivery extra;
  EXPECT_FALSE((*results)->try_recv(extra)) << "each message once";
  EXPECT_EQ((*results)->stats().messages_in, kCount);
  got.clear();  // frames go before the endpoint they came from (host.hpp)
  staller->reset();
  EXPECT_TRUE(host->wait_peer_count(0, 20s)) << "both entries discarded";
  EXPECT_EQ(host->dead_peers(), 0u);
  host->shutdown();
  EXPECT_TRUE(host->pool().stats().all_free()) << "every block back in the pool";
}

}  // namespace
}  // namespace palm::shm
