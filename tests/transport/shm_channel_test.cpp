// Shared-memory channels and endpoints under threads (run under TSan too):
// the channel protocol moves references exactly once and discard releases
// what is left; topics survive the seqlock; host identity and the transport
// rule; and the endpoints of one process: push/pull, pub/sub with a slow
// subscriber, dispatcher/worker with credits, a departing peer.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "palm/core/pool.hpp"
#include "palm/core/region.hpp"
#include "palm/transport/shm/channel.hpp"
#include "palm/transport/shm/host.hpp"
#include "palm/transport/shm/host_identity.hpp"
#include "palm/transport/shm/peer_table.hpp"
#include "peer.hpp"
#include "shm_test_util.hpp"

namespace palm::shm {
namespace {

using namespace std::chrono_literals;
using palm::test::ShmGuard;
using palm::test::unique_name;
using test::numbered;
using test::read_numbered;
using test::small_host;
using transport::Delivery;
using transport::Envelope;
using transport::Event;
using transport::Pattern;
using transport::PeerId;
using transport::SendResult;

// A pool in a memfd and one ring in ordinary aligned memory.
struct ChannelFixture {
  MappedRegion region;
  std::optional<BlockPool> pool;
  std::unique_ptr<std::byte[]> ring_mem;
  ChannelRing* ring = nullptr;
  Doorbell bell;

