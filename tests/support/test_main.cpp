// main() of every palm test binary: runs a registered test peer when started
// as one (see peer.hpp), else the GoogleTest suite.
#include <gtest/gtest.h>

#include "peer.hpp"
#include "tsan_zmq.hpp"  // libzmq is not instrumented (TSan builds only)

int main(int argc, char** argv) {
  if (auto code = palm::test::run_peer_if_requested(argc, argv)) return *code;
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
