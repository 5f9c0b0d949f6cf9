#pragma once
// ServerTemplate: the low-level API every palm server is built with (pylm's
// parts.servers.ServerTemplate; FEATURES.md section 3). A server is a name,
// a cache service on `db_address`, a Router and parts registered on it:
//
//   register_inbound(part, route, block)  part -> route (with feedback back
//                                         to the part if block)
//   register_outbound(part, route)        route named after the part -> part;
//                                         its feedback -> `route` if given
//   register_bypass(part)                 outside the router
//   preset_cache(keys)                    keys in the cache before it serves
//   start() / serve() / stop()
//
// Threads: one per part (part.hpp) or per group of parts sharing a thread
// (share_thread), the cache thread (cache_service.hpp),
// and the Context's: its ZeroMQ bridge and, when the server serves shared
// memory, the segment's monitor (transport/context.hpp). Nothing else.
//
// Shared memory: unless ServerOptions::shm is off, the server creates the
// segment "palm-<name>-<db port>" and each service binds there beside its
// tcp address; the cache announces __palm.host and __palm.shm:<port> so
// palm peers on this host attach (transport/auto_select.hpp). The segment
// is removed when the server stops (its Context owns it).
//
// Stop: request_stop() (async-signal-safe: an atomic store and a futex
// wake, for SIGINT/SIGTERM handlers) or a part's messages limit ends
// serve(); stop() then stops the inbound parts, lets the outbound ones drain
// (bounded), joins every thread and stops the cache.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "palm/core/doorbell.hpp"
#include "palm/core/error.hpp"
#include "palm/servers/cache.hpp"
#include "palm/servers/cache_service.hpp"
#include "palm/servers/counters.hpp"
#include "palm/servers/log.hpp"
#include "palm/servers/part.hpp"
#include "palm/servers/router.hpp"
#include "palm/transport/context.hpp"

namespace palm::servers {

struct ServerOptions {
  std::string name;
  std::string db_address;            // the cache service's address (bound)
  LogLevel log_level = LogLevel::kInfo;
  std::uint64_t cache_messages = 0;  // pylm's start(cache_messages=N); 0 = no limit
  bool shm = true;                   // serve palm peers of this host over shared memory
  // How often a part with timed work (a drain, a backlog, messages at pylm
  // workers) wakes; idle threads sleep until rung (stop rings them all).
  std::chrono::milliseconds poll{250};
  std::size_t route_capacity = 1024;    // each route's ring (a power of two)
};

// The cache key under which every server answers its live counters
// (stats_text), computed at each get; reserved ("__palm"), so the wire
// cannot set it. `palm stat` reads it.
inline constexpr std::string_view kStatsKey = "__palm.stats";

class ServerTemplate {
 public:
  ServerTemplate(transport::Context& context, ServerOptions options,
                 std::shared_ptr<KeyValueStore> cache = nullptr);
  // stop(). A subclass whose hooks the parts call must stop in its own
  // destructor: by the time this one runs, the subclass is gone.
  virtual ~ServerTemplate();
  ServerTemplate(const ServerTemplate&) = delete;  // owns threads
  ServerTemplate& operator=(const ServerTemplate&) = delete;

  // Registration, before start(). `messages`: the part stops after that many
  // (0 = no limit), and the server with it. Returns the part.
  Part& register_inbound(std::unique_ptr<Part> part, std::string route, bool block = false,
                         std::uint64_t messages = 0);
  Part& register_outbound(std::unique_ptr<Part> part, std::string route = {},
                          std::uint64_t messages = 0);
  Part& register_bypass(std::unique_ptr<Part> part, std::uint64_t messages = 0);
  // Runs the named parts (registered already) on one thread, the first's:
  // no hand-off between threads for a message routed among them (part.hpp,
  // "Shared threads"). Before start(). kNotFound for an unknown name,
  // kInvalidArgument for a part already sharing a thread.
  [[nodiscard]] Result<void> share_thread(const std::vector<std::string>& part_names);
  void preset_cache(const std::map<std::string, std::string>& values);

  // Binds the cache, opens every part (binding and connecting), presets the
  // cache (the subclass's keys, palm's announcements), logs the transports
  // and starts the threads. On error nothing is left running.
  [[nodiscard]] Result<void> start();
  // Asks serve() to return. Async-signal-safe; idempotent.
  void request_stop() noexcept;
  bool stop_requested() const noexcept { return stop_requested_.load(std::memory_order_acquire); }
  // Waits up to `timeout` for a stop request; true if there was one.
  bool wait(std::chrono::milliseconds timeout) noexcept;
  // pylm's start(): start(), wait for a stop request, stop().
  [[nodiscard]] Result<void> serve();
  // Stops and joins everything. Idempotent.
  void stop() noexcept;

  const std::string& name() const noexcept { return options_.name; }
  const ServerOptions& options() const noexcept { return options_; }
  KeyValueStore& cache() noexcept { return *store_; }
  spdlog::logger& logger() noexcept { return *logger_; }
  Router& router() noexcept { return router_; }
  transport::Context& context() noexcept { return *context_; }
  CacheService& cache_service() noexcept { return *cache_service_; }
  // The cache's address in effect (tcp port chosen), once started.
  const std::string& db_address() const noexcept { return cache_service_->address(); }
  // The segment name ("" if none).
  const std::string& segment() const noexcept { return segment_; }
  // Each part's counters.
  std::vector<PartStats> stats() const;
  // The counters as text, what a get of kStatsKey answers: a line
  // `server NAME`, then one line a part,
  //   part NAME in=N out=N bytes_in=N bytes_out=N errors=N stalls=N queue=N p50_us=N p99_us=N
  // (latencies: the upper bound of the histogram's bucket, within 2x), then
  // stats_extra()'s line if any. Space-separated key=value tokens. Thread-safe.
  std::string stats_text() const;
  // A line of the server's own key=value tokens for stats_text, without its
  // newline ("" for none): a master's dispatch counters. Called on the cache
  // thread: a class that overrides it stops the server in its own
  // destructor (as Master does), so no call reaches it half destroyed.
  virtual std::string stats_extra() const { return {}; }
  Part* part(std::string_view name) const noexcept;
  // Lines saying what each endpoint is and which transport carries it.
  std::vector<std::string> transports() const;

  // Called by a part's thread as it ends (messages limit or stop).
  virtual void part_finished(Part& part) noexcept;

 protected:
  // What the server presets in its cache, computed at start (a subclass adds
  // the pylm keys of its kind: name, addresses).
  virtual std::map<std::string, std::string> cache_presets() { return {}; }
  PartEnv env() const;

 private:
  Part& add(std::unique_ptr<Part> part, PartKind kind, std::string route, bool block,
            std::uint64_t messages);

  transport::Context* context_;
  ServerOptions options_;
  std::shared_ptr<KeyValueStore> store_;
  std::shared_ptr<spdlog::logger> logger_;
  std::unique_ptr<CacheService> cache_service_;
  Router router_;
  std::vector<std::unique_ptr<Part>> parts_;
  std::string segment_;
  bool started_ = false;
  bool stopped_ = false;
  std::mutex stop_mutex_;  // serializes stop()

  // stop_requested_: release by request_stop (any thread, a signal
  // handler), acquire by wait()/stop_requested(); stop_bell_ wakes wait().
  std::atomic<bool> stop_requested_{false};
  Doorbell stop_bell_;
};

// The segment a server of `name` with its cache on `db_address` creates:
// "palm-<name>-<port>", characters outside [A-Za-z0-9._-] as '_'.
std::string segment_name(std::string_view name, std::string_view db_address);

}  // namespace palm::servers
