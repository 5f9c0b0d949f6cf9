// Connected shm endpoints (PeerEndpoint): push, pull, sub, worker; and the
// attach handshake (connect).

#include <algorithm>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "detail/log.hpp"
#include "shm/shm_endpoint.hpp"

namespace palm::shm {

using palm::detail::atomic_of;
using transport::Pattern;
using Clock = std::chrono::steady_clock;

namespace detail {
namespace {

using transport::Body;

Clock::time_point deadline_after(std::chrono::nanoseconds timeout) noexcept {
  const auto now = Clock::now();
  if (timeout.count() <= 0) return now;
  if (timeout >= Clock::time_point::max() - now) return Clock::time_point::max();
  return now + std::chrono::duration_cast<Clock::duration>(timeout);
}

// How long one sleep may last before the peer re-checks that its host lives
// (a SIGKILLed owner rings nobody), where no DeathWatch rings for it.
constexpr std::chrono::milliseconds kOwnerCheck{250};

}  // namespace

PeerEndpoint::PeerEndpoint(Parts parts)
    : p_(std::move(parts)),
      pool_(p_.pool),
      entry_(p_.table.entry(p_.index)),
      bell_(&p_.table.entry_bell(p_.index)),
      service_bell_(&p_.table.service_bell(p_.service)),
      owner_(ProcessWatch(p_.segment.owner())) {
  // The owner's death rings this entry's doorbell and the consumer's: the
  // waits below then sleep until their deadline (a SIGKILLed owner rings
  // nobody itself).
  owner_watch_ = DeathWatch::watch(owner_.id(), [this] {
    owner_dead_.store(true, std::memory_order_relaxed);
    wake_waiters();
  });
  owner_watched_ = static_cast<bool>(owner_watch_);
}

void PeerEndpoint::wake_waiters() noexcept {
  bell_->ring(Doorbell::kWakeAll);
  // acquire: pairs with set_doorbell's release.
  if (Doorbell* user = user_bell_.load(std::memory_order_acquire)) user->ring(Doorbell::kWakeAll);
}

void PeerEndpoint::interrupt() noexcept {
  interrupt_.raise();
  wake_waiters();
}

Clock::time_point PeerEndpoint::slice_end(Clock::time_point deadline) const noexcept {
  if (owner_watched_) return deadline;
  return std::min(deadline, Clock::now() + kOwnerCheck);
}

bool PeerEndpoint::owner_died() const noexcept {
  return owner_dead_.load(std::memory_order_relaxed);  // see owner_dead_
}

PeerEndpoint::~PeerEndpoint() { close(); }

bool PeerEndpoint::service_open() const noexcept {
  // (SV2') acquire, as in find_service.
  return atomic_of(p_.table.service(p_.service).state).load(std::memory_order_acquire) ==
         static_cast<std::uint32_t>(ServiceState::kOpen);
}

bool PeerEndpoint::host_gone() const noexcept {
  return closed_.load(std::memory_order_acquire) || p_.table.closed() || !service_open();
}

SendResult PeerEndpoint::send_locked(Frame& frame, const Envelope& to) noexcept {
  if (!frame || to.body != Body::kMessage) return SendResult::kInvalid;
  const std::uint32_t tag = p_.pattern == Pattern::kWorker ? to.credits : 0;
  const ChannelPush r = send_frame(*p_.to_host, pool_, p_.slot, frame, tag, service_bell_, counters_);
  if (r == ChannelPush::kPushed) return SendResult::kQueued;
  if (r == ChannelPush::kFull) return SendResult::kFull;
  Counters::add(counters_.errors);
  return SendResult::kInvalid;
}

SendResult PeerEndpoint::try_send(Frame& frame, const Envelope& to) noexcept {
  if (!transport::sends(p_.pattern)) return SendResult::kInvalid;
  if (host_gone()) return SendResult::kClosed;
  std::lock_guard lock(send_mu_);
  return send_locked(frame, to);
}

SendResult PeerEndpoint::send_for(Frame& frame, std::chrono::nanoseconds timeout, const Envelope& to) noexcept {
  if (!transport::sends(p_.pattern)) return SendResult::kInvalid;
  SendResult r = SendResult::kFull;
  bool cut = false;
  const auto attempt = [&] {
    if (host_gone() || owner_died()) {
      r = SendResult::kClosed;
      return true;
    }
    {
      std::lock_guard lock(send_mu_);
      r = send_locked(frame, to);
    }
    if (r != SendResult::kFull) return true;
    cut = interrupt_.take();
    return cut;
  };
  // The common case, room at once, reads no clock.
  if (attempt()) return cut ? SendResult::kTimeout : r;
  const auto deadline = deadline_after(timeout);
  for (;;) {
    // The host rings this entry's doorbell when it pops: room.
    const WaitResult w = bell_->wait_until(attempt, slice_end(deadline));
    if (cut) return SendResult::kTimeout;
    if (w == WaitResult::kReady) return r;
    if (w == WaitResult::kShutdown) return SendResult::kClosed;
    if (!owner_.alive()) return SendResult::kClosed;
    if (Clock::now() >= deadline) return SendResult::kTimeout;
  }
}

bool PeerEndpoint::recv_locked(Delivery& out) noexcept {
  ChannelItem item{};
  for (;;) {
    const ChannelPop r = channel_receive(*p_.to_peer, pool_, p_.slot, item, service_bell_);
    if (r == ChannelPop::kEmpty) return false;
    if (r != ChannelPop::kMessage) {
      Counters::add(counters_.malformed);
      continue;
    }
    Frame f(pool_, p_.slot, Handle::from_bits(item.handle));
    const FrameView* view = f.peek();  // validated once and kept in f: no copy
    if (!view) {
      Counters::add(counters_.malformed);
      continue;
    }
    Counters::add(counters_.messages_in);
    Counters::add(counters_.bytes_in, view->wire.size());
    out.frame = std::move(f);
    out.event = transport::Event::kMessage;
    out.body = Body::kMessage;
    out.peer = transport::PeerId::kNone;
    out.credits = 0;
    return true;
  }
}

bool PeerEndpoint::try_recv(Delivery& out) noexcept {
  if (!transport::receives(p_.pattern) || closed_.load(std::memory_order_acquire)) return false;
  std::lock_guard lock(recv_mu_);
  return recv_locked(out);
}

std::size_t PeerEndpoint::try_recv_batch(Delivery* out, std::size_t max) noexcept {
  if (!transport::receives(p_.pattern) || closed_.load(std::memory_order_acquire)) return 0;
  std::lock_guard lock(recv_mu_);
  std::size_t n = 0;
  while (n < max && recv_locked(out[n])) ++n;
  return n;
}

WaitResult PeerEndpoint::recv_for(Delivery& out, std::chrono::nanoseconds timeout) noexcept {
  if (!transport::receives(p_.pattern)) return WaitResult::kShutdown;
  bool got = false;
  bool gone = false;
  bool cut = false;
  const auto attempt = [&] {
    if (closed_.load(std::memory_order_acquire)) {
      gone = true;
      return true;
    }
    {
      std::lock_guard lock(recv_mu_);
      got = recv_locked(out);
    }
    if (got) return true;
    // Drained and the host is gone: shutdown.
    gone = host_gone();
    if (gone || owner_died()) return true;  // a dead owner: below
    cut = interrupt_.take();
    return cut;
  };
  const auto outcome = [&]() -> std::optional<WaitResult> {
    if (got) return WaitResult::kReady;
    if (gone) return WaitResult::kShutdown;
    if (cut) return WaitResult::kTimeout;
    return std::nullopt;
  };
  // The common case under load, a message waiting, reads no clock.
  attempt();
  if (auto r = outcome()) return *r;
  const auto deadline = deadline_after(timeout);
  for (;;) {
    bell_->wait_until(attempt, slice_end(deadline));
    if (auto r = outcome()) return *r;
    if (!owner_.alive()) {
      // The owner died: take what it published, then report shutdown.
      std::lock_guard lock(recv_mu_);
      return recv_locked(out) ? WaitResult::kReady : WaitResult::kShutdown;
    }
    if (Clock::now() >= deadline) return WaitResult::kTimeout;
  }
}

void PeerEndpoint::set_doorbell(Doorbell* bell) noexcept {
  user_bell_.store(bell, std::memory_order_release);  // nothing rings it yet: see host.hpp
}

Result<void> PeerEndpoint::await_topic_ack(std::uint32_t seq, Clock::time_point deadline) {
  // (K2) acquire, pairs with the owner's release of the ack: (K0) at
  // registration, (K1) for a later change. Seeing it, this thread happens
  // after the owner put the topics in force (HostEndpoint::add_peer or
  // set_topics, under the endpoint's mutex): what is published after this
  // returns is filtered by them. topic_ack is 0 until the owner registered
  // this entry (connect resets it while Claiming), and the topic_seq values
  // of one attachment grow from 2, so ">= seq" means "these topics, or a
  // later list of this same peer".
  const auto acked = [&] { return atomic_of(entry_.topic_ack).load(std::memory_order_acquire) >= seq; };
  for (;;) {
    // The owner rings this entry's doorbell after each ack (R1 after the
    // release store), so the wait ends within a wake-up; sliced only to
    // notice an owner that died (a SIGKILLed owner rings nobody).
    const WaitResult w = bell_->wait_until([&] { return acked() || host_gone() || owner_died(); }, slice_end(deadline));
    if (host_gone() || w == WaitResult::kShutdown) {
      return make_error(Errc::kClosed, "the shm host " + p_.address + " is gone");
    }
    if (acked()) return {};
    if (!owner_.alive()) {
      return make_error(Errc::kPeerDead, "the owner of " + p_.address + " (pid " + std::to_string(owner_.id().pid) +
                                             ") died before applying the subscription");
    }
    if (Clock::now() >= deadline) {
      return make_error(Errc::kTimeout, "the shm host did not apply the subscription within " +
                                            std::to_string(p_.timeout.count()) + " ms");
    }
  }
}

Result<void> PeerEndpoint::publish_topics() {
  auto enc = encode_topics(p_.topics);
  if (!enc) return tl::unexpected(std::move(enc.error()));
  const std::uint32_t seq = write_topics(entry_, *enc);
  p_.table.control().ring();
  // Wait for the owner to apply it: what is published after this returns
  // is filtered by the new list.
  return await_topic_ack(seq, deadline_after(p_.timeout));
}

Result<void> PeerEndpoint::subscribe(std::string_view prefix) {
  if (p_.pattern != Pattern::kSub) return make_error(Errc::kInvalidArgument, "subscribe on a non-sub shm endpoint");
  std::lock_guard lock(topic_mu_);
  if (std::find(p_.topics.begin(), p_.topics.end(), prefix) != p_.topics.end()) return {};
  p_.topics.emplace_back(prefix);
  auto r = publish_topics();
  if (!r && r.error().code == Errc::kOutOfRange) p_.topics.pop_back();
  return r;
}

Result<void> PeerEndpoint::unsubscribe(std::string_view prefix) {
  if (p_.pattern != Pattern::kSub) return make_error(Errc::kInvalidArgument, "unsubscribe on a non-sub shm endpoint");
  std::lock_guard lock(topic_mu_);
  auto it = std::find(p_.topics.begin(), p_.topics.end(), prefix);
  if (it == p_.topics.end()) return {};
  p_.topics.erase(it);
  return publish_topics();
}

Result<void> PeerEndpoint::grant(std::uint32_t n) {
  if (p_.pattern != Pattern::kWorker) return make_error(Errc::kInvalidArgument, "grant on a non-worker shm endpoint");
  if (host_gone()) return make_error(Errc::kClosed, "the shm host " + p_.address + " is gone");
  std::lock_guard lock(send_mu_);
  if (channel_send_credit(*p_.to_host, n, service_bell_) != ChannelPush::kPushed) {
    return make_error(Errc::kExhausted, "the worker's channel to " + p_.address + " is full; retry the grant");
  }
  return {};
}

EndpointStats PeerEndpoint::stats() const noexcept {
  EndpointStats s;
  counters_.fill(s);
  // The messages the host dropped because this subscriber was slow: an
  // error this side sees (the flag says at least one was lost).
  s.errors += atomic_of(entry_.lost).load(std::memory_order_relaxed);  // relaxed: a statistic
  s.queue_in = p_.to_peer->size_approx();
  s.queue_out = p_.to_host->size_approx();
  return s;
}

std::uint64_t PeerEndpoint::lost() const noexcept {
  // relaxed: a count, read as in stats(); nothing is published with it (the
  // lost messages never reach this side).
  return atomic_of(entry_.lost).load(std::memory_order_relaxed);
}

std::vector<PeerStatus> PeerEndpoint::peer_status() const {
  PeerStatus st;
  st.peer = make_peer_id(p_.index, p_.generation);
  st.pid = owner_.id().pid;
  st.service = p_.address;
  st.pattern = p_.pattern;
  st.messages_in = p_.to_peer->tail();
  st.messages_out = p_.to_host->tail();
  // relaxed / acquire: as in stats(); acquire pairs with note_loss's release.
  st.overflow = atomic_of(entry_.overflow).load(std::memory_order_acquire) != 0;
  st.lost = atomic_of(entry_.lost).load(std::memory_order_relaxed);
  st.credits = entry_.credits;
  return {st};
}

void PeerEndpoint::close() noexcept {
  // First: after this the watch's callback does not run, and nothing rings
  // bell_ for it once the segment may be unmapped.
  owner_watch_.reset();
  if (closed_.exchange(true, std::memory_order_acq_rel)) return;  // acq_rel: one closer
  {
    // Our sides of both channels stop here: after these locks no thread of
    // this process touches them again.
    std::scoped_lock lock(send_mu_, recv_mu_, topic_mu_);
  }
  // Clean exit: what this slot holds goes back (detach_process). Frames the
  // application still holds are released with it.
  static_cast<void>(pool_.detach_process(p_.slot));
  auto word = atomic_of(entry_.state_pid);
  std::uint64_t w = word.load(std::memory_order_relaxed);  // checked by the CAS
  // (E7) Attached -> Leaving, release: the owner's acquire (E5) sees our last
  // ring operations. Fails only if the owner discarded us already.
  if (peer_state(w) == PeerState::kAttached) {
    static_cast<void>(word.compare_exchange_strong(w, pack_peer(PeerState::kLeaving, peer_pid(w)),
                                                   std::memory_order_release, std::memory_order_relaxed));
  }
  p_.table.control().ring();
}

}  // namespace detail

// ---------------------------------------------------------------------------
// The attach handshake.

Result<std::unique_ptr<ShmEndpoint>> connect(std::string_view segment, Pattern pattern,
                                             const ConnectOptions& options) {
  const std::string name(segment);
  const std::string address = "shm://" + name + "/" + options.service;
  if (pattern != Pattern::kPush && pattern != Pattern::kPull && pattern != Pattern::kSub &&
      pattern != Pattern::kWorker) {
    return make_error(Errc::kInvalidArgument, std::string("shm:// cannot connect a ") + transport::to_string(pattern) +
                                                  " endpoint (push, pull, sub, worker only)");
  }
  if (pattern == Pattern::kWorker && options.credits == 0) {
    return make_error(Errc::kInvalidArgument, "a worker offers at least 1 credit (ConnectOptions::credits)");
  }
  auto topics = encode_topics(options.subscriptions);
  if (!topics) return tl::unexpected(std::move(topics.error()));

  // 1. Open the segment by name; a creator still writing answers kNotReady.
  const auto deadline = Clock::now() + options.timeout;
  Result<Segment> seg = Segment::open(name);
  Result<PeerTable> table = make_error(Errc::kNotReady, "");
  std::optional<Area> peers_area, pool_area;
  while (true) {
    if (seg) {
      auto pa = seg->area("peers");
      auto po = seg->area("pool");
      if (!pa || !po) return make_error(Errc::kMalformed, "segment " + name + " has no peer table or pool");
      peers_area = *pa;
      pool_area = *po;
      table = PeerTable::attach(pa->base, pa->bytes);
      if (table || table.error().code != Errc::kNotReady) break;
    } else if (seg.error().code != Errc::kNotReady) {
      return tl::unexpected(std::move(seg.error()));
    }
    if (Clock::now() >= deadline) return make_error(Errc::kTimeout, "segment " + name + " stayed not ready");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // a creator mid-way: rare, bounded
    seg = Segment::open(name);
  }
  if (!table) return tl::unexpected(std::move(table.error()));
  // 2. The incarnation: the nonce we were told must be this segment's (a
  // restarted server has a new one).
  if (options.nonce != 0 && (seg->nonce() != options.nonce || table->header().nonce != options.nonce)) {
    return make_error(Errc::kNotFound, "segment " + name + " is another incarnation (nonce " +
                                           std::to_string(seg->nonce()) + ", expected " +
                                           std::to_string(options.nonce) + "): the server restarted; rediscover it");
  }
  if (!process_alive(seg->owner())) {
    return make_error(Errc::kPeerDead, "the owner of segment " + name + " (pid " + std::to_string(seg->owner().pid) +
                                           ") is dead");
  }
  if (table->closed()) return make_error(Errc::kClosed, "segment " + name + " is shut down");
  auto service = table->find_service(options.service);
  if (!service) return tl::unexpected(std::move(service.error()));
  const auto bound = static_cast<Pattern>(table->service(*service).pattern);
  const auto want = detail::peer_pattern_for(bound);
  if (!want || *want != pattern) {
    return make_error(Errc::kInvalidArgument, address + " is a " + transport::to_string(bound) +
                                                  "; connect to it as a " +
                                                  (want ? transport::to_string(*want) : "(nothing)") + ", not a " +
                                                  transport::to_string(pattern));
  }
  auto pool = BlockPool::attach(Region{pool_area->base, pool_area->bytes, pool_area->fd, pool_area->file_offset});
  if (!pool) return tl::unexpected(std::move(pool.error()));

  // 3. Claim a peer entry: one CAS names us (E1).
  const ProcessId me = self_process();
  std::uint32_t index = table->max_peers();
  for (std::uint32_t i = 0; i < table->max_peers(); ++i) {
    auto word = atomic_of(table->entry(i).state_pid);
    std::uint64_t w = word.load(std::memory_order_relaxed);  // a hint; the CAS checks it
    if (peer_state(w) != PeerState::kFree) continue;
    // (E1) acquire: pairs with the owner's (E6) release of the entry.
    if (word.compare_exchange_strong(w, pack_peer(PeerState::kClaiming, static_cast<std::uint32_t>(me.pid)),
                                     std::memory_order_acquire, std::memory_order_relaxed)) {
      index = i;
      break;
    }
  }
  if (index == table->max_peers()) {
    return make_error(Errc::kExhausted, "segment " + name + " has all " + std::to_string(table->max_peers()) +
                                            " peer entries taken; raise HostOptions::max_peers");
  }
  PeerEntry& e = table->entry(index);
  auto word = atomic_of(e.state_pid);
  const auto release_entry = [&] {
    // Back to Free (release, as (E6)): nothing was sent on it.
    word.store(pack_peer(PeerState::kFree, 0), std::memory_order_release);
  };
  // 4. Fill the entry (ours alone while Claiming; published by (E3)).
  e.start_time = me.start_time;
  e.generation += 1;
  if (e.generation == 0) e.generation = 1;
  e.service = *service;
  e.pattern = static_cast<std::uint32_t>(pattern);
  e.credits = options.credits;
  atomic_of(e.overflow).store(0, std::memory_order_relaxed);
  atomic_of(e.lost).store(0, std::memory_order_relaxed);
  // The topic seqlock restarts at 0 for each attachment (a previous peer
  // may have died mid-write, leaving it odd), and the ack at 0: "not
  // registered yet". relaxed: ours while Claiming, published by (E3).
  atomic_of(e.topic_seq).store(0, std::memory_order_relaxed);
  atomic_of(e.topic_ack).store(0, std::memory_order_relaxed);
  const std::uint32_t topic_seq = write_topics(e, *topics);
  Doorbell::create_at(e.bell);
  auto to_host = ChannelRing::create_at(table->to_host_memory(index), table->ring_bytes(),
                                        table->header().channel_capacity);
  auto to_peer = ChannelRing::create_at(table->to_peer_memory(index), table->ring_bytes(),
                                        table->header().channel_capacity);
  if (!to_host || !to_peer) {
    release_entry();
    return make_error(Errc::kMalformed, "cannot format the channels of peer entry " + std::to_string(index));
  }
  auto slot = pool->attach_process(me);
  if (!slot) {
    release_entry();
    return tl::unexpected(std::move(slot.error()));
  }
  e.pool_slot = static_cast<std::uint32_t>(*slot);
  // (E3) Attached, release: pairs with the owner's (E4): it sees the fields
  // and formatted rings.
  word.store(pack_peer(PeerState::kAttached, static_cast<std::uint32_t>(me.pid)), std::memory_order_release);
  // 5. The owner learns of it.
  table->control().ring();
  palm::transport::detail::log().debug("{}: attached as peer {} ({})", address, index, transport::to_string(pattern));

  detail::PeerEndpoint::Parts parts{std::move(*seg),   *pool,         *slot,   *table,  index,
                                    e.generation,      *service,      *to_host, *to_peer, pattern,
                                    address,           options.subscriptions, options.timeout};
  auto ep = std::make_unique<detail::PeerEndpoint>(std::move(parts));
  // 6. kSub: wait until the owner registered us with our topics (its
  // monitor, woken by the ring above, acknowledges and rings our entry's
  // doorbell): from the return on, whatever the host publishes reaches us.
  // On failure the endpoint's destructor leaves the entry (close()).
  if (pattern == Pattern::kSub) {
    if (auto r = ep->await_topic_ack(topic_seq, deadline); !r) {
      if (r.error().code == Errc::kTimeout) {
        return make_error(Errc::kTimeout, "the shm host of " + address + " did not register this subscriber within " +
                                              std::to_string(options.timeout.count()) + " ms");
      }
      return tl::unexpected(std::move(r.error()));
    }
  }
  return std::unique_ptr<ShmEndpoint>(std::move(ep));
}

}  // namespace palm::shm
