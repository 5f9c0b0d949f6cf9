// The Client against an in-process palm echo server (a CacheService with a
// Server's preset keys, a PULL and a PUB), over tcp and over shared memory:
// the transport choice, palm's error field, replies under another topic.
#include <gtest/gtest.h>

#include <cstring>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/sinks/ostream_sink.h>

#include "palm/servers/cache_service.hpp"
#include "palm/servers/client.hpp"
#include "palm/transport/auto_select.hpp"
#include "palm/transport/shm/host.hpp"
#include "peer.hpp"
#include "servers_test_util.hpp"

namespace palm::servers {
namespace {

using namespace std::chrono_literals;
using transport::EndpointSpec;
using transport::Pattern;

std::string port_of(const std::string& address) { return address.substr(address.rfind(':') + 1); }

// Echoes each message: payload "echo:" + payload, under the client's topic.
// "err": payload "0" with palm's error field "boom". "wrong": first a copy
// under the topic client + "x" (which the client's prefix subscription
// lets through), then the reply.
class EchoServer {
 public:
  EchoServer(transport::Context& ctx, bool shm, const std::string& segment) : ctx_(ctx) {
    auto pull = ctx.open(EndpointSpec::bind_to(Pattern::kPull, "tcp://127.0.0.1:*"));
    auto pub = ctx.open(EndpointSpec::bind_to(Pattern::kPub, "tcp://127.0.0.1:*"));
    EXPECT_TRUE(pull && pub);
    tcp_pull_ = std::move(*pull);
    tcp_pub_ = std::move(*pub);
    CacheServiceOptions o;
    o.name = "echo_server";
    o.db_address = "tcp://127.0.0.1:*";
    cache_.emplace(ctx, o);
    EXPECT_TRUE(cache_->start());
    std::map<std::string, std::string> presets = {{"name", "echo_server"},
                                                  {"pull_address", tcp_pull_->address()},
                                                  {"pub_address", tcp_pub_->address()}};
    if (shm) {
      auto sp = ctx.open(EndpointSpec::bind_to(Pattern::kPull, "shm://" + segment + "/pull"));
      auto ss = ctx.open(EndpointSpec::bind_to(Pattern::kPub, "shm://" + segment + "/pub"));
      EXPECT_TRUE(sp && ss) << (sp ? ss.error().describe() : sp.error().describe());
      shm_pull_ = std::move(*sp);
      shm_pub_ = std::move(*ss);
      const std::uint64_t nonce = dynamic_cast<shm::ShmEndpoint&>(*shm_pull_).nonce();
      presets[std::string(transport::kHostKey)] = shm::host_identity()->to_string();
      presets[transport::shm_key(port_of(tcp_pull_->address()))] =
          transport::ShmService{segment, "pull", nonce}.to_string();
      presets[transport::shm_key(port_of(tcp_pub_->address()))] =
          transport::ShmService{segment, "pub", nonce}.to_string();
    }
    cache_->preset_cache(presets);
    thread_ = std::thread([this] { run(); });
  }
  ~EchoServer() {
    stop_.store(true, std::memory_order_relaxed);  // relaxed: a flag polled every 10 ms
    thread_.join();
  }
  const std::string& db() const { return cache_->address(); }

 private:
  void run() {
    while (!stop_.load(std::memory_order_relaxed)) {  // relaxed: see ~EchoServer
      // The client uses one transport (forced): serve that pull only, so an
      // idle one does not add its wait to every message.
      transport::Endpoint& ep = shm_pull_ ? *shm_pull_ : *tcp_pull_;
      transport::Endpoint& pub = shm_pull_ ? *shm_pub_ : *tcp_pub_;
      transport::Delivery d;
      if (ep.recv_for(d, 10ms) != WaitResult::kReady) continue;
      auto v = d.frame.view();
      if (!v) continue;
      MessageView m = v->message;
      const std::string in = test::string_of(m.payload);
      const std::string client(m.client);
      std::string out = "echo:" + in;
      if (in == "err") {
        out = "0";
        m.error = "boom";
      }
      m.payload = test::bytes_of(out);
      if (in == "wrong") publish(pub, m, client + "x");
      publish(pub, m, client);
    }
  }
  void publish(transport::Endpoint& pub, const MessageView& m, const std::string& topic) {
    auto f = ctx_.build(m, topic);
    ASSERT_TRUE(f);
    EXPECT_EQ(pub.send_for(*f, 5s), transport::SendResult::kQueued);
  }

