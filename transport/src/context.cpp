#include "palm/transport/context.hpp"

#include <string>
#include <utility>

#include "detail/context_core.hpp"
#include "palm/core/process.hpp"
#include "palm/transport/zmq/raw_context.hpp"
#include "zmq/zmq_transport.hpp"

namespace palm::transport {

PoolConfig default_context_pool() {
  PoolConfig c;
  // 256 B .. 512 KiB: 7.5 MiB preallocated (reserving costs ~6 ms a MiB
  // here). 512 B is the class of a typical pylm message (two uuids, a
  // function, a short payload, the frame header).
  c.blocks = {2048, 2048, 1024, 256, 128, 64, 32, 16, 8, 8, 2, 1,
              // 1 .. 64 MiB, cut when used (sparse).
              32, 32, 8, 4, 4, 2, 2,
              // 128 MiB and up: off (largest_block is 64 MiB).
              0, 0, 0, 0};
  // A private pool: this process is its only user.
  c.process_slots = 1;
  c.held_per_process = std::uint32_t{1} << 16;
  return c;
}

namespace detail {

ContextCore::ContextCore(MappedRegion region, BlockPool pool, SlotId slot,
                         const ContextOptions& options, std::size_t max_message_bytes)
    : region_(std::move(region)),
      pool_(pool),
      slot_(slot),
      options_(options),
      max_message_bytes_(max_message_bytes) {}

ContextCore::~ContextCore() {
  shutdown();
  (void)pool_.detach_process(slot_);
}

Result<std::unique_ptr<Endpoint>> ContextCore::open(const EndpointSpec& spec) {
  auto address = Address::parse(spec.address);
  if (!address) return tl::unexpected(std::move(address.error()));
  if (address->scheme == Scheme::kShm) return open_shm(spec, *address);
  if (!is_zmq(address->scheme)) {
    return make_error(Errc::kInvalidArgument,
                      std::string("the ") + to_string(address->scheme) +
                          ":// scheme is not opened by Context::open; use tcp://, ipc://, "
                          "inproc:// or shm://, or open_auto (auto_select.hpp) for a palm server");
  }
  auto transport = zmq_transport();
  if (!transport) return tl::unexpected(std::move(transport.error()));
  // Outside the lock: open waits for the bridge. The transport lives until
  // the core dies, and the caller holds the Context.
  return (*transport)->open(spec, *address);
}

namespace {

// What shm:// carries (host.hpp): the bound side of push/pull, pub and
// dispatch; the connected side of push/pull, sub and worker. kInvalidArgument
// naming the way out otherwise.
Result<void> check_shm_pattern(const EndpointSpec& spec) {
  const Pattern p = spec.pattern;
  if (p == Pattern::kReq || p == Pattern::kRep) {
    return make_error(Errc::kInvalidArgument,
                      std::string("shm:// does not carry ") + to_string(p) +
                          ": request/reply and its raw bodies (the cache service) stay on tcp://; " +
                          spec.address);
  }
  if (spec.bind && (p == Pattern::kSub || p == Pattern::kWorker)) {
    return make_error(Errc::kInvalidArgument,
                      std::string("shm:// cannot bind a ") + to_string(p) + " (" + spec.address +
                          "): the segment's owner binds the pub or dispatcher, peers connect " +
                          (p == Pattern::kSub ? "subs" : "workers"));
  }
  if (!spec.bind && (p == Pattern::kPub || p == Pattern::kDispatcher)) {
    return make_error(Errc::kInvalidArgument,
                      std::string("shm:// cannot connect a ") + to_string(p) + " (" + spec.address +
                          "): bind it on the segment's owner");
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<Endpoint>> ContextCore::open_shm(const EndpointSpec& spec,
                                                       const Address& address) {
  if (auto ok = check_shm_pattern(spec); !ok) return tl::unexpected(std::move(ok.error()));
  auto [segment, service] = shm::split_shm_address(address.rest);
  if (spec.bind) {
    // Under the lock: shutdown() takes the hosts, and a bind must not race
    // it onto a host being shut down (or create one after it).
    std::lock_guard lock(mutex_);
    if (shut_down_) return make_error(Errc::kClosed, "the context is shut down");
    auto it = shm_hosts_.find(segment);
    if (it == shm_hosts_.end()) {
      auto host = shm::Host::create(segment, options_.shm);
      if (!host) return tl::unexpected(std::move(host.error()));
      it = shm_hosts_.emplace(segment, std::move(*host)).first;
    }
    auto ep = it->second.bind(spec.pattern, service, spec.shm_share_bell_with);
    if (!ep) return tl::unexpected(std::move(ep.error()));
    return std::unique_ptr<Endpoint>(std::move(*ep));
  }
  {
    std::lock_guard lock(mutex_);
    if (shut_down_) return make_error(Errc::kClosed, "the context is shut down");
  }
  shm::ConnectOptions o;
  o.service = service;
  o.credits = spec.credits;
  o.subscriptions = spec.subscriptions;
  o.timeout = options_.transport.command_timeout;
  auto ep = shm::connect(segment, spec.pattern, o);
  if (!ep) return tl::unexpected(std::move(ep.error()));
  return std::unique_ptr<Endpoint>(std::move(*ep));
}

Result<Transport*> ContextCore::zmq_transport() {
  std::lock_guard lock(mutex_);
  if (shut_down_) return make_error(Errc::kClosed, "the context is shut down");
  if (!zmq_) {
    auto t = zeromq::ZmqTransport::start(*this);
    if (!t) return tl::unexpected(std::move(t.error()));
    zmq_ = std::move(*t);
  }
  return zmq_.get();
}

Result<void*> ContextCore::zmq_context() {
  auto transport = zmq_transport();
  if (!transport) return tl::unexpected(std::move(transport.error()));
  return static_cast<zeromq::ZmqTransport*>(*transport)->zmq_context();
}

void ContextCore::shutdown() noexcept {
  Transport* zmq = nullptr;
  std::map<std::string, shm::Host> hosts;
  {
    std::lock_guard lock(mutex_);
    shut_down_ = true;
    zmq = zmq_.get();
    hosts.swap(shm_hosts_);
  }
  if (zmq != nullptr) zmq->shutdown();
  // Outside the lock: Host::shutdown joins its monitor and removes the
  // segment; its bound endpoints fail with kClosed from then on.
  hosts.clear();
}

}  // namespace detail

Result<Context> Context::create(const ContextOptions& options) {
  const TransportOptions& t = options.transport;
  const auto power_of_two = [](std::size_t n) { return n >= 2 && (n & (n - 1)) == 0; };
  if (!power_of_two(t.queue_capacity) || t.queue_capacity > (std::size_t{1} << 24)) {
    return make_error(Errc::kInvalidArgument,
                      "queue_capacity " + std::to_string(t.queue_capacity) +
                          " must be a power of two in [2, 2^24]");
  }
  if (t.hwm < 0 || t.io_threads < 1 || t.max_peers == 0 || t.max_pending_requests == 0) {
    return make_error(Errc::kInvalidArgument,
                      "transport options: hwm >= 0, io_threads >= 1, max_peers >= 1 and "
                      "max_pending_requests >= 1 are required");
  }
  const std::size_t bytes = BlockPool::region_bytes(options.pool);
  if (bytes == 0) return make_error(Errc::kInvalidArgument, "invalid pool configuration");
  auto region = MappedRegion::create_anonymous(bytes, "palm-context");
  if (!region) return tl::unexpected(std::move(region.error()));
  auto pool = BlockPool::create(region->region(), options.pool);
  if (!pool) return tl::unexpected(std::move(pool.error()));
  auto slot = pool->attach_process(self_process());
  if (!slot) return tl::unexpected(std::move(slot.error()));

  // The largest message a received frame can hold: the largest class less the
  // frame header, the longest topic and the alignment of the wire bytes.
  const std::size_t room = kFrameHeaderBytes + kMaxTopicBytes + 8;
  const std::size_t pool_limit = pool->max_capacity() > room ? pool->max_capacity() - room : 0;
  std::size_t max_message = pool_limit;
  if (t.max_message_bytes != 0) {
    if (t.max_message_bytes > pool_limit) {
      return make_error(Errc::kTooLarge,
                        "max_message_bytes " + std::to_string(t.max_message_bytes) +
                            " exceeds what the pool's largest class holds, " +
                            std::to_string(pool_limit) + "; raise PoolConfig::largest_block");
    }
    max_message = t.max_message_bytes;
  }
  auto core = std::make_shared<detail::ContextCore>(std::move(*region), *pool, *slot, options,
                                                    max_message);
  return Context(std::move(core));
}

Context::Context(std::shared_ptr<detail::ContextCore> core) noexcept : core_(std::move(core)) {}
Context::Context(Context&&) noexcept = default;
Context& Context::operator=(Context&& other) noexcept {
  if (this != &other) {
    shutdown();
    core_ = std::move(other.core_);
  }
  return *this;
}
Context::~Context() { shutdown(); }

Result<std::unique_ptr<Endpoint>> Context::open(const EndpointSpec& spec) {
  if (!core_) return make_error(Errc::kClosed, "a moved-from Context");
  return core_->open(spec);
}

BlockPool& Context::pool() const noexcept { return core_->pool(); }
SlotId Context::slot() const noexcept { return core_->slot(); }
const ContextOptions& Context::options() const noexcept { return core_->options(); }
std::size_t Context::max_message_bytes() const noexcept { return core_->max_message_bytes(); }

Result<Frame> Context::build(const MessageView& m, std::string_view topic) const noexcept {
  return Frame::build(core_->pool(), core_->slot(), m, topic);
}

Result<Frame> Context::raw(std::span<const std::byte> bytes) const noexcept {
  MessageView m;
  m.payload = bytes;
  return Frame::build(core_->pool(), core_->slot(), m);
}

Result<Frame> Context::raw(std::string_view bytes) const noexcept {
  return raw(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())));
}

void Context::shutdown() noexcept {
  if (core_) core_->shutdown();
}

Result<void*> zmq_context_of(Context& context) {
  if (!context.core_) return make_error(Errc::kClosed, "a moved-from Context");
  return context.core_->zmq_context();
}

}  // namespace palm::transport
