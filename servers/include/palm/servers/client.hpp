#pragma once
// Client: pylm's Client (FEATURES.md section 2; PROTOCOL.md "Cache service",
// "Message flow"), talking to a palm or pylm Server, Master or Pipeline.
//
// Connecting asks the server's cache (REQ on `db_address`) for `name` and
// refuses another server ("You are connecting to the wrong server"), then
// for `pull_address` / `pub_address` unless given (`this_config`: asks
// nothing). It opens ONE PUSH to the server's PULL and ONE SUB, subscribed
// to the client's uuid, to its PUB (or the last pipeline step's), both kept
// for the Client's life: pylm opens a fresh pair per call and often loses a
// fast server's reply to the slow-joining SUB; palm's client does not.
// Each is opened with transport::open_auto: shared memory when the server
// publishes a segment and shares this host, else tcp.
//
// The subscription reaching the publisher (the slow joiner):
//   tcp  ZeroMQ sends the SUB's subscription to the PUB asynchronously;
//        nothing tells a subscriber when it arrived. connect() waits
//        `settle` once (pylm sleeps 0.5 s), before any message is sent.
//   shm  shm::connect of a kSub returns once the host registered it with
//        its topics: what is published afterwards reaches it. No wait
//        (`shm_settle` restores one, for a host of an older layout).
//
// Messages (PROTOCOL.md "Message flow"): function (pipeline steps joined by
// spaces), stage 0, pipeline = the session (or one uuid4 of this Client),
// client = uuid(), payload, cache if non-empty. A reply whose topic is not
// uuid() is counted (wrong_topic) and skipped; one with palm's `error`
// field set is returned all the same (pylm peers get b'0') and counted
// (errors) and logged at WARNING with the reason.
//
// Thread-safety: every member is thread-safe; calls are serialized (one
// PUSH/SUB pair, one REQ): a second thread's call waits for the first.
// Every call blocks, bounded by `timeout` (see each).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/logger.h>

#include "palm/core/error.hpp"
#include "palm/servers/bypass.hpp"
#include "palm/servers/log.hpp"
#include "palm/transport/address.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/discovery.hpp"
#include "palm/transport/endpoint.hpp"
#include "palm/transport/shm/host_identity.hpp"

namespace palm::servers {

struct ClientOptions {
  std::string server_name;   // checked against the server's cache key `name`
  std::string db_address;    // the server's cache (REQ), e.g. tcp://127.0.0.1:5555
  std::string push_address;  // "" = ask the cache for `pull_address`
  std::string sub_address;   // "" = ask the cache for `pub_address` (a pipeline's last step may be given)
  std::string session;       // "" = one uuid4 for this Client; goes in every message's `pipeline`;
                             // prefixes set() keys
  bool this_config = false;  // true: ask the cache nothing (no name check); push/sub addresses must be given
  std::chrono::milliseconds timeout{10000};  // bounds every call (eval, job waits, set/get/delete)
  std::optional<shm::TransportMode> transport;  // nullopt: PALM_TRANSPORT env / auto
  LogLevel log_level = LogLevel::kInfo;
  // The wait after opening the SUB, once per Client (see the header
  // comment). 0 allowed.
  std::chrono::milliseconds settle{500};
  // Wait `settle` on a shm SUB too (not needed: see the header comment).
  bool shm_settle = false;
  // job(): messages in flight (sent, reply not yet received) at most.
  // Through a master over shm, also at most the SUB channel's capacity
  // (1024 by default): then a slow reader loses no reply.
  std::uint32_t window = 256;
  // When set and true, a waiting call gives up within about 100 ms with
  // Errc::kClosed ("interrupted"): a signal handler's flag (the CLI).
  const std::atomic<bool>* cancel = nullptr;
  // Feed the workers of a palm master directly (bypass.hpp), when the
  // master offers it and this client reaches it over shm; otherwise (and
  // while no worker joined within `bypass_wait`) every call goes through
  // the master. job, job_in_place and eval with one reply use it.
  bool bypass = false;
  std::chrono::milliseconds bypass_wait{2000};
  // The cores the bypass keeps busy at most (BypassDispatcher::busy_window);
  // 0: this host's (std::thread::hardware_concurrency).
  std::uint32_t bypass_cores = 0;
};

// Counters, a snapshot of relaxed loads (each exact at some moment).
struct ClientStats {
  std::uint64_t sent = 0;         // messages queued to the server
  std::uint64_t received = 0;     // replies handed to the caller
  std::uint64_t errors = 0;       // of those, replies with palm's error field set
  std::uint64_t wrong_topic = 0;  // deliveries skipped: topic not uuid()
  std::uint64_t timeouts = 0;     // calls that ended in kTimeout
  std::uint64_t stale = 0;        // replies that came after their call ended (a
                                  // timeout's late reply, more than `messages`):
                                  // dropped at the start of the next call
};

class Client {
 public:
  // Connects as described above. Blocks: the cache requests (each bounded
  // by `timeout`), the opens, the settle wait. Errors: kInvalidArgument
  // (the wrong server, missing addresses with this_config, bad options),
  // kTimeout (the cache did not answer), what opening the endpoints returns.
  [[nodiscard]] static Result<std::unique_ptr<Client>> connect(transport::Context& ctx,
                                                               ClientOptions options);

