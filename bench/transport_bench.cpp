// palm Endpoints over shm://, ipc:// and tcp://127.0.0.1 in one run:
//   PingPong    round trip client -> echo -> client (64 B, 1 MiB), p50/p99 (µs)
//   Throughput  one way, as fast as the receiver takes them (64 B, 4 KiB, 1 MiB)
// Rows are named <Bench>/<scheme>/<payload>; scripts/transport_bench.sh runs
// them with repetitions and prints the medians with the ratios shm/tcp and
// shm/ipc side by side.
//
// Peers are threads of this process, each side with its own Context (its
// own pool, bridge and I/O threads for ZeroMQ), as two processes would have.
// shm: the server's Context binds shm://SEGMENT/in (kPull) and
// shm://SEGMENT/back (kPush), which creates the segment; the client's
// Context connects a kPush to in and a kPull to back (it attaches to the
// segment as a peer process does). ipc/tcp: a bound kPull on each side, a
// connected kPush to the other's.
//
// The message is a PalmMessage (two uuids, a function, the payload). Below
// 64 KiB the producer builds a fresh frame for every message (writing its
// bytes, as an application does): in the shm endpoint's pool on shm
// (ShmEndpoint::pool(), so nothing is copied), in the Context's pool on
// ZeroMQ. From 64 KiB the payload is written once into one frame and every
// message is a new reference to it (Frame::share): on shm nothing is copied
// at all, on ZeroMQ the send is zero-copy (TransportOptions::
// zero_copy_threshold) and the receiving bridge copies once from the socket.
// The echo returns the frame it got. The receiver checks the size and the
// last payload byte. Counter `copies`: frames the shm endpoints had to copy
// into the segment (0 expected).
//
// Every segment is removed at exit (the server Context's shutdown, and a
// guard that unlinks the name if a benchmark stops early); ipc socket files
// are removed by the endpoints that bound them.

#include <benchmark/benchmark.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "palm/core/codec.hpp"
#include "palm/core/frame.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/endpoint.hpp"
#include "palm/transport/shm/host.hpp"

namespace {

using namespace std::chrono_literals;
using palm::Frame;
using palm::WaitResult;
using palm::transport::Context;
using palm::transport::ContextOptions;
using palm::transport::Delivery;
using palm::transport::Endpoint;
using palm::transport::EndpointSpec;
using palm::transport::Pattern;
using palm::transport::SendResult;

// Before any benchmark: the transport's INFO lines (a segment served, a
// peer attached) would interleave with the table, so its logger is set to
// WARNING before any Context exists (the transport uses a registered
// "palm.transport" as it is); and segments of an earlier run that died
// (palm-bench-<pid>-..., its pid gone) are removed.
[[maybe_unused]] const bool prepared = [] {
  auto logger = spdlog::get("palm.transport");
  if (!logger) logger = spdlog::stderr_color_mt("palm.transport");
  logger->set_level(spdlog::level::warn);
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("palm-bench-", 0) != 0) continue;
    const long pid = std::atol(name.c_str() + 11);
    if (pid > 0 && !std::filesystem::exists("/proc/" + std::to_string(pid))) {
      ::shm_unlink(("/" + name).c_str());
    }
  }
  return true;
}();

enum class Kind { kShm, kIpc, kTcp };

constexpr std::size_t kShareFrom = 64 << 10;  // payloads from here: one frame, shared

std::string unique(const char* tag) {
  static int counter = 0;  // benchmarks run one at a time, on the main thread
  return "palm-bench-" + std::to_string(::getpid()) + "-" + std::to_string(++counter) + "-" + tag;
}

// The block a frame of this payload takes (payload, other fields, frame and
// block headers).
std::size_t block_for(std::size_t payload) {
  std::size_t block = 256;
  while (block - 64 < payload + 512) block <<= 1;
  return block;
}

ContextOptions options_for(std::size_t payload) {
  ContextOptions o;
  const std::size_t block = block_for(payload);
  const bool large = block >= (std::size_t{1} << 20);
  // Enough blocks of that class for every queue and channel on the way.
  const auto count = static_cast<std::uint32_t>(
      large ? 32 : std::clamp<std::size_t>((std::size_t{16} << 20) / block, 256, 4096));
  o.pool.set_blocks(block, count);
  o.shm.pool.set_blocks(block, count);
  o.transport.hwm = large ? 8 : payload >= 1024 ? 64 : 1000;
  o.transport.queue_capacity = large ? 16 : payload >= 1024 ? 64 : 1024;
  o.shm.channel_capacity = large ? 16 : payload >= 1024 ? 256 : 1024;
  return o;
}

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

