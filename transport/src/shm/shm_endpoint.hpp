#pragma once
// Internals of the shm transport (host.hpp): the owner's core (segment,
// pool, peer table, monitor thread), the bound endpoints (HostEndpoint) and
// the connected ones (PeerEndpoint).
//
// Locks (process-local; a process that dies holds only its own):
//   HostCore::mu_      services_, registered_, the peer lists' membership
//                      changes (taken by the monitor, bind and unbind).
//   HostEndpoint::mu_  the endpoint's peers, pending deliveries, and the
//                      host side of every channel of its peers (the single
//                      producer of to_peer, the single consumer of to_host).
//   Order: HostCore::mu_ before HostEndpoint::mu_. Application calls take
//   only HostEndpoint::mu_.
//   PeerEndpoint::send_mu_ / recv_mu_ / topic_mu_: its channels' own sides.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "palm/core/death_watch.hpp"
#include "palm/core/doorbell.hpp"
#include "palm/core/interrupt.hpp"
#include "palm/core/pool.hpp"
#include "palm/core/process.hpp"
#include "palm/transport/shm/channel.hpp"
#include "palm/transport/shm/host.hpp"
#include "palm/transport/shm/peer_table.hpp"
#include "palm/transport/shm/segment.hpp"

namespace palm::shm::detail {

using transport::Delivery;
using transport::EndpointStats;
using transport::Envelope;
using transport::Pattern;
using transport::PeerId;
using transport::PeerInfo;
using transport::Scheme;
using transport::SendResult;

// The peer side that matches a bound pattern, or nullopt if shm has none.
std::optional<Pattern> peer_pattern_for(Pattern bound) noexcept;

// Relaxed counters: statistics, read as snapshots.
struct Counters {
  std::atomic<std::uint64_t> messages_in{0}, messages_out{0}, bytes_in{0}, bytes_out{0}, errors{0},
      malformed{0}, dropped{0}, copies{0};
  static void add(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
    c.fetch_add(n, std::memory_order_relaxed);  // relaxed: a statistic
  }
  // For a counter whose every writer holds one lock: a relaxed load and
  // store, no locked read-modify-write (readers see it as before: atomic,
  // possibly stale).
  static void add_owned(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void fill(EndpointStats& s) const noexcept;
};

// Puts a reference to `f`'s frame into `pool` (the segment's): the same
// handle when f lives there (zero copy), else a copy held by `slot`.
// `copied` tells which; on error nothing changed.
struct Prepared {
  Handle handle;
  SlotId slot{};      // the slot holding `handle`
  bool copied = false;
};
Result<Prepared> prepare_frame(BlockPool& pool, SlotId slot, Frame& f) noexcept;
// Undoes a copy that was not sent.
void unprepare(BlockPool& pool, const Prepared& p) noexcept;
// Sends `f` on one channel (room checked first, so nothing is copied in
// vain): zero copy when f lives in `pool` (its reference moves into the
// ring and f becomes empty), else a copy held by `slot` moves (and f is
// released). kFull / kBadFrame leave f untouched.
ChannelPush send_frame(ChannelRing& ring, BlockPool& pool, SlotId slot, Frame& f, std::uint32_t tag,
                       Doorbell* consumer_bell, Counters& counters) noexcept;

class HostEndpoint;

class HostCore : public std::enable_shared_from_this<HostCore> {
 public:
  HostCore(Segment segment, BlockPool pool, SlotId slot, PeerTable table, HostOptions options);
  ~HostCore();
  HostCore(const HostCore&) = delete;  // owns the mapping and the monitor
  HostCore& operator=(const HostCore&) = delete;

  void start();
  void shutdown() noexcept;
  bool stopped() const noexcept { return stopped_.load(std::memory_order_acquire); }

  Result<std::unique_ptr<ShmEndpoint>> bind(Pattern pattern, std::string_view service,
                                            std::string_view share_bell_with);
  void unbind(std::uint32_t service, HostEndpoint* ep) noexcept;

