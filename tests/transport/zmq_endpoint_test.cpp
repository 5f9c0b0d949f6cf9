// The endpoint interface over inproc, one behaviour per test: addresses and
// open errors, wrong-pattern calls, counters, backpressure and stalls in both
// directions, zero-copy frames, doorbells, credits, close and shutdown.
// Threads only: runs under TSan too.
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "palm/transport/address.hpp"
#include "palm/transport/context.hpp"
#include "zmq_test_util.hpp"

namespace palm::transport::test {
namespace {

using Clock = std::chrono::steady_clock;

TEST(Address, SchemePicksTheTransport) {
  auto tcp = Address::parse("tcp://127.0.0.1:5555");
  ASSERT_TRUE(tcp);
  EXPECT_EQ(tcp->scheme, Scheme::kTcp);
  EXPECT_EQ(tcp->rest, "127.0.0.1:5555");
  EXPECT_EQ(Address::parse("ipc:///tmp/x")->scheme, Scheme::kIpc);
  EXPECT_EQ(Address::parse("inproc://a")->scheme, Scheme::kInproc);
  EXPECT_EQ(Address::parse("shm://seg")->scheme, Scheme::kShm);
  EXPECT_EQ(Address::parse("auto://host:1")->scheme, Scheme::kAuto);
  EXPECT_TRUE(is_zmq(Scheme::kIpc));
  EXPECT_FALSE(is_zmq(Scheme::kShm));
}

TEST(Address, UnknownSchemeOrEmptyRestIsAnError) {
  auto udp = Address::parse("udp://x");
  ASSERT_FALSE(udp);
  EXPECT_EQ(udp.error().code, Errc::kInvalidArgument);
  EXPECT_NE(udp.error().message.find("tcp://"), std::string::npos);  // names what palm knows
  EXPECT_FALSE(Address::parse("tcp://"));
  EXPECT_FALSE(Address::parse("127.0.0.1:5555"));
}

class Endpoints : public ::testing::Test {
 protected:
  void SetUp() override { make({}); }
  void make(const ContextOptions& o) {
    ctx_.reset();
    auto c = Context::create(o);
    ASSERT_TRUE(c) << c.error().describe();
    ctx_.emplace(std::move(*c));
  }
  Context& ctx() { return *ctx_; }
  std::string name(const char* tag) { return "inproc://" + palm::test::unique_name(tag); }
  std::unique_ptr<Endpoint> open(const EndpointSpec& s) { return open_or_fail(ctx(), s); }
  // A bound PUSH and a PULL connected to it.
  std::pair<std::unique_ptr<Endpoint>, std::unique_ptr<Endpoint>> pipe(EndpointSpec pull_spec = {}) {
    auto push = open(EndpointSpec::bind_to(Pattern::kPush, name("push")));
    pull_spec.pattern = Pattern::kPull;
    pull_spec.address = push ? push->address() : "";
    pull_spec.bind = false;
    return {std::move(push), open(pull_spec)};
  }

  std::optional<Context> ctx_;
};

// (shm:// opens: context_shm_test.cpp; auto:// is open_auto's.)
TEST_F(Endpoints, OpenRefusesUnknownAndAutoSchemes) {
  auto udp = ctx().open(EndpointSpec::bind_to(Pattern::kPull, "udp://x"));
  ASSERT_FALSE(udp);
  EXPECT_EQ(udp.error().code, Errc::kInvalidArgument);
  auto automatic = ctx().open(EndpointSpec::connect_to(Pattern::kPull, "auto://x"));
  ASSERT_FALSE(automatic);
  EXPECT_EQ(automatic.error().code, Errc::kInvalidArgument);
}

TEST_F(Endpoints, BindingAnAddressTwiceIsAnError) {
  const std::string a = name("twice");
  auto first = open(EndpointSpec::bind_to(Pattern::kPull, a));
  ASSERT_TRUE(first);
  auto second = ctx().open(EndpointSpec::bind_to(Pattern::kPull, a));
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::kAlreadyExists);
  EXPECT_NE(second.error().message.find(a), std::string::npos);
}

TEST_F(Endpoints, TcpBindReportsThePortChosen) {
  auto pull = open(EndpointSpec::bind_to(Pattern::kPull, "tcp://127.0.0.1:*"));
  ASSERT_TRUE(pull);
  EXPECT_EQ(pull->address().rfind("tcp://127.0.0.1:", 0), 0u);
  EXPECT_EQ(pull->address().find('*'), std::string::npos);
  EXPECT_EQ(pull->scheme(), Scheme::kTcp);
}

// What a ZeroMQ endpoint waits for comes through sleeping threads: its
// waits do not spin unless the context says so.
TEST_F(Endpoints, WaitsSpinOnlyAsTheContextSays) {
  {
    auto [push, pull] = pipe();
    ASSERT_TRUE(push && pull);
    EXPECT_EQ(push->wait_spin(), 0ns);
    EXPECT_EQ(pull->wait_spin(), 0ns);
  }
  ContextOptions o;
  o.transport.wait_spin = 30us;
  make(o);
  auto [push2, pull2] = pipe();
  ASSERT_TRUE(push2 && pull2);
  EXPECT_EQ(pull2->wait_spin(), 30us);
  // Either way a wait still ends on its message.
  Frame f = make_msg(ctx(), "test", "work", 7);
  ASSERT_EQ(push2->send_for(f, 5s), SendResult::kQueued);
  Delivery d;
  ASSERT_EQ(pull2->recv_for(d, 5s), WaitResult::kReady);
  auto m = read_msg(d);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->seq, 7u);
}

