// The low-level API (FEATURES.md section 3): a server assembled from parts on
// a ServerTemplate. A blocking RepService hands each request to an outbound
// part through the router and answers with that part's feedback (pylm's
// block=True); a second outbound part in a chain gets the first's feedback
// (pylm's outbound `route`); counters are readable while it runs.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "palm/servers/parts.hpp"
#include "palm/servers/server_template.hpp"
#include "palm/transport/auto_select.hpp"
#include "palm/transport/context.hpp"
#include "peer.hpp"
#include "servers_test_util.hpp"

namespace palm::servers {
namespace {

using namespace std::chrono_literals;

// An outbound part without endpoints that answers with the payload upper-cased.
class Upper final : public OutboundPart {
 public:
  Upper() : OutboundPart("upper", PartAddress{}) {}

 protected:
  void handle(Routed& item) override {
    auto view = item.frame.view();
    ASSERT_TRUE(view);
    std::string payload = test::string_of(view->message.payload);
    std::transform(payload.begin(), payload.end(), payload.begin(),
                   [](char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : c; });
    MessageView m = view->message;
    m.payload = test::bytes_of(payload);
    auto out = Frame::build(*item.frame.pool(), item.frame.slot(), m);
    ASSERT_TRUE(out);
    item.frame.reset();
    feedback(item, *out);
  }
};

// Counts what reaches it; answers nothing itself.
class Tally final : public OutboundPart {
 public:
  explicit Tally(std::atomic<int>& seen) : OutboundPart("tally", PartAddress{}), seen_(seen) {}

 protected:
  void handle(Routed& item) override {
    ++seen_;
    feedback(item, item.frame);
  }

