// open_auto against a small cache (a kRep responder thread answering the
// reserved keys): the same host attaches to the published segment; a
// published identity of another boot chooses tcp; PALM_TRANSPORT=shm with a
// mismatching identity is an error naming the reason; a pylm server (no
// keys) and a stale nonce fall back to tcp. Threads only (the segment is
// this process's own): runs under TSan too.
#include <stdlib.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "palm/transport/auto_select.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/shm/host.hpp"
#include "palm/transport/shm/host_identity.hpp"
#include "peer.hpp"
#include "zmq_test_util.hpp"

namespace palm::transport::test {
namespace {

// A cache service: answers "<anything>.get" with the value of the payload's
// key (b"" if missing), from a thread, until destroyed.
class FakeCache {
 public:
  FakeCache(Context& ctx, std::map<std::string, std::string> values)
      : ctx_(ctx), values_(std::move(values)) {
    auto rep = ctx.open(EndpointSpec::bind_to(Pattern::kRep, "tcp://127.0.0.1:*"));
    if (!rep) {
      ADD_FAILURE() << rep.error().describe();
      return;
    }
    rep_ = std::move(*rep);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeCache() {
    stop_.store(true, std::memory_order_relaxed);  // relaxed: polled, joined below
    if (thread_.joinable()) thread_.join();
  }
  FakeCache(const FakeCache&) = delete;  // owns a thread
  FakeCache& operator=(const FakeCache&) = delete;
  std::string address() const { return rep_ ? rep_->address() : std::string(); }
  int requests() const { return requests_.load(std::memory_order_relaxed); }

 private:
  void serve() {
    while (!stop_.load(std::memory_order_relaxed)) {
      Delivery d;
      if (rep_->recv_for(d, 20ms) != WaitResult::kReady) continue;
      requests_.fetch_add(1, std::memory_order_relaxed);
      auto v = d.frame.view();
      std::string value;
      if (v) {
        auto it = values_.find(string_of(v->message.payload));
        if (it != values_.end()) value = it->second;
      }
      auto frame = ctx_.raw(value);
      if (!frame) continue;
      Envelope to;
      to.peer = d.peer;
      to.body = Body::kRaw;
      static_cast<void>(rep_->send_for(*frame, 5s, to));
    }
  }

  Context& ctx_;  // replies are built in its pool (Context::raw: thread-safe)
  const std::map<std::string, std::string> values_;
  std::unique_ptr<Endpoint> rep_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
};

ContextOptions small_options() {
  ContextOptions o;
  o.pool.set_blocks(256, 2048).set_blocks(512, 2048);
  o.transport.queue_capacity = 256;
  o.transport.command_timeout = 3s;
  return o;
}

class AutoSelect : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = Context::create(small_options());
    ASSERT_TRUE(c) << c.error().describe();
    ctx_.emplace(std::move(*c));
    // The server's two faces: a tcp pull (the fallback) and a shm pull.
    auto t = ctx().open(EndpointSpec::bind_to(Pattern::kPull, "tcp://127.0.0.1:*"));
    ASSERT_TRUE(t) << t.error().describe();
    tcp_pull_ = std::move(*t);
    auto s = ctx().open(EndpointSpec::bind_to(Pattern::kPull, "shm://" + segment_.name() + "/work"));
    ASSERT_TRUE(s) << s.error().describe();
    shm_pull_ = std::move(*s);
    port_ = tcp_pull_->address().substr(tcp_pull_->address().rfind(':') + 1);
    auto id = shm::host_identity();
    ASSERT_TRUE(id) << id.error().describe();
    identity_ = *id;
  }
  Context& ctx() { return *ctx_; }
  std::string published_service(std::uint64_t nonce_delta = 0) {
    ShmService s;
    s.segment = segment_.name();
    s.service = "work";
    s.nonce = dynamic_cast<shm::ShmEndpoint&>(*shm_pull_).nonce() + nonce_delta;
    return s.to_string();
  }
  std::unique_ptr<FakeCache> cache(std::map<std::string, std::string> values) {
    auto c = std::make_unique<FakeCache>(ctx(), std::move(values));
    return c;
  }
  // Sends one message through `push` and says which pull got it.
  std::string carried_by(Endpoint& push) {
    Frame f = make_msg(ctx(), "test", "work", 7);
    EXPECT_EQ(push.send_for(f, 5s), SendResult::kQueued);
    for (const auto deadline = std::chrono::steady_clock::now() + 10s;
         std::chrono::steady_clock::now() < deadline;) {
      Delivery d;
      if (shm_pull_->recv_for(d, 10ms) == WaitResult::kReady) return "shm";
      if (tcp_pull_->recv_for(d, 10ms) == WaitResult::kReady) return "tcp";
    }
    return "none";
  }
  EndpointSpec push_spec() const {
    return EndpointSpec::connect_to(Pattern::kPush, "tcp://127.0.0.1:" + port_);
  }

