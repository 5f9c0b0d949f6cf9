#pragma once
// The transport pattern suite, parameterized on the endpoint scheme. Included
// by zmq_patterns_test.cpp (inproc: the peers are threads sharing the test's
// Context; run under TSan too) and zmq_patterns_proc_test.cpp (tcp, ipc: the
// peers are processes, fork + exec of the test binary) and
// shm_patterns_proc_test.cpp (shm: processes attaching to the test's segment
// by name, with PALM_TRANSPORT=shm; every role checks its endpoints are on
// the transport that mode requires, and the test checks the per-peer
// counters of its shm endpoints).
//
// TransportPatterns and TransportPushPull hold what every transport carries;
// TransportZmqPatterns what only ZeroMQ does (request/reply and the cache,
// raw libzmq peers): the shm suite does not instantiate it.
//
// Peers ("roles") report what they received over a PUSH to the test's PULL,
// and stop when the test publishes on a control PUB; the test waits for
// their subscriptions (XPUB subscribe messages) before publishing, never
// sleeps to synchronize. Every loop is bounded in count and time.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "palm/transport/context.hpp"
#include "palm/transport/discovery.hpp"
#include "palm/transport/endpoint.hpp"
#include "palm/transport/shm/host.hpp"
#include "palm/transport/shm/host_identity.hpp"
#include "palm/transport/zmq/raw_context.hpp"
#include "peer.hpp"
#include "zmq_test_util.hpp"

