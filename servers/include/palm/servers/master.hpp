#pragma once
// Master: pylm's Master (FEATURES.md section 1) with palm's per-worker
// dispatch (DESIGN.md "The farm"), a composition of three parts:
//
//   "inbound"   PullService on pull_address (+ shm): scatter, then stamps each
//               message (a uuid4 `cache` when empty, as pylm; palm's
//               dispatch_id)                                 -> route "dispatch"
//   "dispatch"  picks a worker per message and takes its results:
//                 palm workers on shm    kDispatcher shm://SEGMENT/dispatch
//                 palm workers on tcp    kDispatcher on dispatch_address
//                 pylm workers           PUSH worker_push_address, PULL
//                                        worker_pull_address
//               then gather and handle_stream               -> route "outbound"
//   "outbound"  PubService on pub_address (+ shm)
//
// With MasterConfig::bypass, local clients may feed the palm workers on shm
// directly (bypass.hpp); the master then only hands them the workers.
//
// Threads: one for the three parts (they share it: a message crosses no
// thread boundary inside the master; MasterConfig::shared_thread), the cache
// thread, the Context's bridge and the segment's monitor.
//
// Dispatch. A palm worker offers credits (messages it may hold); the master
// sends to a worker only against a credit, so it knows what each holds. pylm
// workers share one PUSH socket: they get work only while one is connected
// (EndpointStats::connections) and at most `pylm_credits` at a time. Work is
// admitted from the inbound route only while fewer than `window` messages
// are in flight and the results have room to go: the master never blocks on
// an outbound channel, so it cannot deadlock under backpressure.
//
// Delivery. Every dispatched message has a dispatch id, kept with a
// reference to its frame in the in-flight table until its result comes. A
// result whose id is not in the table (a late duplicate) is dropped and
// counted: a client gets each result once. A palm worker that leaves or dies
// (Event::kPeerGone) has its messages sent again; a pylm worker's message
// that has not come back after `pylm_timeout` is sent again (pylm workers
// cannot be watched). Execution is therefore at least once.
//
// Published results carry what gather emitted (pylm publishes the message
// gather received; palm publishes what it yields: PROTOCOL.md), under the
// topic handle_stream picks, without palm's dispatch id.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "palm/servers/parts.hpp"
#include "palm/servers/server.hpp"
#include "palm/servers/server_template.hpp"
#include "palm/transport/auto_select.hpp"

namespace palm::servers {

struct MasterConfig {
  ServerOptions server;
  std::string pull_address;         // bound: clients push here
  std::string pub_address;          // bound: results are published here
  std::string worker_pull_address;  // bound: pylm workers push results here
  std::string worker_push_address;  // bound: pylm workers pull work here
  // Bound for palm workers on tcp; "" = the host of worker_push_address,
  // port chosen ("tcp://HOST:*"). Announced as __palm.dispatch.
  std::string dispatch_address;
  bool pipelined = false;
  std::uint64_t messages = 0;       // stop after publishing this many results; 0 = never
  std::uint32_t window = 512;       // messages in flight to workers at most
  std::uint32_t pylm_credits = 32;  // of those, to pylm workers at most
  std::chrono::milliseconds pylm_timeout{30000};
  // Offer the bypass (bypass.hpp): local clients feed the palm workers on
  // shm directly. Only for a master whose scatter, gather and
  // handle_stream are the defaults (the bypassed messages skip them); it
  // is also off when pipelined or with a `messages` limit.
  bool bypass = false;
  // inbound, dispatch and outbound on one thread (false: a thread each, so
  // a slow scatter or gather does not hold the others back).
  bool shared_thread = true;
};

// The dispatch counters, a snapshot of relaxed loads.
struct DispatchStats {
  std::uint64_t dispatched_shm = 0, dispatched_tcp = 0, dispatched_pylm = 0;
  std::uint64_t results_shm = 0, results_tcp = 0, results_pylm = 0;
  std::uint64_t duplicates = 0;    // results dropped: their message was answered already
  std::uint64_t redispatched = 0;  // messages sent again (worker gone, pylm timeout)
  std::uint64_t workers_shm = 0, workers_tcp = 0;  // palm workers attached now
  std::uint64_t pylm_connections = 0;              // pylm worker sockets connected now
  std::uint64_t in_flight = 0;
};

// A palm worker in the master's dispatch table, and what it holds now.
struct WorkerLoad {
  std::uint64_t worker = 0;     // the master's key: one worker's stay (never reused)
  bool shm = false;             // over shm, else over tcp
  std::uint32_t in_flight = 0;  // messages sent to it, not answered yet
};

class DispatchPart;

class Master : public ServerTemplate {
 public:
  Master(transport::Context& context, MasterConfig config,
         std::shared_ptr<KeyValueStore> cache = nullptr);
  // Stops first: the parts' threads call the hooks below. A subclass that
  // overrides them stops in its own destructor too (or returns from
  // serve(), which stops), since its part of the object goes first.
  ~Master() override { stop(); }

  // `dispatch workers.shm=N workers.tcp=N in_flight=N dispatched.shm=N
  // dispatched.tcp=N dispatched.pylm=N results.shm=N results.tcp=N
  // results.pylm=N duplicates=N redispatched=N` (stats_text's last line).
  std::string stats_extra() const override;

  // pylm's hooks, called on the inbound part's thread (scatter) and the
  // dispatch part's thread (gather, handle_stream). Defaults: the message
  // unchanged; change_payload (parts.hpp) builds a changed one.
  virtual void scatter(const MessageView& message, Emitter& out);
  virtual void gather(const MessageView& message, Emitter& out);
  virtual void handle_stream(const MessageView& message, StreamEdit& edit);

  const MasterConfig& config() const noexcept { return config_; }
  DispatchStats dispatch_stats() const noexcept;
  // The palm workers attached now, each with what it holds: a snapshot
  // (each count exact at some moment). For watching the farm and for fault
  // tests, which kill a worker while it holds messages. Thread-safe; takes
  // a lock the dispatch thread takes only when a worker joins or leaves.
  std::vector<WorkerLoad> worker_loads() const;
  // Addresses in effect once started (ports chosen).
  std::string pull_address() const;
  std::string pub_address() const;
  std::string dispatch_address() const;
  std::string worker_push_address() const;
  std::string worker_pull_address() const;

 protected:
  std::map<std::string, std::string> cache_presets() override;

 private:
  MasterConfig config_;
  DispatchPart* dispatch_ = nullptr;  // owned by the template's parts
};

using transport::kDispatchKey;  // transport/auto_select.hpp

}  // namespace palm::servers
