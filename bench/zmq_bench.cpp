// The ZeroMQ transport against raw cppzmq doing the same, in one run:
//   PingPong    round trips (client -> echo -> client), p50/p99 counters (µs)
//   Throughput  one way, as fast as the receiver takes them
// over inproc, ipc and tcp (127.0.0.1), with 64 B, 64 KiB and 1 MiB payloads.
// Same socket types (PUSH -> PULL; ping-pong: one PUSH/PULL pair each way),
// same high-water marks (hwm_for), same payloads.
//
// Both sides carry the same bytes and do the same application work: a
// PalmMessage (two uuids, a function, the payload). palm: the sender builds a
// frame (encodes it into a block), the endpoint hands it to ZeroMQ (zero-copy
// from 16 KiB), the receiver gets a frame (parsed and validated from the
// socket into a block) and checks the payload. Raw: the sender encodes into a
// zmq::message_t, the receiver validates and views it in place
// (palm::decode) and checks the payload. The echo returns what it got (palm:
// the same frame; raw: the same message_t). tcp and ipc use two contexts (two
// bridges, two sets of I/O threads), as two processes would; inproc uses one.
//
// Counters: p50_us/p99_us (round trips), cpu_us (CPU time of the whole
// process per message or round trip: steadier than the wall clock on a
// shared machine). Run scripts/zmq_bench.sh for medians of 5 and the
// palm/raw ratios. PALM_BENCH_MIN_TIME (seconds per case) and
// PALM_BENCH_ITERATIONS (fixed iterations, for callgrind) help profiling.

#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "palm/core/codec.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/endpoint.hpp"

namespace {

using namespace std::chrono_literals;
using palm::transport::Context;
using palm::transport::ContextOptions;
using palm::transport::Delivery;
using palm::transport::Endpoint;
using palm::transport::EndpointSpec;
using palm::transport::Pattern;
using palm::transport::SendResult;
using palm::WaitResult;

enum class Scheme { kInproc, kIpc, kTcp };

std::string bind_address(Scheme s, const char* name) {
  static int counter = 0;
  const std::string unique = std::to_string(::getpid()) + "-" + std::to_string(++counter) + "-" + name;
  switch (s) {
    case Scheme::kInproc: return "inproc://bench-" + unique;
    case Scheme::kIpc: return "ipc:///tmp/palm-bench-" + unique;
    case Scheme::kTcp: return "tcp://127.0.0.1:*";
  }
  return {};
}

// High-water marks and queues sized to the payload, the same for both.
int hwm_for(std::size_t payload) {
  return payload >= (1u << 20) ? 8 : payload >= (1u << 10) ? 64 : 1000;
}

ContextOptions palm_options(std::size_t payload) {
  ContextOptions o;
  // Enough blocks of the class a frame of this payload takes (the payload,
  // the other fields, the frame and block headers) for every queue.
  std::size_t block = 256;
  while (block - 64 < payload + 512) block <<= 1;
  const std::size_t budget = std::size_t{32} << 20;  // preallocated bytes, below 1 MiB
  const auto count = static_cast<std::uint32_t>(
      block >= (std::size_t{1} << 20) ? 96 : std::clamp<std::size_t>(budget / block, 256, 4096));
  o.pool.set_blocks(block, count);
  o.transport.hwm = hwm_for(payload);
  o.transport.queue_capacity = payload >= (1u << 20) ? 16 : payload >= (1u << 10) ? 64 : 1024;
  // PALM_ZERO_COPY_MIN, PALM_BRIDGE_SPIN_US and PALM_WAIT_SPIN_US override
  // the zero-copy threshold, the bridge's spin and the endpoints' (to
  // compare settings).
  if (const char* zc = std::getenv("PALM_ZERO_COPY_MIN")) {
    o.transport.zero_copy_threshold = std::strtoull(zc, nullptr, 10);
  }
  if (const char* spin = std::getenv("PALM_BRIDGE_SPIN_US")) {
    o.transport.bridge_spin = std::chrono::microseconds(std::atoi(spin));
  }
  if (const char* spin = std::getenv("PALM_WAIT_SPIN_US")) {
    o.transport.wait_spin = std::chrono::microseconds(std::atoi(spin));
  }
  return o;
}

// The message both sides send: what a pylm client's eval carries.
struct Message {
  std::vector<std::byte> payload;
  palm::MessageView view;
  explicit Message(std::size_t n) : payload(n) {
    for (std::size_t i = 0; i < n; ++i) payload[i] = static_cast<std::byte>(i * 131);
    view.pipeline = "3d99e99b-2554-435d-81e0-ac9d42c65db8";
    view.client = "663d6598-1339-4747-afab-1b65934e8c1c";
    view.function = "bench.echo";
    view.payload = payload;
  }
};

// A frame of `m`, retrying while the pool's class is empty (the frames in
// flight come back as the receiver releases them).
palm::Frame build(Context& ctx, const Message& m) {
  for (;;) {
    auto f = ctx.build(m.view);
    if (f) return std::move(*f);
    if (f.error().code != palm::Errc::kExhausted) {
      std::fprintf(stderr, "build: %s\n", f.error().describe().c_str());
      std::abort();
    }
    std::this_thread::yield();
  }
}

bool palm_check(const Delivery& d, std::size_t n) {
  auto v = d.frame.view();
  return v && v->message.payload.size() == n &&
         (n == 0 || v->message.payload[n - 1] == static_cast<std::byte>((n - 1) * 131));
}

void percentiles(benchmark::State& state, std::vector<double>& rtt_ns) {
  if (rtt_ns.empty()) return;
  std::sort(rtt_ns.begin(), rtt_ns.end());
  state.counters["p50_us"] = rtt_ns[rtt_ns.size() / 2] / 1000.0;
  state.counters["p99_us"] = rtt_ns[rtt_ns.size() * 99 / 100] / 1000.0;
}

// CPU time of the whole process (every thread: the application's, palm's
// bridges, ZeroMQ's I/O threads), in ns. Per message, it is what a transport
// costs on this shared machine more steadily than the wall clock: a busy
// neighbour slows the wall clock, not the work done per message.
double process_cpu_ns() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return (static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e9) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e3;
}

