// The farm's payloads: every message fresh, every wrong reply caught,
// wherever the wrong byte lies (the filler is written and compared in
// chunks, so the chunks' seams and the last, short chunk matter).
#include "payloads.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <optional>
#include <string>
#include <vector>

namespace palm::tools {
namespace {

// Around the chunks' seams.
constexpr std::size_t kChunkBytes = Payloads::kChunk;
const std::size_t kSizes[] = {kSeqDigits,
                              kSeqDigits + 1,
                              64,
                              kSeqDigits + kChunkBytes - 1,
                              kSeqDigits + kChunkBytes,
                              kSeqDigits + kChunkBytes + 1,
                              3 * kChunkBytes + 100,
                              1 << 20};

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

TEST(Payloads, EveryMessageIsFreshAndItsReplyChecksOut) {
  for (std::size_t size : kSizes) {
    const Payloads echo(size, "echo");
    std::string a, b;
    echo.write(41, a);
    echo.write(42, b);
    ASSERT_EQ(a.size(), size);
    EXPECT_EQ(a.substr(0, kSeqDigits), "000000000041");
    EXPECT_EQ(b.substr(0, kSeqDigits), "000000000042");
    if (size > kSeqDigits) {
      EXPECT_NE(a.substr(kSeqDigits), b.substr(kSeqDigits)) << size;
    }
    EXPECT_EQ(echo.check(a), 41u) << size;
    EXPECT_EQ(echo.check(b), 42u) << size;
    // The letters run on without a break across the chunks.
    for (std::size_t i = kSeqDigits + 1; i < size; ++i) {
      ASSERT_EQ(b[i], static_cast<char>('a' + (b[i - 1] - 'a' + 1) % 26)) << size << " at " << i;
    }

    const Payloads up(size, "upper");
    EXPECT_EQ(up.check(upper(b)), 42u) << size;
    if (size > kSeqDigits) {
      EXPECT_FALSE(up.check(b)) << size;  // not upper-cased
    }

    const Payloads rev(size, "reverse");
    std::string r(b.rbegin(), b.rend());
    EXPECT_EQ(rev.check(r), 42u) << size;
  }
}

TEST(Payloads, AWrongByteAnywhereFailsTheCheck) {
  for (std::size_t size : kSizes) {
    const Payloads echo(size, "echo");
    std::string good;
    echo.write(7, good);
    std::vector<std::size_t> at = {0, kSeqDigits - 1, size - 1};
    for (std::size_t seam = kSeqDigits + kChunkBytes; seam < size; seam += kChunkBytes) {
      at.push_back(seam - 1);
      at.push_back(seam);
    }
    for (std::size_t i : at) {
      if (i >= size) continue;
      std::string bad = good;
      bad[i] = bad[i] == 'z' ? 'a' : static_cast<char>(bad[i] + 1);
      if (i < kSeqDigits && bad[i] > '9') bad[i] = '0';
      const auto seq = echo.check(bad);
      // A changed digit names another message, whose letters differ (or,
      // with no letters, it is another message's reply: not this one's).
      EXPECT_NE(seq, std::optional<std::uint64_t>(7u)) << size << " at " << i;
      if (i >= kSeqDigits) {
        EXPECT_FALSE(seq) << size << " at " << i;
      }
    }
    EXPECT_FALSE(echo.check(good.substr(0, size - 1))) << size;
    EXPECT_FALSE(echo.check(good + "a")) << size;
  }
}

TEST(Payloads, Sha256RepliesAreHexDigests) {
  const Payloads sha(64, "sha256");
  EXPECT_EQ(sha.check(std::string(64, 'a')), 0u);
  EXPECT_FALSE(sha.check(std::string(64, 'g')));
  EXPECT_FALSE(sha.check(std::string(63, 'a')));
  EXPECT_FALSE(sha.traced());
}

}  // namespace
}  // namespace palm::tools
