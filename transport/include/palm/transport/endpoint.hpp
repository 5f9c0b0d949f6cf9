#pragma once
// The transport interface: what a server holds. An Endpoint is one end of one
// messaging pattern, opened from a Context (context.hpp) on an address whose
// scheme picks the transport (address.hpp). Servers see only this header;
// ZeroMQ (tcp, ipc, inproc) implements it now, shared memory next.
//
// Messages cross as Frames (palm/core/frame.hpp): one pool block holding a
// canonical PalmMessage and its topic. Sending moves the caller's reference
// into the endpoint; receiving hands the caller a reference to a frame in the
// Context's pool (one copy from the socket, none after).
//
// Patterns (PROTOCOL.md "Sockets, by server"; DESIGN.md "The farm"):
//
//   kPush / kPull   load-balanced one-way (PUSH/PULL). One frame per message.
//   kPub  / kSub    topic-prefix fan-out. On the wire [topic, PalmMessage];
//                   the topic is the frame's topic. kPub is an XPUB: it reads
//                   subscriptions (subscriptions_seen / wait_subscriptions
//                   fix the slow joiner without sleeps) and, between palm
//                   peers, ZMQ_XPUB_NODROP makes a slow subscriber
//                   backpressure instead of a silent drop.
//   kReq  / kRep    the cache service (request/reply). A request is a
//                   PalmMessage; a reply is RAW bytes (PROTOCOL.md "Cache
//                   service"). kReq delivers each reply as Body::kRaw: a
//                   frame whose payload holds the reply bytes. kRep delivers
//                   requests with Delivery::peer naming the request, and
//                   answers with try_send(frame, {peer, Body::kRaw}): the
//                   payload bytes of `frame` go out as they are. kRep serves
//                   many requesters at once and may answer out of order.
//   kDispatcher / kWorker
//                   palm-only addressed dispatch with credits (ROUTER /
//                   DEALER). A worker offers credits when it connects
//                   (EndpointSpec::credits); the dispatcher sees it join
//                   (Event::kPeerJoined), picks a worker per message and
//                   sends with try_send(frame, {worker}), which takes one
//                   credit (kNoCredit when none is left). A worker's result,
//                   sent with try_send(frame, {.credits = n}), returns n
//                   credits (1 by default; 0 for a MuxWorker's non-last
//                   results); grant() offers more. A worker that leaves,
//                   dies or becomes unreachable is reported once as
//                   Event::kPeerGone, after every result it sent; its
//                   credits vanish with it (the caller re-sends what it
//                   held).
//
// Body::kRaw vs kMessage: a raw body is carried in a frame whose only field is
// the payload; what crosses the wire is the payload's bytes alone. Build one
// with Context::raw().
//
// Thread-safety: every Endpoint member is thread-safe (any number of sending
// and receiving threads) unless said otherwise; none touches a socket (a
// bridge thread owns them, see context.hpp). Every blocking call has a
// timeout and returns at shutdown.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "palm/core/doorbell.hpp"
#include "palm/core/error.hpp"
#include "palm/core/frame.hpp"
#include "palm/transport/address.hpp"

