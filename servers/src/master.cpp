#include "palm/servers/master.hpp"

#include <cstddef>
#include <deque>
#include <exception>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "feed_busiest.hpp"
#include "palm/core/id_table.hpp"
#include "palm/servers/bypass.hpp"
#include "palm/transport/discovery.hpp"
#include "palm/transport/shm/host.hpp"

namespace palm::servers {

using transport::Delivery;
using transport::Endpoint;
using transport::Envelope;
using transport::Event;
using transport::Pattern;
using transport::PeerId;
using transport::SendResult;

namespace {

constexpr int kBatch = 32;
constexpr std::uint64_t kPylm = ~std::uint64_t{0};  // the "worker" of pylm's PUSH socket
constexpr std::uint64_t kSamePlaceholder = ~std::uint64_t{0};  // Pending::id of a result to fill in

std::string host_of(std::string_view address) {
  // tcp://HOST:PORT -> HOST; anything else -> loopback.
  if (!address.starts_with("tcp://")) return "127.0.0.1";
  auto rest = address.substr(6);
  const auto colon = rest.rfind(':');
  return std::string(colon == std::string_view::npos ? rest : rest.substr(0, colon));
}

// A first-in first-out queue over a vector that keeps its capacity: no
// allocation once it has grown to its working size. Items keep their index
// (from the vector's start) until the queue empties or is compacted, which
// happens only in pop_front.
template <class T>
class Fifo {
 public:
  bool empty() const noexcept { return head_ == items_.size(); }
  std::size_t size() const noexcept { return items_.size() - head_; }
  // Indices, for items pushed since end() was read: [then, end()).
  std::size_t end() const noexcept { return items_.size(); }
  T& at(std::size_t i) noexcept { return items_[i]; }
  T& front() noexcept { return items_[head_]; }
  void push_back(T&& item) { items_.push_back(std::move(item)); }
  void pop_front() {
    items_[head_].clear();  // what it held goes now (not `= T{}`: Frame's note)
    if (++head_ == items_.size()) {
      items_.clear();
      head_ = 0;
    } else if (head_ >= kCompactAt && head_ * 2 >= items_.size()) {
      // A queue that never empties: the dead half goes.
      items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }

 private:
  static constexpr std::size_t kCompactAt = 256;
  std::vector<T> items_;
  std::size_t head_ = 0;
};

}  // namespace

// ---- inbound: scatter, then stamp ------------------------------------------------

class MasterInbound final : public InboundPart {
 public:
  MasterInbound(Master& master, std::string address)
      : InboundPart("inbound", PartAddress{Pattern::kPull, std::move(address), true, {}, {}}),
        master_(master) {}

 protected:
  Result<void> on_open() override {
    if (auto r = InboundPart::on_open(); !r) return r;
    for (auto& ep : endpoints_) {
      if (auto* shm_ep = dynamic_cast<shm::ShmEndpoint*>(ep.get())) segment_ep_ = shm_ep;
    }
    return {};
  }

  // Each message scatter yields gets a cache key (pylm's uuid4, when the
  // client gave none) and a dispatch id, in a frame of the segment's pool
  // when there is one: palm workers on shm then take it without a copy. A
  // message passed on as is (emit_same, the default scatter) is stamped by
  // restamp(), in place when the master holds it alone.
  void scatter(const MessageView& message, Emitter& out) override {
    class Stamp final : public Emitter {
     public:
      Stamp(MasterInbound& part, Emitter& inner) : part_(part), inner_(inner) {}
      void emit(const MessageView& m) override {
        MessageView stamped = m;
        transport::Uuid4Text uuid;
        part_.stamp(stamped, uuid);
        inner_.emit(stamped);
      }
      void emit_same() override { inner_.emit_same(); }

     private:
      MasterInbound& part_;
      Emitter& inner_;
    };
    Stamp stamp(*this, out);
    master_.scatter(message, stamp);
  }

