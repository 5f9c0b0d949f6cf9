// The cache service against a raw ZeroMQ REQ socket playing pylm's Client and
// Worker: pylm's golden frames byte for byte (PROTOCOL.md "Cache service",
// golden/README.md), the faults pylm dies on, reserved keys, the messages
// limit. Threads only: the service's thread and the Context's bridge.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <sstream>
#include <string>
#include <thread>

#include <spdlog/sinks/ostream_sink.h>

#include "palm/servers/cache_service.hpp"
#include "servers_test_util.hpp"

namespace palm::servers {
namespace {

using namespace std::chrono_literals;
using test::golden;
using test::RawReq;
using test::request;

class CacheServiceTest : public ::testing::Test {
 protected:
  void start(std::uint64_t messages = 0) {
    CacheServiceOptions o;
    o.name = "my_server";
    o.db_address = "tcp://127.0.0.1:*";
    o.messages = messages;
    service_.emplace(ctx_, o, nullptr,
                     make_logger("my_server", LogLevel::kDebug,
                                 std::make_shared<spdlog::sinks::ostream_sink_mt>(log_)));
    auto r = service_->start();
    ASSERT_TRUE(r) << r.error().describe();
    ASSERT_NE(service_->address().find("tcp://127.0.0.1:"), std::string::npos);
    ASSERT_EQ(service_->address().find('*'), std::string::npos);
  }
  CacheService& service() { return *service_; }
  std::string log() const { return log_.str(); }