namespace palm::transport {

enum class Pattern : std::uint8_t {
  kPush,
  kPull,
  kPub,
  kSub,
  kReq,
  kRep,
  kDispatcher,
  kWorker,
};
const char* to_string(Pattern pattern) noexcept;

// Which patterns send and receive application messages.
constexpr bool sends(Pattern p) noexcept { return p != Pattern::kPull && p != Pattern::kSub; }
constexpr bool receives(Pattern p) noexcept { return p != Pattern::kPush && p != Pattern::kPub; }

enum class Body : std::uint8_t {
  kMessage,  // the frame's wire bytes: a serialized PalmMessage
  kRaw,      // the frame's payload bytes only (cache replies)
};

// A peer or a request, as an endpoint names it: a dispatcher's worker, a rep
// endpoint's pending request, a req endpoint's request. 0 is "none". Values
// are not reused while they matter (a generation guards worker slots).
enum class PeerId : std::uint64_t { kNone = 0 };

// Where and how a sent frame goes. Defaults suit push, pub and worker results.
struct Envelope {
  PeerId peer = PeerId::kNone;  // kRep: the request answered; kDispatcher: the worker;
                                // kReq: a token echoed in the reply's Delivery::peer
  Body body = Body::kMessage;
  std::uint32_t credits = 1;  // kWorker: credits this result returns
};

enum class Event : std::uint8_t {
  kMessage,     // `frame` holds a message (or a raw reply, see `body`)
  kPeerJoined,  // kDispatcher: worker `peer` joined with `credits`
  kPeerGone,    // kDispatcher: worker `peer` left; its credits are void
  kCredit,      // kDispatcher: worker `peer` granted `credits` more
};

// What a receive returns. Owns its frame reference (released when the
// Delivery is destroyed or overwritten).
struct Delivery {
  Frame frame;                  // kMessage only; the topic is frame's topic (kSub)
  Event event = Event::kMessage;
  Body body = Body::kMessage;   // kReq replies are kRaw
  PeerId peer = PeerId::kNone;  // kRep: answer with Envelope{peer}; kDispatcher: the
                                // worker; kReq: the token of the request answered
  std::uint32_t credits = 0;    // kDispatcher: kPeerJoined, kCredit, and kMessage
                                // (the credits the result gave back)
};

enum class SendResult : std::uint8_t {
  kQueued,     // the endpoint took the frame (the Frame is empty now)
  kFull,       // try_send: the endpoint's queue is full now; retry later
  kTimeout,    // send_for: still full at the deadline
  kClosed,     // the endpoint or its context is closed
  kNoCredit,   // kDispatcher: that worker has no credit left
  kPeerGone,   // kDispatcher: no such worker (left, or never joined)
  kInvalid,    // wrong for this pattern (a receive-only endpoint, an empty
               // Frame, Body::kRaw on a pattern without raw bodies)
};
const char* to_string(SendResult result) noexcept;

struct PeerInfo {
  PeerId peer = PeerId::kNone;
  std::uint32_t credits = 0;  // a snapshot
};

// Counters of one endpoint, readable while it runs. A snapshot of relaxed
// loads: each value is exact at some moment, but they are not from one
// moment together.
struct EndpointStats {
  std::uint64_t messages_in = 0;   // delivered to the receive queue
  std::uint64_t messages_out = 0;  // handed to the wire
  std::uint64_t bytes_in = 0;      // body bytes (the PalmMessage or raw bytes)
  std::uint64_t bytes_out = 0;
  std::uint64_t errors = 0;     // sends that failed (unknown peer or request,
                                // a bad frame), protocol errors
  std::uint64_t malformed = 0;  // received bytes that were not a PalmMessage
                                // (or not the pattern's framing): logged, dropped
  std::uint64_t oversized = 0;  // received messages over max_message_bytes
  std::uint64_t dropped = 0;    // queued frames discarded at close
  std::uint64_t stalls = 0;     // receives deferred: queue full or pool exhausted
  std::uint64_t subscriptions = 0;  // kPub: subscribe messages seen
  std::size_t connections = 0;  // ZeroMQ, bound kPush/kPull/kPub: peer connections
                                // open now (a master's pylm workers, its tcp
                                // subscribers); connecting kPush/kPull/kSub/
                                // kWorker: connections to the bound side open
                                // now (0 while it is away); 0 elsewhere
  std::size_t queue_in = 0;     // frames waiting for the application (approx.)
  std::size_t queue_out = 0;    // frames waiting for the bridge (approx.)
};

// What to open. Use the helpers: EndpointSpec::bind(Pattern::kPull, addr).
struct EndpointSpec {
  Pattern pattern = Pattern::kPush;
  std::string address;
  bool bind = false;  // bind (the server side) or connect
  // kSub: topic prefixes ("" matches every topic). More with subscribe().
  std::vector<std::string> subscriptions;
  // kWorker: credits offered when it connects (at least 1).
  std::uint32_t credits = 0;
  // 0 / -1: the Context's defaults (TransportOptions).
  std::size_t queue_capacity = 0;  // receive and send queues, a power of two
  int hwm = -1;                    // ZMQ_SNDHWM and ZMQ_RCVHWM
  // A bound shm:// service: ring and wait on the doorbell of this service
  // of the same segment (bound already), so one thread can sleep on both.
  std::string shm_share_bell_with;

  static EndpointSpec bind_to(Pattern p, std::string addr) {
    EndpointSpec s;
    s.pattern = p;
    s.address = std::move(addr);
    s.bind = true;
    return s;
  }
  static EndpointSpec connect_to(Pattern p, std::string addr) {
    EndpointSpec s;
    s.pattern = p;
    s.address = std::move(addr);
    s.bind = false;
    return s;
  }
};

class Endpoint {
 public:
  virtual ~Endpoint() = default;
  Endpoint() = default;
  // Not copyable: an endpoint is one socket's queues; hold it by unique_ptr.
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  virtual Pattern pattern() const noexcept = 0;
  virtual Scheme scheme() const noexcept = 0;
  // The address in effect: for a bind to tcp://host:* the port chosen
  // (ZMQ_LAST_ENDPOINT), else the address given. Fixed after open.
  virtual const std::string& address() const noexcept = 0;

  // ---- sending ------------------------------------------------------------
  // Queues `frame` for the bridge. kQueued: the reference moved into the
  // endpoint (released once the wire took the bytes); anything else leaves
  // `frame` untouched. Never blocks; lock-free.
  virtual SendResult try_send(Frame& frame, const Envelope& to = {}) noexcept = 0;
  // As try_send, waiting up to `timeout` for room (kTimeout).
  virtual SendResult send_for(Frame& frame, std::chrono::nanoseconds timeout,
                              const Envelope& to = {}) noexcept = 0;