// A master hands work to pylm workers only while one is connected: a bound
// push counts its connections as they come and go.
TEST_F(Endpoints, ABoundPushCountsItsConnections) {
  auto push = open(EndpointSpec::bind_to(Pattern::kPush, "tcp://127.0.0.1:*"));
  ASSERT_TRUE(push);
  EXPECT_EQ(push->stats().connections, 0u);
  const auto settles_at = [&](std::size_t n) {
    for (int i = 0; i < 500 && push->stats().connections != n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return push->stats().connections == n;
  };
  auto a = open(EndpointSpec::connect_to(Pattern::kPull, push->address()));
  auto b = open(EndpointSpec::connect_to(Pattern::kPull, push->address()));
  ASSERT_TRUE(a && b);
  EXPECT_TRUE(settles_at(2)) << push->stats().connections;
  a->close();
  EXPECT_TRUE(settles_at(1)) << push->stats().connections;
  b->close();
  EXPECT_TRUE(settles_at(0)) << push->stats().connections;
}

TEST_F(Endpoints, CallsOfAnotherPatternAreRefused) {
  auto [push, pull] = pipe();
  ASSERT_TRUE(push && pull);
  Frame f = make_msg(ctx(), "t", "f", 1);
  EXPECT_EQ(pull->try_send(f), SendResult::kInvalid);
  EXPECT_EQ(push->try_send(f, {PeerId::kNone, Body::kRaw}), SendResult::kInvalid);
  EXPECT_TRUE(f);  // still ours
  Frame empty;
  EXPECT_EQ(push->try_send(empty), SendResult::kInvalid);
  EXPECT_FALSE(push->subscribe("x"));
  EXPECT_FALSE(push->grant(1));
  auto rep = open(EndpointSpec::bind_to(Pattern::kRep, name("rep")));
  ASSERT_TRUE(rep);
  EXPECT_EQ(rep->try_send(f), SendResult::kInvalid);  // a reply names its request
  EndpointSpec no_credit = EndpointSpec::connect_to(Pattern::kWorker, name("nowhere"));
  EXPECT_FALSE(ctx().open(no_credit));
}

TEST_F(Endpoints, CountersFollowTheTraffic) {
  auto [push, pull] = pipe();
  ASSERT_TRUE(push && pull);
  constexpr int kMessages = 50;
  std::uint64_t bytes = 0;
  for (int i = 0; i < kMessages; ++i) {
    Frame f = make_msg(ctx(), "t", "f", static_cast<std::uint64_t>(i));
    bytes += f.view()->wire.size();
    ASSERT_EQ(push->send_for(f, 10s), SendResult::kQueued);
    EXPECT_FALSE(f);  // moved into the endpoint
  }
  for (int i = 0; i < kMessages; ++i) {
    Delivery d;
    ASSERT_EQ(pull->recv_for(d, 10s), WaitResult::kReady);
    EXPECT_EQ(read_msg(d)->seq, static_cast<std::uint64_t>(i));  // one pipe: in order
  }
  const EndpointStats out = push->stats();
  const EndpointStats in = pull->stats();
  EXPECT_EQ(out.messages_out, static_cast<std::uint64_t>(kMessages));
  EXPECT_EQ(out.bytes_out, bytes);
  EXPECT_EQ(in.messages_in, static_cast<std::uint64_t>(kMessages));
  EXPECT_EQ(in.bytes_in, bytes);
  EXPECT_EQ(in.queue_in, 0u);
  EXPECT_EQ(in.malformed + in.errors + in.oversized, 0u);
}

// A consumer slower than its producer: the receive ring fills, the bridge
// stalls that socket (ZeroMQ's HWM holds the sender back) and resumes when
// the consumer pops; nothing is lost or reordered.
TEST_F(Endpoints, AFullReceiveQueueStallsAndResumes) {
  EndpointSpec small;
  small.queue_capacity = 4;
  small.hwm = 8;
  auto [push, pull] = pipe(small);
  ASSERT_TRUE(push && pull);
  constexpr std::uint64_t kMessages = 300;
  auto producer = std::async(std::launch::async, [&, p = push.get()] {
    for (std::uint64_t i = 0; i < kMessages; ++i) {
      Frame f = make_msg(ctx(), "t", "f", i);
      if (p->send_for(f, 10s) != SendResult::kQueued) return false;
    }
    return true;
  });
  for (std::uint64_t i = 0; i < kMessages; ++i) {
    Delivery d;
    ASSERT_EQ(pull->recv_for(d, 10s), WaitResult::kReady) << i;
    ASSERT_EQ(read_msg(d)->seq, i);
  }
  EXPECT_TRUE(producer.get());
}

// No peer: ZeroMQ refuses (EAGAIN), the send queue fills, try_send says
// kFull and send_for times out; a consumer that comes later gets it all.
TEST_F(Endpoints, SendsWaitForAPeerThenFlow) {
  EndpointSpec spec = EndpointSpec::bind_to(Pattern::kPush, name("lonely"));
  spec.queue_capacity = 16;
  auto push = open(spec);
  ASSERT_TRUE(push);
  std::uint64_t queued = 0;
  bool timed_out = false;
  for (int i = 0; i < 64 && !timed_out; ++i) {
    Frame f = make_msg(ctx(), "t", "f", queued);
    const SendResult r = push->send_for(f, 20ms);
    if (r == SendResult::kTimeout) {
      EXPECT_TRUE(f);  // still ours
      timed_out = true;
    } else {
      ASSERT_EQ(r, SendResult::kQueued);
      ++queued;
    }
  }
  EXPECT_TRUE(timed_out);
  EXPECT_GE(queued, 16u);
  EXPECT_LE(queued, 17u);  // the ring plus the one the bridge holds
  if (queued == 17) {
    Frame f = make_msg(ctx(), "t", "f", queued);
    EXPECT_EQ(push->try_send(f), SendResult::kFull);
  }
  auto pull = open(EndpointSpec::connect_to(Pattern::kPull, push->address()));
  ASSERT_TRUE(pull);
  for (std::uint64_t i = 0; i < queued; ++i) {
    Delivery d;
    ASSERT_EQ(pull->recv_for(d, 10s), WaitResult::kReady);
    EXPECT_EQ(read_msg(d)->seq, i);
  }
}

// Large bodies go to ZeroMQ without a copy (released from its I/O thread);
// they arrive whole.
TEST_F(Endpoints, LargeFramesArriveIntact) {
  auto [push, pull] = pipe();
  ASSERT_TRUE(push && pull);
  for (std::size_t extra : {std::size_t{100}, std::size_t{64} << 10, std::size_t{1} << 20}) {
    Frame f = make_msg(ctx(), "t", "big", extra, {}, extra);
    const std::vector<std::byte> wire(f.view()->wire.begin(), f.view()->wire.end());
    ASSERT_EQ(push->send_for(f, 10s), SendResult::kQueued);
    Delivery d;
    ASSERT_EQ(pull->recv_for(d, 10s), WaitResult::kReady);
    auto v = d.frame.view();
    ASSERT_TRUE(v);
    EXPECT_TRUE(std::equal(v->wire.begin(), v->wire.end(), wire.begin(), wire.end())) << extra;
  }
}

// One consumer thread sleeps on one doorbell for two endpoints.
TEST_F(Endpoints, OneDoorbellServesSeveralEndpoints) {
  Doorbell bell;  // outlives the endpoints
  auto [push1, pull1] = pipe();
  auto [push2, pull2] = pipe();
  ASSERT_TRUE(push1 && pull1 && push2 && pull2);
  pull1->set_doorbell(&bell);
  pull2->set_doorbell(&bell);
  Endpoint* const eps[] = {pull1.get(), pull2.get()};
  auto waiter = std::async(std::launch::async, [&] {
    std::set<std::size_t> from;
    for (int i = 0; i < 2; ++i) {
      Delivery d;
      std::size_t which = 0;
      if (wait_any(bell, eps, d, which, 10s) != WaitResult::kReady) return from;
      from.insert(which);
    }
    return from;
  });
  Frame a = make_msg(ctx(), "t", "a", 1);
  Frame b = make_msg(ctx(), "t", "b", 2);
  ASSERT_EQ(push2->send_for(b, 10s), SendResult::kQueued);
  ASSERT_EQ(push1->send_for(a, 10s), SendResult::kQueued);
  EXPECT_EQ(waiter.get(), (std::set<std::size_t>{0, 1}));
}

// Closing wakes a blocked receiver and refuses sends; after shutdown, opens
// fail with kClosed.
TEST_F(Endpoints, CloseWakesWaitersAndRefusesSends) {
  auto [push, pull] = pipe();
  ASSERT_TRUE(push && pull);
  auto blocked = std::async(std::launch::async, [p = pull.get()] {
    Delivery d;
    return p->recv_for(d, 30s);
  });
  pull->close();
  EXPECT_EQ(blocked.get(), WaitResult::kShutdown);
  push->close();
  Frame f = make_msg(ctx(), "t", "f", 1);
  EXPECT_EQ(push->try_send(f), SendResult::kClosed);
  ctx().shutdown();
  auto again = ctx().open(EndpointSpec::bind_to(Pattern::kPull, name("late")));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::kClosed);
}