  palm::test::ShmGuard segment_{palm::test::unique_name("auto")};
  std::optional<Context> ctx_;
  std::unique_ptr<Endpoint> tcp_pull_, shm_pull_;
  std::string port_;
  shm::HostIdentity identity_;
};

AutoOptions mode(shm::TransportMode m) {
  AutoOptions o;
  o.mode = m;
  return o;
}

TEST_F(AutoSelect, SameHostAttachesToThePublishedSegment) {
  auto db = cache({{std::string(kHostKey), identity_.to_string()}, {shm_key(port_), published_service()}});
  const auto before = auto_choice_counts();
  auto push = open_auto(ctx(), push_spec(), db->address(), mode(shm::TransportMode::kAuto));
  ASSERT_TRUE(push) << push.error().describe();
  EXPECT_EQ((*push)->scheme(), Scheme::kShm);
  EXPECT_EQ(carried_by(**push), "shm");
  const auto status = dynamic_cast<shm::ShmEndpoint&>(*shm_pull_).peer_status();
  ASSERT_EQ(status.size(), 1u);
  EXPECT_STREQ(status[0].transport, "shm");
  EXPECT_EQ(status[0].messages_in, 1u);
  EXPECT_EQ(auto_choice_counts().shm, before.shm + 1);
  EXPECT_EQ(db->requests(), 2);
}

TEST_F(AutoSelect, AnotherBootIdChoosesTcp) {
  shm::HostIdentity other = identity_;
  other.boot_id = "00000000-0000-4000-8000-000000000000";
  auto db = cache({{std::string(kHostKey), other.to_string()}, {shm_key(port_), published_service()}});
  const auto before = auto_choice_counts();
  auto push = open_auto(ctx(), push_spec(), db->address(), mode(shm::TransportMode::kAuto));
  ASSERT_TRUE(push) << push.error().describe();
  EXPECT_EQ((*push)->scheme(), Scheme::kTcp);
  EXPECT_EQ(carried_by(**push), "tcp");
  EXPECT_EQ(auto_choice_counts().tcp, before.tcp + 1);
  EXPECT_EQ(auto_choice_counts().fallbacks, before.fallbacks);
}

TEST_F(AutoSelect, ShmModeWithAnotherBootIdIsAnErrorNamingIt) {
  shm::HostIdentity other = identity_;
  other.boot_id = "00000000-0000-4000-8000-000000000000";
  auto db = cache({{std::string(kHostKey), other.to_string()}, {shm_key(port_), published_service()}});
  auto push = open_auto(ctx(), push_spec(), db->address(), mode(shm::TransportMode::kShm));
  ASSERT_FALSE(push);
  EXPECT_EQ(push.error().code, Errc::kInvalidArgument);
  EXPECT_NE(push.error().message.find("boot id"), std::string::npos) << push.error().message;
}

// The same through the environment, as a deployment sets it. setenv before
// any thread of this test starts (the earlier tests' threads are joined).
TEST(AutoSelectEnv, PalmTransportShmWithAnotherBootIdIsAnError) {
  ASSERT_EQ(::setenv("PALM_TRANSPORT", "shm", 1), 0);
  {
    auto c = Context::create(small_options());
    ASSERT_TRUE(c);
    auto id = shm::host_identity();
    ASSERT_TRUE(id);
    id->boot_id = "00000000-0000-4000-8000-000000000000";
    FakeCache db(*c, {{std::string(kHostKey), id->to_string()}, {shm_key("5999"), "seg/work 42"}});
    auto push = open_auto(*c, EndpointSpec::connect_to(Pattern::kPush, "tcp://127.0.0.1:5999"), db.address());
    ASSERT_FALSE(push);
    EXPECT_NE(push.error().message.find("PALM_TRANSPORT=shm"), std::string::npos) << push.error().message;
    EXPECT_NE(push.error().message.find("boot id"), std::string::npos) << push.error().message;
  }
  ASSERT_EQ(::unsetenv("PALM_TRANSPORT"), 0);
}

TEST_F(AutoSelect, APylmServerPublishesNothingAndGetsTcp) {
  auto db = cache({});
  auto push = open_auto(ctx(), push_spec(), db->address(), mode(shm::TransportMode::kAuto));
  ASSERT_TRUE(push) << push.error().describe();
  EXPECT_EQ((*push)->scheme(), Scheme::kTcp);
  EXPECT_EQ(carried_by(**push), "tcp");
}

// A restarted server has a new nonce: the old one published is refused by
// the segment, and auto falls back to tcp (counted as a fallback).
TEST_F(AutoSelect, AStaleNonceFallsBackToTcp) {
  auto db = cache({{std::string(kHostKey), identity_.to_string()}, {shm_key(port_), published_service(1)}});
  const auto before = auto_choice_counts();
  auto push = open_auto(ctx(), push_spec(), db->address(), mode(shm::TransportMode::kAuto));
  ASSERT_TRUE(push) << push.error().describe();
  EXPECT_EQ((*push)->scheme(), Scheme::kTcp);
  EXPECT_EQ(carried_by(**push), "tcp");
  EXPECT_EQ(auto_choice_counts().fallbacks, before.fallbacks + 1);
}

TEST_F(AutoSelect, TcpModeAsksNobody) {
  auto db = cache({{std::string(kHostKey), identity_.to_string()}, {shm_key(port_), published_service()}});
  auto push = open_auto(ctx(), push_spec(), db->address(), mode(shm::TransportMode::kTcp));
  ASSERT_TRUE(push) << push.error().describe();
  EXPECT_EQ((*push)->scheme(), Scheme::kTcp);
  EXPECT_EQ(db->requests(), 0);
}

TEST(ShmServiceValue, RoundTripsAndRefusesGarbage) {
  ShmService s{"seg", "work", 42};
  auto back = ShmService::parse(s.to_string());
  ASSERT_TRUE(back);
  EXPECT_EQ(back->segment, "seg");
  EXPECT_EQ(back->service, "work");
  EXPECT_EQ(back->nonce, 42u);
  for (const char* bad : {"", "seg/work", "seg 42", "/work 42", "seg/ 42", "seg/work x", "seg/work 0"}) {
    EXPECT_FALSE(ShmService::parse(bad)) << bad;
  }
  EXPECT_EQ(shm_key("5555"), std::string(kShmKeyPrefix) + "5555");
}

}  // namespace
}  // namespace palm::transport::test
