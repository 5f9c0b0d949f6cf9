// Server in-process: methods, pylm's error cases answered b'0' with a reason,
// handle_stream, the messages limit, counters, and a shm client beside a tcp
// one. (Separate processes: server_proc_test.cpp.)
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <set>
#include <stdexcept>
#include <thread>

#include "palm/servers/server.hpp"
#include "palm/transport/auto_select.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/discovery.hpp"
#include "servers_test_util.hpp"
#include "wire_client.hpp"
#include "peer.hpp"

namespace palm::servers {
namespace {

using namespace std::chrono_literals;
using test::bytes_of;
using test::string_of;
using transport::Context;
using transport::Delivery;
using transport::EndpointSpec;
using transport::Pattern;

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = Context::create();
    ASSERT_TRUE(c) << c.error().describe();
    ctx_.emplace(std::move(*c));
  }
  ServerConfig config(std::uint64_t messages = 0, bool pipelined = false) {
    ServerConfig cfg;
    cfg.server.name = palm::test::unique_name("srv");
    cfg.server.db_address = "tcp://127.0.0.1:*";
    cfg.server.log_level = LogLevel::kCritical;
    cfg.pull_address = "tcp://127.0.0.1:*";
    cfg.pub_address = "tcp://127.0.0.1:*";
    cfg.pipelined = pipelined;
    cfg.messages = messages;
    return cfg;
  }
  void connect(Server& server, shm::TransportMode mode, const std::string& topic) {
    client_.connect(*ctx_, server.pull_address(), server.pub_address(), server.db_address(),
                    server.name(), mode, topic, server.name() + ".echo");
  }
  void send(std::string_view payload, std::string_view function, std::string_view cache = {},
            std::int64_t stage = 0) {
    client_.send(payload, function, cache, stage);
  }
  test::Reply receive() { return client_.receive(); }

  std::optional<Context> ctx_;
  test::WireClient client_;
};

TEST_F(ServerTest, MethodsAndEveryErrorCaseAnswerAndTheServerGoesOn) {
  Server server(*ctx_, config());
  server.methods().on("foo", [](const Call& c) { return Output("you sent me " + std::string(c.payload_text())); });
  server.methods().on("boom", [](const Call&) -> Output { throw std::runtime_error("kaput"); });
  server.methods().on("nothing", [](const Call&) { return Output::none(); });
  // The result written straight into the outgoing block.
  server.methods().on("fill", [](const Call& c) {
    const std::string text = "filled:" + std::string(c.payload_text());
    return Output::fill(64, [text](std::span<std::byte> room) {
      std::memcpy(room.data(), text.data(), text.size());
      return text.size();
    });
  });
  server.methods().on("overfill", [](const Call&) {
    return Output::fill(4, [](std::span<std::byte> room) { return room.size() + 1; });
  });
  ASSERT_TRUE(server.start());
  const std::string n = server.name();
  connect(server, shm::TransportMode::kTcp, "client-1");

  send("abc", n + ".foo");
  EXPECT_EQ(receive().payload, "you sent me abc");
  send("abc", n + ".echo");
  EXPECT_EQ(receive().payload, "abc");
  send("abc", n + ".fill");
  EXPECT_EQ(receive().payload, "filled:abc");

  struct Case {
    std::string function;
    std::int64_t stage;
    std::string reason;
    Failure failure;
  };
  const std::vector<Case> cases = {
      {"other.foo", 0, "You called other, instead of " + n, Failure::kWrongServer},
      {n + ".nope", 0, "has no method 'nope'", Failure::kUnknownMethod},
      {"nodot", 0, "not 'server.method'", Failure::kBadStep},
      {n + ".foo " + n + ".foo", 5, "stage 5 is out of range", Failure::kStageOutOfRange},
      {n + ".nothing", 0, "returned nothing", Failure::kNoResult},
      {n + ".boom", 0, "kaput", Failure::kMethodFailed},
  };
  // A filler that claims more than its room: the message's failure.
  send("x", n + ".overfill");
  {
    const test::Reply r = receive();
    EXPECT_EQ(r.payload, "0");
    EXPECT_NE(r.error.find("wrote 5 bytes into room for 4"), std::string::npos) << r.error;
    EXPECT_EQ(server.failures().count(Failure::kMethodFailed), 1u);
  }
  for (const auto& c : cases) {
    send("x", c.function, {}, c.stage);
    const test::Reply r = receive();
    EXPECT_EQ(r.payload, "0") << c.function;
    EXPECT_NE(r.error.find(c.reason), std::string::npos) << c.function << ": " << r.error;
    EXPECT_EQ(r.topic, "client-1");
    EXPECT_EQ(server.failures().count(c.failure), c.failure == Failure::kMethodFailed ? 2u : 1u)
        << c.function;
  }
  // Still serving.
  send("after", n + ".foo");
  EXPECT_EQ(receive().payload, "you sent me after");

  const auto stats = server.stats();
  ASSERT_EQ(stats.size(), 3u);
  EXPECT_EQ(stats[1].name, "exec");
  EXPECT_GE(stats[1].messages_in, 11u);
  EXPECT_EQ(stats[1].errors, 7u);
  EXPECT_GE(stats[1].latency.total(), 11u);
  server.stop();
}

TEST_F(ServerTest, PipelinedPublishesUnderItsNameAtTheNextStage) {
  Server server(*ctx_, config(0, true));
  ASSERT_TRUE(server.start());
  connect(server, shm::TransportMode::kTcp, server.name());
  send("p", server.name() + ".echo next.step", {}, 0);
  const test::Reply r = receive();
  EXPECT_EQ(r.topic, server.name());
  EXPECT_EQ(r.stage, 1);
  EXPECT_EQ(r.payload, "p");
}