  std::vector<PeerStatus> peers() const;
  bool wait_peer_count(std::size_t n, std::chrono::milliseconds timeout) const;
  PeerStatus status_of(std::uint32_t index) const;

  const std::string& name() const noexcept { return segment_.name(); }
  std::uint64_t nonce() const noexcept { return nonce_; }
  BlockPool& pool() noexcept { return pool_; }
  SlotId slot() const noexcept { return slot_; }
  const PeerTable& table() const noexcept { return table_; }
  const HostOptions& options() const noexcept { return options_; }
  std::uint64_t dead_peers() const noexcept { return dead_peers_.load(std::memory_order_relaxed); }

 private:
  struct Registered {
    std::uint32_t generation = 0;
    HostEndpoint* ep = nullptr;  // null: its service closed (an orphan)
    std::uint32_t topic_seq = 0;
  };

  void monitor_loop() noexcept;
  void scan(bool check_liveness);
  void sweep_pool_slots() noexcept;
  // Under mu_, for an entry read Attached or Leaving (acquire, (E4)) and not
  // registered yet: adds it to its service's endpoint (if that is bound and
  // of the matching pattern) and records it. `departed` (Leaving): only so
  // that discard() delivers what it published; no topics, watch or wake-up.
  void register_peer(std::uint32_t index, pid_t pid, bool departed);
  void discard(std::uint32_t index, std::uint64_t seen_state, bool dead);

  Segment segment_;
  BlockPool pool_;
  SlotId slot_;
  PeerTable table_;
  const HostOptions options_;
  const std::uint64_t nonce_;

  mutable std::mutex mu_;
  mutable std::condition_variable changed_;  // a peer was registered or discarded
  std::array<HostEndpoint*, kMaxServices> services_{};
  std::vector<std::optional<Registered>> registered_;  // by entry index
  // The monitor's watches (its thread only): by entry index, by pool slot.
  std::vector<ProcessWatch> peer_watch_;
  std::vector<ProcessWatch> slot_watch_;
  // By entry index: the registered peer's death sets death_seen_ and rings
  // the control doorbell (monitor thread only; ended by discard, and before
  // what the callbacks touch when the core is destroyed).
  std::atomic<bool> death_seen_{false};
  std::vector<DeathWatch::Ticket> peer_death_;

  std::thread monitor_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> stopped_{false};
  std::atomic<std::uint64_t> dead_peers_{0};
};

class HostEndpoint final : public ShmEndpoint {
 public:
  HostEndpoint(std::shared_ptr<HostCore> core, Pattern pattern, std::uint32_t service, std::string address);
  ~HostEndpoint() override;

  Pattern pattern() const noexcept override { return pattern_; }
  Scheme scheme() const noexcept override { return Scheme::kShm; }
  const std::string& address() const noexcept override { return address_; }
  SendResult try_send(Frame& frame, const Envelope& to) noexcept override;
  SendResult send_for(Frame& frame, std::chrono::nanoseconds timeout, const Envelope& to) noexcept override;
  bool try_recv(Delivery& out) noexcept override;
  std::size_t try_recv_batch(Delivery* out, std::size_t max) noexcept override;
  WaitResult recv_for(Delivery& out, std::chrono::nanoseconds timeout) noexcept override;
  void set_doorbell(Doorbell* bell) noexcept override;
  // relaxed: a hint; a peer that attaches rings bell_ and the user's
  // doorbell, so a waiter that read a stale 0 and slept at once is woken.
  std::chrono::nanoseconds wait_spin() const noexcept override {
    return peer_count_.load(std::memory_order_relaxed) != 0 ? Doorbell::default_spin() : std::chrono::nanoseconds(0);
  }
  void interrupt() noexcept override;
  Doorbell& doorbell() const noexcept override { return *bell_; }
  Result<void> subscribe(std::string_view prefix) override;
  Result<void> unsubscribe(std::string_view prefix) override;
  std::uint64_t subscriptions_seen() const noexcept override;
  WaitResult wait_subscriptions(std::uint64_t n, std::chrono::nanoseconds timeout) noexcept override;
  std::vector<PeerInfo> peers() const override;
  std::uint32_t credits(PeerId peer) const noexcept override;
  Result<void> grant(std::uint32_t n) override;
  EndpointStats stats() const noexcept override;
  void close() noexcept override;

