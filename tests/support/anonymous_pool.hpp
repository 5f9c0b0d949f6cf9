#pragma once
// A test fixture for single-process tests of what lives in a pool (frames,
// the router): a default-configured BlockPool on an anonymous mapping, with
// one slot attached for this process. TearDown detaches the slot and fails
// the test if any block is still allocated: a test that leaks a reference
// is caught where it ran.
//
// Header-only: the support library itself links no palm module; a test that
// includes this links palm_core already.
#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "palm/core/pool.hpp"
#include "palm/core/process.hpp"
#include "palm/core/region.hpp"

namespace palm::test {

class AnonymousPool : public ::testing::Test {
 protected:
  // `name`: the mapping's name, seen in /proc/<pid>/maps.
  explicit AnonymousPool(std::string name) : name_(std::move(name)) {}

  void SetUp() override {
    PoolConfig cfg;
    auto region = MappedRegion::create_anonymous(BlockPool::region_bytes(cfg), name_.c_str());
    ASSERT_TRUE(region) << region.error().describe();
    region_ = std::move(*region);
    auto pool = BlockPool::create(region_.region(), cfg);
    ASSERT_TRUE(pool) << pool.error().describe();
    pool_.emplace(*pool);
    auto slot = pool_->attach_process(self_process());
    ASSERT_TRUE(slot) << slot.error().describe();
    slot_ = *slot;
  }
  void TearDown() override {
    if (pool_) {
      (void)pool_->detach_process(slot_);
      EXPECT_TRUE(pool_->stats().all_free()) << "a test leaked a block";
    }
  }

  std::string name_;
  MappedRegion region_;
  std::optional<BlockPool> pool_;
  SlotId slot_{};
};

}  // namespace palm::test
