// The transport pattern suite over tcp (127.0.0.1, ports picked by the
// kernel) and ipc (sockets in a per-test temporary directory): the peers are
// separate processes (spawn_peer: fork + exec of this binary).
#include "pattern_suite.hpp"

namespace palm::transport::test {

INSTANTIATE_TEST_SUITE_P(Zmq, TransportPatterns, ::testing::Values(Scheme::kTcp, Scheme::kIpc),
                         scheme_name);
INSTANTIATE_TEST_SUITE_P(Zmq, TransportZmqPatterns,
                         ::testing::Values(Scheme::kTcp, Scheme::kIpc), scheme_name);
INSTANTIATE_TEST_SUITE_P(Zmq, TransportPushPull,
                         ::testing::Combine(::testing::Values(Scheme::kTcp, Scheme::kIpc),
                                            ::testing::Values(1, 2, 3, 4)),
                         push_pull_name);

}  // namespace palm::transport::test
