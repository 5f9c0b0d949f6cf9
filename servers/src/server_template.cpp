#include "palm/servers/server_template.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "palm/transport/auto_select.hpp"
#include "palm/transport/shm/host_identity.hpp"

namespace palm::servers {

std::string segment_name(std::string_view name, std::string_view db_address) {
  const auto colon = db_address.rfind(':');
  const auto port = colon == std::string_view::npos ? std::string_view{} : db_address.substr(colon + 1);
  std::string out = fmt::format("palm-{}-{}", name.substr(0, 160), port);
  for (char& c : out) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) c = '_';
  }
  return out;
}

ServerTemplate::ServerTemplate(transport::Context& context, ServerOptions options,
                               std::shared_ptr<KeyValueStore> cache)
    : context_(&context),
      options_(std::move(options)),
      store_(cache ? std::move(cache) : std::make_shared<DictDB>()),
      logger_(server_logger(options_.name, options_.log_level)) {
  CacheServiceOptions cache_options;
  cache_options.name = options_.name;
  cache_options.db_address = options_.db_address;
  cache_options.messages = options_.cache_messages;
  cache_options.log_level = options_.log_level;
  cache_service_ = std::make_unique<CacheService>(context, cache_options, store_, logger_);
}

ServerTemplate::~ServerTemplate() { stop(); }

Part& ServerTemplate::add(std::unique_ptr<Part> part, PartKind kind, std::string route, bool block,
                          std::uint64_t messages) {
  part->wire(kind, std::move(route), block, messages);
  parts_.push_back(std::move(part));
  return *parts_.back();
}

Part& ServerTemplate::register_inbound(std::unique_ptr<Part> part, std::string route, bool block,
                                       std::uint64_t messages) {
  return add(std::move(part), PartKind::kInbound, std::move(route), block, messages);
}
Part& ServerTemplate::register_outbound(std::unique_ptr<Part> part, std::string route,
                                        std::uint64_t messages) {
  return add(std::move(part), PartKind::kOutbound, std::move(route), false, messages);
}
Part& ServerTemplate::register_bypass(std::unique_ptr<Part> part, std::uint64_t messages) {
  return add(std::move(part), PartKind::kBypass, {}, false, messages);
}

Result<void> ServerTemplate::share_thread(const std::vector<std::string>& part_names) {
  if (started_) return make_error(Errc::kInvalidArgument, fmt::format("server '{}' already started", name()));
  std::vector<Part*> members;
  for (const auto& n : part_names) {
    Part* p = part(n);
    if (p == nullptr) return make_error(Errc::kNotFound, fmt::format("server '{}' has no part '{}'", name(), n));
    if (p->hosted() || (!members.empty() && p->hosting()) || std::find(members.begin(), members.end(), p) != members.end()) {
      return make_error(Errc::kInvalidArgument, fmt::format("part '{}' shares a thread already", n));
    }
    members.push_back(p);
  }
  for (std::size_t i = 1; i < members.size(); ++i) members.front()->host(*members[i]);
  return {};
}

void ServerTemplate::preset_cache(const std::map<std::string, std::string>& values) {
  cache_service_->preset_cache(values);
}

PartEnv ServerTemplate::env() const {
  PartEnv e;
  e.context = context_;
  e.router = const_cast<Router*>(&router_);
  e.logger = logger_.get();
  e.cache = store_.get();
  e.server = const_cast<ServerTemplate*>(this);
  e.server_name = options_.name;
  e.db_address = options_.db_address;
  e.segment = segment_;
  e.poll = options_.poll;
  return e;
}

