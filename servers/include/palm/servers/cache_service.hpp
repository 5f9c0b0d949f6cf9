#pragma once
// CacheService: the key-value service every server offers on `db_address`
// (PROTOCOL.md "Cache service"; pylm's parts.services.CacheService), over a
// kRep endpoint (REQ/REP on the wire, any number of requesters).
//
// A request is a PalmMessage; the instruction is `function.split('.')[1]`:
//
//   set     key = `cache`, or a new uuid4 if empty; value = `payload`;
//           reply: the key (utf-8)
//   get     key = `payload` (utf-8); reply: the value, b'' if missing or empty
//   delete  key = `payload` (utf-8); reply: the key
//   else    reply: b''
//
// palm always answers; where pylm's cache thread dies (the requester hangs),
// palm replies b'', logs a WARNING and counts an error: `delete` of a
// missing key, a `function` without '.', a key that is not utf-8. An
// undecodable request never reaches the service: the kRep endpoint answers
// it b'' itself (counted in CacheStats::undecodable). A set or delete of a
// reserved key (cache.hpp ReservedKeys) is refused the same way
// (CacheStats::refused). Logs go to the server's logger (log.hpp), pylm's
// "Cache Service: ..." lines at DEBUG.
//
// The `messages` limit (pylm's start(cache_messages=N)): after answering N
// requests the service stops serving and closes its endpoint (unbinds):
// later requests get no answer, as with pylm. 0 = no limit.
//
// Threads: start() starts one thread, "the cache thread", which receives
// requests, runs them against the store and queues the replies; ZeroMQ work
// happens on the Context's bridge thread (context.hpp). The cache thread
// sleeps until a request comes; stop() closes the endpoint, which wakes it,
// and returns within about the reply timeout. Other members may be
// called from any thread: the store and the reserved keys have their own
// locks, counters are atomics.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include <spdlog/logger.h>

#include "palm/core/codec.hpp"
#include "palm/core/error.hpp"
#include "palm/servers/cache.hpp"
#include "palm/servers/log.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/endpoint.hpp"

namespace palm::servers {

struct CacheServiceOptions {
  std::string name;        // the server's name: its logger's name
  std::string db_address;  // bound; tcp://127.0.0.1:* picks a port (address())
  std::uint64_t messages = 0;  // requests to answer before stopping; 0 = no limit
  LogLevel log_level = LogLevel::kInfo;  // for the server_logger(name) made if none given
  std::chrono::milliseconds reply_timeout{1000};  // the longest a reply waits for queue room
};

// Counters, a snapshot of relaxed loads (each exact at some moment).
struct CacheStats {
  std::uint64_t requests = 0;     // requests answered (the messages limit counts these)
  std::uint64_t sets = 0;         // by instruction (counted whether served or refused)
  std::uint64_t gets = 0;
  std::uint64_t deletes = 0;
  std::uint64_t others = 0;       // any other instruction, or none
  std::uint64_t errors = 0;       // faults answered b'' (missing key on delete, no '.',
                                  // a key that is not utf-8, a reply that failed)
  std::uint64_t refused = 0;      // set/delete of a reserved key
  std::uint64_t undecodable = 0;  // requests the endpoint answered b'' itself
};

// What a request asks, with pylm's rule: the text between the first '.' and
// the next ('' if the function ends there); nullopt without a '.'.
std::optional<std::string_view> cache_instruction(std::string_view function) noexcept;

class CacheService {
 public:
  // Does not bind: start() does. `store` defaults to a new DictDB; `logger`
  // to server_logger(options.name, options.log_level).
  CacheService(transport::Context& context, CacheServiceOptions options,
               std::shared_ptr<KeyValueStore> store = nullptr,
               std::shared_ptr<spdlog::logger> logger = nullptr);
  CacheService(const CacheService&) = delete;  // owns a thread and an endpoint
  CacheService& operator=(const CacheService&) = delete;
  ~CacheService();  // stop()

  // Binds the kRep endpoint on db_address and starts the cache thread.
  // Errors: those of Context::open (kSystem "address in use", ...);
  // kInvalidArgument if already started. Blocks (bounded) for the bind.
  [[nodiscard]] Result<void> start();
  // Stops the cache thread and closes the endpoint. Idempotent; blocks for
  // at most about reply_timeout. Not to be called from the cache
  // thread.
  void stop() noexcept;
  // True once the cache thread has ended (messages limit, stop, shutdown).
  bool finished() const noexcept;
  // Waits up to `timeout` for finished(). Thread-safe.
  bool wait_finished(std::chrono::milliseconds timeout) const;

  // The bound address (the port chosen for tcp://host:*); empty before start.
  const std::string& address() const noexcept { return address_; }
  const std::string& name() const noexcept { return options_.name; }

  // Sets keys as they are, reserved ones included (pylm's preset_cache).
  // Thread-safe; may be called before or after start().
  void preset_cache(const std::map<std::string, std::string>& values);
  // `key`'s value, computed by `value` at each get (a server's live
  // counters): nothing is stored, so set/delete cannot reach it when the
  // key is reserved. Called on the cache thread: `value` must be safe there
  // and outlive the service's thread (stop() first). Thread-safe.
  void provide(std::string key, std::function<std::string()> value);
  // The keys the wire may not change ("__palm..." by default).
  ReservedKeys& reserved() noexcept { return reserved_; }
  KeyValueStore& store() noexcept { return *store_; }
  spdlog::logger& logger() noexcept { return *logger_; }

  CacheStats stats() const noexcept;

  // Answers one request: what the cache thread does for each (exposed for
  // tests and for parts that serve the cache over another socket). Counts it
  // by instruction and fault; CacheStats::requests and the messages limit
  // count only what the cache thread answers. Thread-safe.
  std::string handle(const MessageView& request);

 private:
  void run() noexcept;
  void serve(transport::Delivery& request) noexcept;
  std::string fault(std::string_view what);
  std::string refuse(std::string_view instruction, std::string_view key);

  transport::Context* context_;
  CacheServiceOptions options_;
  std::shared_ptr<KeyValueStore> store_;
  std::shared_ptr<spdlog::logger> logger_;
  ReservedKeys reserved_;
  mutable std::mutex providers_mutex_;
  std::map<std::string, std::function<std::string()>, std::less<>> providers_;  // under providers_mutex_
  std::unique_ptr<transport::Endpoint> endpoint_;  // set by start(), before the thread
  std::string address_;                            // set by start(), before the thread
  std::thread thread_;                             // start() and stop() only

  // Set by stop(), read by the cache thread at each wake-up (relaxed: only
  // a flag; the endpoint's close wakes the thread as well).
  std::atomic<bool> stop_{false};
  // finished_ is written by the cache thread last, under done_mutex_, and
  // read by wait_finished under it (the lock orders everything).
  mutable std::mutex done_mutex_;
  mutable std::condition_variable done_cv_;
  bool finished_ = false;  // under done_mutex_

  // Stat counters: relaxed (independent counts, read as a snapshot).
  struct Counters {
    std::atomic<std::uint64_t> requests{0}, sets{0}, gets{0}, deletes{0}, others{0}, errors{0},
        refused{0};
  };
  Counters counters_;
};

}  // namespace palm::servers
