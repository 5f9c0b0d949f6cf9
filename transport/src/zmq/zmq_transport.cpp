#include "zmq/zmq_transport.hpp"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <exception>
#include <future>
#include <string>
#include <utility>

#include "detail/log.hpp"
#include "palm/core/assert.hpp"
#include "palm/core/interrupt.hpp"
#include "palm/core/quiet_thread.hpp"
#include "zmq/bridge.hpp"

namespace palm::transport::zeromq {
namespace {

// Rings of endpoints that never use one direction stay tiny.
constexpr std::size_t kUnusedRing = 2;

}  // namespace

// ============================================================================
// EndpointState

EndpointState::EndpointState(std::shared_ptr<detail::ContextCore> c, ZmqTransport& t,
                             EndpointSpec s, Address a, std::size_t capacity)
    : core(std::move(c)),
      transport(t),
      spec(std::move(s)),
      parsed(std::move(a)),
      out(sends(spec.pattern) ? capacity : kUnusedRing),
      in(receives(spec.pattern) ? capacity : kUnusedRing),
      peers(spec.pattern == Pattern::kDispatcher ? t.options().max_peers : 1) {}

EndpointState::~EndpointState() { drain(); }

void EndpointState::release(const OutItem& item) noexcept {
  if (item.pool != nullptr && item.handle != 0) {
    (void)item.pool->release(static_cast<SlotId>(item.slot), Handle::from_bits(item.handle));
  }
}

void EndpointState::release(const InItem& item) noexcept {
  if (item.handle != 0) (void)core->pool().release(core->slot(), Handle::from_bits(item.handle));
}

std::size_t EndpointState::drain() noexcept {
  std::size_t n = 0;
  OutItem o;
  while (out.try_pop(o)) {
    release(o);
    ++n;
  }
  InItem i;
  while (in.try_pop(i)) {
    release(i);
    ++n;
  }
  return n;
}

// ============================================================================
// The application side of an endpoint

namespace {

class ZmqEndpoint final : public Endpoint {
 public:
  explicit ZmqEndpoint(std::shared_ptr<EndpointState> state) noexcept : s_(std::move(state)) {}
  ~ZmqEndpoint() override { close(); }

  Pattern pattern() const noexcept override { return s_->spec.pattern; }
  Scheme scheme() const noexcept override { return s_->parsed.scheme; }
  const std::string& address() const noexcept override { return s_->address; }

  SendResult try_send(Frame& frame, const Envelope& to) noexcept override {
    return send(frame, to, std::chrono::nanoseconds::zero(), false);
  }
  SendResult send_for(Frame& frame, std::chrono::nanoseconds timeout,
                      const Envelope& to) noexcept override {
    return send(frame, to, timeout, true);
  }

  bool try_recv(Delivery& out) noexcept override {
    InItem item;
    if (!s_->in.try_pop(item)) return false;
    after_pop();
    fill(out, item);
    return true;
  }

  WaitResult recv_for(Delivery& out, std::chrono::nanoseconds timeout) noexcept override {
    InItem item;
    const WaitResult r = s_->in.pop_for(item, timeout, [this]() noexcept { return interrupt_.take(); }, wait_spin());
    if (r != WaitResult::kReady) return r;
    after_pop();
    fill(out, item);
    return r;
  }

  void set_doorbell(Doorbell* bell) noexcept override {
    // release: pairs with the bridge's acquire load (push_in).
    s_->bell.store(bell, std::memory_order_release);
  }

  std::chrono::nanoseconds wait_spin() const noexcept override { return s_->transport.options().wait_spin; }

  void interrupt() noexcept override {
    interrupt_.raise();
    s_->in.wake_waiters();
    s_->out.wake_waiters();
    // acquire: pairs with set_doorbell's release.
    if (Doorbell* bell = s_->bell.load(std::memory_order_acquire)) bell->ring(Doorbell::kWakeAll);
  }

  Result<void> subscribe(std::string_view prefix) override { return change(prefix, true); }
  Result<void> unsubscribe(std::string_view prefix) override { return change(prefix, false); }

  std::uint64_t subscriptions_seen() const noexcept override {
    // relaxed: a counter; stale on return by contract.
    return s_->counters.subscriptions.load(std::memory_order_relaxed);
  }

