#pragma once
// The router of a server (DESIGN.md "Servers and the router"): a routing
// table, part name -> route, where a route is a lock-free MPMC ring of frame
// handles (palm/core/mpmc_ring.hpp) read by one part. There is no router
// thread: an inbound part pushes a handle straight into its route's ring and
// rings the consuming part's doorbell. A routed item can name a route for the
// reply (pylm's block=True parts, RepService feedback): the consumer pushes
// its feedback there.
//
// Items are frame handles, not copies: the reference moves from the pushing
// thread to the popping one (Frame::detach / Frame(pool, slot, h); both are
// threads of this process, so the pool slot that holds the reference does
// not change). Routes are added before the parts start and never removed;
// pushes and pops are thread-safe for any number of threads.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "palm/core/doorbell.hpp"
#include "palm/core/error.hpp"
#include "palm/core/frame.hpp"
#include "palm/core/mpmc_ring.hpp"

namespace palm::servers {

using RouteId = std::uint32_t;
inline constexpr RouteId kNoRoute = ~RouteId{0};

// What a part pops from its route.
struct Routed {
  Frame frame;
  RouteId reply_to = kNoRoute;  // where feedback for this item goes
  std::uint64_t token = 0;      // the asker's tag, echoed with the feedback
  std::int64_t since_ns = 0;    // steady-clock time it was first routed (latency)
};

class Router {
 public:
  Router() = default;
  Router(const Router&) = delete;  // parts hold RouteIds into it
  Router& operator=(const Router&) = delete;
  ~Router();  // releases the frames left in the rings

  // Adds route `name` (unique) read by the part sleeping on `consumer_bell`,
  // which every push rings. Not thread-safe: before the parts start.
  // kAlreadyExists for a name in use; kInvalidArgument for a capacity that is
  // not a power of two.
  [[nodiscard]] Result<RouteId> add(std::string name, std::size_t capacity,
                                    Doorbell* consumer_bell);
  std::optional<RouteId> find(std::string_view name) const noexcept;
  // Changes the doorbell pushes to `route` ring. Before the parts start.
  void set_bell(RouteId route, Doorbell* consumer_bell) noexcept { routes_[route].bell = consumer_bell; }
  const std::string& name(RouteId route) const noexcept;

  // Moves `frame` into `route` (the frame is empty afterwards). False, with
  // the frame untouched, if the ring is full. `since_ns` 0 stamps now.
  bool try_push(RouteId route, Frame& frame, RouteId reply_to = kNoRoute,
                std::uint64_t token = 0, std::int64_t since_ns = 0) noexcept;
  // As try_push, waiting up to `timeout` for room (the consumer's pops wake
  // it). False if still full (or the route was shut down).
  bool push_for(RouteId route, Frame& frame, std::chrono::nanoseconds timeout,
                RouteId reply_to = kNoRoute, std::uint64_t token = 0,
                std::int64_t since_ns = 0) noexcept;
  // Takes the oldest item of `route` into `out`, whose frame is released
  // first (also when the route is empty and this returns false).
  bool try_pop(RouteId route, Routed& out) noexcept;
  std::size_t depth(RouteId route) const noexcept;
  // Wakes pushers blocked in push_for on `route` (they return false). For stop.
  void shutdown(RouteId route) noexcept;
  std::size_t size() const noexcept { return routes_.size(); }

  static std::int64_t now_ns() noexcept;

 private:
  // Plain words only (MpmcRing moves items by memcpy). The frame's view, when
  // its pusher had validated it, rides along: the popper does not validate
  // the same immutable frame again.
  struct Item {
    BlockPool* pool;
    std::uint64_t handle;
    std::uint32_t slot;
    RouteId reply_to;
    std::uint64_t token;
    std::int64_t since_ns;
    bool viewed;
    // The view's bytes when `viewed` (a FrameView member would be zeroed
    // by its initializers each time an item is made in its cell).
    alignas(FrameView) unsigned char view[sizeof(FrameView)];
    const FrameView* viewed_as() const noexcept {
      return viewed ? std::launder(reinterpret_cast<const FrameView*>(view)) : nullptr;
    }
  };
  static_assert(std::is_trivially_copyable_v<FrameView>);
  struct Route {
    std::string name;
    std::unique_ptr<MpmcRing<Item>> ring;
    Doorbell* bell = nullptr;
  };
  static Item pack(Frame& frame, RouteId reply_to, std::uint64_t token, std::int64_t since_ns) noexcept;
  static void fill(Item& item, Frame& frame, RouteId reply_to, std::uint64_t token, std::int64_t since_ns) noexcept;
  std::deque<Route> routes_;  // deque: Route addresses stay put as routes are added
};

}  // namespace palm::servers
