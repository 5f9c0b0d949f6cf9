#include "palm/servers/part.hpp"

#include <exception>

#include <fmt/format.h>

#include "palm/servers/server_template.hpp"
#include "palm/transport/auto_select.hpp"
#include "palm/transport/shm/host.hpp"

namespace palm::servers {
namespace {

// The patterns a shm segment serves on the bound side.
constexpr bool shm_serves(transport::Pattern p) noexcept {
  using transport::Pattern;
  return p == Pattern::kPull || p == Pattern::kPush || p == Pattern::kPub ||
         p == Pattern::kDispatcher;
}

std::string_view port_of(std::string_view address) noexcept {
  const auto colon = address.rfind(':');
  return colon == std::string_view::npos ? std::string_view{} : address.substr(colon + 1);
}

}  // namespace

Part::~Part() {
  request_stop();
  join();
  close();
}

PartStats Part::stats() const {
  std::size_t depth = 0;
  if (input_ != kNoRoute && env_.router != nullptr) depth = env_.router->depth(input_);
  for (const auto& ep : endpoints_) depth += ep->stats().queue_in;
  return counters_.snapshot(name_, depth);
}

Result<void> Part::open(const PartEnv& env) {
  env_ = env;
  if (!route_name_.empty()) {
    auto route = env_.router->find(route_name_);
    if (!route) {
      return make_error(Errc::kNotFound,
                        fmt::format("part '{}' routes to '{}', which no part serves", name_,
                                    route_name_));
    }
    target_ = *route;
  }
  if (auto r = on_open(); !r) return r;
  // One doorbell for everything the thread waits for: a shm endpoint's, if
  // there is one (another process cannot ring a doorbell in our heap).
  std::size_t shm_endpoints = 0;
  for (auto& ep : endpoints_) {
    if (auto* shm_ep = dynamic_cast<shm::ShmEndpoint*>(ep.get())) {
      if (shm_endpoints++ == 0) wait_bell_ = &shm_ep->doorbell();
    }
  }
  // Every endpoint rings it, the shm one included: its host-made events
  // (a worker joined or gone) ring only the doorbell set here.
  for (auto& ep : endpoints_) ep->set_doorbell(wait_bell_);
  if (input_ != kNoRoute) env_.router->set_bell(input_, wait_bell_);
  wait_cap_ = shm_endpoints > 1 ? std::chrono::milliseconds(1) : env_.poll;
  return {};
}

void Part::start() { thread_ = std::thread([this] { run(); }); }

void Part::request_stop() noexcept {
  stop_.store(true, std::memory_order_relaxed);
  wait_bell_->ring(Doorbell::kWakeAll);
}

void Part::join() noexcept {
  if (thread_.joinable()) thread_.join();
}

void Part::close() noexcept {
  on_close();
  for (auto& ep : endpoints_) {
    ep->set_doorbell(nullptr);
    ep->close();
  }
}

void Part::run() noexcept {
  const auto guarded = [this](auto&& work) {
    try {
      return work();
    } catch (const std::exception& e) {
      // A part never dies of one message: log, count, go on.
      PartCounters::bump(counters_.errors);
      logger().error("{}: {}", name_, e.what());
    } catch (...) {
      PartCounters::bump(counters_.errors);
      logger().error("{}: an unknown exception", name_);
    }
    return true;
  };
  while (!stop_.load(std::memory_order_relaxed) && !limit_reached()) {
    if (guarded([this] { return step(); })) continue;
    wait_bell_->wait_for(
        [&] { return stop_.load(std::memory_order_relaxed) || guarded([this] { return step(); }); },
        wait_cap_);
  }
  // Stopping: a bounded drain of what is already queued.
  const auto deadline = std::chrono::steady_clock::now() + 5 * env_.poll;
  while (std::chrono::steady_clock::now() < deadline && guarded([this] { return drain(); })) {
  }
  finished_.store(true, std::memory_order_release);
  if (env_.server != nullptr) env_.server->part_finished(*this);
}

bool Part::count_message() noexcept {
  ++served_;
  return limit_reached();
}

bool Part::emit(Frame& frame, RouteId to, RouteId reply_to, std::uint64_t token,
                std::int64_t since_ns) {
  // Waits for room in slices of `poll`; once stopping, for at most a few
  // slices (the consumer drains meanwhile), then the message is dropped and
  // counted rather than holding the stop for ever.
  int tries_after_stop = 0;
  for (;;) {
    if (env_.router->push_for(to, frame, env_.poll, reply_to, token, since_ns)) return true;
    PartCounters::bump(counters_.stalls);
    if (stopping() && ++tries_after_stop > 5) {
      PartCounters::bump(counters_.errors);
      logger().warn("{}: dropped a message at stop: route '{}' stayed full", name_,
                       env_.router->name(to));
      frame.reset();
      return false;
    }
  }
}

Result<std::string> Part::bind_service(transport::Pattern pattern, const std::string& tcp_address,
                                       bool with_shm, const std::string& shm_service) {
  const std::string& service = shm_service.empty() ? name_ : shm_service;
  std::string in_effect;
  if (!tcp_address.empty()) {
    auto ep = env_.context->open(transport::EndpointSpec::bind_to(pattern, tcp_address));
    if (!ep) {
      return make_error(ep.error().code, fmt::format("{}: cannot bind {} on {}: {}", name_,
                                                     to_string(pattern), tcp_address,
                                                     ep.error().message));
    }
    (*ep)->set_doorbell(&bell_);
    in_effect = (*ep)->address();
    transports_.push_back(fmt::format("{} {} bound on {}", name_, to_string(pattern), in_effect));
    endpoints_.push_back(std::move(*ep));
  }
  if (with_shm && !env_.segment.empty() && shm_serves(pattern)) {
    const std::string address = fmt::format("shm://{}/{}", env_.segment, service);
    auto ep = env_.context->open(transport::EndpointSpec::bind_to(pattern, address));
    if (!ep) {
      return make_error(ep.error().code, fmt::format("{}: cannot bind {} on {}: {}", name_,
                                                     to_string(pattern), address,
                                                     ep.error().message));
    }
    (*ep)->set_doorbell(&bell_);
    if (!in_effect.empty()) {
      const auto* shm_ep = dynamic_cast<const shm::ShmEndpoint*>(ep->get());
      const transport::ShmService shm{env_.segment, service, shm_ep != nullptr ? shm_ep->nonce() : 0};
      announce_[transport::shm_key(port_of(in_effect))] = shm.to_string();
    }
    transports_.push_back(fmt::format("{} {} bound on {}", name_, to_string(pattern), address));
    endpoints_.push_back(std::move(*ep));
  }
  return in_effect;
}

Result<void> Part::connect_to(transport::Pattern pattern, const std::string& address,
                              const std::string& db_address,
                              std::vector<std::string> subscriptions) {
  auto spec = transport::EndpointSpec::connect_to(pattern, address);
  spec.subscriptions = std::move(subscriptions);
  Result<std::unique_ptr<transport::Endpoint>> ep;
  if (!db_address.empty() && address.starts_with("tcp://")) {
    ep = transport::open_auto(*env_.context, spec, db_address);
  } else {
    ep = env_.context->open(spec);
  }
  if (!ep) {
    return make_error(ep.error().code, fmt::format("{}: cannot connect {} to {}: {}", name_,
                                                   to_string(pattern), address,
                                                   ep.error().message));
  }
  (*ep)->set_doorbell(&bell_);
  transports_.push_back(fmt::format("{} {} connected to {} over {}", name_, to_string(pattern),
                                    address, to_string((*ep)->scheme())));
  endpoints_.push_back(std::move(*ep));
  return {};
}

}  // namespace palm::servers
