// A frame's round in a master, on one thread, in place in one block:
//   stamp    Frame::rewrite of a client's message: a uuid4 cache key and a
//            dispatch id (the key alone changes: fields 1-4 move, the
//            payload stays);
//   publish  Frame::rewrite of the worker's result going out: the client's
//            uuid as topic, the dispatch id cleared (the head kept);
//   unstamp  the key taken out again, so the next round starts as the first.
// Each rewrite leaves the frame viewed; the round then reads the view as the
// master does. 64 B and 4 KiB payloads. The other threads' cache misses of
// a real farm are not here: this is the rewrite's own cost.
//
// Run: frame_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "palm/core/frame.hpp"
#include "palm/core/process.hpp"
#include "palm/core/region.hpp"

namespace {

void BM_FrameMasterRound(benchmark::State& state) {
  const palm::PoolConfig cfg;
  auto region = palm::MappedRegion::create_anonymous(palm::BlockPool::region_bytes(cfg), "palm-frame-bench");
  if (!region) {
    state.SkipWithError(region.error().describe().c_str());
    return;
  }
  auto pool = palm::BlockPool::create(region->region(), cfg);
  if (!pool) {
    state.SkipWithError(pool.error().describe().c_str());
    return;
  }
  auto slot = pool->attach_process(palm::self_process());
  if (!slot) {
    state.SkipWithError(slot.error().describe().c_str());
    return;
  }
  const std::string payload(static_cast<std::size_t>(state.range(0)), 'p');
  palm::MessageView m;
  m.pipeline = "3d99e99b-2554-435d-81e0-ac9d42c65db8";
  m.client = "663d6598-1339-4747-afab-1b65934e8c1c";
  m.function = "_.echo";
  m.payload = std::as_bytes(std::span<const char>(payload.data(), payload.size()));
  std::optional<palm::Frame> frame;
  {
    auto built = palm::Frame::build(*pool, *slot, m);
    if (!built) {
      state.SkipWithError(built.error().describe().c_str());
      return;
    }
    frame.emplace(std::move(*built));
  }
  palm::Frame& f = *frame;
  const std::string key = "d18e4a53-41a4-413e-8ce7-fe8533e469fe";
  std::uint64_t id = 1000;
  for (auto _ : state) {
    palm::MessageView stamped = f.peek()->message;
    stamped.cache = key;
    stamped.dispatch_id = ++id;
    bool ok = f.rewrite(stamped);
    palm::MessageView out = f.peek()->message;
    out.dispatch_id = 0;
    ok = ok && f.rewrite(out, out.client);
    palm::MessageView bare = f.peek()->message;
    bare.cache = {};
    ok = ok && f.rewrite(bare);
    if (!ok) {
      state.SkipWithError("a rewrite was refused");
      break;
    }
    benchmark::DoNotOptimize(f.peek()->message.payload.data());
  }
  frame.reset();
  (void)pool->detach_process(*slot);
}

}  // namespace

BENCHMARK(BM_FrameMasterRound)->Arg(64)->Arg(4096);
