#pragma once
// Transport auto-selection for a tcp address of a palm server (DESIGN.md
// "Transports and auto-selection"): shared memory when the server shares
// this host, /dev/shm and pid namespace, else TCP.
//
// A palm server publishes in its cache (the servers layer's cache service;
// discovery.hpp reads it), under reserved keys that clients cannot
// overwrite:
//   kHostKey                  its HostIdentity::to_string()
//   shm_key(port)             "SEGMENT/SERVICE NONCE": the shm service that
//                             serves what its tcp socket on `port` serves
// A key the server did not publish reads as b"" (a pylm server publishes
// none: TCP).
//
// open_auto asks the cache for both (DiscoveryClient), decides with
// choose_transport (PALM_TRANSPORT=auto|shm|tcp, or AutoOptions::mode),
// and attaches to the segment (with the nonce: a restarted server is not
// mistaken for the old one) or opens the tcp address. In auto mode anything
// that goes wrong on the way to shm (no reply, no key, another host, a
// failed attach) falls back to TCP; in shm mode it is an error naming what
// differs or failed. The choice is logged at INFO once per (address,
// transport) in the process, and counted (auto_choice_counts); the endpoint
// says what carries it (Endpoint::scheme(); a shm endpoint's peer_status).

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "palm/core/error.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/endpoint.hpp"
#include "palm/transport/shm/host_identity.hpp"

namespace palm::transport {

// Reserved cache keys (the cache refuses them from clients).
inline constexpr std::string_view kShmKeyPrefix = "__palm.shm:";
inline constexpr std::string_view kHostKey = "__palm.host";
// A palm master's dispatcher for palm workers on tcp ("tcp://HOST:PORT"; its
// shm twin is under shm_key(PORT)). A master without it is pylm's.
inline constexpr std::string_view kDispatchKey = "__palm.dispatch";

// The key of the shm service behind the server's tcp socket on `port`
// ("__palm.shm:5555"). The port, not the host: the cache answers for one
// host, and a server binds tcp://*:PORT while clients connect to a name.
std::string shm_key(std::string_view port);

// "SEGMENT/SERVICE NONCE" (the value under shm_key), and back. parse:
// kMalformed naming the text.
struct ShmService {
  std::string segment;
  std::string service;
  std::uint64_t nonce = 0;
  std::string to_string() const;
  [[nodiscard]] static Result<ShmService> parse(std::string_view text);
};

struct AutoOptions {
  // Overrides PALM_TRANSPORT (the command-line flag); nullopt reads it.
  std::optional<shm::TransportMode> mode;
  // Asks the cache as this server's client ("<name>.get"); "_" as a worker.
  std::string server_name = "_";
  // Bounds each cache request; 0: the Context's command_timeout.
  std::chrono::milliseconds discovery_timeout{0};
};

// Opens `spec` (a tcp://HOST:PORT or auto://HOST:PORT address; connect
// only, patterns shm carries: push, pull, sub, worker) on shared memory or
// TCP, as above. Blocks (bounded: two cache requests, the attach, the
// open). Errors: kInvalidArgument (the address or pattern; the mode), a
// mode=shm refusal naming the reason, what the tcp open returns.
// Thread-safe.
[[nodiscard]] Result<std::unique_ptr<Endpoint>> open_auto(Context& context, EndpointSpec spec,
                                                          std::string db_address,
                                                          const AutoOptions& options = {});

// Decisions open_auto made in this process (racy snapshot).
struct AutoChoiceCounts {
  std::uint64_t shm = 0;        // attached to a segment
  std::uint64_t tcp = 0;        // opened tcp
  std::uint64_t fallbacks = 0;  // of those tcp: shm was chosen or tried, then failed
};
AutoChoiceCounts auto_choice_counts() noexcept;

}  // namespace palm::transport
