// Ring throughput: 8-byte items, 1 producer x 1 consumer and 2 x 2, palm's
// MpmcRing (try, batched and blocking forms) and SpscRing (1P1C) beside
// moodycamel::ConcurrentQueue, boost::lockfree::queue (and spsc_queue for the
// 1P1C row) and a std::mutex + std::deque baseline, all in this binary.
//
// Each iteration moves kItems items through a fresh queue of kCapacity slots
// with new threads (started after a barrier); the consumers check the sum of
// what they received. A thread whose try fails backs off the same way for
// every queue: a few pauses, then sched_yield (more threads than the 2 cores
// in the 2x2 rows). Real time; report medians of repetitions:
//   ring_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true

#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include <boost/lockfree/queue.hpp>
#include <boost/lockfree/spsc_queue.hpp>
#include <concurrentqueue/concurrentqueue.h>

// g++ 12 at -O3 reports a false -Wstringop-overflow inside moodycamel's
// enqueue_bulk (an atomic load it inlines into produce()); the warning is
// a middle-end one, tied to the instantiation here, not to the header.
#pragma GCC diagnostic ignored "-Wstringop-overflow"

#include "palm/core/doorbell.hpp"
#include "palm/core/mpmc_ring.hpp"
#include "palm/core/spsc_ring.hpp"

