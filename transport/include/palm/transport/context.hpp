#pragma once
// Context: one per process. It owns the pool that received frames land in (a
// private BlockPool in a memfd region, with the process's slot), the
// transports and their threads, and the options; endpoints are opened from
// it. Servers hold a Context& and the Endpoints it opened.
//
// Threads (DESIGN.md "Waiting, on 2 vCPUs"): the ZeroMQ transport starts one
// bridge thread, on the first tcp/ipc/inproc open, that owns every ZeroMQ
// socket of the context (ZeroMQ sockets are not thread-safe and cannot share a
// futex), plus libzmq's own I/O thread(s). Application threads never touch a
// socket: they push frames into an endpoint's send ring and pop deliveries
// from its receive ring. The bridge sleeps in poll(2) on its sockets' ZMQ_FDs
// and an eventfd that application threads write only when the bridge
// announced that it sleeps; it rings a consumer's doorbell once per batch of
// deliveries (at most 32, or 64 KiB). An idle
// context sleeps (the bridge wakes at most once a second to check itself).
//
// inproc:// connects endpoints of one Context (one ZeroMQ context per palm
// Context), i.e. threads of one process.
//
// shm://SEGMENT/SERVICE (shm/host.hpp): a bind creates segment SEGMENT on the
// first bind to it (a shm::Host the Context owns: one monitor thread per
// segment) and binds SERVICE there (push, pull, pub, dispatcher); a connect
// attaches to a segment another process serves (push, pull, sub, worker). A
// shm sub's subscriptions are in place when open returns (shm::connect): what
// is published afterwards reaches it (on tcp a subscription reaches the
// publisher later: there the publisher waits, wait_subscriptions).
// Request/reply and raw bodies stay on tcp:// (kInvalidArgument). Frames
// received from a shm endpoint live in the segment's pool, not the
// Context's; frames built in the Context's pool are copied into the segment
// once on send (build in ShmEndpoint::pool() to avoid it). An explicit
// shm:// address is shared memory only: PALM_TRANSPORT governs the
// auto-selection of open_auto (auto_select.hpp), not it.
//
// Lifetime: shutdown() (or the destructor) stops the bridge, closes every
// socket with a bounded linger, terminates ZeroMQ (which runs every pending
// zero-copy release) and wakes every blocked caller. It shuts down the
// segments the Context serves (removing their names; their endpoints fail
// with kClosed and their peers see the host gone); shm endpoints it
// connected to other processes' segments live on until closed or their
// host goes. Frames the context gave
// out stay valid until released: the pool lives while any Frame, Endpoint or
// Context refers to it. A frame of another pool sent through an endpoint
// must have its pool outlive the Context's shutdown.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "palm/core/error.hpp"
#include "palm/core/frame.hpp"
#include "palm/core/pool.hpp"
#include "palm/transport/endpoint.hpp"
#include "palm/transport/shm/host.hpp"

