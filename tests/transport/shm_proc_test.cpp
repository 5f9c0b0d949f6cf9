// The shm transport across processes: peers attach to a server's segment by
// name, push/pull to 1..4 consumer processes (each message exactly once),
// pub/sub fan-out with topic filtering, dispatcher/worker with credits, a
// peer SIGKILLed while holding blocks (its blocks come back, its channels
// go, the others go on), a restarted server that is not confused with the
// dead one (nonce), and host identity across pid namespaces.
//
// Children report through the segment itself: each binds to a "results"
// pull service of the test's host and pushes what it received.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "palm/transport/shm/host.hpp"
#include "palm/transport/shm/host_identity.hpp"
#include "peer.hpp"
#include "shm_test_util.hpp"

namespace palm::shm {
namespace {

using namespace std::chrono_literals;
using palm::test::Child;
using palm::test::Pipe;
using palm::test::ShmGuard;
using palm::test::spawn_peer;
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

constexpr auto kChildExit = 20s;
constexpr std::uint64_t kReady = ~std::uint64_t{0};

int fail(const char* what, const Error& e) {
  std::fprintf(stderr, "peer: %s: %s\n", what, e.describe().c_str());
  return 2;
}

void write_line(int fd, const std::string& s) {
  const std::string line = s + "\n";
  static_cast<void>(::write(fd, line.data(), line.size()));
}

ConnectOptions to(const char* service, std::uint64_t nonce = 0) {
  ConnectOptions o;
  o.service = service;
  o.nonce = nonce;
  return o;
}

// Forwards `id` to the test's results service, tagged with `who`.
bool report(ShmEndpoint& results, std::uint64_t id, const std::string& who, const std::string& topic = {}) {
  auto f = numbered(results, id, who, topic);
  return f && results.send_for(*f, 10s, {}) == SendResult::kQueued;
}

// ---- peer roles ------------------------------------------------------------------

// args: segment, nonce, name. Pulls from "work", reports each id, until the
// host shuts down.
PALM_TEST_PEER(puller) {
  auto work = connect(args.at(0), Pattern::kPull, to("work", std::stoull(args.at(1))));
  if (!work) return fail("connect work", work.error());
  auto results = connect(args.at(0), Pattern::kPush, to("results"));
  if (!results) return fail("connect results", results.error());
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    Delivery d;
    const WaitResult r = (*work)->recv_for(d, 1s);
    if (r == WaitResult::kShutdown) return 0;
    if (r != WaitResult::kReady) continue;
    auto n = read_numbered(d.frame);
    if (!n || !report(**results, n->id, args.at(2))) return 3;
  }
  return 4;
}

// args: segment, prefix, name.
PALM_TEST_PEER(subscriber) {
  ConnectOptions o = to("news");
  o.subscriptions = {args.at(1)};
  auto news = connect(args.at(0), Pattern::kSub, o);
  if (!news) return fail("connect news", news.error());
  auto results = connect(args.at(0), Pattern::kPush, to("results"));
  if (!results) return fail("connect results", results.error());
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    Delivery d;
    const WaitResult r = (*news)->recv_for(d, 1s);
    if (r == WaitResult::kShutdown) return 0;
    if (r != WaitResult::kReady) continue;
    auto n = read_numbered(d.frame);
    if (!n || !report(**results, n->id, args.at(2), n->topic)) return 3;
  }
  return 4;
}

// args: segment, credits. Echoes each task as a fresh result (+1 credit).
PALM_TEST_PEER(worker) {
  ConnectOptions o = to("workers");
  o.credits = static_cast<std::uint32_t>(std::stoul(args.at(1)));
  auto w = connect(args.at(0), Pattern::kWorker, o);
  if (!w) return fail("connect workers", w.error());
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    Delivery d;
    const WaitResult r = (*w)->recv_for(d, 1s);
    if (r == WaitResult::kShutdown) return 0;
    if (r != WaitResult::kReady) continue;
    auto n = read_numbered(d.frame);
    if (!n) return 3;
    auto result = numbered(**w, n->id, "result");
    if (!result || (*w)->send_for(*result, 10s, Envelope{}) != SendResult::kQueued) return 3;
  }
  return 4;
}

