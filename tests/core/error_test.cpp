#include "palm/core/error.hpp"

#include <gtest/gtest.h>

#include <cerrno>

namespace palm {
namespace {

TEST(Error, ErrnoMapsToCodeAndNamesTheCall) {
  auto e = errno_error(ENOSPC, "posix_fallocate 4 MiB in /dev/shm/x");
  EXPECT_EQ(e.value().code, Errc::kNoSpace);
  EXPECT_NE(e.value().message.find("posix_fallocate 4 MiB"), std::string::npos);
  EXPECT_NE(e.value().describe().find("no space"), std::string::npos);
}

TEST(Error, ResultCarriesValueOrError) {
  Result<int> ok = 7;
  Result<int> bad = make_error(Errc::kTooLarge, "80 MiB exceeds 64 MiB");
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, 7);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::kTooLarge);
}

}  // namespace
}  // namespace palm