Result<void> ServerTemplate::start() {
  if (started_) return make_error(Errc::kInvalidArgument, fmt::format("server '{}' already started", name()));
  started_ = true;
  // Every part that is not a bypass reads a route named after itself:
  // outbound parts their work, blocking inbound parts their feedback.
  for (auto& part : parts_) {
    if (part->kind() == PartKind::kBypass) continue;
    auto route = router_.add(part->name(), options_.route_capacity, &part->bell());
    if (!route) return tl::unexpected(std::move(route.error()));
    part->set_input(*route);
  }
  if (auto r = cache_service_->start(); !r) return r;
  options_.db_address = cache_service_->address();
  if (options_.shm) segment_ = segment_name(options_.name, options_.db_address);

  const auto fail = [this](Error error) -> Result<void> {
    for (auto& part : parts_) part->close();
    cache_service_->stop();
    return tl::unexpected(std::move(error));
  };
  const PartEnv part_env = env();
  std::map<std::string, std::string> presets;
  for (auto& part : parts_) {
    if (auto r = part->open(part_env); !r) return fail(std::move(r.error()));
    for (const auto& [key, value] : part->announcements()) presets[key] = value;
  }
  for (auto& part : parts_) part->share_bell();
  for (auto& [key, value] : cache_presets()) presets[key] = value;
  if (!segment_.empty()) {
    if (auto host = shm::host_identity()) {
      presets[std::string(transport::kHostKey)] = host->to_string();
    } else {
      logger_->warn("no host identity ({}): palm peers will use tcp", host.error().describe());
    }
  }
  cache_service_->preset_cache(presets);
  // Once the parts are open: the provider's mutex orders their endpoints
  // (written above) before the cache thread's reads of them. The service
  // stops (stop(), the destructor) before the parts go.
  cache_service_->provide(std::string(kStatsKey), [this] { return stats_text(); });
  for (const auto& line : transports()) logger_->info("{}", line);
  for (auto& part : parts_) part->start();
  return {};
}

void ServerTemplate::request_stop() noexcept {
  stop_requested_.store(true, std::memory_order_release);
  stop_bell_.ring();
}

bool ServerTemplate::wait(std::chrono::milliseconds timeout) noexcept {
  return stop_bell_.wait_for([this] { return stop_requested(); }, timeout) == WaitResult::kReady;
}

Result<void> ServerTemplate::serve() {
  if (auto r = start(); !r) return r;
  // request_stop rings stop_bell_: the long wait is a backstop only.
  while (!wait(std::chrono::minutes(1))) {
  }
  stop();
  return {};
}

void ServerTemplate::part_finished(Part& part) noexcept {
  if (!stop_requested()) {
    logger_->info("{} finished: the server stops", part.name());
    request_stop();
  }
}

void ServerTemplate::stop() noexcept {
  std::lock_guard lock(stop_mutex_);
  if (stopped_) return;
  stopped_ = true;
  stop_requested_.store(true, std::memory_order_release);
  // Inbound and bypass parts first (no new work), then the outbound ones,
  // which drain their routes (bounded) before they end.
  for (auto& part : parts_) {
    if (part->kind() != PartKind::kOutbound) part->request_stop();
  }
  for (auto& part : parts_) {
    if (part->kind() != PartKind::kOutbound) part->join();
  }
  for (auto& part : parts_) {
    if (part->kind() == PartKind::kOutbound) part->request_stop();
  }
  // Guests first: a host's join then finds every member of its thread
  // finished, and joins the thread itself.
  for (auto& part : parts_) {
    if (part->hosted()) part->join();
  }
  for (auto& part : parts_) {
    if (!part->hosted()) part->join();
  }
  for (auto& part : parts_) part->close();
  cache_service_->stop();
}

std::vector<PartStats> ServerTemplate::stats() const {
  std::vector<PartStats> out;
  for (const auto& part : parts_) out.push_back(part->stats());
  return out;
}

std::string ServerTemplate::stats_text() const {
  std::string out = fmt::format("server {}\n", name());
  const auto us = [](std::chrono::nanoseconds ns) { return (ns.count() + 999) / 1000; };
  for (const auto& s : stats()) {
    fmt::format_to(std::back_inserter(out),
                   "part {} in={} out={} bytes_in={} bytes_out={} errors={} stalls={} queue={} p50_us={} "
                   "p99_us={}\n",
                   s.name, s.messages_in, s.messages_out, s.bytes_in, s.bytes_out, s.errors, s.stalls,
                   s.queue_depth, us(s.latency.quantile(0.5)), us(s.latency.quantile(0.99)));
  }
  if (const std::string extra = stats_extra(); !extra.empty()) out += extra + "\n";
  return out;
}

Part* ServerTemplate::part(std::string_view part_name) const noexcept {
  for (const auto& p : parts_) {
    if (p->name() == part_name) return p.get();
  }
  return nullptr;
}

std::vector<std::string> ServerTemplate::transports() const {
  std::vector<std::string> out;
  out.push_back(fmt::format("cache REP bound on {}", cache_service_->address()));
  for (const auto& part : parts_) {
    for (const auto& line : part->transports()) out.push_back(line);
  }
  return out;
}

}  // namespace palm::servers