  BlockPool& pool() const noexcept override { return core_->pool(); }
  SlotId slot() const noexcept override { return core_->slot(); }
  std::uint64_t copies() const noexcept override { return counters_.copies.load(std::memory_order_relaxed); }
  std::vector<PeerStatus> peer_status() const override;
  std::uint64_t nonce() const noexcept override { return core_->nonce(); }

  // ---- called by the monitor, under HostCore::mu_ ----
  void add_peer(std::uint32_t index, std::uint32_t generation, ChannelRing* to_host, ChannelRing* to_peer,
                std::uint32_t credits, std::vector<std::string> topics);
  void set_topics(std::uint32_t index, std::vector<std::string> topics);
  // Delivers what the peer sent, releases what it was sent, forgets it.
  void remove_peer(std::uint32_t index, bool dead);
  // The service is gone (unbind or shutdown): peers become orphans.
  void detach_from_core() noexcept;

 private:
  struct LocalPeer {
    std::uint32_t index = 0;
    std::uint32_t generation = 0;
    std::uint64_t id = 0;
    ChannelRing* to_host = nullptr;
    ChannelRing* to_peer = nullptr;
    Doorbell* bell = nullptr;
    std::uint32_t credits = 0;
    std::vector<std::string> topics;
    bool lagging = false;
  };

  // `wait`: how long a kPub send may wait for full subscribers (0: try_send,
  // no waiting). A budget, not a deadline: the clock is read only when
  // someone must be waited for, never on the common path.
  SendResult send_locked(Frame& frame, const Envelope& to, std::chrono::nanoseconds wait) noexcept;
  SendResult publish_locked(Frame& frame, const Prepared& p, std::chrono::nanoseconds wait) noexcept;
  bool recv_locked(Delivery& out) noexcept;
  LocalPeer* find(std::uint64_t id) noexcept;
  const LocalPeer* find(std::uint64_t id) const noexcept;
  bool is_closed() const noexcept;
  void note_loss(LocalPeer& p) noexcept;
  void ring_user() noexcept;

  std::shared_ptr<HostCore> core_;
  const Pattern pattern_;
  const std::uint32_t service_;
  const std::string address_;
  Doorbell* const bell_;  // the service's doorbell (shared)
  std::atomic<Doorbell*> user_bell_{nullptr};

  mutable std::mutex mu_;
  std::vector<LocalPeer> peers_;
  std::atomic<std::uint32_t> peer_count_{0};  // peers_.size(), for wait_spin
  std::size_t rr_ = 0;
  std::deque<Delivery> pending_;
  bool attached_ = true;  // under mu_: false once detached from the core

  std::atomic<bool> closed_{false};
  std::atomic<std::uint64_t> subscriptions_seen_{0};
  Interrupt interrupt_;
  Counters counters_;
};

class PeerEndpoint final : public ShmEndpoint {
 public:
  struct Parts {
    Segment segment;
    BlockPool pool;
    SlotId slot;
    PeerTable table;
    std::uint32_t index;
    std::uint32_t generation;
    std::uint32_t service;
    ChannelRing* to_host;
    ChannelRing* to_peer;
    Pattern pattern;
    std::string address;
    std::vector<std::string> topics;
    std::chrono::milliseconds timeout;
  };
  explicit PeerEndpoint(Parts parts);
  ~PeerEndpoint() override;