bool check(const Delivery& d, std::size_t n) {
  auto v = d.frame.view();
  return v && v->message.payload.size() == n &&
         (n == 0 || v->message.payload[n - 1] == static_cast<std::byte>((n - 1) * 131));
}

// Unlinks a segment name when it goes out of scope (the Context's shutdown
// removes it first; this covers a benchmark that stops early).
struct SegmentGuard {
  std::string name;
  ~SegmentGuard() {
    if (!name.empty()) ::shm_unlink(("/" + name).c_str());
  }
};

// Both sides of one link: the server's pull ("in") and push ("back"), the
// client's push (to "in") and pull (from "back").
struct Link {
  SegmentGuard segment;
  std::optional<Context> server, client;
  std::unique_ptr<Endpoint> in, back, out, reply;  // server: in, back; client: out, reply
  std::string error;

  Link(Kind kind, std::size_t payload) {
    if (kind == Kind::kShm) segment.name = unique("shm");
    auto s = Context::create(options_for(payload));
    auto c = Context::create(options_for(payload));
    if (!s || !c) {
      error = "Context::create failed";
      return;
    }
    server.emplace(std::move(*s));
    client.emplace(std::move(*c));
    const auto open = [&](Context& ctx, const EndpointSpec& spec) -> std::unique_ptr<Endpoint> {
      auto ep = ctx.open(spec);
      if (!ep) {
        if (error.empty()) error = "open " + spec.address + ": " + ep.error().describe();
        return nullptr;
      }
      return std::move(*ep);
    };
    const auto address = [&](const char* tag) -> std::string {
      switch (kind) {
        case Kind::kShm: return "shm://" + segment.name + "/" + tag;
        case Kind::kIpc: return "ipc:///tmp/" + unique(tag);
        case Kind::kTcp: return "tcp://127.0.0.1:*";
      }
      return {};
    };
    if (kind == Kind::kShm) {
      in = open(*server, EndpointSpec::bind_to(Pattern::kPull, address("in")));
      back = open(*server, EndpointSpec::bind_to(Pattern::kPush, address("back")));
      if (!in || !back) return;
      out = open(*client, EndpointSpec::connect_to(Pattern::kPush, in->address()));
      reply = open(*client, EndpointSpec::connect_to(Pattern::kPull, back->address()));
    } else {
      in = open(*server, EndpointSpec::bind_to(Pattern::kPull, address("in")));
      reply = open(*client, EndpointSpec::bind_to(Pattern::kPull, address("back")));
      if (!in || !reply) return;
      out = open(*client, EndpointSpec::connect_to(Pattern::kPush, in->address()));
      back = open(*server, EndpointSpec::connect_to(Pattern::kPush, reply->address()));
    }
  }
  Link(const Link&) = delete;  // owns contexts and a segment
  Link& operator=(const Link&) = delete;
  ~Link() {
    for (auto* ep : {&out, &reply, &in, &back}) {
      if (*ep) (*ep)->close();
    }
    if (client) client->shutdown();
    if (server) server->shutdown();  // removes the segment
  }

  // Frames the shm endpoints copied into the segment.
  std::uint64_t copies() const {
    std::uint64_t n = 0;
    for (const auto* ep : {&out, &back}) {
      if (auto* s = dynamic_cast<palm::shm::ShmEndpoint*>(ep->get())) n += s->copies();
    }
    return n;
  }
};

// A frame of `m` to send through `push`: in its segment's pool when it is a
// shm endpoint, else in `ctx`'s. Retries while the class is empty (frames in
// flight come back as the receiver releases them), for at most 10 s.
std::optional<Frame> build(Endpoint& push, Context& ctx, const Message& m) {
  auto* shm = dynamic_cast<palm::shm::ShmEndpoint*>(&push);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  for (;;) {
    auto f = shm ? shm->build(m.view) : ctx.build(m.view);
    if (f) return std::move(*f);
    if (f.error().code != palm::Errc::kExhausted || std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "build: %s\n", f.error().describe().c_str());
      return std::nullopt;
    }
    std::this_thread::yield();
  }
}

// The frame for the next message: a fresh one, or a reference to `shared`.
std::optional<Frame> next_frame(Endpoint& push, Context& ctx, const Message& m, const Frame& shared) {
  if (!shared) return build(push, ctx, m);
  auto f = shared.share();
  if (!f) return std::nullopt;
  return std::move(*f);
}

void percentiles(benchmark::State& state, std::vector<double>& rtt_ns) {
  if (rtt_ns.empty()) return;
  std::sort(rtt_ns.begin(), rtt_ns.end());
  state.counters["p50_us"] = rtt_ns[rtt_ns.size() / 2] / 1000.0;
  state.counters["p99_us"] = rtt_ns[rtt_ns.size() * 99 / 100] / 1000.0;
}

