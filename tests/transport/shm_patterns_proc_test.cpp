// The transport pattern suite over shm://: the test's Context serves one
// segment per test (created by its first bind), and the peers are separate
// processes (spawn_peer) that attach to it by name through their own
// Contexts. PALM_TRANSPORT=shm is set for the whole binary (inherited by the
// peers): a role whose endpoints are not on shm fails (exit 90), and the
// test checks the per-peer counters of its shm endpoints.
//
// Instantiated with what shm carries: push/pull with 1..4 consumers, pub/sub
// fan-out with filtering, dispatch with credits, a worker and a consumer
// killed mid-stream. Request/reply, the cache and raw libzmq peers
// (TransportZmqPatterns) stay on ZeroMQ.
#include <stdlib.h>

#include "pattern_suite.hpp"

namespace palm::transport::test {
namespace {

// Before any test (and any thread): setenv is not thread-safe.
class ShmOnly : public ::testing::Environment {
 public:
  void SetUp() override { ASSERT_EQ(::setenv("PALM_TRANSPORT", "shm", 1), 0); }
};
[[maybe_unused]] const auto* const shm_only =
    ::testing::AddGlobalTestEnvironment(new ShmOnly);  // gtest owns it

}  // namespace

INSTANTIATE_TEST_SUITE_P(Shm, TransportPatterns, ::testing::Values(Scheme::kShm), scheme_name);
INSTANTIATE_TEST_SUITE_P(Shm, TransportPushPull,
                         ::testing::Combine(::testing::Values(Scheme::kShm),
                                            ::testing::Values(1, 2, 3, 4)),
                         push_pull_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(TransportZmqPatterns);

}  // namespace palm::transport::test