  explicit ChannelFixture(std::uint32_t capacity) {
    PoolConfig c = small_host().pool;
    auto r = MappedRegion::create_anonymous(BlockPool::region_bytes(c));
    EXPECT_TRUE(r);
    region = std::move(*r);
    auto p = BlockPool::create(region.region(), c);
    EXPECT_TRUE(p);
    pool = *p;
    const std::size_t bytes = ChannelRing::bytes_for(capacity);
    ring_mem.reset(new std::byte[bytes + ChannelRing::kAlignment]);
    void* aligned = ring_mem.get() + (ChannelRing::kAlignment -
                                      reinterpret_cast<std::uintptr_t>(ring_mem.get()) % ChannelRing::kAlignment);
    auto made = ChannelRing::create_at(aligned, bytes, capacity);
    EXPECT_TRUE(made);
    ring = *made;
  }
};

TEST(ShmChannel, MovesEachReferenceOnceBetweenThreads) {
  ChannelFixture fx(64);
  BlockPool& pool = *fx.pool;
  auto producer_slot = pool.attach_process(self_process());
  auto consumer_slot = pool.attach_process(self_process());
  ASSERT_TRUE(producer_slot && consumer_slot);
  constexpr std::uint64_t kCount = 20000;
  std::atomic<bool> failed{false};

  std::thread producer([&] {
    for (std::uint64_t i = 0; i < kCount; ++i) {
      auto f = numbered(pool, *producer_slot, i);
      if (!f) {
        failed = true;
        return;
      }
      // Room first (the producer alone adds: room seen stays room), then
      // the reference leaves the producer's list and enters the ring.
      const auto w = fx.bell.wait_for([&] { return channel_has_room(*fx.ring); }, 10s);
      auto h = f->give_away();
      if (w != WaitResult::kReady || !h || !channel_publish(*fx.ring, *h, static_cast<std::uint32_t>(i), nullptr)) {
        failed = true;
        return;
      }
    }
  });
  std::vector<std::uint64_t> got;
  got.reserve(kCount);
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (got.size() < kCount && std::chrono::steady_clock::now() < deadline && !failed) {
    ChannelItem item{};
    const ChannelPop r = channel_receive(*fx.ring, pool, *consumer_slot, item, &fx.bell);
    if (r == ChannelPop::kEmpty) {
      std::this_thread::yield();
      continue;
    }
    ASSERT_EQ(r, ChannelPop::kMessage);
    Frame f(pool, *consumer_slot, Handle::from_bits(item.handle));
    auto n = read_numbered(f);
    ASSERT_TRUE(n);
    EXPECT_EQ(n->id, item.tag);
    got.push_back(n->id);
  }
  producer.join();
  ASSERT_FALSE(failed);
  ASSERT_EQ(got.size(), kCount);
  for (std::uint64_t i = 0; i < kCount; ++i) ASSERT_EQ(got[i], i) << "in order, once";
  EXPECT_TRUE(pool.stats().all_free());
}

TEST(ShmChannel, DiscardReleasesExactlyTheUnconsumedPositions) {
  ChannelFixture fx(16);
  BlockPool& pool = *fx.pool;
  auto a = pool.attach_process(self_process());
  auto b = pool.attach_process(self_process());
  auto owner = pool.attach_process(self_process());
  ASSERT_TRUE(a && b && owner);
  for (std::uint64_t i = 0; i < 10; ++i) {
    auto f = numbered(pool, *a, i);
    ASSERT_TRUE(f);
    auto h = f->give_away();
    ASSERT_TRUE(h);
    ASSERT_TRUE(channel_publish(*fx.ring, *h, 0, nullptr));
  }
  // The consumer takes 3 (held by b), then "dies": [head, tail) is 7 items.
  std::vector<Frame> held;
  for (int i = 0; i < 3; ++i) {
    ChannelItem item{};
    ASSERT_EQ(channel_receive(*fx.ring, pool, *b, item, nullptr), ChannelPop::kMessage);
    held.emplace_back(pool, *b, Handle::from_bits(item.handle));
  }
  EXPECT_EQ(fx.ring->tail() - fx.ring->head(), 7u);
  EXPECT_EQ(discard_channel(*fx.ring, pool, *owner), 7u);
  EXPECT_EQ(fx.ring->tail(), fx.ring->head());
  held.clear();
  EXPECT_TRUE(pool.stats().all_free());
}

TEST(ShmChannel, FullChannelLeavesTheFrameWithItsSender) {
  ChannelFixture fx(2);
  BlockPool& pool = *fx.pool;
  auto a = pool.attach_process(self_process());
  ASSERT_TRUE(a);
  std::vector<Frame> frames;
  for (std::uint64_t i = 0; i < 3; ++i) {
    auto f = numbered(pool, *a, i);
    ASSERT_TRUE(f);
    frames.push_back(std::move(*f));
  }
  for (int i = 0; i < 2; ++i) {
    auto h = frames[i].give_away();
    ASSERT_TRUE(h);
    EXPECT_TRUE(channel_publish(*fx.ring, *h, 0, nullptr));
  }
  EXPECT_EQ(channel_send(*fx.ring, pool, *a, frames[2].handle(), 0, nullptr), ChannelPush::kFull);
  EXPECT_TRUE(pool.unhold(*a, frames[2].handle())) << "still in the sender's list";
  ASSERT_TRUE(pool.hold(*a, frames[2].handle()));
  frames.clear();  // frame 2 is released here
  EXPECT_EQ(discard_channel(*fx.ring, pool, *a), 2u);
  EXPECT_TRUE(pool.stats().all_free());
}

TEST(ShmTopics, EncodeDecodeAndSeqlockRoundTrip) {
  auto enc = encode_topics({"", "abc", "news."});
  ASSERT_TRUE(enc);
  PeerEntry e{};
  const std::uint32_t seq = write_topics(e, *enc);
  EXPECT_EQ(seq % 2, 0u);
  std::vector<std::string> out;
  std::uint32_t seen = 0;
  ASSERT_TRUE(read_topics(e, out, seen));
  EXPECT_EQ(seen, seq);
  EXPECT_EQ(out, (std::vector<std::string>{"", "abc", "news."}));
  EXPECT_FALSE(encode_topics({std::string(300, 'x')}));
}

TEST(HostIdentity, EqualToItselfAndRoundTripsThroughText) {
  auto a = host_identity();
  ASSERT_TRUE(a) << a.error().describe();
  auto b = host_identity();
  ASSERT_TRUE(b);
  EXPECT_EQ(*a, *b);
  EXPECT_FALSE(shm_obstacle(*a, *b));
  auto parsed = HostIdentity::parse(a->to_string());
  ASSERT_TRUE(parsed) << parsed.error().describe();
  EXPECT_EQ(*parsed, *a);
  EXPECT_FALSE(HostIdentity::parse("boot=x;shm=1:2;pidns=y"));
}

TEST(HostIdentity, TheRuleAndTheModes) {
  auto local = host_identity();
  ASSERT_TRUE(local);
  HostIdentity other_ns = *local;
  other_ns.pid_ns = "pid:[1]";
  HostIdentity other_host = *local;
  other_host.boot_id = "00000000-0000-0000-0000-000000000000";
  HostIdentity other_shm = *local;
  other_shm.shm_ino += 1;
  EXPECT_NE(shm_obstacle(*local, other_ns)->find("pid namespace"), std::string::npos);
  EXPECT_NE(shm_obstacle(*local, other_host)->find("boot id"), std::string::npos);
  EXPECT_NE(shm_obstacle(*local, other_shm)->find("/dev/shm"), std::string::npos);

  std::string why;
  EXPECT_EQ(choose_transport(TransportMode::kAuto, *local, *local, &why).value(), TransportChoice::kShm);
  EXPECT_EQ(choose_transport(TransportMode::kAuto, *local, other_ns, &why).value(), TransportChoice::kTcp);
  EXPECT_NE(why.find("pid namespace"), std::string::npos);
  EXPECT_EQ(choose_transport(TransportMode::kAuto, *local, std::nullopt).value(), TransportChoice::kTcp);
  EXPECT_EQ(choose_transport(TransportMode::kTcp, *local, *local).value(), TransportChoice::kTcp);
  auto impossible = choose_transport(TransportMode::kShm, *local, other_host);
  ASSERT_FALSE(impossible);
  EXPECT_EQ(impossible.error().code, Errc::kInvalidArgument);
  EXPECT_NE(impossible.error().message.find("boot id"), std::string::npos);

  EXPECT_EQ(parse_transport_mode("auto").value(), TransportMode::kAuto);
  EXPECT_EQ(parse_transport_mode("").value(), TransportMode::kAuto);
  EXPECT_EQ(parse_transport_mode("shm").value(), TransportMode::kShm);
  EXPECT_EQ(parse_transport_mode("tcp").value(), TransportMode::kTcp);
  auto bad = parse_transport_mode("udp");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("auto, shm, tcp"), std::string::npos);
}

// ---- endpoints within one process -------------------------------------------

TEST(ShmEndpoints, PushPullAcrossThreadsEveryMessageOnce) {
  ShmGuard g(unique_name("pp"));
  auto host = Host::create(g.name(), small_host(64));
  ASSERT_TRUE(host) << host.error().describe();
  auto pull = host->bind(Pattern::kPull, "in");
  ASSERT_TRUE(pull) << pull.error().describe();
  constexpr int kProducers = 3;
  constexpr std::uint64_t kEach = 3000;
  std::vector<std::unique_ptr<ShmEndpoint>> pushers;
  for (int p = 0; p < kProducers; ++p) {
    ConnectOptions co;
    co.service = "in";
    co.nonce = host->nonce();
    auto ep = connect(g.name(), Pattern::kPush, co);
    ASSERT_TRUE(ep) << ep.error().describe();
    pushers.push_back(std::move(*ep));
  }
  std::atomic<int> send_failures{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      for (std::uint64_t i = 0; i < kEach; ++i) {
        auto f = numbered(*pushers[p], (std::uint64_t(p) << 32) | i);
        if (!f || pushers[p]->send_for(*f, 10s, {}) != SendResult::kQueued) ++send_failures;
      }
    });
  }
  std::set<std::uint64_t> got;
  std::vector<std::uint64_t> last(kProducers, 0);
  bool in_order = true;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (got.size() < kProducers * kEach && std::chrono::steady_clock::now() < deadline) {
    Delivery d;
    if ((*pull)->recv_for(d, 1s) != WaitResult::kReady) continue;
    auto n = read_numbered(d.frame);
    ASSERT_TRUE(n);
    const auto p = static_cast<std::size_t>(n->id >> 32);
    const std::uint64_t i = n->id & 0xffffffffu;
    if (i + 1 <= last[p] && got.count(n->id) == 0) in_order = false;
    last[p] = i + 1;
    EXPECT_TRUE(got.insert(n->id).second) << "duplicate " << n->id;
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(send_failures.load(), 0);
  EXPECT_EQ(got.size(), kProducers * kEach);
  EXPECT_TRUE(in_order) << "per-producer order";
  // Per-peer counters: the shm channels carried every message.
  std::uint64_t carried = 0;
  for (const PeerStatus& s : (*pull)->peer_status()) {
    EXPECT_STREQ(s.transport, "shm");
    carried += s.messages_in;
  }
  EXPECT_EQ(carried, kProducers * kEach);
  EXPECT_EQ((*pull)->stats().messages_in, kProducers * kEach);
  pushers.clear();
  EXPECT_TRUE(host->wait_peer_count(0, 10s));
  (*pull)->close();
  EXPECT_TRUE(host->pool().stats().all_free());
}

