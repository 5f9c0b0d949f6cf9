// The Worker in a thread of this process, against a master played by the
// test: a CacheService presetting palm's keys (`__palm.dispatch`,
// `__palm.host`, `__palm.shm:<port>`) and kDispatcher endpoints on tcp and
// shm (palm dispatch mode), or pylm's keys and a PUSH/PULL pair (pylm mode).
// Also Worker.set/get/remove on the master's cache. Threads only; the
// master's segment is removed at the end even on failure (ShmGuard).
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "palm/servers/cache_service.hpp"
#include "palm/servers/step.hpp"
#include "palm/servers/worker.hpp"
#include "palm/transport/auto_select.hpp"
#include "palm/transport/shm/host.hpp"
#include "palm/transport/shm/host_identity.hpp"
#include "peer.hpp"
#include "servers_test_util.hpp"

namespace palm::servers {
namespace {

using namespace std::chrono_literals;
using test::bytes_of;
using test::string_of;
using transport::Delivery;
using transport::EndpointSpec;
using transport::Event;
using transport::Pattern;
using transport::PeerId;
using transport::Scheme;
using transport::SendResult;

// A field 20 varint 5: an unknown field a worker must keep.
const std::string kUnknown("\xa0\x01\x05", 3);

// A message as a master dispatches it.
struct Sent {
  std::string function;
  std::string payload;
  std::int64_t stage = 0;
};

Frame make_frame(transport::Context& ctx, const Sent& s, std::uint64_t dispatch_id) {
  MessageView m;
  m.pipeline = "a5f2ffec-3a36-47dc-90b2-aef99d876219";
  m.client = "ff63be28-4c36-44d1-87a7-5e16c404c9dc";
  m.stage = s.stage;
  m.function = s.function;
  m.cache = "0f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b";
  m.payload = bytes_of(s.payload);
  m.dispatch_id = dispatch_id;
  m.flags = 3;
  m.unknown = bytes_of(kUnknown);
  auto f = ctx.build(m);
  EXPECT_TRUE(f) << f.error().describe();
  return f ? std::move(*f) : Frame{};
}

MethodTable test_methods() {
  MethodTable t;
  add_builtin_methods(t);
  t.on("none", [](const Call&) { return Output::none(); });
  // Reads the master's cache through Call::cache (a method's view of it).
  t.on("cached", [](const Call& call) {
    auto v = call.cache->get(call.payload_text());
    return Output(v ? *v : std::string("missing"));
  });
  return t;
}

class WorkerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    auto id = shm::host_identity();
    ASSERT_TRUE(id) << id.error().describe();
    identity_ = *id;
  }
  void TearDown() override {
    if (worker_) worker_->stop();
    if (thread_.joinable()) thread_.join();
    worker_.reset();
    if (cache_) cache_->stop();
  }

  // The cache of the master, with `presets`.
  void start_cache(const std::map<std::string, std::string>& presets) {
    CacheServiceOptions o;
    o.name = "master";
    o.db_address = "tcp://127.0.0.1:*";
    cache_.emplace(master_, o);
    auto r = cache_->start();
    ASSERT_TRUE(r) << r.error().describe();
    cache_->preset_cache(presets);
  }

  // palm dispatch: a tcp and a shm dispatcher, the keys that point at them.
  void start_palm_master() {
    auto t = master_.open(EndpointSpec::bind_to(Pattern::kDispatcher, "tcp://127.0.0.1:*"));
    ASSERT_TRUE(t) << t.error().describe();
    tcp_ = std::move(*t);
    auto s = master_.open(EndpointSpec::bind_to(Pattern::kDispatcher, "shm://" + segment_.name() + "/dispatch"));
    ASSERT_TRUE(s) << s.error().describe();
    shm_ = std::move(*s);
    const std::string address = tcp_->address();
    const std::string port = address.substr(address.rfind(':') + 1);
    transport::ShmService service{segment_.name(), "dispatch",
                                  dynamic_cast<shm::ShmEndpoint&>(*shm_).nonce()};
    // The wildcard host: the worker must use its db_address's host.
    start_cache({{"name", "master"},
                 {std::string(kDispatchKey), "tcp://0.0.0.0:" + port},
                 {std::string(transport::kHostKey), identity_.to_string()},
                 {transport::shm_key(port), service.to_string()}});
  }

