#include "demo.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "palm/core/doorbell.hpp"
#include "palm/core/frame.hpp"
#include "palm/core/pool.hpp"
#include "palm/core/process.hpp"
#include "palm/core/spsc_ring.hpp"
#include "palm/transport/shm/segment.hpp"

namespace palm::tools {
namespace {

using Clock = std::chrono::steady_clock;
using Ring = SpscRing<std::uint64_t>;

constexpr std::uint32_t kChannelCapacity = 1024;
// How long one side waits for the other before it checks that its peer is
// alive; a wait is never unbounded.
constexpr auto kPeerCheck = std::chrono::milliseconds(500);
constexpr auto kGiveUp = std::chrono::seconds(30);

// The channel area: the consumer's doorbell (rung when an item is pushed),
// the producer's (rung when room is made), then the ring.
struct ChannelArea {
  Doorbell* to_consumer;
  Doorbell* to_producer;
  Ring* ring;
};

std::size_t channel_area_bytes() { return 2 * sizeof(Doorbell) + Ring::bytes_for(kChannelCapacity); }

PoolConfig demo_pool_config(std::size_t payload) {
  PoolConfig cfg;
  // Enough blocks of the payload's class for a full channel plus the one in
  // each side's hand.
  std::size_t block = 256;
  while (block - 64 < payload + 256) block <<= 1;
  cfg.set_blocks(block, std::max<std::uint32_t>(cfg.blocks[0], kChannelCapacity + 64));
  return cfg;
}

Result<ChannelArea> channel_area(const shm::Segment& seg, bool create) {
  auto area = seg.area("channel");
  if (!area) return tl::unexpected(area.error());
  std::byte* p = area->base;
  ChannelArea c{};
  c.to_consumer = create ? Doorbell::create_at(p) : Doorbell::attach_at(p);
  c.to_producer = create ? Doorbell::create_at(p + sizeof(Doorbell)) : Doorbell::attach_at(p + sizeof(Doorbell));
  std::byte* ring_mem = p + 2 * sizeof(Doorbell);
  const std::size_t ring_bytes = area->bytes - 2 * sizeof(Doorbell);
  auto ring = create ? Ring::create_at(ring_mem, ring_bytes, kChannelCapacity)
                     : Ring::attach_at(ring_mem, ring_bytes);
  if (!ring) return tl::unexpected(ring.error());
  c.ring = *ring;
  return c;
}

Result<BlockPool> pool_of(const shm::Segment& seg, bool create, std::size_t payload) {
  auto area = seg.area("pool");
  if (!area) return tl::unexpected(area.error());
  const Region region{area->base, area->bytes, area->fd, area->file_offset};
  return create ? BlockPool::create(region, demo_pool_config(payload)) : BlockPool::attach(region);
}

// The payload of message `seq`: its number, then bytes derived from it, so
// the consumer can check every byte.
void fill_payload(std::byte* out, std::size_t n, std::uint64_t seq) {
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((seq * 31 + i * 7) & 0xff);
  if (n >= sizeof seq) std::memcpy(out, &seq, sizeof seq);
}

bool check_payload(std::span<const std::byte> p, std::size_t n, std::uint64_t seq) {
  if (p.size() != n) return false;
  std::vector<std::byte> want(n);
  fill_payload(want.data(), n, seq);
  return std::memcmp(p.data(), want.data(), n) == 0;
}

std::optional<ProcessId> owner_alive(const shm::Segment& seg) {
  const ProcessId owner = seg.owner();
  if (process_alive(owner)) return owner;
  return std::nullopt;
}

int fail(const char* who, const Error& e) {
  std::fprintf(stderr, "palm demo %s: %s\n", who, e.describe().c_str());
  return 1;
}

}  // namespace

int run_demo_producer(const std::string& name, const DemoOptions& o) {
  auto seg = shm::Segment::open(name);
  if (!seg) return fail("producer", seg.error());
  auto pool = pool_of(*seg, false, o.payload);
  if (!pool) return fail("producer", pool.error());
  auto chan = channel_area(*seg, false);
  if (!chan) return fail("producer", chan.error());
  auto slot = pool->attach_process(self_process());
  if (!slot) return fail("producer", slot.error());

  MessageView fields;
  fields.pipeline = "palm-demo";
  fields.client = "palm-demo-consumer";
  fields.function = "demo.echo";
  for (std::uint64_t seq = 0; seq <= o.messages; ++seq) {
    std::uint64_t item = 0;  // handle bits; 0 (the null handle) ends the stream
    if (seq < o.messages) {
      FrameWriter w;
      if (auto r = w.begin(*pool, *slot, fields, {}, o.payload); !r) return fail("producer", r.error());
      fill_payload(w.payload().data(), o.payload, seq);
      auto h = w.commit(o.payload);
      if (!h) return fail("producer", h.error());
      // The reference leaves this process with the push: unhold first, so a
      // crash in between leaks the block (audit finds it) rather than
      // leaving it both here and in the channel.
      if (auto r = pool->unhold(*slot, *h); !r) return fail("producer", r.error());
      item = h->bits();
      if (seq < o.show) {
        std::printf("producer: message %llu, %zu B payload, handle %016llx\n",
                    static_cast<unsigned long long>(seq), o.payload,
                    static_cast<unsigned long long>(item));
        std::fflush(stdout);
      }
    }
    const auto t0 = Clock::now();
    while (!chan->ring->try_push(item)) {
      const auto r = chan->to_producer->wait_for(
          [&] { return chan->ring->size_approx() < chan->ring->capacity(); }, kPeerCheck);
      if (r == WaitResult::kShutdown) return 1;
      if (r == WaitResult::kTimeout && (!owner_alive(*seg) || Clock::now() - t0 > kGiveUp)) {
        std::fprintf(stderr, "palm demo producer: the consumer stopped taking messages\n");
        return 1;
      }
    }
    chan->to_consumer->ring_if_waiting();
  }
  (void)pool->detach_process(*slot);
  return 0;
}

int run_demo_consumer(const std::string& name, const DemoOptions& o) {
  auto seg = shm::Segment::open(name);
  if (!seg) return fail("consumer", seg.error());
  auto pool = pool_of(*seg, false, o.payload);
  if (!pool) return fail("consumer", pool.error());
  auto chan = channel_area(*seg, false);
  if (!chan) return fail("consumer", chan.error());
  auto slot = pool->attach_process(self_process());
  if (!slot) return fail("consumer", slot.error());

  std::uint64_t seq = 0;
  std::uint64_t bytes = 0;
  const auto start = Clock::now();
  for (;;) {
    std::uint64_t item = 0;
    const auto t0 = Clock::now();
    while (!chan->ring->try_pop(item)) {
      const auto r = chan->to_consumer->wait_for([&] { return chan->ring->size_approx() > 0; },
                                                 kPeerCheck);
      if (r == WaitResult::kShutdown) return 1;
      if (r == WaitResult::kTimeout && (!owner_alive(*seg) || Clock::now() - t0 > kGiveUp)) {
        std::fprintf(stderr, "palm demo consumer: no message for too long\n");
        return 1;
      }
    }
    chan->to_producer->ring_if_waiting();
    const Handle h = Handle::from_bits(item);
    if (h.is_null()) break;
    if (auto r = pool->hold(*slot, h); !r) return fail("consumer", r.error());
    Frame frame(*pool, *slot, h);
    auto v = frame.view();
    if (!v) return fail("consumer", v.error());
    if (v->message.function != "demo.echo" || !check_payload(v->message.payload, o.payload, seq)) {
      std::fprintf(stderr, "palm demo consumer: message %llu arrived damaged\n",
                   static_cast<unsigned long long>(seq));
      return 1;
    }
    if (seq < o.show) {
      std::printf("consumer: message %llu, function %.*s, %zu B payload verified in place\n",
                  static_cast<unsigned long long>(seq), static_cast<int>(v->message.function.size()),
                  v->message.function.data(), v->message.payload.size());
      std::fflush(stdout);
    }
    bytes += v->message.payload.size();
    ++seq;
  }
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  if (seq != o.messages) {
    std::fprintf(stderr, "palm demo consumer: got %llu messages of %llu\n",
                 static_cast<unsigned long long>(seq), static_cast<unsigned long long>(o.messages));
    return 1;
  }
  std::printf("consumer: %llu messages, %.1f MB of payload in %.3f s: %.0f messages/s, %.1f MB/s\n",
              static_cast<unsigned long long>(seq), static_cast<double>(bytes) / 1e6, secs,
              static_cast<double>(seq) / secs, static_cast<double>(bytes) / 1e6 / secs);
  (void)pool->detach_process(*slot);
  return 0;
}

namespace {

std::atomic<bool> g_interrupted{false};
void on_signal(int) { g_interrupted.store(true, std::memory_order_relaxed); }  // relaxed: a flag polled by the parent loop

pid_t spawn_side(const char* role, const std::string& segment, const DemoOptions& o) {
  std::vector<std::string> args = {"palm",      "demo-peer",  "--role",
                                   role,        "--segment",  segment,
                                   "--messages", std::to_string(o.messages),
                                   "--payload", std::to_string(o.payload),
                                   "--show",    std::to_string(o.show)};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execv("/proc/self/exe", argv.data());
    std::perror("palm demo: exec");
    ::_exit(127);
  }
  return pid;
}

}  // namespace

