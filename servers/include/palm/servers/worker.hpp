#pragma once
// Worker: pylm's Worker (FEATURES.md section 1) for a pylm Master or a palm
// Master. It takes messages from its master, runs the method the current
// step names, and sends each message back with only its payload replaced.
//
// How a worker finds its master (palm's convention):
//   - It asks the master's cache (db_address, REQ/REP, as "_") for
//     `__palm.dispatch`. A palm master presets it to "tcp://HOST:PORT", the
//     address of its kDispatcher endpoint (ROUTER/DEALER with credits,
//     endpoint.hpp). A HOST of "0.0.0.0" or "*" means "the master's host":
//     the worker uses the host of db_address instead (the same rule applies
//     to every address the cache gives).
//   - No push/pull address given and `__palm.dispatch` non-empty: palm
//     dispatch mode (Mode::kPalmDispatch). One kWorker endpoint opened with
//     open_auto (auto_select.hpp) offering WorkerOptions::credits: shared
//     memory when the master published `__palm.host` and
//     `__palm.shm:<dispatch port>` and shares this host, else tcp. Work
//     arrives on it and each result goes back on it returning one credit.
//   - Otherwise pylm mode (Mode::kPylm: a pylm master, which publishes no
//     palm keys, or addresses given): a kPull connected to the master's
//     worker_push_address and a kPush connected to its worker_pull_address
//     (each asked from the cache with "_.get" unless given), both opened
//     with open_auto as well (a pylm master: tcp). A non-tcp address (ipc,
//     inproc, shm) is opened as it is.
//
// Per message: step = current_step(function, stage), method =
// worker_method(step) (step.hpp), looked up in the MethodTable and called
// with the message, the worker's logger and its master's cache. The result
// is the received message with only the payload replaced (every other
// field kept: dispatch_id, flags, unknown fields); Output::same() sends the
// received frame itself. Anything that keeps a message from being served
// (no such method, a step without '.', a stage out of range, a method that
// throws or returns Output::none()) is answered with payload b"0"
// (kFailurePayload, what a pylm master expects) and palm's `error` field set
// to a one-line reason; it is logged at ERROR (repeats of one reason
// throttled), counted by kind, and the worker goes on.
//
// Threads: run() serves on the caller's thread; the Context's threads carry
// the bytes. With a palm master that offers the bypass (bypass.hpp), one
// thread per local client that feeds this worker directly; messages are
// still served one at a time (serve_mu_), and run() ends them before it
// returns. set/get/remove and stats() may be
// called from any thread (the cache client serializes its requests; the
// counters are atomics). stop() may be called from any thread; it is not
// async-signal-safe by contract (a signal handler sets its own flag, or a
// thread waits for the signal with sigwait and calls stop(): what the
// `palm worker` command does).
//
// Waits: an idle worker sleeps until something happens: a message, stop()
// (which interrupts its endpoints' waits), the limit reached by a bypass
// thread, its master's death (DeathWatch) or shutdown; a rest of 5 s is
// the only safety net. Over ZeroMQ it also looks at its connection to the
// master every `poll` (master_timeout). Every send is a send_for of at
// most `poll`, retried while not stopped. A master that goes away is
// detected on shared memory (the segment is shut down or its owner dies):
// run() logs one line and returns kPeerDead. On tcp in pylm mode there is
// nothing to detect (pylm's worker waits for ever too): run() keeps
// waiting until stop() or the limit.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <spdlog/logger.h>

#include "palm/core/error.hpp"
#include "palm/core/frame.hpp"
#include "palm/servers/bypass.hpp"
#include "palm/servers/cache.hpp"
#include "palm/servers/log.hpp"
#include "palm/servers/method.hpp"
#include "palm/transport/auto_select.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/discovery.hpp"
#include "palm/transport/endpoint.hpp"
#include "palm/transport/shm/host_identity.hpp"