  void start_worker(WorkerOptions o) {
    o.db_address = cache_->address();
    worker_ = std::make_unique<Worker>(worker_ctx_, std::move(o), test_methods());
    auto c = worker_->connect();
    ASSERT_TRUE(c) << c.error().describe();
    thread_ = std::thread([this] { run_result_ = worker_->run(); });
  }

  // Waits (bounded) for a worker to join `dispatcher`.
  PeerId wait_joined(transport::Endpoint& dispatcher, std::uint32_t& credits) {
    for (int i = 0; i < 100; ++i) {
      Delivery d;
      if (dispatcher.recv_for(d, 100ms) != WaitResult::kReady) continue;
      if (d.event == Event::kPeerJoined) {
        credits = d.credits;
        return d.peer;
      }
    }
    ADD_FAILURE() << "no worker joined";
    return PeerId::kNone;
  }

  // The next result on `dispatcher` (bounded); an empty Delivery if none.
  Delivery next_result(transport::Endpoint& dispatcher) {
    for (int i = 0; i < 100; ++i) {
      Delivery d;
      if (dispatcher.recv_for(d, 100ms) != WaitResult::kReady) continue;
      if (d.event == Event::kMessage) return d;
    }
    ADD_FAILURE() << "no result";
    return Delivery{};
  }

