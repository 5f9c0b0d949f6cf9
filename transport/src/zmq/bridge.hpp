#pragma once
// Bridge: the state and loop of the bridge thread (zmq_transport.hpp). Every
// member is touched by the bridge thread only.
//
// Wire framing per pattern (the application sees frames only):
//   push/pull       [PalmMessage]
//   pub/sub         [topic, PalmMessage]; XPUB also reads [\x01 prefix]
//                   (subscribe) and [\x00 prefix] (unsubscribe)
//   req             sends [PalmMessage] (REQ adds its envelope), reads [raw]
//   rep (ROUTER)    reads [envelope..., "", PalmMessage], answers
//                   [envelope..., "", raw or PalmMessage]: the envelope is
//                   echoed whole (REQ_CORRELATE ids, proxies' routing ids)
//   dispatch        worker (DEALER) -> dispatcher (ROUTER):
//                     [header(hello, credits)]            join
//                     [header(message, credits), PalmMessage]  a result
//                     [header(credit, n)]                 more credits
//                     [header(bye)]                       leaving
//                   dispatcher -> worker: [header(message), PalmMessage]
//                   header: 8 bytes {'P', version 1, kind, 0, u32 LE credits}
//
// A dispatcher learns that a worker died from the socket monitor
// (ZMQ_EVENT_DISCONNECTED carries the connection's fd; the hello's
// ZMQ_SRCFD named it), from a bye, or from EHOSTUNREACH when sending to it
// (ZMQ_ROUTER_MANDATORY). ZMQ_ROUTER_NOTIFY would say it directly but is a
// draft option that Debian's libzmq 4.3.4 does not build. A worker re-sends
// its hello (with its initial credits) on every reconnection, so a
// dispatcher that restarted sees it join; what the old one had sent it is
// the old one's to re-send.

#include <poll.h>
#include <sys/types.h>
#include <zmq.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "zmq/zmq_transport.hpp"

namespace palm::transport::zeromq {

using Clock = std::chrono::steady_clock;
// Parts a message may have (more make it malformed; pylm sends one or two).
inline constexpr std::size_t kMaxParts = 64;

// A zmq_msg_t, closed on destruction. Move-only (zmq_msg_move).
class Msg {
 public:
  Msg() noexcept { zmq_msg_init(&msg_); }
  Msg(Msg&& other) noexcept {
    zmq_msg_init(&msg_);
    zmq_msg_move(&msg_, &other.msg_);
  }
  Msg& operator=(Msg&& other) noexcept {
    if (this != &other) zmq_msg_move(&msg_, &other.msg_);
    return *this;
  }
  Msg(const Msg&) = delete;  // a zmq_msg_t has one owner
  Msg& operator=(const Msg&) = delete;
  ~Msg() { zmq_msg_close(&msg_); }

  zmq_msg_t* get() noexcept { return &msg_; }
  const zmq_msg_t* get() const noexcept { return &msg_; }
  std::span<const std::byte> bytes() const noexcept {
    auto* m = const_cast<zmq_msg_t*>(&msg_);  // zmq_msg_data takes no const
    return {static_cast<const std::byte*>(zmq_msg_data(m)), zmq_msg_size(m)};
  }
  std::string_view text() const noexcept {
    auto b = bytes();
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }
  bool more() const noexcept { return zmq_msg_more(&msg_) != 0; }

 private:
  zmq_msg_t msg_;
};

struct ZmqTransport::Link {
  std::shared_ptr<EndpointState> state;
  Pattern pattern = Pattern::kPush;
  void* socket = nullptr;
  void* monitor = nullptr;  // kDispatcher: a PAIR reading the socket's events
  bool timer_retry = false;  // EAGAIN retried on a timer (XPUB, ROUTER), not POLLOUT
  // A bound ipc endpoint's socket file and its identity: removed at close if
  // it is still ours (ZeroMQ 4.3 removes only the files of wildcard binds).
  std::string ipc_path;
  dev_t ipc_dev = 0;
  ino_t ipc_ino = 0;

  // ZMQ_FD of the socket and of the monitor: readable when ZeroMQ has
  // commands for the socket (arrivals, room, peers), edge-triggered: after
  // any call on the socket its state is learnt from ZMQ_EVENTS, not the fd.
  // `dirty`: the socket was used since its last ZMQ_EVENTS (or its monitor
  // since it last said EAGAIN), so the loop looks at it before sleeping.
  int fd = -1;
  int monitor_fd = -1;
  bool dirty = true;
  bool monitor_dirty = true;

  // Send side: an item ZeroMQ refused (EAGAIN), retried first; out_ready:
  // ZMQ_EVENTS said POLLOUT since the refusal.
  bool has_pending_out = false;
  bool out_ready = false;
  OutItem pending_out;
  Clock::time_point out_retry_at;

  // Receive side. Items parsed while the ring was full, in order; and one
  // message received while the pool had no free block.
  std::deque<InItem> pending_in;
  // Items pushed into the receive ring whose consumer was not rung yet, and
  // their bytes (Bridge::signal_in).
  std::size_t unsignaled_in = 0;
  std::size_t unsignaled_bytes = 0;
  std::vector<Msg> stalled_parts;
  Clock::time_point in_retry_at;