TEST(ShmEndpoints, FramesOfAnotherPoolAreCopiedOnce) {
  ShmGuard g(unique_name("copy"));
  auto host = Host::create(g.name(), small_host(16));
  ASSERT_TRUE(host);
  auto pull = host->bind(Pattern::kPull);
  ASSERT_TRUE(pull);
  auto push = connect(g.name(), Pattern::kPush);
  ASSERT_TRUE(push) << push.error().describe();
  ChannelFixture other(2);  // a private pool, like a Context's
  auto slot = other.pool->attach_process(self_process());
  ASSERT_TRUE(slot);
  auto f = numbered(*other.pool, *slot, 77);
  ASSERT_TRUE(f);
  ASSERT_EQ((*push)->send_for(*f, 5s, {}), SendResult::kQueued);
  EXPECT_FALSE(*f);
  EXPECT_EQ((*push)->copies(), 1u);
  Delivery d;
  ASSERT_EQ((*pull)->recv_for(d, 5s), WaitResult::kReady);
  EXPECT_EQ(read_numbered(d.frame)->id, 77u);
  EXPECT_TRUE(other.pool->stats().all_free());
}

TEST(ShmEndpoints, SlowSubscriberLosesMessagesWithACounterAndThePublisherGoesOn) {
  ShmGuard g(unique_name("slow"));
  auto host = Host::create(g.name(), small_host(8));
  ASSERT_TRUE(host);
  auto pub = host->bind(Pattern::kPub, "news");
  ASSERT_TRUE(pub);
  ConnectOptions co;
  co.service = "news";
  co.subscriptions = {""};
  auto slow = connect(g.name(), Pattern::kSub, co);
  auto fast = connect(g.name(), Pattern::kSub, co);
  ASSERT_TRUE(slow && fast);
  ASSERT_EQ((*pub)->wait_subscriptions(2, 10s), WaitResult::kReady);
  constexpr std::uint64_t kCount = 200;
  // The fast subscriber reads each message before the next is published
  // (lock-step, so its channel is never full whatever the scheduling); the
  // slow one never reads.
  std::vector<std::uint64_t> fast_got;
  for (std::uint64_t i = 0; i < kCount; ++i) {
    auto f = numbered(**pub, i, "f", "t");
    ASSERT_TRUE(f);
    // Never blocks past the slow-subscriber wait: the publisher goes on.
    ASSERT_EQ((*pub)->send_for(*f, 10s, {}), SendResult::kQueued);
    Delivery d;
    ASSERT_EQ((*fast)->recv_for(d, 10s), WaitResult::kReady);
    fast_got.push_back(read_numbered(d.frame)->id);
  }
  EXPECT_EQ(fast_got.size(), kCount) << "the fast subscriber loses nothing";
  const auto slow_status = (*slow)->peer_status();
  ASSERT_EQ(slow_status.size(), 1u);
  EXPECT_TRUE(slow_status[0].overflow) << "the error flag";
  EXPECT_EQ(slow_status[0].lost, kCount - 8) << "all but the channel's 8 were lost, and counted";
  EXPECT_EQ((*slow)->stats().errors, kCount - 8);
  EXPECT_EQ((*pub)->stats().dropped, kCount - 8);
  // What the slow one kept is intact and in order.
  for (std::uint64_t i = 0; i < 8; ++i) {
    Delivery d;
    ASSERT_EQ((*slow)->recv_for(d, 1s), WaitResult::kReady);
    EXPECT_EQ(read_numbered(d.frame)->id, i);
  }
  slow->reset();
  fast->reset();
  EXPECT_TRUE(host->wait_peer_count(0, 10s));
  EXPECT_TRUE(host->pool().stats().all_free());
}

