// The owner's side of a shm segment: creation, services, and the monitor
// thread that registers attached peers and discards departed or dead ones.

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "detail/log.hpp"
#include "palm/core/quiet_thread.hpp"
#include "shm/shm_endpoint.hpp"

namespace palm::shm {

using palm::detail::atomic_of;
using transport::Pattern;

PoolConfig default_host_pool() {
  PoolConfig c;
  c.process_slots = 64;
  // A server's slot holds what its routes, its tcp queues and its in-flight
  // window hold at once (DESIGN.md "Backpressure": the pool holds at least
  // the sum of the channel capacities and the held lists): the small
  // classes of typical messages get 8192 blocks (about 8 MiB reserved).
  c.held_per_process = 8192;
  c.set_blocks(256, 8192);
  c.set_blocks(512, 8192);
  c.set_blocks(1024, 2048);
  return c;
}

std::pair<std::string, std::string> split_shm_address(std::string_view rest) {
  const std::size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return {std::string(rest), "default"};
  return {std::string(rest.substr(0, slash)), std::string(rest.substr(slash + 1))};
}

namespace detail {

std::optional<Pattern> peer_pattern_for(Pattern bound) noexcept {
  switch (bound) {
    case Pattern::kPull: return Pattern::kPush;
    case Pattern::kPush: return Pattern::kPull;
    case Pattern::kPub: return Pattern::kSub;
    case Pattern::kDispatcher: return Pattern::kWorker;
    default: return std::nullopt;
  }
}

void Counters::fill(EndpointStats& s) const noexcept {
  // relaxed: statistics (EndpointStats says: each exact at some moment).
  s.messages_in = messages_in.load(std::memory_order_relaxed);
  s.messages_out = messages_out.load(std::memory_order_relaxed);
  s.bytes_in = bytes_in.load(std::memory_order_relaxed);
  s.bytes_out = bytes_out.load(std::memory_order_relaxed);
  s.errors = errors.load(std::memory_order_relaxed);
  s.malformed = malformed.load(std::memory_order_relaxed);
  s.dropped = dropped.load(std::memory_order_relaxed);
}

Result<Prepared> prepare_frame(BlockPool& pool, SlotId slot, Frame& f) noexcept {
  if (!f) return make_error(Errc::kInvalidArgument, "an empty frame");
  if (f.pool()->region().base == pool.region().base) return Prepared{f.handle(), f.slot(), false};
  // Another pool: one copy into the segment (the frame's bytes are position
  // independent: offsets from the block's data).
  auto src = f.pool()->resolve(f.handle());
  if (!src) return tl::unexpected(std::move(src.error()));
  auto h = pool.allocate(src->used, slot);
  if (!h) return tl::unexpected(std::move(h.error()));
  auto dst = pool.resolve(*h);
  if (!dst) {
    static_cast<void>(pool.release(slot, *h));
    return tl::unexpected(std::move(dst.error()));
  }
  std::memcpy(dst->data, src->data, src->used);
  static_cast<void>(pool.set_used(*h, src->used));
  return Prepared{*h, slot, true};
}

void unprepare(BlockPool& pool, const Prepared& p) noexcept {
  if (p.copied) static_cast<void>(pool.release(p.slot, p.handle));
}

ChannelPush send_frame(ChannelRing& ring, BlockPool& pool, SlotId slot, Frame& f, std::uint32_t tag,
                       Doorbell* consumer_bell, Counters& counters) noexcept {
  if (!f) return ChannelPush::kBadFrame;
  if (!channel_has_room(ring)) return ChannelPush::kFull;
  auto used = f.pool()->used(f.handle());
  const std::uint64_t bytes = used ? *used : 0;
  if (f.pool()->region().base == pool.region().base) {
    // Zero copy: the reference leaves the frame's slot (unhold) and enters
    // the ring; step order as channel_send.
    BlockPool* const fp = f.pool();
    const SlotId fs = f.slot();
    auto h = f.give_away();
    if (!h) return ChannelPush::kBadFrame;
    if (!channel_publish(ring, *h, tag, consumer_bell)) {
      // A damaged ring (a peer's bug): the reference comes back.
      if (fp->hold(fs, *h)) f = Frame(*fp, fs, *h);
      return ChannelPush::kFull;
    }
  } else {
    auto p = prepare_frame(pool, slot, f);
    if (!p) return ChannelPush::kBadFrame;
    const ChannelPush r = channel_send(ring, pool, p->slot, p->handle, tag, consumer_bell);
    if (r != ChannelPush::kPushed) {
      unprepare(pool, *p);
      return r;
    }
    Counters::add(counters.copies);
    f.reset();
  }
  Counters::add(counters.messages_out);
  Counters::add(counters.bytes_out, bytes);
  return ChannelPush::kPushed;
}

// ---------------------------------------------------------------------------

HostCore::HostCore(Segment segment, BlockPool pool, SlotId slot, PeerTable table, HostOptions options)
    : segment_(std::move(segment)),
      pool_(pool),
      slot_(slot),
      table_(table),
      options_(std::move(options)),
      nonce_(segment_.nonce()),
      registered_(table.max_peers()),
      peer_watch_(table.max_peers()),
      slot_watch_(options_.pool.process_slots),
      peer_death_(table.max_peers()) {}

HostCore::~HostCore() {
  shutdown();
  if (monitor_.joinable()) monitor_.join();
}

void HostCore::start() { monitor_ = quiet_thread([this] { monitor_loop(); }); }

void HostCore::shutdown() noexcept {
  if (stopped_.exchange(true, std::memory_order_acq_rel)) return;  // acq_rel: one shutter
  // (X1) Closed, release: a peer that reads it (acquire, PeerTable::closed)
  // stops sending; it is rung below so a sleeper sees it.
  atomic_of(table_.header().closed).store(1, std::memory_order_release);
  std::array<HostEndpoint*, kMaxServices> eps{};
  {
    std::lock_guard lock(mu_);
    eps = services_;
    services_.fill(nullptr);
    for (auto& r : registered_) {
      if (r) r->ep = nullptr;
    }
  }
  for (HostEndpoint* ep : eps) {
    if (ep != nullptr) ep->detach_from_core();
  }
  for (std::uint32_t i = 0; i < table_.max_peers(); ++i) table_.entry_bell(i).ring(Doorbell::kWakeAll);
  for (std::uint32_t s = 0; s < kMaxServices; ++s) table_.service_bell(s).shutdown();
  // relaxed: the control ring below publishes it (its seq_cst RMW).
  stop_.store(true, std::memory_order_relaxed);
  table_.control().shutdown();
  if (monitor_.joinable() && monitor_.get_id() != std::this_thread::get_id()) monitor_.join();
  Segment::remove(segment_.name());
  changed_.notify_all();
}

Result<std::unique_ptr<ShmEndpoint>> HostCore::bind(Pattern pattern, std::string_view service,
                                                    std::string_view share_bell_with) {
  if (!peer_pattern_for(pattern)) {
    return make_error(Errc::kInvalidArgument, std::string("shm:// cannot bind a ") + transport::to_string(pattern) +
                                                  " endpoint (push, pull, pub, dispatcher only; req/rep stay on tcp)");
  }
  if (service.empty() || service.size() >= kServiceNameBytes || service.find('/') != std::string_view::npos) {
    return make_error(Errc::kInvalidArgument, "shm service name '" + std::string(service) +
                                                  "' must be 1 to 31 bytes without '/'");
  }
  std::lock_guard lock(mu_);
  if (stopped()) return make_error(Errc::kClosed, "the shm host " + name() + " is shut down");
  if (table_.find_service(service)) {
    return make_error(Errc::kAlreadyExists, "service '" + std::string(service) + "' is already bound in " + name());
  }
  std::optional<std::uint32_t> shared;
  if (!share_bell_with.empty()) {
    auto other = table_.find_service(share_bell_with);
    if (!other || services_[*other] == nullptr) {
      return make_error(Errc::kNotFound, "service '" + std::string(service) + "' cannot share the doorbell of '" +
                                             std::string(share_bell_with) + "': not bound in " + name());
    }
    shared = table_.service(*other).bell_of;
  }
  for (std::uint32_t s = 0; s < kMaxServices; ++s) {
    ServiceEntry& e = table_.service(s);
    if (atomic_of(e.state).load(std::memory_order_relaxed) != static_cast<std::uint32_t>(ServiceState::kFree)) {
      continue;  // relaxed: only the owner writes, under mu_
    }
    std::memset(e.name, 0, kServiceNameBytes);
    std::memcpy(e.name, service.data(), service.size());
    e.pattern = static_cast<std::uint32_t>(pattern);
    Doorbell::create_at(e.bell);
    e.bell_of = shared.value_or(s);  // published by (SV1)
    auto ep = std::make_unique<HostEndpoint>(shared_from_this(), pattern, s,
                                             "shm://" + name() + "/" + std::string(service));
    services_[s] = ep.get();
    // (SV1) Open, release: pairs with (SV2) in find_service: a peer that
    // sees it open sees its name, pattern and formatted doorbell.
    atomic_of(e.state).store(static_cast<std::uint32_t>(ServiceState::kOpen), std::memory_order_release);
    return std::unique_ptr<ShmEndpoint>(std::move(ep));
  }
  return make_error(Errc::kExhausted, "segment " + name() + " has " + std::to_string(kMaxServices) +
                                          " services bound already");
}

void HostCore::unbind(std::uint32_t service, HostEndpoint* ep) noexcept {
  std::lock_guard lock(mu_);
  if (services_[service] != ep) return;
  services_[service] = nullptr;
  for (auto& r : registered_) {
    if (r && r->ep == ep) r->ep = nullptr;
  }
  // release: peers reading it (acquire) stop using the service.
  atomic_of(table_.service(service).state)
      .store(static_cast<std::uint32_t>(ServiceState::kClosed), std::memory_order_release);
  for (std::uint32_t i = 0; i < table_.max_peers(); ++i) {
    if (registered_[i] && table_.entry(i).service == service) table_.entry_bell(i).ring(Doorbell::kWakeAll);
  }
}

namespace {
// Whether `id` runs, through the watch kept for its entry or slot (opened
// again when the entry names another process).
bool watched_alive(ProcessWatch& watch, const ProcessId& id) noexcept {
  if (!(watch.id() == id)) watch = ProcessWatch(id);
  return watch.alive();
}
}  // namespace

void HostCore::monitor_loop() noexcept {
  (void)::pthread_setname_np(::pthread_self(), "palm-shm-host");
  Doorbell& control = table_.control();
  auto next_liveness = std::chrono::steady_clock::now();
  // relaxed: stop_ is published by the control doorbell's shutdown (seq_cst RMW).
  while (!stop_.load(std::memory_order_relaxed)) {
    // Read before scanning: a ring during the scan makes the wait return.
    const std::uint32_t seen = control.sequence_approx();
    const auto now = std::chrono::steady_clock::now();
    // relaxed: a hint set before the control ring that woke us (its seq_cst
    // RMW orders it); a death seen late is seen at the next ring or period.
    const bool liveness = now >= next_liveness || death_seen_.exchange(false, std::memory_order_relaxed);
    if (liveness) next_liveness = now + options_.liveness_period;
    scan(liveness);
    if (liveness) sweep_pool_slots();
    // Sleep until a peer rings (attach, leave, subscribe), shutdown, or the
    // next liveness check. No spin: this thread is not on the hot path.
    control.wait_until(
        [&] {
          // relaxed: a hint; the doorbell's own seq_cst loads order the wait.
          return stop_.load(std::memory_order_relaxed) || control.sequence_approx() != seen;
        },
        next_liveness, std::chrono::nanoseconds{0});
  }
}

void HostCore::scan(bool check_liveness) {
  std::unique_lock lock(mu_);
  for (std::uint32_t i = 0; i < table_.max_peers(); ++i) {
    PeerEntry& e = table_.entry(i);
    // (E4) acquire: pairs with the claimer's (E3) store of Attached: its
    // fields and formatted rings are visible.
    const std::uint64_t w = atomic_of(e.state_pid).load(std::memory_order_acquire);
    const PeerState st = peer_state(w);
    const auto pid = static_cast<pid_t>(peer_pid(w));
    auto& reg = registered_[i];
    const auto is_alive = [&] {
      // relaxed: published by (E3) (or 0 while Claiming: check the pid alone).
      const std::uint64_t start = atomic_of(e.start_time).load(std::memory_order_relaxed);
      return start == 0 || st == PeerState::kClaiming ? process_start_time(pid).has_value()
                                                      : watched_alive(peer_watch_[i], ProcessId{pid, start});
    };
    switch (st) {
      case PeerState::kFree:
      case PeerState::kDiscarding:
        break;
      case PeerState::kClaiming:
        if (check_liveness && !is_alive()) discard(i, w, true);
        break;
      case PeerState::kAttached: {
        if (!reg) {
          register_peer(i, pid, false);
        } else if (reg->ep != nullptr && reg->ep->pattern() == Pattern::kPub) {
          // relaxed: a hint, read_topics re-reads it under its seqlock.
          if (atomic_of(e.topic_seq).load(std::memory_order_relaxed) != reg->topic_seq) {
            std::vector<std::string> topics;
            std::uint32_t seq = 0;
            if (read_topics(e, topics, seq)) {
              reg->ep->set_topics(i, std::move(topics));
              reg->topic_seq = seq;
              // (K1) release, after set_topics (under the endpoint's mutex):
              // pairs with (K2), the subscriber's acquire wait in
              // subscribe()/unsubscribe(): it returns once the topics are in
              // force, as (K0). Then ring (R1 after K1, as above): the
              // waiter wakes at once, not at its timeout.
              atomic_of(e.topic_ack).store(seq, std::memory_order_release);
              table_.entry_bell(i).ring(Doorbell::kWakeAll);
            }
          }
        }
        if (check_liveness && !is_alive()) discard(i, w, true);
        break;
      }
      case PeerState::kLeaving:
        // A peer that attached, sent and left (a short-lived pusher that
        // closed and exited) before this thread registered it: register it
        // now, so discard() hands what it published to its service
        // (remove_peer delivers it) instead of releasing complete messages
        // as orphans. Orderings relied on, none added:
        // - Leaving is reached from Attached only (E7, a CAS), so the entry
        //   is whole: (E4) read it with acquire, and (E7) is a release whose
        //   thread happens after (E3) (it holds the endpoint connect
        //   returned): the fields and formatted rings are seen.
        // - Each item in [head, tail) is a message published whole: the
        //   pop's acquire load of tail pairs with the push's release store
        //   (channel.hpp, send 3); a peer that died before that store left
        //   no item. (A Claiming entry, a peer that died mid-attach, is
        //   never registered: discard() does not touch its rings.)
        if (!reg) register_peer(i, pid, true);
        discard(i, w, check_liveness && !is_alive());
        break;
    }
  }
}

void HostCore::register_peer(std::uint32_t i, pid_t pid, bool departed) {
  PeerEntry& e = table_.entry(i);
  auto& reg = registered_[i];
  // The caller read Attached or Leaving with acquire (E4): the fields the
  // peer wrote while Claiming (service, pattern, credits, topics,
  // generation) and its formatted rings are visible; they do not change
  // until the entry is Free again, which only this thread makes it.
  Registered r;
  r.generation = e.generation;
  const std::uint32_t s = e.service;
  HostEndpoint* ep = s < kMaxServices ? services_[s] : nullptr;
  auto th = table_.to_host(i);
  auto tp = table_.to_peer(i);
  const auto want = ep != nullptr ? peer_pattern_for(ep->pattern()) : std::nullopt;
  if (ep != nullptr && th && tp && want && static_cast<std::uint32_t>(*want) == e.pattern) {
    std::vector<std::string> topics;
    std::uint32_t seq = 0;
    // A departed subscriber's topics are not put in force (nothing will
    // be published to it, and they would count in subscriptions_seen), nor
    // acknowledged: nobody waits for the ack.
    // A torn read (the peer writing: not while it connects) leaves
    // topic_seq 0 here, so the next scan reads the topics again.
    const bool topics_read = !departed && *want == Pattern::kSub && read_topics(e, topics, seq);
    if (topics_read) r.topic_seq = seq;
    ep->add_peer(i, r.generation, *th, *tp, e.credits, std::move(topics));
    r.ep = ep;
    if (topics_read) {
      // (K0) release, after add_peer (which put the subscriber, with its
      // topics, in the endpoint's list under the endpoint's mutex): pairs
      // with (K2), the subscriber's acquire wait in connect. A thread that
      // sees the ack happens after the insertion, so a publish that follows
      // it (in that thread, or in one it synchronized with) takes the
      // endpoint's mutex after it and serves the subscriber. Rung below.
      atomic_of(e.topic_ack).store(seq, std::memory_order_release);
    }
    palm::transport::detail::log().info("shm {}: peer {} (pid {}) {} {}", name(), i, pid,
                                        departed ? "left before it was registered; delivering what it sent to"
                                                 : "attached to",
                                        ep->address());
  }
  reg = r;
  changed_.notify_all();
  if (departed) return;  // discarded next by the caller: nothing to watch or wake
  // Its death wakes this thread at once (a SIGKILLed peer rings nobody):
  // the liveness period is only a backstop then.
  const std::uint64_t start = atomic_of(e.start_time).load(std::memory_order_relaxed);  // as is_alive
  peer_death_[i] = DeathWatch::watch(ProcessId{pid, start}, [this] {
    death_seen_.store(true, std::memory_order_relaxed);
    table_.control().ring();
  });
  // After (K0): the ring's seq_cst RMW (R1) follows the ack, so a subscriber
  // asleep in connect wakes and sees it (the doorbell's no-lost-wake-up
  // protocol). Rung also for a peer the host will not serve (its service
  // closed meanwhile): it wakes and sees that.
  table_.entry_bell(i).ring(Doorbell::kWakeAll);
}

void HostCore::discard(std::uint32_t i, std::uint64_t seen, bool dead) {
  PeerEntry& e = table_.entry(i);
  auto word = atomic_of(e.state_pid);
  std::uint64_t w = seen;
  // (E5) Claim the cleanup: one CAS, so a peer cannot move its entry (to
  // Leaving) under us. acquire: what the peer wrote before Leaving is seen.
  if (!word.compare_exchange_strong(w, pack_peer(PeerState::kDiscarding, peer_pid(seen)), std::memory_order_acquire,
                                    std::memory_order_relaxed)) {
    return;  // it changed (Attached -> Leaving): the next scan sees it
  }
  const PeerState was = peer_state(seen);
  auto& reg = registered_[i];
  std::size_t released = 0;
  if (reg && reg->ep != nullptr) {
    reg->ep->remove_peer(i, dead);
  } else if (was == PeerState::kAttached || was == PeerState::kLeaving) {
    // Formatted rings nobody serves: release what is in them. (A Claiming
    // entry's rings may be half-formatted, and nothing was sent on them.)
    if (auto th = table_.to_host(i)) released += discard_channel(**th, pool_, slot_);
    const SlotId consumer = dead && e.pool_slot != ~0u ? SlotId{e.pool_slot} : kNoSlot;
    if (auto tp = table_.to_peer(i)) released += discard_channel(**tp, pool_, slot_, consumer);
  }
  // relaxed: the peer wrote it before (E3)/Leaving, seen through (E5).
  const std::uint32_t ps = e.pool_slot;
  ReclaimReport rr;
  if (dead && ps != ~0u) {
    // The pool re-checks pid + start time and refuses a live process (a slot
    // the peer detached and another process took since).
    if (auto r = pool_.reclaim_dead(SlotId{ps})) rr = *r;
    dead_peers_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  }
  palm::transport::detail::log().info(
      "shm {}: peer {} (pid {}) {}: channels discarded ({} orphan references), {} held references reclaimed", name(),
      i, peer_pid(seen), dead ? "died" : "left", released, rr.references_released);
  reg.reset();
  peer_death_[i].reset();
  e.pool_slot = ~0u;
  // (E6) Free, release: pairs with the next claimer's acquire CAS (E1): it
  // sees the entry fully discarded.
  word.store(pack_peer(PeerState::kFree, 0), std::memory_order_release);
  changed_.notify_all();
}

void HostCore::sweep_pool_slots() noexcept {
  // Processes that died holding a pool slot without a peer entry that names
  // it (a claimer that died between attach_process and recording its slot).
  const pid_t me = ::getpid();  // not self_process(): that reads /proc, and this runs every liveness period
  for (std::uint32_t s = 0; s < options_.pool.process_slots; ++s) {
    auto id = pool_.slot_process(SlotId{s});
    if (!id || id->pid == 0 || id->pid == me) continue;
    const bool alive =
        id->start_time == 0 ? process_start_time(id->pid).has_value() : watched_alive(slot_watch_[s], *id);
    if (!alive) static_cast<void>(pool_.reclaim_dead(SlotId{s}));
  }
}

PeerStatus HostCore::status_of(std::uint32_t i) const {
  const PeerEntry& e = table_.entry(i);
  auto& m = const_cast<PeerEntry&>(e);
  PeerStatus st;
  const std::uint64_t w = atomic_of(m.state_pid).load(std::memory_order_acquire);  // as (E4)
  st.pid = static_cast<pid_t>(peer_pid(w));
  st.peer = make_peer_id(i, e.generation);
  st.pattern = static_cast<Pattern>(e.pattern);
  if (e.service < kMaxServices) {
    const ServiceEntry& s = table_.service(e.service);
    st.service = std::string(s.name, ::strnlen(s.name, kServiceNameBytes));
  }
  st.credits = e.credits;
  // relaxed: statistics written by the host's publisher.
  st.lost = atomic_of(m.lost).load(std::memory_order_relaxed);
  st.overflow = atomic_of(m.overflow).load(std::memory_order_relaxed) != 0;
  if (auto th = table_.to_host(i)) st.messages_in = (*th)->tail();
  if (auto tp = table_.to_peer(i)) st.messages_out = (*tp)->tail();
  return st;
}

std::vector<PeerStatus> HostCore::peers() const {
  std::lock_guard lock(mu_);
  std::vector<PeerStatus> out;
  for (std::uint32_t i = 0; i < table_.max_peers(); ++i) {
    if (registered_[i]) out.push_back(status_of(i));
  }
  return out;
}

bool HostCore::wait_peer_count(std::size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  const auto settled = [&] {
    std::size_t registered = 0;
    for (std::uint32_t i = 0; i < table_.max_peers(); ++i) {
      const std::uint64_t w = atomic_of(table_.entry(i).state_pid).load(std::memory_order_acquire);
      const PeerState st = peer_state(w);
      if (st != PeerState::kFree && !(st == PeerState::kAttached && registered_[i])) return false;
      if (registered_[i]) ++registered;
    }
    return registered == n;
  };
  // The monitor notifies on every registration and discard; the bounded
  // wait re-evaluates then (and at the deadline).
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!settled()) {
    if (stopped()) return false;
    if (changed_.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() + options_.liveness_period)) ==
            std::cv_status::timeout &&
        std::chrono::steady_clock::now() >= deadline) {
      return settled();
    }
  }
  return true;
}

}  // namespace detail

