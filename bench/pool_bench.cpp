// BlockPool allocate + release per size class (256 B, 64 KiB and 1 MiB
// blocks), 1 and 2 threads, beside malloc + free of the same usable size in
// the same binary. Each thread has its own process slot (its own held list),
// as the threads of separate processes would; with 2 threads they contend on
// the class's free-list head. The pool lives in a memfd, as in production.
//
// Run: pool_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "palm/core/pool.hpp"

namespace {

palm::BlockPool& shared_pool() {
  struct Holder {
    palm::MappedRegion region;
    std::optional<palm::BlockPool> pool;
  };
  static Holder holder = [] {
    Holder h;
    const palm::PoolConfig cfg;  // the defaults: 1 MiB blocks are cut lazily
    auto region = palm::MappedRegion::create_anonymous(palm::BlockPool::region_bytes(cfg), "palm-pool-bench");
    if (!region) {
      std::fprintf(stderr, "%s\n", region.error().describe().c_str());
      std::abort();
    }
    h.region = std::move(*region);
    auto pool = palm::BlockPool::create(h.region.region(), cfg);
    if (!pool) {
      std::fprintf(stderr, "%s\n", pool.error().describe().c_str());
      std::abort();
    }
    h.pool.emplace(*pool);
    return h;
  }();
  return *holder.pool;
}

std::string block_label(std::size_t block) {
  return block >= (1u << 20) ? std::to_string(block >> 20) + " MiB block"
                             : block >= 1024 ? std::to_string(block >> 10) + " KiB block"
                                             : std::to_string(block) + " B block";
}

void BM_PoolAllocateRelease(benchmark::State& state) {
  const auto block = static_cast<std::size_t>(state.range(0));
  const std::size_t bytes = block - 64;  // fills the block: its capacity
  palm::BlockPool& pool = shared_pool();
  auto slot = pool.attach_process(palm::self_process());
  if (!slot) {
    state.SkipWithError(slot.error().describe().c_str());
    return;
  }
  for (auto _ : state) {
    auto h = pool.allocate(bytes, *slot);
    if (!h) {
      state.SkipWithError(h.error().describe().c_str());
      break;
    }
    benchmark::DoNotOptimize(*h);
    if (!pool.release(*slot, *h)) {
      state.SkipWithError("release failed");
      break;
    }
  }
  static_cast<void>(pool.detach_process(*slot));
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(block_label(block));
}

void BM_MallocFree(benchmark::State& state) {
  const auto block = static_cast<std::size_t>(state.range(0));
  const std::size_t bytes = block - 64;
  for (auto _ : state) {
    void* p = std::malloc(bytes);
    benchmark::DoNotOptimize(p);
    std::free(p);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(block_label(block));
}

constexpr std::int64_t k256B = 256, k64KiB = 64 << 10, k1MiB = 1 << 20;

BENCHMARK(BM_PoolAllocateRelease)->Arg(k256B)->Arg(k64KiB)->Arg(k1MiB)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_MallocFree)->Arg(k256B)->Arg(k64KiB)->Arg(k1MiB)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace
