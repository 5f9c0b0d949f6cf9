#pragma once
// The ZeroMQ transport (tcp, ipc, inproc): one bridge thread per Context owns
// every socket and moves frames between the sockets and per-endpoint rings.
//
// Threads and who writes what:
//   application threads  push OutItems into EndpointState::out, pop InItems
//                        from EndpointState::in, take dispatcher credits;
//                        wake the bridge through wake_if_sleeping().
//   the bridge thread    owns the ZeroMQ context's sockets, the Links, the
//                        counters (single writer); pops `out`, pushes `in`,
//                        rings consumers' doorbells; runs posted commands
//                        (open, close, subscribe) in order.
//   ZeroMQ I/O threads   release zero-copy frames once sent (release_frame:
//                        BlockPool::release is thread-safe and lock-free).
//
// Sleeping and waking (no lost wake-up). The bridge, with nothing left to
// do, first looks at the send rings for TransportOptions::bridge_spin
// (yielding the CPU between looks: an application that sends again soon
// needs no wake-up), then, before blocking in poll(2):
//   (B1) sleeping_ = true                           seq_cst store
//   (B2) has_work(): any send ring non-empty, a command posted, a stalled
//        receive ring drained, stop asked           seq_cst fence, loads
//   (B3) poll(2) on the sockets' ZMQ_FDs and the eventfd, with a timeout
// An application thread, after publishing (a push into a ring, clearing
// in_blocked, posting a command):
//   (A1) seq_cst fence (the push itself is the store)
//   (A2) sleeping_ ? exchange(false) and write the eventfd
// (B1)->(B2) and publish->(A2) are a store-then-load pair (Dekker): either
// (B2) sees the work (the bridge does not sleep) or (A2) sees the bridge
// asleep and writes the eventfd, which makes (B3) return. Only the first
// waker after (B1) writes (the exchange): one syscall per sleep.
//
// Backpressure: the bridge sends with ZMQ_DONTWAIT. EAGAIN keeps the item
// pending (the send ring fills, then application threads wait in send_for or
// see kFull); the bridge retries once ZMQ_EVENTS says POLLOUT where ZeroMQ
// reports it truly (PUSH, REQ, DEALER) and on a 1 ms timer where it does not
// (XPUB with NODROP, ROUTER: their POLLOUT is always set). A receive ring
// that is full, or a pool with no free block, stalls that socket (no POLLIN;
// ZeroMQ's HWM then holds the peer back): a consumer that pops from a stalled
// ring wakes the bridge (in_blocked, the same Dekker pair); pool exhaustion
// is retried on the 1 ms timer.
//
// Batches: the bridge moves items one by one but rings once per batch. It
// pops `out` without waking the senders and wakes them every 32 pops and at
// the end of a pump; it pushes `in` without ringing and rings the ring's and
// the consumer's doorbells every 32 items (or 64 KiB), at the end of a read,
// and before it spins or sleeps (MpmcRing::signal_pushed/signal_popped, whose
// ring_if_waiting follows the moves it announces: Doorbell (N1)). A waiter
// announced as asleep costs a FUTEX_WAKE per ring until it runs again, ~30 µs
// here, so a ring per item cost a system call per item under load.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "detail/context_core.hpp"
#include "palm/core/doorbell.hpp"
#include "palm/core/frame.hpp"
#include "palm/core/mpmc_ring.hpp"
#include "palm/transport/address.hpp"
#include "palm/transport/endpoint.hpp"
#include "zmq/peer_table.hpp"

// TSan does not model std::atomic_thread_fence (and g++ rejects it under
// -fsanitize=thread), as in palm/core/doorbell.hpp: there, both sides of each
// Dekker pair below use an RMW on the flag instead of a store or load plus a
// fence. An RMW reads the latest value of the flag: if the waker's RMW
// precedes the sleeper's in the flag's modification order, the sleeper's
// RMW (acquire) reads from it (release) and sees what the waker published;
// otherwise the waker reads the sleeper's announcement and wakes it. It costs
// a write to the flag's line per send or pop, so it is not the default.
#if defined(__SANITIZE_THREAD__)
#define PALM_ZMQ_FENCELESS 1
#else
#define PALM_ZMQ_FENCELESS 0
#endif

