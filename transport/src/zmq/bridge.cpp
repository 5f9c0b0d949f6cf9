#include "zmq/bridge.hpp"

#include <poll.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <new>

#include "detail/log.hpp"

namespace palm::transport::zeromq {
namespace {

// Messages moved per socket per loop turn: fairness between sockets, and a
// bound on the time between two looks at the commands.
constexpr int kBatch = 256;
// Items moved between two rings of a ring's doorbell (pump_out, deliver).
constexpr std::size_t kSignalEvery = 32;
// Received bytes after which the items parsed so far are handed over even if
// fewer than kSignalEvery: large messages reach the consumer one by one.
constexpr std::size_t kDeliverBytes = std::size_t{64} << 10;
// Retry period for what ZeroMQ cannot signal (XPUB/ROUTER room, pool blocks).
constexpr auto kRetry = std::chrono::milliseconds(1);
// The longest sleep, a safety net: whatever gives the bridge work writes
// its eventfd (commands, sends, room made by a consumer) or fires a
// socket's fd, and timed retries set their own timeout. Each wake-up of an
// idle bridge costs ~0.15-0.5 ms of CPU on this VM; once a second in every
// process was a tenth of an idle 8-worker farm's CPU.
constexpr long kIdlePollMs = 5'000;

// ---- the dispatch header ----------------------------------------------------
constexpr std::size_t kHeaderBytes = 8;
constexpr std::uint8_t kHeaderMagic = 'P';
constexpr std::uint8_t kHeaderVersion = 1;
enum class Kind : std::uint8_t { kHello = 'H', kMessage = 'M', kCredit = 'C', kBye = 'B' };

struct Header {
  Kind kind = Kind::kMessage;
  std::uint32_t credits = 0;
};

std::array<std::byte, kHeaderBytes> encode_header(Kind kind, std::uint32_t credits) noexcept {
  std::array<std::byte, kHeaderBytes> h{};
  h[0] = std::byte{kHeaderMagic};
  h[1] = std::byte{kHeaderVersion};
  h[2] = static_cast<std::byte>(kind);
  for (int i = 0; i < 4; ++i) h[4 + i] = static_cast<std::byte>((credits >> (8 * i)) & 0xff);
  return h;
}

bool decode_header(std::span<const std::byte> b, Header& out) noexcept {
  if (b.size() != kHeaderBytes || b[0] != std::byte{kHeaderMagic} ||
      b[1] != std::byte{kHeaderVersion}) {
    return false;
  }
  const auto kind = static_cast<Kind>(b[2]);
  if (kind != Kind::kHello && kind != Kind::kMessage && kind != Kind::kCredit &&
      kind != Kind::kBye) {
    return false;
  }
  out.kind = kind;
  out.credits = 0;
  for (int i = 0; i < 4; ++i) out.credits |= std::to_integer<std::uint32_t>(b[4 + i]) << (8 * i);
  return true;
}

// ---- zero-copy release ------------------------------------------------------
// The hint of a zero-copy zmq message: the frame reference it stands for.
struct ZeroCopyHint {
  BlockPool* pool;
  SlotId slot;
  Handle handle;
  bool armed;  // false: the send failed, the reference stays with the bridge
};

// zmq_free_fn: runs on a ZeroMQ I/O thread (or the bridge, for inproc and
// failed sends) once ZeroMQ no longer needs the bytes. BlockPool::release is
// thread-safe and lock-free; the pool outlives the ZeroMQ context (the
// context is terminated, which runs every pending release, before the
// ContextCore can go).
void release_frame(void* /*data*/, void* hint) noexcept {
  auto* h = static_cast<ZeroCopyHint*>(hint);
  if (h->armed) (void)h->pool->release(h->slot, h->handle);
  delete h;
}

std::span<const std::byte> as_bytes(std::string_view s) noexcept {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

long ms_until(Clock::time_point at, Clock::time_point now) noexcept {
  if (at <= now) return 0;
  // Round up: waking a little late is a retry; waking early is a spin.
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(at - now).count();
  return static_cast<long>((us + 999) / 1000);
}

int socket_type(Pattern p) noexcept {
  switch (p) {
    case Pattern::kPush: return ZMQ_PUSH;
    case Pattern::kPull: return ZMQ_PULL;
    case Pattern::kPub: return ZMQ_XPUB;
    case Pattern::kSub: return ZMQ_SUB;
    case Pattern::kReq: return ZMQ_REQ;
    case Pattern::kRep: return ZMQ_ROUTER;
    case Pattern::kDispatcher: return ZMQ_ROUTER;
    case Pattern::kWorker: return ZMQ_DEALER;
  }
  return ZMQ_PAIR;
}

Error zmq_error(int err, const std::string& what) {
  Errc code = Errc::kSystem;
  switch (err) {
    case EADDRINUSE: code = Errc::kAlreadyExists; break;
    case EINVAL:
    case EPROTONOSUPPORT:
    case ENOCOMPATPROTO:
    case EADDRNOTAVAIL: code = Errc::kInvalidArgument; break;
    case ETERM: code = Errc::kClosed; break;
    case ENOENT: code = Errc::kNotFound; break;
    case EACCES: code = Errc::kPermission; break;
    default: break;
  }
  return Error{code, what + ": " + zmq_strerror(err)};
}

template <class T>
Result<void> set_option(void* socket, int option, const T& value, const char* name) {
  if (zmq_setsockopt(socket, option, &value, sizeof value) != 0) {
    return tl::unexpected(zmq_error(errno, std::string("zmq_setsockopt ") + name));
  }
  return {};
}

// Receives one whole message; false if none is waiting (EAGAIN) or the
// socket failed (logged by the caller through the counters).
bool recv_parts(void* socket, std::vector<Msg>& parts, bool& too_many) noexcept {
  parts.clear();
  too_many = false;
  for (;;) {
    if (parts.size() == kMaxParts) {
      // The rest of the message is read and dropped.
      too_many = true;
      Msg rest;
      while (zmq_msg_recv(rest.get(), socket, ZMQ_DONTWAIT) >= 0 && rest.more()) {
      }
      return true;
    }
    Msg& m = parts.emplace_back();
    if (zmq_msg_recv(m.get(), socket, ZMQ_DONTWAIT) < 0) {
      // Only the first part can be missing: ZeroMQ delivers a message whole.
      parts.pop_back();
      return !parts.empty();
    }
    if (!m.more()) return true;
  }
}

}  // namespace

// ============================================================================
// Life cycle and commands

Bridge::Bridge(ZmqTransport& transport) : t_(transport) {}

Bridge::~Bridge() { close_all(); }

void Bridge::close_all() noexcept {
  while (!links_.empty()) {
    close_link(*links_.back());
    links_.pop_back();
  }
}

ZmqTransport::Link* Bridge::find(const EndpointState* state) noexcept {
  for (auto& l : links_) {
    if (l->state.get() == state) return l.get();
  }
  return nullptr;
}

void Bridge::run_commands() noexcept {
  if (!t_.commands_posted_.load(std::memory_order_acquire)) return;
  std::vector<std::function<void(Bridge*)>> commands;
  {
    std::lock_guard lock(t_.commands_mutex_);
    commands.swap(t_.commands_);
    t_.commands_posted_.store(false, std::memory_order_relaxed);  // under the lock
  }
  for (auto& c : commands) c(this);
}

Result<void> Bridge::add(const std::shared_ptr<EndpointState>& state) {
  const EndpointSpec& spec = state->spec;
  const TransportOptions& o = t_.options_;
  void* s = zmq_socket(t_.context_, socket_type(spec.pattern));
  if (s == nullptr) return tl::unexpected(zmq_error(errno, "zmq_socket"));
  auto link = std::make_unique<Link>();
  link->state = state;
  link->pattern = spec.pattern;
  link->socket = s;
  link->timer_retry = spec.pattern == Pattern::kPub || spec.pattern == Pattern::kRep ||
                      spec.pattern == Pattern::kDispatcher;
  // On failure below, the Link's socket is closed by close_link (linger 0:
  // nothing was sent).
  auto fail = [&](Error e) -> Result<void> {
    const int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (link->monitor != nullptr) {
      zmq_socket_monitor(s, nullptr, 0);
      zmq_close(link->monitor);
    }
    zmq_close(s);
    return tl::unexpected(std::move(e));
  };

  const int linger = static_cast<int>(o.linger.count());
  const int hwm = spec.hwm >= 0 ? spec.hwm : o.hwm;
  // The wire cut-off (ZMQ_MAXMSGSIZE): twice palm's limit, so a message a
  // little over it still arrives to be counted, logged and, on a kRep,
  // answered with an error; past that ZeroMQ drops the connection before
  // buffering it.
  const std::int64_t wire_max =
      static_cast<std::int64_t>(std::min<std::size_t>(t_.max_message_bytes_ * 2, kMaxWireSize));
  if (auto r = set_option(s, ZMQ_LINGER, linger, "ZMQ_LINGER"); !r) return fail(r.error());
  if (auto r = set_option(s, ZMQ_SNDHWM, hwm, "ZMQ_SNDHWM"); !r) return fail(r.error());
  if (auto r = set_option(s, ZMQ_RCVHWM, hwm, "ZMQ_RCVHWM"); !r) return fail(r.error());
  if (receives(spec.pattern)) {
    if (auto r = set_option(s, ZMQ_MAXMSGSIZE, wire_max, "ZMQ_MAXMSGSIZE"); !r) {
      return fail(r.error());
    }
  }
  const int one = 1;
  switch (spec.pattern) {
    case Pattern::kPub: {
      // Every subscribe message, not only the first per prefix: each
      // subscriber is counted (wait_subscriptions).
      if (auto r = set_option(s, ZMQ_XPUB_VERBOSE, one, "ZMQ_XPUB_VERBOSE"); !r) {
        return fail(r.error());
      }
      if (o.xpub_nodrop) {
        if (auto r = set_option(s, ZMQ_XPUB_NODROP, one, "ZMQ_XPUB_NODROP"); !r) {
          return fail(r.error());
        }
      }
      break;
    }
    case Pattern::kReq: {
      // A request that timed out must not wedge the socket: RELAXED lets a
      // new request go, CORRELATE drops the old request's late reply.
      if (auto r = set_option(s, ZMQ_REQ_RELAXED, one, "ZMQ_REQ_RELAXED"); !r) {
        return fail(r.error());
      }
      if (auto r = set_option(s, ZMQ_REQ_CORRELATE, one, "ZMQ_REQ_CORRELATE"); !r) {
        return fail(r.error());
      }
      break;
    }
    case Pattern::kRep:
    case Pattern::kDispatcher: {
      // A reply to a requester or worker that left fails (EHOSTUNREACH)
      // instead of vanishing.
      if (auto r = set_option(s, ZMQ_ROUTER_MANDATORY, one, "ZMQ_ROUTER_MANDATORY"); !r) {
        return fail(r.error());
      }
      break;
    }
    default: break;
  }
  if ((spec.pattern == Pattern::kDispatcher || spec.pattern == Pattern::kWorker) &&
      state->parsed.scheme == Scheme::kTcp && o.heartbeat.count() > 0) {
    const int ivl = static_cast<int>(o.heartbeat.count());
    const int timeout = 3 * ivl;
    if (auto r = set_option(s, ZMQ_HEARTBEAT_IVL, ivl, "ZMQ_HEARTBEAT_IVL"); !r) {
      return fail(r.error());
    }
    if (auto r = set_option(s, ZMQ_HEARTBEAT_TIMEOUT, timeout, "ZMQ_HEARTBEAT_TIMEOUT"); !r) {
      return fail(r.error());
    }
  }
  const bool counts_connections =
      spec.bind ? spec.pattern == Pattern::kPush || spec.pattern == Pattern::kPull || spec.pattern == Pattern::kPub
                : spec.pattern == Pattern::kPush || spec.pattern == Pattern::kPull ||
                      spec.pattern == Pattern::kSub || spec.pattern == Pattern::kWorker;
  if (spec.pattern == Pattern::kDispatcher || spec.pattern == Pattern::kWorker ||
      counts_connections) {
    // A dispatcher watches workers leave; a worker watches its connections
    // come up (a dispatcher that restarted must hear its hello again); a
    // bound push, pull or pub counts its connections (a master sends work
    // to pylm workers only while one is connected, and publishes on tcp
    // only while a subscriber is); a connecting push, pull, sub or worker
    // counts its connections to the bound side (a worker or client tells a
    // server that went away from a slow one).
    const std::string name = "inproc://palm-monitor-" + std::to_string(++monitors_) + "-" +
                             std::to_string(reinterpret_cast<std::uintptr_t>(s));
    const int events = spec.pattern == Pattern::kDispatcher ? ZMQ_EVENT_DISCONNECTED
                       : spec.pattern == Pattern::kWorker
                           ? ZMQ_EVENT_CONNECTED | ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED
                       : spec.bind ? ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED
                                   : ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED;
    if (zmq_socket_monitor(s, name.c_str(), events) != 0) {
      return fail(zmq_error(errno, "zmq_socket_monitor"));
    }
    link->monitor = zmq_socket(t_.context_, ZMQ_PAIR);
    if (link->monitor == nullptr) return fail(zmq_error(errno, "zmq_socket (monitor)"));
    const int zero = 0;
    zmq_setsockopt(link->monitor, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(link->monitor, name.c_str()) != 0) {
      return fail(zmq_error(errno, "connect the monitor"));
    }
    if (spec.pattern == Pattern::kDispatcher) {
      link->routing.resize(state->peers.capacity());
      link->peer_fd.assign(state->peers.capacity(), -1);
    }
  }

  const int rc = spec.bind ? zmq_bind(s, spec.address.c_str()) : zmq_connect(s, spec.address.c_str());
  if (rc != 0) {
    return fail(zmq_error(errno, std::string(spec.bind ? "bind " : "connect ") + spec.address));
  }
  if (spec.bind) {
    char endpoint[1024];
    std::size_t size = sizeof endpoint;
    if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, endpoint, &size) != 0) {
      return fail(zmq_error(errno, "ZMQ_LAST_ENDPOINT"));
    }
    state->address = std::string(endpoint, strnlen(endpoint, size));
    if (state->parsed.scheme == Scheme::kIpc && state->parsed.rest != "*") {
      struct stat st {};
      link->ipc_path = state->address.substr(std::string_view("ipc://").size());
      if (::stat(link->ipc_path.c_str(), &st) == 0) {
        link->ipc_dev = st.st_dev;
        link->ipc_ino = st.st_ino;
      } else {
        link->ipc_path.clear();
      }
    }
  } else {
    state->address = spec.address;
  }
  if (spec.pattern == Pattern::kSub) {
    for (const std::string& prefix : spec.subscriptions) {
      if (zmq_setsockopt(s, ZMQ_SUBSCRIBE, prefix.data(), prefix.size()) != 0) {
        return fail(zmq_error(errno, "ZMQ_SUBSCRIBE"));
      }
    }
  }
  if (spec.pattern == Pattern::kWorker) {
    // The hello is queued at once (a connecting socket has its pipe before
    // the connection is up) and goes first.
    const auto hello = encode_header(Kind::kHello, spec.credits);
    if (zmq_send(s, hello.data(), hello.size(), ZMQ_DONTWAIT) < 0) {
      return fail(zmq_error(errno, "send the worker's hello"));
    }
  }
  std::size_t fd_size = sizeof link->fd;
  if (zmq_getsockopt(s, ZMQ_FD, &link->fd, &fd_size) != 0) return fail(zmq_error(errno, "ZMQ_FD"));
  if (link->monitor != nullptr) {
    fd_size = sizeof link->monitor_fd;
    if (zmq_getsockopt(link->monitor, ZMQ_FD, &link->monitor_fd, &fd_size) != 0) {
      return fail(zmq_error(errno, "ZMQ_FD (monitor)"));
    }
  }
  links_.push_back(std::move(link));
  return {};
}

