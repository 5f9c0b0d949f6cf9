#pragma once
// Shared-memory transport: a server's segment (Host) and the endpoints that
// move frame handles through it (DESIGN.md "The crash model", "Transports").
//
// A Host owns one segment, /dev/shm/NAME: a BlockPool ("pool" area) and a
// peer table with one pair of single-producer channels per attached peer
// ("peers" area, peer_table.hpp; protocol in channel.hpp). A server binds
// services on it (Host::bind: a pull, push, pub or dispatcher endpoint,
// named, several per segment so handles pass between them without copies);
// processes on the same host attach with connect(NAME, pattern, {service,
// nonce}) and get a push, pull, sub or worker endpoint.
//
//   bound          connected     what crosses
//   kPull    <-    kPush         messages, round-robin over pushers
//   kPush    ->    kPull         messages, round-robin to pullers with room
//   kPub     ->    kSub          fan-out: one reference per matching subscriber
//                                (topic prefixes; "" matches all), nothing copied
//   kDispatcher <-> kWorker      addressed dispatch with credits (the master's
//                                per-worker dispatch)
//
// Threads: the Host runs one monitor thread, asleep on the segment's control
// doorbell; it wakes when a peer attaches, leaves, subscribes or dies
// (DeathWatch), and every liveness_period to check the processes (pid +
// start time; a slow peer is alive). It registers an attached peer with its service (a kSub
// with its topics) and acknowledges it on the peer entry, ringing the
// entry's doorbell: a connected kSub's subscriptions are in place when
// connect returns, and a subscribe's when it returns. A dead or departed
// peer's channels are discarded: what it sent is still delivered (then, for
// a dispatcher, Event::kPeerGone), what was sent to it is released; its pool
// slot is reclaimed (BlockPool::reclaim_dead). Each consuming thread sleeps
// on one doorbell: the service's (bound side) or the peer entry's (connected
// side).
//
// Frames: handles are valid in the segment's pool only. A frame built in the
// endpoint's pool (ShmEndpoint::pool()/slot(), or build()) crosses without a
// copy; a frame of another pool (a Context's) is copied once into the
// segment (counted: copies()). Frames received from an endpoint must be
// released before the endpoint is destroyed (they point at its pool view).
//
// Not implemented on shm (kInvalidArgument at bind/connect): kReq/kRep (the
// cache stays on TCP), a bound kSub, Body::kRaw. set_doorbell rings the
// given doorbell for deliveries the host makes locally (events); the
// messages themselves ring the endpoint's shared doorbell.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "palm/core/error.hpp"
#include "palm/core/frame.hpp"
#include "palm/core/pool.hpp"
#include "palm/transport/endpoint.hpp"

namespace palm::shm {

namespace detail {
class HostCore;
}

// Pool of a host segment: small classes preallocated (about 14 MiB), large
// ones cut lazily; slots for the peers.
PoolConfig default_host_pool();

struct HostOptions {
  PoolConfig pool = default_host_pool();
  std::uint32_t max_peers = 32;            // attached endpoints at once
  std::uint32_t channel_capacity = 1024;   // items per channel, a power of two
  // How often the monitor checks that processes live. A registered peer's
  // death wakes it at once (DeathWatch): this period bounds the rest (a
  // process that died attaching, a pool slot without a peer entry, and
  // every death where pidfds are refused: a dead peer's messages go back to
  // the pool and to other workers this late then).
  std::chrono::milliseconds liveness_period{1000};
  // kPub send_for: how long a full subscriber may hold a message back before
  // it loses it (counted, flagged, logged). try_send does not wait.
  std::chrono::milliseconds slow_subscriber_wait{20};
  // A segment of the same name whose owner is dead is removed and recreated
  // (with a new nonce); one whose owner lives is kAlreadyExists.
  bool replace_stale = true;
};

// One attached peer, as the host sees it (or the host, as a peer sees it).
// Counts are racy snapshots.
struct PeerStatus {
  std::uint64_t peer = 0;         // transport::PeerId value
  pid_t pid = 0;
  std::string service;
  transport::Pattern pattern = transport::Pattern::kPush;  // the peer's side
  const char* transport = "shm";  // which transport carried these messages
  std::uint64_t messages_in = 0;  // peer -> host (channel positions: exact)
  std::uint64_t messages_out = 0; // host -> peer
  std::uint64_t lost = 0;         // kSub: messages it lost being slow
  bool overflow = false;          // kSub: it lost at least one (error flag)
  std::uint32_t credits = 0;      // kWorker: credits offered at attach
};

// An Endpoint on shared memory, with the pool its frames live in.
class ShmEndpoint : public transport::Endpoint {
 public:
  // The segment's pool and this endpoint's slot: build frames here to send
  // them without a copy. Thread-safe.
  virtual BlockPool& pool() const noexcept = 0;
  virtual SlotId slot() const noexcept = 0;
  // Frames copied in from another pool by try_send/send_for.
  virtual std::uint64_t copies() const noexcept = 0;
  // Per-peer counters (bound side: every peer of this service; connected
  // side: one entry, this endpoint's own).
  virtual std::vector<PeerStatus> peer_status() const = 0;
  // The segment's incarnation nonce.
  virtual std::uint64_t nonce() const noexcept = 0;
  // Connected kSub: the messages the host dropped for this subscriber since
  // it attached, because its channel stayed full longer than
  // HostOptions::slow_subscriber_wait (it read too slowly): PeerStatus::lost
  // without peer_status()'s allocations, for a check in a receive loop. 0 on
  // other endpoints. Stale on return; nothing rings when it grows.
  virtual std::uint64_t lost() const noexcept { return 0; }
  // Connected side: the messages the channel toward this endpoint holds (a
  // kSub's replies in flight beyond it may be dropped by a publisher:
  // lost()). 0 on the bound side, which has a channel per peer.
  virtual std::size_t inbound_capacity() const noexcept { return 0; }
  // The doorbell in the segment that this endpoint's messages ring (bound
  // side: the service's, rung by every peer's send and pop; connected side:
  // the peer entry's, rung by the host). A thread that serves this endpoint
  // and others sleeps on it and gives it to the others' set_doorbell: a
  // process-local doorbell cannot be rung by another process.
  virtual Doorbell& doorbell() const noexcept = 0;

