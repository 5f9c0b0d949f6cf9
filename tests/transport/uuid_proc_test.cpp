// make_uuid4: well-formed version-4 uuids, unique, and not repeated by a
// forked child (each thread's generator is seeded once, and again after a
// fork).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <string>

#include "palm/transport/discovery.hpp"

namespace palm::transport {
namespace {

bool is_uuid4(const std::string& s) {
  if (s.size() != 36) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return s[14] == '4' && (s[19] == '8' || s[19] == '9' || s[19] == 'a' || s[19] == 'b');
}

TEST(Uuid4, WellFormedAndUnique) {
  std::set<std::string> seen;
  for (int i = 0; i < 20000; ++i) {
    const std::string u = make_uuid4();
    ASSERT_TRUE(is_uuid4(u)) << u;
    seen.insert(u);
  }
  EXPECT_EQ(seen.size(), 20000u);
}

TEST(Uuid4, AForkedChildDoesNotRepeatItsParent) {
  (void)make_uuid4();  // seeds this thread's generator before the fork
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const std::string u = make_uuid4();
    const ssize_t n = write(fds[1], u.data(), u.size());
    _exit(n == static_cast<ssize_t>(u.size()) ? 0 : 1);
  }
  close(fds[1]);
  const std::string mine = make_uuid4();
  char buf[64] = {};
  const ssize_t n = read(fds[0], buf, sizeof buf);
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(n, 36);
  const std::string theirs(buf, 36);
  EXPECT_TRUE(is_uuid4(theirs)) << theirs;
  EXPECT_NE(theirs, mine);
}

}  // namespace
}  // namespace palm::transport