namespace palm::transport::zeromq {

// What an application thread hands the bridge: a reference to a frame (held
// by `slot` of `pool`, moved out of a Frame without release), or a control
// item. Trivially copyable, for MpmcRing.
enum class OutKind : std::uint8_t { kMessage, kRaw, kGrant };
struct OutItem {
  BlockPool* pool = nullptr;  // the frame's pool (kGrant: nullptr)
  std::uint64_t handle = 0;
  std::uint64_t peer = 0;     // Envelope::peer
  std::uint32_t slot = 0;     // the frame's SlotId
  std::uint32_t credits = 0;  // kWorker: credits returned (kMessage) or granted (kGrant)
  OutKind kind = OutKind::kMessage;
};

// What the bridge hands the application: a frame in the Context's pool, held
// by the Context's slot, and its metadata.
struct InItem {
  std::uint64_t handle = 0;  // 0 for events without a frame
  std::uint64_t peer = 0;
  std::uint32_t credits = 0;
  Event event = Event::kMessage;
  Body body = Body::kMessage;
};

// Counters of one endpoint. Written by the bridge thread only, so a relaxed
// load + store bumps them (no RMW needed with one writer); readers load them
// relaxed: statistics, nothing is published through them.
struct Counters {
  std::atomic<std::uint64_t> messages_in{0};
  std::atomic<std::uint64_t> messages_out{0};
  std::atomic<std::uint64_t> bytes_in{0};
  std::atomic<std::uint64_t> bytes_out{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> malformed{0};
  std::atomic<std::uint64_t> oversized{0};
  std::atomic<std::uint64_t> dropped{0};
  std::atomic<std::uint64_t> stalls{0};
  std::atomic<std::uint64_t> subscriptions{0};
  // Connections open now (EndpointStats::connections; a gauge the bridge writes).
  std::atomic<std::uint64_t> connections{0};

  // The bridge only. Returns the new value (for log throttling).
  static std::uint64_t bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
    const std::uint64_t v = c.load(std::memory_order_relaxed) + n;
    c.store(v, std::memory_order_relaxed);
    return v;
  }
};

class ZmqTransport;
class Bridge;

// Everything an Endpoint shares with the bridge. Held by shared_ptr by the
// Endpoint and by the bridge's Link; holds the ContextCore so the pool
// outlives the frames in its rings.
class EndpointState {
 public:
  EndpointState(std::shared_ptr<detail::ContextCore> core, ZmqTransport& transport,
                EndpointSpec spec, Address address, std::size_t capacity);
  // Releases every frame left in the rings.
  ~EndpointState();
  EndpointState(const EndpointState&) = delete;  // shared by address between threads
  EndpointState& operator=(const EndpointState&) = delete;

  // Releases the frames of the items in both rings; returns how many.
  std::size_t drain() noexcept;
  void release(const OutItem& item) noexcept;
  void release(const InItem& item) noexcept;

  const std::shared_ptr<detail::ContextCore> core;
  ZmqTransport& transport;  // owned by core: outlives this
  const EndpointSpec spec;
  const Address parsed;
  std::string address;  // written by the bridge before open returns; read-only after

  MpmcRing<OutItem> out;  // application threads -> bridge
  MpmcRing<InItem> in;    // bridge -> application threads
  // The consumer's own doorbell (set_doorbell). acquire/release: the
  // doorbell object is published with the pointer.
  std::atomic<Doorbell*> bell{nullptr};
  // Set by the bridge when `in` was full (it stalls the socket); cleared by a
  // consumer that popped, who then wakes the bridge. seq_cst: a Dekker pair
  // with the push retry, see zmq_transport.hpp.
  std::atomic<bool> in_blocked{false};
  // Set once at close (release); application calls check it (acquire).
  std::atomic<bool> closed{false};
  Counters counters;
  Doorbell subscription_bell;  // kPub: rung on each subscribe message
  PeerTable peers;             // kDispatcher
};

class ZmqTransport final : public Transport {
 public:
  // Creates the ZeroMQ context and the eventfd, starts the bridge thread.
  [[nodiscard]] static Result<std::unique_ptr<ZmqTransport>> start(detail::ContextCore& core);
  ~ZmqTransport() override;

  Result<std::unique_ptr<Endpoint>> open(const EndpointSpec& spec, const Address& address) override;
  void shutdown() noexcept override;

  // ---- application threads ----------------------------------------------
  // (A1)-(A2): call after publishing work for the bridge.
  void wake_if_sleeping() noexcept;
  // Runs `fn` on the bridge thread, in order with other commands, and waits
  // for it (bounded by the command timeout). kClosed if the bridge stopped.
  Result<void> run_on_bridge(std::function<Result<void>(Bridge&)> fn);
  // close() of an endpoint: closes its link on the bridge (bounded wait).
  void close_endpoint(const std::shared_ptr<EndpointState>& state) noexcept;

  const TransportOptions& options() const noexcept { return options_; }
  void* zmq_context() const noexcept { return context_; }
  std::size_t max_message_bytes() const noexcept { return max_message_bytes_; }

  struct Link;  // the bridge's side of an endpoint (zmq_bridge.cpp)

 private:
  ZmqTransport(detail::ContextCore& core, void* context, int wake_fd);

  void wake() noexcept;  // writes the eventfd
  void run() noexcept;   // the bridge thread

  detail::ContextCore& core_;
  const TransportOptions options_;
  const std::size_t max_message_bytes_;
  void* const context_;  // the ZeroMQ context (terminated at shutdown)
  const int wake_fd_;    // eventfd

  // (B1): see the header comment. Written by the bridge (store) and wakers
  // (exchange).
  alignas(kFalseSharingRange) std::atomic<bool> sleeping_{false};
  alignas(kFalseSharingRange) std::atomic<bool> stop_{false};  // set once by shutdown()
  std::atomic<bool> commands_posted_{false};  // a Dekker flag as in_blocked
  std::mutex commands_mutex_;                 // guards commands_, running_
  // Each command is run with the bridge, or with nullptr once it stopped.
  std::vector<std::function<void(Bridge*)>> commands_;
  bool running_ = true;  // false once the bridge no longer runs commands

  std::mutex shutdown_mutex_;  // serializes shutdown()
  std::thread thread_;
  std::atomic<bool> terminated_{false};

  friend class Bridge;
};

}  // namespace palm::transport::zeromq
