// Endpoint::interrupt on every kind of endpoint (threads only: run under
// TSan too): it ends the wait in progress, or the next one, with kTimeout;
// one interrupt ends one wait; the endpoint works on after it; a send cut
// short leaves the frame with the caller.

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "palm/transport/context.hpp"
#include "palm/transport/endpoint.hpp"
#include "palm/transport/shm/host.hpp"
#include "peer.hpp"
#include "shm_test_util.hpp"
#include "thread_signals.hpp"
#include "zmq_test_util.hpp"

namespace palm::transport {
namespace {

using namespace std::chrono_literals;
using palm::test::ShmGuard;
using palm::test::unique_name;

// A wait long enough that only an interrupt (or a message) ends it within
// the test's bound.
constexpr auto kLong = std::chrono::seconds(60);
constexpr auto kBound = std::chrono::seconds(10);

// The receiver's wait, in progress on another thread, is ended by one
// interrupt; the next wait is not; a message still comes through after it.
void expect_recv_interrupted(Endpoint& receiver, const std::function<void()>& send_one) {
  auto waiting = std::async(std::launch::async, [&] {
    Delivery d;
    return receiver.recv_for(d, kLong);
  });
  // Give it time to be asleep (not needed for correctness: an interrupt
  // raised before the wait begins ends it too).
  std::this_thread::sleep_for(20ms);
  receiver.interrupt();
  ASSERT_EQ(waiting.wait_for(kBound), std::future_status::ready) << "recv_for not woken by interrupt()";
  EXPECT_EQ(waiting.get(), WaitResult::kTimeout);

  // One interrupt ends one wait: this one times out on its own.
  Delivery d;
  EXPECT_EQ(receiver.recv_for(d, 30ms), WaitResult::kTimeout);

  // Raised before the wait: pending, it ends the next wait at once.
  receiver.interrupt();
  EXPECT_EQ(receiver.recv_for(d, kLong), WaitResult::kTimeout);

  send_one();
  Delivery got;
  ASSERT_EQ(receiver.recv_for(got, kBound), WaitResult::kReady);
  EXPECT_TRUE(got.frame);
}

// A segment with a bound kPull "in" and one peer pushing to it.
struct ShmPushPull {
  explicit ShmPushPull(const std::string& name, std::uint32_t capacity) : guard(unique_name(name)) {
    auto h = shm::Host::create(guard.name(), shm::test::small_host(capacity));
    EXPECT_TRUE(h) << h.error().describe();
    if (!h) return;
    host.emplace(std::move(*h));
    auto p = host->bind(Pattern::kPull, "in");
    EXPECT_TRUE(p) << p.error().describe();
    if (p) pull = std::move(*p);
    shm::ConnectOptions co;
    co.service = "in";
    co.nonce = host->nonce();
    auto q = shm::connect(guard.name(), Pattern::kPush, co);
    EXPECT_TRUE(q) << q.error().describe();
    if (q) push = std::move(*q);
  }
  bool ok() const { return pull && push; }

