#pragma once
// Helpers of the fault tests (DESIGN.md "The crash model", "The farm"):
// a Master run in the test process with real `palm worker` processes that
// the test kills (SIGKILL, by pid) and replaces, payloads that carry a
// unique sequence number, and a check that every number came back exactly
// once. Process helpers (spawn, wait_line, Proc, TempFiles) are the farm
// tests' (tests/servers/farm_proc_util.hpp).
#include <signal.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "../servers/farm_proc_util.hpp"
#include "palm/servers/client.hpp"
#include "palm/servers/master.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/shm/host.hpp"
#include "peer.hpp"

namespace palm::fault {

using namespace std::chrono_literals;
using servers::farm::Proc;
using servers::farm::TempFiles;
using Clock = std::chrono::steady_clock;

// ---- payloads ---------------------------------------------------------------------

constexpr std::size_t kSeqDigits = 12;

// "000000000042:seq" : the number first, then a fixed tail, so a reply that
// is not the echo of some message is told apart.
inline std::string payload_of(std::uint64_t seq) { return fmt::format("{:012}:seq", seq); }

inline std::optional<std::uint64_t> seq_of(std::string_view reply) {
  if (reply.size() != kSeqDigits + 4 || reply.substr(kSeqDigits) != ":seq") return std::nullopt;
  std::uint64_t seq = 0;
  for (std::size_t i = 0; i < kSeqDigits; ++i) {
    if (reply[i] < '0' || reply[i] > '9') return std::nullopt;
    seq = seq * 10 + static_cast<std::uint64_t>(reply[i] - '0');
  }
  return seq;
}

// Which sequence numbers came back, and how often: compares sets, not counts.
class SeqSet {
 public:
  explicit SeqSet(std::uint64_t sent) : times_(sent, 0) {}
  void add(std::string_view reply) {
    const auto seq = seq_of(reply);
    if (!seq || *seq >= times_.size()) {
      ++bad_;
      return;
    }
    if (times_[*seq]++ != 0) ++twice_;
    ++received_;
  }
  std::uint64_t received() const { return received_; }
  std::uint64_t bad() const { return bad_; }
  std::uint64_t twice() const { return twice_; }  // duplicates delivered
  // Numbers sent that never came back.
  std::uint64_t lost() const {
    return static_cast<std::uint64_t>(std::count(times_.begin(), times_.end(), 0));
  }
  // The first few lost numbers, for a failure message.
  std::string lost_sample() const {
    std::string out;
    int n = 0;
    for (std::size_t i = 0; i < times_.size() && n < 10; ++i) {
      if (times_[i] == 0) {
        out += fmt::format("{} ", i);
        ++n;
      }
    }
    return out;
  }

 private:
  std::vector<std::uint32_t> times_;
  std::uint64_t received_ = 0, bad_ = 0, twice_ = 0;
};

// ---- pool -------------------------------------------------------------------------

// Every block of `pool` free: none allocated, every class's free count equal
// to the blocks that exist. "" or what is missing.
inline std::string pool_full(const BlockPool& pool) {
  const PoolStats st = pool.stats();
  std::string missing;
  for (const auto& c : st.classes) {
    if (c.free != c.cut || c.allocated != 0) {
      missing += fmt::format("class {} B: {} of {} free, {} allocated; ", c.block_bytes, c.free, c.cut, c.allocated);
    }
  }
  return missing;
}

// Polls `ok` every `period` for at most `timeout`.
template <typename F>
bool eventually(F ok, std::chrono::milliseconds timeout, std::chrono::milliseconds period = 5ms) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (ok()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(period);
  }
}

// ---- a master in this process, `palm worker` processes ------------------------------

struct FarmOptions {
  std::string tag = "farm";
  std::chrono::milliseconds heartbeat{200};  // tcp workers: ZMTP heartbeats (timeout 3x)
  std::uint32_t window = 512;                // the master's
  std::uint32_t credits = 16;                // each worker's
  bool bypass = false;  // the master offers the bypass and client() takes it (servers/bypass.hpp)
};

class InProcessFarm {
 public:
  struct Worker {
    Proc proc;
    std::string transport;    // "shm" or "tcp"
    std::uint64_t key = 0;    // the master's key (WorkerLoad::worker)
  };