Result<void> Bridge::subscribe(const EndpointState* state, const std::string& prefix, bool on) {
  Link* l = find(state);
  if (l == nullptr) return make_error(Errc::kClosed, "the endpoint is closed");
  l->dirty = true;  // the call may run the socket's commands
  if (zmq_setsockopt(l->socket, on ? ZMQ_SUBSCRIBE : ZMQ_UNSUBSCRIBE, prefix.data(),
                     prefix.size()) != 0) {
    return tl::unexpected(zmq_error(errno, on ? "ZMQ_SUBSCRIBE" : "ZMQ_UNSUBSCRIBE"));
  }
  return {};
}

void Bridge::close(const EndpointState* state) noexcept {
  for (auto it = links_.begin(); it != links_.end(); ++it) {
    if ((*it)->state.get() == state) {
      close_link(**it);
      links_.erase(it);
      return;
    }
  }
}

void Bridge::close_link(Link& l) noexcept {
  EndpointState& s = *l.state;
  // Refuse new sends first (release: pairs with the acquire in try_send).
  s.closed.store(true, std::memory_order_release);
  // Hand ZeroMQ what it takes now; its linger bounds the rest.
  if (l.socket != nullptr) {
    // Bounded: `closed` stops new items, so each round drains the ring or
    // meets a refusal. A refused item is tried once more (out_ready).
    l.out_ready = true;
    while (pump_out(l, Clock::now() + std::chrono::hours(1))) {
    }
    if (l.pattern == Pattern::kWorker) {
      const auto bye = encode_header(Kind::kBye, 0);
      zmq_send(l.socket, bye.data(), bye.size(), ZMQ_DONTWAIT);
    }
  }
  std::uint64_t dropped = 0;
  if (l.has_pending_out) {
    release(l.pending_out);
    l.has_pending_out = false;
    ++dropped;
  }
  for (const InItem& item : l.pending_in) {
    s.release(item);
    ++dropped;
  }
  l.pending_in.clear();
  l.stalled_parts.clear();
  dropped += s.drain();
  Counters::bump(s.counters.dropped, dropped);
  if (l.monitor != nullptr) {
    zmq_socket_monitor(l.socket, nullptr, 0);
    zmq_close(l.monitor);
    l.monitor = nullptr;
  }
  if (l.socket != nullptr) zmq_close(l.socket);
  l.socket = nullptr;
  if (!l.ipc_path.empty()) {
    // Only the file this endpoint bound: a successor that bound the same
    // path since has another inode.
    struct stat st {};
    if (::stat(l.ipc_path.c_str(), &st) == 0 && st.st_dev == l.ipc_dev && st.st_ino == l.ipc_ino) {
      ::unlink(l.ipc_path.c_str());
    }
    l.ipc_path.clear();
  }
  // Wake whoever waits on this endpoint: they see it closed.
  s.in.shutdown();
  s.out.shutdown();
  s.subscription_bell.shutdown();
  if (Doorbell* bell = s.bell.load(std::memory_order_acquire)) bell->ring(Doorbell::kWakeAll);
}