 private:
  std::atomic<int>& seen_;
};

// Sends `n` messages ("x.y", payload "p") through `push`, each queued.
void push_messages(transport::Context& ctx, transport::Endpoint& push, int n) {
  for (int i = 0; i < n; ++i) {
    MessageView m;
    m.function = "x.y";
    m.payload = test::bytes_of("p");
    auto f = ctx.build(m);
    ASSERT_TRUE(f);
    ASSERT_EQ(push.send_for(*f, 5s), transport::SendResult::kQueued);
  }
}

ServerOptions options() {
  ServerOptions o;
  o.name = palm::test::unique_name("template");
  o.db_address = "tcp://127.0.0.1:*";
  o.log_level = LogLevel::kCritical;
  return o;
}

TEST(ServerTemplate, ABlockingRepServiceAnswersWithTheRoutesFeedback) {
  auto ctx = transport::Context::create();
  ASSERT_TRUE(ctx);
  ServerTemplate server(*ctx, options());
  auto& rep = server.register_inbound(RepService("rep", "tcp://127.0.0.1:*"), "upper", true);
  server.register_outbound(std::make_unique<Upper>());
  server.preset_cache({{"name", server.name()}});
  ASSERT_TRUE(server.start());
  palm::test::ShmGuard guard(server.segment());
  const std::string address = dynamic_cast<InboundPart&>(rep).address();
  ASSERT_EQ(address.rfind("tcp://127.0.0.1:", 0), 0u);

  test::RawReq req(address);
  ASSERT_TRUE(req.connected());
  for (int i = 0; i < 50; ++i) {
    const auto reply = req.ask(test::request("x.y", "hello " + std::to_string(i)));
    ASSERT_TRUE(reply);
    EXPECT_EQ(*reply, "HELLO " + std::to_string(i));
  }
  // The cache is there too, with the preset key.
  test::RawReq cache(server.db_address());
  EXPECT_EQ(cache.ask(test::request("x.get", "name")), server.name());

  // A part counts what it sent just after sending it: the last reply may
  // reach us first. Bounded wait for the counters to settle.
  auto stats = server.stats();
  for (int i = 0; i < 200 && (stats.size() != 2 || stats[1].messages_out != 50u || stats[1].latency.total() != 50u); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    stats = server.stats();
  }
  ASSERT_EQ(stats.size(), 2u);
  EXPECT_EQ(stats[0].name, "rep");
  EXPECT_EQ(stats[0].messages_in, 50u);
  EXPECT_EQ(stats[1].name, "upper");
  EXPECT_EQ(stats[1].messages_in, 50u);
  EXPECT_EQ(stats[1].messages_out, 50u);
  EXPECT_EQ(stats[1].latency.total(), 50u);
  server.stop();
}

TEST(ServerTemplate, AnOutboundPartsFeedbackGoesOnToItsRoute) {
  auto ctx = transport::Context::create();
  ASSERT_TRUE(ctx);
  std::atomic<int> seen{0};
  ServerOptions o = options();
  o.shm = false;
  ServerTemplate server(*ctx, o);
  auto& pull = server.register_inbound(PullService("in", "tcp://127.0.0.1:*"), "upper");
  server.register_outbound(std::make_unique<Upper>(), "tally");
  server.register_outbound(std::make_unique<Tally>(seen));
  ASSERT_TRUE(server.start());
  EXPECT_TRUE(server.segment().empty());

  auto push = ctx->open(transport::EndpointSpec::connect_to(transport::Pattern::kPush,
                                                            dynamic_cast<InboundPart&>(pull).address()));
  ASSERT_TRUE(push);
  push_messages(*ctx, **push, 20);
  for (int i = 0; i < 500 && seen.load() < 20; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(seen.load(), 20);
  server.stop();
}

// Over shm an inbound part takes its messages in batches, under one lock:
// never more than its messages limit lets it serve. What comes after the
// limit stays unread.
TEST(ServerTemplate, AnInboundPartTakesNoMoreThanItsLimitOverShm) {
  auto ctx = transport::Context::create();
  ASSERT_TRUE(ctx);
  std::atomic<int> seen{0};
  constexpr int kLimit = 10;
  ServerTemplate server(*ctx, options());
  auto& pull = server.register_inbound(PullService("in", "tcp://127.0.0.1:*"), "tally", false, kLimit);
  server.register_outbound(std::make_unique<Tally>(seen));
  ASSERT_TRUE(server.start());
  ASSERT_FALSE(server.segment().empty());
  palm::test::ShmGuard guard(server.segment());

  transport::AutoOptions ao;
  ao.mode = shm::TransportMode::kShm;
  ao.server_name = server.name();
  auto push = transport::open_auto(
      *ctx, transport::EndpointSpec::connect_to(transport::Pattern::kPush, dynamic_cast<InboundPart&>(pull).address()),
      server.db_address(), ao);
  ASSERT_TRUE(push) << push.error().describe();
  ASSERT_EQ((*push)->scheme(), transport::Scheme::kShm);
  // Queued before the part can take them: its batches then hold more than
  // the limit allows.
  push_messages(*ctx, **push, kLimit + 30);
  EXPECT_TRUE(server.wait(5s));
  // The server stops once the part reached its limit: what it routed may or
  // may not reach the tally first, but nothing past the limit was taken.
  EXPECT_EQ(pull.stats().messages_in, static_cast<std::uint64_t>(kLimit));
  EXPECT_LE(seen.load(), kLimit);
  server.stop();
}

// A pull service whose scatter yields each message `copies` times.
class Fanout final : public InboundPart {
 public:
  Fanout(std::string address, int copies)
      : InboundPart("in", PartAddress{transport::Pattern::kPull, std::move(address), true, {}, {}}),
        copies_(copies) {}

 protected:
  void scatter(const MessageView&, Emitter& out) override {
    for (int i = 0; i < copies_; ++i) out.emit_same();
  }

 private:
  int copies_;
};

// Parts on one thread (share_thread): a scatter that yields more than the
// route holds parks the rest in its backlog (it cannot wait for a consumer
// that runs on its own thread), nothing is lost, and the shared thread
// stops. Over shm the peer's pushes wake the thread through the shared
// doorbell of the segment.
class SharedThread : public ::testing::TestWithParam<bool> {};

TEST_P(SharedThread, RoutesBetweenPartsOfOneThreadLoseNothingAndStop) {
  const bool over_shm = GetParam();
  auto ctx = transport::Context::create();
  ASSERT_TRUE(ctx);
  std::atomic<int> seen{0};
  ServerOptions o = options();
  o.shm = over_shm;
  o.route_capacity = 4;  // smaller than one scatter's output
  constexpr int kCopies = 10, kMessages = 50;
  ServerTemplate server(*ctx, o);
  auto& pull = server.register_inbound(std::make_unique<Fanout>("tcp://127.0.0.1:*", kCopies), "upper");
  server.register_outbound(std::make_unique<Upper>(), "tally");
  server.register_outbound(std::make_unique<Tally>(seen));
  ASSERT_TRUE(server.share_thread({"in", "upper", "tally"}));
  EXPECT_FALSE(server.share_thread({"upper", "in"})) << "a part shares one thread at most";
  EXPECT_FALSE(server.share_thread({"nobody"}));
  ASSERT_TRUE(server.start());
  palm::test::ShmGuard guard(server.segment());
  EXPECT_EQ(server.segment().empty(), !over_shm);

  const std::string address =
      over_shm ? "shm://" + server.segment() + "/in" : dynamic_cast<InboundPart&>(pull).address();
  auto push = ctx->open(transport::EndpointSpec::connect_to(transport::Pattern::kPush, address));
  ASSERT_TRUE(push) << push.error().describe();
  EXPECT_EQ((*push)->scheme(), over_shm ? transport::Scheme::kShm : transport::Scheme::kTcp);
  push_messages(*ctx, **push, kMessages);
  for (int i = 0; i < 500 && seen.load() < kCopies * kMessages; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(seen.load(), kCopies * kMessages);
  const auto stats = server.stats();
  ASSERT_EQ(stats.size(), 3u);
  EXPECT_EQ(stats[0].messages_in, static_cast<std::uint64_t>(kMessages));
  EXPECT_EQ(stats[0].messages_out, static_cast<std::uint64_t>(kCopies * kMessages));
  EXPECT_GT(stats[0].stalls, 0u) << "the backlog was never used: the test lost its point";
  EXPECT_EQ(stats[0].errors, 0u);
  EXPECT_EQ(stats[2].messages_in, static_cast<std::uint64_t>(kCopies * kMessages));
  const auto t0 = std::chrono::steady_clock::now();
  server.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s) << "the shared thread did not stop";
}

INSTANTIATE_TEST_SUITE_P(Transports, SharedThread, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) { return p.param ? "shm" : "tcp"; });

TEST(ServerTemplate, ARouteToNoPartIsAnErrorAtStart) {
  auto ctx = transport::Context::create();
  ASSERT_TRUE(ctx);
  ServerOptions o = options();
  o.shm = false;
  ServerTemplate server(*ctx, o);
  server.register_inbound(PullService("in", "tcp://127.0.0.1:*"), "nowhere");
  auto r = server.start();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kNotFound);
  EXPECT_NE(r.error().message.find("nowhere"), std::string::npos);
}

}  // namespace
}  // namespace palm::servers