TEST(ShmEndpoints, PubSubFiltersByTopicPrefixAndSubscribeTakesEffect) {
  ShmGuard g(unique_name("topic"));
  auto host = Host::create(g.name(), small_host(64));
  ASSERT_TRUE(host);
  auto pub = host->bind(Pattern::kPub);
  ASSERT_TRUE(pub);
  ConnectOptions co;
  co.subscriptions = {"a."};
  auto sub = connect(g.name(), Pattern::kSub, co);
  ASSERT_TRUE(sub);
  ASSERT_EQ((*pub)->wait_subscriptions(1, 10s), WaitResult::kReady);
  for (const char* t : {"a.1", "b.1", "a.2"}) {
    auto f = numbered(**pub, 1, "f", t);
    ASSERT_EQ((*pub)->send_for(*f, 1s, {}), SendResult::kQueued);
  }
  ASSERT_TRUE((*sub)->subscribe("b."));
  EXPECT_EQ((*pub)->subscriptions_seen(), 2u);
  auto f = numbered(**pub, 2, "f", "b.2");
  ASSERT_EQ((*pub)->send_for(*f, 1s, {}), SendResult::kQueued);
  std::vector<std::string> topics;
  Delivery d;
  while ((*sub)->try_recv(d)) topics.push_back(read_numbered(d.frame)->topic);
  EXPECT_EQ(topics, (std::vector<std::string>{"a.1", "a.2", "b.2"}));
}