  bool restamp(Frame& same) override {
    const FrameView* v = same.peek();
    if (v == nullptr) {
      PartCounters::bump(counters_.errors);
      return false;
    }
    MessageView stamped = v->message;
    transport::Uuid4Text uuid;
    stamp(stamped, uuid);
    // In place: the master's alone (not shared by a second emit_same) and
    // already in the pool it goes out from.
    const bool in_segment =
        segment_ep_ == nullptr || same.pool()->region().base == segment_ep_->pool().region().base;
    if (in_segment && same.rewrite(stamped)) return true;
    auto built = build(stamped, *same.pool(), same.slot());
    if (!built) {
      PartCounters::bump(counters_.errors);
      logger().error("{}: a message could not be stamped: {}", name(), built.error().describe());
      return false;
    }
    same = std::move(*built);
    return true;
  }

  Result<Frame> build(const MessageView& message, BlockPool& pool, SlotId slot) override {
    if (segment_ep_ != nullptr) return segment_ep_->build(message);
    return Frame::build(pool, slot, message);
  }

 private:
  // `uuid` holds the cache key stamped into m, if any: keep it alive.
  void stamp(MessageView& m, transport::Uuid4Text& uuid) {
    if (m.cache.empty()) {
      transport::make_uuid4(uuid);
      m.cache = std::string_view(uuid.data(), uuid.size());
    }
    m.dispatch_id = ++next_id_;
  }

  Master& master_;
  shm::ShmEndpoint* segment_ep_ = nullptr;
  std::uint64_t next_id_ = 0;  // the part's thread only
};

// ---- dispatch ------------------------------------------------------------------

class DispatchPart final : public OutboundPart {
 public:
  explicit DispatchPart(Master& master) : OutboundPart("dispatch", PartAddress{}), master_(master) {}

  DispatchStats snapshot() const noexcept {
    DispatchStats s;
    const auto get = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    s.dispatched_shm = get(c_.dispatched_shm);
    s.dispatched_tcp = get(c_.dispatched_tcp);
    s.dispatched_pylm = get(c_.dispatched_pylm);
    s.results_shm = get(c_.results_shm);
    s.results_tcp = get(c_.results_tcp);
    s.results_pylm = get(c_.results_pylm);
    s.duplicates = get(c_.duplicates);
    s.redispatched = get(c_.redispatched);
    s.workers_shm = get(c_.workers_shm);
    s.workers_tcp = get(c_.workers_tcp);
    s.in_flight = get(c_.in_flight);
    s.pylm_connections = pylm_push_ != nullptr ? pylm_push_->stats().connections : 0;
    return s;
  }
  std::vector<WorkerLoad> loads() const {
    std::vector<WorkerLoad> out;
    const std::lock_guard lock(workers_mu_);
    for (const auto& [key, w] : workers_) {
      // relaxed: a count, not a publication; the lock orders the map only.
      out.push_back(WorkerLoad{key, w.shm, w.held.load(std::memory_order_relaxed)});
    }
    return out;
  }
  const std::string& dispatch_address() const noexcept { return dispatch_address_; }
  std::string pylm_push_address() const { return pylm_push_ ? pylm_push_->address() : ""; }
  std::string pylm_pull_address() const { return pylm_pull_ ? pylm_pull_->address() : ""; }

 protected:
  Result<void> on_open() override {
    const MasterConfig& cfg = master_.config();
    std::string dispatch = cfg.dispatch_address;
    if (dispatch.empty()) dispatch = fmt::format("tcp://{}:*", host_of(cfg.worker_push_address));
    auto bound = bind_service(Pattern::kDispatcher, dispatch, true, "dispatch");
    if (!bound) return tl::unexpected(std::move(bound.error()));
    dispatch_address_ = *bound;
    announce_[std::string(kDispatchKey)] = dispatch_address_;
    dispatchers_ = endpoints_.size();  // tcp, then shm when the server has a segment
    bool shm = false;
    for (std::size_t i = 0; i < dispatchers_; ++i) {
      shm_dispatcher_.push_back(endpoints_[i]->scheme() == transport::Scheme::kShm);
      shm = shm || shm_dispatcher_.back();
    }
    // bypass.hpp: only where local workers can be fed, and where the
    // master's per-message work may be skipped (no pipeline step after it,
    // no limit counting its results).
    bypass_allowed_ = shm && cfg.bypass && !cfg.pipelined && cfg.messages == 0;
    // (assign: g++ 12 warns falsely, -Wrestrict, on a ternary of literals)
    announce_[std::string(kBypassKey)].assign(bypass_allowed_ ? 1 : 0, '1');
    if (auto r = bind_service(Pattern::kPush, cfg.worker_push_address, false); !r) {
      return tl::unexpected(std::move(r.error()));
    }
    pylm_push_ = endpoints_.back().get();
    if (auto r = bind_service(Pattern::kPull, cfg.worker_pull_address, false); !r) {
      return tl::unexpected(std::move(r.error()));
    }
    pylm_pull_ = endpoints_.back().get();
    return {};
  }