int run_demo(const DemoOptions& o) {
  // Segments left by a crashed demo or server of this user go first.
  for (const auto& stale : shm::remove_stale_segments("palm-")) {
    std::printf("palm demo: removed stale segment /dev/shm/%s\n", stale.c_str());
  }
  const std::string name = "palm-demo-" + std::to_string(::getpid());
  auto seg = shm::Segment::create(
      name, {{"pool", BlockPool::region_bytes(demo_pool_config(o.payload))},
             {"channel", channel_area_bytes()}});
  if (!seg) return fail("", seg.error());
  struct Remove {
    std::string n;
    ~Remove() { shm::Segment::remove(n); }
  } remove{name};
  auto pool = pool_of(*seg, true, o.payload);
  if (!pool) return fail("", pool.error());
  auto chan = channel_area(*seg, true);
  if (!chan) return fail("", chan.error());
  std::printf("palm demo: segment /dev/shm/%s, %llu messages of %zu B, channel of %u handles\n",
              name.c_str(), static_cast<unsigned long long>(o.messages), o.payload, kChannelCapacity);

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);

  std::vector<pid_t> children = {spawn_side("consumer", name, o), spawn_side("producer", name, o)};
  int failures = 0;
  std::size_t running = children.size();
  while (running > 0) {
    int st = 0;
    const pid_t pid = ::waitpid(-1, &st, 0);
    if (pid < 0) {
      if (errno != EINTR) break;
      if (g_interrupted.load(std::memory_order_relaxed)) {
        for (pid_t c : children) ::kill(c, SIGTERM);  // only our own children
      }
      continue;
    }
    --running;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      ++failures;
      for (pid_t c : children) {
        if (c != pid) ::kill(c, SIGTERM);
      }
    }
  }
  // Both sides are gone: return whatever a failed side held, then check.
  for (std::uint32_t s = 0; s < 32; ++s) (void)pool->reclaim_dead(SlotId{s});
  if (failures == 0) {
    const auto stats = pool->stats();
    if (!stats.all_free()) {
      std::fprintf(stderr, "palm demo: %zu blocks still allocated after the run\n",
                   stats.allocated_blocks);
      return 1;
    }
    std::printf("palm demo: every block back in the pool; segment removed\n");
  }
  if (g_interrupted.load(std::memory_order_relaxed)) {
    std::printf("palm demo: interrupted; both sides stopped, their blocks reclaimed, segment removed\n");
    return 130;
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace palm::tools
