#include "palm/core/death_watch.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "thread_signals.hpp"

extern char** environ;

namespace palm {
namespace {

using namespace std::chrono_literals;

// A child that sleeps until it is killed: posix_spawn, not fork, so the
// test runs under TSan too. Killed and reaped by the destructor, by pid.
class Sleeper {
 public:
  Sleeper() {
    char arg0[] = "sleep";
    char arg1[] = "60";
    char* argv[] = {arg0, arg1, nullptr};
    if (::posix_spawn(&pid_, "/bin/sleep", nullptr, nullptr, argv, environ) != 0) pid_ = -1;
  }
  ~Sleeper() { kill(); }
  Sleeper(const Sleeper&) = delete;
  Sleeper& operator=(const Sleeper&) = delete;

  ProcessId id() const { return ProcessId{pid_, process_start_time(pid_).value_or(0)}; }
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  bool started() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

// Counts callbacks; waits for a count, bounded.
struct Deaths {
  std::mutex mu;
  std::condition_variable cv;
  int count = 0;
  std::thread::id on;

  std::function<void()> callback() {
    return [this] {
      const std::lock_guard lock(mu);
      ++count;
      on = std::this_thread::get_id();
      cv.notify_all();
    };
  }
  bool wait_for(int n, std::chrono::milliseconds limit) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, limit, [&] { return count >= n; });
  }
  int seen() {
    const std::lock_guard lock(mu);
    return count;
  }
};

TEST(DeathWatch, CallsBackOnceWhenTheProcessIsKilled) {
  Sleeper child;
  ASSERT_TRUE(child.started());
  Deaths deaths;
  const std::size_t before = DeathWatch::watching();
  DeathWatch::Ticket ticket = DeathWatch::watch(child.id(), deaths.callback());
  ASSERT_TRUE(ticket) << "pidfd_open refused on this kernel";
  EXPECT_EQ(DeathWatch::watching(), before + 1);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(deaths.seen(), 0) << "called back while the process lives";
  child.kill();
  ASSERT_TRUE(deaths.wait_for(1, 5s)) << "no callback within 5 s of SIGKILL";
  EXPECT_NE(deaths.on, std::this_thread::get_id()) << "the watch's thread calls back";
  EXPECT_EQ(DeathWatch::watching(), before) << "a watch that fired is forgotten";
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(deaths.seen(), 1);
}

TEST(DeathWatch, EveryWatchOfOneProcessFires) {
  Sleeper child;
  ASSERT_TRUE(child.started());
  Deaths deaths;
  std::vector<DeathWatch::Ticket> tickets;
  for (int i = 0; i < 5; ++i) tickets.push_back(DeathWatch::watch(child.id(), deaths.callback()));
  for (const auto& t : tickets) ASSERT_TRUE(t);
  child.kill();
  ASSERT_TRUE(deaths.wait_for(5, 5s)) << deaths.seen() << " of 5 callbacks";
}

TEST(DeathWatch, AnEndedWatchNeverCallsBack) {
  Sleeper child;
  ASSERT_TRUE(child.started());
  Deaths ended;
  Deaths kept;
  const std::size_t before = DeathWatch::watching();
  DeathWatch::Ticket a = DeathWatch::watch(child.id(), ended.callback());
  DeathWatch::Ticket b = DeathWatch::watch(child.id(), kept.callback());
  ASSERT_TRUE(a);
  ASSERT_TRUE(b);
  a.reset();
  EXPECT_FALSE(a);
  EXPECT_EQ(DeathWatch::watching(), before + 1);
  DeathWatch::Ticket moved = std::move(b);  // the watch moves with it
  child.kill();
  ASSERT_TRUE(kept.wait_for(1, 5s));
  EXPECT_EQ(ended.seen(), 0);
}

TEST(DeathWatch, ADeadOrReusedProcessCallsBackAtOnceOnTheCaller) {
  Deaths deaths;
  ProcessId reused = self_process();
  reused.start_time += 1;  // what a reused pid looks like
  DeathWatch::Ticket a = DeathWatch::watch(reused, deaths.callback());
  EXPECT_TRUE(a);
  EXPECT_EQ(deaths.seen(), 1);
  EXPECT_EQ(deaths.on, std::this_thread::get_id());

  Sleeper child;
  ASSERT_TRUE(child.started());
  const ProcessId gone = child.id();
  child.kill();  // reaped: the pid names nobody (or somebody else)
  DeathWatch::Ticket b = DeathWatch::watch(gone, deaths.callback());
  EXPECT_TRUE(b);
  EXPECT_EQ(deaths.seen(), 2);
}

TEST(DeathWatch, ManyWatchesComeAndGoWhileProcessesDie) {
  // Tickets ending on one thread while the watch's thread fires others:
  // every callback of a live ticket runs once, none after its end.
  constexpr int kChildren = 6;
  std::vector<std::unique_ptr<Sleeper>> children;
  for (int i = 0; i < kChildren; ++i) children.push_back(std::make_unique<Sleeper>());
  Deaths deaths;
  std::atomic<int> after_end{0};
  std::atomic<bool> ended{false};
  std::vector<DeathWatch::Ticket> kept;
  std::vector<ProcessId> ids;  // read before the kills (which reset the Sleepers)
  for (const auto& c : children) {
    ASSERT_TRUE(c->started());
    ids.push_back(c->id());
    kept.push_back(DeathWatch::watch(ids.back(), deaths.callback()));
  }
  std::thread churn([&] {
    for (int i = 0; i < 200; ++i) {
      DeathWatch::Ticket t = DeathWatch::watch(ids[static_cast<std::size_t>(i) % kChildren], [&] {
        if (ended.load()) after_end.fetch_add(1);
      });
      // ~Ticket ends it; the callback may have run before, never after.
    }
  });
  for (auto& c : children) c->kill();
  churn.join();
  ended.store(true);
  ASSERT_TRUE(deaths.wait_for(kChildren, 5s)) << deaths.seen() << " of " << kChildren;
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(after_end.load(), 0);
  EXPECT_EQ(deaths.seen(), kChildren);
}

TEST(DeathWatch, ItsThreadBlocksEverySignal) {
  // A process that takes SIGTERM through sigwait or a signalfd (the palm
  // commands) must not have it delivered to the watch's thread instead.
  Sleeper child;
  ASSERT_TRUE(child.started());
  Deaths deaths;
  DeathWatch::Ticket t = DeathWatch::watch(child.id(), deaths.callback());
  ASSERT_TRUE(t);
  const auto masks = test::blocked_signals_of("palm-deaths");
  ASSERT_EQ(masks.size(), 1u) << "one thread named palm-deaths";
  EXPECT_TRUE(test::blocks_stop_signals(masks[0])) << std::hex << masks[0];
}

}  // namespace
}  // namespace palm