  explicit InProcessFarm(const FarmOptions& o = {}) : options_(o) {
    transport::ContextOptions co;
    co.transport.heartbeat = o.heartbeat;
    auto ctx = transport::Context::create(co);
    if (!ctx) {
      ADD_FAILURE() << ctx.error().describe();
      return;
    }
    ctx_ = std::make_unique<transport::Context>(std::move(*ctx));
    servers::MasterConfig cfg;
    cfg.server.name = palm::test::unique_name(o.tag);
    cfg.server.db_address = servers::farm::kAny;
    cfg.server.log_level = servers::LogLevel::kWarning;
    cfg.pull_address = cfg.pub_address = servers::farm::kAny;
    cfg.worker_push_address = cfg.worker_pull_address = servers::farm::kAny;
    cfg.window = o.window;
    cfg.bypass = o.bypass;
    master_ = std::make_unique<servers::Master>(*ctx_, cfg);
    if (auto r = master_->start(); !r) {
      ADD_FAILURE() << "the master did not start: " << r.error().describe();
      master_.reset();
      return;
    }
    guard_ = std::make_unique<palm::test::ShmGuard>(master_->segment());
    // A view of the segment's pool, to count its blocks: a push attached
    // like a client's (it holds none).
    shm::ConnectOptions probe;
    probe.service = "inbound";
    auto p = shm::connect(master_->segment(), transport::Pattern::kPush, probe);
    if (!p) {
      ADD_FAILURE() << "cannot attach to " << master_->segment() << ": " << p.error().describe();
      return;
    }
    probe_ = std::move(*p);
  }

  ~InProcessFarm() {
    client_.reset();
    for (auto& w : workers_) w.proc.child.kill_and_reap();
    probe_.reset();
    master_.reset();
    if (ctx_) ctx_->shutdown();
  }
  InProcessFarm(const InProcessFarm&) = delete;  // owns processes
  InProcessFarm& operator=(const InProcessFarm&) = delete;

  bool up() const { return master_ != nullptr && probe_ != nullptr; }
  servers::Master& master() { return *master_; }
  transport::Context& context() { return *ctx_; }
  const BlockPool& segment_pool() const { return probe_->pool(); }
  std::vector<Worker>& workers() { return workers_; }
  TempFiles& files() { return files_; }

  // Starts a `palm worker` over `transport` and waits until the master's
  // table shows a worker it did not know: that one is it (one start at a
  // time, so the match is certain). False, with a failure, if it did not
  // join within 10 s.
  bool add_worker(const std::string& transport) {
    const std::string name = fmt::format("w{}", started_++);
    Proc p = servers::farm::spawn_palm(
        files_,
        {"worker", "--name", name, "--db", master_->db_address(), "--credits", std::to_string(options_.credits),
         "--log-level", "WARNING"},
        {{"PALM_TRANSPORT", transport}});
    std::uint64_t key = 0;
    bool shm = false;
    const bool joined = eventually(
        [&] {
          for (const auto& l : master_->worker_loads()) {
            if (known_.insert(l.worker).second) {
              key = l.worker;
              shm = l.shm;
              return true;
            }
          }
          return false;
        },
        10s);
    if (!joined) {
      ADD_FAILURE() << "worker " << name << " over " << transport << " did not join in 10 s: " << p.errors();
      return false;
    }
    EXPECT_EQ(shm, transport == "shm") << name << " joined over the other transport";
    workers_.push_back(Worker{std::move(p), transport, key});
    return true;
  }