// ---------------------------------------------------------------------------

Result<Host> Host::create(std::string name, const HostOptions& options) {
  if (name.empty() || name.find('/') != std::string::npos || name.size() > 200) {
    return make_error(Errc::kInvalidArgument, "shm segment name '" + name + "' must be 1-200 bytes without '/'");
  }
  if (options.liveness_period.count() <= 0 || options.slow_subscriber_wait.count() < 0) {
    return make_error(Errc::kInvalidArgument, "HostOptions: liveness_period must be > 0, slow_subscriber_wait >= 0");
  }
  const std::size_t peers_bytes = PeerTable::area_bytes(options.max_peers, options.channel_capacity);
  const std::size_t pool_bytes = BlockPool::region_bytes(options.pool);
  if (peers_bytes == 0 || pool_bytes == 0) {
    return make_error(Errc::kInvalidArgument, "HostOptions: max_peers >= 1, channel_capacity a power of two, and a "
                                              "valid pool configuration are required");
  }
  std::vector<AreaSpec> areas{{"peers", peers_bytes}, {"pool", pool_bytes}};
  auto seg = Segment::create(name, areas);
  if (!seg && seg.error().code == Errc::kAlreadyExists) {
    auto old = Segment::open(name);
    if (old && !process_alive(old->owner()) && options.replace_stale) {
      palm::transport::detail::log().info("shm {}: removing the segment of dead owner pid {}", name, old->owner().pid);
      Segment::remove(name);
      seg = Segment::create(name, areas);
    } else if (old) {
      return make_error(Errc::kAlreadyExists, "shm segment " + name + " is served by live process " +
                                                  std::to_string(old->owner().pid));
    }
  }
  if (!seg) return tl::unexpected(std::move(seg.error()));
  const auto fail = [&](Error e) -> Result<Host> {
    Segment::remove(name);
    return tl::unexpected(std::move(e));
  };
  auto peers_area = seg->area("peers");
  auto pool_area = seg->area("pool");
  if (!peers_area || !pool_area) return fail(Error{Errc::kMalformed, "segment areas missing"});
  // Reserve the peer table now: a full /dev/shm is an error here, never a
  // SIGBUS when a peer first touches its channel.
  if (const int err = ::posix_fallocate(peers_area->fd, static_cast<off_t>(peers_area->file_offset),
                                        static_cast<off_t>(peers_area->bytes));
      err != 0) {
    return fail(errno_error(err, "reserving the peer table of /dev/shm/" + name).value());
  }
  auto pool = BlockPool::create(Region{pool_area->base, pool_area->bytes, pool_area->fd, pool_area->file_offset},
                                options.pool);
  if (!pool) return fail(pool.error());
  auto slot = pool->attach_process(self_process());
  if (!slot) return fail(slot.error());
  auto table = PeerTable::create(peers_area->base, peers_area->bytes, options.max_peers, options.channel_capacity,
                                 seg->nonce());
  if (!table) return fail(table.error());
  auto core = std::make_shared<detail::HostCore>(std::move(*seg), *pool, *slot, *table, options);
  core->start();
  palm::transport::detail::log().info("shm {}: serving (nonce {:#x}, {} peers, channels of {})", name, core->nonce(),
                                      options.max_peers, options.channel_capacity);
  return Host(std::move(core));
}