  // Messages at pylm workers are timed (pylm_timeout): check_timeouts runs.
  bool wants_ticks() const noexcept override { return pylm_inflight_ != 0; }

  bool step() override {
    bool did = flush_out();
    did |= receive();
    did |= check_timeouts();
    if (bypass_untold_) did |= tell_bypass();
    did |= dispatch();
    did |= flush_out();
    return did;
  }

 private:
  struct Worker {
    std::uint64_t key = 0;  // in workers_
    std::size_t endpoint = 0;
    PeerId peer = PeerId::kNone;
    std::uint32_t credits = 0;
    bool shm = false;
    // Bypass addresses handed to it so far (a count of bypass_added_).
    std::uint64_t bypass_told = 0;
    // Messages in inflight_ sent to it: written by the part's thread only,
    // read by worker_loads() (relaxed both ways: a gauge).
    std::atomic<std::uint32_t> held{0};
    std::uint32_t offered = 0;  // the credits it joined with
    // When its last result came (receive's one clock read a batch) and the
    // time since the one before: a fast worker may hold all it offered
    // before the next is used (feed_busiest.hpp), as in the bypass. Over
    // ZeroMQ a worker's results come back hundreds of µs after it took the
    // message: with kRun alone, 8 workers on 2 cores were all kept awake.
    std::int64_t last_result_ns = 0;
    std::int64_t gap_ns = INT64_MAX;
    bool busy = false;  // it held others at its last result (note_result)
  };
  // The frame last: what a result reads first shares a cache line with the
  // table's id (the frame's view storage, ~200 bytes, stays unread).
  struct InFlight {
    std::uint64_t worker = 0;  // a key of workers_, or kPylm
    std::int64_t sent_ns = 0;  // at a pylm worker (check_timeouts): palm workers' are not read
    std::int64_t since_ns = 0;  // when the message entered the master
    Frame frame;  // a second reference to what was sent, to send it again (unviewed)
  };
  struct Pending {
    Frame frame;
    std::uint64_t id = 0;
    std::int64_t since_ns = 0;
    void clear() noexcept {
      frame.reset();
      id = 0;
      since_ns = 0;
    }
  };
  struct Counters {
    std::atomic<std::uint64_t> dispatched_shm{0}, dispatched_tcp{0}, dispatched_pylm{0},
        results_shm{0}, results_tcp{0}, results_pylm{0}, duplicates{0}, redispatched{0},
        workers_shm{0}, workers_tcp{0}, in_flight{0};
  };

  static std::uint64_t key_of(std::size_t endpoint, PeerId peer) noexcept {
    return (static_cast<std::uint64_t>(peer) << 4) | endpoint;
  }
  void set_gauges() noexcept {
    std::uint64_t shm = 0, tcp = 0;
    for (const auto& [key, w] : workers_) (w.shm ? shm : tcp)++;
    c_.workers_shm.store(shm, std::memory_order_relaxed);
    c_.workers_tcp.store(tcp, std::memory_order_relaxed);
    c_.in_flight.store(inflight_.size(), std::memory_order_relaxed);
  }