namespace palm::transport::test {

using Clock = std::chrono::steady_clock;

// ---- roles: run as a thread (inproc) or a process (tcp, ipc) ---------------

struct RoleEnv {
  Context& ctx;
  std::vector<std::string> args;
  const std::atomic<bool>* vanish = nullptr;  // threads: set to make the role vanish
  bool vanished() const { return vanish != nullptr && vanish->load(std::memory_order_relaxed); }
};
using RoleMain = int (*)(RoleEnv&);

inline std::map<std::string, RoleMain>& role_registry() {
  static std::map<std::string, RoleMain> roles;
  return roles;
}
inline bool register_role(const char* name, RoleMain fn) {
  role_registry().emplace(name, fn);
  return true;
}
inline int run_role(RoleMain fn, RoleEnv& env) {
  try {
    return fn(env);
  } catch (const std::exception& e) {  // an open that failed (.value())
    std::fprintf(stderr, "role failed: %s\n", e.what());
    return 99;
  }
}

// The options of every context of the suite (the test's and the peers').
inline ContextOptions suite_options() {
  ContextOptions o;
  o.pool.set_blocks(256, 8192).set_blocks(512, 8192);
  o.transport.queue_capacity = 256;
  return o;
}

// Defines a role usable both ways: registered for threads and as a test peer
// (a process that makes its own Context).
#define PALM_TRANSPORT_ROLE(name)                                                         \
  static int transport_role_##name(::palm::transport::test::RoleEnv& env);                \
  [[maybe_unused]] static const bool transport_role_reg_##name =                          \
      ::palm::transport::test::register_role(#name, &transport_role_##name);              \
  PALM_TEST_PEER(name) {                                                                  \
    auto ctx = ::palm::transport::Context::create(::palm::transport::test::suite_options()); \
    if (!ctx) return 98;                                                                  \
    ::palm::transport::test::RoleEnv env{*ctx, args, nullptr};                            \
    return ::palm::transport::test::run_role(&transport_role_##name, env);                \
  }                                                                                       \
  static int transport_role_##name([[maybe_unused]] ::palm::transport::test::RoleEnv& env)

// Starts roles as threads (inproc) or processes; kills and joins them at the
// end of its scope. Declare it after the endpoints it uses: it goes first.
class Peers {
 public:
  Peers(Scheme scheme, Context& ctx) : threads_(scheme == Scheme::kInproc), ctx_(ctx) {}
  ~Peers() {
    for (std::size_t i = 0; i < entries_.size(); ++i) kill(i);
    for (auto& e : entries_) {
      if (e->thread.joinable()) e->thread.join();
    }
  }
  Peers(const Peers&) = delete;  // owns threads and children
  Peers& operator=(const Peers&) = delete;

  std::size_t start(const std::string& role, std::vector<std::string> args) {
    auto e = std::make_unique<Entry>();
    if (!threads_) {
      e->child.emplace(palm::test::spawn_peer(role, args));
    } else {
      const RoleMain fn = role_registry().at(role);
      std::promise<int> done;
      e->done = done.get_future();
      e->thread = std::thread([this, fn, args = std::move(args), flag = &e->vanish,
                               done = std::move(done)]() mutable {
        RoleEnv env{ctx_, std::move(args), flag};
        done.set_value(run_role(fn, env));
      });
    }
    entries_.push_back(std::move(e));
    return entries_.size() - 1;
  }

  // SIGKILL (processes); the vanish flag (threads: the role returns at once,
  // its endpoints close without a goodbye of its own).
  void kill(std::size_t i) {
    Entry& e = *entries_.at(i);
    if (e.child) {
      e.child->kill_and_reap();
    } else {
      e.vanish.store(true, std::memory_order_relaxed);
    }
  }

  // The role's exit code (-signal if killed), or nullopt if it still runs
  // after `timeout`.
  std::optional<int> exit_code(std::size_t i, std::chrono::milliseconds timeout) {
    Entry& e = *entries_.at(i);
    if (e.child) return e.child->exit_code_within(timeout);
    if (e.done.valid()) {
      if (e.done.wait_for(timeout) != std::future_status::ready) return std::nullopt;
      e.code = e.done.get();
    }
    return e.code;
  }

 private:
  struct Entry {
    std::optional<palm::test::Child> child;
    std::thread thread;
    std::atomic<bool> vanish{false};
    std::future<int> done;
    std::optional<int> code;
  };
  bool threads_;
  Context& ctx_;
  std::vector<std::unique_ptr<Entry>> entries_;
};

// True if every endpoint is on the transport PALM_TRANSPORT requires: shm
// (the shm suite sets it) or tcp (anything but shm). A role returns 90
// otherwise, so a fallback fails the test.
inline bool on_required_transport(std::initializer_list<const Endpoint*> eps) {
  auto mode = shm::transport_mode_from_env();
  if (!mode) return false;
  for (const Endpoint* ep : eps) {
    const bool on_shm = ep->scheme() == Scheme::kShm;
    if (*mode == shm::TransportMode::kShm && !on_shm) return false;
    if (*mode == shm::TransportMode::kTcp && on_shm) return false;
  }
  return true;
}
constexpr int kWrongTransport = 90;

// Sends a report (client = id, function = kind, payload = seq).
inline bool report(Context& ctx, Endpoint& results, const std::string& id, const char* kind,
                   std::uint64_t seq) {
  Frame f = make_msg(ctx, id, kind, seq);
  return results.send_for(f, 10s) == SendResult::kQueued;
}

// consumer PUSH_ADDR RESULTS_ADDR CONTROL_ADDR ID: pulls, reports "got" per
// message; "end" and exit 0 on any control message.
PALM_TRANSPORT_ROLE(consumer) {
  Context& ctx = env.ctx;
  const auto& a = env.args;
  Doorbell bell;  // before the endpoints: they ring it until they close
  auto pull = ctx.open(EndpointSpec::connect_to(Pattern::kPull, a.at(0))).value();
  auto results = ctx.open(EndpointSpec::connect_to(Pattern::kPush, a.at(1))).value();
  auto control = ctx.open(sub_spec(a.at(2), {""})).value();
  if (!on_required_transport({pull.get(), results.get(), control.get()})) return kWrongTransport;
  pull->set_doorbell(&bell);
  control->set_doorbell(&bell);
  const std::string& id = a.at(3);
  if (!report(ctx, *results, id, "hello", 0)) return 2;
  Endpoint* const eps[] = {pull.get(), control.get()};
  for (const auto deadline = Clock::now() + 60s; Clock::now() < deadline;) {
    if (env.vanished()) return 137;
    Delivery d;
    std::size_t which = 0;
    if (wait_any(bell, eps, d, which, 50ms) != WaitResult::kReady) continue;
    if (which == 1) return report(ctx, *results, id, "end", 0) ? 0 : 3;
    auto m = read_msg(d);
    if (!m) return 4;
    if (!report(ctx, *results, id, "got", m->seq)) return 5;
  }
  return 6;
}

// subscriber PUB_ADDR RESULTS_ADDR ID PREFIX...: reports "got" per message;
// "end" and exit 0 on topic "$end".
PALM_TRANSPORT_ROLE(subscriber) {
  Context& ctx = env.ctx;
  const auto& a = env.args;
  std::vector<std::string> prefixes(a.begin() + 3, a.end());
  prefixes.push_back("$end");
  auto sub = ctx.open(sub_spec(a.at(0), prefixes)).value();
  auto results = ctx.open(EndpointSpec::connect_to(Pattern::kPush, a.at(1))).value();
  if (!on_required_transport({sub.get(), results.get()})) return kWrongTransport;
  const std::string& id = a.at(2);
  for (const auto deadline = Clock::now() + 60s; Clock::now() < deadline;) {
    if (env.vanished()) return 137;
    Delivery d;
    if (sub->recv_for(d, 50ms) != WaitResult::kReady) continue;
    auto m = read_msg(d);
    if (!m) return 4;
    if (m->topic == "$end") return report(ctx, *results, id, "end", 0) ? 0 : 3;
    if (!report(ctx, *results, id, "got", m->seq)) return 5;
  }
  return 6;
}

// requester REP_ADDR COUNT: COUNT requests, each answered raw "echo:<seq>".
PALM_TRANSPORT_ROLE(requester) {
  Context& ctx = env.ctx;
  auto req = ctx.open(EndpointSpec::connect_to(Pattern::kReq, env.args.at(0))).value();
  const int count = std::stoi(env.args.at(1));
  for (int i = 0; i < count && !env.vanished(); ++i) {
    Frame f = make_msg(ctx, "requester", "q", static_cast<std::uint64_t>(i));
    Envelope to;
    to.peer = static_cast<PeerId>(i + 1);
    if (req->send_for(f, 10s, to) != SendResult::kQueued) return 2;
    Delivery d;
    if (req->recv_for(d, 10s) != WaitResult::kReady) return 3;
    if (d.body != Body::kRaw || d.peer != to.peer) return 4;
    auto v = d.frame.view();
    if (!v || string_of(v->message.payload) != concat("echo:", i)) return 5;
  }
  return 0;
}

// discoverer DB_ADDR: asks a cache like a pylm Client of "my_server".
PALM_TRANSPORT_ROLE(discoverer) {
  auto client = DiscoveryClient::connect(env.ctx, env.args.at(0), "my_server").value();
  // The server holds this one past our timeout; the socket must go on.
  auto slow = client.get("slow", 300ms);
  if (slow || slow.error().code != Errc::kTimeout) return 2;
  auto name = client.get("name", 10s);
  if (!name || *name != "my_server") return 3;
  auto missing = client.get("missing", 10s);
  if (!missing || !missing->empty()) return 4;
  return 0;
}

// worker DISPATCH_ADDR CONTROL_ADDR ID CREDITS: holds what it is sent until
// the control says "go" (so the dispatcher can see its credits run out), then
// answers each message with a "result" of the same seq; exits 0 on "stop".
PALM_TRANSPORT_ROLE(worker) {
  Context& ctx = env.ctx;
  const auto& a = env.args;
  Doorbell bell;
  EndpointSpec spec = EndpointSpec::connect_to(Pattern::kWorker, a.at(0));
  spec.credits = static_cast<std::uint32_t>(std::stoul(a.at(3)));
  auto w = ctx.open(spec).value();
  auto control = ctx.open(sub_spec(a.at(1), {""})).value();
  if (!on_required_transport({w.get(), control.get()})) return kWrongTransport;
  w->set_doorbell(&bell);
  control->set_doorbell(&bell);
  const std::string& id = a.at(2);
  bool go = false;
  std::vector<std::uint64_t> held;
  const auto answer = [&](std::uint64_t seq) {
    Frame f = make_msg(ctx, id, "result", seq);
    return w->send_for(f, 10s) == SendResult::kQueued;
  };
  Endpoint* const eps[] = {w.get(), control.get()};
  for (const auto deadline = Clock::now() + 60s; Clock::now() < deadline;) {
    if (env.vanished()) return 137;
    Delivery d;
    std::size_t which = 0;
    if (wait_any(bell, eps, d, which, 50ms) != WaitResult::kReady) continue;
    auto m = read_msg(d);
    if (!m) return 4;
    if (which == 1) {
      if (m->function == "stop") return 0;
      go = true;
      for (std::uint64_t seq : held) {
        if (!answer(seq)) return 5;
      }
      held.clear();
      continue;
    }
    if (!go) {
      held.push_back(m->seq);
    } else if (!answer(m->seq)) {
      return 6;
    }
  }
  return 7;
}

// ---- the suite -------------------------------------------------------------

inline std::string scheme_name(const ::testing::TestParamInfo<Scheme>& info) {
  return to_string(info.param);
}

class TransportBase : public ::testing::Test {
 protected:
  void start(Scheme s) {
    scheme_ = s;
    // Inproc peers share this context's pool: small queues and more small
    // blocks keep every ring of every peer within it.
    auto c = Context::create(suite_options());
    ASSERT_TRUE(c) << c.error().describe();
    ctx_.emplace(std::move(*c));
  }
  Context& ctx() { return *ctx_; }
  Scheme scheme() const { return scheme_; }
  std::string addr(const std::string& name) {
    if (scheme_ == Scheme::kShm) return "shm://" + segment_.name() + "/" + name;
    return bind_address(scheme_, dir_, name);
  }
  std::unique_ptr<Endpoint> bind(Pattern p, const std::string& name) {
    return open_or_fail(ctx(), EndpointSpec::bind_to(p, addr(name)));
  }
  // Publishes a control message with `function` (roles act on it).
  void publish_control(Endpoint& control, const char* function) {
    Frame f = make_msg(ctx(), "test", function, 0, "ctl");
    EXPECT_EQ(control.send_for(f, 10s), SendResult::kQueued);
  }

  // shm: the endpoints' transport counters. Each bound endpoint must have
  // `peers` peers attached, all on shm, which carried at least `out`
  // messages to them and `in` from them. Other schemes: nothing to check.
  // (nullopt peers: any number, e.g. while a killed one is being discarded.)
  void expect_carried_by_shm(Endpoint& ep, std::optional<std::size_t> peers, std::uint64_t out,
                             std::uint64_t in) {
    if (scheme_ != Scheme::kShm) return;
    auto* s = dynamic_cast<shm::ShmEndpoint*>(&ep);
    ASSERT_NE(s, nullptr) << ep.address() << " is not a shm endpoint";
    const auto status = s->peer_status();
    if (peers) {
      EXPECT_EQ(status.size(), *peers) << ep.address();
    }
    std::uint64_t sent = 0, received = 0;
    for (const auto& p : status) {
      EXPECT_STREQ(p.transport, "shm") << ep.address() << " peer " << p.pid;
      sent += p.messages_out;
      received += p.messages_in;
    }
    EXPECT_GE(sent, out) << ep.address();
    EXPECT_GE(received, in) << ep.address();
  }

  Scheme scheme_ = Scheme::kInproc;
  TempDir dir_;  // ipc sockets; removed after the context closed them
  // shm: this test's segment (the context creates it on the first bind and
  // removes it at shutdown; the guard unlinks it if the test crashed).
  palm::test::ShmGuard segment_{palm::test::unique_name("suite")};
  std::optional<Context> ctx_;
};

class TransportPatterns : public TransportBase, public ::testing::WithParamInterface<Scheme> {
 protected:
  void SetUp() override { start(GetParam()); }
};

// What only ZeroMQ carries: request/reply (the cache), raw libzmq peers.
class TransportZmqPatterns : public TransportPatterns {};

// push/pull with 1..4 consumers.
class TransportPushPull : public TransportBase,
                          public ::testing::WithParamInterface<std::tuple<Scheme, int>> {
 protected:
  void SetUp() override { start(std::get<0>(GetParam())); }
  int consumers() const { return std::get<1>(GetParam()); }
};

inline std::string push_pull_name(const ::testing::TestParamInfo<std::tuple<Scheme, int>>& info) {
  return std::string(to_string(std::get<0>(info.param))) + "_" +
         std::to_string(std::get<1>(info.param));
}

// Receives from `ep` until done() or `limit`, calling on(msg) for each.
template <class On, class Done>
void collect(Endpoint& ep, On on, Done done, std::chrono::seconds limit = 30s) {
  for (const auto deadline = Clock::now() + limit; !done() && Clock::now() < deadline;) {
    Delivery d;
    if (ep.recv_for(d, 50ms) != WaitResult::kReady) continue;
    if (auto m = read_msg(d)) on(*m);
  }
}

// send_for on `out`, draining `results` into on() while it waits (so the
// peers' reports never back up into what we send).
template <class On>
bool send_draining(Endpoint& out, Frame& f, Endpoint& results, On on,
                   std::chrono::seconds limit = 30s) {
  for (const auto deadline = Clock::now() + limit; Clock::now() < deadline;) {
    const SendResult r = out.send_for(f, 10ms);
    if (r == SendResult::kQueued) return true;
    if (r != SendResult::kTimeout) return false;
    Delivery d;
    for (int i = 0; i < 1024 && results.try_recv(d); ++i) {
      if (auto m = read_msg(d)) on(*m);
    }
  }
  return false;
}

}  // namespace palm::transport::test

#include "pattern_suite_tests.hpp"