// Shutdown releases every frame: queued, in flight in ZeroMQ (zero-copy),
// delivered but unread. Frames the application still holds stay valid.
TEST_F(Endpoints, ShutdownReleasesEveryFrame) {
  ContextOptions o;
  o.pool.set_blocks(std::size_t{128} << 10, 64);  // 64 KiB payloads, three at a time
  make(o);
  auto [push, pull] = pipe();
  auto lonely = open(EndpointSpec::bind_to(Pattern::kPush, name("lonely")));
  ASSERT_TRUE(push && pull && lonely);
  for (std::uint64_t i = 0; i < 20; ++i) {
    Frame small = make_msg(ctx(), "t", "f", i);
    Frame big = make_msg(ctx(), "t", "f", i, {}, std::size_t{64} << 10);
    ASSERT_EQ(push->send_for(small, 10s), SendResult::kQueued);
    ASSERT_EQ(push->send_for(big, 10s), SendResult::kQueued);
    Frame stuck = make_msg(ctx(), "t", "f", i, {}, std::size_t{64} << 10);
    ASSERT_EQ(lonely->send_for(stuck, 10s), SendResult::kQueued);
  }
  Delivery kept;
  ASSERT_EQ(pull->recv_for(kept, 10s), WaitResult::kReady);
  ctx().shutdown();
  ASSERT_TRUE(kept.frame.view());  // still valid
  EXPECT_EQ(read_msg(kept)->seq, 0u);
  kept.frame.reset();
  EXPECT_EQ(ctx().pool().stats().allocated_blocks, 0u);
  EXPECT_GT(lonely->stats().dropped, 0u);
}