  // Results and worker events, from every dispatcher and pylm's PULL.
  bool receive() {
    bool did = false;
    std::int64_t now = 0;  // read at the first result: one clock read a call
    batch_.resize(kBatch);
    for (std::size_t e = 0; e < dispatchers_; ++e) {
      Endpoint& ep = *endpoints_[e];
      const std::size_t got = ep.try_recv_batch(batch_.data(), batch_.size());
      for (std::size_t i = 0; i < got; ++i) {
        Delivery& d = batch_[i];
        did = true;
        const std::uint64_t key = key_of(e, d.peer);
        switch (d.event) {
          case Event::kPeerJoined: {
            // Out of order_ before the map frees it (order_ points into it).
            std::erase_if(order_, [key](const Worker* w) { return w->key == key; });
            {
              // The lock keeps worker_loads() off the map while it changes.
              const std::lock_guard lock(workers_mu_);
              workers_.erase(key);
              workers_.try_emplace(key, key, e, d.peer, d.credits, shm_dispatcher_[e]);
            }
            order_.push_back(&workers_.find(key)->second);
            order_.back()->offered = d.credits;
            bypass_untold_ = bypass_added_ != 0;
            logger().info("a palm worker joined over {} with {} credits ({} workers)",
                          shm_dispatcher_[e] ? "shm" : "tcp", d.credits, workers_.size());
            break;
          }
          case Event::kCredit:
            if (auto it = workers_.find(key); it != workers_.end()) it->second.credits += d.credits;
            break;
          case Event::kPeerGone:
            worker_gone(key);
            break;
          case Event::kMessage: {
            Worker* from = nullptr;
            if (auto it = workers_.find(key); it != workers_.end()) {
              from = &it->second;
              from->credits += d.credits;
              if (now == 0) now = Router::now_ns();
              detail::note_result(*from, now, from->held.load(std::memory_order_relaxed));
            }
            PartCounters::bump(shm_dispatcher_[e] ? c_.results_shm : c_.results_tcp);
            on_result(d.frame, key, from);
            break;
          }
        }
        d.frame.reset();  // what on_result did not pass on
      }
    }
    Delivery d;
    for (int i = 0; i < kBatch && pylm_pull_->try_recv(d); ++i) {
      did = true;
      if (d.event != Event::kMessage) continue;
      PartCounters::bump(c_.results_pylm);
      on_result(d.frame, kPylm, nullptr);
    }
    set_gauges();
    return did;
  }

  void worker_gone(std::uint64_t key) {
    auto it = workers_.find(key);
    if (it == workers_.end()) return;
    const bool shm = it->second.shm;
    std::erase_if(order_, [key](const Worker* w) { return w->key == key; });  // before the map frees it
    {
      const std::lock_guard lock(workers_mu_);
      workers_.erase(it);
    }
    std::size_t resent = 0;
    for (const std::uint64_t id : inflight_.ids()) {
      InFlight* e = inflight_.find(id);
      if (e->worker != key) continue;
      retry_.push_front(Pending{std::move(e->frame), id, e->since_ns});
      inflight_.erase(id);
      ++resent;
    }
    PartCounters::bump(c_.redispatched, resent);
    logger().warn("a palm worker over {} left; {} of its messages go to other workers ({} left)",
                  shm ? "shm" : "tcp", resent, workers_.size());
  }