// args: segment, count. Takes `count` messages from "work" and keeps them
// (blocks held in its pool slot), says so, then waits to be killed.
PALM_TEST_PEER(hoarder) {
  auto work = connect(args.at(0), Pattern::kPull, to("work"));
  if (!work) return fail("connect work", work.error());
  auto results = connect(args.at(0), Pattern::kPush, to("results"));
  if (!results) return fail("connect results", results.error());
  const std::size_t count = std::stoul(args.at(1));
  std::vector<Delivery> kept;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (kept.size() < count && std::chrono::steady_clock::now() < deadline) {
    Delivery d;
    if ((*work)->recv_for(d, 1s) == WaitResult::kReady) kept.push_back(std::move(d));
  }
  if (!report(**results, kReady, "hoarder")) return 3;
  ::alarm(30);  // the test kills it long before; a bound if it does not
  for (;;) ::pause();
}

// args: segment, fd. Serves "work" (push), tells its nonce, waits to be killed.
PALM_TEST_PEER(server) {
  auto host = Host::create(args.at(0), small_host(64));
  if (!host) return fail("create", host.error());
  auto work = host->bind(Pattern::kPush, "work");
  if (!work) return fail("bind", work.error());
  write_line(std::stoi(args.at(1)), std::to_string(host->nonce()));
  ::alarm(30);
  for (;;) ::pause();
}

// args: fd. Writes this process's host identity.
PALM_TEST_PEER(identity) {
  auto id = host_identity();
  if (!id) return fail("identity", id.error());
  write_line(std::stoi(args.at(0)), id->to_string());
  return 0;
}

// ---- helpers of the test side ----------------------------------------------------

// Collects `n` reports from `results` (bounded), as (who -> ids).
std::map<std::string, std::multiset<std::uint64_t>> collect(ShmEndpoint& results, std::size_t n,
                                                            std::chrono::seconds limit = 20s) {
  std::map<std::string, std::multiset<std::uint64_t>> got;
  std::size_t count = 0;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (count < n && std::chrono::steady_clock::now() < deadline) {
    Delivery d;
    if (results.recv_for(d, 500ms) != WaitResult::kReady) continue;
    auto r = read_numbered(d.frame);
    if (!r) {
      ADD_FAILURE() << "a report that is not a numbered message";
      continue;
    }
    got[r->function].insert(r->id);
    ++count;
  }
  return got;
}

// Sends numbered(id) for each id on `work` while draining `results` into
// `got` (the consumers report through a bounded channel: the sender must
// read while it writes). False if a send stayed full for 10 s.
bool send_all(ShmEndpoint& work, const std::vector<std::uint64_t>& ids, ShmEndpoint& results,
              std::map<std::string, std::multiset<std::uint64_t>>& got) {
  for (std::uint64_t id : ids) {
    auto f = numbered(work, id);
    if (!f) return false;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    for (;;) {
      const SendResult r = work.try_send(*f, {});
      if (r == SendResult::kQueued) break;
      if (r != SendResult::kFull || std::chrono::steady_clock::now() >= deadline) return false;
      Delivery d;
      // Wait for a report (room appears downstream as the consumers move on).
      if (results.recv_for(d, 10ms) == WaitResult::kReady) {
        if (auto n = read_numbered(d.frame)) got[n->function].insert(n->id);
      }
    }
  }
  return true;
}

std::size_t total(const std::map<std::string, std::multiset<std::uint64_t>>& got) {
  std::size_t n = 0;
  for (const auto& [who, ids] : got) n += ids.size();
  return n;
}

void merge(std::map<std::string, std::multiset<std::uint64_t>>& into,
           const std::map<std::string, std::multiset<std::uint64_t>>& more) {
  for (const auto& [who, ids] : more) into[who].insert(ids.begin(), ids.end());
}

void expect_clean_exits(std::vector<Child>& children) {
  for (Child& c : children) EXPECT_EQ(c.exit_code_within(kChildExit), 0) << "child " << c.pid();
}

// ---- tests ------------------------------------------------------------------------

class PushPullConsumers : public ::testing::TestWithParam<int> {};