// A slow subscriber is backpressure for an XPUB with NODROP: the publisher's
// queue fills instead of messages vanishing; once the subscriber reads, it
// gets every message that was accepted.
TEST_F(Endpoints, SlowSubscriberIsBackpressureNotLoss) {
  EndpointSpec pub_spec = EndpointSpec::bind_to(Pattern::kPub, name("pub"));
  pub_spec.queue_capacity = 16;
  pub_spec.hwm = 8;
  auto pub = open(pub_spec);
  ASSERT_TRUE(pub);
  EndpointSpec sub_s = sub_spec(pub->address(), {""});
  sub_s.queue_capacity = 16;
  sub_s.hwm = 8;
  auto sub = open(sub_s);
  ASSERT_TRUE(sub);
  ASSERT_EQ(pub->wait_subscriptions(1, 10s), WaitResult::kReady);
  std::uint64_t accepted = 0;
  for (int i = 0; i < 5000; ++i) {
    Frame f = make_msg(ctx(), "t", "news", accepted, "topic");
    if (pub->send_for(f, 20ms) != SendResult::kQueued) break;
    ++accepted;
  }
  EXPECT_LT(accepted, 5000u);  // it pushed back
  for (std::uint64_t i = 0; i < accepted; ++i) {
    Delivery d;
    ASSERT_EQ(sub->recv_for(d, 10s), WaitResult::kReady) << i << " of " << accepted;
    EXPECT_EQ(read_msg(d)->seq, i);
  }
}

