#include "palm/servers/part.hpp"

#include <pthread.h>

#include <algorithm>
#include <exception>
#include <thread>

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
  // A server stops every part before it destroys them; this is the safety
  // net for a part used alone. Guests must not outlive a running host.
  request_stop();
  for (Part* g : guests_) g->request_stop();
  join();
  if (thread_.joinable()) thread_.join();
  for (Part* g : guests_) {  // they outlive us: nothing of ours may stay in them
    g->host_ = nullptr;
    g->wait_bell_ = &g->bell_;
  }
  if (host_ != nullptr) std::erase(host_->guests_, this);
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
  wait_cap_ = shm_endpoints > 1 ? std::chrono::milliseconds(1) : kRest;
  return {};
}

void Part::host(Part& guest) {
  guest.host_ = this;
  guests_.push_back(&guest);
}

void Part::share_bell() {
  if (guests_.empty()) return;
  // Bound shm services of the group share one doorbell already (bind_service
  // asks for it); connected shm endpoints each have their own, which cannot
  // be shared: with more than one distinct doorbell, waits are capped.
  std::vector<Doorbell*> shm_bells;
  std::vector<Part*> members{this};
  members.insert(members.end(), guests_.begin(), guests_.end());
  for (Part* m : members) {
    for (auto& ep : m->endpoints_) {
      if (auto* shm_ep = dynamic_cast<shm::ShmEndpoint*>(ep.get())) {
        if (std::find(shm_bells.begin(), shm_bells.end(), &shm_ep->doorbell()) == shm_bells.end()) {
          shm_bells.push_back(&shm_ep->doorbell());
        }
      }
    }
  }
  Doorbell* bell = shm_bells.empty() ? &bell_ : shm_bells.front();
  for (Part* m : members) {
    m->wait_bell_ = bell;
    for (auto& ep : m->endpoints_) ep->set_doorbell(bell);
    if (m->input_ != kNoRoute) env_.router->set_bell(m->input_, bell);
  }
  wait_cap_ = shm_bells.size() > 1 ? std::chrono::milliseconds(1) : kRest;
}

void Part::start() {
  if (host_ != nullptr) return;  // runs on its host's thread
  running_.store(true, std::memory_order_relaxed);  // before the thread: no race
  thread_ = std::thread([this] { run(); });
}

void Part::request_stop() noexcept {
  stop_.store(true, std::memory_order_relaxed);
  wait_bell_->ring(Doorbell::kWakeAll);
}

