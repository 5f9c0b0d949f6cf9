#include "palm/servers/parts.hpp"

#include <exception>

#include <fmt/format.h>

namespace palm::servers {

using transport::Delivery;
using transport::Endpoint;
using transport::Envelope;
using transport::Event;
using transport::Pattern;
using transport::SendResult;

namespace {
constexpr int kBatch = 32;  // messages per endpoint per step: fairness between endpoints
}

// ---- inbound ------------------------------------------------------------------

// Collects scatter's messages and carries them into the route in order,
// after scatter returned, or in batches of kFlushAt while a long scatter
// runs. Until then the input stays in this thread, so the message scatter
// reads (viewed in the input's block) needs no extra reference; one is
// taken only if the input leaves before scatter ends. A second emit_same
// shares the input (nothing copied).
class InboundPart::Out final : public Emitter {
 public:
  Out(InboundPart& part, Frame& input, std::vector<Emitted>& emitted, RouteId reply_to,
      std::uint64_t token, std::int64_t since)
      : part_(part), input_(input), pool_(input.pool()), slot_(input.slot()), emitted_(emitted),
        reply_to_(reply_to), token_(token), since_(since) {
    emitted_.clear();
  }

  void emit(const MessageView& message) override {
    auto frame = part_.build(message, *pool_, slot_);
    if (!frame) {
      PartCounters::bump(part_.counters_.errors);
      part_.logger().error("{}: a message could not be built: {}", part_.name(),
                           frame.error().describe());
      return;
    }
    add(std::move(*frame), false);
  }
  void emit_same() override {
    if (input_) {
      same_ = emitted_.size();
      add(std::move(input_), true);  // the first time the input itself goes
      return;
    }
    const Frame* same = same_ < emitted_.size() ? &emitted_[same_].frame : kept_ ? &kept_ : nullptr;
    if (same == nullptr) {
      PartCounters::bump(part_.counters_.errors);
      part_.logger().error("{}: emit_same without an input", part_.name());
      return;
    }
    if (auto again = same->share()) add(std::move(*again), true);
  }
  // Pushes what waits; returns how many went into the route in all.
  int flush() {
    for (Emitted& e : emitted_) {
      if (e.same && !part_.restamp(e.frame)) continue;
      Frame& frame = e.frame;
      const auto bytes = frame.wire_bytes();
      if (part_.emit(frame, part_.target(), reply_to_, token_, since_)) {
        ++pushed_;
        PartCounters::bump(part_.counters_.messages_out);
        PartCounters::bump(part_.counters_.bytes_out, bytes);
      }
    }
    emitted_.clear();
    same_ = ~std::size_t{0};
    return pushed_;
  }

 private:
  static constexpr std::size_t kFlushAt = 64;  // bounds the blocks a long scatter holds

  void add(Frame frame, bool same) {
    emitted_.push_back(Emitted{std::move(frame), same});
    if (emitted_.size() < kFlushAt) return;
    // The input leaves while scatter may still read it: keep a reference
    // (which also keeps restamp from rewriting the bytes scatter reads).
    if (same_ < emitted_.size() && !kept_) {
      if (auto k = emitted_[same_].frame.share()) kept_ = std::move(*k);
    }
    flush();
  }

