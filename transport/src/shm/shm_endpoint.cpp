// Bound shm endpoints (HostEndpoint): pull, push, pub, dispatcher.

#include <algorithm>
#include <string>
#include <utility>

#include "detail/log.hpp"
#include "shm/shm_endpoint.hpp"

namespace palm::shm::detail {

using palm::detail::atomic_of;
using transport::Body;
using transport::Event;
using Clock = std::chrono::steady_clock;

namespace {

Clock::time_point deadline_after(std::chrono::nanoseconds timeout) noexcept {
  const auto now = Clock::now();
  if (timeout.count() <= 0) return now;
  if (timeout >= Clock::time_point::max() - now) return Clock::time_point::max();
  return now + std::chrono::duration_cast<Clock::duration>(timeout);
}

bool topic_matches(const std::vector<std::string>& prefixes, std::string_view topic) noexcept {
  return std::any_of(prefixes.begin(), prefixes.end(),
                     [&](const std::string& p) { return topic.substr(0, p.size()) == p; });
}

}  // namespace

HostEndpoint::HostEndpoint(std::shared_ptr<HostCore> core, Pattern pattern, std::uint32_t service,
                           std::string address)
    : core_(std::move(core)),
      pattern_(pattern),
      service_(service),
      address_(std::move(address)),
      bell_(&core_->table().service_bell(service)) {}

HostEndpoint::~HostEndpoint() { close(); }

bool HostEndpoint::is_closed() const noexcept {
  // acquire: pairs with close()'s release; orders nothing else.
  return closed_.load(std::memory_order_acquire) || core_->stopped();
}

void HostEndpoint::ring_user() noexcept {
  // acquire: pairs with set_doorbell's release (the doorbell is formatted).
  if (Doorbell* b = user_bell_.load(std::memory_order_acquire)) b->ring();
}

HostEndpoint::LocalPeer* HostEndpoint::find(std::uint64_t id) noexcept {
  for (LocalPeer& p : peers_) {
    if (p.id == id) return &p;
  }
  return nullptr;
}
const HostEndpoint::LocalPeer* HostEndpoint::find(std::uint64_t id) const noexcept {
  for (const LocalPeer& p : peers_) {
    if (p.id == id) return &p;
  }
  return nullptr;
}

// ---- monitor side ------------------------------------------------------------

void HostEndpoint::add_peer(std::uint32_t index, std::uint32_t generation, ChannelRing* to_host,
                            ChannelRing* to_peer, std::uint32_t credits, std::vector<std::string> topics) {
  {
    std::lock_guard lock(mu_);
    if (!attached_) return;
    LocalPeer p;
    p.index = index;
    p.generation = generation;
    p.id = make_peer_id(index, generation);
    p.to_host = to_host;
    p.to_peer = to_peer;
    p.bell = &core_->table().entry_bell(index);
    p.credits = credits;
    const std::uint64_t subs = topics.empty() ? 0 : topics.size();
    p.topics = std::move(topics);
    peers_.push_back(std::move(p));
    peer_count_.store(static_cast<std::uint32_t>(peers_.size()), std::memory_order_relaxed);
    if (pattern_ == Pattern::kDispatcher) {
      Delivery joined;
      joined.event = Event::kPeerJoined;
      joined.peer = static_cast<PeerId>(make_peer_id(index, generation));
      joined.credits = credits;
      pending_.push_back(std::move(joined));
    }
    // release: pairs with wait_subscriptions' acquire; the subscriber is in
    // peers_ (under mu_) before the count says so.
    if (subs != 0) subscriptions_seen_.fetch_add(subs, std::memory_order_release);
  }
  bell_->ring(Doorbell::kWakeAll);
  ring_user();
}

void HostEndpoint::set_topics(std::uint32_t index, std::vector<std::string> topics) {
  {
    std::lock_guard lock(mu_);
    for (LocalPeer& p : peers_) {
      if (p.index != index) continue;
      std::uint64_t added = 0;
      for (const std::string& t : topics) {
        if (std::find(p.topics.begin(), p.topics.end(), t) == p.topics.end()) ++added;
      }
      p.topics = std::move(topics);
      if (added != 0) subscriptions_seen_.fetch_add(added, std::memory_order_release);  // as in add_peer
    }
  }
  bell_->ring(Doorbell::kWakeAll);
}

void HostEndpoint::remove_peer(std::uint32_t index, bool dead) {
  {
    std::lock_guard lock(mu_);
    auto it = std::find_if(peers_.begin(), peers_.end(), [&](const LocalPeer& p) { return p.index == index; });
    if (it == peers_.end()) return;
    LocalPeer p = std::move(*it);
    peers_.erase(it);
    peer_count_.store(static_cast<std::uint32_t>(peers_.size()), std::memory_order_relaxed);
    if (rr_ >= peers_.size()) rr_ = 0;
    // What the peer sent before it went is delivered (each item was
    // published whole), then its departure: the order a dispatcher expects.
    ChannelItem item{};
    BlockPool& pool = core_->pool();
    for (std::uint32_t n = 0; n < p.to_host->capacity(); ++n) {
      const ChannelPop r = channel_receive(*p.to_host, pool, core_->slot(), item, nullptr);
      if (r == ChannelPop::kEmpty) break;
      if (r == ChannelPop::kMessage) {
        Delivery d;
        d.frame = Frame(pool, core_->slot(), Handle::from_bits(item.handle));
        d.peer = static_cast<PeerId>(p.id);
        d.credits = item.tag;
        Counters::add(counters_.messages_in);
        pending_.push_back(std::move(d));
      } else if (r == ChannelPop::kBadHandle) {
        Counters::add(counters_.malformed);
      }
    }
    // What was sent to it and not taken goes back to the pool.
    // A dead peer may hold the item at head already (channel.hpp, receive).
    const std::uint32_t peer_slot = core_->table().entry(index).pool_slot;  // the peer wrote it at attach
    const SlotId consumer = dead && peer_slot != ~0u ? SlotId{peer_slot} : kNoSlot;
    const std::size_t released = discard_channel(*p.to_peer, pool, core_->slot(), consumer);
    if (released != 0) Counters::add(counters_.dropped, released);
    if (pattern_ == Pattern::kDispatcher) {
      Delivery gone;
      gone.event = Event::kPeerGone;
      gone.peer = static_cast<PeerId>(p.id);
      pending_.push_back(std::move(gone));
    }
    palm::transport::detail::log().info("{}: peer {:#x} {} ({} undelivered references released)", address_, p.id,
                                        dead ? "died" : "left", released);
  }
  bell_->ring(Doorbell::kWakeAll);
  ring_user();
}

void HostEndpoint::detach_from_core() noexcept {
  std::lock_guard lock(mu_);
  attached_ = false;
  // The peers become orphans: the monitor (or nobody, at shutdown) discards
  // their channels through the table. Queued deliveries are released.
  peers_.clear();
  peer_count_.store(0, std::memory_order_relaxed);
  const std::size_t n = pending_.size();
  pending_.clear();
  if (n != 0) Counters::add(counters_.dropped, n);
}

// ---- sending -------------------------------------------------------------------

void HostEndpoint::note_loss(LocalPeer& p) noexcept {
  PeerEntry& e = core_->table().entry(p.index);
  // relaxed: a counter the subscriber and the stats read as a snapshot.
  const std::uint64_t n = atomic_of(e.lost).fetch_add(1, std::memory_order_relaxed) + 1;
  // release: a subscriber that sees the flag (acquire) sees the count too.
  atomic_of(e.overflow).store(1, std::memory_order_release);
  Counters::add(counters_.dropped);
  if (palm::transport::detail::should_log(n)) {
    palm::transport::detail::log().warn("{}: subscriber {:#x} is too slow: its channel stayed full; it lost {} "
                                        "message(s) so far",
                                        address_, p.id, n);
  }
  p.lagging = true;
}

SendResult HostEndpoint::publish_locked(Frame& frame, const Prepared& prep, std::chrono::nanoseconds wait) noexcept {
  const bool may_wait = wait.count() > 0;
  BlockPool& pool = core_->pool();
  // Not copied: prep names the frame's own block, whose view it keeps.
  auto view = prep.copied ? view_frame(pool, prep.handle) : frame.view();
  if (!view) {
    unprepare(pool, prep);
    Counters::add(counters_.errors);
    return SendResult::kInvalid;
  }
  const std::string_view topic = view->topic;
  const std::uint64_t bytes = view->wire.size();
  // Fan-out adds references, one per subscriber served, nothing copied; the
  // publisher's own is dropped at the end. (Handing it to the last
  // subscriber instead saves an add and a release, but the last release then
  // happens through the subscriber's mapping of the segment: in a process
  // that maps it twice, host and peer, ThreadSanitizer cannot follow that
  // hand-off and reports the block's reuse as a race.)
  std::vector<LocalPeer*> waiting;
  std::size_t sent = 0;
  const auto deliver = [&](LocalPeer& p) {
    if (!pool.add_ref(prep.slot, prep.handle, 1)) return false;
    if (channel_send(*p.to_peer, pool, prep.slot, prep.handle, 0, p.bell) != ChannelPush::kPushed) {
      static_cast<void>(pool.release(prep.slot, prep.handle));
      return false;
    }
    p.lagging = false;
    ++sent;
    return true;
  };
  for (LocalPeer& p : peers_) {
    if (!topic_matches(p.topics, topic)) continue;
    if (channel_has_room(*p.to_peer)) {
      if (!deliver(p)) note_loss(p);
    } else if (p.lagging || !may_wait) {
      note_loss(p);  // already behind, or try_send: no waiting
    } else {
      waiting.push_back(&p);
    }
  }
  if (!waiting.empty()) {
    // One bounded wait for all the full subscribers together: the publisher
    // is held back at most slow_subscriber_wait per message, and only by
    // subscribers that were keeping up until now.
    const auto limit = deadline_after(std::min<std::chrono::nanoseconds>(wait, core_->options().slow_subscriber_wait));
    bell_->wait_until(
        [&] {
          return std::all_of(waiting.begin(), waiting.end(),
                             [](LocalPeer* p) { return channel_has_room(*p->to_peer); }) ||
                 is_closed();
        },
        limit);
    for (LocalPeer* p : waiting) {
      if (!channel_has_room(*p->to_peer) || !deliver(*p)) note_loss(*p);
    }
  }
  if (prep.copied) {
    unprepare(pool, prep);
    Counters::add(counters_.copies);
  }
  frame.reset();
  if (sent != 0) {
    Counters::add(counters_.messages_out, sent);
    Counters::add(counters_.bytes_out, bytes * sent);
  }
  return SendResult::kQueued;
}

SendResult HostEndpoint::send_locked(Frame& frame, const Envelope& to, std::chrono::nanoseconds wait) noexcept {
  if (!frame || to.body != Body::kMessage || !transport::sends(pattern_)) return SendResult::kInvalid;
  BlockPool& pool = core_->pool();
  switch (pattern_) {
    case Pattern::kPub: {
      auto prep = prepare_frame(pool, core_->slot(), frame);
      if (!prep) {
        Counters::add(counters_.errors);
        return SendResult::kInvalid;
      }
      return publish_locked(frame, *prep, wait);
    }
    case Pattern::kPush: {
      // Round-robin over the pullers, skipping full ones.
      const std::size_t n = peers_.size();
      for (std::size_t k = 0; k < n; ++k) {
        LocalPeer& p = peers_[(rr_ + k) % n];
        const ChannelPush r = send_frame(*p.to_peer, pool, core_->slot(), frame, 0, p.bell, counters_);
        if (r == ChannelPush::kPushed) {
          rr_ = (rr_ + k + 1) % n;
          return SendResult::kQueued;
        }
        if (r == ChannelPush::kBadFrame) {
          Counters::add(counters_.errors);
          return SendResult::kInvalid;
        }
      }
      return SendResult::kFull;
    }
    case Pattern::kDispatcher: {
      LocalPeer* p = find(static_cast<std::uint64_t>(to.peer));
      if (p == nullptr) return SendResult::kPeerGone;
      if (p->credits == 0) return SendResult::kNoCredit;
      const ChannelPush r = send_frame(*p->to_peer, pool, core_->slot(), frame, 0, p->bell, counters_);
      if (r == ChannelPush::kFull) return SendResult::kFull;
      if (r == ChannelPush::kBadFrame) {
        Counters::add(counters_.errors);
        return SendResult::kInvalid;
      }
      --p->credits;
      return SendResult::kQueued;
    }
    default:
      return SendResult::kInvalid;
  }
}

SendResult HostEndpoint::try_send(Frame& frame, const Envelope& to) noexcept {
  if (is_closed()) return SendResult::kClosed;
  std::lock_guard lock(mu_);
  return send_locked(frame, to, std::chrono::nanoseconds(0));
}

SendResult HostEndpoint::send_for(Frame& frame, std::chrono::nanoseconds timeout, const Envelope& to) noexcept {
  SendResult r = SendResult::kFull;
  const auto attempt = [&] {
    if (is_closed()) {
      r = SendResult::kClosed;
      return true;
    }
    {
      std::lock_guard lock(mu_);
      r = send_locked(frame, to, timeout);
    }
    return r != SendResult::kFull || interrupt_.take();  // cut short: kTimeout below
  };
  // Peers ring the service doorbell when they pop: room. wait_for reads no
  // clock when the first attempt succeeds (the common case). A kPub send
  // makes one attempt (it never returns kFull): its wait for slow
  // subscribers stays within the budget.
  if (bell_->wait_for(attempt, timeout) == WaitResult::kShutdown) return SendResult::kClosed;
  return r == SendResult::kFull ? SendResult::kTimeout : r;
}

// ---- receiving -----------------------------------------------------------------

bool HostEndpoint::recv_locked(Delivery& out) noexcept {
  if (!pending_.empty()) {
    out = std::move(pending_.front());
    pending_.pop_front();
    return true;
  }
  BlockPool& pool = core_->pool();
  const std::size_t n = peers_.size();
  ChannelItem item{};
  // rr_ < n (remove_peer resets it): wrapped by a compare, not a division.
  std::size_t at = rr_;
  for (std::size_t k = 0; k < n; ++k, at = at + 1 == n ? 0 : at + 1) {
    LocalPeer& p = peers_[at];
    for (;;) {
      const ChannelPop r = channel_receive(*p.to_host, pool, core_->slot(), item, p.bell);
      if (r == ChannelPop::kEmpty) break;
      if (r == ChannelPop::kBadHandle) {
        Counters::add(counters_.malformed);
        continue;
      }
      rr_ = at + 1 == n ? 0 : at + 1;
      const auto fill = [&](Event event) {
        out.event = event;
        out.body = Body::kMessage;
        out.peer = static_cast<PeerId>(p.id);
        out.credits = item.tag;
      };
      if (r == ChannelPop::kCredit) {
        if (pattern_ != Pattern::kDispatcher) {
          Counters::add(counters_.malformed);
          continue;
        }
        p.credits += item.tag;
        out.frame.reset();
        fill(Event::kCredit);
        return true;
      }
      // Adopted in place and validated there: the view is kept in out.frame,
      // never copied from a temporary (a FrameView is ~200 bytes).
      out.frame = Frame(pool, core_->slot(), Handle::from_bits(item.handle));
      const FrameView* view = out.frame.peek();
      if (!view) {
        Counters::add(counters_.malformed);
        out.frame.reset();  // releases it
        continue;
      }
      if (pattern_ == Pattern::kDispatcher) p.credits += item.tag;  // credits come back with the result
      fill(Event::kMessage);
      // Every writer of these two holds mu_: no locked add needed.
      Counters::add_owned(counters_.messages_in);
      Counters::add_owned(counters_.bytes_in, view->wire.size());
      return true;
    }
  }
  return false;
}

bool HostEndpoint::try_recv(Delivery& out) noexcept {
  if (!transport::receives(pattern_)) return false;
  std::lock_guard lock(mu_);
  return recv_locked(out);
}

std::size_t HostEndpoint::try_recv_batch(Delivery* out, std::size_t max) noexcept {
  if (!transport::receives(pattern_)) return 0;
  std::lock_guard lock(mu_);
  std::size_t n = 0;
  while (n < max && recv_locked(out[n])) ++n;
  return n;
}

WaitResult HostEndpoint::recv_for(Delivery& out, std::chrono::nanoseconds timeout) noexcept {
  if (!transport::receives(pattern_)) return WaitResult::kShutdown;
  bool got = false;
  bool cut = false;
  const WaitResult r = bell_->wait_for(
      [&] {
        {
          std::lock_guard lock(mu_);
          got = recv_locked(out);
        }
        if (got || is_closed()) return true;
        cut = interrupt_.take();
        return cut;
      },
      timeout);
  if (got) return WaitResult::kReady;
  return r == WaitResult::kTimeout || cut ? WaitResult::kTimeout : WaitResult::kShutdown;
}

void HostEndpoint::interrupt() noexcept {
  interrupt_.raise();
  // The service's doorbell, shared with the peers that ring it: its other
  // sleepers look again and sleep on.
  bell_->ring(Doorbell::kWakeAll);
  ring_user();
}

void HostEndpoint::set_doorbell(Doorbell* bell) noexcept {
  user_bell_.store(bell, std::memory_order_release);  // pairs with ring_user's acquire
}

// ---- pattern specifics -------------------------------------------------------------

Result<void> HostEndpoint::subscribe(std::string_view) {
  return make_error(Errc::kInvalidArgument, "subscribe on a bound shm " + std::string(to_string(pattern_)));
}
Result<void> HostEndpoint::unsubscribe(std::string_view) {
  return make_error(Errc::kInvalidArgument, "unsubscribe on a bound shm " + std::string(to_string(pattern_)));
}

std::uint64_t HostEndpoint::subscriptions_seen() const noexcept {
  return subscriptions_seen_.load(std::memory_order_acquire);  // pairs with add_peer's release
}

WaitResult HostEndpoint::wait_subscriptions(std::uint64_t n, std::chrono::nanoseconds timeout) noexcept {
  if (pattern_ != Pattern::kPub) return WaitResult::kShutdown;
  const WaitResult r = bell_->wait_for([&] { return subscriptions_seen() >= n || is_closed(); }, timeout);
  if (subscriptions_seen() >= n) return WaitResult::kReady;
  return r == WaitResult::kTimeout ? WaitResult::kTimeout : WaitResult::kShutdown;
}

std::vector<PeerInfo> HostEndpoint::peers() const {
  std::lock_guard lock(mu_);
  std::vector<PeerInfo> out;
  for (const LocalPeer& p : peers_) out.push_back(PeerInfo{static_cast<PeerId>(p.id), p.credits});
  return out;
}

std::uint32_t HostEndpoint::credits(PeerId peer) const noexcept {
  std::lock_guard lock(mu_);
  const LocalPeer* p = find(static_cast<std::uint64_t>(peer));
  return p == nullptr ? 0 : p->credits;
}

Result<void> HostEndpoint::grant(std::uint32_t) {
  return make_error(Errc::kInvalidArgument, "grant on a bound shm " + std::string(to_string(pattern_)));
}

EndpointStats HostEndpoint::stats() const noexcept {
  EndpointStats s;
  counters_.fill(s);
  std::lock_guard lock(mu_);
  s.queue_in = pending_.size();
  for (const LocalPeer& p : peers_) {
    s.queue_in += p.to_host->size_approx();
    s.queue_out += p.to_peer->size_approx();
  }
  return s;
}

std::vector<PeerStatus> HostEndpoint::peer_status() const {
  std::vector<std::uint32_t> indices;
  {
    std::lock_guard lock(mu_);
    for (const LocalPeer& p : peers_) indices.push_back(p.index);
  }
  std::vector<PeerStatus> out;
  for (std::uint32_t i : indices) out.push_back(core_->status_of(i));
  return out;
}

void HostEndpoint::close() noexcept {
  if (closed_.exchange(true, std::memory_order_acq_rel)) return;  // acq_rel: one closer
  core_->unbind(service_, this);
  detach_from_core();
  bell_->ring(Doorbell::kWakeAll);  // wake our own waiters: they see closed_
}

}  // namespace palm::shm::detail