void Part::join() noexcept {
  if (host_ == nullptr && guests_.empty()) {
    if (thread_.joinable()) thread_.join();
    return;
  }
  // A member of a shared thread: wait for this part's end, not the thread's
  // (the server stops inbound parts before it asks outbound ones to drain).
  const Part& runner = host_ != nullptr ? *host_ : *this;
  while (!finished() && runner.running_.load(std::memory_order_acquire)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (host_ == nullptr && thread_.joinable()) {
    // The host: once every member finished, the thread ends at once: join
    // it, so nothing of it runs after the server's stop() returns.
    bool all = finished();
    for (const Part* g : guests_) all = all && g->finished();
    if (all) thread_.join();
  }
}

void Part::close() noexcept {
  on_close();
  for (auto& ep : endpoints_) {
    ep->set_doorbell(nullptr);
    ep->close();
  }
}

void Part::run() noexcept {
  const std::string thread_name = "palm:" + name_.substr(0, 10);  // 15 bytes at most
  ::pthread_setname_np(::pthread_self(), thread_name.c_str());
  std::vector<Part*> members{this};
  members.insert(members.end(), guests_.begin(), guests_.end());
  const auto round = [&members](bool& alive) {
    bool did = false;
    for (Part* m : members) did |= m->tick(alive);
    return did;
  };
  // Timed work (a drain's deadline, a backlog, wants_ticks) wakes the
  // thread every env_.poll; the rest is rung.
  const auto timed = [&members] {
    return std::any_of(members.begin(), members.end(),
                       [](const Part* m) { return m->stopping() || !m->backlog_.empty() || m->wants_ticks(); });
  };
  // Spin before sleeping as long as the endpoint most worth it (a shm
  // peer's), not at all if every endpoint is fed through ZeroMQ's sleeping
  // threads (Endpoint::wait_spin); a part with routes only spins the
  // default (its producers are threads of this process).
  const auto spin = [&members] {
    bool any = false;
    std::chrono::nanoseconds most{0};
    for (const Part* m : members) {
      for (const auto& ep : m->endpoints_) {
        any = true;
        most = std::max(most, ep->wait_spin());
      }
    }
    return any ? most : Doorbell::default_spin();
  };
  for (;;) {
    bool alive = false;
    if (round(alive)) continue;
    if (!alive) break;
    wait_bell_->wait_for(
        [&] {
          bool still = false;
          const bool did = round(still);
          return did || !still;
        },
        timed() ? std::min<std::chrono::milliseconds>(wait_cap_, env_.poll) : wait_cap_, spin());
  }
  // release: pairs with join()'s acquire; everything the thread did is seen.
  running_.store(false, std::memory_order_release);
}

bool Part::guarded(bool draining) noexcept {
  try {
    return draining ? drain() : step();
  } catch (const std::exception& e) {
    // A part never dies of one message: log, count, go on.
    PartCounters::bump(counters_.errors);
    logger().error("{}: {}", name_, e.what());
  } catch (...) {
    PartCounters::bump(counters_.errors);
    logger().error("{}: an unknown exception", name_);
  }
  return true;
}

bool Part::tick(bool& alive) noexcept {
  if (finished_.load(std::memory_order_relaxed)) return false;  // this thread wrote it
  bool did = false;
  if (!stop_.load(std::memory_order_relaxed) && !limit_reached()) {
    alive = true;
    if (!flush_backlog(did)) return did;  // no new work until the backlog is through
    return guarded(false) || did;
  }
  // Stopping: a bounded drain of what is already queued.
  const std::int64_t now = Router::now_ns();
  if (drain_deadline_ns_ == 0) {
    drain_deadline_ns_ = now + std::chrono::nanoseconds(5 * env_.poll).count();
  }
  if (now < drain_deadline_ns_) {
    if (!flush_backlog(did)) {  // its consumer may take more yet
      alive = true;
      return did;
    }
    if (guarded(true)) {
      alive = true;
      return true;
    }
  }
  finish();
  return false;
}

bool Part::flush_backlog(bool& did) noexcept {
  while (!backlog_.empty()) {
    Backlogged& b = backlog_.front();
    if (!env_.router->try_push(b.to, b.frame, b.reply_to, b.token, b.since_ns)) return false;
    backlog_.pop_front();
    did = true;
  }
  return true;
}

void Part::finish() noexcept {
  if (!backlog_.empty()) {
    PartCounters::bump(counters_.errors, backlog_.size());
    logger().warn("{}: dropped {} messages at stop: their route stayed full", name_, backlog_.size());
    backlog_.clear();
  }
  // The server hears of it before join() can see it finished: a server
  // that stops and goes away then has no call of ours in flight.
  if (env_.server != nullptr) env_.server->part_finished(*this);
  finished_.store(true, std::memory_order_release);
}

bool Part::read_on_this_thread(RouteId route) noexcept {
  Part& runner = leader();
  if (runner.input_ == route) return true;
  for (const Part* g : runner.guests_) {
    if (g->input_ == route) return true;
  }
  return false;
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
  if (read_on_this_thread(to)) {
    // Its consumer runs on this thread, after us: waiting would never end.
    if (backlog_.empty() && env_.router->try_push(to, frame, reply_to, token, since_ns)) return true;
    PartCounters::bump(counters_.stalls);
    backlog_.push_back(Backlogged{std::move(frame), to, reply_to, token,
                                  since_ns != 0 ? since_ns : Router::now_ns()});
    return true;
  }
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
    auto spec = transport::EndpointSpec::bind_to(pattern, address);
    spec.shm_share_bell_with = leader().shm_bell_service_;
    auto ep = env_.context->open(spec);
    if (!ep) {
      return make_error(ep.error().code, fmt::format("{}: cannot bind {} on {}: {}", name_,
                                                     to_string(pattern), address,
                                                     ep.error().message));
    }
    (*ep)->set_doorbell(&bell_);
    if (leader().shm_bell_service_.empty()) leader().shm_bell_service_ = service;
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