TEST_P(PushPullConsumers, EveryMessageReachesExactlyOneConsumerProcess) {
  const int consumers = GetParam();
  ShmGuard g(unique_name("pp"));
  auto host = Host::create(g.name(), small_host(64));
  ASSERT_TRUE(host) << host.error().describe();
  auto work = host->bind(Pattern::kPush, "work");
  auto results = host->bind(Pattern::kPull, "results");
  ASSERT_TRUE(work && results);
  std::vector<Child> children;
  for (int c = 0; c < consumers; ++c) {
    children.push_back(spawn_peer("puller", {g.name(), std::to_string(host->nonce()), "c" + std::to_string(c)}));
  }
  ASSERT_TRUE(host->wait_peer_count(2 * consumers, 20s)) << "every consumer attached";
  constexpr std::uint64_t kCount = 3000;
  std::vector<std::uint64_t> ids;
  for (std::uint64_t i = 0; i < kCount; ++i) ids.push_back(i);
  const std::set<std::uint64_t> sent(ids.begin(), ids.end());
  std::map<std::string, std::multiset<std::uint64_t>> got;
  ASSERT_TRUE(send_all(**work, ids, **results, got));
  merge(got, collect(**results, kCount - total(got)));
  std::multiset<std::uint64_t> all;
  for (const auto& [who, theirs] : got) all.insert(theirs.begin(), theirs.end());
  EXPECT_EQ(all.size(), kCount);
  EXPECT_EQ(std::set<std::uint64_t>(all.begin(), all.end()), sent) << "each message once, none lost";
  // Per-peer counters: the shm channels to the consumers carried them all.
  std::uint64_t carried = 0;
  for (const PeerStatus& s : (*work)->peer_status()) {
    EXPECT_STREQ(s.transport, "shm");
    carried += s.messages_out;
  }
  EXPECT_EQ(carried, kCount);
  host->shutdown();
  expect_clean_exits(children);
  EXPECT_TRUE(host->pool().stats().all_free()) << "every block back in the pool";
}

INSTANTIATE_TEST_SUITE_P(OneToFour, PushPullConsumers, ::testing::Values(1, 2, 3, 4));

TEST(ShmProc, PubSubFansOutToThreeSubscriberProcessesByTopic) {
  ShmGuard g(unique_name("ps"));
  auto host = Host::create(g.name(), small_host(512));
  ASSERT_TRUE(host);
  auto news = host->bind(Pattern::kPub, "news");
  auto results = host->bind(Pattern::kPull, "results");
  ASSERT_TRUE(news && results);
  std::vector<Child> children;
  children.push_back(spawn_peer("subscriber", {g.name(), "a", "sa"}));
  children.push_back(spawn_peer("subscriber", {g.name(), "b", "sb"}));
  children.push_back(spawn_peer("subscriber", {g.name(), "", "sall"}));
  ASSERT_EQ((*news)->wait_subscriptions(3, 20s), WaitResult::kReady);
  constexpr std::uint64_t kCount = 300;  // < the channel capacity: nobody is slow
  const char* topics[] = {"a.x", "b.y", "c.z"};
  std::map<std::string, std::multiset<std::uint64_t>> expected;
  for (std::uint64_t i = 0; i < kCount; ++i) {
    auto f = numbered(**news, i, "f", topics[i % 3]);
    ASSERT_TRUE(f);
    ASSERT_EQ((*news)->send_for(*f, 10s, {}), SendResult::kQueued);
    if (i % 3 == 0) expected["sa"].insert(i);
    if (i % 3 == 1) expected["sb"].insert(i);
    expected["sall"].insert(i);
  }
  const auto got = collect(**results, 500);
  EXPECT_EQ(got, expected);
  EXPECT_EQ((*news)->stats().dropped, 0u);
  EXPECT_EQ((*news)->stats().messages_out, 500u) << "one reference per delivery, no copies";
  EXPECT_EQ((*news)->copies(), 0u);
  host->shutdown();
  expect_clean_exits(children);
  EXPECT_TRUE(host->pool().stats().all_free());
}

