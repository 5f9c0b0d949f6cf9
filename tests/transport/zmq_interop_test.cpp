// Interoperability with pylm 0.14.4 on the wire: raw libzmq sockets play the
// pylm peer and exchange the golden frames (shared/golden) with palm
// endpoints, byte for byte. Threads only (the raw sockets live in the test
// thread, on their own ZeroMQ context).
#include <gtest/gtest.h>

#include <future>
#include <set>
#include <string>
#include <vector>

#include "palm/core/codec.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/discovery.hpp"
#include "zmq_test_util.hpp"

namespace palm::transport::test {
namespace {

bool same(std::span<const std::byte> a, const std::vector<std::byte>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end());
}

class Interop : public ::testing::TestWithParam<Scheme> {
 protected:
  void SetUp() override { open_context({}); }
  void open_context(const TransportOptions& t) {
    ctx_.reset();
    ContextOptions o;
    o.transport = t;
    auto c = Context::create(o);
    ASSERT_TRUE(c) << c.error().describe();
    ctx_.emplace(std::move(*c));
  }
  Context& ctx() { return *ctx_; }
  std::unique_ptr<Endpoint> bind(Pattern p, const std::string& name) {
    return open_or_fail(ctx(), EndpointSpec::bind_to(p, bind_address(GetParam(), dir_, name)));
  }