  WaitResult wait_subscriptions(std::uint64_t n, std::chrono::nanoseconds timeout) noexcept override {
    if (pattern() != Pattern::kPub) return WaitResult::kShutdown;
    // The bridge bumps the counter, then rings (a seq_cst RMW): a waiter that
    // sees the ring re-reads the counter.
    return s_->subscription_bell.wait_for(
        [this, n]() noexcept { return subscriptions_seen() >= n; }, timeout);
  }

  std::vector<PeerInfo> peers() const override {
    if (pattern() != Pattern::kDispatcher) return {};
    return s_->peers.snapshot();
  }
  std::uint32_t credits(PeerId peer) const noexcept override {
    if (pattern() != Pattern::kDispatcher) return 0;
    return s_->peers.credits(peer);
  }

  Result<void> grant(std::uint32_t n) override {
    if (pattern() != Pattern::kWorker) {
      return make_error(Errc::kInvalidArgument, "grant() is for worker endpoints");
    }
    if (n == 0) return {};
    OutItem item;
    item.kind = OutKind::kGrant;
    item.credits = n;
    if (s_->closed.load(std::memory_order_acquire)) {
      return make_error(Errc::kClosed, "the endpoint is closed");
    }
    const WaitResult r = s_->out.push_for(item, s_->transport.options().command_timeout);
    if (r != WaitResult::kReady) {
      return make_error(r == WaitResult::kTimeout ? Errc::kTimeout : Errc::kClosed,
                        "the worker's send queue stayed full");
    }
    s_->transport.wake_if_sleeping();
    return {};
  }

  EndpointStats stats() const noexcept override {
    // relaxed loads: statistics (see Counters).
    const Counters& c = s_->counters;
    EndpointStats st;
    st.messages_in = c.messages_in.load(std::memory_order_relaxed);
    st.messages_out = c.messages_out.load(std::memory_order_relaxed);
    st.bytes_in = c.bytes_in.load(std::memory_order_relaxed);
    st.bytes_out = c.bytes_out.load(std::memory_order_relaxed);
    st.errors = c.errors.load(std::memory_order_relaxed);
    st.malformed = c.malformed.load(std::memory_order_relaxed);
    st.oversized = c.oversized.load(std::memory_order_relaxed);
    st.dropped = c.dropped.load(std::memory_order_relaxed);
    st.stalls = c.stalls.load(std::memory_order_relaxed);
    st.subscriptions = c.subscriptions.load(std::memory_order_relaxed);
    st.connections = static_cast<std::size_t>(c.connections.load(std::memory_order_relaxed));
    st.queue_in = s_->in.size_approx();
    st.queue_out = s_->out.size_approx();
    return st;
  }

  void close() noexcept override {
    if (s_->closed.load(std::memory_order_acquire)) return;
    s_->transport.close_endpoint(s_);
  }

 private:
  SendResult send(Frame& frame, const Envelope& to, std::chrono::nanoseconds timeout,
                  bool wait) noexcept {
    EndpointState& s = *s_;
    const Pattern p = s.spec.pattern;
    if (!sends(p) || !frame) return SendResult::kInvalid;
    if (to.body == Body::kRaw && p != Pattern::kRep) return SendResult::kInvalid;
    if ((p == Pattern::kRep || p == Pattern::kDispatcher) && to.peer == PeerId::kNone) {
      return SendResult::kInvalid;
    }
    // acquire: pairs with close_link's release store.
    if (s.closed.load(std::memory_order_acquire)) return SendResult::kClosed;
    if (p == Pattern::kDispatcher) {
      const SendResult credit = s.peers.take_credit(to.peer);
      if (credit != SendResult::kQueued) return credit;
    }
    OutItem item;
    item.pool = frame.pool();
    item.slot = static_cast<std::uint32_t>(frame.slot());
    item.peer = static_cast<std::uint64_t>(to.peer);
    item.credits = to.credits;
    item.kind = to.body == Body::kRaw ? OutKind::kRaw : OutKind::kMessage;
    BlockPool* pool = frame.pool();
    const SlotId slot = frame.slot();
    // The reference moves into the item before it is published: once pushed,
    // the bridge may send and release it at once.
    item.handle = frame.detach().bits();
    WaitResult r = WaitResult::kTimeout;
    if (!wait) {
      r = s.out.try_push(item) ? WaitResult::kReady : WaitResult::kTimeout;
    } else {
      r = s.out.push_for(item, timeout, [this]() noexcept { return interrupt_.take(); }, wait_spin());
    }
    if (r != WaitResult::kReady) {
      frame = Frame(*pool, slot, Handle::from_bits(item.handle));  // back to the caller
      if (p == Pattern::kDispatcher) s.peers.give_back(to.peer);
      if (r == WaitResult::kShutdown) return SendResult::kClosed;
      return wait ? SendResult::kTimeout : SendResult::kFull;
    }
    s.transport.wake_if_sleeping();
    return SendResult::kQueued;
  }