  InboundPart& part_;
  Frame& input_;
  BlockPool* pool_;
  SlotId slot_;
  std::vector<Emitted>& emitted_;
  RouteId reply_to_;
  std::uint64_t token_;
  std::int64_t since_;
  std::size_t same_ = ~std::size_t{0};  // where the input waits in emitted_
  Frame kept_;                          // the input, once it left before scatter ended
  int pushed_ = 0;
};

void InboundPart::scatter(const MessageView&, Emitter& out) { out.emit_same(); }

Result<Frame> InboundPart::build(const MessageView& message, BlockPool& pool, SlotId slot) {
  return Frame::build(pool, slot, message);
}

bool InboundPart::restamp(Frame&) { return true; }

Result<void> InboundPart::on_open() {
  if (address_.bind) {
    auto bound = bind_service(address_.pattern, address_.address);
    if (!bound) return tl::unexpected(std::move(bound.error()));
    bound_ = std::move(*bound);
    return {};
  }
  bound_ = address_.address;
  return connect_to(address_.pattern, address_.address, address_.db_address,
                    address_.subscriptions);
}

bool InboundPart::step() {
  bool did = block() && answer_feedback();
  const std::size_t n = endpoints_.size();
  // A message taken right after another starts when that one ended: the
  // try_recv between them is this message's own cost. Reading the clock
  // took 8 % of a master thread's samples (perf), two of its ~5 reads a
  // message here.
  std::int64_t clock = 0;
  batch_.resize(kBatch);
  for (std::size_t k = 0; k < n && !limit_reached(); ++k) {
    Endpoint& ep = *endpoints_[(next_ + k) % n];
    // Never more than the limit lets it serve: what is taken is served.
    const std::size_t got = ep.try_recv_batch(batch_.data(), room_before_limit(kBatch));
    for (std::size_t i = 0; i < got; ++i) {
      did = true;
      Delivery& d = batch_[i];
      if (d.event == Event::kMessage) take(d, ep, clock);
      d.frame.reset();  // what take did not keep (a frame it could not read)
    }
  }
  next_ = n == 0 ? 0 : (next_ + 1) % n;
  return did;
}

bool InboundPart::drain() {
  // Stopping: no new requests, but answer the ones routed already.
  return block() && answer_feedback();
}

bool InboundPart::take(Delivery& d, Endpoint& from, std::int64_t& clock) {
  const std::int64_t since = clock != 0 ? clock : Router::now_ns();
  clock = 0;  // read again unless this take ends by reading it
  auto view = d.frame.view();
  if (!view) {
    PartCounters::bump(counters_.errors);
    logger().error("{}: an unreadable frame: {}", name(), view.error().describe());
    return false;
  }
  PartCounters::bump(counters_.messages_in);
  PartCounters::bump(counters_.bytes_in, view->wire.size());
  const RouteId reply_to = block() ? input() : kNoRoute;
  const auto token = static_cast<std::uint64_t>(d.peer);
  const MessageView message = view->message;  // valid while the input is in this thread
  Frame input = std::move(d.frame);
  Out out(*this, input, emitted_, reply_to, token, since);
  try {
    scatter(message, out);
  } catch (const std::exception& e) {
    PartCounters::bump(counters_.errors);
    logger().error("{}: scatter failed on '{}': {}", name(), message.function, e.what());
  }
  const int pushed = out.flush();
  if (block() && pushed == 0) {
    // Nothing was routed: answer at once so the requester does not hang.
    if (auto empty = env().context->raw(std::string_view{})) {
      Envelope to;
      to.peer = d.peer;
      to.body = transport::Body::kRaw;
      (void)from.send_for(*empty, env().poll, to);
    }
  }
  count_message();
  clock = Router::now_ns();
  counters_.latency.record(std::chrono::nanoseconds(clock - since));
  return true;
}

bool InboundPart::answer_feedback() {
  bool did = false;
  Routed item;
  for (int i = 0; i < kBatch && router().try_pop(input(), item); ++i) {
    did = true;
    if (endpoints_.empty()) continue;
    Envelope to;
    to.peer = static_cast<transport::PeerId>(item.token);
    to.body = transport::Body::kRaw;
    const SendResult r = endpoints_.front()->send_for(item.frame, env().poll, to);
    if (r != SendResult::kQueued) {
      PartCounters::bump(counters_.errors);
      logger().warn("{}: a reply could not be sent: {}", name(), to_string(r));
    }
  }
  return did;
}

// ---- outbound -----------------------------------------------------------------

Result<void> OutboundPart::on_open() {
  if (address_.address.empty()) return {};  // a part without endpoints (an executor)
  if (address_.bind) {
    auto bound = bind_service(address_.pattern, address_.address);
    if (!bound) return tl::unexpected(std::move(bound.error()));
    bound_ = std::move(*bound);
    return {};
  }
  bound_ = address_.address;
  return connect_to(address_.pattern, address_.address, address_.db_address);
}

bool OutboundPart::step() {
  bool did = false;
  Routed item;
  for (int i = 0; i < kBatch && !limit_reached() && router().try_pop(input(), item); ++i) {
    did = true;
    PartCounters::bump(counters_.messages_in);
    handle(item);
    count_message();
    counters_.latency.record(std::chrono::nanoseconds(Router::now_ns() - item.since_ns));
  }
  return did;
}

void OutboundPart::handle(Routed& item) {
  const std::size_t n = endpoints_.size();
  if (n == 0) {
    feedback(item, item.frame);
    return;
  }
  if (address_.pattern == Pattern::kPub) {
    // Every subscriber, on tcp and on shm, gets it: one more reference per
    // endpoint, nothing copied here. A ZeroMQ pub nobody is connected to is
    // skipped: its queue would only hold blocks until the bridge drops them.
    std::size_t last = n;
    for (std::size_t i = 0; i < n; ++i) {
      const bool idle = transport::is_zmq(endpoints_[i]->scheme()) && endpoints_[i]->stats().connections == 0;
      if (idle) continue;
      if (last != n) {
        if (auto copy = item.frame.share()) send(last, *copy);
      }
      last = i;
    }
    if (last != n) {
      send(last, item.frame);
    } else {
      item.frame.reset();
    }
    return;
  }
  send(next_, item.frame);
  next_ = (next_ + 1) % n;
}

bool OutboundPart::send(std::size_t i, Frame& frame) {
  const auto bytes = frame.wire_bytes();
  int tries_after_stop = 0;
  for (;;) {
    const SendResult r = endpoints_[i]->send_for(frame, env().poll);
    if (r == SendResult::kQueued) {
      PartCounters::bump(counters_.messages_out);
      PartCounters::bump(counters_.bytes_out, bytes);
      return true;
    }
    if (r == SendResult::kTimeout && !(stopping() && ++tries_after_stop > 5)) {
      PartCounters::bump(counters_.stalls);
      continue;
    }
    PartCounters::bump(counters_.errors);
    logger().warn("{}: a message was not sent on {}: {}", name(), endpoints_[i]->address(),
                  to_string(r));
    frame.reset();
    return false;
  }
}

void OutboundPart::feedback(const Routed& origin, Frame& frame) {
  const RouteId to = origin.reply_to != kNoRoute ? origin.reply_to : target();
  if (to == kNoRoute) {
    frame.reset();
    return;
  }
  const auto bytes = frame.wire_bytes();
  if (emit(frame, to, kNoRoute, origin.token, origin.since_ns)) {
    PartCounters::bump(counters_.messages_out);
    PartCounters::bump(counters_.bytes_out, bytes);
  }
}

}  // namespace palm::servers