// ============================================================================
// The loop

bool Bridge::has_work() const noexcept {
  if (t_.stop_.load(std::memory_order_relaxed)) return true;
  if (t_.commands_posted_.load(std::memory_order_relaxed)) return true;
  for (const auto& lp : links_) {
    const Link& l = *lp;
    // Loads ordered after (B1) by the caller's seq_cst fence.
    if (!l.has_pending_out && l.state->out.size_approx() != 0) return true;
    if (!l.pending_in.empty() && !l.state->in_blocked.load(std::memory_order_relaxed)) return true;
  }
  return false;
}

void Bridge::loop() noexcept {
  while (!t_.stop_.load(std::memory_order_acquire)) {
    run_commands();
    const Clock::time_point now = Clock::now();
    bool progress = false;
    for (auto& l : links_) progress |= retry_in(*l, now);
    for (auto& l : links_) progress |= pump_out(*l, now);
    // Consumers hear of everything delivered so far before the bridge spins
    // or sleeps (retry_in, and peer_gone from a failed send, deliver).
    signal_all();

    // The sockets' ZMQ_FDs, watched as zmq_poll watches them (while the link
    // wants to read or waits for room), but polled directly: zmq_poll asks
    // every socket for ZMQ_EVENTS before and after each poll, a system call
    // each (~1.4 µs on this machine); here only the sockets whose fd fired or
    // that were used since their last ZMQ_EVENTS are asked (service).
    fds_.clear();
    fd_links_.clear();
    fds_.push_back(pollfd{t_.wake_fd_, POLLIN, 0});
    fd_links_.emplace_back(nullptr, false);
    long timeout = kIdlePollMs;
    bool dirty = false;
    for (auto& lp : links_) {
      Link& l = *lp;
      const bool wants_in = l.pattern != Pattern::kPush && !l.stalled_in();
      const bool wants_out = l.has_pending_out && !l.timer_retry;
      if (l.has_pending_out && l.timer_retry) {
        timeout = std::min(timeout, ms_until(l.out_retry_at, now));
      }
      if (!l.stalled_parts.empty()) timeout = std::min(timeout, ms_until(l.in_retry_at, now));
      if (wants_in || wants_out) {
        fds_.push_back(pollfd{l.fd, POLLIN, 0});
        fd_links_.emplace_back(&l, false);
        dirty |= l.dirty;
      }
      if (l.monitor != nullptr) {
        fds_.push_back(pollfd{l.monitor_fd, POLLIN, 0});
        fd_links_.emplace_back(&l, true);
        dirty |= l.monitor_dirty;
      }
    }
    // A socket used since its last ZMQ_EVENTS may have messages or room that
    // its fd will not signal (ZeroMQ's fd is edge-triggered): look first.
    progress |= dirty;
    if (!progress && !rested_ && t_.options_.bridge_spin.count() > 0) {
      // Bounded spin on the application's side only (sockets are looked at
      // by the poll below): sched_yield inside, so a thread about to send
      // gets the CPU (2 vCPUs: see DESIGN.md).
      const Clock::time_point end = now + t_.options_.bridge_spin;
      while (!progress && Clock::now() < end) {
        ::sched_yield();
        progress = has_work();
      }
    }
    if (progress) {
      timeout = 0;
    } else {
      // (B1) Announce the sleep; seq_cst store, then (B2) a seq_cst fence
      // before the loads of has_work(): the store-then-load half of the
      // Dekker pair against (A1)-(A2) in wake_if_sleeping.
#if PALM_ZMQ_FENCELESS
      (void)t_.sleeping_.exchange(true, std::memory_order_seq_cst);  // (B1') an RMW
#else
      t_.sleeping_.store(true, std::memory_order_seq_cst);
      std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
      if (has_work()) timeout = 0;
    }
    // (B3)
    const int rc = ::poll(fds_.data(), static_cast<nfds_t>(fds_.size()), static_cast<int>(timeout));
    rested_ = rc == 0 && timeout > 0;
    // relaxed: a stale true costs a waker one needless eventfd write.
    t_.sleeping_.store(false, std::memory_order_relaxed);
    if (rc < 0) {
      if (errno != EINTR) detail::log().error("poll: {}", std::strerror(errno));
      for (pollfd& p : fds_) p.revents = 0;  // the dirty sockets are still looked at
    }
    if ((fds_[0].revents & POLLIN) != 0) {
      std::uint64_t count = 0;
      // Drains the eventfd (non-blocking): the wake-ups are consumed, the
      // work they announced is found by the loop.
      [[maybe_unused]] const ssize_t n = ::read(t_.wake_fd_, &count, sizeof count);
    }
    for (std::size_t i = 1; i < fds_.size(); ++i) {
      Link& l = *fd_links_[i].first;
      const bool fired = fds_[i].revents != 0;
      if (fd_links_[i].second) {
        if (fired || l.monitor_dirty) {
          l.monitor_dirty = false;
          read_monitor(l, true);
        }
      } else if (fired || l.dirty) {
        service(l, now);
      }
    }
    signal_all();  // read_monitor's deliveries (pump_in signals its own)
  }
}