// A kSub's subscriptions are in force when connect returns: a message
// published right after it reaches the subscriber. The publish pushes into
// the subscriber's channel before try_send returns, so try_recv (no wait)
// must find it: no timing in the outcome. Fresh connections, so each one
// races the host's registration anew.
TEST(ShmEndpoints, ASubscriberHearsWhatIsPublishedRightAfterConnectReturns) {
  ShmGuard g(unique_name("subreg"));
  auto host = Host::create(g.name(), small_host(16));
  ASSERT_TRUE(host);
  auto pub = host->bind(Pattern::kPub, "news");
  ASSERT_TRUE(pub);
  constexpr std::uint64_t kRounds = 200;
  std::uint64_t heard = 0;
  for (std::uint64_t i = 0; i < kRounds; ++i) {
    ConnectOptions co;
    co.service = "news";
    co.subscriptions = {"t."};
    auto sub = connect(g.name(), Pattern::kSub, co);
    ASSERT_TRUE(sub) << sub.error().describe();
    auto f = numbered(**pub, i, "f", "t.first");
    ASSERT_TRUE(f);
    ASSERT_EQ((*pub)->try_send(*f, {}), SendResult::kQueued);
    Delivery d;
    if ((*sub)->try_recv(d)) {
      EXPECT_EQ(read_numbered(d.frame)->id, i);
      ++heard;
    }
    d = Delivery{};
    sub->reset();
    // Bounded: the monitor discards the departed entry (woken by its ring).
    ASSERT_TRUE(host->wait_peer_count(0, 10s));
  }
  EXPECT_EQ(heard, kRounds) << "every first message arrives";
  EXPECT_EQ((*pub)->subscriptions_seen(), kRounds);
  EXPECT_TRUE(host->pool().stats().all_free());
}