  // A consumer made room: if the bridge stalled this endpoint on a full ring,
  // tell it. The fence orders the pop (a store) before the load of
  // in_blocked: the load half of the Dekker pair in Bridge::push_in.
  void after_pop() noexcept {
#if PALM_ZMQ_FENCELESS
    if (s_->in_blocked.exchange(false, std::memory_order_seq_cst)) s_->transport.wake_if_sleeping();
#else
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (s_->in_blocked.load(std::memory_order_relaxed) &&
        s_->in_blocked.exchange(false, std::memory_order_seq_cst)) {
      s_->transport.wake_if_sleeping();
    }
#endif
  }

  void fill(Delivery& out, const InItem& item) noexcept {
    detail::ContextCore& core = *s_->core;
    if (item.handle != 0) {
      out.frame = Frame(core.pool(), core.slot(), Handle::from_bits(item.handle));
    } else {
      out.frame.reset();
    }
    out.event = item.event;
    out.body = item.body;
    out.peer = static_cast<PeerId>(item.peer);
    out.credits = item.credits;
  }

  Result<void> change(std::string_view prefix, bool on) {
    if (pattern() != Pattern::kSub) {
      return make_error(Errc::kInvalidArgument, "subscribe() is for sub endpoints");
    }
    const EndpointState* state = s_.get();
    return s_->transport.run_on_bridge(
        [state, p = std::string(prefix), on](Bridge& b) { return b.subscribe(state, p, on); });
  }

  std::shared_ptr<EndpointState> s_;
  Interrupt interrupt_;
};

}  // namespace

// ============================================================================
// ZmqTransport

Result<std::unique_ptr<ZmqTransport>> ZmqTransport::start(detail::ContextCore& core) {
  void* context = zmq_ctx_new();
  if (context == nullptr) return errno_error(errno, "zmq_ctx_new");
  if (zmq_ctx_set(context, ZMQ_IO_THREADS, core.options().transport.io_threads) != 0) {
    const int err = errno;
    zmq_ctx_term(context);
    return errno_error(err, "zmq_ctx_set ZMQ_IO_THREADS");
  }
  const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    zmq_ctx_term(context);
    return errno_error(err, "eventfd");
  }
  std::unique_ptr<ZmqTransport> t(new ZmqTransport(core, context, fd));
  t->thread_ = quiet_thread([raw = t.get()] { raw->run(); });
  return t;
}

ZmqTransport::ZmqTransport(detail::ContextCore& core, void* context, int wake_fd)
    : core_(core),
      options_(core.options().transport),
      max_message_bytes_(core.max_message_bytes()),
      context_(context),
      wake_fd_(wake_fd) {}

ZmqTransport::~ZmqTransport() { shutdown(); }

void ZmqTransport::run() noexcept {
  // Named for profilers and debuggers (ZeroMQ names its own "ZMQbg/...").
  (void)::pthread_setname_np(::pthread_self(), "palm-bridge");
  {
    Bridge bridge(*this);
    bridge.loop();
    bridge.close_all();
  }
  // Commands posted after the loop ended are answered kClosed.
  std::vector<std::function<void(Bridge*)>> late;
  {
    std::lock_guard lock(commands_mutex_);
    running_ = false;
    late.swap(commands_);
  }
  for (auto& c : late) c(nullptr);
}

void ZmqTransport::shutdown() noexcept {
  std::lock_guard lock(shutdown_mutex_);
  if (terminated_.load(std::memory_order_relaxed)) return;
  // release: pairs with the loop's acquire; the bridge closes its sockets.
  stop_.store(true, std::memory_order_release);
  wake();
  if (thread_.joinable()) {
    PALM_ASSERT(thread_.get_id() != std::this_thread::get_id());
    thread_.join();
  }
  // Every socket is closed (the bridge owned them all), so this returns
  // once their linger ran out, and every zero-copy release has run.
  while (zmq_ctx_term(context_) != 0 && errno == EINTR) {
  }
  ::close(wake_fd_);
  terminated_.store(true, std::memory_order_relaxed);
}

