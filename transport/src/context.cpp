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
  if (!is_zmq(address->scheme)) {
    return make_error(Errc::kInvalidArgument,
                      std::string("the ") + to_string(address->scheme) +
                          ":// transport is not built yet (transports II); use tcp://, ipc:// "
                          "or inproc://");
  }
  auto transport = zmq_transport();
  if (!transport) return tl::unexpected(std::move(transport.error()));
  // Outside the lock: open waits for the bridge. The transport lives until
  // the core dies, and the caller holds the Context.
  return (*transport)->open(spec, *address);
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
  {
    std::lock_guard lock(mutex_);
    shut_down_ = true;
    zmq = zmq_.get();
  }
  if (zmq != nullptr) zmq->shutdown();
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