  // `worker`: the palm worker `from` names, if still attached.
  void on_result(Frame& frame, std::uint64_t from, Worker* worker) {
    auto view = frame.view();
    if (!view) {
      PartCounters::bump(counters_.errors);
      return;
    }
    const MessageView& result = view->message;
    std::uint64_t id = 0;
    if (result.dispatch_id != 0) {
      id = result.dispatch_id;
    } else if (from == kPylm) {
      // A pylm worker whose protobuf dropped palm's field: its cache key.
      auto by = pylm_by_cache_.find(std::string(result.cache));
      if (by != pylm_by_cache_.end()) id = by->second;
    }
    if (id == 0 && result.function == kBypassFunction) return;  // a worker told of a bypass (its credit came)
    InFlight* it = inflight_.find(id);
    if (it == nullptr) {
      const auto n = c_.duplicates.fetch_add(1, std::memory_order_relaxed) + 1;
      if (should_log_nth(n)) {
        logger().warn("dropped a result that was delivered already (dispatch id {}; {} so far)",
                      result.dispatch_id, n);
      }
      return;
    }
    if (it->worker == kPylm) {
      --pylm_inflight_;
      forget_pylm(result.cache, id);
    } else {
      // Its holder is the worker that answered, but for a result of
      // another worker's message (a lookup then; gone: nothing to count).
      Worker* holder = worker;
      if (it->worker != from) {
        auto h = workers_.find(it->worker);
        holder = h != workers_.end() ? &h->second : nullptr;
      }
      if (holder != nullptr) {
        holder->held.store(holder->held.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
      }
    }
    const std::int64_t since = it->since_ns;
    inflight_.erase(id);

    // What gather emits goes out in order once gather returned; the result
    // passed on as is (emit_same, the default gather) is then rewritten in
    // place (the topic, the stage, the dispatch id cleared) when the master
    // holds it alone: no new frame per result.
    class Gathered final : public Emitter {
     public:
      Gathered(DispatchPart& part, const Frame& frame, std::int64_t since)
          : part_(part), frame_(frame), since_(since) {}
      void emit(const MessageView& m) override { part_.publish(m, frame_, since_); }
      void emit_same() override {
        ++same_;
        Pending placeholder;  // default-initialized: no `Frame{}` (Frame's note)
        placeholder.id = kSamePlaceholder;
        placeholder.since_ns = since_;
        part_.pending_out_.push_back(std::move(placeholder));
      }
      int same() const noexcept { return same_; }

     private:
      DispatchPart& part_;
      const Frame& frame_;
      std::int64_t since_;
      int same_ = 0;
    };
    const std::size_t first_new = pending_out_.end();
    Gathered out(*this, frame, since);
    try {
      master_.gather(result, out);
    } catch (const std::exception& e) {
      PartCounters::bump(counters_.errors);
      logger().error("gather failed on '{}': {}", result.function, e.what());
    }
    if (out.same() != 0) fill_same(result, frame, first_new, out.same());
    count_message();
    counters_.latency.record(std::chrono::nanoseconds(Router::now_ns() - since));
  }

  // The placeholders gather's emit_same left in pending_out_ (from
  // `first`): the result itself, rewritten in place for the last of them
  // (the others, built first, read it as it came).
  void fill_same(const MessageView& result, Frame& frame, std::size_t first, int count) {
    for (std::size_t i = first; i < pending_out_.end(); ++i) {
      Pending& p = pending_out_.at(i);
      if (p.id != kSamePlaceholder) continue;
      p.id = 0;
      if (--count != 0) {
        if (auto built = stream_frame(result, frame)) p.frame = std::move(*built);
        continue;
      }
      StreamEdit& edit = edit_;
      if (!stream_edit(result, edit)) continue;
      MessageView out = result;
      out.stage = edit.stage;
      out.dispatch_id = 0;  // palm's bookkeeping stays inside the master
      if (frame.rewrite(out, edit.topic)) {
        p.frame = std::move(frame);
      } else if (auto built = build_out(out, frame, edit.topic)) {
        p.frame = std::move(*built);
      }
    }
    // Placeholders left empty (a failure, logged) are dropped by flush_out.
  }

  bool stream_edit(const MessageView& m, StreamEdit& edit) {
    default_stream(m, master_.name(), master_.config().pipelined, edit);
    try {
      master_.handle_stream(m, edit);
    } catch (const std::exception& e) {
      PartCounters::bump(counters_.errors);
      logger().error("handle_stream failed on '{}': {}", m.function, e.what());
      return false;
    }
    return true;
  }

  Result<Frame> build_out(const MessageView& out, const Frame& like, std::string_view topic) {
    auto frame = Frame::build(*like.pool(), like.slot(), out, topic);
    if (!frame) {
      PartCounters::bump(counters_.errors);
      logger().error("a result could not be built: {}", frame.error().describe());
    }
    return frame;
  }

  Result<Frame> stream_frame(const MessageView& m, const Frame& like) {
    StreamEdit& edit = edit_;
    if (!stream_edit(m, edit)) return make_error(Errc::kInvalidArgument, "handle_stream failed");
    MessageView out = m;
    out.stage = edit.stage;
    out.dispatch_id = 0;
    return build_out(out, like, edit.topic);
  }

  void publish(const MessageView& m, const Frame& like, std::int64_t since) {
    StreamEdit& edit = edit_;
    if (!stream_edit(m, edit)) return;
    MessageView out = m;
    out.stage = edit.stage;
    out.dispatch_id = 0;  // palm's bookkeeping stays inside the master
    auto frame = Frame::build(*like.pool(), like.slot(), out, edit.topic);
    if (!frame) {
      PartCounters::bump(counters_.errors);
      logger().error("a result could not be built: {}", frame.error().describe());
      return;
    }
    pending_out_.push_back(Pending{std::move(*frame), 0, since});
  }

  // Results to the "outbound" route; what does not fit waits here, and no
  // new work is admitted meanwhile (dispatch() checks pending_out_).
  bool flush_out() {
    bool did = false;
    while (!pending_out_.empty()) {
      Pending& p = pending_out_.front();
      if (!p.frame) {  // a result that could not be made (logged)
        pending_out_.pop_front();
        continue;
      }
      const auto bytes = p.frame.wire_bytes();
      if (!router().try_push(target(), p.frame, kNoRoute, 0, p.since_ns)) {
        PartCounters::bump(counters_.stalls);
        break;
      }
      PartCounters::bump(counters_.messages_out);
      PartCounters::bump(counters_.bytes_out, bytes);
      pending_out_.pop_front();
      did = true;
    }
    return did;
  }

  bool check_timeouts() {
    // Only pylm's messages are timed: without any, no clock is read (one
    // read a step was one a message, of ~5, under load).
    if (pylm_inflight_ == 0) return false;
    const std::int64_t now = Router::now_ns();
    if (now - last_check_ns_ < std::chrono::nanoseconds(env().poll).count()) return false;
    last_check_ns_ = now;
    const std::int64_t limit = std::chrono::nanoseconds(master_.config().pylm_timeout).count();
    std::size_t resent = 0;
    for (const std::uint64_t id : inflight_.ids()) {
      InFlight* e = inflight_.find(id);
      if (e->worker != kPylm || now - e->sent_ns <= limit) continue;
      auto view = e->frame.view();
      if (view) forget_pylm(view->message.cache, id);
      --pylm_inflight_;
      retry_.push_front(Pending{std::move(e->frame), id, e->since_ns});
      inflight_.erase(id);
      ++resent;
    }
    if (resent != 0) {
      PartCounters::bump(c_.redispatched, resent);
      logger().warn("{} messages sent to pylm workers did not come back in {} ms: sent again",
                    resent, master_.config().pylm_timeout.count());
    }
    return resent != 0;
  }

  void forget_pylm(std::string_view cache, std::uint64_t id) {
    auto range = pylm_by_cache_.equal_range(std::string(cache));
    for (auto i = range.first; i != range.second; ++i) {
      if (i->second == id) {
        pylm_by_cache_.erase(i);
        return;
      }
    }
  }

  bool dispatch() {
    bool did = false;
    const MasterConfig& cfg = master_.config();
    for (int n = 0; n < kBatch; ++n) {
      if (inflight_.size() >= cfg.window || pending_out_.size() >= kBatch) break;
      Pending p;
      if (!retry_.empty()) {
        p = std::move(retry_.front());
        retry_.pop_front();
      } else {
        Routed r;
        if (!router().try_pop(input(), r)) break;
        PartCounters::bump(counters_.messages_in);
        auto view = r.frame.view();
        if (!view) {
          PartCounters::bump(counters_.errors);
          continue;
        }
        if (view->message.function == kBypassFunction) {
          add_bypass(view->message);
          continue;
        }
        p = Pending{std::move(r.frame), view->message.dispatch_id, r.since_ns};
      }
      if (!send_to_a_worker(p)) {
        retry_.push_front(std::move(p));  // no worker has room: wait for credits
        break;
      }
      did = true;
    }
    set_gauges();
    return did;
  }

  // A client asks for the bypass (bypass.hpp): its dispatcher's address,
  // handed to every palm worker on shm by tell_bypass.
  void add_bypass(const MessageView& m) {
    const std::string address(reinterpret_cast<const char*>(m.payload.data()), m.payload.size());
    if (!bypass_allowed_ || !address.starts_with("shm://")) {
      PartCounters::bump(counters_.errors);
      logger().warn("refused a client's bypass to '{}': {}", address.substr(0, 100),
                    bypass_allowed_ ? "not a shm:// address" : "this master does not offer it");
      return;
    }
    bypass_addresses_.push_back(address);
    if (bypass_addresses_.size() > kMaxBypassClients) bypass_addresses_.pop_front();  // workers that join later skip it
    ++bypass_added_;
    bypass_untold_ = true;
    logger().info("a client feeds the workers directly (bypass) at {}", address);
  }

  // Hands each palm worker on shm the bypass addresses it was not told yet,
  // one credit each (the worker's answer gives it back, on_result drops it).
  bool tell_bypass() {
    bool did = false;
    bypass_untold_ = false;
    const std::uint64_t first_kept = bypass_added_ - bypass_addresses_.size();
    for (Worker* w : order_) {
      if (!w->shm) {
        w->bypass_told = bypass_added_;  // a worker on tcp cannot attach to a segment
        continue;
      }
      auto* ep = dynamic_cast<shm::ShmEndpoint*>(endpoints_[w->endpoint].get());
      while (ep != nullptr && w->bypass_told < bypass_added_ && w->credits > 0) {
        const std::uint64_t n = std::max(w->bypass_told, first_kept);
        const std::string& address = bypass_addresses_[n - first_kept];
        MessageView m;
        m.function = kBypassFunction;
        m.payload = std::as_bytes(std::span(address.data(), address.size()));
        auto frame = ep->build(m);
        Envelope to;
        to.peer = w->peer;
        if (!frame || ep->try_send(*frame, to) != SendResult::kQueued) break;  // next step
        --w->credits;
        w->bypass_told = n + 1;
        did = true;
      }
      bypass_untold_ = bypass_untold_ || w->bypass_told < bypass_added_;
    }
    return did;
  }

  bool send_to_a_worker(Pending& p) {
    auto keep = p.frame.share_unviewed();  // seldom read: a view would be copied at every move
    if (!keep) return false;
    // palm workers first (feed_busiest.hpp).
    for (std::size_t tries = 0; tries < order_.size(); ++tries) {
      Worker* pick = detail::feed_the_busiest(
          order_, [](Worker* w) { return w; },
          // relaxed: the part's thread wrote it; a gauge for the others.
          [](const Worker& w) { return w.held.load(std::memory_order_relaxed); },
          [](const Worker& w) { return detail::run_of(w); });
      if (pick == nullptr) break;
      Worker& w = *pick;
      Envelope to;
      to.peer = w.peer;
      const SendResult r = endpoints_[w.endpoint]->try_send(p.frame, to);
      if (r == SendResult::kQueued) {
        --w.credits;
        w.held.store(w.held.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        PartCounters::bump(w.shm ? c_.dispatched_shm : c_.dispatched_tcp);
        inflight_.put(p.id, InFlight{w.key, 0, p.since_ns, std::move(*keep)});  // sent_ns: pylm's only
        return true;
      }
      // kNoCredit, kFull; or kPeerGone, kClosed, whose kPeerGone event will
      // follow: skip it until its credits come back.
      w.credits = 0;
    }
    // pylm workers: only while one is connected, and a bounded number.
    if (pylm_inflight_ < master_.config().pylm_credits && pylm_push_->stats().connections > 0) {
      const std::string cache = [&] {
        auto v = p.frame.view();
        return v ? std::string(v->message.cache) : std::string();
      }();
      if (pylm_push_->try_send(p.frame) == SendResult::kQueued) {
        ++pylm_inflight_;
        PartCounters::bump(c_.dispatched_pylm);
        pylm_by_cache_.emplace(cache, p.id);
        inflight_.put(p.id, InFlight{kPylm, Router::now_ns(), p.since_ns, std::move(*keep)});
        return true;
      }
    }
    return false;
  }

  Master& master_;
  std::string dispatch_address_;
  std::size_t dispatchers_ = 0;
  std::vector<bool> shm_dispatcher_;
  Endpoint* pylm_push_ = nullptr;
  Endpoint* pylm_pull_ = nullptr;

  // The part's thread only.
  std::unordered_map<std::uint64_t, Worker> workers_;  // changed under workers_mu_
  mutable std::mutex workers_mu_;  // workers_' inserts and erases vs worker_loads()
  // The workers in joining order (unordered_map nodes do not move).
  std::vector<Worker*> order_;
  IdTable<InFlight> inflight_;  // by dispatch id
  std::unordered_multimap<std::string, std::uint64_t> pylm_by_cache_;
  std::uint32_t pylm_inflight_ = 0;
  std::deque<Pending> retry_;        // to send before new work (a worker gone, a timeout)
  // Results and events taken from a dispatcher under one lock (shm), each
  // emptied once handled.
  std::vector<Delivery> batch_;
  // Results waiting for room in "outbound": one a message, in a vector
  // that keeps its capacity (a deque of these 232-byte items allocated a
  // chunk every second result).
  Fifo<Pending> pending_out_;
  StreamEdit edit_;  // reused: its topic's buffer is allocated once
  std::int64_t last_check_ns_ = 0;
  // The bypass (bypass.hpp): allowed; the last addresses clients gave;
  // how many were ever given; some worker was not told them all.
  bool bypass_allowed_ = false;
  std::deque<std::string> bypass_addresses_;
  std::uint64_t bypass_added_ = 0;
  bool bypass_untold_ = false;

  Counters c_;  // written by the part's thread, read by dispatch_stats()
};

// ---- Master -----------------------------------------------------------------------

Master::Master(transport::Context& context, MasterConfig config,
               std::shared_ptr<KeyValueStore> cache)
    : ServerTemplate(context, config.server, std::move(cache)), config_(std::move(config)) {
  register_inbound(std::make_unique<MasterInbound>(*this, config_.pull_address), "dispatch");
  auto dispatch = std::make_unique<DispatchPart>(*this);
  dispatch_ = dispatch.get();
  register_outbound(std::move(dispatch), "outbound", config_.messages);
  register_outbound(PubService("outbound", config_.pub_address));
  if (config_.shared_thread) {
    auto shared = share_thread({"inbound", "dispatch", "outbound"});
    (void)shared;  // cannot fail: the three parts were just registered, once each
  }
}

void Master::scatter(const MessageView&, Emitter& out) { out.emit_same(); }
void Master::gather(const MessageView&, Emitter& out) { out.emit_same(); }
void Master::handle_stream(const MessageView&, StreamEdit&) {}

DispatchStats Master::dispatch_stats() const noexcept { return dispatch_->snapshot(); }

std::string Master::stats_extra() const {
  const DispatchStats s = dispatch_stats();
  return fmt::format(
      "dispatch workers.shm={} workers.tcp={} in_flight={} dispatched.shm={} dispatched.tcp={} "
      "dispatched.pylm={} results.shm={} results.tcp={} results.pylm={} duplicates={} redispatched={}",
      s.workers_shm, s.workers_tcp, s.in_flight, s.dispatched_shm, s.dispatched_tcp, s.dispatched_pylm,
      s.results_shm, s.results_tcp, s.results_pylm, s.duplicates, s.redispatched);
}
std::vector<WorkerLoad> Master::worker_loads() const { return dispatch_->loads(); }

std::string Master::pull_address() const {
  auto* p = dynamic_cast<InboundPart*>(part("inbound"));
  return p != nullptr ? p->address() : std::string{};
}
std::string Master::pub_address() const {
  auto* p = dynamic_cast<OutboundPart*>(part("outbound"));
  return p != nullptr ? p->address() : std::string{};
}
std::string Master::dispatch_address() const { return dispatch_->dispatch_address(); }
std::string Master::worker_push_address() const { return dispatch_->pylm_push_address(); }
std::string Master::worker_pull_address() const { return dispatch_->pylm_pull_address(); }

std::map<std::string, std::string> Master::cache_presets() {
  return {{"name", name()},
          {"db_address", db_address()},
          {"pull_address", pull_address()},
          {"pub_address", pub_address()},
          {"worker_pull_address", worker_pull_address()},
          {"worker_push_address", worker_push_address()}};
}

}  // namespace palm::servers
