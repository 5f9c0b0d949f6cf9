#pragma once
// The master bypass (DESIGN.md "The farm", Bypass): a client on the master's
// host feeds the master's palm workers directly over shared memory, when
// the master's scatter and gather are the identity. The master then carries
// no per-message work; each message crosses two hand-offs instead of four.
//
// How it is set up:
//   1. A master that allows it (MasterConfig::bypass; only a master whose
//      hooks are pylm's defaults may) presets `__palm.bypass` = "1" in its
//      cache.
//   2. A client that wants it (ClientOptions::bypass), connected to that
//      master over shm, creates a segment of its own,
//      palm-bypass-<pid>-<client uuid prefix>, with one kDispatcher service
//      (a BypassDispatcher), and sends the master one message of function
//      `__palm.bypass` whose payload is that address.
//   3. The master hands that message to each palm worker on shm, now and as
//      workers join (it keeps the last kMaxBypassClients addresses). Each
//      worker attaches a kWorker endpoint to the client's dispatcher and
//      serves it on a thread of its own, under the lock its master's work is
//      served under: its methods still run one at a time. It answers the
//      message to give the master its credit back; the master drops it.
//   4. The client's job, job_in_place and single-reply eval send to the
//      workers that joined its dispatcher, as a master would: against
//      credits, the busiest worker first, each message kept in an in-flight
//      table by its dispatch id until its result comes; a worker that
//      leaves or dies has its messages sent again (at least once), a result
//      whose id is not in the table is dropped and counted (exactly once).
//      Unlike the master, the client knows its workers share its host: it
//      keeps in flight no more than the credits of one worker per core
//      (busy_window), and lets a worker that answers fast hold all its
//      credits, so with more workers than cores the others sleep.
//   When no worker joined within ClientOptions::bypass_wait, the call goes
//   through the master as usual (logged once).
//
// What the master does not see of bypassed messages: its counters, its
// `messages` limit, its gather and handle_stream (the identity: a result
// reaches the client as the worker sent it) and the `cache` uuid it stamps
// on messages without one (the client's field goes as given).
//
// Lifetime: the segment is the client's; it is removed with the client.
// Workers see it go (their endpoint is shut down) and end that thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/logger.h>

#include "palm/core/error.hpp"
#include "palm/core/frame.hpp"
#include "palm/core/id_table.hpp"
#include "palm/transport/endpoint.hpp"
#include "palm/transport/shm/host.hpp"

namespace palm::servers {

// The master's cache key ("1": bypass allowed) and the function of the
// message that asks for it (its payload: the client's dispatcher address).
inline constexpr std::string_view kBypassKey = "__palm.bypass";
inline constexpr std::string_view kBypassFunction = "__palm.bypass";
// Bypass addresses a master keeps for the workers that join later.
inline constexpr std::size_t kMaxBypassClients = 32;

struct BypassStats {
  std::uint64_t dispatched = 0;   // messages sent to workers (resent ones too)
  std::uint64_t results = 0;      // results taken from the table
  std::uint64_t duplicates = 0;   // results dropped: their message was answered already
  std::uint64_t redispatched = 0; // messages sent again: their worker left
  std::uint64_t workers = 0;      // workers attached now
};

// The client's side: one kDispatcher on a segment of its own. Not
// thread-safe (the Client serializes its calls).
class BypassDispatcher {
 public:
  // Creates segment `segment` (sized by `options`: a Context's
  // ContextOptions::shm) and binds its "dispatch" service. `cores`: how
  // many workers to keep busy at most (busy_window); 0 = this host's cores.
  [[nodiscard]] static Result<std::unique_ptr<BypassDispatcher>> create(std::string segment,
                                                                         const shm::HostOptions& options,
                                                                         unsigned cores = 0);
  ~BypassDispatcher();
  BypassDispatcher(const BypassDispatcher&) = delete;  // owns the segment
  BypassDispatcher& operator=(const BypassDispatcher&) = delete;