// Sets the cpu_us counter: process CPU time per iteration (message or round
// trip), µs.
struct CpuMeter {
  double start = process_cpu_ns();
  void report(benchmark::State& state) const {
    if (state.iterations() == 0) return;
    state.counters["cpu_us"] =
        (process_cpu_ns() - start) / 1000.0 / static_cast<double>(state.iterations());
  }
};

std::unique_ptr<Endpoint> open(Context& ctx, const EndpointSpec& spec) {
  auto ep = ctx.open(spec);
  if (!ep) {
    std::fprintf(stderr, "open %s: %s\n", spec.address.c_str(), ep.error().describe().c_str());
    std::abort();
  }
  return std::move(*ep);
}

// Two contexts for ipc/tcp (as two processes), one for inproc.
struct PalmPair {
  std::optional<Context> a, b;
  Context& server() { return *a; }
  Context& client() { return b ? *b : *a; }
  PalmPair(Scheme s, std::size_t payload) {
    a.emplace(std::move(*Context::create(palm_options(payload))));
    if (s != Scheme::kInproc) b.emplace(std::move(*Context::create(palm_options(payload))));
  }
};

// ---- palm ------------------------------------------------------------------

template <Scheme S>
void BM_PalmPingPong(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  const Message m(n);
  PalmPair ctx(S, n);
  auto server_in = open(ctx.server(), EndpointSpec::bind_to(Pattern::kPull, bind_address(S, "in")));
  auto client_in = open(ctx.client(), EndpointSpec::bind_to(Pattern::kPull, bind_address(S, "back")));
  auto client_out = open(ctx.client(), EndpointSpec::connect_to(Pattern::kPush, server_in->address()));
  auto server_out = open(ctx.server(), EndpointSpec::connect_to(Pattern::kPush, client_in->address()));
  std::atomic<bool> stop{false};
  std::thread echo([&] {
    (void)::pthread_setname_np(::pthread_self(), "echo");
    Delivery d;
    while (!stop.load(std::memory_order_relaxed)) {
      if (server_in->recv_for(d, 10ms) != WaitResult::kReady) continue;
      palm::Frame f = std::move(d.frame);
      if (server_out->send_for(f, 10s) != SendResult::kQueued) std::abort();
    }
  });
  std::vector<double> rtt;
  rtt.reserve(static_cast<std::size_t>(state.max_iterations));
  Delivery d;
  const CpuMeter cpu;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    palm::Frame f = build(ctx.client(), m);
    if (client_out->send_for(f, 10s) != SendResult::kQueued) std::abort();
    if (client_in->recv_for(d, 10s) != WaitResult::kReady || !palm_check(d, n)) std::abort();
    d.frame.reset();
    rtt.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
  }
  stop = true;
  echo.join();
  cpu.report(state);
  percentiles(state, rtt);
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n) * 2);
}