  transport::Context ctx_ = test::make_context();
  std::ostringstream log_;  // written by the service's thread; read after stop()
  std::optional<CacheService> service_;
};

// golden/README.md: a pylm Client asks a Server's cache for `name`,
// `pub_address`, `pull_address`, sets, gets and deletes; a Worker asks a
// Master's for `worker_push_address` and `worker_pull_address`. Replies are
// raw bytes. palm, preset with the values those pylm servers had, answers
// each golden request with the golden reply.
TEST_F(CacheServiceTest, AnswersEveryGoldenRequestWithTheGoldenReply) {
  start();
  std::map<std::string, std::string> preset;
  preset["name"] = golden("cache_client_get_name.reply");
  preset["pub_address"] = golden("cache_client_get_pub_address.reply");
  preset["pull_address"] = golden("cache_client_get_pull_address.reply");
  preset["worker_push_address"] = golden("cache_worker_get_worker_push_address.reply");
  preset["worker_pull_address"] = golden("cache_worker_get_worker_pull_address.reply");
  service().preset_cache(preset);
  ASSERT_EQ(preset["name"], "my_server");

  RawReq req(service().address());
  ASSERT_TRUE(req.connected());
  // In the order pylm sent them: get_key after set_key, get_missing and
  // delete after.
  const char* const exact[] = {
      "cache_client_get_name",       "cache_client_get_pub_address",
      "cache_client_get_pull_address", "cache_worker_get_worker_push_address",
      "cache_worker_get_worker_pull_address", "cache_client_set_key",
      "cache_client_get_key",        "cache_client_delete_key",
      "cache_client_get_missing_key", "cache_client_session_set_key",
      "cache_client_set_nonascii_key"};
  for (const char* name : exact) {
    const std::string want = golden(std::string(name) + ".reply");
    const auto got = req.ask(golden(std::string(name) + ".request"));
    ASSERT_TRUE(got) << name;
    EXPECT_EQ(*got, want) << name;
  }
  EXPECT_FALSE(service().store().contains("my_key"));  // deleted
  EXPECT_EQ(service().store().get("my_sessionmy_key"), "a value");

  // The generated key: random per run; a uuid4 under which the value sits.
  const auto key = req.ask(golden("cache_client_set_generated_key.request"));
  ASSERT_TRUE(key);
  EXPECT_EQ(key->size(), golden("cache_client_set_generated_key.reply").size());
  EXPECT_TRUE(test::is_uuid4(*key)) << *key;
  EXPECT_EQ(service().store().get(*key), "a value");

  const CacheStats s = service().stats();
  EXPECT_EQ(s.requests, 12u);
  EXPECT_EQ(s.gets, 7u);
  EXPECT_EQ(s.sets, 4u);
  EXPECT_EQ(s.deletes, 1u);
  EXPECT_EQ(s.errors, 0u);
  EXPECT_EQ(s.undecodable, 0u);
}

// PROTOCOL.md: "pylm's cache thread dies (the requester hangs) on `delete`
// of a missing key, a `function` without '.', or an undecodable request;
// palm always answers." Each gets b'', and the next request is served.
TEST_F(CacheServiceTest, AnswersEmptyToWhatPylmDiesOnAndGoesOn) {
  start();
  service().preset_cache({{"k", "v"}});
  RawReq req(service().address());
  const std::string faults[] = {
      request("my_server.delete", "missing_key"),
      request("get", "k"),                            // no '.'
      std::string("\xff\xff\xff garbage", 12),         // not a PalmMessage
      std::string("\x22\x02\xc3\x28", 4),              // function not utf-8
      request("my_server.get", "\xc3\x28"),           // a key not utf-8
      request("my_server.delete", "\xc3\x28"),
      request("my_server.frobnicate", "k"),           // unknown instruction
      request("my_server.", "k"),
      request("my_server.set.get", "k"),              // split('.')[1] == "set"
  };
  int i = 0;
  for (const std::string& f : faults) {
    const auto got = req.ask(f);
    ASSERT_TRUE(got) << "fault " << i;
    if (i == 8) {
      EXPECT_TRUE(test::is_uuid4(*got)) << *got;  // a set with a generated key
    } else {
      EXPECT_EQ(*got, "") << "fault " << i;
    }
    const auto next = req.ask(request("my_server.get", "k"));
    ASSERT_TRUE(next) << "after fault " << i;
    EXPECT_EQ(*next, "v") << "after fault " << i;
    ++i;
  }
  const CacheStats s = service().stats();
  EXPECT_EQ(s.errors, 4u);       // missing delete, no '.', 2 keys not utf-8
  EXPECT_EQ(s.undecodable, 2u);  // garbage, function not utf-8
  EXPECT_EQ(s.others, 3u);       // no '.', frobnicate, ''
  EXPECT_EQ(s.requests, 7u + 9u);
  service().stop();
  EXPECT_NE(log().find(" - my_server - WARNING - Cache Service: delete of a missing key"),
            std::string::npos)
      << log();
  EXPECT_NE(log().find("a function without '.'"), std::string::npos) << log();
}

// Reserved keys: palm's own announcements cannot be changed from the wire;
// preset_cache sets them.
TEST_F(CacheServiceTest, ReservedKeysCannotBeSetOrDeletedFromTheWire) {
  start();
  service().preset_cache({{"__palm.shm:5555", "palm-seg-1"}});
  service().reserved().reserve("name");
  service().preset_cache({{"name", "my_server"}});
  RawReq req(service().address());
  EXPECT_EQ(req.ask(request("my_server.set", "hijack", "__palm.shm:5555")), "");
  EXPECT_EQ(req.ask(request("my_server.delete", "__palm.shm:5555")), "");
  EXPECT_EQ(req.ask(request("my_server.set", "other", "name")), "");
  EXPECT_EQ(req.ask(request("_.set", "new", "__palm.new")), "");
  EXPECT_EQ(req.ask(request("my_server.get", "__palm.shm:5555")), "palm-seg-1");
  EXPECT_EQ(req.ask(request("my_server.get", "name")), "my_server");
  EXPECT_FALSE(service().store().contains("__palm.new"));
  EXPECT_EQ(service().stats().refused, 4u);
  service().stop();
  EXPECT_NE(log().find("WARNING - Cache Service: refused set of reserved key __palm.shm:5555"),
            std::string::npos)
      << log();
}

// PROTOCOL.md "`messages` limits": start(cache_messages=N) stops after N.
TEST_F(CacheServiceTest, StopsAfterItsMessagesLimit) {
  start(3);
  {
    RawReq req(service().address());
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(req.ask(request("my_server.set", "v", "k" + std::to_string(i))),
                "k" + std::to_string(i));
    }
  }
  ASSERT_TRUE(service().wait_finished(10s));
  EXPECT_EQ(service().stats().requests, 3u);
  EXPECT_EQ(service().store().size(), 3u);
  // The fourth request is not answered (the endpoint is closed); bounded.
  RawReq late(service().address(), 200);
  EXPECT_FALSE(late.ask(request("my_server.get", "k0")).has_value());
}

TEST_F(CacheServiceTest, StopIsIdempotentAndStartTwiceFails) {
  start();
  EXPECT_FALSE(service().start());
  service().stop();
  service().stop();
  EXPECT_TRUE(service().finished());
}

TEST_F(CacheServiceTest, ManyRequestersAreAllAnswered) {
  start();
  constexpr int kThreads = 4;
  constexpr int kEach = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t] {
      RawReq req(service().address());
      for (int i = 0; i < kEach; ++i) {
        const std::string key = std::to_string(t) + "." + std::to_string(i);
        EXPECT_EQ(req.ask(request("c.set", key, key)), key);
        EXPECT_EQ(req.ask(request("c.get", key)), key);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(service().stats().requests, static_cast<std::uint64_t>(kThreads * kEach * 2));
}

// handle() is the whole table without sockets.
TEST_F(CacheServiceTest, HandleFollowsTheTable) {
  start();
  MessageView set;
  set.function = "s.set";
  set.cache = "key";
  set.payload = test::bytes_of("value");
  EXPECT_EQ(service().handle(set), "key");
  MessageView get;
  get.function = "s.get";
  get.payload = test::bytes_of("key");
  EXPECT_EQ(service().handle(get), "value");
  MessageView del;
  del.function = "s.delete";
  del.payload = test::bytes_of("key");
  EXPECT_EQ(service().handle(del), "key");
  EXPECT_EQ(service().handle(get), "");
  EXPECT_EQ(service().handle(del), "");  // missing: a fault, answered b''
  EXPECT_EQ(service().stats().errors, 1u);
}

}  // namespace
}  // namespace palm::servers