TEST_F(Endpoints, SubscriptionsChangeAtRuntime) {
  auto pub = open(EndpointSpec::bind_to(Pattern::kPub, name("pub")));
  ASSERT_TRUE(pub);
  auto sub = open(sub_spec(pub->address(), {"a"}));
  ASSERT_TRUE(sub);
  ASSERT_EQ(pub->wait_subscriptions(1, 10s), WaitResult::kReady);
  ASSERT_TRUE(sub->subscribe("b"));
  ASSERT_EQ(pub->wait_subscriptions(2, 10s), WaitResult::kReady);
  ASSERT_TRUE(sub->unsubscribe("a"));
  // Unsubscribes reach the publisher in order with what follows them, on
  // the same pipe; "b" then marks the end.
  Frame a = make_msg(ctx(), "t", "x", 1, "a");
  Frame b = make_msg(ctx(), "t", "x", 2, "b");
  ASSERT_EQ(pub->send_for(a, 10s), SendResult::kQueued);
  ASSERT_EQ(pub->send_for(b, 10s), SendResult::kQueued);
  Delivery d;
  ASSERT_EQ(sub->recv_for(d, 10s), WaitResult::kReady);
  EXPECT_EQ(read_msg(d)->topic, "b");
}

TEST_F(Endpoints, WorkerGrantsMoreCredits) {
  auto dispatcher = open(EndpointSpec::bind_to(Pattern::kDispatcher, name("d")));
  ASSERT_TRUE(dispatcher);
  EndpointSpec spec = EndpointSpec::connect_to(Pattern::kWorker, dispatcher->address());
  spec.credits = 2;
  auto worker = open(spec);
  ASSERT_TRUE(worker);
  Delivery d;
  ASSERT_EQ(dispatcher->recv_for(d, 10s), WaitResult::kReady);
  ASSERT_EQ(d.event, Event::kPeerJoined);
  const PeerId w = d.peer;
  EXPECT_EQ(dispatcher->credits(w), 2u);
  ASSERT_TRUE(worker->grant(3));
  ASSERT_EQ(dispatcher->recv_for(d, 10s), WaitResult::kReady);
  EXPECT_EQ(d.event, Event::kCredit);
  EXPECT_EQ(d.credits, 3u);
  EXPECT_EQ(dispatcher->credits(w), 5u);
  // A result with credits = 0 (a MuxWorker's non-last result) returns none.
  Frame job = make_msg(ctx(), "t", "job", 7);
  ASSERT_EQ(dispatcher->try_send(job, {w}), SendResult::kQueued);
  EXPECT_EQ(dispatcher->credits(w), 4u);
  ASSERT_EQ(worker->recv_for(d, 10s), WaitResult::kReady);
  Frame partial = make_msg(ctx(), "w", "partial", 7);
  Envelope no_credit;
  no_credit.credits = 0;
  ASSERT_EQ(worker->send_for(partial, 10s, no_credit), SendResult::kQueued);
  Frame last = make_msg(ctx(), "w", "last", 7);
  ASSERT_EQ(worker->send_for(last, 10s), SendResult::kQueued);
  ASSERT_EQ(dispatcher->recv_for(d, 10s), WaitResult::kReady);
  EXPECT_EQ(read_msg(d)->function, "partial");
  ASSERT_EQ(dispatcher->recv_for(d, 10s), WaitResult::kReady);
  EXPECT_EQ(read_msg(d)->function, "last");
  EXPECT_EQ(dispatcher->credits(w), 5u);
  worker->close();  // says bye
  ASSERT_EQ(dispatcher->recv_for(d, 10s), WaitResult::kReady);
  EXPECT_EQ(d.event, Event::kPeerGone);
  EXPECT_EQ(d.peer, w);
  EXPECT_EQ(dispatcher->credits(w), 0u);
  EXPECT_TRUE(dispatcher->peers().empty());
}