  Client(const Client&) = delete;  // owns its endpoints
  Client& operator=(const Client&) = delete;
  ~Client();

  // pylm's eval(function, payload, messages=1, cache=''): one message, one
  // reply's payload. kTimeout if none came within `timeout`.
  [[nodiscard]] Result<std::string> eval(std::string_view function, std::span<const std::byte> payload,
                                         std::string_view cache = {});
  [[nodiscard]] Result<std::string> eval(std::string_view function, std::string_view payload,
                                         std::string_view cache = {});
  [[nodiscard]] Result<std::string> eval(const std::vector<std::string>& function, std::string_view payload,
                                         std::string_view cache = {});
  // One message, `messages` replies awaited (all within `timeout`).
  [[nodiscard]] Result<std::vector<std::string>> eval(std::string_view function,
                                                      std::span<const std::byte> payload,
                                                      std::uint64_t messages, std::string_view cache = {});

  // Streams payloads from `next` (returns false when done) and hands each
  // reply to `on_reply` until `messages` replies came (0 = as many as sent).
  // Sends and drains at once: at most `window` messages in flight, never
  // blocked sending while replies pile up. Returns the replies received.
  // It sleeps in the SUB's recv_for (the endpoint's own doorbell), not on a
  // Doorbell given to set_doorbell: a shm SUB rings that one for host
  // events only, not messages (shm/host.hpp). A full PUSH rings nobody when
  // it drains, so while it is full the wait is cut to 1 ms slices.
  // kTimeout when `timeout` passes without progress (no send, no reply);
  // the message names how many replies came. kExhausted, at once, when the
  // server dropped replies because this client read too slowly (a shm SUB
  // whose channel stayed full: shm::HostOptions::slow_subscriber_wait) and
  // no reply still in flight can be other than those: the message names how
  // many were lost. (Over ZeroMQ a dropped reply is only silence: kTimeout.)
  [[nodiscard]] Result<std::uint64_t> job(std::string_view function,
                                          const std::function<bool(std::string& payload)>& next,
                                          const std::function<void(std::string_view reply)>& on_reply,
                                          std::uint64_t messages = 0, std::string_view cache = {});
  // job without copies: `fill` writes each payload straight into its
  // frame's block (up to `max_payload` bytes; it returns the bytes written,
  // or nullopt when there are no more), and `on_reply` reads each reply's
  // payload where it lies (valid during the call only). Otherwise as job.
  using Fill = std::function<std::optional<std::size_t>(std::span<std::byte> out)>;
  using OnReplyBytes = std::function<void(std::span<const std::byte> reply)>;
  [[nodiscard]] Result<std::uint64_t> job_in_place(std::string_view function, std::size_t max_payload,
                                                   const Fill& fill, const OnReplyBytes& on_reply,
                                                   std::uint64_t messages = 0, std::string_view cache = {});

  // pylm's set(value, key=None): returns the key the server stored (a uuid4
  // if `key` is empty). With a session the key sent is session + key.
  [[nodiscard]] Result<std::string> set(std::span<const std::byte> value, std::string_view key = {});
  [[nodiscard]] Result<std::string> set(std::string_view value, std::string_view key = {});
  // The value, b"" if missing (no session prefix, as pylm).
  [[nodiscard]] Result<std::string> get(std::string_view key);
  // pylm's delete(key): returns the key.
  [[nodiscard]] Result<std::string> remove(std::string_view key);

  // The client's id: every message's `client` field and its reply topic.
  const std::string& uuid() const noexcept { return uuid_; }
  // What goes in `pipeline`: the session, or this Client's own uuid4.
  const std::string& pipeline() const noexcept { return pipeline_; }
  const std::string& push_address() const noexcept { return push_address_; }
  const std::string& sub_address() const noexcept { return sub_address_; }
  // Which transport carries each (kShm or kTcp). Fixed after connect.
  transport::Scheme push_scheme() const noexcept;
  transport::Scheme sub_scheme() const noexcept;
  ClientStats stats() const noexcept;
  // Whether the bypass was set up (bypass.hpp; workers may not have joined
  // yet), and its counters with the workers attached now: a snapshot taken
  // between calls (it waits for a running one).
  bool bypass_enabled() const noexcept { return bypass_ != nullptr; }
  BypassStats bypass_stats();

 private:
  Client(transport::Context& ctx, ClientOptions options);

