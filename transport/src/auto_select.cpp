// open_auto: the cache's answer, choose_transport, then shm or tcp
// (auto_select.hpp).

#include "palm/transport/auto_select.hpp"

#include <atomic>
#include <charconv>
#include <mutex>
#include <set>
#include <utility>

#include "detail/log.hpp"
#include "palm/transport/discovery.hpp"
#include "palm/transport/shm/host.hpp"

namespace palm::transport {

namespace {

// relaxed: statistics, read as snapshots.
std::atomic<std::uint64_t> g_shm{0}, g_tcp{0}, g_fallbacks{0};

// Logs `line` at INFO the first time (address, choice) is decided here.
void log_choice_once(const std::string& address, const char* choice, const std::string& line) {
  static std::mutex mu;
  static std::set<std::pair<std::string, std::string>> logged;
  {
    std::lock_guard lock(mu);
    if (!logged.emplace(address, choice).second) return;
  }
  detail::log().info("{}: {}", address, line);
}

Result<std::unique_ptr<Endpoint>> open_tcp(Context& context, EndpointSpec spec, std::string tcp,
                                           const std::string& why, bool fallback) {
  spec.address = std::move(tcp);
  auto ep = context.open(spec);
  if (!ep) return ep;
  g_tcp.fetch_add(1, std::memory_order_relaxed);
  if (fallback) g_fallbacks.fetch_add(1, std::memory_order_relaxed);
  log_choice_once(spec.address, "tcp", why);
  return ep;
}

}  // namespace

std::string shm_key(std::string_view port) {
  std::string k(kShmKeyPrefix);
  k.append(port);
  return k;
}

std::string ShmService::to_string() const {
  return segment + "/" + service + " " + std::to_string(nonce);
}

Result<ShmService> ShmService::parse(std::string_view text) {
  const auto bad = [&] {
    // (Appended: g++ 12 warns falsely, -Wrestrict, on "literal" + string.)
    std::string m(1, '\'');
    m.append(text).append("' is not an shm service (\"SEGMENT/SERVICE NONCE\")");
    return make_error(Errc::kMalformed, std::move(m));
  };
  const std::size_t space = text.rfind(' ');
  if (space == std::string_view::npos) return bad();
  const std::string_view where = text.substr(0, space);
  const std::string_view nonce = text.substr(space + 1);
  const std::size_t slash = where.find('/');
  if (slash == 0 || slash == std::string_view::npos || slash + 1 == where.size()) return bad();
  ShmService s;
  s.segment = std::string(where.substr(0, slash));
  s.service = std::string(where.substr(slash + 1));
  const auto [end, ec] = std::from_chars(nonce.data(), nonce.data() + nonce.size(), s.nonce);
  if (ec != std::errc{} || end != nonce.data() + nonce.size() || s.nonce == 0) return bad();
  return s;
}

AutoChoiceCounts auto_choice_counts() noexcept {
  AutoChoiceCounts c;
  c.shm = g_shm.load(std::memory_order_relaxed);  // relaxed: statistics
  c.tcp = g_tcp.load(std::memory_order_relaxed);
  c.fallbacks = g_fallbacks.load(std::memory_order_relaxed);
  return c;
}

Result<std::unique_ptr<Endpoint>> open_auto(Context& context, EndpointSpec spec, std::string db_address,
                                            const AutoOptions& options) {
  auto address = Address::parse(spec.address);
  if (!address) return tl::unexpected(std::move(address.error()));
  if (address->scheme != Scheme::kTcp && address->scheme != Scheme::kAuto) {
    return make_error(Errc::kInvalidArgument, "open_auto takes tcp://HOST:PORT or auto://HOST:PORT, not " +
                                                  spec.address);
  }
  const std::size_t colon = address->rest.rfind(':');
  if (colon == std::string::npos || colon + 1 == address->rest.size()) {
    return make_error(Errc::kInvalidArgument, spec.address + " has no port");
  }
  const std::string port = address->rest.substr(colon + 1);
  const std::string tcp = "tcp://" + address->rest;
  if (spec.bind) {
    return make_error(Errc::kInvalidArgument,
                      "open_auto connects; a server binds tcp:// and shm:// and publishes them");
  }
  const Pattern p = spec.pattern;
  if (p != Pattern::kPush && p != Pattern::kPull && p != Pattern::kSub && p != Pattern::kWorker) {
    return make_error(Errc::kInvalidArgument, std::string("open_auto connects push, pull, sub or worker, not ") +
                                                  to_string(p) + " (request/reply stays on tcp://)");
  }
  shm::TransportMode mode = shm::TransportMode::kAuto;
  if (options.mode) {
    mode = *options.mode;
  } else {
    auto m = shm::transport_mode_from_env();
    if (!m) return tl::unexpected(std::move(m.error()));
    mode = *m;
  }
  if (mode == shm::TransportMode::kTcp) return open_tcp(context, spec, tcp, "tcp: mode tcp (PALM_TRANSPORT or the flag)", false);

  // Anything that keeps us from shm: in auto mode, TCP; in shm mode, an
  // error that says what.
  const auto give_up = [&](const std::string& why) -> Result<std::unique_ptr<Endpoint>> {
    if (mode == shm::TransportMode::kShm) {
      return make_error(Errc::kInvalidArgument, "PALM_TRANSPORT=shm but " + tcp + " cannot use shared memory: " + why);
    }
    return open_tcp(context, spec, tcp, "tcp (fallback): " + why, true);
  };

  const auto timeout = options.discovery_timeout.count() > 0 ? options.discovery_timeout
                                                             : context.options().transport.command_timeout;
  std::string host_text, shm_text;
  {
    auto db = DiscoveryClient::connect(context, db_address, options.server_name);
    if (!db) return give_up("the cache at " + db_address + ": " + db.error().describe());
    auto h = db->get(kHostKey, timeout);
    if (!h) return give_up("the cache at " + db_address + ": " + h.error().describe());
    auto s = db->get(shm_key(port), timeout);
    if (!s) return give_up("the cache at " + db_address + ": " + s.error().describe());
    host_text = std::move(*h);
    shm_text = std::move(*s);
  }
  std::optional<shm::HostIdentity> peer;
  if (!host_text.empty()) {
    auto id = shm::HostIdentity::parse(host_text);
    if (!id) return give_up("its published host identity: " + id.error().describe());
    peer = std::move(*id);
  }
  auto local = shm::host_identity();
  if (!local) return give_up("this host's identity: " + local.error().describe());
  std::string why;
  auto choice = shm::choose_transport(mode, *local, peer, &why);
  if (!choice) return make_error(choice.error().code, choice.error().message + " (" + tcp + ")");
  if (*choice == shm::TransportChoice::kTcp) return open_tcp(context, spec, tcp, why, false);

  if (shm_text.empty()) return give_up("the server published no shm service for port " + port);
  auto service = ShmService::parse(shm_text);
  if (!service) return give_up(service.error().describe());
  shm::ConnectOptions o;
  o.service = service->service;
  o.nonce = service->nonce;
  o.credits = spec.credits;
  o.subscriptions = spec.subscriptions;
  o.timeout = context.options().transport.command_timeout;
  auto ep = shm::connect(service->segment, p, o);
  if (!ep) return give_up("attaching to shm://" + service->segment + "/" + service->service + ": " +
                          ep.error().describe());
  g_shm.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  log_choice_once(tcp, "shm", why + " -> shm://" + service->segment + "/" + service->service);
  return std::unique_ptr<Endpoint>(std::move(*ep));
}

}  // namespace palm::transport
