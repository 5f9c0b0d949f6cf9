// The client's side of the master bypass (bypass.hpp): setting it up, and
// the loop of job / job_in_place / eval through it.
#include <unistd.h>

#include <algorithm>
#include <string>

#include <fmt/format.h>

#include "client_internal.hpp"
#include "palm/servers/client.hpp"

namespace palm::servers {

using detail::Clock;
using detail::kCancelSlice;

void Client::open_bypass() {
  std::string why;
  if (push_->scheme() != transport::Scheme::kShm) {
    why = "the master is reached over " + std::string(transport::to_string(push_->scheme())) +
          ", not shared memory";
  } else if (!db_) {
    why = "this_config: the master's cache is not asked";
  } else if (auto offered = db_->get(kBypassKey, options_.timeout); !offered) {
    why = "asking the master's cache: " + offered.error().describe();
  } else if (*offered != "1") {
    why = "the master does not offer it";
  }
  if (!why.empty()) {
    logger_->info("Client {}: no bypass: {}", uuid_.substr(0, 8), why);
    return;
  }
  // Sized as the segments of the client's Context (ContextOptions::shm).
  auto dispatcher = BypassDispatcher::create(fmt::format("palm-bypass-{}-{}", ::getpid(), uuid_.substr(0, 8)),
                                             ctx_->options().shm, options_.bypass_cores);
  if (!dispatcher) {
    logger_->warn("Client {}: no bypass: {}", uuid_.substr(0, 8), dispatcher.error().describe());
    return;
  }
  const std::string& address = (*dispatcher)->address();
  const auto payload = std::as_bytes(std::span(address.data(), address.size()));
  if (auto sent = send_one(kBypassFunction, payload, {}, Clock::now() + options_.timeout); !sent) {
    logger_->warn("Client {}: no bypass: asking the master: {}", uuid_.substr(0, 8), sent.error().describe());
    return;
  }
  counters_.sent.fetch_sub(1, std::memory_order_relaxed);  // not a message of the caller's (relaxed: a statistic)
  bypass_ = std::move(*dispatcher);
  logger_->info("Client {}: bypass at {}: the master's workers attach to it", uuid_.substr(0, 8), address);
}

bool Client::bypass_ready() {
  if (!bypass_) return false;
  // Results of a call that ended early, and workers that joined meanwhile.
  const BypassDispatcher::OnResult stale = stale_result();
  bypass_->poll(stale);
  if (bypass_->workers() > 0) return true;
  if (bypass_waited_) return false;
  bypass_waited_ = true;  // the workers attach once, right after connect: wait for them once
  const auto deadline = Clock::now() + options_.bypass_wait;
  for (auto now = Clock::now(); now < deadline && bypass_->workers() == 0 && !cancelled(); now = Clock::now()) {
    if (bypass_->wait(std::min<Clock::duration>(deadline - now, kCancelSlice), stale) == WaitResult::kShutdown) {
      break;
    }
  }
  if (bypass_->workers() > 0) return true;
  logger_->warn("Client {}: no worker joined the bypass within {} ms: calls go through the master",
                uuid_.substr(0, 8), options_.bypass_wait.count());
  return false;
}

Result<std::uint64_t> Client::run_bypass(std::string_view function, const Make& make, const OnDelivery& on_reply,
                                         std::uint64_t messages) {
  BypassDispatcher& bp = *bypass_;
  bp.abandon();  // what a call that ended early left
  const std::uint64_t window = std::max<std::uint32_t>(options_.window, 1);
  // No more in flight than keeps one worker per core busy (busy_window):
  // with more workers than cores, a wider window only wakes more of them.
  const auto room = [&] { return std::min<std::uint64_t>(window, std::max<std::uint64_t>(bp.busy_window(), 1)); };
  JobState job(messages);
  Frame pending;  // built, not yet taken by a worker
  std::uint64_t pending_id = 0;
  transport::Delivery d;
  const BypassDispatcher::OnResult on_result = [&](Frame& frame) {
    d.frame = std::move(frame);
    if (on_reply(d, true)) ++job.got;
    d.frame.reset();
  };
  const std::function<std::string()> stalled = [&] {
    return job.stalled(function, " through the bypass at " + bp.address(), options_.timeout,
                       fmt::format(" ({} workers attached)", bp.workers()));
  };

  while (!job.finished()) {
    bool progressed = bp.poll(on_result) > 0;
    // Messages of a worker that left go first; then new ones, while the
    // window has room and a worker has credit.
    bool blocked = !bp.resend();
    while (!blocked && !job.done_sending && bp.in_flight() < room()) {
      if (!pending) {
        pending_id = bp.next_id();
        auto made = make(pending, Target{&bp.pool(), bp.slot(), pending_id});
        if (!made) return tl::unexpected(std::move(made.error()));
        if (*made == Made::kDone) {
          job.done_sending = true;
          break;
        }
      }
      if (!bp.send(pending, pending_id)) {
        blocked = true;
        break;
      }
      ++job.sent;
      counters_.sent.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
      progressed = true;
    }
    if (job.finished()) break;
    // Sleep on the dispatcher's doorbell: every result, credit and join
    // rings it.
    const auto slice = after_round(job, progressed, Clock::duration::max(), stalled);
    if (!slice) return tl::unexpected(std::move(slice.error()));
    if (*slice == Clock::duration::zero()) continue;
    const WaitResult w = bp.wait(*slice, on_result);
    if (w == WaitResult::kReady) {
      job.last_progress = Clock::now();
    } else if (w == WaitResult::kShutdown) {
      return make_error(Errc::kClosed, fmt::format("the bypass at {} closed during job '{}' after {} replies",
                                                   bp.address(), function, job.got));
    }
  }
  return job.got;
}

BypassStats Client::bypass_stats() {
  std::lock_guard lock(call_mu_);
  if (!bypass_) return {};
  // Joins and leaves since the last call count.
  bypass_->poll(stale_result());
  return bypass_->stats();
}

BypassDispatcher::OnResult Client::stale_result() {
  return [this](Frame&) {
    counters_.stale.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  };
}

}  // namespace palm::servers
