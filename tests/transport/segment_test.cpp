#include "palm/transport/shm/segment.hpp"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "peer.hpp"

namespace palm::shm {
namespace {

using palm::test::ShmGuard;
using palm::test::unique_name;

TEST(Segment, CreateThenOpenSeesAreasAndNonce) {
  ShmGuard g(unique_name("seg"));
  auto seg = Segment::create(g.name(), {{"pool", 1 << 20}, {"channels", 5000}});
  ASSERT_TRUE(seg) << seg.error().describe();
  auto area = seg->area("channels");
  ASSERT_TRUE(area);
  EXPECT_EQ(area->bytes, 8192u);  // rounded to pages
  std::memset(area->base, 0xab, area->bytes);

  auto other = Segment::open(g.name());
  ASSERT_TRUE(other) << other.error().describe();
  EXPECT_EQ(other->nonce(), seg->nonce());
  EXPECT_EQ(other->owner(), self_process());
  auto same = other->area("channels");
  ASSERT_TRUE(same);
  EXPECT_EQ(std::to_integer<int>(same->base[4000]), 0xab);
  EXPECT_FALSE(other->area("nope"));
}

TEST(Segment, CreatedOwnerOnly) {
  ShmGuard g(unique_name("seg"));
  auto seg = Segment::create(g.name(), {{"pool", 4096}});
  ASSERT_TRUE(seg);
  struct stat st {};
  const int fd = ::shm_open(("/" + g.name()).c_str(), O_RDONLY, 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::fstat(fd, &st), 0);
  ::close(fd);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(Segment, NameCollisionIsAnError) {
  ShmGuard g(unique_name("seg"));
  auto a = Segment::create(g.name(), {{"pool", 4096}});
  ASSERT_TRUE(a);
  auto b = Segment::create(g.name(), {{"pool", 4096}});
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code, Errc::kAlreadyExists);
}

TEST(Segment, OpenRejectsMissingForeignAndUnfinished) {
  EXPECT_EQ(Segment::open(unique_name("missing")).error().code, Errc::kNotFound);

  ShmGuard g(unique_name("junk"));
  const int fd = ::shm_open(("/" + g.name()).c_str(), O_CREAT | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 8192), 0);
  // All zeros: a creator that has not written its header yet.
  EXPECT_EQ(Segment::open(g.name()).error().code, Errc::kNotReady);
  const char junk[] = "definitely not palm";
  ASSERT_EQ(::pwrite(fd, junk, sizeof junk, 0), static_cast<ssize_t>(sizeof junk));
  ::close(fd);
  EXPECT_EQ(Segment::open(g.name()).error().code, Errc::kBadMagic);
}

TEST(Segment, StaleSegmentOfDeadOwnerIsRemoved) {
  const std::string name = unique_name("stale");
  ShmGuard g(name);
  {
    // The segment is created in a child that exits without removing it.
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto seg = Segment::create(name, {{"pool", 4096}});
      ::_exit(seg ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  ShmGuard live(unique_name("live"));
  auto mine = Segment::create(live.name(), {{"pool", 4096}});
  ASSERT_TRUE(mine);

  const auto removed = remove_stale_segments("palm-test-" + std::to_string(::getpid()));
  EXPECT_EQ(removed, std::vector<std::string>{name});
  EXPECT_EQ(Segment::open(name).error().code, Errc::kNotFound);
  EXPECT_TRUE(Segment::open(live.name()));  // a live owner's segment stays
}

}  // namespace
}  // namespace palm::shm

namespace palm::shm {
namespace {

TEST(Segment, SegmentOfAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a segment to another uid";
  palm::test::ShmGuard g(palm::test::unique_name("foreign"));
  auto seg = Segment::create(g.name(), {{"pool", 4096}});
  ASSERT_TRUE(seg);
  const int fd = ::shm_open(("/" + g.name()).c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::fchown(fd, 65534, 65534), 0);
  ::close(fd);
  auto other = Segment::open(g.name());
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, Errc::kPermission);
  EXPECT_NE(other.error().message.find("belongs to uid 65534"), std::string::npos);
}

}  // namespace
}  // namespace palm::shm