void Bridge::service(Link& l, Clock::time_point now) noexcept {
  l.dirty = false;
  // ZMQ_EVENTS runs ZeroMQ's pending commands (which consumes the fd's
  // signal) and says what the socket can do now.
  int events = 0;
  std::size_t size = sizeof events;
  if (zmq_getsockopt(l.socket, ZMQ_EVENTS, &events, &size) != 0) return;
  if ((events & ZMQ_POLLOUT) != 0 && l.has_pending_out && !l.timer_retry) {
    l.out_ready = true;
    pump_out(l, now);
  }
  if ((events & ZMQ_POLLIN) != 0 && l.pattern != Pattern::kPush && !l.stalled_in()) pump_in(l);
}

// ============================================================================
// Sending

void Bridge::release(const OutItem& item) noexcept {
  if (item.pool != nullptr && item.handle != 0) {
    (void)item.pool->release(static_cast<SlotId>(item.slot), Handle::from_bits(item.handle));
  }
}

bool Bridge::pump_out(Link& l, Clock::time_point now) noexcept {
  if (!sends(l.pattern) || l.socket == nullptr) return false;
  MpmcRing<OutItem>& ring = l.state->out;
  bool progress = false;
  // Items popped one by one (the bridge holds at most one item ZeroMQ
  // refused, so a full ring plus one bounds what a sender has queued), but
  // the senders waiting for room are rung once per kSignalEvery pops: a
  // sender announced as asleep would otherwise cost a FUTEX_WAKE per pop for
  // as long as its wake-up takes (~30 µs here).
  std::size_t unsignaled = 0;
  for (int n = 0; n < kBatch; ++n) {
    OutItem item;
    if (l.has_pending_out) {
      // Retried when there may be room: on the timer (XPUB, ROUTER), or once
      // ZMQ_EVENTS said POLLOUT (service).
      if (l.timer_retry ? now < l.out_retry_at : !l.out_ready) break;
      item = l.pending_out;
    } else if (!ring.try_pop_unsignaled(item)) {
      break;
    } else if (++unsignaled == kSignalEvery) {
      ring.signal_popped(unsignaled);
      unsignaled = 0;
    }
    const Sent sent = send_item(l, item);
    if (sent == Sent::kRetry) {
      // A new refusal: ZMQ_EVENTS (service) tells whether room came since.
      if (!l.has_pending_out) l.dirty = true;
      l.has_pending_out = true;
      l.out_ready = false;
      l.pending_out = item;
      l.out_retry_at = now + kRetry;
      break;
    }
    l.has_pending_out = false;
    progress = true;
  }
  ring.signal_popped(unsignaled);
  // A send may run ZeroMQ's commands (and so take the fd's signal of an
  // arrival): a socket that also reads looks at ZMQ_EVENTS again.
  if (progress && l.pattern != Pattern::kPush) l.dirty = true;
  return progress;
}

