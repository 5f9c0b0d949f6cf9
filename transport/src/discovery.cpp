#include "palm/transport/discovery.hpp"

#include <pthread.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <random>
#include <utility>

namespace palm::transport {

namespace {

// Bumped in a forked child: a generator seeded before the fork would give
// the child the parent's sequence of uuids.
std::atomic<std::uint64_t> fork_generation{0};

void count_fork() noexcept {
  // Relaxed: the child has one thread here; its threads start after.
  fork_generation.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

void make_uuid4(Uuid4Text& out) noexcept {
  // One 64-bit Mersenne twister per thread, seeded once from the OS
  // (random_device reads getrandom(2): a system call per uuid would cost
  // more than the message). Not a secret: pylm's cache keys need to be
  // unique, not unguessable. Reseeded after a fork, so a child does not
  // repeat its parent's sequence.
  static const int registered = pthread_atfork(nullptr, nullptr, count_fork);
  static_cast<void>(registered);
  struct Seeded {
    std::mt19937_64 generate;
    std::uint64_t generation = fork_generation.load(std::memory_order_relaxed);
    Seeded() {
      std::random_device os;
      std::seed_seq seq{os(), os(), os(), os(), os(), os(), os(), os()};
      generate.seed(seq);
    }
  };
  thread_local std::optional<Seeded> seeded;
  const std::uint64_t now = fork_generation.load(std::memory_order_relaxed);
  if (!seeded || seeded->generation != now) seeded.emplace();
  std::uint64_t hi = seeded->generate();
  std::uint64_t lo = seeded->generate();
  // RFC 4122: version 4 (bits 76-79 = 0100), variant 10 (bits 62-63).
  hi = (hi & ~std::uint64_t{0xF000}) | std::uint64_t{0x4000};
  lo = (lo & ~(std::uint64_t{3} << 62)) | (std::uint64_t{2} << 62);
  // A byte at a time through a table of its two hex digits: the master
  // makes one uuid per message (pylm's cache key), and a nibble at a time
  // cost ~160 instructions of it.
  static constexpr auto kPairs = [] {
    std::array<char, 512> t{};
    constexpr char kHex[] = "0123456789abcdef";
    for (std::size_t b = 0; b < 256; ++b) {
      t[2 * b] = kHex[b >> 4];
      t[2 * b + 1] = kHex[b & 0xF];
    }
    return t;
  }();
  std::size_t at = 0;
  // `bytes` bytes of `word`, most significant first, from byte `first` (0 = the top one).
  const auto put = [&](std::uint64_t word, int first, int bytes) {
    for (int i = first; i < first + bytes; ++i) {
      const std::size_t b = (word >> (56 - 8 * i)) & 0xFF;
      out[at++] = kPairs[2 * b];
      out[at++] = kPairs[2 * b + 1];
    }
  };
  put(hi, 0, 4);
  out[at++] = '-';
  put(hi, 4, 2);
  out[at++] = '-';
  put(hi, 6, 2);
  out[at++] = '-';
  put(lo, 0, 2);
  out[at++] = '-';
  put(lo, 2, 6);
}

std::string make_uuid4() {
  Uuid4Text text;
  make_uuid4(text);
  return std::string(text.data(), text.size());
}

Result<DiscoveryClient> DiscoveryClient::connect(Context& context, std::string db_address,
                                                 std::string server_name) {
  auto endpoint = context.open(EndpointSpec::connect_to(Pattern::kReq, std::move(db_address)));
  if (!endpoint) return tl::unexpected(std::move(endpoint.error()));
  return DiscoveryClient(context, std::move(*endpoint), std::move(server_name));
}

DiscoveryClient::DiscoveryClient(Context& context, std::unique_ptr<Endpoint> endpoint,
                                 std::string server_name)
    : context_(&context),
      endpoint_(std::move(endpoint)),
      server_name_(std::move(server_name)),
      client_id_(make_uuid4()) {}

DiscoveryClient::DiscoveryClient(DiscoveryClient&&) noexcept = default;
DiscoveryClient& DiscoveryClient::operator=(DiscoveryClient&&) noexcept = default;
DiscoveryClient::~DiscoveryClient() = default;

Result<std::string> DiscoveryClient::get(std::string_view key, std::chrono::milliseconds timeout) {
  return request("get", {}, std::as_bytes(std::span<const char>(key.data(), key.size())), timeout);
}

Result<std::string> DiscoveryClient::request(std::string_view instruction, std::string_view cache,
                                             std::span<const std::byte> payload,
                                             std::chrono::milliseconds timeout) {
  std::lock_guard lock(*mutex_);
  const std::string pipeline = make_uuid4();
  std::string function = server_name_;
  function += '.';
  function += instruction;
  MessageView m;
  m.pipeline = pipeline;
  m.client = client_id_;
  m.function = function;
  m.cache = cache;
  m.payload = payload;
  const std::string_view key(reinterpret_cast<const char*>(payload.data()),
                             std::min<std::size_t>(payload.size(), 64));
  auto frame = context_->build(m);
  if (!frame) return tl::unexpected(std::move(frame.error()));

  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const auto left = [&] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(deadline -
                                                                std::chrono::steady_clock::now());
  };
  const std::uint64_t token = next_token_++;
  Envelope to;
  to.peer = static_cast<PeerId>(token);
  const SendResult sent = endpoint_->send_for(*frame, left(), to);
  if (sent == SendResult::kTimeout) {
    return make_error(Errc::kTimeout, "the request for '" + std::string(key) + "' could not be queued");
  }
  if (sent != SendResult::kQueued) {
    return make_error(Errc::kClosed, std::string("the discovery endpoint refused the request: ") +
                                         to_string(sent));
  }
  // Replies to earlier requests (abandoned after their timeout) carry older
  // tokens: skip them. Bounded by the deadline.
  for (;;) {
    Delivery d;
    const WaitResult r = endpoint_->recv_for(d, left());
    if (r == WaitResult::kTimeout) {
      return make_error(Errc::kTimeout, "no reply from " + endpoint_->address() + " for '" +
                                            std::string(key) + "' within " +
                                            std::to_string(timeout.count()) + " ms");
    }
    if (r == WaitResult::kShutdown) return make_error(Errc::kClosed, "the context is shut down");
    if (d.peer != to.peer || d.event != Event::kMessage) continue;
    auto view = d.frame.view();
    if (!view) return tl::unexpected(std::move(view.error()));
    const auto reply = view->message.payload;
    return std::string(reinterpret_cast<const char*>(reply.data()), reply.size());
  }
}

}  // namespace palm::transport
