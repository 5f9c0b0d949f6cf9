#include "palm/servers/router.hpp"

#include <fmt/format.h>

#include <cstring>

namespace palm::servers {

Router::~Router() {
  for (auto& route : routes_) {
    Item item;
    while (route.ring->try_pop(item)) {
      Frame(*item.pool, SlotId{item.slot}, Handle::from_bits(item.handle)).reset();
    }
  }
}

Result<RouteId> Router::add(std::string name, std::size_t capacity, Doorbell* consumer_bell) {
  if (find(name)) return make_error(Errc::kAlreadyExists, fmt::format("route '{}' exists", name));
  if (!MpmcRing<Item>::valid_capacity(capacity)) {
    return make_error(Errc::kInvalidArgument,
                      fmt::format("route '{}': capacity {} is not a power of two >= 2", name, capacity));
  }
  routes_.push_back(Route{std::move(name), std::make_unique<MpmcRing<Item>>(capacity), consumer_bell});
  return static_cast<RouteId>(routes_.size() - 1);
}

std::optional<RouteId> Router::find(std::string_view name) const noexcept {
  for (std::size_t i = 0; i < routes_.size(); ++i) {
    if (routes_[i].name == name) return static_cast<RouteId>(i);
  }
  return std::nullopt;
}

const std::string& Router::name(RouteId route) const noexcept { return routes_[route].name; }

std::int64_t Router::now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Router::Item Router::pack(Frame& frame, RouteId reply_to, std::uint64_t token,
                          std::int64_t since_ns) noexcept {
  Item item;
  fill(item, frame, reply_to, token, since_ns);
  return item;
}

void Router::fill(Item& item, Frame& frame, RouteId reply_to, std::uint64_t token,
                  std::int64_t since_ns) noexcept {
  const FrameView* viewed = frame.cached_view();
  item.pool = frame.pool();
  item.handle = frame.handle().bits();
  item.slot = static_cast<std::uint32_t>(frame.slot());
  item.reply_to = reply_to;
  item.token = token;
  item.since_ns = since_ns != 0 ? since_ns : now_ns();
  item.viewed = viewed != nullptr;
  if (viewed != nullptr) std::memcpy(item.view, viewed, sizeof(FrameView));  // else unread: left as it is
}

bool Router::try_push(RouteId route, Frame& frame, RouteId reply_to, std::uint64_t token,
                      std::int64_t since_ns) noexcept {
  auto& r = routes_[route];
  // Made in its cell: an item built aside (~250 bytes, most of it the view)
  // was copied in, and its view read back over the narrow stores that had
  // just written it.
  if (!r.ring->try_push_in_place([&](Item& item) { fill(item, frame, reply_to, token, since_ns); })) return false;
  // The ring holds the reference now.
  (void)frame.detach();
  if (r.bell != nullptr) r.bell->ring_if_waiting();
  return true;
}

bool Router::push_for(RouteId route, Frame& frame, std::chrono::nanoseconds timeout,
                      RouteId reply_to, std::uint64_t token, std::int64_t since_ns) noexcept {
  auto& r = routes_[route];
  if (r.ring->push_for(pack(frame, reply_to, token, since_ns), timeout) != WaitResult::kReady) {
    return false;
  }
  (void)frame.detach();
  if (r.bell != nullptr) r.bell->ring_if_waiting();
  return true;
}

bool Router::try_pop(RouteId route, Routed& out) noexcept {
  // What `out` held goes first: a release is no work for the claimed cell's
  // window, in which the next lap's producer finds the ring full.
  out.frame.reset();
  // Read in its cell, the view copied once, into out.frame.
  return routes_[route].ring->try_pop_in_place([&out](const Item& item) {
    out.frame.adopt(*item.pool, SlotId{item.slot}, Handle::from_bits(item.handle), item.viewed_as());
    out.reply_to = item.reply_to;
    out.token = item.token;
    out.since_ns = item.since_ns;
  });
}

std::size_t Router::depth(RouteId route) const noexcept { return routes_[route].ring->size_approx(); }

void Router::shutdown(RouteId route) noexcept { routes_[route].ring->shutdown(); }

}  // namespace palm::servers