  // The first worker, from index `from` round, that the master's table shows
  // holding at least one message; nullopt if none does within `timeout`.
  // Polled every 50 µs, as holds(): over shm the master moves a gate's
  // few hundred messages in well under a millisecond, so a coarser poll
  // misses every worker's run and the search times out.
  std::optional<std::size_t> holder(std::size_t from, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    do {
      const auto loads = master_->worker_loads();
      for (std::size_t n = 0; n < workers_.size(); ++n) {
        const std::size_t i = (from + n) % workers_.size();
        for (const auto& l : loads) {
          if (l.worker == workers_[i].key && l.in_flight > 0) return i;
        }
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    } while (Clock::now() < deadline);
    return std::nullopt;
  }

  // Whether worker i holds a message at some moment within `timeout`
  // (polled every 50 µs: a fast worker holds each run briefly).
  bool holds(std::size_t i, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    do {
      for (const auto& l : master_->worker_loads()) {
        if (l.worker == workers_[i].key && l.in_flight > 0) return true;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    } while (Clock::now() < deadline);
    return false;
  }

  // Stops worker i (SIGSTOP) at a moment it holds messages, within
  // `timeout`: a worker seen holding one may answer it before a kill lands
  // (a slow tcp worker gets one message at a time while a fast shm worker
  // takes the stream), so it is frozen first, its results in transit are
  // let land, and it counts as holding only if the master still sees
  // messages on it then. Otherwise it is resumed and watched again.
  bool freeze_holding(std::size_t i, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (!holds(i, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()))) return false;
      workers_[i].proc.child.signal(SIGSTOP);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (holds(i, std::chrono::milliseconds(0))) return true;
      workers_[i].proc.child.signal(SIGCONT);
    }
    return false;
  }

  // SIGKILLs worker i and reaps it; it leaves the list. Its transport.
  std::string kill_worker(std::size_t i) {
    Worker w = std::move(workers_[i]);
    workers_.erase(workers_.begin() + static_cast<std::ptrdiff_t>(i));
    w.proc.child.signal(SIGKILL);
    EXPECT_EQ(w.proc.child.exit_code_within(5s), -SIGKILL);
    return w.transport;
  }

  // SIGTERM to every worker (exit 130 each), then until the master's table
  // is empty and nothing is in flight.
  void stop_workers() {
    for (auto& w : workers_) w.proc.child.signal(SIGTERM);
    for (auto& w : workers_) EXPECT_EQ(w.proc.child.exit_code_within(15s), 130) << w.proc.errors();
    workers_.clear();
    EXPECT_TRUE(eventually(
        [&] {
          const auto s = master_->dispatch_stats();
          return s.workers_shm + s.workers_tcp == 0 && s.in_flight == 0;
        },
        10s))
        << "the master still counts workers or messages in flight";
  }

  // A Client in this process, over shm, with `window` messages in flight.
  servers::Client& client(std::uint32_t window = 256, std::chrono::milliseconds timeout = 20s) {
    servers::ClientOptions co;
    co.server_name = master_->name();
    co.db_address = master_->db_address();
    co.transport = shm::TransportMode::kShm;
    co.log_level = servers::LogLevel::kWarning;
    co.timeout = timeout;
    co.window = window;
    co.settle = 0ms;
    co.bypass = options_.bypass;
    auto c = servers::Client::connect(*ctx_, co);
    EXPECT_TRUE(c) << (c ? "" : c.error().describe());
    if (c) client_ = std::move(*c);
    return *client_;
  }
  void drop_client() { client_.reset(); }

  // After the workers stopped and the client went: every block of the
  // segment's pool and of this process's Context pool is free. A process
  // SIGKILLed between two steps of a pool operation (allocate's pop and
  // record, release's unrecord and drop: pool.hpp "Crash windows") loses
  // the block in its hand to no held list; the owner's BlockPool::audit,
  // run here once the master stopped (the pool quiescent), frees exactly
  // those. At most `crash_losses` may be found so (0 without kills); a
  // block with a wrong reference count or a stale entry is a bug either way.
  // Returns the blocks the audit freed.
  std::size_t expect_pools_full(std::size_t crash_losses = 0) {
    std::string seg, own;
    const bool ok = eventually(
        [&] {
          seg = pool_full(segment_pool());
          own = pool_full(ctx_->pool());
          return seg.empty() && own.empty();
        },
        5s);
    EXPECT_TRUE(own.empty()) << "context pool: " << own;
    if (ok) return 0;
    master_->stop();  // quiescent: no thread of ours touches the segment's pool
    auto report = probe_->pool().audit();
    if (!report) {
      ADD_FAILURE() << "audit: " << report.error().describe();
      return 0;
    }
    EXPECT_EQ(report->refcounts_fixed, 0u) << "a block's reference count was wrong";
    EXPECT_EQ(report->stale_entries_dropped, 0u) << "a held list named a freed block";
    const std::size_t lost = report->unheld_freed + report->free_relisted;
    EXPECT_LE(lost, crash_losses) << "segment pool before the audit: " << seg;
    EXPECT_EQ(pool_full(segment_pool()), "") << "the audit did not make the segment's pool full";
    return lost;
  }