namespace palm::servers {

using transport::kDispatchKey;  // transport/auto_select.hpp

struct WorkerOptions {
  std::string name;            // "" -> a uuid4 (pylm); the logger's name
  std::string db_address;      // the master's cache; required (kInvalidArgument otherwise)
  std::string push_address;    // where results go (the master's worker_pull_address); "" = ask
  std::string pull_address;    // where work comes from (the master's worker_push_address); "" = ask
  std::uint64_t messages = 0;  // stop after this many messages answered; 0 = no limit
  std::uint32_t credits = 16;  // palm dispatch: messages in flight from the master (at least 1)
  std::optional<shm::TransportMode> transport;  // nullopt: PALM_TRANSPORT / auto
  LogLevel log_level = LogLevel::kInfo;
  std::chrono::milliseconds discovery_timeout{5000};  // each cache request
  // How often an idle worker on ZeroMQ looks at its connection to the
  // master (master_timeout), and how long a blocked send waits before it
  // tries again. Idle waits on shm sleep until an event: stop() wakes them.
  std::chrono::milliseconds poll{250};
  // On ZeroMQ (tcp, ipc): run() ends with kPeerDead once the connection to
  // the master stayed down this long (its process died, its machine went
  // silent past the heartbeats); a master back within it gets the worker's
  // hello again. 0: wait for ever. (On shm the master's death is seen at
  // once: its pid.)
  std::chrono::milliseconds master_timeout{5000};
};

// Messages that could not be served, by why (each answered b"0" unless the
// result could not be built or sent).
struct WorkerErrors {
  std::uint64_t unknown_method = 0;  // no method of that name
  std::uint64_t bad_step = 0;        // a step without '.', a stage out of range
  std::uint64_t method_threw = 0;    // the method threw
  std::uint64_t no_result = 0;       // the method returned Output::none()
  std::uint64_t lost = 0;            // the result could not be built or sent
  std::uint64_t total() const noexcept {
    return unknown_method + bad_step + method_threw + no_result + lost;
  }
};

// A snapshot of relaxed loads: each value exact at some moment.
struct WorkerStats {
  std::uint64_t messages = 0;   // messages answered (the limit counts these)
  std::uint64_t bytes_in = 0;   // wire bytes of the messages received
  std::uint64_t bytes_out = 0;  // wire bytes of the results sent
  WorkerErrors errors;
  bool connected = false;
  // What carries work in and results out (equal in dispatch mode); valid
  // once connected.
  transport::Scheme receive_scheme = transport::Scheme::kTcp;
  transport::Scheme send_scheme = transport::Scheme::kTcp;
};

class Worker {
 public:
  enum class Mode : std::uint8_t { kPalmDispatch, kPylm };

  // Does no I/O: connect() (or run()) does. `methods` is read-only from here.
  Worker(transport::Context& ctx, WorkerOptions options, MethodTable methods);
  Worker(const Worker&) = delete;  // owns endpoints and a cache client
  Worker& operator=(const Worker&) = delete;
  ~Worker();

  // Asks the cache where the master is and opens the endpoints (see the
  // header comment); logs the transport of each at INFO. Blocks (bounded by
  // discovery_timeout per request and the Context's command timeout).
  // Errors: kInvalidArgument (no db_address, credits 0, a bad address; a
  // PALM_TRANSPORT=shm refusal), kTimeout (the cache did not answer),
  // kNotFound (the cache has no worker addresses: not a master), what
  // opening returns. Idempotent once it succeeded. Not thread-safe against
  // run().
  [[nodiscard]] Result<void> connect();
  // Serves until the messages limit (ok), stop() (ok), or the master is
  // gone (kPeerDead, shm only). Connects first if connect() was not
  // called. Blocks, on the caller's thread.
  [[nodiscard]] Result<void> run();
  // Asks run() to return: wakes its waits (Endpoint::interrupt). Thread-
  // safe; not async-signal-safe by contract (see the header comment).
  void stop() noexcept;

  // The master's cache, as pylm's Worker.set/get/delete: set(value, key)
  // returns the key (a uuid4 the cache made if `key` is empty); get the
  // value (b"" if missing); remove the key. Blocks (bounded by
  // discovery_timeout); thread-safe. Errors: kTimeout, what connecting
  // the cache client returns.
  [[nodiscard]] Result<std::string> set(std::span<const std::byte> value, std::string_view key = {});
  [[nodiscard]] Result<std::string> get(std::string_view key);
  [[nodiscard]] Result<std::string> remove(std::string_view key);

  WorkerStats stats() const noexcept;
  // One line naming each endpoint, its address and transport (what
  // connect() logs); empty before connect(). Call after connect() returned.
  std::string transport_summary() const;
  const std::string& name() const noexcept { return name_; }
  const std::string& uuid() const noexcept { return uuid_; }
  // Valid once connect() succeeded.
  Mode mode() const noexcept { return mode_.load(std::memory_order_acquire); }
  spdlog::logger& logger() const noexcept { return *logger_; }

 private:
  class RemoteCache;

