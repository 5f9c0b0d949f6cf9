#pragma once
// A part: one thread of a server, with its endpoints, its route (an input
// ring in the server's Router) and its counters (pylm's parts; FEATURES.md
// section 3). ServerTemplate (server_template.hpp) opens, starts and stops
// them; the high-level servers are compositions of parts.
//
// The thread sleeps on the part's one doorbell, which its endpoints (through
// Endpoint::set_doorbell) and its route (Router pushes) ring. With a shm
// endpoint that doorbell is the endpoint's own, in the segment
// (ShmEndpoint::doorbell()), since other processes ring it. It spins a few
// microseconds with sched_yield, then sleeps on the futex (DESIGN.md
// "Waiting"). request_stop rings it too, so an idle server sleeps until
// something happens; only timed work (a drain's deadline, a backlog, a
// part's wants_ticks) wakes it every `poll`.
//
// Shared threads: a part may host others (host(guest), before open): they
// run on its thread, in turn, and sleep on one doorbell. Their shm services
// share one doorbell in the segment (EndpointSpec::shm_share_bell_with) and
// a route between two of them hands a message over without a wake-up; a
// push into such a route never waits (the consumer cannot run meanwhile):
// what does not fit waits in the pusher's backlog, and the pusher takes no
// new work until it drained. A busy master (inbound, dispatch, outbound)
// then crosses no thread boundary of its own per message.
//
// Kinds (pylm's names):
//   inbound   takes messages from outside (its endpoints) and pushes them
//             into its route; with `block` it waits for the feedback of what
//             it pushed and answers with it (RepService)
//   outbound  takes messages from its own route, sends them out or turns
//             them into feedback; feedback goes to the route the item names
//             (a blocking inbound part) or else to the part's own `route`
//   bypass    outside the router: its own thread and endpoints only

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/logger.h>

#include "palm/core/doorbell.hpp"
#include "palm/core/error.hpp"
#include "palm/core/frame.hpp"
#include "palm/servers/cache.hpp"
#include "palm/servers/counters.hpp"
#include "palm/servers/router.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/endpoint.hpp"

namespace palm::servers {

class ServerTemplate;

enum class PartKind : std::uint8_t { kInbound, kOutbound, kBypass };

// What a part gets from its server when it opens.
struct PartEnv {
  transport::Context* context = nullptr;
  Router* router = nullptr;
  spdlog::logger* logger = nullptr;
  KeyValueStore* cache = nullptr;
  ServerTemplate* server = nullptr;
  std::string server_name;
  std::string db_address;  // the server's cache, for connections that auto-select
  // The server's shm segment ("" when it serves no shm peers): a service
  // binds shm://SEGMENT/<part name> beside its tcp address.
  std::string segment;
  std::chrono::milliseconds poll{100};
};

class Part {
 public:
  explicit Part(std::string name) : name_(std::move(name)) {}
  virtual ~Part();
  Part(const Part&) = delete;  // owns a thread and endpoints
  Part& operator=(const Part&) = delete;

  const std::string& name() const noexcept { return name_; }
  PartKind kind() const noexcept { return kind_; }

  // The counters, readable from any thread while the part runs.
  PartStats stats() const;

  // Wiring, set by ServerTemplate::register_* before start.
  void wire(PartKind kind, std::string route, bool block, std::uint64_t messages) {
    kind_ = kind;
    route_name_ = std::move(route);
    block_ = block;
    messages_limit_ = messages;
  }
  const std::string& route_name() const noexcept { return route_name_; }

  // Runs `guest` on this part's thread (both before open; a guest hosts no
  // one, and has one host).
  void host(Part& guest);
  bool hosted() const noexcept { return host_ != nullptr; }
  bool hosting() const noexcept { return !guests_.empty(); }

  // Called by the server in order: open (endpoints; the routes exist),
  // share_bell (a host, once its guests are open too), start (the thread;
  // nothing for a guest), request_stop (any thread), join (this part ended;
  // a host's thread is joined with its last member), close (endpoints).
  [[nodiscard]] Result<void> open(const PartEnv& env);
  void share_bell();
  void start();
  void request_stop() noexcept;
  void join() noexcept;
  void close() noexcept;
  bool finished() const noexcept { return finished_.load(std::memory_order_acquire); }

  // The doorbell the part's thread sleeps on: its own, or the shared one of
  // its shm endpoint (rung by other processes), once open.
  Doorbell& bell() noexcept { return *wait_bell_; }
  RouteId input() const noexcept { return input_; }
  void set_input(RouteId input) noexcept { input_ = input; }

  // Keys this part asks its server to preset in the cache (addresses, shm
  // services), filled by open.
  const std::map<std::string, std::string>& announcements() const noexcept { return announce_; }
  // One line per endpoint: what it is and the transport carrying it.
  const std::vector<std::string>& transports() const noexcept { return transports_; }

 protected:
  // Opens the part's endpoints (env_ is set).
  [[nodiscard]] virtual Result<void> on_open() = 0;
  // Does a bounded batch of work; true if it did any. Called on the part's
  // thread only.
  virtual bool step() = 0;
  // After stop was requested: a last bounded batch (drain what is queued).
  virtual bool drain() { return step(); }
  // True while step() has work due by the clock (nothing rings for it): the
  // thread then wakes every env().poll. Otherwise it sleeps until rung.
  virtual bool wants_ticks() const noexcept { return false; }
  virtual void on_close() noexcept {}