void ZmqTransport::wake() noexcept {
  const std::uint64_t one = 1;
  // Non-blocking; EAGAIN only if the counter is at its maximum, which
  // still wakes the poll.
  [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void ZmqTransport::wake_if_sleeping() noexcept {
#if PALM_ZMQ_FENCELESS
  // (A1') One seq_cst RMW instead of (A1)+(A2): see PALM_ZMQ_FENCELESS.
  if (sleeping_.exchange(false, std::memory_order_seq_cst)) wake();
#else
  // (A1) Orders the caller's publication before the load of sleeping_.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // (A2) relaxed: ordered by (A1). The exchange lets one waker per sleep
  // write the eventfd.
  if (sleeping_.load(std::memory_order_relaxed) &&
      sleeping_.exchange(false, std::memory_order_relaxed)) {
    wake();
  }
#endif
}

Result<void> ZmqTransport::run_on_bridge(std::function<Result<void>(Bridge&)> fn) {
  auto done = std::make_shared<std::promise<Result<void>>>();
  std::future<Result<void>> result = done->get_future();
  {
    std::lock_guard lock(commands_mutex_);
    if (!running_ || stop_.load(std::memory_order_relaxed)) {
      return make_error(Errc::kClosed, "the context is shut down");
    }
    commands_.push_back([fn = std::move(fn), done](Bridge* bridge) {
      Result<void> r = make_error(Errc::kClosed, "the context is shut down");
      if (bridge != nullptr) {
        try {
          r = fn(*bridge);
        } catch (const std::exception& e) {  // no exception leaves the bridge
          r = make_error(Errc::kSystem, e.what());
        }
      }
      done->set_value(std::move(r));
    });
    // relaxed: under the mutex the bridge takes before reading the list; the
    // eventfd below wakes it whether it sleeps or not.
    commands_posted_.store(true, std::memory_order_relaxed);
  }
  wake();
  if (result.wait_for(options_.command_timeout) != std::future_status::ready) {
    return make_error(Errc::kTimeout, "the bridge did not answer within command_timeout (" +
                                          std::to_string(options_.command_timeout.count()) +
                                          " ms)");
  }
  return result.get();
}

Result<std::unique_ptr<Endpoint>> ZmqTransport::open(const EndpointSpec& spec,
                                                     const Address& address) {
  if (!is_zmq(address.scheme)) {
    return make_error(Errc::kInvalidArgument, "not a ZeroMQ address: " + address.text);
  }
  if (spec.pattern == Pattern::kWorker && spec.credits == 0) {
    return make_error(Errc::kInvalidArgument, "a worker endpoint offers at least 1 credit");
  }
  std::size_t capacity = spec.queue_capacity != 0 ? spec.queue_capacity : options_.queue_capacity;
  if (capacity < 2 || (capacity & (capacity - 1)) != 0 || capacity > (std::size_t{1} << 24)) {
    return make_error(Errc::kInvalidArgument, "queue_capacity " + std::to_string(capacity) +
                                                  " must be a power of two in [2, 2^24]");
  }
  auto state = std::make_shared<EndpointState>(core_.shared_from_this(), *this, spec, address,
                                               capacity);
  auto added = run_on_bridge([state](Bridge& b) { return b.add(state); });
  if (!added) return tl::unexpected(std::move(added.error()));
  return std::unique_ptr<Endpoint>(new ZmqEndpoint(std::move(state)));
}

void ZmqTransport::close_endpoint(const std::shared_ptr<EndpointState>& state) noexcept {
  try {
    const EndpointState* raw = state.get();
    // kClosed (the bridge stopped and closed it) and kTimeout leave nothing
    // to do here: the link is closed by the bridge either way.
    (void)run_on_bridge([raw](Bridge& b) -> Result<void> {
      b.close(raw);
      return {};
    });
  } catch (const std::exception& e) {  // allocation failure: the bridge closes it at shutdown
    detail::log().error("closing an endpoint: {}", e.what());
  }
}

}  // namespace palm::transport::zeromq
