#include "palm/servers/bypass.hpp"

#include <algorithm>
#include <chrono>
#include <thread>
#include <utility>

#include "feed_busiest.hpp"

namespace palm::servers {

using transport::Delivery;
using transport::Envelope;
using transport::Event;
using transport::PeerId;
using transport::SendResult;

namespace {
constexpr int kBatch = 64;  // deliveries taken per poll
// Results of one worker this close together: it serves faster than a
// wake-up costs here (DESIGN.md: ~27 µs), so waking another worker for
// the next messages costs more than queueing them at this one.

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

Result<std::unique_ptr<BypassDispatcher>> BypassDispatcher::create(std::string segment,
                                                                    const shm::HostOptions& options, unsigned cores) {
  auto host = shm::Host::create(segment, options);
  if (!host) return tl::unexpected(std::move(host.error()));
  auto ep = host->bind(transport::Pattern::kDispatcher, "dispatch");
  if (!ep) return tl::unexpected(std::move(ep.error()));
  std::string address = "shm://" + segment + "/dispatch";
  return std::unique_ptr<BypassDispatcher>(
      new BypassDispatcher(std::move(*host), std::move(*ep), std::move(address),
                           cores != 0 ? cores : std::max(1u, std::thread::hardware_concurrency())));
}

BypassDispatcher::BypassDispatcher(shm::Host host, std::unique_ptr<shm::ShmEndpoint> endpoint,
                                   std::string address, unsigned cores)
    : host_(std::move(host)),
      endpoint_(std::move(endpoint)),
      address_(std::move(address)),
      batch_(kBatch),
      cores_(cores) {}

BypassDispatcher::~BypassDispatcher() {
  // Our references go back before the endpoint (and its view of the pool).
  inflight_ = IdTable<InFlight>();
  retry_.clear();
  batch_.clear();
  endpoint_.reset();
  host_.shutdown();  // the workers see the segment go and end their threads
}

BlockPool& BypassDispatcher::pool() const noexcept { return endpoint_->pool(); }
SlotId BypassDispatcher::slot() const noexcept { return endpoint_->slot(); }

BypassDispatcher::Worker* BypassDispatcher::find(PeerId peer) noexcept {
  for (Worker& w : workers_) {
    if (w.peer == peer) return &w;
  }
  return nullptr;
}

void BypassDispatcher::take(Delivery& d, const OnResult& on_result, std::int64_t& now) {
  switch (d.event) {
    case Event::kPeerJoined:
      workers_.push_back(Worker{d.peer, d.credits, 0, d.credits});
      break;
    case Event::kCredit:
      if (Worker* w = find(d.peer)) w->credits += d.credits;
      break;
    case Event::kPeerGone: {
      std::erase_if(workers_, [&](const Worker& w) { return w.peer == d.peer; });
      for (const std::uint64_t id : inflight_.ids()) {
        InFlight* e = inflight_.find(id);
        if (e->worker != d.peer) continue;
        retry_.push_back(Retry{std::move(e->frame), id});
        inflight_.erase(id);
        ++stats_.redispatched;
      }
      // Oldest last: resend pops from the back.
      std::sort(retry_.begin(), retry_.end(), [](const Retry& a, const Retry& b) { return a.id > b.id; });
      break;
    }
    case Event::kMessage: {
      Worker* w = find(d.peer);
      if (w != nullptr) {
        w->credits += d.credits;
        if (now == 0) now = now_ns();
        detail::note_result(*w, now, w->held);
      }
      const FrameView* view = d.frame.peek();
      InFlight* e = view != nullptr ? inflight_.find(view->message.dispatch_id) : nullptr;
      if (e == nullptr) {  // answered already (sent twice), or not ours
        ++stats_.duplicates;
        return;
      }
      if (Worker* holder = e->worker == d.peer ? w : find(e->worker)) --holder->held;
      inflight_.erase(view->message.dispatch_id);
      ++stats_.results;
      on_result(d.frame);
      break;
    }
  }
}

std::size_t BypassDispatcher::poll(const OnResult& on_result) {
  // One lock of the endpoint for the batch, not one per delivery.
  const std::size_t n = endpoint_->try_recv_batch(batch_.data(), batch_.size());
  std::int64_t now = 0;  // one clock read for the batch (take)
  for (std::size_t i = 0; i < n; ++i) {
    take(batch_[i], on_result, now);
    batch_[i].frame.reset();  // a reply not taken by on_result is released now, not at the next poll
  }
  return n;
}

WaitResult BypassDispatcher::wait(std::chrono::nanoseconds timeout, const OnResult& on_result) {
  Delivery d;
  const WaitResult w = endpoint_->recv_for(d, timeout);
  std::int64_t now = 0;
  if (w == WaitResult::kReady) take(d, on_result, now);
  return w;
}

bool BypassDispatcher::send_to(Worker& w, Frame& frame, std::uint64_t id) {
  auto keep = frame.share_unviewed();  // seldom read: a view would be copied at every move
  if (!keep) return false;
  Envelope to;
  to.peer = w.peer;
  if (endpoint_->try_send(frame, to) != SendResult::kQueued) {
    // kNoCredit, kFull; or kPeerGone, whose event follows: skip it until
    // its credits come back.
    w.credits = 0;
    return false;
  }
  --w.credits;
  ++w.held;
  ++stats_.dispatched;
  inflight_.put(id, InFlight{w.peer, std::move(*keep)});
  return true;
}

bool BypassDispatcher::send(Frame& frame, std::uint64_t id) {
  for (std::size_t tries = 0; tries < workers_.size(); ++tries) {
    Worker* w = detail::feed_the_busiest(
        workers_, [](Worker& x) { return &x; }, [](const Worker& x) { return x.held; },
        [](const Worker& x) { return detail::run_of(x); });
    if (w == nullptr) return false;
    if (send_to(*w, frame, id)) return true;
  }
  return false;
}

bool BypassDispatcher::resend() {
  while (!retry_.empty()) {
    Retry& r = retry_.back();
    if (!send(r.frame, r.id)) return false;
    retry_.pop_back();
  }
  return true;
}

void BypassDispatcher::abandon() noexcept {
  if (inflight_.empty() && retry_.empty()) return;
  inflight_ = IdTable<InFlight>();
  retry_.clear();
  for (Worker& w : workers_) w.held = 0;
}

std::uint64_t BypassDispatcher::busy_window() const noexcept {
  std::uint64_t sum = 0;
  const std::size_t n = std::min<std::size_t>(cores_, workers_.size());
  for (std::size_t i = 0; i < n; ++i) sum += workers_[i].offered;
  return sum;
}

BypassStats BypassDispatcher::stats() const noexcept {
  BypassStats s = stats_;
  s.workers = workers_.size();
  return s;
}

}  // namespace palm::servers