namespace {

constexpr std::uint64_t kItems = std::uint64_t{1} << 20;  // per iteration
constexpr std::size_t kCapacity = 1024;
constexpr std::size_t kBatch = 32;

// The same backoff for every queue when a try fails.
class Backoff {
 public:
  void operator()() noexcept {
    if (++fails_ < 16) {
      palm::detail::cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
  void reset() noexcept { fails_ = 0; }

 private:
  unsigned fails_ = 0;
};

// Pins the calling thread to one CPU. Unpinned, a 1P1C pair lands on one CPU
// or on two at the scheduler's whim, and the two regimes differ by up to 10x
// (time-sliced on one core there is no cache-line hand-off at all); pinned,
// every queue is measured in the same regime: producers and consumers on
// different CPUs where there are enough of them.
void pin_to_cpu(unsigned cpu) {
  const unsigned n = std::max(1u, std::thread::hardware_concurrency());
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu % n, &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

// --- adapters: push/pop of one item, or of a batch, per queue ---------------
// Each makes per-thread handles (Producer/Consumer) for queues that use tokens.

struct MpmcTry {
  static constexpr const char* kName = "MpmcRing";
  palm::MpmcRing<std::uint64_t> ring{kCapacity};
  struct Producer {
    MpmcTry& q;
    bool push(std::uint64_t v) noexcept { return q.ring.try_push(v); }
  };
  struct Consumer {
    MpmcTry& q;
    bool pop(std::uint64_t& v) noexcept { return q.ring.try_pop(v); }
  };
};

struct MpmcBatch {
  static constexpr const char* kName = "MpmcRing_Batch32";
  static constexpr bool kBatched = true;
  palm::MpmcRing<std::uint64_t> ring{kCapacity};
  struct Producer {
    MpmcBatch& q;
    std::size_t push_n(const std::uint64_t* v, std::size_t n) noexcept { return q.ring.try_push_n(v, n); }
  };
  struct Consumer {
    MpmcBatch& q;
    std::size_t pop_n(std::uint64_t* v, std::size_t n) noexcept { return q.ring.try_pop_n(v, n); }
  };
};

// push_for/pop_for: the doorbell spin-then-sleep instead of the caller's
// backoff (the time-outs never trigger).
struct MpmcBlocking {
  static constexpr const char* kName = "MpmcRing_Blocking";
  palm::MpmcRing<std::uint64_t> ring{kCapacity};
  struct Producer {
    MpmcBlocking& q;
    bool push(std::uint64_t v) noexcept {
      return q.ring.push_for(v, std::chrono::seconds(10)) == palm::WaitResult::kReady;
    }
  };
  struct Consumer {
    MpmcBlocking& q;
    bool pop(std::uint64_t& v) noexcept {
      return q.ring.pop_for(v, std::chrono::seconds(10)) == palm::WaitResult::kReady;
    }
  };
};

// SpscRing on a heap buffer (as it would sit in a shared mapping).
template <bool kBatchedForm>
struct SpscAdapter {
  static constexpr const char* kName = kBatchedForm ? "SpscRing_Batch32" : "SpscRing";
  static constexpr bool kBatched = kBatchedForm;
  using Ring = palm::SpscRing<std::uint64_t>;
  struct Free {
    void operator()(void* p) const { ::operator delete(p, std::align_val_t{Ring::kAlignment}); }
  };
  std::unique_ptr<void, Free> mem{::operator new(Ring::bytes_for(kCapacity),
                                                 std::align_val_t{Ring::kAlignment})};
  Ring* ring = *Ring::create_at(mem.get(), Ring::bytes_for(kCapacity), kCapacity);
  struct Producer {
    SpscAdapter& q;
    bool push(std::uint64_t v) noexcept { return q.ring->try_push(v); }
    std::size_t push_n(const std::uint64_t* v, std::size_t n) noexcept { return q.ring->try_push_n(v, n); }
  };
  struct Consumer {
    SpscAdapter& q;
    bool pop(std::uint64_t& v) noexcept { return q.ring->try_pop(v); }
    std::size_t pop_n(std::uint64_t* v, std::size_t n) noexcept { return q.ring->try_pop_n(v, n); }
  };
};

// moodycamel with producer/consumer tokens (its fast path). It is unbounded:
// enqueue allocates blocks when its preallocated kCapacity is used up (with
// try_enqueue, which never allocates, 2 explicit producers stall for good
// once the other one holds the preallocated blocks), so its producers never
// wait for room as the bounded queues' do.
template <bool kBatchedForm>
struct Moodycamel {
  static constexpr const char* kName = kBatchedForm ? "moodycamel_Bulk32" : "moodycamel";
  static constexpr bool kBatched = kBatchedForm;
  moodycamel::ConcurrentQueue<std::uint64_t> queue{kCapacity};
  struct Producer {
    Moodycamel& q;
    moodycamel::ProducerToken token{q.queue};
    bool push(std::uint64_t v) { return q.queue.enqueue(token, v); }
    std::size_t push_n(const std::uint64_t* v, std::size_t n) {
      return q.queue.enqueue_bulk(token, v, n) ? n : 0;
    }
  };
  struct Consumer {
    Moodycamel& q;
    moodycamel::ConsumerToken token{q.queue};
    bool pop(std::uint64_t& v) noexcept { return q.queue.try_dequeue(token, v); }
    std::size_t pop_n(std::uint64_t* v, std::size_t n) noexcept {
      return q.queue.try_dequeue_bulk(token, v, n);
    }
  };
};

struct BoostQueue {
  static constexpr const char* kName = "boost_lockfree_queue";
  boost::lockfree::queue<std::uint64_t> queue{kCapacity};
  struct Producer {
    BoostQueue& q;
    bool push(std::uint64_t v) noexcept { return q.queue.bounded_push(v); }
  };
  struct Consumer {
    BoostQueue& q;
    bool pop(std::uint64_t& v) noexcept { return q.queue.pop(v); }
  };
};

struct BoostSpsc {
  static constexpr const char* kName = "boost_lockfree_spsc_queue";
  boost::lockfree::spsc_queue<std::uint64_t> queue{kCapacity};
  struct Producer {
    BoostSpsc& q;
    bool push(std::uint64_t v) noexcept { return q.queue.push(v); }
  };
  struct Consumer {
    BoostSpsc& q;
    bool pop(std::uint64_t& v) noexcept { return q.queue.pop(v); }
  };
};

// The baseline: a bounded std::deque under a std::mutex.
struct MutexDeque {
  static constexpr const char* kName = "mutex_deque";
  std::mutex mutex;
  std::deque<std::uint64_t> items;
  struct Producer {
    MutexDeque& q;
    bool push(std::uint64_t v) {
      std::lock_guard<std::mutex> lock(q.mutex);
      if (q.items.size() >= kCapacity) return false;
      q.items.push_back(v);
      return true;
    }
  };
  struct Consumer {
    MutexDeque& q;
    bool pop(std::uint64_t& v) {
      std::lock_guard<std::mutex> lock(q.mutex);
      if (q.items.empty()) return false;
      v = q.items.front();
      q.items.pop_front();
      return true;
    }
  };
};

template <class Q>
constexpr bool batched() {
  if constexpr (requires { Q::kBatched; }) {
    return Q::kBatched;
  } else {
    return false;
  }
}

// Producer p pushes p * per + 1 .. p * per + per; consumers split kItems
// between them (each stops at its quota; together they take everything).
template <class Q>
void produce(Q& q, std::uint64_t first, std::uint64_t count) {
  typename Q::Producer producer{q};
  Backoff backoff;
  if constexpr (batched<Q>()) {
    std::uint64_t buf[kBatch];
    for (std::uint64_t done = 0; done < count;) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kBatch, count - done));
      for (std::size_t i = 0; i < n; ++i) buf[i] = first + done + i;
      std::size_t pushed = 0;
      while ((pushed = producer.push_n(buf, n)) == 0) backoff();
      backoff.reset();
      done += pushed;
      // A partial push: the rest goes in the next round, re-filled in order.
    }
  } else {
    for (std::uint64_t i = 0; i < count; ++i) {
      while (!producer.push(first + i)) backoff();
      backoff.reset();
    }
  }
}

template <class Q>
std::uint64_t consume(Q& q, std::uint64_t quota) {
  typename Q::Consumer consumer{q};
  Backoff backoff;
  std::uint64_t sum = 0;
  if constexpr (batched<Q>()) {
    std::uint64_t buf[kBatch];
    for (std::uint64_t done = 0; done < quota;) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kBatch, quota - done));
      std::size_t got = 0;
      while ((got = consumer.pop_n(buf, n)) == 0) backoff();
      backoff.reset();
      for (std::size_t i = 0; i < got; ++i) sum += buf[i];
      done += got;
    }
  } else {
    for (std::uint64_t i = 0; i < quota; ++i) {
      std::uint64_t v = 0;
      while (!consumer.pop(v)) backoff();
      backoff.reset();
      sum += v;
    }
  }
  return sum;
}