  TempDir dir_;
  RawContext raw_;  // the pylm side; its sockets are locals of each test
  std::optional<Context> ctx_;
};

// PROTOCOL.md: "Every PUSH/PULL frame ... is one serialized PalmMessage." A
// pylm Client's (or Master's, or Worker's) PUSH frame arrives as a Frame
// whose wire bytes are the golden bytes.
TEST_P(Interop, PylmPushArrivesAsAFrameWithIdenticalWireBytes) {
  auto pull = bind(Pattern::kPull, "pull");
  ASSERT_TRUE(pull);
  RawSocket push(raw_.get(), ZMQ_PUSH);
  ASSERT_EQ(zmq_connect(push.get(), pull->address().c_str()), 0);
  const char* const names[] = {
      "server_eval.client_push",      "server_eval_64k.client_push",
      "server_eval_empty.client_push", "server_eval_nonascii.client_push",
      "pipeline_eval.client_push",    "master_eval.client_push",
      "master_eval.master_to_worker", "master_eval.worker_to_master",
      "master_eval_cache.client_push"};
  for (const char* name : names) {
    const auto bytes = golden(name);
    ASSERT_FALSE(bytes.empty()) << name;
    ASSERT_TRUE(push.send(bytes));
    Delivery d;
    ASSERT_EQ(pull->recv_for(d, 10s), WaitResult::kReady) << name;
    auto v = d.frame.view();
    ASSERT_TRUE(v) << name;
    EXPECT_TRUE(same(v->wire, bytes)) << name;
    EXPECT_FALSE(v->message.function.empty()) << name;
  }
  EXPECT_EQ(pull->stats().malformed, 0u);
}

// PROTOCOL.md: "PUB messages are two frames, [topic (utf-8), serialized
// PalmMessage]". A pylm SUB on a palm PUB (an XPUB with NODROP) gets the
// golden pair byte for byte; the publisher waits for its subscription.
TEST_P(Interop, PalmPubReachesAPylmSubByteForByte) {
  auto pub = bind(Pattern::kPub, "pub");
  ASSERT_TRUE(pub);
  const char* const names[] = {"server_eval.server_pub", "master_eval.master_pub",
                               "pipeline_eval.server_pub", "pipeline_eval.pipeline_pub",
                               "server_eval_64k.server_pub"};
  RawSocket sub(raw_.get(), ZMQ_SUB);
  std::set<std::string> topics;  // a SUB sends each prefix once
  for (const char* name : names) topics.insert(string_of(golden(std::string(name) + ".part0")));
  for (const auto& topic : topics) {
    ASSERT_EQ(zmq_setsockopt(sub.get(), ZMQ_SUBSCRIBE, topic.data(), topic.size()), 0);
  }
  ASSERT_EQ(zmq_connect(sub.get(), pub->address().c_str()), 0);
  ASSERT_EQ(pub->wait_subscriptions(topics.size(), 10s), WaitResult::kReady);
  for (const char* name : names) {
    const auto topic = golden(std::string(name) + ".part0");
    const auto body = golden(std::string(name) + ".part1");
    auto frame = Frame::parse(ctx().pool(), ctx().slot(), body, string_of(topic));
    ASSERT_TRUE(frame) << frame.error().describe();
    ASSERT_EQ(pub->send_for(*frame, 10s), SendResult::kQueued);
    auto parts = sub.recv();
    ASSERT_EQ(parts.size(), 2u) << name;
    EXPECT_EQ(parts[0], topic) << name;
    EXPECT_EQ(parts[1], body) << name;
  }
}

// PROTOCOL.md "Cache service": the request is a PalmMessage, "The reply is
// raw bytes". A pylm Client's REQ (routing id = its uuid) asks a palm rep
// endpoint; the request arrives byte for byte, the raw reply goes back so.
TEST_P(Interop, PylmCacheRequestGetsARawReplyByteForByte) {
  auto rep = bind(Pattern::kRep, "db");
  ASSERT_TRUE(rep);
  RawSocket req(raw_.get(), ZMQ_REQ);
  const std::string id = "ff63be28-4c36-44d1-87a7-5e16c404c9dc";
  ASSERT_EQ(zmq_setsockopt(req.get(), ZMQ_ROUTING_ID, id.data(), id.size()), 0);
  ASSERT_EQ(zmq_connect(req.get(), rep->address().c_str()), 0);
  const char* const names[] = {"cache_client_get_name", "cache_client_get_pub_address",
                               "cache_client_get_missing_key", "cache_client_set_key",
                               "cache_client_set_nonascii_key", "cache_client_delete_key",
                               "cache_worker_get_worker_push_address"};
  for (const char* name : names) {
    const auto request = golden(std::string(name) + ".request");
    const auto reply = golden(std::string(name) + ".reply");
    ASSERT_TRUE(req.send(request));
    Delivery d;
    ASSERT_EQ(rep->recv_for(d, 10s), WaitResult::kReady) << name;
    auto v = d.frame.view();
    ASSERT_TRUE(v);
    EXPECT_TRUE(same(v->wire, request)) << name;
    auto answer = ctx().raw(reply);
    ASSERT_TRUE(answer);
    Envelope to;
    to.peer = d.peer;
    to.body = Body::kRaw;
    ASSERT_EQ(rep->send_for(*answer, 10s, to), SendResult::kQueued);
    auto parts = req.recv();
    ASSERT_EQ(parts.size(), 1u) << name;
    EXPECT_EQ(parts[0], reply) << name;  // an empty reply (missing key) included
  }
}

// The discovery client against a pylm cache (a raw REP): its request has the
// golden request's shape (fields 1, 2, 4, 6 in order, uuids of 36
// characters, the same length) and the raw reply is the value.
TEST_P(Interop, DiscoveryAsksLikeAPylmClientAndWorker) {
  RawSocket rep(raw_.get(), ZMQ_REP);
  const std::string address = bind_address(GetParam(), dir_, "cache");
  ASSERT_EQ(zmq_bind(rep.get(), address.c_str()), 0);
  char endpoint[256];
  std::size_t size = sizeof endpoint;
  ASSERT_EQ(zmq_getsockopt(rep.get(), ZMQ_LAST_ENDPOINT, endpoint, &size), 0);

  struct Case {
    const char* server;
    const char* key;
    const char* golden_name;
  };
  const Case cases[] = {{"my_server", "name", "cache_client_get_name"},
                        {"_", "worker_push_address", "cache_worker_get_worker_push_address"}};
  for (const Case& c : cases) {
    auto client = DiscoveryClient::connect(ctx(), endpoint, c.server);
    ASSERT_TRUE(client) << client.error().describe();
    auto value = std::async(std::launch::async, [&] { return client->get(c.key, 10s); });
    auto parts = rep.recv();
    ASSERT_EQ(parts.size(), 1u);
    const auto expected = golden(std::string(c.golden_name) + ".request");
    EXPECT_EQ(parts[0].size(), expected.size()) << c.golden_name;
    auto got = decode(parts[0]);
    auto want = decode(expected);
    ASSERT_TRUE(got && want);
    EXPECT_EQ(got->function, want->function);
    EXPECT_EQ(string_of(got->payload), string_of(want->payload));
    EXPECT_EQ(got->pipeline.size(), 36u);
    EXPECT_EQ(got->client, client->client_id());
    EXPECT_EQ(got->stage, 0);
    EXPECT_TRUE(got->cache.empty());
    const auto reply = golden(std::string(c.golden_name) + ".reply");
    ASSERT_TRUE(rep.send(reply));
    auto result = value.get();
    ASSERT_TRUE(result) << result.error().describe();
    EXPECT_EQ(*result, string_of(reply));
  }
}

// An oversized request on a rep endpoint is answered with an error that
// names the limit; the socket goes on. On a pull endpoint (no one to
// answer) it is counted and logged.
TEST_P(Interop, OversizedMessagesAreRefusedCountedAndAnsweredWhereSomeoneAsks) {
  TransportOptions t;
  t.max_message_bytes = 1024;
  open_context(t);
  auto rep = bind(Pattern::kRep, "db");
  auto pull = bind(Pattern::kPull, "pull");
  ASSERT_TRUE(rep && pull);
  const std::vector<std::byte> big(1500, std::byte{0x41});

  RawSocket req(raw_.get(), ZMQ_REQ);
  ASSERT_EQ(zmq_connect(req.get(), rep->address().c_str()), 0);
  ASSERT_TRUE(req.send(big));
  auto parts = req.recv();
  ASSERT_EQ(parts.size(), 1u);
  const std::string answer = string_of(parts[0]);
  EXPECT_EQ(answer.rfind("palm error:", 0), 0u) << answer;
  EXPECT_NE(answer.find("1024"), std::string::npos) << answer;
  EXPECT_EQ(rep->stats().oversized, 1u);
  // The same socket asks again, normally.
  const auto request = golden("cache_client_get_name.request");
  ASSERT_TRUE(req.send(request));
  Delivery d;
  ASSERT_EQ(rep->recv_for(d, 10s), WaitResult::kReady);
  auto reply = ctx().raw("my_server");
  ASSERT_TRUE(reply);
  ASSERT_EQ(rep->send_for(*reply, 10s, {d.peer, Body::kRaw}), SendResult::kQueued);
  parts = req.recv();
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_EQ(string_of(parts[0]), "my_server");

  RawSocket push(raw_.get(), ZMQ_PUSH);
  ASSERT_EQ(zmq_connect(push.get(), pull->address().c_str()), 0);
  ASSERT_TRUE(push.send(big));
  const auto good = golden("server_eval.client_push");
  ASSERT_TRUE(push.send(good));
  ASSERT_EQ(pull->recv_for(d, 10s), WaitResult::kReady);
  auto v = d.frame.view();
  ASSERT_TRUE(v);
  EXPECT_TRUE(same(v->wire, good));
  EXPECT_EQ(pull->stats().oversized, 1u);
}

// palm always answers (pylm's cache thread dies on an undecodable request):
// garbage gets b"", and the rep endpoint goes on.
TEST_P(Interop, MalformedRequestIsAnsweredEmptyAndCounted) {
  auto rep = bind(Pattern::kRep, "db");
  ASSERT_TRUE(rep);
  RawSocket req(raw_.get(), ZMQ_REQ);
  ASSERT_EQ(zmq_connect(req.get(), rep->address().c_str()), 0);
  ASSERT_TRUE(req.send(std::string_view("\x0f\x0f\x0f", 3)));
  auto parts = req.recv();
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_TRUE(parts[0].empty());
  EXPECT_EQ(rep->stats().malformed, 1u);
  ASSERT_TRUE(req.send(golden("cache_client_get_name.request")));
  Delivery d;
  EXPECT_EQ(rep->recv_for(d, 10s), WaitResult::kReady);
}

// A non-palm peer on a dispatcher (no dispatch header) is counted as
// malformed; a palm worker after it is served.
TEST_P(Interop, ForeignPeerOnADispatcherIsCountedAsMalformed) {
  auto dispatcher = bind(Pattern::kDispatcher, "dispatch");
  ASSERT_TRUE(dispatcher);
  RawSocket dealer(raw_.get(), ZMQ_DEALER);
  ASSERT_EQ(zmq_connect(dealer.get(), dispatcher->address().c_str()), 0);
  ASSERT_TRUE(dealer.send(golden("server_eval.client_push")));
  EndpointSpec spec = EndpointSpec::connect_to(Pattern::kWorker, dispatcher->address());
  spec.credits = 2;
  auto worker = open_or_fail(ctx(), spec);
  ASSERT_TRUE(worker);
  Delivery d;
  ASSERT_EQ(dispatcher->recv_for(d, 10s), WaitResult::kReady);
  EXPECT_EQ(d.event, Event::kPeerJoined);
  EXPECT_EQ(d.credits, 2u);
  // The garbage came first on its own connection, but connections are
  // independent: wait for the count rather than assume an order.
  for (int i = 0; i < 500 && dispatcher->stats().malformed == 0; ++i) {
    Delivery none;
    (void)dispatcher->recv_for(none, 20ms);
  }
  EXPECT_EQ(dispatcher->stats().malformed, 1u);
}

std::string name(const ::testing::TestParamInfo<Scheme>& info) { return to_string(info.param); }
INSTANTIATE_TEST_SUITE_P(Zmq, Interop, ::testing::Values(Scheme::kTcp, Scheme::kIpc), name);

}  // namespace
}  // namespace palm::transport::test