Bridge::Sent Bridge::send_parts(Link& l, std::span<const std::span<const std::byte>> head,
                                const OutItem* item, std::span<const std::byte> body) noexcept {
  // The first part is the only one that can fail with EAGAIN (or
  // EHOSTUNREACH on a ROUTER): ZeroMQ takes the rest of a message it
  // accepted the start of.
  bool first = true;
  for (const auto& part : head) {
    if (zmq_send(l.socket, part.data(), part.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
      send_errno_ = errno;
      if (first && send_errno_ == EAGAIN) return Sent::kRetry;
      return Sent::kDropped;
    }
    first = false;
  }
  const bool zero_copy = item != nullptr && body.size() >= t_.options_.zero_copy_threshold;
  if (!zero_copy) {
    if (zmq_send(l.socket, body.data(), body.size(), ZMQ_DONTWAIT) < 0) {
      send_errno_ = errno;
      if (first && send_errno_ == EAGAIN) return Sent::kRetry;
      return Sent::kDropped;
    }
    if (item != nullptr) release(*item);
    return Sent::kOk;
  }
  // Zero-copy: ZeroMQ sends from the block and calls release_frame once done,
  // which releases the item's reference.
  auto* hint = new (std::nothrow) ZeroCopyHint{item->pool, static_cast<SlotId>(item->slot),
                                               Handle::from_bits(item->handle), true};
  if (hint == nullptr) return Sent::kRetry;
  Msg msg;
  zmq_msg_close(msg.get());
  zmq_msg_init_data(msg.get(), const_cast<std::byte*>(body.data()), body.size(), &release_frame,
                    hint);
  if (zmq_msg_send(msg.get(), l.socket, ZMQ_DONTWAIT) < 0) {
    send_errno_ = errno;
    hint->armed = false;  // the message is still ours: closing it runs release_frame now
    if (first && send_errno_ == EAGAIN) return Sent::kRetry;
    return Sent::kDropped;
  }
  return Sent::kOk;
}

Bridge::Sent Bridge::drop_unreadable(Link& l, const OutItem& item, const Error& why) noexcept {
  // A frame that does not read is palm's bug or a damaged block: drop it.
  error(l, why.describe());
  release(item);
  return Sent::kDropped;
}

Bridge::Sent Bridge::send_item(Link& l, const OutItem& item) noexcept {
  EndpointState& s = *l.state;
  if (item.kind == OutKind::kGrant) {
    const auto h = encode_header(Kind::kCredit, item.credits);
    if (zmq_send(l.socket, h.data(), h.size(), ZMQ_DONTWAIT) < 0) {
      if (errno == EAGAIN) return Sent::kRetry;
      error(l, "a credit grant failed");
      return Sent::kDropped;
    }
    return Sent::kOk;
  }
  // A message goes out as its wire bytes: only the frame header is checked
  // here (frame_wire), the receiver validates the message. A raw reply is
  // the payload alone, found by viewing the fields.
  const Handle handle = Handle::from_bits(item.handle);
  std::span<const std::byte> body;
  std::string_view topic;
  if (item.kind == OutKind::kRaw) {
    auto view = view_frame(*item.pool, handle);
    if (!view) return drop_unreadable(l, item, view.error());
    body = view->message.payload;
    topic = view->topic;
  } else {
    auto wire = frame_wire(*item.pool, handle);
    if (!wire) return drop_unreadable(l, item, wire.error());
    body = wire->wire;
    topic = wire->topic;
  }

  // head_: a member, not a local, so its kMaxParts spans are not zeroed for
  // every message.
  auto& head = head_;
  std::size_t parts = 0;
  std::array<std::byte, kHeaderBytes> header{};
  const std::vector<std::string>* envelope = nullptr;
  std::uint32_t peer_index = 0;
  switch (l.pattern) {
    case Pattern::kPush:
    case Pattern::kReq: break;
    case Pattern::kPub: head[parts++] = as_bytes(topic); break;
    case Pattern::kRep: {
      auto it = l.requests.find(item.peer);
      if (it == l.requests.end()) {
        error(l, "a reply to an unknown (or already answered) request");
        release(item);
        return Sent::kDropped;
      }
      envelope = &it->second;
      for (const std::string& e : *envelope) {
        if (parts == head.size()) break;
        head[parts++] = as_bytes(e);
      }
      break;
    }
    case Pattern::kDispatcher: {
      const auto peer = static_cast<PeerId>(item.peer);
      peer_index = PeerTable::index_of(peer);
      if (!s.peers.alive(peer) || peer_index >= l.routing.size()) {
        error(l, "a message to a worker that is gone");
        release(item);
        return Sent::kDropped;
      }
      header = encode_header(Kind::kMessage, 0);
      head[parts++] = as_bytes(l.routing[peer_index]);
      head[parts++] = header;
      break;
    }
    case Pattern::kWorker: {
      header = encode_header(Kind::kMessage, item.credits);
      head[parts++] = header;
      break;
    }
    case Pattern::kPull:
    case Pattern::kSub: release(item); return Sent::kDropped;  // never queued (try_send)
  }
  const Sent sent = send_parts(l, std::span(head.data(), parts), &item, body);
  if (sent == Sent::kRetry) return sent;
  if (sent == Sent::kDropped) {
    const int err = send_errno_;
    release(item);
    if (l.pattern == Pattern::kDispatcher && err == EHOSTUNREACH) {
      peer_gone(l, static_cast<PeerId>(item.peer), "unreachable");
    }
    error(l, std::string("send failed: ") + zmq_strerror(err));
    return sent;
  }
  if (l.pattern == Pattern::kRep) l.requests.erase(item.peer);
  if (l.pattern == Pattern::kReq) l.last_token = item.peer;
  Counters::bump(s.counters.messages_out);
  Counters::bump(s.counters.bytes_out, body.size());
  return sent;
}

// ============================================================================
// Receiving

bool Bridge::push_in(Link& l, const InItem& item, std::size_t bytes) noexcept {
  EndpointState& s = *l.state;
  bool pushed = s.in.try_push_unsignaled(item);
  if (!pushed) {
    // Full. The consumer hears of what it has first (it may sleep on a full
    // ring whose items were not signaled yet), then we announce the stall
    // and look again: seq_cst store + fence against the consumer's pop +
    // fence + load of in_blocked (after_pop): either this retry sees the
    // room, or the consumer sees the flag and wakes us.
    signal_in(l);
#if PALM_ZMQ_FENCELESS
    (void)s.in_blocked.exchange(true, std::memory_order_seq_cst);  // an RMW, see zmq_transport.hpp
#else
    s.in_blocked.store(true, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
    pushed = s.in.try_push_unsignaled(item);
    if (pushed) s.in_blocked.store(false, std::memory_order_relaxed);
  }
  if (pushed) {
    ++l.unsignaled_in;
    l.unsignaled_bytes += bytes;
    if (l.unsignaled_in >= kSignalEvery || l.unsignaled_bytes >= kDeliverBytes) signal_in(l);
  }
  return pushed;
}

void Bridge::signal_in(Link& l) noexcept {
  if (l.unsignaled_in == 0) return;
  EndpointState& s = *l.state;
  // One ring for the items pushed since the last: a consumer announced as
  // asleep costs a FUTEX_WAKE per ring until it runs again, which takes
  // ~30 µs on this machine (a spinning consumer sees the items at once, as
  // they are published by the pushes themselves).
  s.in.signal_pushed(l.unsignaled_in);
  // acquire: pairs with set_doorbell's release (the doorbell is published
  // with the pointer). Wakes up to one waiter per item, as a ring per item did.
  if (Doorbell* bell = s.bell.load(std::memory_order_acquire)) {
    const std::size_t woken = std::min(l.unsignaled_in, kSignalEvery);
    bell->ring_if_waiting(static_cast<std::uint32_t>(woken));
  }
  l.unsignaled_in = 0;
  l.unsignaled_bytes = 0;
}

void Bridge::signal_all() noexcept {
  for (auto& l : links_) signal_in(*l);
}

void Bridge::deliver(Link& l, const InItem& item, std::size_t bytes) noexcept {
  // Behind older items, in order.
  if (l.pending_in.empty() && push_in(l, item, bytes)) return;
  l.pending_in.push_back(item);
  Counters::bump(l.state->counters.stalls);
}

bool Bridge::retry_in(Link& l, Clock::time_point now) noexcept {
  bool progress = false;
  while (!l.pending_in.empty()) {
    if (!push_in(l, l.pending_in.front(), 0)) return progress;
    l.pending_in.pop_front();
    progress = true;
  }
  if (!l.stalled_parts.empty() && now >= l.in_retry_at) {
    std::vector<Msg> parts = std::move(l.stalled_parts);
    l.stalled_parts.clear();
    handle(l, parts);
    progress |= l.stalled_parts.empty();
  }
  // Reading again: what came while stalled may not be signaled by the fd.
  if (progress && !l.stalled_in()) l.dirty = true;
  return progress;
}

bool Bridge::pump_in(Link& l) noexcept {
  bool progress = false;
  bool drained = false;  // a receive said EAGAIN (its commands were run)
  for (int n = 0; n < kBatch && !l.stalled_in() && l.socket != nullptr; ++n) {
    bool too_many = false;
    if (!recv_parts(l.socket, parts_, too_many)) {
      drained = true;
      break;
    }
    progress = true;
    if (too_many) {
      malformed(l, "a message of more than 64 parts");
      continue;
    }
    handle(l, parts_);
  }
  signal_in(l);
  // Look again before sleeping unless the socket said EAGAIN with nothing
  // else in question: more may wait (the batch ended), a reply may have
  // been sent (rep, dispatcher, worker), or room may have come for a
  // refused send.
  if (progress && (!drained || sends(l.pattern) || l.has_pending_out)) l.dirty = true;
  return progress;
}

void Bridge::stall(Link& l, std::vector<Msg>& parts) noexcept {
  l.stalled_parts = std::move(parts);
  l.in_retry_at = Clock::now() + kRetry;
  Counters::bump(l.state->counters.stalls);
}

Bridge::Parsed Bridge::parse(Link& l, std::span<const std::byte> body, std::string_view topic,
                             bool raw, InItem& out) noexcept {
  detail::ContextCore& core = *l.state->core;
  if (body.size() > t_.max_message_bytes_) {
    oversized(l, body.size());
    return Parsed::kDropped;
  }
  // The handle goes straight into the item (the Context's slot holds it):
  // no Frame is made only to be detached.
  Result<Handle> frame = [&]() -> Result<Handle> {
    if (!raw) return parse_frame(core.pool(), core.slot(), body, topic);
    MessageView m;
    m.payload = body;
    return build_frame(core.pool(), core.slot(), m, topic);
  }();
  if (!frame) {
    switch (frame.error().code) {
      case Errc::kExhausted: return Parsed::kStalled;  // retried when blocks come back
      case Errc::kTooLarge: oversized(l, body.size()); return Parsed::kDropped;
      default: malformed(l, frame.error().describe()); return Parsed::kDropped;
    }
  }
  out.handle = frame->bits();
  out.body = raw ? Body::kRaw : Body::kMessage;
  out.event = Event::kMessage;
  Counters::bump(l.state->counters.messages_in);
  Counters::bump(l.state->counters.bytes_in, body.size());
  return Parsed::kOk;
}

void Bridge::handle(Link& l, std::vector<Msg>& parts) noexcept {
  InItem item;
  Parsed p = Parsed::kDropped;
  // The body's bytes, asked of ZeroMQ once (zmq_msg_data and zmq_msg_size
  // are calls into libzmq, not inline).
  std::span<const std::byte> body;
  switch (l.pattern) {
    case Pattern::kPull:
      if (parts.size() != 1) {
        malformed(l, "a PULL message of " + std::to_string(parts.size()) + " parts (expected 1)");
        return;
      }
      body = parts[0].bytes();
      p = parse(l, body, {}, false, item);
      break;
    case Pattern::kSub:
      if (parts.size() != 2) {
        malformed(l, "a SUB message of " + std::to_string(parts.size()) +
                         " parts (expected [topic, message])");
        return;
      }
      body = parts[1].bytes();
      p = parse(l, body, parts[0].text(), false, item);
      break;
    case Pattern::kReq:
      if (parts.size() != 1) {
        malformed(l, "a reply of " + std::to_string(parts.size()) + " parts (expected 1)");
        return;
      }
      body = parts[0].bytes();
      p = parse(l, body, {}, true, item);
      item.peer = l.last_token;
      break;
    case Pattern::kPub: on_subscription(l, parts); return;
    case Pattern::kRep: on_request(l, parts); return;
    case Pattern::kDispatcher: on_from_worker(l, parts); return;
    case Pattern::kWorker: on_from_dispatcher(l, parts); return;
    case Pattern::kPush: return;
  }
  if (p == Parsed::kStalled) {
    stall(l, parts);
  } else if (p == Parsed::kOk) {
    deliver(l, item, body.size());
  }
}

void Bridge::on_subscription(Link& l, const std::vector<Msg>& parts) noexcept {
  const auto b = parts.front().bytes();
  if (parts.size() != 1 || b.empty() || (b[0] != std::byte{0} && b[0] != std::byte{1})) {
    malformed(l, "a message to a PUB socket that is not a (un)subscription");
    return;
  }
  if (b[0] == std::byte{1}) {
    Counters::bump(l.state->counters.subscriptions);
    l.state->subscription_bell.ring(Doorbell::kWakeAll);
  }
}

void Bridge::reply_raw(Link& l, const std::vector<std::string>& envelope,
                       std::string_view bytes) noexcept {
  std::array<std::span<const std::byte>, kMaxParts> head{};
  std::size_t parts = 0;
  for (const std::string& e : envelope) {
    if (parts == head.size()) break;
    head[parts++] = as_bytes(e);
  }
  if (send_parts(l, std::span(head.data(), parts), nullptr, as_bytes(bytes)) != Sent::kOk) {
    error(l, "an error reply could not be sent");
  }
}

void Bridge::on_request(Link& l, std::vector<Msg>& parts) noexcept {
  // [envelope..., "", body]: the envelope ends with the first empty part.
  std::size_t delimiter = 0;
  while (delimiter < parts.size() && !parts[delimiter].bytes().empty()) ++delimiter;
  if (delimiter == 0 || delimiter + 2 != parts.size()) {
    malformed(l, "a request without the envelope [routing id..., \"\", body]");
    return;
  }
  std::vector<std::string> envelope;
  envelope.reserve(delimiter + 1);
  for (std::size_t i = 0; i <= delimiter; ++i) envelope.emplace_back(parts[i].text());
  const auto body = parts.back().bytes();
  if (body.size() > t_.max_message_bytes_) {
    oversized(l, body.size());
    reply_raw(l, envelope,
              "palm error: a request of " + std::to_string(body.size()) +
                  " bytes exceeds the limit of " + std::to_string(t_.max_message_bytes_) +
                  " bytes (TransportOptions::max_message_bytes)");
    return;
  }
  InItem item;
  const Parsed p = parse(l, body, {}, false, item);
  if (p == Parsed::kStalled) {
    stall(l, parts);
    return;
  }
  if (p == Parsed::kDropped) {
    // pylm's cache dies on an undecodable request; palm answers b"" (what
    // the cache answers any request it does not understand).
    reply_raw(l, envelope, {});
    return;
  }
  const std::uint64_t token = l.next_request++;
  l.requests.emplace(token, std::move(envelope));
  if (l.requests.size() > t_.options_.max_pending_requests) {
    l.requests.erase(l.requests.begin());
    error(l, "too many unanswered requests: the oldest is dropped");
  }
  item.peer = token;
  deliver(l, item, body.size());
}

void Bridge::on_from_worker(Link& l, std::vector<Msg>& parts) noexcept {
  EndpointState& s = *l.state;
  Header h;
  if (parts.size() < 2 || !decode_header(parts[1].bytes(), h)) {
    malformed(l, "a message to a dispatcher without palm's dispatch header");
    return;
  }
  const std::string id(parts[0].text());
  const auto known = l.by_routing.find(id);
  if (h.kind == Kind::kHello) {
    if (parts.size() != 2 || known != l.by_routing.end() || h.credits == 0) {
      malformed(l, "a bad or repeated worker hello");
      return;
    }
    // Events queued before this hello concern connections that closed before
    // it came (its fd may be a reused one): apply them first.
    read_monitor(l, false);
    // The header's fd: a ROUTER's routing-id part carries no metadata when
    // zmq_poll prefetched the message (libzmq 4.3.4), the parts after it do.
    const int fd = zmq_msg_get(parts[1].get(), ZMQ_SRCFD);
    const std::optional<PeerId> peer = s.peers.join(h.credits);
    if (!peer) {
      error(l, "a worker beyond max_peers is ignored");
      return;
    }
    const std::uint32_t index = PeerTable::index_of(*peer);
    l.routing[index] = id;
    l.by_routing[id] = *peer;
    l.peer_fd[index] = fd;
    if (fd >= 0) {
      if (auto old = l.by_fd.find(fd); old != l.by_fd.end() && old->second != *peer) {
        peer_gone(l, old->second, "its connection was replaced");
      }
      l.by_fd[fd] = *peer;
    }
    InItem joined;
    joined.event = Event::kPeerJoined;
    joined.peer = static_cast<std::uint64_t>(*peer);
    joined.credits = h.credits;
    deliver(l, joined);
    return;
  }
  if (known == l.by_routing.end()) {
    error(l, "a message from a worker that did not say hello (or is gone)");
    return;
  }
  const PeerId peer = known->second;
  switch (h.kind) {
    case Kind::kMessage: {
      if (parts.size() != 3) {
        malformed(l, "a worker result of " + std::to_string(parts.size()) + " parts (expected 3)");
        return;
      }
      InItem item;
      const auto body = parts[2].bytes();
      const Parsed p = parse(l, body, {}, false, item);
      if (p == Parsed::kStalled) {
        stall(l, parts);
        return;
      }
      // Credits come back even when the result is dropped: the worker is done.
      s.peers.add_credits(peer, h.credits);
      if (p == Parsed::kDropped) return;
      item.peer = static_cast<std::uint64_t>(peer);
      item.credits = h.credits;  // what the result gave back, as shm reports it
      deliver(l, item, body.size());
      return;
    }
    case Kind::kCredit: {
      s.peers.add_credits(peer, h.credits);
      InItem credit;
      credit.event = Event::kCredit;
      credit.peer = static_cast<std::uint64_t>(peer);
      credit.credits = h.credits;
      deliver(l, credit);
      return;
    }
    case Kind::kBye: peer_gone(l, peer, "said bye"); return;
    case Kind::kHello: return;  // handled above
  }
}

void Bridge::on_from_dispatcher(Link& l, std::vector<Msg>& parts) noexcept {
  Header h;
  if (parts.size() != 2 || !decode_header(parts[0].bytes(), h) || h.kind != Kind::kMessage) {
    malformed(l, "a message to a worker that is not [dispatch header, message]");
    return;
  }
  InItem item;
  const auto body = parts[1].bytes();
  const Parsed p = parse(l, body, {}, false, item);
  if (p == Parsed::kStalled) {
    stall(l, parts);
  } else if (p == Parsed::kOk) {
    deliver(l, item, body.size());
  }
}

void Bridge::peer_gone(Link& l, PeerId peer, const char* why) noexcept {
  EndpointState& s = *l.state;
  if (!s.peers.alive(peer)) return;
  const std::uint32_t index = PeerTable::index_of(peer);
  s.peers.leave(peer);
  if (index < l.routing.size()) {
    l.by_routing.erase(l.routing[index]);
    l.routing[index].clear();
    const int fd = l.peer_fd[index];
    if (fd >= 0) {
      if (auto it = l.by_fd.find(fd); it != l.by_fd.end() && it->second == peer) l.by_fd.erase(it);
    }
    l.peer_fd[index] = -1;
  }
  detail::log().info("{} {}: worker {:#x} gone ({})", to_string(l.pattern), s.address,
                     static_cast<std::uint64_t>(peer), why);
  InItem gone;
  gone.event = Event::kPeerGone;
  gone.peer = static_cast<std::uint64_t>(peer);
  deliver(l, gone);
}

void Bridge::read_monitor(Link& l, bool read_socket_first) noexcept {
  if (l.monitor == nullptr) return;
  // Each event is two parts: [u16 event, i32 value (the fd)], [endpoint].
  for (int n = 0; n < kBatch; ++n) {
    bool too_many = false;
    if (!recv_parts(l.monitor, monitor_parts_, too_many)) return;
    const auto b = monitor_parts_.front().bytes();
    if (b.size() < 6) continue;
    std::uint16_t event = 0;
    std::int32_t value = 0;
    std::memcpy(&event, b.data(), sizeof event);
    std::memcpy(&value, b.data() + 2, sizeof value);
    if (l.pattern == Pattern::kWorker) {
      // The first connection carries the hello queued at open; each later
      // one is a reconnection, maybe to a dispatcher that restarted and knows
      // nothing of us: offer our credits again. (A dispatcher that did not
      // restart sees a second hello from a new routing id: a new stay.)
      if ((event == ZMQ_EVENT_CONNECTED || event == ZMQ_EVENT_ACCEPTED) && l.connections++ > 0) {
        const auto hello = encode_header(Kind::kHello, l.state->spec.credits);
        if (zmq_send(l.socket, hello.data(), hello.size(), ZMQ_DONTWAIT) < 0) {
          error(l, "the worker's hello after a reconnection could not be sent");
        }
        l.dirty = true;  // the send may have taken the fd's signal
      }
    }
    if (l.pattern != Pattern::kDispatcher) {
      // The gauge of connections open now: the bridge writes it, anyone
      // reads it (relaxed: a count, nothing published through it).
      auto& gauge = l.state->counters.connections;
      const std::uint64_t now = gauge.load(std::memory_order_relaxed);
      if (event == ZMQ_EVENT_ACCEPTED || event == ZMQ_EVENT_CONNECTED) {
        gauge.store(now + 1, std::memory_order_relaxed);
      } else if (event == ZMQ_EVENT_DISCONNECTED && now > 0) {
        gauge.store(now - 1, std::memory_order_relaxed);
      }
      continue;
    }
    if (event != ZMQ_EVENT_DISCONNECTED) continue;
    auto it = l.by_fd.find(value);
    if (it == l.by_fd.end()) continue;
    // What the worker sent before it went is in the socket already (ZeroMQ
    // reads a connection to its end before it reports it closed): deliver
    // it before the news that the worker is gone.
    if (read_socket_first) pump_in(l);
    it = l.by_fd.find(value);
    if (it != l.by_fd.end()) peer_gone(l, it->second, "disconnected");
  }
  l.monitor_dirty = true;  // the batch ended before EAGAIN: more may wait
}

// ============================================================================
// Counting and logging

void Bridge::malformed(Link& l, std::string_view why) noexcept {
  const std::uint64_t n = Counters::bump(l.state->counters.malformed);
  if (detail::should_log(n)) {
    detail::log().warn("{} {}: dropped a malformed message ({}); {} so far",
                       to_string(l.pattern), l.state->address, why, n);
  }
}

void Bridge::oversized(Link& l, std::size_t bytes) noexcept {
  const std::uint64_t n = Counters::bump(l.state->counters.oversized);
  if (detail::should_log(n)) {
    detail::log().warn(
        "{} {}: dropped a message of {} bytes over the limit of {} "
        "(TransportOptions::max_message_bytes); {} so far",
        to_string(l.pattern), l.state->address, bytes, t_.max_message_bytes_, n);
  }
}

void Bridge::error(Link& l, std::string_view why) noexcept {
  const std::uint64_t n = Counters::bump(l.state->counters.errors);
  if (detail::should_log(n)) {
    detail::log().warn("{} {}: {}; {} errors so far", to_string(l.pattern), l.state->address, why,
                       n);
  }
}

}  // namespace palm::transport::zeromq
