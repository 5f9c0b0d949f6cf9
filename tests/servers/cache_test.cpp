// DictDB, ReservedKeys and the instruction rule of the cache service
// (FEATURES.md "Persistence"; PROTOCOL.md "Cache service").
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "palm/servers/cache.hpp"
#include "palm/servers/cache_service.hpp"

namespace palm::servers {
namespace {

// FEATURES.md: "DictDB: `get` (None if missing), `set`, `delete`,
// `clean(prefix)`, `in`".
TEST(DictDB, GetOfAMissingKeyIsNullopt) {
  DictDB db;
  EXPECT_FALSE(db.get("nope").has_value());
  EXPECT_FALSE(db.contains("nope"));
}

TEST(DictDB, SetThenGetReturnsTheValueAndSetReplaces) {
  DictDB db;
  db.set("k", "v1");
  EXPECT_EQ(db.get("k"), "v1");
  db.set("k", std::string("v\0 2", 4));
  EXPECT_EQ(db.get("k"), std::string("v\0 2", 4));
  EXPECT_TRUE(db.contains("k"));
  EXPECT_EQ(db.size(), 1u);
}

TEST(DictDB, AnEmptyValueIsAValue) {
  DictDB db;
  db.set("k", "");
  ASSERT_TRUE(db.get("k").has_value());
  EXPECT_EQ(*db.get("k"), "");
  EXPECT_TRUE(db.contains("k"));
}

TEST(DictDB, RemoveSaysWhetherTheKeyWasThere) {
  DictDB db;
  db.set("k", "v");
  EXPECT_TRUE(db.remove("k"));
  EXPECT_FALSE(db.remove("k"));
  EXPECT_FALSE(db.contains("k"));
}

TEST(DictDB, CleanRemovesExactlyTheKeysWithThePrefix) {
  DictDB db;
  for (const char* k : {"a", "ab", "abc", "abd", "b", "aa", "ac"}) db.set(k, "v");
  EXPECT_EQ(db.clean("ab"), 3u);
  EXPECT_FALSE(db.contains("ab"));
  EXPECT_FALSE(db.contains("abc"));
  EXPECT_TRUE(db.contains("a"));
  EXPECT_TRUE(db.contains("aa"));
  EXPECT_TRUE(db.contains("ac"));
  EXPECT_EQ(db.clean(""), 4u);
  EXPECT_EQ(db.size(), 0u);
}

TEST(DictDB, ConcurrentWritersAndReadersSeeEveryKey) {
  DictDB db;
  constexpr int kThreads = 4;
  constexpr int kKeys = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&db, t] {
      for (int i = 0; i < kKeys; ++i) {
        const std::string key = std::to_string(t) + "/" + std::to_string(i);
        db.set(key, key);
        EXPECT_EQ(db.get(key), key);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(db.size(), static_cast<std::size_t>(kThreads * kKeys));
}

TEST(ReservedKeys, PalmPrefixIsReservedByDefault) {
  ReservedKeys r;
  EXPECT_TRUE(r.is_reserved("__palm_segment"));
  EXPECT_FALSE(r.is_reserved("name"));
  EXPECT_FALSE(r.is_reserved("__pal"));
}

TEST(ReservedKeys, ReserveAddsKeysAndPrefixes) {
  ReservedKeys r;
  r.reserve("name");
  r.reserve_prefix("sys/");
  EXPECT_TRUE(r.is_reserved("name"));
  EXPECT_FALSE(r.is_reserved("names"));
  EXPECT_TRUE(r.is_reserved("sys/x"));
}

// PROTOCOL.md: "the instruction is `function.split('.')[1]`".
TEST(CacheInstruction, IsTheSecondDotSeparatedField) {
  EXPECT_EQ(cache_instruction("my_server.get"), "get");
  EXPECT_EQ(cache_instruction("_.set"), "set");
  EXPECT_EQ(cache_instruction("a.delete.x"), "delete");
  EXPECT_EQ(cache_instruction("a."), "");
  EXPECT_EQ(cache_instruction(".get"), "get");
  EXPECT_FALSE(cache_instruction("get").has_value());
  EXPECT_FALSE(cache_instruction("").has_value());
}

}  // namespace
}  // namespace palm::servers