  ShmGuard guard;
  std::optional<shm::Host> host;
  std::unique_ptr<shm::ShmEndpoint> pull;
  std::unique_ptr<shm::ShmEndpoint> push;
};

TEST(Interrupt, ShmHostAndPeerReceivesEndAtOnce) {
  ShmPushPull s("intr", 64);
  ASSERT_TRUE(s.ok());
  // The host receives (kPull bound), the peer pushes.
  expect_recv_interrupted(*s.pull, [&] {
    auto f = shm::test::numbered(*s.push, 1);
    ASSERT_TRUE(f);
    ASSERT_EQ(s.push->send_for(*f, kBound, {}), SendResult::kQueued);
  });

  // The peer receives (kPush bound, kPull connected).
  auto out = s.host->bind(Pattern::kPush, "out");
  ASSERT_TRUE(out) << out.error().describe();
  shm::ConnectOptions co;
  co.service = "out";
  co.nonce = s.host->nonce();
  auto peer_pull = shm::connect(s.guard.name(), Pattern::kPull, co);
  ASSERT_TRUE(peer_pull) << peer_pull.error().describe();
  ASSERT_TRUE(s.host->wait_peer_count(2, 5s));
  expect_recv_interrupted(**peer_pull, [&] {
    auto f = shm::test::numbered(**out, 2);
    ASSERT_TRUE(f);
    ASSERT_EQ((*out)->send_for(*f, kBound, {}), SendResult::kQueued);
  });
}

TEST(Interrupt, ShmPeerSendOnAFullChannelEndsAndKeepsTheFrame) {
  ShmPushPull s("intrs", 4);
  ASSERT_TRUE(s.ok());
  auto& push = s.push;
  auto& pull = s.pull;
  // Fill the channel: nobody receives.
  std::uint64_t queued = 0;
  for (;; ++queued) {
    auto f = shm::test::numbered(*push, queued);
    ASSERT_TRUE(f);
    if (push->try_send(*f, {}) != SendResult::kQueued) break;
    ASSERT_LT(queued, 1000u) << "the channel never filled";
  }
  auto f = shm::test::numbered(*push, 999);
  ASSERT_TRUE(f);
  auto sending = std::async(std::launch::async, [&] { return push->send_for(*f, kLong, {}); });
  std::this_thread::sleep_for(20ms);
  push->interrupt();
  ASSERT_EQ(sending.wait_for(kBound), std::future_status::ready) << "send_for not woken by interrupt()";
  EXPECT_EQ(sending.get(), SendResult::kTimeout);
  ASSERT_TRUE(*f) << "a send cut short leaves the frame with the caller";
  auto n = shm::test::read_numbered(*f);
  ASSERT_TRUE(n);
  EXPECT_EQ(n->id, 999u);
  // Everything queued before is there, in order, and the frame goes after.
  for (std::uint64_t i = 0; i < queued; ++i) {
    Delivery d;
    ASSERT_EQ(pull->recv_for(d, kBound), WaitResult::kReady);
    auto got = shm::test::read_numbered(d.frame);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->id, i);
  }
  EXPECT_EQ(push->send_for(*f, kBound, {}), SendResult::kQueued);
}

TEST(Interrupt, ZmqInprocReceiveEndsAtOnce) {
  auto ctx = Context::create();
  ASSERT_TRUE(ctx) << ctx.error().describe();
  const std::string addr = "inproc://" + unique_name("intr");
  auto pull = ctx->open(EndpointSpec::bind_to(Pattern::kPull, addr));
  ASSERT_TRUE(pull) << pull.error().describe();
  auto push = ctx->open(EndpointSpec::connect_to(Pattern::kPush, addr));
  ASSERT_TRUE(push) << push.error().describe();
  expect_recv_interrupted(**pull, [&] {
    Frame f = test::make_msg(*ctx, "c", "f", 7);
    ASSERT_EQ((*push)->send_for(f, kBound, {}), SendResult::kQueued);
  });
}

TEST(Interrupt, ZmqSendOnAFullQueueEndsAndKeepsTheFrame) {
  ContextOptions o;
  o.transport.queue_capacity = 4;
  o.transport.hwm = 1;
  auto ctx = Context::create(o);
  ASSERT_TRUE(ctx) << ctx.error().describe();
  // A push connected to nobody: ZeroMQ queues nothing without a peer, so
  // the send queue fills.
  auto push = ctx->open(EndpointSpec::connect_to(Pattern::kPush, "inproc://" + unique_name("nobody")));
  ASSERT_TRUE(push) << push.error().describe();
  // Full once the bridge, which moves what ZeroMQ takes (its high-water
  // mark), has had 100 ms to make room and made none.
  int refused = 0;
  for (std::uint64_t i = 0; refused < 20; ++i) {
    ASSERT_LT(i, 10000u) << "the send queue never filled";
    Frame f = test::make_msg(*ctx, "c", "f", i);
    if ((*push)->try_send(f, {}) == SendResult::kQueued) {
      refused = 0;
    } else {
      ++refused;
      std::this_thread::sleep_for(5ms);
    }
  }
  Frame f = test::make_msg(*ctx, "c", "f", 4242);
  auto sending = std::async(std::launch::async, [&] { return (*push)->send_for(f, kLong, {}); });
  std::this_thread::sleep_for(20ms);
  (*push)->interrupt();
  ASSERT_EQ(sending.wait_for(kBound), std::future_status::ready) << "send_for not woken by interrupt()";
  EXPECT_EQ(sending.get(), SendResult::kTimeout);
  ASSERT_TRUE(f) << "a send cut short leaves the frame with the caller";
  auto v = f.view();
  ASSERT_TRUE(v);
  EXPECT_EQ(v->message.function, "f");
}

TEST(QuietThreads, BridgeAndShmHostThreadsBlockStopSignals) {
  // (Here beside the endpoints that start them.) A process waiting for
  // SIGTERM by sigwait or signalfd must not have it delivered to them.
  ShmPushPull s("quiet", 8);
  ASSERT_TRUE(s.ok());
  auto ctx = Context::create();
  ASSERT_TRUE(ctx) << ctx.error().describe();
  // The bridge starts with the first ZeroMQ endpoint.
  auto pull = ctx->open(EndpointSpec::bind_to(Pattern::kPull, "inproc://" + unique_name("quiet")));
  ASSERT_TRUE(pull) << pull.error().describe();
  for (const char* name : {"palm-bridge", "palm-shm-host"}) {
    const auto masks = palm::test::blocked_signals_of(name);
    ASSERT_FALSE(masks.empty()) << "no thread named " << name;
    for (const std::uint64_t m : masks) EXPECT_TRUE(palm::test::blocks_stop_signals(m)) << name << std::hex << m;
  }
}

}  // namespace
}  // namespace palm::transport