class StreamServer : public Server {
 public:
  using Server::Server;
  ~StreamServer() override { stop(); }  // the exec part calls handle_stream
  void handle_stream(const MessageView& m, StreamEdit& edit) override {
    const bool even = !m.payload.empty() && (static_cast<int>(m.payload[0]) % 2 == 0);
    edit.topic = even ? "even" : "odd";
  }
};

TEST_F(ServerTest, HandleStreamPicksTheTopic) {
  StreamServer server(*ctx_, config());
  ASSERT_TRUE(server.start());
  connect(server, shm::TransportMode::kTcp, "");  // every topic
  send("2", server.name() + ".echo");
  EXPECT_EQ(receive().topic, "even");
  send("3", server.name() + ".echo");
  EXPECT_EQ(receive().topic, "odd");
}

TEST_F(ServerTest, AShmClientAndATcpClientAtOnce) {
  Server server(*ctx_, config());
  ASSERT_TRUE(server.start());
  ASSERT_FALSE(server.segment().empty());
  palm::test::ShmGuard guard(server.segment());
  connect(server, shm::TransportMode::kShm, "shm-client");
  EXPECT_EQ(client_.push().scheme(), transport::Scheme::kShm);
  EXPECT_EQ(client_.sub().scheme(), transport::Scheme::kShm);
  std::set<std::string> got;
  for (int i = 0; i < 200; ++i) send(std::to_string(i), server.name() + ".echo");
  for (int i = 0; i < 200; ++i) got.insert(receive().payload);
  EXPECT_EQ(got.size(), 200u);

  auto shm_push = std::move(client_.push_);
  auto shm_sub = std::move(client_.sub_);
  connect(server, shm::TransportMode::kTcp, "tcp-client");
  EXPECT_EQ(client_.push().scheme(), transport::Scheme::kTcp);
  send("t", server.name() + ".echo");
  EXPECT_EQ(receive().payload, "t");
  server.stop();
}

TEST_F(ServerTest, TheMessagesLimitStopsTheServer) {
  constexpr int kLimit = 40;
  Server server(*ctx_, config(kLimit));
  ASSERT_TRUE(server.start());
  connect(server, shm::TransportMode::kTcp, "c");
  const int left = kLimit - client_.probes();  // every probe counts
  ASSERT_GT(left, 0);
  for (int i = 0; i < left; ++i) send("m", server.name() + ".echo");
  for (int i = 0; i < left; ++i) EXPECT_EQ(receive().payload, "m");
  EXPECT_TRUE(server.wait(5s));
  server.stop();
}

// The value of `key=` in the line of `text` that starts with `line_start`;
// -1 if there is none.
long long stat_of(const std::string& text, const std::string& line_start, const std::string& key) {
  std::size_t at = text.find("\n" + line_start);
  if (at == std::string::npos) return -1;
  const std::size_t end = text.find('\n', at + 1);
  const std::string line = text.substr(at + 1, end - at - 1);
  const std::size_t k = line.find(" " + key + "=");
  if (k == std::string::npos) return -1;
  return std::stoll(line.substr(k + key.size() + 2));
}

TEST_F(ServerTest, ItsLiveCountersAnswerAGetOfTheStatsKey) {
  Server server(*ctx_, config());
  ASSERT_TRUE(server.start());
  connect(server, shm::TransportMode::kTcp, "c");
  for (int i = 0; i < 7; ++i) send("m", server.name() + ".echo");
  for (int i = 0; i < 7; ++i) EXPECT_EQ(receive().payload, "m");

  auto db = transport::DiscoveryClient::connect(*ctx_, server.db_address());
  ASSERT_TRUE(db) << db.error().describe();
  auto text = db->get(kStatsKey, 5s);
  ASSERT_TRUE(text) << text.error().describe();
  EXPECT_TRUE(text->starts_with("server " + server.name() + "\n")) << *text;
  const long long in = stat_of(*text, "part inbound ", "in");
  EXPECT_EQ(in, 7 + client_.probes()) << *text;  // every probe is a message too
  EXPECT_EQ(stat_of(*text, "part inbound ", "errors"), 0) << *text;
  EXPECT_GE(stat_of(*text, "part outbound ", "out"), 7) << *text;
  // What stats_text() says here, line for line (the counters may have moved: names only).
  const auto names = [](const std::string& t) {
    std::vector<std::string> out;
    for (std::size_t at = 0; at < t.size();) {
      const std::size_t nl = t.find('\n', at);
      const std::string line = t.substr(at, nl - at);
      out.push_back(line.substr(0, line.find(' ', line.find(' ') + 1)));
      at = nl == std::string::npos ? t.size() : nl + 1;
    }
    return out;
  };
  EXPECT_EQ(names(*text), names(server.stats_text()));
  EXPECT_EQ(names(*text).size(), 4u) << *text;  // server, then its parts: inbound, exec, outbound
  EXPECT_NE(text->find("p99_us="), std::string::npos) << *text;

  // The wire cannot set it (a reserved key), and it stays live.
  const std::string fake = "server forged\n";
  auto set = db->request("set", kStatsKey, std::as_bytes(std::span(fake.data(), fake.size())), 5s);
  ASSERT_TRUE(set) << set.error().describe();
  EXPECT_EQ(*set, "");
  for (int i = 0; i < 3; ++i) send("m", server.name() + ".echo");
  for (int i = 0; i < 3; ++i) EXPECT_EQ(receive().payload, "m");
  auto again = db->get(kStatsKey, 5s);
  ASSERT_TRUE(again) << again.error().describe();
  EXPECT_EQ(stat_of(*again, "part inbound ", "in"), in + 3) << *again;
  server.stop();
}

}  // namespace
}  // namespace palm::servers