// subscribe()/unsubscribe() right after connect are acknowledged promptly
// (the host rings the entry's doorbell with each acknowledgement), well
// under their timeout; with or without initial subscriptions.
TEST(ShmEndpoints, SubscribeRightAfterConnectIsPrompt) {
  ShmGuard g(unique_name("subnow"));
  auto host = Host::create(g.name(), small_host(16));
  ASSERT_TRUE(host);
  auto pub = host->bind(Pattern::kPub, "news");
  ASSERT_TRUE(pub);
  using Clock = std::chrono::steady_clock;
  constexpr auto kTimeout = 4s;
  constexpr auto kPrompt = 1s;  // acks take microseconds; a missed ring costs kTimeout
  for (int i = 0; i < 20; ++i) {
    ConnectOptions co;
    co.service = "news";
    co.timeout = kTimeout;
    if (i % 2 == 0) co.subscriptions = {"a."};
    const auto t0 = Clock::now();
    auto sub = connect(g.name(), Pattern::kSub, co);
    ASSERT_TRUE(sub) << sub.error().describe();
    const auto t1 = Clock::now();
    ASSERT_TRUE((*sub)->subscribe("b.")) << "round " << i;
    const auto t2 = Clock::now();
    EXPECT_LT(t1 - t0, kPrompt) << "connect, round " << i;
    EXPECT_LT(t2 - t1, kPrompt) << "subscribe, round " << i;
    auto f = numbered(**pub, 7, "f", "b.x");
    ASSERT_EQ((*pub)->try_send(*f, {}), SendResult::kQueued);
    Delivery d;
    ASSERT_TRUE((*sub)->try_recv(d)) << "the new subscription is in force, round " << i;
    d = Delivery{};
    const auto t3 = Clock::now();
    ASSERT_TRUE((*sub)->unsubscribe("b."));
    EXPECT_LT(Clock::now() - t3, kPrompt) << "unsubscribe, round " << i;
    auto h = numbered(**pub, 8, "f", "b.y");
    ASSERT_EQ((*pub)->try_send(*h, {}), SendResult::kQueued);
    EXPECT_FALSE((*sub)->try_recv(d)) << "the unsubscription is in force, round " << i;
    sub->reset();
    ASSERT_TRUE(host->wait_peer_count(0, 10s));
  }
  EXPECT_TRUE(host->pool().stats().all_free());
}