template <class Q>
void run(benchmark::State& state, int producers, int consumers) {
  const std::uint64_t per_producer = kItems / static_cast<std::uint64_t>(producers);
  const std::uint64_t total = per_producer * static_cast<std::uint64_t>(producers);
  const std::uint64_t expected_sum = total * (total + 1) / 2;
  for (auto _ : state) {
    auto q = std::make_unique<Q>();
    std::atomic<int> arrived{0};
    std::atomic<std::uint64_t> sum{0};
    std::vector<std::thread> threads;
    const int n_threads = producers + consumers;
    const auto barrier = [&] {
      arrived.fetch_add(1, std::memory_order_acq_rel);
      while (arrived.load(std::memory_order_acquire) < n_threads) std::this_thread::yield();
    };
    for (int p = 0; p < producers; ++p) {
      threads.emplace_back([&, p] {
        pin_to_cpu(static_cast<unsigned>(p));  // producer p on CPU p
        barrier();
        produce(*q, static_cast<std::uint64_t>(p) * per_producer + 1, per_producer);
      });
    }
    for (int c = 0; c < consumers; ++c) {
      const std::uint64_t quota =
          total / static_cast<std::uint64_t>(consumers) +
          (c == 0 ? total % static_cast<std::uint64_t>(consumers) : 0);
      threads.emplace_back([&, c, quota] {
        pin_to_cpu(static_cast<unsigned>(c) + 1);  // consumer c on CPU c + 1
        barrier();
        sum.fetch_add(consume(*q, quota), std::memory_order_relaxed);
      });
    }
    for (auto& t : threads) t.join();
    if (sum.load() != expected_sum) {
      state.SkipWithError("items lost or duplicated");
      return;
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(total));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(total * sizeof(std::uint64_t)));
  state.SetLabel("8 B items, " + std::to_string(total) + " per iteration, capacity " +
                 std::to_string(kCapacity));
}

template <class Q>
void add(int producers, int consumers) {
  const std::string name = std::string(Q::kName) + "/" + std::to_string(producers) + "P" +
                           std::to_string(consumers) + "C";
  benchmark::RegisterBenchmark(name.c_str(),
                               [producers, consumers](benchmark::State& state) {
                                 run<Q>(state, producers, consumers);
                               })
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond)
      ->MinTime(0.3);
}

[[maybe_unused]] const bool registered = [] {
  add<MpmcTry>(1, 1);
  add<MpmcTry>(2, 2);
  add<MpmcBatch>(1, 1);
  add<MpmcBatch>(2, 2);
  add<MpmcBlocking>(1, 1);
  add<MpmcBlocking>(2, 2);
  add<SpscAdapter<false>>(1, 1);
  add<SpscAdapter<true>>(1, 1);
  add<Moodycamel<false>>(1, 1);
  add<Moodycamel<false>>(2, 2);
  add<Moodycamel<true>>(1, 1);
  add<Moodycamel<true>>(2, 2);
  add<BoostQueue>(1, 1);
  add<BoostQueue>(2, 2);
  add<BoostSpsc>(1, 1);
  add<MutexDeque>(1, 1);
  add<MutexDeque>(2, 2);
  return true;
}();

}  // namespace
