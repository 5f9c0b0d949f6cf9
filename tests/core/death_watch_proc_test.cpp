#include "palm/core/death_watch.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace palm {
namespace {

using namespace std::chrono_literals;

// Waits (bounded) for `flag`; true if it was set.
bool wait_set(const std::atomic<bool>& flag, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!flag.load()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// A child process forked (no exec) by the test: sleeps until killed.
pid_t fork_sleeper() {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::pause();
    ::_exit(0);
  }
  return pid;
}

TEST(DeathWatchFork, AForkedChildWatchesAfresh) {
  // The parent's watch thread runs before the fork; the child has none and
  // must start its own on its first watch.
  const pid_t first = fork_sleeper();
  ASSERT_GT(first, 0);
  std::atomic<bool> parent_saw{false};
  DeathWatch::Ticket parent_ticket =
      DeathWatch::watch(ProcessId{first, process_start_time(first).value_or(0)}, [&] { parent_saw.store(true); });
  ASSERT_TRUE(parent_ticket);

  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // 0: the child saw its own watch fire; 1: it did not; 2: no watch.
    if (DeathWatch::watching() != 0) ::_exit(3);  // the parent's watches are not the child's
    const pid_t grandchild = fork_sleeper();
    if (grandchild <= 0) ::_exit(2);
    std::atomic<bool> saw{false};
    DeathWatch::Ticket t =
        DeathWatch::watch(ProcessId{grandchild, process_start_time(grandchild).value_or(0)}, [&] { saw.store(true); });
    if (!t) ::_exit(2);
    ::kill(grandchild, SIGKILL);
    const bool ok = wait_set(saw, 5s);
    int status = 0;
    ::waitpid(grandchild, &status, 0);
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: no callback in the child; 2: no watch; 3: inherited watches";

  // The parent's watch still works.
  EXPECT_FALSE(parent_saw.load());
  ::kill(first, SIGKILL);
  EXPECT_TRUE(wait_set(parent_saw, 5s));
  ASSERT_EQ(::waitpid(first, &status, 0), first);
}

}  // namespace
}  // namespace palm