Host::Host(std::shared_ptr<detail::HostCore> core) noexcept : core_(std::move(core)) {}
Host::Host(Host&&) noexcept = default;
Host& Host::operator=(Host&& other) noexcept {
  if (this != &other) {
    shutdown();
    core_ = std::move(other.core_);
  }
  return *this;
}
Host::~Host() { shutdown(); }

Result<std::unique_ptr<ShmEndpoint>> Host::bind(transport::Pattern pattern, std::string_view service,
                                                std::string_view share_bell_with) {
  if (!core_) return make_error(Errc::kClosed, "a moved-from Host");
  return core_->bind(pattern, service, share_bell_with);
}
const std::string& Host::name() const noexcept { return core_->name(); }
std::uint64_t Host::nonce() const noexcept { return core_->nonce(); }
BlockPool& Host::pool() const noexcept { return core_->pool(); }
SlotId Host::slot() const noexcept { return core_->slot(); }
std::vector<PeerStatus> Host::peers() const { return core_->peers(); }
bool Host::wait_peer_count(std::size_t n, std::chrono::milliseconds timeout) const {
  return core_->wait_peer_count(n, timeout);
}
std::uint64_t Host::dead_peers() const noexcept { return core_->dead_peers(); }
void Host::shutdown() noexcept {
  if (core_) core_->shutdown();
}

}  // namespace palm::shm
