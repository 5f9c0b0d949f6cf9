// Context::open on shm:// addresses: a bind creates the context's segment
// (one per name, several services on it), a connect attaches to it, the
// patterns shm does not carry are refused by name, and shutdown removes the
// segment. Threads only (both sides in this process): runs under TSan too.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "palm/transport/context.hpp"
#include "palm/transport/shm/host.hpp"
#include "peer.hpp"
#include "zmq_test_util.hpp"

namespace palm::transport::test {
namespace {

ContextOptions small_options() {
  ContextOptions o;
  o.pool.set_blocks(256, 2048).set_blocks(512, 2048);
  o.transport.queue_capacity = 256;
  o.transport.command_timeout = 2s;
  return o;
}

class ContextShm : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = Context::create(small_options());
    ASSERT_TRUE(c) << c.error().describe();
    ctx_.emplace(std::move(*c));
  }
  Context& ctx() { return *ctx_; }
  std::string addr(const std::string& service) { return "shm://" + segment_.name() + "/" + service; }

  palm::test::ShmGuard segment_{palm::test::unique_name("ctx")};
  std::optional<Context> ctx_;
};

TEST_F(ContextShm, BindAndConnectCarryMessagesThroughTheSegment) {
  auto pull = ctx().open(EndpointSpec::bind_to(Pattern::kPull, addr("in")));
  ASSERT_TRUE(pull) << pull.error().describe();
  auto push = ctx().open(EndpointSpec::connect_to(Pattern::kPush, addr("in")));
  ASSERT_TRUE(push) << push.error().describe();
  EXPECT_EQ((*pull)->scheme(), Scheme::kShm);
  EXPECT_EQ((*push)->scheme(), Scheme::kShm);
  constexpr std::uint64_t kMessages = 100;
  for (std::uint64_t i = 0; i < kMessages; ++i) {
    Frame f = make_msg(ctx(), "test", "work", i);  // the context's pool: copied once
    ASSERT_EQ((*push)->send_for(f, 5s), SendResult::kQueued) << i;
    Delivery d;
    ASSERT_EQ((*pull)->recv_for(d, 5s), WaitResult::kReady) << i;
    auto m = read_msg(d);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->seq, i);
  }
  auto* bound = dynamic_cast<shm::ShmEndpoint*>(pull->get());
  ASSERT_NE(bound, nullptr);
  const auto peers = bound->peer_status();
  ASSERT_EQ(peers.size(), 1u);
  EXPECT_STREQ(peers[0].transport, "shm");
  EXPECT_EQ(peers[0].messages_in, kMessages);
  EXPECT_EQ((*pull)->stats().messages_in, kMessages);
}

TEST_F(ContextShm, ServicesOfOneSegmentShareItsHost) {
  auto a = ctx().open(EndpointSpec::bind_to(Pattern::kPush, addr("a")));
  auto b = ctx().open(EndpointSpec::bind_to(Pattern::kPub, addr("b")));
  ASSERT_TRUE(a && b);
  EXPECT_EQ(dynamic_cast<shm::ShmEndpoint&>(**a).nonce(), dynamic_cast<shm::ShmEndpoint&>(**b).nonce());
  auto again = ctx().open(EndpointSpec::bind_to(Pattern::kPull, addr("a")));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::kAlreadyExists);
}