// A dispatcher that restarts on the same address hears its workers again:
// a worker re-sends its hello on every reconnection.
TEST_F(Endpoints, AWorkerRejoinsADispatcherThatRestarted) {
  TempDir dir;
  const std::string address = "ipc://" + dir.path() + "/dispatch";
  auto first = open(EndpointSpec::bind_to(Pattern::kDispatcher, address));
  ASSERT_TRUE(first);
  EndpointSpec spec = EndpointSpec::connect_to(Pattern::kWorker, address);
  spec.credits = 3;
  auto worker = open(spec);
  ASSERT_TRUE(worker);
  Delivery d;
  ASSERT_EQ(first->recv_for(d, 10s), WaitResult::kReady);
  ASSERT_EQ(d.event, Event::kPeerJoined);
  first.reset();  // the master goes away...
  auto second = open(EndpointSpec::bind_to(Pattern::kDispatcher, address));  // ...and comes back
  ASSERT_TRUE(second);
  ASSERT_EQ(second->recv_for(d, 10s), WaitResult::kReady);
  EXPECT_EQ(d.event, Event::kPeerJoined);
  EXPECT_EQ(d.credits, 3u);
  Frame job = make_msg(ctx(), "t", "job", 1);
  ASSERT_EQ(second->try_send(job, {d.peer}), SendResult::kQueued);
  Delivery got;
  ASSERT_EQ(worker->recv_for(got, 10s), WaitResult::kReady);
  EXPECT_EQ(read_msg(got)->seq, 1u);
}

// ZeroMQ 4.3 leaves the socket file of an explicit ipc bind; palm removes it
// at close.
TEST_F(Endpoints, ABoundIpcEndpointRemovesItsSocketFile) {
  TempDir dir;
  const std::string path = dir.path() + "/pull";
  auto pull = open(EndpointSpec::bind_to(Pattern::kPull, "ipc://" + path));
  ASSERT_TRUE(pull);
  EXPECT_TRUE(std::filesystem::exists(path));
  pull->close();
  EXPECT_FALSE(std::filesystem::exists(path));
}

// A pool with few blocks: the bridge waits for the application to release
// some (retrying), instead of failing or dropping. The sender has its own
// context (and pool), over ipc.
TEST_F(Endpoints, AnExhaustedPoolStallsReceivesUntilFramesAreReleased) {
  ContextOptions tiny;
  tiny.pool.set_blocks(256, 8);
  make(tiny);
  auto sender_ctx = Context::create();
  ASSERT_TRUE(sender_ctx);
  TempDir dir;
  auto pull = open(EndpointSpec::bind_to(Pattern::kPull, "ipc://" + dir.path() + "/pull"));
  ASSERT_TRUE(pull);
  auto push = open_or_fail(*sender_ctx, EndpointSpec::connect_to(Pattern::kPush, pull->address()));
  ASSERT_TRUE(push);
  constexpr std::uint64_t kMessages = 12;
  for (std::uint64_t i = 0; i < kMessages; ++i) {
    Frame f = make_msg(*sender_ctx, "t", "f", i);
    ASSERT_EQ(push->send_for(f, 10s), SendResult::kQueued);
  }
  std::vector<Delivery> held;
  std::uint64_t next = 0;
  // Hold every block the pool has; the bridge must stall on the next one.
  for (const auto deadline = Clock::now() + 20s; held.size() < 8 && Clock::now() < deadline;) {
    Delivery d;
    if (pull->recv_for(d, 20ms) != WaitResult::kReady) continue;
    EXPECT_EQ(read_msg(d)->seq, next++);
    held.push_back(std::move(d));
  }
  ASSERT_EQ(held.size(), 8u);
  for (int i = 0; i < 500 && pull->stats().stalls == 0; ++i) {
    Delivery none;
    EXPECT_NE(pull->recv_for(none, 20ms), WaitResult::kReady);  // no block to put it in
  }
  EXPECT_GT(pull->stats().stalls, 0u);
  held.clear();  // the blocks come back; the bridge's retry finds them
  for (; next < kMessages; ++next) {
    Delivery d;
    ASSERT_EQ(pull->recv_for(d, 10s), WaitResult::kReady);
    EXPECT_EQ(read_msg(d)->seq, next);
  }
  EXPECT_EQ(pull->stats().malformed + pull->stats().errors, 0u);
}

}  // namespace
}  // namespace palm::transport::test