  // ---- receiving ----------------------------------------------------------
  // Takes the oldest delivery, if any. Never blocks; lock-free.
  virtual bool try_recv(Delivery& out) noexcept = 0;
  // Takes up to `max` deliveries into out[0, n), oldest first, and returns
  // n: try_recv for a consumer that drains. A shm endpoint takes its lock
  // once for the batch (it takes it per try_recv).
  virtual std::size_t try_recv_batch(Delivery* out, std::size_t max) noexcept {
    std::size_t n = 0;
    while (n < max && try_recv(out[n])) ++n;
    return n;
  }
  // Waits up to `timeout` for a delivery: kReady, kTimeout, or kShutdown once
  // the endpoint is closed and drained.
  virtual WaitResult recv_for(Delivery& out, std::chrono::nanoseconds timeout) noexcept = 0;
  // A consumer that waits on several endpoints sleeps on its own doorbell;
  // the bridge rings it after each delivery to this endpoint (the ring's own
  // doorbell, used by recv_for, is rung as well). nullptr detaches. The
  // doorbell must outlive the endpoint or be detached first.
  virtual void set_doorbell(Doorbell* bell) noexcept = 0;
  // How long a thread about to sleep until this endpoint has work is worth
  // spinning first: Doorbell::default_spin() where the other side hands
  // messages over directly (a shm peer, a host with peers), 0 where they
  // come through threads that sleep between messages (ZeroMQ: the bridge,
  // TransportOptions::wait_spin) or from no one (a host without peers). A
  // thread serving several endpoints spins for the longest (Part). recv_for
  // and send_for spin for it.
  virtual std::chrono::nanoseconds wait_spin() const noexcept = 0;
  // Ends the recv_for or send_for in progress on this endpoint, or the next
  // one if none is: it returns kTimeout (send_for: the frame stays the
  // caller's) as if its time had run out, and the doorbell set with
  // set_doorbell is rung. For a thread told to stop by another: it sleeps
  // until then, with no periodic look at a flag. One interrupt ends one
  // wait. Thread-safe; never blocks.
  virtual void interrupt() noexcept = 0;

  // ---- kSub ------------------------------------------------------------------
  // Adds / removes a topic prefix. Blocks until the bridge applied it (bounded
  // by the Context's command timeout). kInvalidArgument on other patterns.
  [[nodiscard]] virtual Result<void> subscribe(std::string_view prefix) = 0;
  [[nodiscard]] virtual Result<void> unsubscribe(std::string_view prefix) = 0;

  // ---- kPub ------------------------------------------------------------------
  // Subscribe messages seen from subscribers (each subscriber's each prefix
  // counts once; ZMQ_XPUB_VERBOSE). Stale on return; never decreases.
  virtual std::uint64_t subscriptions_seen() const noexcept = 0;
  // Waits until subscriptions_seen() >= n: the subscribers that sent them are
  // attached, and what is published after this returns reaches them.
  // kShutdown on other patterns and once the endpoint is closed.
  virtual WaitResult wait_subscriptions(std::uint64_t n,
                                        std::chrono::nanoseconds timeout) noexcept = 0;

  // ---- kDispatcher -----------------------------------------------------------
  // Workers joined and not gone, with their credits: a snapshot.
  virtual std::vector<PeerInfo> peers() const = 0;
  // A worker's credits now (0 if gone). Stale on return.
  virtual std::uint32_t credits(PeerId peer) const noexcept = 0;

  // ---- kWorker ---------------------------------------------------------------
  // Offers `n` more credits to the dispatcher (without a result).
  [[nodiscard]] virtual Result<void> grant(std::uint32_t n) = 0;

  virtual EndpointStats stats() const noexcept = 0;

  // Flushes what the socket takes at once, closes it (linger bounded by the
  // Context's options), releases every queued frame (counted as dropped) and
  // wakes blocked callers. Idempotent; blocks (bounded). The destructor
  // closes.
  virtual void close() noexcept = 0;
};

// A transport: the implementation behind some schemes. Contexts own them;
// servers never see one.
class Transport {
 public:
  virtual ~Transport() = default;
  Transport() = default;
  Transport(const Transport&) = delete;  // owns threads and sockets
  Transport& operator=(const Transport&) = delete;

  [[nodiscard]] virtual Result<std::unique_ptr<Endpoint>> open(const EndpointSpec& spec,
                                                               const Address& address) = 0;
  // Stops and joins the transport's threads, closes its endpoints. Idempotent.
  virtual void shutdown() noexcept = 0;
};

}  // namespace palm::transport
