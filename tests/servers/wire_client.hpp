#pragma once
// A bare client of a palm server for the servers' tests: a push and one
// subscription opened by auto-selection, raw frames in and out (the Client
// class is tested on its own).

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>

#include "palm/transport/auto_select.hpp"
#include "palm/transport/context.hpp"
#include "servers_test_util.hpp"

namespace palm::servers::test {

struct Reply {
  std::string topic, payload, error, cache;
  std::int64_t stage = 0;
  std::uint64_t dispatch_id = 0;
};

class WireClient {
 public:
  // Connects to a server's pull and pub addresses (its cache at db decides
  // shm or tcp under `mode`), subscribed to `topic`, then sends `probe`
  // messages until one comes back, so the subscription is in place. The
  // messages' `client` is `client`, or `topic` when empty.
  void connect(transport::Context& ctx, const std::string& pull, const std::string& pub,
               const std::string& db, const std::string& server_name, shm::TransportMode mode,
               std::string topic, const std::string& probe, std::string client = {}) {
    using transport::EndpointSpec;
    using transport::Pattern;
    ctx_ = &ctx;
    transport::AutoOptions o;
    o.mode = mode;
    o.server_name = server_name;
    auto push = transport::open_auto(ctx, EndpointSpec::connect_to(Pattern::kPush, pull), db, o);
    ASSERT_TRUE(push) << push.error().describe();
    auto spec = EndpointSpec::connect_to(Pattern::kSub, pub);
    spec.subscriptions = {topic};
    auto sub = transport::open_auto(ctx, spec, db, o);
    ASSERT_TRUE(sub) << sub.error().describe();
    push_ = std::move(*push);
    sub_ = std::move(*sub);
    client_ = client.empty() ? std::move(topic) : std::move(client);
    for (int i = 0; i < 100; ++i) {
      send("probe", probe);
      ++probes_;
      transport::Delivery d;
      if (sub_->recv_for(d, std::chrono::milliseconds(50)) == WaitResult::kReady) {
        drain();
        return;
      }
    }
    FAIL() << "no reply to any probe";
  }
  void drain() {
    transport::Delivery d;
    while (sub_->recv_for(d, std::chrono::milliseconds(200)) == WaitResult::kReady) {
    }
  }
  void send(std::string_view payload, std::string_view function, std::string_view cache = {},
            std::int64_t stage = 0) {
    MessageView m;
    m.pipeline = "session";
    m.client = client_;
    m.function = function;
    m.stage = stage;
    m.cache = cache;
    m.payload = bytes_of(payload);
    auto frame = ctx_->build(m);
    ASSERT_TRUE(frame);
    ASSERT_EQ(push_->send_for(*frame, std::chrono::seconds(5)), transport::SendResult::kQueued);
  }
  Reply receive(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    transport::Delivery d;
    EXPECT_EQ(sub_->recv_for(d, timeout), WaitResult::kReady);
    Reply r;
    if (!d.frame) return r;
    auto v = d.frame.view();
    r.topic = std::string(v->topic);
    r.payload = string_of(v->message.payload);
    r.error = std::string(v->message.error);
    r.cache = std::string(v->message.cache);
    r.stage = v->message.stage;
    r.dispatch_id = v->message.dispatch_id;
    return r;
  }
  // Probes sent by connect: each counts against a server's messages limit.
  int probes() const noexcept { return probes_; }
  transport::Endpoint& push() { return *push_; }
  transport::Endpoint& sub() { return *sub_; }
  std::unique_ptr<transport::Endpoint> push_, sub_;

 private:
  transport::Context* ctx_ = nullptr;
  std::string client_;
  int probes_ = 0;
};

}  // namespace palm::servers::test