TEST(ShmProc, DispatcherFeedsWorkerProcessesWithinTheirCredits) {
  ShmGuard g(unique_name("dw"));
  auto host = Host::create(g.name(), small_host(64));
  ASSERT_TRUE(host);
  auto disp = host->bind(Pattern::kDispatcher, "workers");
  ASSERT_TRUE(disp);
  std::vector<Child> children;
  children.push_back(spawn_peer("worker", {g.name(), "2"}));
  children.push_back(spawn_peer("worker", {g.name(), "3"}));
  ASSERT_TRUE(host->wait_peer_count(2, 20s)) << "both workers attached";
  constexpr std::uint64_t kCount = 600;
  std::map<PeerId, std::uint32_t> credits;  // as the master tracks them
  std::map<PeerId, std::uint32_t> in_flight;
  std::set<std::uint64_t> results;
  std::uint64_t next = 0;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (results.size() < kCount && std::chrono::steady_clock::now() < deadline) {
    // Dispatch to any worker with a credit.
    for (auto& [w, c] : credits) {
      while (c > 0 && next < kCount) {
        auto f = numbered(**disp, next);
        ASSERT_TRUE(f);
        ASSERT_EQ((*disp)->try_send(*f, Envelope{w}), SendResult::kQueued);
        --c;
        ++in_flight[w];
        ++next;
      }
      auto f = numbered(**disp, kCount + 1);
      if (c == 0) {
        EXPECT_EQ((*disp)->try_send(*f, Envelope{w}), SendResult::kNoCredit);
      }
    }
    Delivery d;
    if ((*disp)->recv_for(d, 500ms) != WaitResult::kReady) continue;
    if (d.event == Event::kPeerJoined) {
      credits[d.peer] = d.credits;
    } else if (d.event == Event::kMessage) {
      EXPECT_TRUE(results.insert(read_numbered(d.frame)->id).second) << "a result once";
      ASSERT_GT(in_flight[d.peer], 0u) << "never more than its credits in flight";
      --in_flight[d.peer];
      credits[d.peer] += d.credits;
    }
  }
  EXPECT_EQ(results.size(), kCount);
  EXPECT_EQ(credits.size(), 2u);
  host->shutdown();
  expect_clean_exits(children);
  EXPECT_TRUE(host->pool().stats().all_free());
}

TEST(ShmProc, KilledPeerBlocksComeBackItsChannelsGoTheOthersGoOn) {
  ShmGuard g(unique_name("kill"));
  auto host = Host::create(g.name(), small_host(64));
  ASSERT_TRUE(host);
  auto work = host->bind(Pattern::kPush, "work");
  auto results = host->bind(Pattern::kPull, "results");
  ASSERT_TRUE(work && results);
  std::vector<Child> children;
  children.push_back(spawn_peer("puller", {g.name(), "0", "p"}));
  Child hoarder = spawn_peer("hoarder", {g.name(), "5"});
  ASSERT_TRUE(host->wait_peer_count(4, 20s));
  // Round-robin: the hoarder takes 5 and keeps them, the rest of its share
  // waits in its channel.
  std::uint64_t next = 0;
  std::size_t from_puller = 0;
  bool hoarder_ready = false;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (!hoarder_ready && std::chrono::steady_clock::now() < deadline) {
    if (next < 40) {
      auto f = numbered(**work, next++);
      ASSERT_EQ((*work)->send_for(*f, 10s, {}), SendResult::kQueued);
      continue;
    }
    Delivery d;
    if ((*results)->recv_for(d, 500ms) != WaitResult::kReady) continue;
    auto n = read_numbered(d.frame);
    if (n->id == kReady) {
      hoarder_ready = true;
    } else {
      ++from_puller;
    }
  }
  ASSERT_TRUE(hoarder_ready);
  const pid_t hoarder_pid = hoarder.pid();
  hoarder.kill_and_reap();
  // The owner notices within its liveness period, discards both of the
  // hoarder's endpoints (channels) and reclaims its slot.
  ASSERT_TRUE(host->wait_peer_count(2, 20s));
  EXPECT_EQ(host->dead_peers(), 2u);
  for (const PeerStatus& s : host->peers()) EXPECT_NE(s.pid, hoarder_pid) << "its channels are gone";
  // The others go on: every message from now reaches the live consumer.
  constexpr std::uint64_t kMore = 200;
  std::vector<std::uint64_t> ids;
  for (std::uint64_t i = 0; i < kMore; ++i) ids.push_back(1000 + i);
  std::map<std::string, std::multiset<std::uint64_t>> got;
  ASSERT_TRUE(send_all(**work, ids, **results, got));
  // The puller's half of the first 40, then all of these.
  merge(got, collect(**results, 20 + kMore - from_puller - total(got)));
  std::set<std::uint64_t> after;
  for (std::uint64_t id : got.at("p")) {
    if (id >= 1000) after.insert(id);
  }
  EXPECT_EQ(after.size(), kMore);
  host->shutdown();
  expect_clean_exits(children);
  EXPECT_TRUE(host->pool().stats().all_free()) << "the hoarder's blocks came back";
}