template <Scheme S>
void BM_PalmThroughput(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  const Message m(n);
  PalmPair ctx(S, n);
  auto in = open(ctx.server(), EndpointSpec::bind_to(Pattern::kPull, bind_address(S, "in")));
  auto out = open(ctx.client(), EndpointSpec::connect_to(Pattern::kPush, in->address()));
  std::atomic<bool> go{false};
  const auto total = state.max_iterations;
  std::thread sender([&] {
    (void)::pthread_setname_np(::pthread_self(), "sender");
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    for (benchmark::IterationCount i = 0; i < total; ++i) {
      palm::Frame f = build(ctx.client(), m);
      if (out->send_for(f, 10s) != SendResult::kQueued) std::abort();
    }
  });
  Delivery d;
  const CpuMeter cpu;
  go.store(true, std::memory_order_release);
  for (auto _ : state) {
    if (in->recv_for(d, 10s) != WaitResult::kReady || !palm_check(d, n)) std::abort();
    d.frame.reset();
  }
  sender.join();
  cpu.report(state);
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n));
}

// ---- raw cppzmq ----------------------------------------------------------------

struct RawPair {
  zmq::context_t a{1};
  std::optional<zmq::context_t> b;
  zmq::context_t& server() { return a; }
  zmq::context_t& client() { return b ? *b : a; }
  explicit RawPair(Scheme s) {
    if (s != Scheme::kInproc) b.emplace(1);
  }
};

zmq::socket_t raw_socket(zmq::context_t& c, zmq::socket_type t, int hwm) {
  zmq::socket_t s(c, t);
  s.set(zmq::sockopt::sndhwm, hwm);
  s.set(zmq::sockopt::rcvhwm, hwm);
  s.set(zmq::sockopt::linger, 500);
  return s;
}

std::string raw_bind(zmq::socket_t& s, Scheme scheme, const char* name) {
  s.bind(bind_address(scheme, name));
  return s.get(zmq::sockopt::last_endpoint);
}

// Removes the socket files of raw ipc binds at the end of a benchmark
// (ZeroMQ 4.3 leaves the files of explicit ipc paths; palm removes its own).
struct IpcFiles {
  std::vector<std::string> addresses;
  ~IpcFiles() {
    for (const std::string& a : addresses) {
      if (a.rfind("ipc://", 0) == 0) ::unlink(a.c_str() + 6);
    }
  }
};

// The raw side does the application's work palm does for it: the sender
// encodes the message into the zmq message (palm: into a block), the
// receiver validates and views it (palm::decode; palm parses it into a block)
// and checks the payload as palm_check does.
zmq::message_t raw_message(const Message& m) {
  zmq::message_t msg(palm::encoded_size(m.view));
  (void)palm::encode(m.view, std::span<std::byte>(static_cast<std::byte*>(msg.data()), msg.size()));
  return msg;
}

bool raw_check(const zmq::message_t& msg, const Message& m) {
  const auto* data = static_cast<const std::byte*>(msg.data());
  auto v = palm::decode(std::span<const std::byte>(data, msg.size()));
  const std::size_t n = m.payload.size();
  return v && v->payload.size() == n && (n == 0 || v->payload[n - 1] == m.payload[n - 1]);
}