  Result<transport::DiscoveryClient*> cache_client();
  Result<std::string> request(std::string_view instruction, std::string_view cache,
                              std::span<const std::byte> payload);
  Result<std::unique_ptr<transport::Endpoint>> open_to(transport::EndpointSpec spec);
  enum class Fault : std::uint8_t { kUnknownMethod, kBadStep, kMethodThrew, kNoResult, kLost };
  // Serves one received message, its result sent on `back`; `dead` set if
  // the master (or the bypass's client) is gone. Under serve_mu_ while a
  // bypass thread lives (run() alone needs none).
  void serve_one(Frame& received, bool& dead, transport::Endpoint& back);
  // Sends `frame` on `ep`, retrying each `poll` until stop(); false if it
  // could not (logged, counted), `dead` set if the peer is gone.
  bool send_result(Frame& frame, bool& dead, transport::Endpoint& ep);
  // The bypass (bypass.hpp): serve the client's dispatcher at `address` on
  // a thread of its own (run()'s thread starts and ends them).
  void start_bypass(std::string address);
  void serve_bypass(const std::string& address);
  void end_bypass() noexcept;
  // On ZeroMQ: kPeerDead once the connection to the master stayed down for
  // master_timeout. Looked at when a wait for work times out (idle): off
  // the message path.
  struct MasterWatch {
    std::chrono::steady_clock::time_point connected_at;  // last seen connected
    std::uint64_t taken = 0;                              // messages taken then
  };
  Result<void> master_gone(MasterWatch& watch, std::uint64_t taken);
  // Counts a fault and logs it at ERROR, throttled per reason.
  void fail(Fault fault, std::string_view function, const std::string& reason);
  // "tcp://0.0.0.0:P" and "tcp://*:P" -> the db_address's host.
  std::string resolve(const std::string& address) const;

  transport::Context* ctx_;
  WorkerOptions options_;
  MethodTable methods_;  // read-only after construction
  // The last function served and what it resolved to: a farm's stream
  // calls one function, and resolving it (split the step, hash the name)
  // was ~250 instructions of a worker's ~1000 a message (callgrind). Only
  // serve_one touches it, and serve_one runs one at a time (see there).
  struct LastMethod {
    std::string function;
    std::int64_t stage = 0;
    std::size_t at = 0, size = 0;  // the method's name within `function`
    const Method* fn = nullptr;    // nullptr: nothing remembered
  } last_method_;
  std::string uuid_;
  std::string name_;
  std::shared_ptr<spdlog::logger> logger_;
  std::unique_ptr<RemoteCache> remote_cache_;  // the Call::cache of every method

  // The cache client: made by the first caller of cache_client(), under
  // cache_mutex_ (DiscoveryClient serializes its own requests after that).
  std::mutex cache_mutex_;
  std::optional<transport::DiscoveryClient> cache_;  // under cache_mutex_ until set

  // Written by connect(), read by run() (the same thread, or ordered by
  // the caller's join).
  std::unique_ptr<transport::Endpoint> in_;   // work arrives here
  std::unique_ptr<transport::Endpoint> out_;  // pylm mode: results go here (dispatch: in_)
  std::string summary_;
  // Release by connect() after the endpoints are set, acquire by readers
  // of mode()/stats(): they then see the schemes.
  std::atomic<Mode> mode_{Mode::kPylm};
  std::atomic<bool> connected_{false};
  std::atomic<transport::Scheme> receive_scheme_{transport::Scheme::kTcp};
  std::atomic<transport::Scheme> send_scheme_{transport::Scheme::kTcp};

  // Set by stop(), looked at by run() at each wake-up; stop() then wakes
  // every endpoint of wake_ (Endpoint::interrupt).
  std::atomic<bool> stop_{false};
  // The endpoints whose waits stop() and the bypass's end must end: in_,
  // out_ and each bypass thread's (registered while it lives).
  std::mutex wake_mu_;
  std::vector<transport::Endpoint*> wake_;  // under wake_mu_
  void wake_all() noexcept;
  void wake_on_stop(transport::Endpoint* ep, bool add);

  // Messages taken (the `messages` limit), by run() and the bypass threads.
  std::atomic<std::uint64_t> taken_{0};
  // One message served at a time, whoever sent it: the methods, fail()'s
  // throttle and the counters' order need no more care than in pylm. Taken
  // by the bypass threads, and by run() while there are any.
  std::mutex serve_mu_;
  // The bypass's threads: run()'s thread only. `done` is set when one ends.
  struct BypassThread {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<BypassThread> bypass_threads_;
  std::atomic<bool> bypass_stop_{false};  // run() is returning

  // Repeated identical errors: logged at most once a second per reason,
  // with the count of the ones not logged. run()'s thread only.
  struct Throttle {
    std::chrono::steady_clock::time_point last;
    std::uint64_t suppressed = 0;
  };
  std::map<std::string, Throttle, std::less<>> throttle_;

  // Stat counters (relaxed: independent counts, read as a snapshot).
  struct Counters {
    std::atomic<std::uint64_t> messages{0}, bytes_in{0}, bytes_out{0}, unknown_method{0},
        bad_step{0}, method_threw{0}, no_result{0}, lost{0};
  };
  Counters counters_;
};

}  // namespace palm::servers