  // Opens `pattern` bound on `tcp_address` (if not empty) and, when the
  // server has a segment and shm carries the pattern, on
  // shm://SEGMENT/<name>; announces __palm.shm:<port> for the pair.
  // Attaches the part's doorbell to both. Returns the tcp address in effect.
  // `shm_service` names the shm service ("" = the part's name); with_shm
  // false binds the tcp address only (pylm's worker sockets).
  [[nodiscard]] Result<std::string> bind_service(transport::Pattern pattern,
                                                 const std::string& tcp_address,
                                                 bool with_shm = true,
                                                 const std::string& shm_service = {});
  // Opens `pattern` connected to `address`: shm or tcp by auto-selection
  // (through the server's cache at `db_address`, PALM_TRANSPORT) for a tcp
  // address when `db_address` is given, else as the address says.
  [[nodiscard]] Result<void> connect_to(transport::Pattern pattern, const std::string& address,
                                        const std::string& db_address = {},
                                        std::vector<std::string> subscriptions = {});

  // Sends `frame` into the part's route (inbound) or feedback route,
  // waiting (bounded by stop) for room: backpressure on the sender. False if
  // the part is stopping (the frame is then released). Into a route read on
  // this part's own thread it never waits: see "Shared threads".
  bool emit(Frame& frame, RouteId to, RouteId reply_to = kNoRoute, std::uint64_t token = 0,
            std::int64_t since_ns = 0);
  // The route named by wire(); kNoRoute if none.
  RouteId target() const noexcept { return target_; }
  bool block() const noexcept { return block_; }
  bool stopping() const noexcept { return stop_.load(std::memory_order_relaxed); }
  // Counts a message served against the part's messages limit; true once
  // the limit is reached (the part then stops taking work).
  bool count_message() noexcept;
  bool limit_reached() const noexcept {
    return messages_limit_ != 0 && served_ >= messages_limit_;
  }
  // Messages the part may still take before its limit: at most `batch`.
  std::size_t room_before_limit(std::size_t batch) const noexcept {
    if (messages_limit_ == 0) return batch;
    return served_ >= messages_limit_ ? 0 : static_cast<std::size_t>(std::min<std::uint64_t>(batch, messages_limit_ - served_));
  }

  const PartEnv& env() const noexcept { return env_; }
  Router& router() const noexcept { return *env_.router; }
  spdlog::logger& logger() const noexcept { return *env_.logger; }

  std::vector<std::unique_ptr<transport::Endpoint>> endpoints_;
  PartCounters counters_;
  std::map<std::string, std::string> announce_;
  std::vector<std::string> transports_;

 private:
  struct Backlogged {
    Frame frame;
    RouteId to = kNoRoute;
    RouteId reply_to = kNoRoute;
    std::uint64_t token = 0;
    std::int64_t since_ns = 0;
  };

  void run() noexcept;
  // One turn of this part on its thread: a step, or a drain once stopping,
  // or the end. `alive` is set while the part has not finished. True if it
  // did any work.
  bool tick(bool& alive) noexcept;
  bool guarded(bool draining) noexcept;
  // Pushes the backlog on; true once it is empty.
  bool flush_backlog(bool& did) noexcept;
  void finish() noexcept;
  Part& leader() noexcept { return host_ != nullptr ? *host_ : *this; }
  bool read_on_this_thread(RouteId route) noexcept;

  std::string name_;
  PartKind kind_ = PartKind::kBypass;
  std::string route_name_;
  bool block_ = false;
  std::uint64_t messages_limit_ = 0;
  std::uint64_t served_ = 0;  // the part's thread only
  PartEnv env_;
  RouteId input_ = kNoRoute;
  RouteId target_ = kNoRoute;
  std::thread thread_;
  Part* host_ = nullptr;
  std::vector<Part*> guests_;
  // The host's: the first shm service its thread's parts bound, whose
  // doorbell the others share.
  std::string shm_bell_service_;
  std::deque<Backlogged> backlog_;     // the thread that runs the part only
  std::int64_t drain_deadline_ns_ = 0;  // idem; 0 until stopping
  Doorbell bell_;
  Doorbell* wait_bell_ = &bell_;
  // The longest sleep: 1 ms when messages can arrive without ringing
  // wait_bell_ (more than one shm endpoint), else kRest (every event rings:
  // endpoints, routes, request_stop, a shm owner's death); env_.poll while
  // there is timed work (Part::run). kRest is a safety net, not a poll: a
  // wake-up missed anywhere would otherwise stall the part until it (one
  // job in a loaded CI round stalled 20 s with a 60 s rest: not reproduced
  // in 60 runs since, cause unknown); an idle part wakes this rarely.
  static constexpr std::chrono::milliseconds kRest{5'000};
  std::chrono::milliseconds wait_cap_{kRest};
  // stop_: set by request_stop (any thread), read by the part's thread at
  // each wake-up; relaxed, the doorbell ring that follows is the wake-up.
  std::atomic<bool> stop_{false};
  // finished_: release by the part's thread as it ends, acquire by readers.
  std::atomic<bool> finished_{false};
  // running_: a host's thread runs. Set before the thread starts, cleared
  // (release) as it ends; join() of a member polls it (acquire), so a part
  // whose thread never started is not waited for.
  std::atomic<bool> running_{false};
};

}  // namespace palm::servers
