// The transport pattern suite over inproc: the peers are threads sharing the
// test's Context (inproc reaches the endpoints of one Context). Threads only,
// so it runs under TSan as well.
#include "pattern_suite.hpp"

namespace palm::transport::test {

INSTANTIATE_TEST_SUITE_P(Zmq, TransportPatterns, ::testing::Values(Scheme::kInproc), scheme_name);
INSTANTIATE_TEST_SUITE_P(Zmq, TransportZmqPatterns, ::testing::Values(Scheme::kInproc),
                         scheme_name);
INSTANTIATE_TEST_SUITE_P(Zmq, TransportPushPull,
                         ::testing::Combine(::testing::Values(Scheme::kInproc),
                                            ::testing::Values(1, 2, 3, 4)),
                         push_pull_name);

}  // namespace palm::transport::test