 private:
  FarmOptions options_;
  TempFiles files_;
  std::unique_ptr<transport::Context> ctx_;
  std::unique_ptr<servers::Master> master_;
  std::unique_ptr<palm::test::ShmGuard> guard_;
  std::unique_ptr<shm::ShmEndpoint> probe_;
  std::unique_ptr<servers::Client> client_;
  std::vector<Worker> workers_;
  std::set<std::uint64_t> known_;
  unsigned started_ = 0;
};

// ---- a job whose producer waits at a gate ---------------------------------------------

// client.job(function) of `messages` numbered payloads on a thread of its
// own; the producer sends message n only while n < the gate, which the test
// moves (a fast farm would stream everything while one worker starts). While
// the producer waits the job drains nothing: `received` lags by at most the
// client's window, so a gate `window` past a mark lets `received` reach it.
class GatedJob {
 public:
  GatedJob(servers::Client& client, std::string function, std::uint64_t messages, std::uint64_t gate)
      : messages_(messages), gate_(std::min(gate, messages)), seqs_(messages) {
    thread_ = std::thread([this, &client, function = std::move(function)] {
      std::uint64_t sent = 0;
      result_ = client.job(
          function,
          [&](std::string& payload) {
            if (sent == messages_) return false;
            std::unique_lock lock(mu_);
            // Bounded: the test opens the gate at the latest as it ends.
            if (!cv_.wait_for(lock, 60s, [&] { return sent < gate_; })) return false;
            lock.unlock();
            payload = payload_of(sent++);
            return true;
          },
          [&](std::string_view reply) {
            seqs_.add(reply);
            received_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a count the test polls
          },
          messages_);
      done_.store(true, std::memory_order_release);  // pairs with done()'s acquire: result_ is set
    });
  }
  ~GatedJob() { finish(); }
  GatedJob(const GatedJob&) = delete;  // owns a thread
  GatedJob& operator=(const GatedJob&) = delete;

  void set_gate(std::uint64_t g) {
    {
      const std::lock_guard lock(mu_);
      gate_ = std::min(g, messages_);
    }
    cv_.notify_all();
  }
  std::uint64_t received() const { return received_.load(std::memory_order_relaxed); }
  bool done() const { return done_.load(std::memory_order_acquire); }
  bool wait_received(std::uint64_t n, std::chrono::milliseconds timeout) {
    return eventually([&] { return received() >= n || done(); }, timeout, 1ms) && received() >= n;
  }
  // Opens the gate and waits for the end of the job (bounded by the
  // client's timeout).
  const Result<std::uint64_t>& finish() {
    set_gate(messages_);
    if (thread_.joinable()) thread_.join();
    return result_;
  }
  // After finish().
  const SeqSet& seqs() const { return seqs_; }

 private:
  std::uint64_t messages_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::uint64_t gate_;  // under mu_
  std::atomic<std::uint64_t> received_{0};
  std::atomic<bool> done_{false};
  SeqSet seqs_;                     // the job's thread until finish()
  Result<std::uint64_t> result_ = 0;
  std::thread thread_;
};

// A worker of `farm` holding messages, found while the gate is opened
// `step` past `base`, a step more every 50 ms none is found (at most 40).
inline std::optional<std::size_t> holder_while_flowing(InProcessFarm& farm, GatedJob& job, std::uint64_t base,
                                                       std::uint64_t step, std::size_t turn) {
  std::optional<std::size_t> victim;
  for (std::uint64_t more = 1; !victim && more <= 40 && !job.done(); ++more) {
    job.set_gate(base + more * step);
    victim = farm.holder(turn, 50ms);
  }
  return victim;
}

}  // namespace palm::fault