TEST_F(ContextShm, AServiceCanShareAnotherServicesDoorbell) {
  auto in = ctx().open(EndpointSpec::bind_to(Pattern::kPull, addr("in")));
  ASSERT_TRUE(in) << in.error().describe();
  auto spec = EndpointSpec::bind_to(Pattern::kPull, addr("results"));
  spec.shm_share_bell_with = "in";
  auto results = ctx().open(spec);
  ASSERT_TRUE(results) << results.error().describe();
  auto alone = ctx().open(EndpointSpec::bind_to(Pattern::kPull, addr("alone")));
  ASSERT_TRUE(alone);
  auto& in_ep = dynamic_cast<shm::ShmEndpoint&>(**in);
  auto& results_ep = dynamic_cast<shm::ShmEndpoint&>(**results);
  auto& alone_ep = dynamic_cast<shm::ShmEndpoint&>(**alone);
  EXPECT_EQ(&in_ep.doorbell(), &results_ep.doorbell());
  EXPECT_NE(&in_ep.doorbell(), &alone_ep.doorbell());

  // One thread asleep on the shared doorbell wakes for a peer of either
  // service: the peer of "results" rings what it read from the segment.
  auto push = ctx().open(EndpointSpec::connect_to(Pattern::kPush, addr("results")));
  ASSERT_TRUE(push) << push.error().describe();
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    Delivery d;
    const auto r = in_ep.doorbell().wait_for([&] { return (*results)->try_recv(d); }, 5s);
    got.store(r == WaitResult::kReady);
  });
  std::this_thread::sleep_for(50ms);  // let it sleep; a ring before is fine too
  Frame f = make_msg(ctx(), "test", "work", 7);
  ASSERT_EQ((*push)->send_for(f, 5s), SendResult::kQueued);
  waiter.join();
  EXPECT_TRUE(got.load());

  auto unknown = EndpointSpec::bind_to(Pattern::kPull, addr("other"));
  unknown.shm_share_bell_with = "nobody";
  auto refused = ctx().open(unknown);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::kNotFound);
  EXPECT_NE(refused.error().message.find("nobody"), std::string::npos) << refused.error().message;
}

TEST_F(ContextShm, PatternsShmDoesNotCarryAreRefusedByName) {
  const auto refused = [&](EndpointSpec spec, const char* says) {
    auto ep = ctx().open(spec);
    ASSERT_FALSE(ep) << to_string(spec.pattern) << (spec.bind ? " bound" : " connected");
    EXPECT_EQ(ep.error().code, Errc::kInvalidArgument);
    EXPECT_NE(ep.error().message.find(says), std::string::npos) << ep.error().message;
  };
  refused(EndpointSpec::bind_to(Pattern::kRep, addr("db")), "stay on tcp://");
  refused(EndpointSpec::connect_to(Pattern::kReq, addr("db")), "stay on tcp://");
  refused(EndpointSpec::bind_to(Pattern::kSub, addr("s")), "cannot bind a sub");
  refused(EndpointSpec::bind_to(Pattern::kWorker, addr("w")), "cannot bind a worker");
  refused(EndpointSpec::connect_to(Pattern::kPub, addr("p")), "cannot connect a pub");
  refused(EndpointSpec::connect_to(Pattern::kDispatcher, addr("d")), "cannot connect a dispatcher");

  // Raw bodies (the cache's replies) do not cross shm.
  auto push = ctx().open(EndpointSpec::bind_to(Pattern::kPush, addr("out")));
  ASSERT_TRUE(push);
  auto raw = ctx().raw("bytes");
  ASSERT_TRUE(raw);
  Envelope to;
  to.body = Body::kRaw;
  EXPECT_EQ((*push)->try_send(*raw, to), SendResult::kInvalid);
  EXPECT_TRUE(*raw);  // still the caller's
}

TEST_F(ContextShm, ConnectToAMissingSegmentIsNotFound) {
  auto ep = ctx().open(EndpointSpec::connect_to(Pattern::kPush, addr("in")));
  ASSERT_FALSE(ep);
  EXPECT_EQ(ep.error().code, Errc::kNotFound) << ep.error().describe();
}

// A thread waiting on a bound service spins only while a peer could hand it
// something; a peer spins (its host hands messages over directly).
TEST_F(ContextShm, AServiceSpinsOnlyWhileItHasPeers) {
  auto pull = ctx().open(EndpointSpec::bind_to(Pattern::kPull, addr("in")));
  ASSERT_TRUE(pull) << pull.error().describe();
  EXPECT_EQ((*pull)->wait_spin(), 0ns);
  const auto spin_becomes = [&](std::chrono::nanoseconds want) {
    for (int i = 0; i < 500 && (*pull)->wait_spin() != want; ++i) std::this_thread::sleep_for(10ms);
    return (*pull)->wait_spin() == want;
  };
  {
    auto push = ctx().open(EndpointSpec::connect_to(Pattern::kPush, addr("in")));
    ASSERT_TRUE(push) << push.error().describe();
    EXPECT_EQ((*push)->wait_spin(), Doorbell::default_spin());
    EXPECT_TRUE(spin_becomes(Doorbell::default_spin()));
  }
  EXPECT_TRUE(spin_becomes(0ns)) << "the peer left";
}

