#include "palm/servers/cache_service.hpp"

#include <utility>

#include "palm/transport/discovery.hpp"

namespace palm::servers {
namespace {

using namespace std::chrono_literals;

// The bound of the cache thread's wait for a request: a backstop, since
// stop() ends it by closing the endpoint.
constexpr auto kRest = std::chrono::seconds(60);

std::string_view text_of(std::span<const std::byte> bytes) noexcept {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// Throttles a per-request log line: the first few, then one in 1000 (the
// counters keep the exact number).
constexpr bool should_log(std::uint64_t occurrence) noexcept {
  return occurrence <= 5 || occurrence % 1000 == 0;
}

// A key for a log line: at most 64 bytes.
std::string_view shown(std::string_view key) noexcept { return key.substr(0, 64); }

}  // namespace

std::optional<std::string_view> cache_instruction(std::string_view function) noexcept {
  const std::size_t dot = function.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  const std::string_view rest = function.substr(dot + 1);
  return rest.substr(0, rest.find('.'));
}

CacheService::CacheService(transport::Context& context, CacheServiceOptions options,
                           std::shared_ptr<KeyValueStore> store,
                           std::shared_ptr<spdlog::logger> logger)
    : context_(&context),
      options_(std::move(options)),
      store_(store ? std::move(store) : std::make_shared<DictDB>()),
      logger_(logger ? std::move(logger) : server_logger(options_.name, options_.log_level)) {}

CacheService::~CacheService() { stop(); }

Result<void> CacheService::start() {
  if (endpoint_ || thread_.joinable()) {
    return make_error(Errc::kInvalidArgument, "the cache service of " + options_.name +
                                                  " is already started");
  }
  auto ep = context_->open(
      transport::EndpointSpec::bind_to(transport::Pattern::kRep, options_.db_address));
  if (!ep) {
    logger_->error("Cache Service: cannot bind {}: {}", options_.db_address,
                   ep.error().describe());
    return tl::unexpected(ep.error());
  }
  endpoint_ = std::move(*ep);
  address_ = endpoint_->address();
  {
    const std::lock_guard lock(done_mutex_);
    finished_ = false;
  }
  thread_ = std::thread([this] { run(); });
  logger_->debug("Cache Service: serving on {}", address_);
  return {};
}

void CacheService::stop() noexcept {
  // Relaxed: a flag the cache thread re-reads at each wake-up; closing the
  // endpoint below wakes it at once anyway.
  stop_.store(true, std::memory_order_relaxed);
  if (endpoint_) endpoint_->close();
  if (thread_.joinable()) thread_.join();
}

bool CacheService::finished() const noexcept {
  const std::lock_guard lock(done_mutex_);
  return finished_;
}

bool CacheService::wait_finished(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(done_mutex_);
  return done_cv_.wait_for(lock, timeout, [this] { return finished_; });
}

void CacheService::preset_cache(const std::map<std::string, std::string>& values) {
  for (const auto& [key, value] : values) store_->set(key, value);
}

CacheStats CacheService::stats() const noexcept {
  // Relaxed loads: independent counters, a snapshot (see CacheStats).
  const auto load = [](const std::atomic<std::uint64_t>& c) {
    return c.load(std::memory_order_relaxed);
  };
  CacheStats s;
  s.requests = load(counters_.requests);
  s.sets = load(counters_.sets);
  s.gets = load(counters_.gets);
  s.deletes = load(counters_.deletes);
  s.others = load(counters_.others);
  s.errors = load(counters_.errors);
  s.refused = load(counters_.refused);
  // endpoint_ is set before the thread starts and reset by no one after.
  if (endpoint_) s.undecodable = endpoint_->stats().malformed;
  return s;
}

std::string CacheService::fault(std::string_view what) {
  // Relaxed: a stat counter.
  const std::uint64_t n = counters_.errors.fetch_add(1, std::memory_order_relaxed) + 1;
  if (should_log(n)) {
    logger_->warn("Cache Service: {}; answered b'' ({} so far)", what, n);
  }
  return {};
}

std::string CacheService::refuse(std::string_view instruction, std::string_view key) {
  // Relaxed: a stat counter.
  const std::uint64_t n = counters_.refused.fetch_add(1, std::memory_order_relaxed) + 1;
  if (should_log(n)) {
    logger_->warn("Cache Service: refused {} of reserved key {}; answered b'' ({} so far)",
                     instruction, shown(key), n);
  }
  return {};
}

void CacheService::provide(std::string key, std::function<std::string()> value) {
  const std::lock_guard lock(providers_mutex_);
  providers_.insert_or_assign(std::move(key), std::move(value));
}

std::string CacheService::handle(const MessageView& request) {
  const auto bump = [](std::atomic<std::uint64_t>& c) {
    c.fetch_add(1, std::memory_order_relaxed);  // relaxed: a stat counter
  };
  const std::optional<std::string_view> instruction = cache_instruction(request.function);
  if (!instruction) {
    bump(counters_.others);
    return fault("a function without '.' (" + std::string(shown(request.function)) + ")");
  }
  if (*instruction == "set") {
    bump(counters_.sets);
    std::string key =
        request.cache.empty() ? transport::make_uuid4() : std::string(request.cache);
    if (reserved_.is_reserved(key)) return refuse("set", key);
    store_->set(key, std::string(text_of(request.payload)));
    logger_->debug("Cache Service: Set key {}", shown(key));
    return key;
  }
  if (*instruction == "get") {
    bump(counters_.gets);
    const std::string_view key = text_of(request.payload);
    if (!is_valid_utf8(key)) return fault("get of a key that is not utf-8");
    logger_->debug("Cache Service: Get key {}", shown(key));
    {
      const std::lock_guard lock(providers_mutex_);
      if (auto it = providers_.find(key); it != providers_.end()) return it->second();
    }
    std::optional<std::string> value = store_->get(key);
    if (!value) return {};  // pylm: b'' for a missing key (not a fault)
    return std::move(*value);
  }
  if (*instruction == "delete") {
    bump(counters_.deletes);
    const std::string_view key = text_of(request.payload);
    if (!is_valid_utf8(key)) return fault("delete of a key that is not utf-8");
    if (reserved_.is_reserved(key)) return refuse("delete", key);
    if (!store_->remove(key)) {
      return fault("delete of a missing key (" + std::string(shown(key)) + ")");
    }
    logger_->debug("Cache Service: Delete key {}", shown(key));
    return std::string(key);
  }
  bump(counters_.others);
  logger_->debug("Cache Service: unknown instruction {}", shown(*instruction));
  return {};
}

void CacheService::serve(transport::Delivery& request) noexcept {
  std::string reply;
  try {
    auto view = request.frame.view();
    reply = view ? handle(view->message)
                 : fault("a request frame that does not view (" + view.error().describe() + ")");
  } catch (const std::exception& e) {
    // A store that throws (a user's KeyValueStore, bad_alloc): still answer.
    reply = fault(std::string("the store failed: ") + e.what());
  }
  request.frame.reset();
  auto frame = context_->raw(std::string_view(reply));
  if (!frame) {
    fault("no frame for the reply (" + frame.error().describe() + ")");
    return;
  }
  // Counted before the reply is queued, so that whoever holds the reply
  // reads it counted; taken back if the reply is not sent. Relaxed: a stat
  // counter, ordered for the client by the reply's own delivery.
  counters_.requests.fetch_add(1, std::memory_order_relaxed);
  const transport::SendResult sent = endpoint_->send_for(
      *frame, options_.reply_timeout, transport::Envelope{request.peer, transport::Body::kRaw});
  if (sent != transport::SendResult::kQueued) {
    counters_.requests.fetch_sub(1, std::memory_order_relaxed);
    fault(std::string("the reply was not sent (") + transport::to_string(sent) + ")");
  }
}

void CacheService::run() noexcept {
  std::uint64_t served = 0;
  transport::Delivery d;
  // Relaxed: see stop().
  while (!stop_.load(std::memory_order_relaxed)) {
    if (options_.messages != 0 && served >= options_.messages) {
      logger_->info("Cache Service: served {} requests, its messages limit; stopping", served);
      break;
    }
    // stop() closes the endpoint, which ends this wait (kShutdown): no
    // periodic look at stop_ is needed.
    const WaitResult w = endpoint_->recv_for(d, kRest);
    if (w == WaitResult::kShutdown) break;
    if (w != WaitResult::kReady) continue;
    if (d.event != transport::Event::kMessage) continue;
    serve(d);
    ++served;
  }
  // Unbind: requests past the limit are not answered (as pylm), and a
  // requester's REQ is not left queued at a socket nobody reads.
  endpoint_->close();
  {
    const std::lock_guard lock(done_mutex_);
    finished_ = true;
  }
  done_cv_.notify_all();
}

}  // namespace palm::servers
