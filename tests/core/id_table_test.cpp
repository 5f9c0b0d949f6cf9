// IdTable against std::map as the model: the master's pattern (increasing
// ids, most retired soon, some lingering long), collisions and wrap-around
// of the probe runs, growth, and move-only values.
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <random>

#include "palm/core/id_table.hpp"

namespace palm {
namespace {

TEST(IdTable, FindPutTakeErase) {
  IdTable<int> t;
  EXPECT_TRUE(t.empty());
  EXPECT_EQ(t.find(1), nullptr);
  EXPECT_EQ(t.find(0), nullptr);
  t.put(1, 10);
  t.put(9, 90);  // the same home slot as 1 in 8 slots: probes on
  t.put(17, 170);
  EXPECT_EQ(t.size(), 3u);
  ASSERT_NE(t.find(17), nullptr);
  EXPECT_EQ(*t.find(17), 170);
  t.put(9, 91);  // replaces
  EXPECT_EQ(t.size(), 3u);
  EXPECT_TRUE(t.erase(1));  // 9 and 17 shift back and stay findable
  EXPECT_FALSE(t.erase(1));
  ASSERT_NE(t.find(9), nullptr);
  EXPECT_EQ(*t.find(9), 91);
  int out = 0;
  EXPECT_TRUE(t.take(17, out));
  EXPECT_EQ(out, 170);
  EXPECT_FALSE(t.take(17, out));
  EXPECT_EQ(t.size(), 1u);
}

TEST(IdTable, AgreesWithAMapUnderTheMastersPattern) {
  IdTable<std::unique_ptr<std::uint64_t>> t(8);
  std::map<std::uint64_t, std::uint64_t> model;
  std::mt19937_64 rng(42);
  std::uint64_t next = 0;
  for (int step = 0; step < 200'000; ++step) {
    const auto roll = rng() % 100;
    if (roll < 50 || model.empty()) {
      ++next;
      t.put(next, std::make_unique<std::uint64_t>(next * 3));
      model[next] = next * 3;
    } else if (roll < 95) {
      // Retire one of the oldest few (results come back about in order).
      auto it = model.begin();
      std::advance(it, static_cast<long>(rng() % std::min<std::size_t>(model.size(), 8)));
      std::unique_ptr<std::uint64_t> v;
      ASSERT_TRUE(t.take(it->first, v));
      ASSERT_TRUE(v);
      EXPECT_EQ(*v, it->second);
      model.erase(it);
    } else {
      // Any id: present or retired long ago.
      const std::uint64_t id = 1 + rng() % next;
      EXPECT_EQ(t.erase(id), model.erase(id) == 1);
    }
    ASSERT_EQ(t.size(), model.size());
    if (step % 997 == 0) {
      for (const auto& [id, v] : model) {
        auto* got = t.find(id);
        ASSERT_NE(got, nullptr) << id;
        EXPECT_EQ(**got, v);
      }
      const auto ids = t.ids();
      EXPECT_EQ(ids.size(), model.size());
      for (std::uint64_t id : ids) EXPECT_EQ(model.count(id), 1u) << id;
    }
  }
}

TEST(IdTable, AgreesWithAMapUnderRandomIds) {
  // Ids in any order, many sharing a home slot: the entries' order along a
  // run (put's displacements, erase's shifts, find's early stop) is
  // exercised far from the consecutive window of the master.
  IdTable<std::uint64_t> t(8);
  std::map<std::uint64_t, std::uint64_t> model;
  std::mt19937_64 rng(7);
  for (int step = 0; step < 200'000; ++step) {
    const std::uint64_t id = 1 + rng() % 3000;
    const auto roll = rng() % 100;
    if (roll < 45) {
      t.put(id, id ^ static_cast<std::uint64_t>(step));
      model[id] = id ^ static_cast<std::uint64_t>(step);
    } else if (roll < 85) {
      EXPECT_EQ(t.erase(id), model.erase(id) == 1) << id;
    } else {
      const auto* got = t.find(id);
      const auto it = model.find(id);
      ASSERT_EQ(got != nullptr, it != model.end()) << id;
      if (got != nullptr) {
        EXPECT_EQ(*got, it->second);
      }
    }
    ASSERT_EQ(t.size(), model.size());
  }
  for (const auto& [id, v] : model) {
    const auto* got = t.find(id);
    ASSERT_NE(got, nullptr) << id;
    EXPECT_EQ(*got, v);
  }
}

TEST(IdTable, ALingeringIdSurvivesManyLaps) {
  // One id stays while thousands pass through the same slots.
  IdTable<int> t(8);
  t.put(3, 33);
  for (std::uint64_t id = 4; id < 20'000; ++id) {
    t.put(id, 1);
    ASSERT_TRUE(t.erase(id));
    ASSERT_NE(t.find(3), nullptr) << id;
  }
  EXPECT_EQ(*t.find(3), 33);
  EXPECT_EQ(t.size(), 1u);
}

}  // namespace
}  // namespace palm