  // Sends every message to the worker, checks every result, and that the
  // credits came back.
  void dispatch_and_check(transport::Endpoint& dispatcher) {
    std::uint32_t credits = 0;
    const PeerId peer = wait_joined(dispatcher, credits);
    ASSERT_NE(peer, PeerId::kNone);
    EXPECT_EQ(credits, 4u);
    struct Case {
      Sent sent;
      std::string payload;
      bool failed;
    };
    const std::vector<Case> cases = {
        {{"_.echo", "hello"}, "hello", false},
        {{"x.upper", "hello"}, "HELLO", false},
        {{"x.upper", "again"}, "AGAIN", false},  // the same function twice
        // The same function at another stage is another method.
        {{"a.reverse b.upper", "abc", 0}, "cba", false},
        {{"a.reverse b.upper", "abc", 1}, "ABC", false},
        {{"x.fail", "hello"}, "0", true},
        {{"x.nope", "hello"}, "0", true},
        {{"x.nope", "hello"}, "0", true},  // an unknown method stays unknown
        {{"nodot", "hello"}, "0", true},
        {{"a.echo b.echo", "hello", 2}, "0", true},
        {{"x.none", "hello"}, "0", true},
        {{"x.cached", "name"}, "master", false},
        {{"x.upper", "last"}, "LAST", false},  // back to one served before
    };
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      Frame f = make_frame(master_, c.sent, 1000 + i);
      ASSERT_EQ(dispatcher.send_for(f, 5s, {peer}), SendResult::kQueued) << i;
      Delivery d = next_result(dispatcher);
      ASSERT_TRUE(d.frame) << c.sent.function;
      EXPECT_EQ(d.peer, peer);
      auto v = d.frame.view();
      ASSERT_TRUE(v) << v.error().describe();
      const MessageView& m = v->message;
      EXPECT_EQ(string_of(m.payload), c.payload) << c.sent.function;
      EXPECT_EQ(m.dispatch_id, 1000 + i) << c.sent.function;
      EXPECT_EQ(m.function, c.sent.function);
      EXPECT_EQ(m.stage, c.sent.stage);
      EXPECT_EQ(m.pipeline, "a5f2ffec-3a36-47dc-90b2-aef99d876219");
      EXPECT_EQ(m.client, "ff63be28-4c36-44d1-87a7-5e16c404c9dc");
      EXPECT_EQ(m.cache, "0f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b");
      EXPECT_EQ(m.flags, 3u);
      EXPECT_EQ(string_of(m.unknown), kUnknown);
      EXPECT_EQ(m.error.empty(), !c.failed) << c.sent.function << ": " << m.error;
      EXPECT_EQ(m.error.find('\n'), std::string_view::npos);
    }
    // Each result returned its credit (the dispatcher counts it before it
    // delivers the result).
    EXPECT_EQ(dispatcher.credits(peer), 4u);
    // The worker counts a message after its result went out: the last count
    // may trail the last result by a moment.
    for (int i = 0; i < 200 && worker_->stats().messages < cases.size(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const WorkerStats s = worker_->stats();
    EXPECT_EQ(s.messages, cases.size());
    EXPECT_EQ(s.errors.method_threw, 1u);
    EXPECT_EQ(s.errors.unknown_method, 2u);
    EXPECT_EQ(s.errors.bad_step, 2u);
    EXPECT_EQ(s.errors.no_result, 1u);
    EXPECT_EQ(s.errors.lost, 0u);
  }

  palm::test::ShmGuard segment_{palm::test::unique_name("worker")};
  transport::Context master_ = test::make_context();
  transport::Context worker_ctx_ = test::make_context();
  std::unique_ptr<transport::Endpoint> tcp_, shm_;
  std::optional<CacheService> cache_;
  shm::HostIdentity identity_;
  std::unique_ptr<Worker> worker_;
  std::thread thread_;
  Result<void> run_result_;
};

WorkerOptions dispatch_options(shm::TransportMode mode) {
  WorkerOptions o;
  o.name = "w1";
  o.credits = 4;
  o.transport = mode;
  return o;
}

TEST_F(WorkerFixture, PalmDispatchOverShmKeepsFieldsAndReturnsCredits) {
  start_palm_master();
  start_worker(dispatch_options(shm::TransportMode::kShm));
  EXPECT_EQ(worker_->mode(), Worker::Mode::kPalmDispatch);
  EXPECT_EQ(worker_->stats().receive_scheme, Scheme::kShm);
  EXPECT_EQ(worker_->stats().send_scheme, Scheme::kShm);
  dispatch_and_check(*shm_);
}

TEST_F(WorkerFixture, PalmDispatchOverTcpWhenAskedForTcp) {
  start_palm_master();
  start_worker(dispatch_options(shm::TransportMode::kTcp));
  EXPECT_EQ(worker_->mode(), Worker::Mode::kPalmDispatch);
  EXPECT_EQ(worker_->stats().receive_scheme, Scheme::kTcp);
  dispatch_and_check(*tcp_);
}

TEST_F(WorkerFixture, MessagesLimitEndsRunOk) {
  start_palm_master();
  WorkerOptions o = dispatch_options(shm::TransportMode::kShm);
  o.messages = 2;
  start_worker(o);
  std::uint32_t credits = 0;
  const PeerId peer = wait_joined(*shm_, credits);
  ASSERT_NE(peer, PeerId::kNone);
  for (std::uint64_t i = 0; i < 2; ++i) {
    Frame f = make_frame(master_, {"_.echo", "x"}, i + 1);
    ASSERT_EQ(shm_->send_for(f, 5s, {peer}), SendResult::kQueued);
    EXPECT_TRUE(next_result(*shm_).frame);
  }
  thread_.join();
  EXPECT_TRUE(run_result_) << run_result_.error().describe();
  EXPECT_EQ(worker_->stats().messages, 2u);
}

TEST_F(WorkerFixture, StopEndsRunOk) {
  start_palm_master();
  start_worker(dispatch_options(shm::TransportMode::kShm));
  worker_->stop();
  thread_.join();
  EXPECT_TRUE(run_result_) << run_result_.error().describe();
}

// The master's segment goes away: run() returns kPeerDead instead of
// waiting for ever.
TEST_F(WorkerFixture, MasterGoneOnShmEndsRunWithPeerDead) {
  start_palm_master();
  start_worker(dispatch_options(shm::TransportMode::kShm));
  std::uint32_t credits = 0;
  ASSERT_NE(wait_joined(*shm_, credits), PeerId::kNone);
  cache_->stop();
  master_.shutdown();
  thread_.join();
  ASSERT_FALSE(run_result_);
  EXPECT_EQ(run_result_.error().code, Errc::kPeerDead) << run_result_.error().describe();
}

// PROTOCOL.md: "A worker gets `worker_push_address` (pulls from it) and
// `worker_pull_address` (pushes to it) unless given"; "A worker replaces
// only the payload and pushes the message back: b'0' for an unknown method
// or an exception".
TEST_F(WorkerFixture, PylmModeAsksTheCacheAndAnswersOnPush) {
  auto push = master_.open(EndpointSpec::bind_to(Pattern::kPush, "tcp://127.0.0.1:*"));
  ASSERT_TRUE(push) << push.error().describe();
  auto pull = master_.open(EndpointSpec::bind_to(Pattern::kPull, "tcp://127.0.0.1:*"));
  ASSERT_TRUE(pull) << pull.error().describe();
  start_cache({{"name", "master"},
               {"worker_push_address", (*push)->address()},
               {"worker_pull_address", (*pull)->address()}});
  WorkerOptions o;
  o.name = "w2";
  start_worker(o);
  EXPECT_EQ(worker_->mode(), Worker::Mode::kPylm);
  const std::vector<std::pair<Sent, std::string>> cases = {
      {{"_.echo", "hi"}, "hi"}, {{"x.upper", "hi"}, "HI"}, {{"x.fail", "hi"}, "0"}, {{"x.nope", "hi"}, "0"}};
  for (std::size_t i = 0; i < cases.size(); ++i) {
    Frame f = make_frame(master_, cases[i].first, 7 + i);
    ASSERT_EQ((*push)->send_for(f, 5s), SendResult::kQueued);
    Delivery d;
    ASSERT_EQ((*pull)->recv_for(d, 10s), WaitResult::kReady) << i;
    auto v = d.frame.view();
    ASSERT_TRUE(v);
    EXPECT_EQ(string_of(v->message.payload), cases[i].second);
    EXPECT_EQ(v->message.dispatch_id, 7 + i);
    EXPECT_EQ(v->message.function, cases[i].first.function);
  }
}

TEST_F(WorkerFixture, SetGetRemoveUseTheMastersCache) {
  start_cache({{"name", "master"}});
  WorkerOptions o;
  o.db_address = cache_->address();
  Worker w(worker_ctx_, o, MethodTable{});
  auto key = w.set(bytes_of("a value"), "k1");
  ASSERT_TRUE(key) << key.error().describe();
  EXPECT_EQ(*key, "k1");
  EXPECT_EQ(cache_->store().get("k1"), "a value");
  auto value = w.get("k1");
  ASSERT_TRUE(value);
  EXPECT_EQ(*value, "a value");
  auto generated = w.set(bytes_of("v2"));
  ASSERT_TRUE(generated);
  EXPECT_TRUE(test::is_uuid4(*generated)) << *generated;
  EXPECT_EQ(cache_->store().get(*generated), "v2");
  auto removed = w.remove("k1");
  ASSERT_TRUE(removed);
  EXPECT_EQ(*removed, "k1");
  EXPECT_FALSE(cache_->store().contains("k1"));
  auto missing = w.get("k1");
  ASSERT_TRUE(missing);
  EXPECT_EQ(*missing, "");
  EXPECT_TRUE(test::is_uuid4(w.name())) << "an empty name is a uuid4";
  EXPECT_EQ(w.name(), w.uuid());
}

TEST(Worker, NeedsADbAddress) {
  transport::Context ctx = test::make_context();
  Worker w(ctx, WorkerOptions{}, MethodTable{});
  auto r = w.connect();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kInvalidArgument);
}

}  // namespace
}  // namespace palm::servers