  Pattern pattern() const noexcept override { return p_.pattern; }
  Scheme scheme() const noexcept override { return Scheme::kShm; }
  const std::string& address() const noexcept override { return p_.address; }
  SendResult try_send(Frame& frame, const Envelope& to) noexcept override;
  SendResult send_for(Frame& frame, std::chrono::nanoseconds timeout, const Envelope& to) noexcept override;
  bool try_recv(Delivery& out) noexcept override;
  std::size_t try_recv_batch(Delivery* out, std::size_t max) noexcept override;
  WaitResult recv_for(Delivery& out, std::chrono::nanoseconds timeout) noexcept override;
  void set_doorbell(Doorbell* bell) noexcept override;
  std::chrono::nanoseconds wait_spin() const noexcept override { return Doorbell::default_spin(); }
  void interrupt() noexcept override;
  Doorbell& doorbell() const noexcept override { return *bell_; }
  Result<void> subscribe(std::string_view prefix) override;
  Result<void> unsubscribe(std::string_view prefix) override;
  std::uint64_t subscriptions_seen() const noexcept override { return 0; }
  WaitResult wait_subscriptions(std::uint64_t, std::chrono::nanoseconds) noexcept override {
    return WaitResult::kShutdown;  // not a kPub
  }
  std::vector<PeerInfo> peers() const override { return {}; }
  std::uint32_t credits(PeerId) const noexcept override { return 0; }
  Result<void> grant(std::uint32_t n) override;
  EndpointStats stats() const noexcept override;
  void close() noexcept override;

  BlockPool& pool() const noexcept override { return pool_; }
  SlotId slot() const noexcept override { return p_.slot; }
  std::uint64_t copies() const noexcept override { return counters_.copies.load(std::memory_order_relaxed); }
  std::vector<PeerStatus> peer_status() const override;
  std::uint64_t nonce() const noexcept override { return p_.segment.nonce(); }
  std::uint64_t lost() const noexcept override;
  std::size_t inbound_capacity() const noexcept override { return p_.to_peer->capacity(); }

  // kSub: waits (bounded by `deadline`, woken by the owner's ring of this
  // entry's doorbell) until the owner acknowledged topic list `seq` (the
  // value write_topics returned): kClosed (host or service gone), kPeerDead
  // (owner died), kTimeout. connect() (registration) and publish_topics()
  // use it.
  Result<void> await_topic_ack(std::uint32_t seq, std::chrono::steady_clock::time_point deadline);

 private:
  // The host closed the segment or the service.
  bool host_gone() const noexcept;
  // The owner's death was seen by the DeathWatch (owner_.alive() asks).
  bool owner_died() const noexcept;
  // The end of one sleep: the deadline, or kOwnerCheck from now where no
  // DeathWatch watches the owner.
  std::chrono::steady_clock::time_point slice_end(std::chrono::steady_clock::time_point deadline) const noexcept;
  void wake_waiters() noexcept;
  bool service_open() const noexcept;
  SendResult send_locked(Frame& frame, const Envelope& to) noexcept;
  bool recv_locked(Delivery& out) noexcept;
  Result<void> publish_topics();


  Parts p_;
  mutable BlockPool pool_;  // a view (copy of p_.pool), handed to Frames
  PeerEntry& entry_;
  Doorbell* const bell_;          // this peer's entry doorbell
  Doorbell* const service_bell_;  // the host service's doorbell
  const ProcessWatch owner_;  // the segment's owner
  // Set by the owner's death (owner_watch_'s callback, which rings bell_
  // then): waits need not look at owner_ every kOwnerCheck. relaxed: the
  // ring that follows the store orders it for the waiter (Doorbell (R1)).
  std::atomic<bool> owner_dead_{false};

  std::mutex send_mu_, recv_mu_, topic_mu_;
  std::atomic<bool> closed_{false};
  std::atomic<Doorbell*> user_bell_{nullptr};
  Interrupt interrupt_;
  Counters counters_;
  // Whether owner_watch_ was granted, fixed at construction: waits read it
  // while close() (any thread) may end the ticket itself.
  bool owner_watched_ = false;
  // Last: ended first by the destructor, before anything its callback
  // touches; close() ends it before the segment can go.
  DeathWatch::Ticket owner_watch_;
};

}  // namespace palm::shm::detail