TEST(ShmEndpoints, DispatcherRespectsCreditsAndSeesWorkersComeAndGo) {
  ShmGuard g(unique_name("disp"));
  auto host = Host::create(g.name(), small_host(16));
  ASSERT_TRUE(host);
  auto disp = host->bind(Pattern::kDispatcher, "workers");
  ASSERT_TRUE(disp);
  ConnectOptions co;
  co.service = "workers";
  co.credits = 2;
  auto worker = connect(g.name(), Pattern::kWorker, co);
  ASSERT_TRUE(worker) << worker.error().describe();
  Delivery joined;
  ASSERT_EQ((*disp)->recv_for(joined, 10s), WaitResult::kReady);
  ASSERT_EQ(joined.event, Event::kPeerJoined);
  EXPECT_EQ(joined.credits, 2u);
  const PeerId w = joined.peer;
  EXPECT_EQ((*disp)->credits(w), 2u);
  for (std::uint64_t i = 0; i < 2; ++i) {
    auto f = numbered(**disp, i);
    ASSERT_EQ((*disp)->try_send(*f, Envelope{w}), SendResult::kQueued);
  }
  auto third = numbered(**disp, 2);
  EXPECT_EQ((*disp)->try_send(*third, Envelope{w}), SendResult::kNoCredit);
  EXPECT_TRUE(*third) << "a refused frame stays with the caller";
  EXPECT_EQ((*disp)->try_send(*third, Envelope{static_cast<PeerId>(12345)}), SendResult::kPeerGone);
  // The worker echoes each task as a fresh result, returning one credit.
  for (int i = 0; i < 2; ++i) {
    Delivery task;
    ASSERT_EQ((*worker)->recv_for(task, 5s), WaitResult::kReady);
    auto r = numbered(**worker, read_numbered(task.frame)->id + 100, "result");
    ASSERT_EQ((*worker)->send_for(*r, 5s, Envelope{}), SendResult::kQueued);
  }
  std::set<std::uint64_t> results;
  for (int i = 0; i < 2; ++i) {
    Delivery d;
    ASSERT_EQ((*disp)->recv_for(d, 5s), WaitResult::kReady);
    ASSERT_EQ(d.event, Event::kMessage);
    EXPECT_EQ(d.peer, w);
    results.insert(read_numbered(d.frame)->id);
  }
  EXPECT_EQ(results, (std::set<std::uint64_t>{100, 101}));
  EXPECT_EQ((*disp)->credits(w), 2u);
  ASSERT_TRUE((*worker)->grant(3));
  Delivery credit;
  ASSERT_EQ((*disp)->recv_for(credit, 5s), WaitResult::kReady);
  EXPECT_EQ(credit.event, Event::kCredit);
  EXPECT_EQ((*disp)->credits(w), 5u);
  // A task the worker never takes, then the worker leaves: the task's
  // reference is released, and the dispatcher hears it gone.
  ASSERT_EQ((*disp)->try_send(*third, Envelope{w}), SendResult::kQueued);
  worker->reset();
  Delivery gone;
  ASSERT_EQ((*disp)->recv_for(gone, 10s), WaitResult::kReady);
  EXPECT_EQ(gone.event, Event::kPeerGone);
  EXPECT_EQ(gone.peer, w);
  auto late = numbered(**disp, 3);
  ASSERT_TRUE(late);
  EXPECT_EQ((*disp)->try_send(*late, Envelope{w}), SendResult::kPeerGone);
  late->reset();
  EXPECT_TRUE(host->wait_peer_count(0, 10s));
  EXPECT_TRUE(host->pool().stats().all_free());
}

TEST(ShmEndpoints, AttachErrorsAreClear) {
  ShmGuard g(unique_name("err"));
  EXPECT_EQ(connect(g.name(), Pattern::kPush).error().code, Errc::kNotFound);
  auto host = Host::create(g.name(), small_host(16));
  ASSERT_TRUE(host);
  auto pull = host->bind(Pattern::kPull);
  ASSERT_TRUE(pull);
  EXPECT_EQ(connect(g.name(), Pattern::kSub).error().code, Errc::kInvalidArgument) << "pattern mismatch";
  ConnectOptions wrong_service;
  wrong_service.service = "nope";
  EXPECT_EQ(connect(g.name(), Pattern::kPush, wrong_service).error().code, Errc::kNotFound);
  ConnectOptions wrong_nonce;
  wrong_nonce.nonce = host->nonce() + 1;
  auto stale = connect(g.name(), Pattern::kPush, wrong_nonce);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, Errc::kNotFound);
  EXPECT_NE(stale.error().message.find("incarnation"), std::string::npos);
  EXPECT_EQ(host->bind(Pattern::kReq).error().code, Errc::kInvalidArgument);
  EXPECT_EQ(Host::create(g.name(), small_host(16)).error().code, Errc::kAlreadyExists) << "a live owner";
  // Shutdown: connected endpoints see it.
  auto push = connect(g.name(), Pattern::kPush);
  ASSERT_TRUE(push);
  host->shutdown();
  auto f = numbered(**push, 1);
  EXPECT_EQ((*push)->try_send(*f, {}), SendResult::kClosed);
}

}  // namespace
}  // namespace palm::shm