template <Scheme S>
void BM_RawPingPong(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  const Message m(n);
  const int hwm = hwm_for(n);
  RawPair ctx(S);
  // Declared before the thread: the sockets outlive it.
  auto server_in = raw_socket(ctx.server(), zmq::socket_type::pull, hwm);
  auto client_in = raw_socket(ctx.client(), zmq::socket_type::pull, hwm);
  const std::string in_addr = raw_bind(server_in, S, "in");
  const std::string back_addr = raw_bind(client_in, S, "back");
  const IpcFiles files{{in_addr, back_addr}};
  auto client_out = raw_socket(ctx.client(), zmq::socket_type::push, hwm);
  auto server_out = raw_socket(ctx.server(), zmq::socket_type::push, hwm);
  client_out.connect(in_addr);
  server_out.connect(back_addr);
  server_in.set(zmq::sockopt::rcvtimeo, 10);
  std::atomic<bool> stop{false};
  std::thread echo([&] {
    (void)::pthread_setname_np(::pthread_self(), "echo");
    zmq::message_t msg;
    while (!stop.load(std::memory_order_relaxed)) {
      if (!server_in.recv(msg)) continue;  // timeout
      server_out.send(msg, zmq::send_flags::none);
    }
  });
  std::vector<double> rtt;
  rtt.reserve(static_cast<std::size_t>(state.max_iterations));
  zmq::message_t reply;
  const CpuMeter cpu;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    zmq::message_t msg = raw_message(m);
    client_out.send(msg, zmq::send_flags::none);
    if (!client_in.recv(reply) || !raw_check(reply, m)) std::abort();
    rtt.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
  }
  stop = true;
  echo.join();
  cpu.report(state);
  percentiles(state, rtt);
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n) * 2);
}

template <Scheme S>
void BM_RawThroughput(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  const Message m(n);
  const int hwm = hwm_for(n);
  RawPair ctx(S);
  auto in = raw_socket(ctx.server(), zmq::socket_type::pull, hwm);
  const std::string addr = raw_bind(in, S, "in");
  const IpcFiles files{{addr}};
  auto out = raw_socket(ctx.client(), zmq::socket_type::push, hwm);
  out.connect(addr);
  std::atomic<bool> go{false};
  const auto total = state.max_iterations;
  std::thread sender([&] {
    (void)::pthread_setname_np(::pthread_self(), "sender");
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    for (benchmark::IterationCount i = 0; i < total; ++i) {
      zmq::message_t msg = raw_message(m);
      out.send(msg, zmq::send_flags::none);
    }
  });
  zmq::message_t msg;
  const CpuMeter cpu;
  go.store(true, std::memory_order_release);
  for (auto _ : state) {
    if (!in.recv(msg) || !raw_check(msg, m)) std::abort();
  }
  sender.join();
  cpu.report(state);
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n));
}

// The least time per case, in seconds: 0.3, or PALM_BENCH_MIN_TIME (longer
// runs for a profiler, whose samples would otherwise be mostly set-up).
double min_time() {
  const char* t = std::getenv("PALM_BENCH_MIN_TIME");
  return t != nullptr ? std::atof(t) : 0.3;
}

// PALM_BENCH_ITERATIONS fixes the iterations per case instead (one run, no
// estimation: instruction counts per message under callgrind).
void timing(benchmark::internal::Benchmark* b) {
  b->UseRealTime();
  if (const char* n = std::getenv("PALM_BENCH_ITERATIONS")) {
    b->Iterations(std::atoll(n));
  } else {
    b->MinTime(min_time());
  }
}

void sizes(benchmark::internal::Benchmark* b) {
  b->Arg(64)->Arg(64 << 10)->Arg(1 << 20);
  timing(b);
}

// Where copying stops paying (TransportOptions::zero_copy_threshold): run
// with PALM_ZERO_COPY_MIN=1 and =1000000000 and compare.
void crossover(benchmark::internal::Benchmark* b) {
  b->Arg(1 << 10)->Arg(4 << 10)->Arg(16 << 10)->Arg(32 << 10);
  timing(b);
}
BENCHMARK_TEMPLATE(BM_PalmThroughput, Scheme::kIpc)->Name("ZeroCopyCrossover/ipc")->Apply(crossover);

#define PALM_ZMQ_BENCH(scheme)                              \
  BENCHMARK_TEMPLATE(BM_PalmPingPong, scheme)->Apply(sizes);   \
  BENCHMARK_TEMPLATE(BM_RawPingPong, scheme)->Apply(sizes);    \
  BENCHMARK_TEMPLATE(BM_PalmThroughput, scheme)->Apply(sizes); \
  BENCHMARK_TEMPLATE(BM_RawThroughput, scheme)->Apply(sizes);

PALM_ZMQ_BENCH(Scheme::kInproc)
PALM_ZMQ_BENCH(Scheme::kIpc)
PALM_ZMQ_BENCH(Scheme::kTcp)

}  // namespace