template <Kind K>
void BM_PingPong(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const Message m(n);
  Link link(K, n);
  if (!link.error.empty()) {
    state.SkipWithError(link.error.c_str());
    return;
  }
  Frame shared;
  if (n >= kShareFrom) {
    auto f = build(*link.out, *link.client, m);
    if (!f) {
      state.SkipWithError("cannot build the shared frame");
      return;
    }
    shared = std::move(*f);
  }
  std::atomic<bool> stop{false};
  std::thread echo([&] {
    Delivery d;
    while (!stop.load(std::memory_order_relaxed)) {  // relaxed: a flag, joined below
      if (link.in->recv_for(d, 10ms) != WaitResult::kReady) continue;
      Frame f = std::move(d.frame);
      if (link.back->send_for(f, 10s) != SendResult::kQueued) break;  // the client times out
    }
  });
  std::vector<double> rtt;
  rtt.reserve(static_cast<std::size_t>(state.max_iterations));
  Delivery d;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    auto f = next_frame(*link.out, *link.client, m, shared);
    if (!f || link.out->send_for(*f, 10s) != SendResult::kQueued) {
      state.SkipWithError("send failed");
      break;
    }
    if (link.reply->recv_for(d, 10s) != WaitResult::kReady || !check(d, n)) {
      state.SkipWithError("no reply within 10 s, or a wrong one");
      break;
    }
    d.frame.reset();
    rtt.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
  }
  stop = true;
  echo.join();
  shared.reset();
  percentiles(state, rtt);
  state.counters["copies"] = static_cast<double>(link.copies());
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n) * 2);
  state.SetLabel(n >= kShareFrom ? "frame written once, shared" : "fresh frame per message");
}

template <Kind K>
void BM_Throughput(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const Message m(n);
  Link link(K, n);
  if (!link.error.empty()) {
    state.SkipWithError(link.error.c_str());
    return;
  }
  Frame shared;
  if (n >= kShareFrom) {
    auto f = build(*link.out, *link.client, m);
    if (!f) {
      state.SkipWithError("cannot build the shared frame");
      return;
    }
    shared = std::move(*f);
  }
  std::atomic<bool> go{false}, stop{false};
  const auto total = state.max_iterations;
  std::thread sender([&] {
    // Bounded: the receiver sets go before its loop, or stop if it gives up.
    while (!go.load(std::memory_order_acquire) && !stop.load(std::memory_order_relaxed)) {
      std::this_thread::yield();
    }
    for (benchmark::IterationCount i = 0; i < total && !stop.load(std::memory_order_relaxed); ++i) {
      auto f = next_frame(*link.out, *link.client, m, shared);
      if (!f || link.out->send_for(*f, 10s) != SendResult::kQueued) break;  // the receiver times out
    }
  });
  Delivery d;
  go.store(true, std::memory_order_release);  // pairs with the sender's acquire: the link is ready
  for (auto _ : state) {
    if (link.in->recv_for(d, 10s) != WaitResult::kReady || !check(d, n)) {
      state.SkipWithError("no message within 10 s, or a wrong one");
      break;
    }
    d.frame.reset();
  }
  stop = true;
  sender.join();
  shared.reset();
  state.counters["copies"] = static_cast<double>(link.copies());
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n));
  state.SetLabel(n >= kShareFrom ? "frame written once, shared" : "fresh frame per message");
}

void ping_sizes(benchmark::internal::Benchmark* b) { b->Arg(64)->Arg(1 << 20)->UseRealTime()->MinTime(0.3); }
void flow_sizes(benchmark::internal::Benchmark* b) {
  b->Arg(64)->Arg(4 << 10)->Arg(1 << 20)->UseRealTime()->MinTime(0.3);
}

BENCHMARK_TEMPLATE(BM_PingPong, Kind::kShm)->Name("PingPong/shm")->Apply(ping_sizes);
BENCHMARK_TEMPLATE(BM_PingPong, Kind::kIpc)->Name("PingPong/ipc")->Apply(ping_sizes);
BENCHMARK_TEMPLATE(BM_PingPong, Kind::kTcp)->Name("PingPong/tcp")->Apply(ping_sizes);
BENCHMARK_TEMPLATE(BM_Throughput, Kind::kShm)->Name("Throughput/shm")->Apply(flow_sizes);
BENCHMARK_TEMPLATE(BM_Throughput, Kind::kIpc)->Name("Throughput/ipc")->Apply(flow_sizes);
BENCHMARK_TEMPLATE(BM_Throughput, Kind::kTcp)->Name("Throughput/tcp")->Apply(flow_sizes);

}  // namespace