  [[nodiscard]] Result<void> send_one(std::string_view function, std::span<const std::byte> payload,
                                      std::string_view cache, std::chrono::steady_clock::time_point deadline);
  // Takes one delivery; true if it was a reply for us (in `out`). `direct`:
  // a result from a worker of the bypass (no topic to check).
  bool accept(transport::Delivery& d, std::string& out, bool direct = false);
  // As accept, the payload viewed in d's frame.
  bool accept_view(transport::Delivery& d, std::span<const std::byte>& out, bool direct = false);
  // Where and how the next message is built: the pool where it crosses
  // without a copy (a shm segment's, else the context's) and its dispatch
  // id (the bypass's; 0 through a master).
  struct Target {
    BlockPool* pool = nullptr;
    SlotId slot{};
    std::uint64_t dispatch_id = 0;
  };
  // The loop of job, job_in_place and eval. `make` builds the next frame
  // into its argument: kBuilt, kDone (no more), or an error; `on_reply`
  // hands a delivery to the caller (direct: from the bypass) and tells
  // whether it was a reply. Through the bypass when it has workers, else
  // through the master.
  enum class Made : std::uint8_t { kBuilt, kDone };
  using Make = std::function<Result<Made>(Frame&, const Target&)>;
  using OnDelivery = std::function<bool(transport::Delivery&, bool direct)>;
  [[nodiscard]] Result<std::uint64_t> run_job(std::string_view function, const Make& make,
                                              const OnDelivery& on_reply, std::uint64_t messages);
  [[nodiscard]] Result<std::uint64_t> run_master(std::string_view function, const Make& make,
                                                 const OnDelivery& on_reply, std::uint64_t messages);
  [[nodiscard]] Result<std::uint64_t> run_bypass(std::string_view function, const Make& make,
                                                 const OnDelivery& on_reply, std::uint64_t messages);
  // Their counts and progress clock (client_internal.hpp).
  struct JobState;
  // The end of their loop's round: after progress (`progressed`), notes it
  // and returns zero: go on at once. Else how long to sleep for a delivery:
  // up to `timeout` after the last progress, at most `cap`, at most
  // kCancelSlice while a cancel flag is watched. Errors: kClosed once
  // cancelled; kTimeout, named by `stalled()`, once `timeout` passed.
  [[nodiscard]] Result<std::chrono::steady_clock::duration> after_round(
      JobState& job, bool progressed, std::chrono::steady_clock::duration cap,
      const std::function<std::string()>& stalled);
  // The bypass can carry the next call: workers joined (waits up to
  // bypass_wait for the first one, once).
  bool bypass_ready();
  // Sets up the bypass when the master offers it (bypass.hpp); logs why not.
  void open_bypass();
  // What takes the bypass's results between calls: they are those of a
  // call that ended early (counted as stale, dropped).
  BypassDispatcher::OnResult stale_result();
  // Where a frame for the PUSH is cheapest to build: the shm segment's pool
  // (no copy on send) or the context's.
  Target push_target() const;
  // Waits (sliced for `cancel`) up to `deadline` for a reply for us.
  // kTimeout / kClosed errors name `what`.
  [[nodiscard]] Result<std::string> await_reply(std::chrono::steady_clock::time_point deadline,
                                                std::string_view what, std::uint64_t got,
                                                std::uint64_t wanted);
  [[nodiscard]] Result<std::string> cache_request(std::string_view instruction, std::string_view cache,
                                                  std::span<const std::byte> payload);
  bool cancelled() const noexcept;
  // Drops what arrived since the last call ended (counted as stale).
  void drop_stale();
  // Opens the PUSH and the SUB (open_auto, or the addresses as given with
  // this_config), then settles.
  [[nodiscard]] Result<void> open_endpoints();
  // timeout_error adds "the server is gone" when ZeroMQ connections to it are down.
  tl::unexpected<Error> timeout_error(std::string what);
  // Replies the server dropped for this client because it read them too
  // slowly (a shm SUB: shm::ShmEndpoint::lost); 0 on ZeroMQ, which does not
  // tell a subscriber what it missed.
  std::uint64_t sub_lost() const noexcept;
  // The messages a job keeps in flight through the master: options' window,
  // at most the shm SUB channel's capacity.
  std::uint64_t master_window() const noexcept;
  std::string sub_name() const;  // the SUB's address, and the shm one carrying it
  tl::unexpected<Error> cancelled_error();

  transport::Context* ctx_;
  ClientOptions options_;
  std::string uuid_;
  std::string pipeline_;
  std::string push_address_;
  std::string sub_address_;
  std::shared_ptr<spdlog::logger> logger_;
  std::optional<transport::DiscoveryClient> db_;  // absent with this_config until a cache call
  std::unique_ptr<transport::Endpoint> push_;
  std::unique_ptr<transport::Endpoint> sub_;
  std::unique_ptr<BypassDispatcher> bypass_;  // bypass.hpp; null when not set up
  bool bypass_waited_ = false;                // bypass_ready waited once already
  std::mutex call_mu_;  // serializes the calls (one PUSH/SUB pair, one REQ)

  // Stat counters: relaxed (independent counts, read as a snapshot).
  struct Counters {
    std::atomic<std::uint64_t> sent{0}, received{0}, errors{0}, wrong_topic{0}, timeouts{0}, stale{0};
  };
  Counters counters_;
};

}  // namespace palm::servers