  // kRep: envelopes of unanswered requests, by token (oldest first).
  std::map<std::uint64_t, std::vector<std::string>> requests;
  std::uint64_t next_request = 1;
  // kReq: the token of the last request sent (REQ_CORRELATE delivers only
  // its reply).
  std::uint64_t last_token = 0;
  // kDispatcher: routing ids and connection fds of the workers.
  std::vector<std::string> routing;  // by peer slot index
  std::unordered_map<std::string, PeerId> by_routing;
  std::unordered_map<int, PeerId> by_fd;
  std::vector<int> peer_fd;  // by peer slot index, -1 if unknown
  // kWorker: connections seen come up (the monitor); after the first, each
  // one re-sends the hello.
  std::uint64_t connections = 0;

  bool stalled_in() const noexcept { return !pending_in.empty() || !stalled_parts.empty(); }
};

class Bridge {
 public:
  explicit Bridge(ZmqTransport& transport);
  ~Bridge();
  Bridge(const Bridge&) = delete;  // owns sockets
  Bridge& operator=(const Bridge&) = delete;

  void loop() noexcept;
  void close_all() noexcept;

  // Commands (run on the bridge thread).
  Result<void> add(const std::shared_ptr<EndpointState>& state);
  void close(const EndpointState* state) noexcept;
  Result<void> subscribe(const EndpointState* state, const std::string& prefix, bool on);

 private:
  using Link = ZmqTransport::Link;
  enum class Sent : std::uint8_t { kOk, kRetry, kDropped };
  enum class Parsed : std::uint8_t { kOk, kStalled, kDropped };

  Link* find(const EndpointState* state) noexcept;
  void close_link(Link& link) noexcept;
  void run_commands() noexcept;
  bool has_work() const noexcept;
  // A socket whose fd fired or that is dirty: runs its commands (ZMQ_EVENTS)
  // and reads or retries a refused send as it allows.
  void service(Link& link, Clock::time_point now) noexcept;

  // Send side.
  bool pump_out(Link& link, Clock::time_point now) noexcept;
  Sent send_item(Link& link, const OutItem& item) noexcept;
  [[gnu::cold]] Sent drop_unreadable(Link& link, const OutItem& item, const Error& why) noexcept;
  Sent send_parts(Link& link, std::span<const std::span<const std::byte>> head,
                  const OutItem* item, std::span<const std::byte> body) noexcept;
  void release(const OutItem& item) noexcept;

  // Receive side.
  bool pump_in(Link& link) noexcept;
  bool retry_in(Link& link, Clock::time_point now) noexcept;
  void handle(Link& link, std::vector<Msg>& parts) noexcept;
  void on_request(Link& link, std::vector<Msg>& parts) noexcept;
  void on_from_worker(Link& link, std::vector<Msg>& parts) noexcept;
  void on_from_dispatcher(Link& link, std::vector<Msg>& parts) noexcept;
  void on_subscription(Link& link, const std::vector<Msg>& parts) noexcept;
  // Applies the dispatcher's socket events. `read_socket_first`: before
  // reporting a worker gone, read what is waiting on the socket (not from
  // inside handle(), which is using parts_).
  void read_monitor(Link& link, bool read_socket_first) noexcept;
  // Parses `body` into a frame in the context's pool (raw: as a payload).
  Parsed parse(Link& link, std::span<const std::byte> body, std::string_view topic, bool raw,
               InItem& out) noexcept;
  void stall(Link& link, std::vector<Msg>& parts) noexcept;
  // Hands `item` (of `bytes` received bytes) to the consumer, or queues it
  // behind the items already waiting for room.
  void deliver(Link& link, const InItem& item, std::size_t bytes = 0) noexcept;
  bool push_in(Link& link, const InItem& item, std::size_t bytes) noexcept;
  // Rings the consumer for the items pushed since the last ring (push_in
  // rings every kSignalEvery items; the loop calls signal_all before it
  // sleeps or polls).
  void signal_in(Link& link) noexcept;
  void signal_all() noexcept;
  void peer_gone(Link& link, PeerId peer, const char* why) noexcept;
  void reply_raw(Link& link, const std::vector<std::string>& envelope,
                 std::string_view bytes) noexcept;
  void malformed(Link& link, std::string_view why) noexcept;
  void oversized(Link& link, std::size_t bytes) noexcept;
  void error(Link& link, std::string_view why) noexcept;

  ZmqTransport& t_;
  std::vector<std::unique_ptr<Link>> links_;
  std::vector<pollfd> fds_;  // the eventfd, then the links' ZMQ_FDs
  // The last poll timed out with nothing to do: the next look skips the
  // spin (an idle bridge sleeps again at once, as Doorbell's idle_waiter).
  bool rested_ = false;
  std::vector<std::pair<Link*, bool>> fd_links_;  // (link, is its monitor); eventfd: null
  // The parts before the body of the item being sent (send_item).
  std::array<std::span<const std::byte>, kMaxParts> head_{};
  std::vector<Msg> parts_;          // the message being handled
  std::vector<Msg> monitor_parts_;  // the monitor event being read
  std::uint64_t monitors_ = 0;
  int send_errno_ = 0;  // errno of the last failed send in send_parts
};

}  // namespace palm::transport::zeromq