  [[nodiscard]] Result<Frame> build(const MessageView& m, std::string_view topic = {}) noexcept {
    return Frame::build(pool(), slot(), m, topic);
  }
};

class Host {
 public:
  // Creates /dev/shm/NAME (0600) with a fresh nonce and starts the monitor.
  // kAlreadyExists if a live process serves NAME; kInvalidArgument for bad
  // options; kNoSpace if /dev/shm cannot hold the metadata.
  [[nodiscard]] static Result<Host> create(std::string name, const HostOptions& options = {});

  Host(Host&&) noexcept;
  Host& operator=(Host&&) noexcept;
  Host(const Host&) = delete;  // one owner shuts down and removes the segment
  Host& operator=(const Host&) = delete;
  ~Host();  // shutdown()

  // Binds service `service` (at most 31 bytes; kMaxServices per segment) as
  // `pattern` (kPull, kPush, kPub, kDispatcher). With `share_bell_with`, a
  // service of this host bound already, the new service rings that one's
  // doorbell instead of its own: one thread serving both sleeps on one
  // futex. Thread-safe.
  [[nodiscard]] Result<std::unique_ptr<ShmEndpoint>> bind(transport::Pattern pattern,
                                                          std::string_view service = "default",
                                                          std::string_view share_bell_with = {});

  const std::string& name() const noexcept;
  std::uint64_t nonce() const noexcept;
  BlockPool& pool() const noexcept;  // the owner's view of the segment's pool
  SlotId slot() const noexcept;      // the owner's slot

  // Attached peers now (racy snapshot). Thread-safe.
  std::vector<PeerStatus> peers() const;
  // Waits (bounded) until exactly `n` peers are attached and registered, and
  // every departed or dead one was discarded. True if reached. For tests and
  // orderly shutdown.
  bool wait_peer_count(std::size_t n, std::chrono::milliseconds timeout) const;
  // Peers discarded so far because their process died (not left cleanly).
  std::uint64_t dead_peers() const noexcept;

  // Marks the segment closed (peers see kClosed / kShutdown), stops the
  // monitor, removes the name. Endpoints fail with kClosed afterwards; the
  // mapping lives until the last endpoint is gone. Idempotent; blocks
  // (joins the monitor).
  void shutdown() noexcept;

 private:
  explicit Host(std::shared_ptr<detail::HostCore> core) noexcept;
  std::shared_ptr<detail::HostCore> core_;
};

struct ConnectOptions {
  std::string service = "default";
  // The nonce the peer was told (discovery); 0 accepts any incarnation. A
  // mismatch is kNotFound: the server restarted, rediscover.
  std::uint64_t nonce = 0;
  // kWorker: credits offered on attach (at least 1).
  std::uint32_t credits = 0;
  // kSub: topic prefixes ("" matches all), at most 256 bytes in all.
  std::vector<std::string> subscriptions;
  // Bounds the whole connect (a segment still being created; a kSub's
  // registration by the host) and each subscribe/unsubscribe ack.
  std::chrono::milliseconds timeout{5000};
};

// Attaches to segment NAME as `pattern` (kPush, kPull, kSub, kWorker).
// A kSub (with or without subscriptions) returns only once the host has
// registered it with its subscriptions: whatever the host publishes after
// connect returns (in happens-before order: this thread, or a process it
// then talked to) reaches it. The wait is one wake-up of the host's monitor
// (tens of microseconds), bounded by options.timeout. Likewise
// subscribe()/unsubscribe() return once the new list is in force.
// Errors: kNotFound (no segment, no such service, another nonce), kPeerDead
// (the owner is dead), kClosed, kExhausted (peer table or pool slots full),
// kInvalidArgument (pattern does not match the service's), kTimeout (kSub:
// the host did not register it in time).
[[nodiscard]] Result<std::unique_ptr<ShmEndpoint>> connect(std::string_view segment, transport::Pattern pattern,
                                                           const ConnectOptions& options = {});

// "NAME" or "NAME/SERVICE" (what follows shm://) -> {name, service}.
std::pair<std::string, std::string> split_shm_address(std::string_view rest);

}  // namespace palm::shm
