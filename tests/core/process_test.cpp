#include "palm/core/process.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

namespace palm {
namespace {

TEST(Process, SelfIsAliveWithItsStartTime) {
  const ProcessId me = self_process();
  EXPECT_EQ(me.pid, ::getpid());
  EXPECT_GT(me.start_time, 0u);
  EXPECT_TRUE(process_alive(me));
}

TEST(Process, SamePidOtherStartTimeIsNotAlive) {
  ProcessId me = self_process();
  me.start_time += 1;  // what a reused pid looks like
  EXPECT_FALSE(process_alive(me));
}

TEST(Process, ExitedChildIsDeadEvenBeforeReaped) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(0);
  const auto st = process_start_time(pid);
  // The child may already be a zombie here; either way, once it has exited
  // it must read as dead.
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT), 0);
  EXPECT_FALSE(process_alive(ProcessId{pid, st.value_or(1)}));
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_FALSE(process_alive(ProcessId{pid, st.value_or(1)}));
}

TEST(ProcessWatch, SeesAChildLiveThenDeadBeforeItIsReaped) {
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    char c = 0;
    static_cast<void>(::read(go[0], &c, 1));  // exits when the parent says so
    ::_exit(0);
  }
  ::close(go[0]);
  const auto st = process_start_time(pid);
  ASSERT_TRUE(st);
  ProcessWatch watch(ProcessId{pid, *st});
  EXPECT_TRUE(watch.has_pidfd()) << "pidfd_open refused: the /proc fallback is in use";
  EXPECT_TRUE(watch.alive());
  EXPECT_TRUE(watch.alive());
  ASSERT_EQ(::write(go[1], "x", 1), 1);
  ::close(go[1]);
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT), 0);
  EXPECT_FALSE(watch.alive()) << "a zombie is dead";
  ProcessWatch moved = std::move(watch);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_FALSE(moved.alive());
}

TEST(ProcessWatch, AReusedPidOrNoPidIsDeadFromTheStart) {
  ProcessId me = self_process();
  EXPECT_TRUE(ProcessWatch(me).alive());
  me.start_time += 1;  // what a reused pid looks like
  EXPECT_FALSE(ProcessWatch(me).alive());
  EXPECT_FALSE(ProcessWatch(ProcessId{}).alive());
  EXPECT_FALSE(ProcessWatch().alive());
}

}  // namespace
}  // namespace palm
