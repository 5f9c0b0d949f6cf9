#pragma once
// `palm demo`: the core at work across processes. A producer process writes
// PalmMessage frames straight into a shared-memory block pool and sends their
// handles through a single-producer channel; a consumer process validates
// each frame in place and releases it. Nothing is copied between them but
// 8-byte handles.

#include <cstddef>
#include <cstdint>
#include <string>

namespace palm::tools {

struct DemoOptions {
  std::uint64_t messages = 100000;
  std::size_t payload = 64;
  std::uint32_t show = 3;  // messages each side prints
};

// Runs the demo: creates the segment, starts both processes, waits, checks
// the pool, removes the segment. Returns the process exit code.
int run_demo(const DemoOptions& options);

// The two sides, in processes started by run_demo.
int run_demo_producer(const std::string& segment, const DemoOptions& options);
int run_demo_consumer(const std::string& segment, const DemoOptions& options);

}  // namespace palm::tools