namespace palm::transport {

namespace detail {
class ContextCore;
}

// Defaults are the shipped configuration: high-water marks and sizes are set
// on purpose, not left to ZeroMQ.
struct TransportOptions {
  // ZMQ_SNDHWM / ZMQ_RCVHWM, messages per peer. pylm keeps ZeroMQ's 1000.
  int hwm = 1000;
  // Messages larger than this are refused on receipt (counted as oversized,
  // logged; a kRep answers the requester with an error). 0: as large as the
  // pool takes (its largest class, less the frame header and topic room).
  // ZMQ_MAXMSGSIZE is set to twice this: beyond it ZeroMQ drops the
  // connection without buffering the message (and palm cannot count it).
  std::size_t max_message_bytes = 0;
  // ZMQ_LINGER at close: how long unsent messages may delay a close.
  std::chrono::milliseconds linger{500};
  // kPub between palm peers: a slow subscriber is backpressure (the bridge
  // retries) instead of a silent drop.
  bool xpub_nodrop = true;
  // Send and receive rings of each endpoint (a power of two).
  std::size_t queue_capacity = 1024;
  // Bodies of at least this many bytes are handed to ZeroMQ without a copy
  // (zmq_msg_init_data; the frame is released from ZeroMQ's I/O thread once
  // sent). Smaller ones are copied: cheaper than ZeroMQ's extra allocation
  // for the zero-copy bookkeeping (bench/zmq_bench.cpp).
  std::size_t zero_copy_threshold = 16 * 1024;
  // ZMTP heartbeats on tcp dispatch sockets (ZMQ_HEARTBEAT_IVL; the timeout
  // is 3 intervals): a silent peer machine is dropped and reported gone.
  // 0 disables.
  std::chrono::milliseconds heartbeat{1000};
  // Requests a kRep keeps unanswered before dropping the oldest (counted).
  std::size_t max_pending_requests = 4096;
  // Workers a kDispatcher tracks at once.
  std::uint32_t max_peers = 256;
  // Bounds open/close/subscribe, which wait for the bridge.
  std::chrono::milliseconds command_timeout{5000};
  // ZMQ_IO_THREADS.
  int io_threads = 1;
  // How long the bridge looks for more work from the application (yielding
  // the CPU between looks) before it sleeps in poll(2), and how long a
  // thread waiting on a ZeroMQ endpoint spins before it sleeps on the ring
  // (Endpoint::wait_spin). 0: sleep at once, the default. What a ZeroMQ
  // endpoint waits for comes through a chain of threads that sleep between
  // messages (the peer's bridge and I/O thread, the kernel, ours), tens of
  // µs a hop on 2 vCPUs: a spin rarely sees it arrive, and its sched_yields
  // hand the CPU to those threads early, a context switch each. Measured
  // (`palm farm -w 2 -n 200000 --transport tcp`, 2 vCPUs): spinning 20 µs in
  // the bridge and 50 µs in the waits (the shm default) gave ~80 k msg/s,
  // no spin ~180 k. The price is in lone round trips between two processes
  // (bench/zmq_bench ping-pong, 64 B): p50 ~160-180 µs without the spins,
  // ~110-130 µs with them. A latency-bound request/reply user may set them
  // (20 and 50 µs, as before).
  std::chrono::microseconds bridge_spin{0};
  std::chrono::microseconds wait_spin{0};
};

// The pool of a Context: what one process receives and builds. Small
// classes preallocated (7.5 MiB, reserved in the memfd), 1 MiB and up cut
// lazily; one process slot (the pool is private) whose held list is large
// enough for every queue of many endpoints. Raise the counts of the classes
// a server's messages use (PoolConfig::set_blocks): a receive that finds
// its class empty stalls that socket until frames are released.
PoolConfig default_context_pool();

struct ContextOptions {
  PoolConfig pool = default_context_pool();
  TransportOptions transport{};
  // The segments created by binds to shm:// addresses.
  shm::HostOptions shm{};
};

class Context {
 public:
  // Creates the pool (memfd) and attaches this process. Threads start on the
  // first open. kInvalidArgument for a bad option (named).
  [[nodiscard]] static Result<Context> create(const ContextOptions& options = {});

  Context(Context&&) noexcept;
  Context& operator=(Context&&) noexcept;
  Context(const Context&) = delete;  // one owner shuts down
  Context& operator=(const Context&) = delete;
  ~Context();  // shutdown()

  // Opens an endpoint; the scheme of spec.address picks the transport.
  // Blocks until it is bound or connected (bounded by command_timeout).
  // Errors: kInvalidArgument (address, pattern, options; a pattern shm://
  // does not carry), kSystem (ZeroMQ's message: address in use...), kClosed
  // after shutdown, kTimeout; shm:// connects: kNotFound (no such segment
  // or service), kPeerDead, kExhausted (shm/host.hpp).
  // Thread-safe.
  [[nodiscard]] Result<std::unique_ptr<Endpoint>> open(const EndpointSpec& spec);

  // The pool received frames are built in, and the slot that holds them.
  // Application threads build frames to send here too (any thread).
  BlockPool& pool() const noexcept;
  SlotId slot() const noexcept;

  // A frame holding `m` under `topic`, in this context's pool.
  [[nodiscard]] Result<Frame> build(const MessageView& m, std::string_view topic = {}) const noexcept;
  // A frame for a raw body (Body::kRaw): its payload is `bytes`.
  [[nodiscard]] Result<Frame> raw(std::span<const std::byte> bytes) const noexcept;
  [[nodiscard]] Result<Frame> raw(std::string_view bytes) const noexcept;

  const ContextOptions& options() const noexcept;
  // The largest message the endpoints accept (max_message_bytes resolved).
  std::size_t max_message_bytes() const noexcept;

  // Stops every transport (see the header comment). Idempotent; thread-safe;
  // blocks for at most about the linger.
  void shutdown() noexcept;

 private:
  explicit Context(std::shared_ptr<detail::ContextCore> core) noexcept;
  friend Result<void*> zmq_context_of(Context& context);  // zmq/raw_context.hpp
  std::shared_ptr<detail::ContextCore> core_;
};

}  // namespace palm::transport