TEST(ShmProc, RestartedServerWithTheSameNameIsNotConfusedWithTheDeadOne) {
  ShmGuard g(unique_name("restart"));
  Pipe pipe;
  Child server = spawn_peer("server", {g.name(), std::to_string(pipe.w)});
  const auto line = pipe.read_line(std::chrono::milliseconds(20000));
  ASSERT_TRUE(line) << "the server told its nonce";
  const std::uint64_t old_nonce = std::stoull(*line);
  auto old_pull = connect(g.name(), Pattern::kPull, to("work", old_nonce));
  ASSERT_TRUE(old_pull) << old_pull.error().describe();
  server.kill_and_reap();
  // The peer of the dead server: drained, then shutdown (not a hang).
  Delivery d;
  EXPECT_EQ((*old_pull)->recv_for(d, 20s), WaitResult::kShutdown);
  // A new server takes the name: the stale segment is replaced, new nonce.
  auto host = Host::create(g.name(), small_host(64));
  ASSERT_TRUE(host) << host.error().describe();
  EXPECT_NE(host->nonce(), old_nonce);
  auto work = host->bind(Pattern::kPush, "work");
  ASSERT_TRUE(work);
  auto stale = connect(g.name(), Pattern::kPull, to("work", old_nonce));
  ASSERT_FALSE(stale) << "the old nonce names the dead incarnation";
  EXPECT_EQ(stale.error().code, Errc::kNotFound);
  auto fresh = connect(g.name(), Pattern::kPull, to("work", host->nonce()));
  ASSERT_TRUE(fresh) << fresh.error().describe();
  ASSERT_TRUE(host->wait_peer_count(1, 20s));
  auto f = numbered(**work, 9);
  ASSERT_EQ((*work)->send_for(*f, 5s, {}), SendResult::kQueued);
  ASSERT_EQ((*fresh)->recv_for(d, 5s), WaitResult::kReady);
  EXPECT_EQ(read_numbered(d.frame)->id, 9u);
  d = Delivery{};  // frames go before the endpoint they came from (host.hpp)
  old_pull->reset();
}

TEST(ShmProc, HostIdentityDiffersInAnotherPidNamespace) {
  if (::geteuid() != 0) GTEST_SKIP() << "unshare --pid needs root (CAP_SYS_ADMIN); not root here";
  if (::access("/usr/bin/unshare", X_OK) != 0) GTEST_SKIP() << "/usr/bin/unshare is not installed";
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  ASSERT_GT(n, 0);
  exe[n] = '\0';
  Pipe pipe;
  const std::string fd = std::to_string(pipe.w);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::execl("/usr/bin/unshare", "unshare", "--pid", "--fork", "--mount-proc", exe, "--palm-peer=identity",
            fd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  Child child(pid);
  const auto line = pipe.read_line(std::chrono::milliseconds(20000));
  const auto code = child.exit_code_within(kChildExit);
  if (!line) GTEST_SKIP() << "unshare --pid --fork --mount-proc failed here (exit " << code.value_or(-1) << ")";
  EXPECT_EQ(code, 0);
  auto theirs = HostIdentity::parse(*line);
  ASSERT_TRUE(theirs) << theirs.error().describe();
  auto mine = host_identity();
  ASSERT_TRUE(mine);
  EXPECT_EQ(theirs->boot_id, mine->boot_id) << "same kernel";
  EXPECT_NE(theirs->pid_ns, mine->pid_ns) << "another pid namespace";
  const auto why = shm_obstacle(*mine, *theirs);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("pid namespace"), std::string::npos);
  EXPECT_EQ(choose_transport(TransportMode::kAuto, *mine, *theirs).value(), TransportChoice::kTcp);
  EXPECT_FALSE(choose_transport(TransportMode::kShm, *mine, *theirs)) << "shm where impossible is an error";
  // A peer in our own namespace is the same host.
  Pipe same;
  Child twin = spawn_peer("identity", {std::to_string(same.w)});
  const auto twin_line = same.read_line(std::chrono::milliseconds(20000));
  ASSERT_TRUE(twin_line);
  EXPECT_EQ(twin.exit_code_within(kChildExit), 0);
  EXPECT_EQ(HostIdentity::parse(*twin_line).value(), *mine);
}

}  // namespace
}  // namespace palm::shm