// A batch receive takes what try_recv would, in the same order, at most
// as many as asked.
TEST_F(ContextShm, ABatchReceiveTakesWhatTryRecvWouldInOrder) {
  auto pull = ctx().open(EndpointSpec::bind_to(Pattern::kPull, addr("in")));
  ASSERT_TRUE(pull) << pull.error().describe();
  auto* bound = dynamic_cast<shm::ShmEndpoint*>(pull->get());
  ASSERT_NE(bound, nullptr);
  std::vector<std::unique_ptr<Endpoint>> pushes;
  for (const char* client : {"a", "b"}) {
    auto push = ctx().open(EndpointSpec::connect_to(Pattern::kPush, addr("in")));
    ASSERT_TRUE(push) << push.error().describe();
    for (std::uint64_t i = 0; i < 10; ++i) {
      Frame f = make_msg(ctx(), client, "work", i);
      ASSERT_EQ((*push)->send_for(f, 5s), SendResult::kQueued);
    }
    pushes.push_back(std::move(*push));
  }
  std::vector<Delivery> batch(8);
  std::map<std::string, std::vector<std::uint64_t>> seen;
  std::size_t total = 0;
  for (int round = 0; round < 500 && total < 20; ++round) {
    const std::size_t n = bound->try_recv_batch(batch.data(), batch.size());
    ASSERT_LE(n, batch.size());
    for (std::size_t i = 0; i < n; ++i) {
      auto m = read_msg(batch[i]);
      ASSERT_TRUE(m);
      seen[m->client].push_back(m->seq);
    }
    total += n;
    if (n == 0) std::this_thread::sleep_for(10ms);  // the host's monitor registers the second peer
  }
  EXPECT_EQ(total, 20u);
  const std::vector<std::uint64_t> in_order = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(seen["a"], in_order);
  EXPECT_EQ(seen["b"], in_order);
  EXPECT_EQ(bound->try_recv_batch(batch.data(), batch.size()), 0u);
}

// The connected side's batch: one lock, the host's order, at most as many
// as asked.
TEST_F(ContextShm, AConnectedPullTakesABatchInTheHostsOrder) {
  auto push = ctx().open(EndpointSpec::bind_to(Pattern::kPush, addr("out")));
  ASSERT_TRUE(push) << push.error().describe();
  auto pull = ctx().open(EndpointSpec::connect_to(Pattern::kPull, addr("out")));
  ASSERT_TRUE(pull) << pull.error().describe();
  ASSERT_EQ((*pull)->scheme(), Scheme::kShm);
  for (std::uint64_t i = 0; i < 10; ++i) {
    Frame f = make_msg(ctx(), "host", "work", i);
    ASSERT_EQ((*push)->send_for(f, 5s), SendResult::kQueued) << i;  // waits for the peer to register
  }
  std::vector<Delivery> batch(4);
  std::vector<std::uint64_t> seen;
  for (int round = 0; round < 500 && seen.size() < 10; ++round) {
    const std::size_t n = (*pull)->try_recv_batch(batch.data(), batch.size());
    ASSERT_LE(n, batch.size());
    for (std::size_t i = 0; i < n; ++i) {
      auto m = read_msg(batch[i]);
      ASSERT_TRUE(m);
      seen.push_back(m->seq);
    }
    if (n == 0) std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ((*pull)->try_recv_batch(batch.data(), batch.size()), 0u);
}

TEST_F(ContextShm, ShutdownRemovesTheSegmentAndRefusesOpens) {
  auto pull = ctx().open(EndpointSpec::bind_to(Pattern::kPull, addr("in")));
  ASSERT_TRUE(pull);
  ctx().shutdown();
  Delivery d;
  EXPECT_EQ((*pull)->recv_for(d, 1s), WaitResult::kShutdown);
  // The name is gone: nobody can attach to the dead incarnation.
  shm::ConnectOptions o;
  o.service = "in";
  o.timeout = 1s;
  auto late = shm::connect(segment_.name(), Pattern::kPush, o);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, Errc::kNotFound) << late.error().describe();
  auto bind = ctx().open(EndpointSpec::bind_to(Pattern::kPull, addr("other")));
  ASSERT_FALSE(bind);
  EXPECT_EQ(bind.error().code, Errc::kClosed);
  auto connect = ctx().open(EndpointSpec::connect_to(Pattern::kPush, addr("in")));
  ASSERT_FALSE(connect);
  EXPECT_EQ(connect.error().code, Errc::kClosed);
}

}  // namespace
}  // namespace palm::transport::test