  // shm://SEGMENT/dispatch: what workers attach to.
  const std::string& address() const noexcept { return address_; }
  // Where to build messages: they cross to the workers without a copy.
  BlockPool& pool() const noexcept;
  SlotId slot() const noexcept;

  // A result of a message in flight, taken from the table (the frame as
  // the worker sent it).
  using OnResult = std::function<void(Frame&)>;
  // Takes what arrived (joins, credits, leaves, results) without waiting:
  // the number of deliveries taken.
  std::size_t poll(const OnResult& on_result);
  // Waits up to `timeout` for one delivery and takes it.
  WaitResult wait(std::chrono::nanoseconds timeout, const OnResult& on_result);

  // A fresh dispatch id: the next message's (nonzero, never reused).
  std::uint64_t next_id() noexcept { return ++last_id_; }
  // Sends `frame`, whose dispatch_id is `id`, to a worker with credit: the
  // first (in joining order) holding fewer than kRun, else the one holding
  // fewest. False, `frame` untouched, when no worker has credit now.
  bool send(Frame& frame, std::uint64_t id);
  // Sends again what workers that left held: true once none is waiting.
  bool resend();

  // Forgets the messages in flight and waiting to be sent again (a call
  // that ended early left them): their results, if they come, are counted
  // as duplicates.
  void abandon() noexcept;

  // How many messages in flight keep the workers busy without waking more
  // of them than this host has cores: the credits of the first workers (in
  // joining order), one per core. The client sends no more than this.
  std::uint64_t busy_window() const noexcept;

  std::size_t workers() const noexcept { return workers_.size(); }
  std::size_t in_flight() const noexcept { return inflight_.size(); }
  BypassStats stats() const noexcept;

 private:
  struct Worker {
    transport::PeerId peer = transport::PeerId::kNone;
    std::uint32_t credits = 0;
    std::uint32_t held = 0;
    std::uint32_t offered = 0;  // the credits it joined with
    // When its last result came (its poll's time: take), and the time
    // since the one before: a worker whose results come close together is
    // fast, and may hold all its credits before the next worker is used
    // (feed_busiest.hpp).
    std::int64_t last_result_ns = 0;
    std::int64_t gap_ns = INT64_MAX;
    bool busy = false;  // it held others at its last result (note_result)
  };
  struct InFlight {
    transport::PeerId worker = transport::PeerId::kNone;
    Frame frame;  // a second reference, to send it again (unviewed: Frame::share_unviewed)
  };
  struct Retry {
    Frame frame;
    std::uint64_t id = 0;
  };
  BypassDispatcher(shm::Host host, std::unique_ptr<shm::ShmEndpoint> endpoint, std::string address,
                   unsigned cores);
  // Takes one delivery. `now`: when the results of this poll came (ns of
  // steady_clock), read at its first result (0 until then): one clock read
  // a batch. A worker's results taken in one batch are then 0 apart: they
  // queued at this client, so the worker keeps ahead of it, and is fast
  // (Worker::gap_ns) for as long as it does.
  void take(transport::Delivery& d, const OnResult& on_result, std::int64_t& now);
  Worker* find(transport::PeerId peer) noexcept;
  Worker* pick() noexcept;
  bool send_to(Worker& w, Frame& frame, std::uint64_t id);

  shm::Host host_;
  std::unique_ptr<shm::ShmEndpoint> endpoint_;
  std::string address_;
  std::vector<Worker> workers_;  // in joining order; a handful
  IdTable<InFlight> inflight_;
  std::vector<Retry> retry_;     // sent first, oldest last (popped from the back)
  std::vector<transport::Delivery> batch_;  // poll's, reused (kBatch)
  std::uint64_t last_id_ = 0;
  BypassStats stats_;
  unsigned cores_ = 1;
};

}  // namespace palm::servers