  transport::Context& ctx_;
  std::unique_ptr<transport::Endpoint> tcp_pull_, tcp_pub_, shm_pull_, shm_pub_;
  std::optional<CacheService> cache_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

class ClientVsPalm : public ::testing::TestWithParam<bool> {  // true: shm
 protected:
  void SetUp() override { server_.emplace(ctx_, GetParam(), segment_.name()); }
  void TearDown() override { server_.reset(); }
  std::unique_ptr<Client> connect() {
    ClientOptions o;
    o.server_name = "echo_server";
    o.db_address = server_->db();
    o.transport = GetParam() ? shm::TransportMode::kShm : shm::TransportMode::kTcp;
    o.log_level = LogLevel::kWarning;
    auto c = Client::connect(ctx_, o);
    EXPECT_TRUE(c) << c.error().describe();
    return c ? std::move(*c) : nullptr;
  }

  palm::test::ShmGuard segment_{palm::test::unique_name("client")};
  transport::Context ctx_ = test::make_context();
  std::optional<EchoServer> server_;
};

TEST_P(ClientVsPalm, CarriesBothWaysOnTheChosenTransport) {
  auto c = connect();
  ASSERT_NE(c, nullptr);
  const auto want = GetParam() ? transport::Scheme::kShm : transport::Scheme::kTcp;
  EXPECT_EQ(c->push_scheme(), want);
  EXPECT_EQ(c->sub_scheme(), want);
  auto r = c->eval("echo_server.echo", std::string_view("hi"));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(*r, "echo:hi");

  constexpr int kMessages = 1000;
  int next = 0;
  std::vector<std::string> replies, expected;
  for (int k = 0; k < kMessages; ++k) expected.push_back("echo:" + std::to_string(k));
  auto n = c->job(
      "echo_server.echo",
      [&](std::string& p) {
        if (next == kMessages) return false;
        p = std::to_string(next++);
        return true;
      },
      [&](std::string_view reply) { replies.emplace_back(reply); });
  ASSERT_TRUE(n) << n.error().describe();
  std::sort(replies.begin(), replies.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(replies, expected);
}

// job_in_place: payloads written straight into their frames (some shorter
// than the room asked for), replies read where they lie; every one back.
TEST_P(ClientVsPalm, JobInPlaceWritesIntoFramesAndReadsRepliesInPlace) {
  auto c = connect();
  ASSERT_NE(c, nullptr);
  constexpr int kMessages = 1000;
  int next = 0;
  std::vector<std::string> replies, expected;
  for (int k = 0; k < kMessages; ++k) expected.push_back("echo:" + std::to_string(k));
  auto n = c->job_in_place(
      "echo_server.echo", 16,
      [&](std::span<std::byte> out) -> std::optional<std::size_t> {
        if (next == kMessages) return std::nullopt;
        EXPECT_EQ(out.size(), 16u);
        const std::string p = std::to_string(next++);
        std::memcpy(out.data(), p.data(), p.size());
        return p.size();
      },
      [&](std::span<const std::byte> reply) {
        replies.emplace_back(reinterpret_cast<const char*>(reply.data()), reply.size());
      });
  ASSERT_TRUE(n) << n.error().describe();
  EXPECT_EQ(*n, static_cast<std::uint64_t>(kMessages));
  std::sort(replies.begin(), replies.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(replies, expected);
  EXPECT_EQ(c->stats().received, static_cast<std::uint64_t>(kMessages));
}

// A reply with palm's error field is a reply (pylm peers see b'0'), counted
// and logged at WARNING with the reason.
TEST_P(ClientVsPalm, ErrorFieldReplyIsReturnedCountedAndLogged) {
  auto c = connect();
  ASSERT_NE(c, nullptr);
  auto log = std::make_shared<std::ostringstream>();
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(*log);
  sink->set_formatter(make_pylm_formatter());
  server_logger("echo_server")->sinks().push_back(sink);  // before the call: no logging thread yet
  auto r = c->eval("echo_server.echo", std::string_view("err"));
  server_logger("echo_server")->sinks().pop_back();
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(*r, "0");
  EXPECT_EQ(c->stats().errors, 1u);
  EXPECT_NE(log->str().find("WARNING - Reply to echo_server.echo failed: boom"), std::string::npos) << log->str();
}

// PROTOCOL.md "Message flow": pylm's job raises on a topic that is not its
// uuid; palm's client skips it and counts it.
TEST_P(ClientVsPalm, ReplyUnderAnotherTopicIsSkippedAndCounted) {
  auto c = connect();
  ASSERT_NE(c, nullptr);
  auto r = c->eval("echo_server.echo", std::string_view("wrong"));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(*r, "echo:wrong");
  EXPECT_EQ(c->stats().wrong_topic, 1u);
  EXPECT_EQ(c->stats().received, 1u);
}

INSTANTIATE_TEST_SUITE_P(Transports, ClientVsPalm, ::testing::Bool(),
                         [](const auto& p) { return p.param ? "Shm" : "Tcp"; });

// A client of a slow-reader test's server: shm PUSH and SUB straight to
// SEGMENT's "pull" and "pub", a window far over their channels.
ClientOptions slow_reader_options(const std::string& segment, std::string server,
                                  std::chrono::milliseconds timeout) {
  ClientOptions o;
  o.server_name = std::move(server);
  o.this_config = true;
  o.push_address = "shm://" + segment + "/pull";
  o.sub_address = "shm://" + segment + "/pub";
  o.timeout = timeout;
  o.window = 1000;  // capped at the SUB channel's capacity (Client::master_window)
  o.settle = 0ms;
  o.log_level = LogLevel::kError;
  return o;
}

// A job's payloads: "0", "1", ... up to `count` of them (`next` counts).
std::function<bool(std::string&)> numbered_payloads(std::uint64_t& next, std::uint64_t count) {
  return [&next, count](std::string& p) {
    if (next == count) return false;
    p = std::to_string(next++);
    return true;
  };
}

// A server that reads a whole job before it answers any of it, kFanout
// answers per message (a scatter that answers several times: the client's
// window, capped at its SUB channel's capacity, keeps a one-answer job from
// ever overrunning it), over shm only, from a Context whose segment has
// channels of kCapacity and a 1 ms slow_subscriber_wait: a client that stops
// reading loses replies at once.
class GatedEchoServer {
 public:
  static constexpr std::uint32_t kCapacity = 16;
  static constexpr std::uint64_t kFanout = 10;

  static transport::ContextOptions options() {
    transport::ContextOptions o;
    o.shm.channel_capacity = kCapacity;
    o.shm.slow_subscriber_wait = 1ms;
    return o;
  }

  // Publishes the first `answered` of the messages' `messages * kFanout`
  // answers (the rest never), after all of them came.
  GatedEchoServer(transport::Context& ctx, const std::string& segment, std::uint64_t messages,
                  std::uint64_t answered)
      : ctx_(ctx), messages_(messages), answered_(answered) {
    auto pull = ctx.open(EndpointSpec::bind_to(Pattern::kPull, "shm://" + segment + "/pull"));
    auto pub = ctx.open(EndpointSpec::bind_to(Pattern::kPub, "shm://" + segment + "/pub"));
    EXPECT_TRUE(pull && pub) << (pull ? pub.error().describe() : pull.error().describe());
    if (!pull || !pub) return;
    pull_ = std::move(*pull);
    pub_ = std::move(*pub);
    thread_ = std::thread([this] { run(); });
  }
  ~GatedEchoServer() {
    if (thread_.joinable()) thread_.join();
  }
  bool up() const { return pub_ != nullptr; }
  // Until the server published (or dropped) every answer; bounded.
  bool wait_published(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return published_; });
  }

 private:
  void run() {
    std::vector<std::pair<std::string, std::string>> got;  // client, payload
    const auto end = std::chrono::steady_clock::now() + 20s;
    while (got.size() < messages_ && std::chrono::steady_clock::now() < end) {
      transport::Delivery d;
      if (pull_->recv_for(d, 10ms) != WaitResult::kReady) continue;
      auto v = d.frame.view();
      if (!v) continue;
      got.emplace_back(std::string(v->message.client), test::string_of(v->message.payload));
    }
    EXPECT_EQ(got.size(), messages_);
    for (std::uint64_t a = 0; a < got.size() * kFanout && a < answered_; ++a) {
      const std::uint64_t k = a / kFanout;
      MessageView m;
      m.client = got[k].first;
      const std::string out = "echo:" + got[k].second + "/" + std::to_string(a % kFanout);
      m.payload = test::bytes_of(out);
      auto f = ctx_.build(m, got[k].first);
      ASSERT_TRUE(f);
      // kQueued also when the subscriber lost it: the PUB does not wait for ever.
      EXPECT_EQ(pub_->send_for(*f, 5s), transport::SendResult::kQueued);
    }
    {
      const std::lock_guard lock(mu_);
      published_ = true;
    }
    cv_.notify_all();
  }

  transport::Context& ctx_;
  std::uint64_t messages_, answered_;
  std::unique_ptr<transport::Endpoint> pull_, pub_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool published_ = false;  // under mu_
  std::thread thread_;
};

// A job whose client stops reading (its first reply's callback blocks) while
// the server publishes the job's answers: all but a channel's worth are
// dropped. `answered` of the `messages * kFanout` answers are published; the
// job's result, with the replies that came.
struct SlowReaderRun {
  Result<std::uint64_t> result = 0;
  std::uint64_t received = 0;
};
SlowReaderRun run_slow_reader(std::uint64_t messages, std::uint64_t answered, std::chrono::milliseconds timeout) {
  palm::test::ShmGuard segment(palm::test::unique_name("slowsub"));
  auto ctx = transport::Context::create(GatedEchoServer::options());
  EXPECT_TRUE(ctx) << ctx.error().describe();
  SlowReaderRun run;
  if (!ctx) return run;
  {
    GatedEchoServer server(*ctx, segment.name(), messages, answered);
    EXPECT_TRUE(server.up());
    if (!server.up()) return run;
    // Every message out before any answer: the window is kCapacity.
    auto c = Client::connect(*ctx, slow_reader_options(segment.name(), "gated", timeout));
    EXPECT_TRUE(c) << c.error().describe();
    if (!c) return run;
    EXPECT_EQ((*c)->sub_scheme(), transport::Scheme::kShm);
    std::uint64_t next = 0;
    run.result = (*c)->job(
        "gated.echo", numbered_payloads(next, messages),
        [&](std::string_view) {
          // The first reply holds the client until every answer went out.
          if (run.received++ == 0) {
            EXPECT_TRUE(server.wait_published(20s));
          }
        },
        messages * GatedEchoServer::kFanout);
    EXPECT_EQ((*c)->stats().received, run.received);
  }
  ctx->shutdown();
  return run;
}

// Replies the server dropped because the client read too slowly never come:
// the job fails at its next idle round, naming them, not after `timeout` of
// silence (a 60 s timeout here; the answers are out within milliseconds).
TEST(ClientSlowReader, LostRepliesFailTheJobAtOnceNamingThem) {
  constexpr std::uint64_t kMessages = GatedEchoServer::kCapacity;  // the capped window
  constexpr std::uint64_t kReplies = kMessages * GatedEchoServer::kFanout;
  const SlowReaderRun run = run_slow_reader(kMessages, kReplies, 60s);
  ASSERT_FALSE(run.result) << "the job ended with " << *run.result << " replies";
  EXPECT_EQ(run.result.error().code, Errc::kExhausted) << run.result.error().describe();
  // The first reply, then what one channel holds, at most.
  EXPECT_GE(run.received, 1u);
  EXPECT_LE(run.received, 1u + GatedEchoServer::kCapacity);
  const std::string& m = run.result.error().message;
  EXPECT_NE(m.find(fmt::format("{} replies were lost", kReplies - run.received)), std::string::npos) << m;
  EXPECT_NE(m.find("read its SUB"), std::string::npos) << m;
  EXPECT_NE(m.find(fmt::format("{} replies of {}", run.received, kReplies)), std::string::npos) << m;
}

// A one-answer job cannot overrun its SUB: the window is capped at the
// channel's capacity, so a client that stops reading for a while (its first
// reply's callback sleeps) loses nothing and its job completes, with a
// window option far over the channel. The server answers in batches of up
// to 2 channels' worth (what it gathered, after 20 ms of quiet or at 32):
// uncapped, the client's first batch alone overruns its SUB.
TEST(ClientSlowReader, AOneAnswerJobLosesNoneWhateverItsWindow) {
  constexpr std::uint64_t kMessages = 300;
  constexpr std::size_t kBatch = 2 * GatedEchoServer::kCapacity;
  palm::test::ShmGuard segment(palm::test::unique_name("slowsub1"));
  auto ctx = transport::Context::create(GatedEchoServer::options());
  ASSERT_TRUE(ctx) << ctx.error().describe();
  {
    auto pull = ctx->open(EndpointSpec::bind_to(Pattern::kPull, "shm://" + segment.name() + "/pull"));
    auto pub = ctx->open(EndpointSpec::bind_to(Pattern::kPub, "shm://" + segment.name() + "/pub"));
    ASSERT_TRUE(pull && pub);
    std::atomic<bool> stop{false};  // relaxed: a flag; the server's waits are bounded
    std::thread server([&] {
      const auto end = std::chrono::steady_clock::now() + 20s;
      std::vector<std::pair<std::string, std::string>> batch;  // client, payload
      while (!stop.load(std::memory_order_relaxed) && std::chrono::steady_clock::now() < end) {
        transport::Delivery d;
        const bool got = (*pull)->recv_for(d, 20ms) == WaitResult::kReady;
        if (got) {
          if (auto v = d.frame.view()) {
            batch.emplace_back(std::string(v->message.client), test::string_of(v->message.payload));
          }
        }
        if (batch.size() < kBatch && (got || batch.empty())) continue;
        for (const auto& [client, payload] : batch) {
          MessageView m;
          const std::string out = "echo:" + payload;
          m.client = client;
          m.payload = test::bytes_of(out);
          auto f = ctx->build(m, client);
          ASSERT_TRUE(f);
          EXPECT_EQ((*pub)->send_for(*f, 5s), transport::SendResult::kQueued);
        }
        batch.clear();
      }
    });
    auto c = Client::connect(*ctx, slow_reader_options(segment.name(), "echoing", 20s));
    ASSERT_TRUE(c) << c.error().describe();
    std::uint64_t next = 0, received = 0;
    auto r = (*c)->job(
        "echoing.echo", numbered_payloads(next, kMessages),
        [&](std::string_view) {
          if (received++ == 0) std::this_thread::sleep_for(300ms);  // far past slow_subscriber_wait
        });
    stop.store(true, std::memory_order_relaxed);
    server.join();
    ASSERT_TRUE(r) << r.error().describe();
    EXPECT_EQ(*r, kMessages);
    EXPECT_EQ(received, kMessages);
    EXPECT_EQ((*c)->stats().received, kMessages);
  }
  ctx->shutdown();
}

// While replies the server still holds may come, losses alone do not end the
// job; if it then times out, the message names the losses.
TEST(ClientSlowReader, TimeoutNamesTheLostReplies) {
  constexpr std::uint64_t kMessages = GatedEchoServer::kCapacity;
  constexpr std::uint64_t kReplies = kMessages * GatedEchoServer::kFanout;
  const SlowReaderRun run = run_slow_reader(kMessages, kReplies - 1, 1000ms);  // the last one never answered
  ASSERT_FALSE(run.result) << "the job ended with " << *run.result << " replies";
  EXPECT_EQ(run.result.error().code, Errc::kTimeout) << run.result.error().describe();
  const std::string& m = run.result.error().message;
  EXPECT_NE(m.find("nothing sent or received for 1000 ms"), std::string::npos) << m;
  EXPECT_NE(m.find(fmt::format("{} replies were lost", kReplies - 1 - run.received)), std::string::npos) << m;
}

}  // namespace
}  // namespace palm::servers
