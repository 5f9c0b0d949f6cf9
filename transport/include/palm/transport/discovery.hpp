#pragma once
// Discovery: asks a server's cache service for a key over REQ/REP, the way a
// pylm Client or Worker does (PROTOCOL.md "Cache service"), so a transport can
// learn where a server's segment is without knowing servers.
//
// The request is a PalmMessage: pipeline = a fresh uuid4, client = this
// client's uuid4, function = "<server>.get" (a Client) or "_.get" (a Worker),
// payload = the key. The reply is the value's raw bytes, b"" when missing.
//
// A REQ socket that timed out cannot send again; the kReq endpoint sets
// ZMQ_REQ_RELAXED + ZMQ_REQ_CORRELATE, so a new request abandons the old one
// and a late reply to it is dropped (by ZeroMQ, and by the token check
// here). After a timeout the next get() works.

#include <chrono>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <array>
#include <string_view>

#include "palm/core/error.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/endpoint.hpp"

namespace palm::transport {

// A fresh random uuid4 as 36 characters ("d18e4a53-41a4-413e-8ce7-fe8533e469fe").
std::string make_uuid4();
// The same, into a caller's buffer: no allocation (a master stamps one per
// message that comes without a cache key).
using Uuid4Text = std::array<char, 36>;
void make_uuid4(Uuid4Text& out) noexcept;

class DiscoveryClient {
 public:
  // Connects a kReq endpoint to `db_address`. `server_name` prefixes the
  // function ("_" asks as a Worker). Blocks (bounded) for the open.
  [[nodiscard]] static Result<DiscoveryClient> connect(Context& context, std::string db_address,
                                                       std::string server_name = "_");

  DiscoveryClient(DiscoveryClient&&) noexcept;
  DiscoveryClient& operator=(DiscoveryClient&&) noexcept;
  DiscoveryClient(const DiscoveryClient&) = delete;  // owns its endpoint
  DiscoveryClient& operator=(const DiscoveryClient&) = delete;
  ~DiscoveryClient();

  // The value of `key` (empty if missing), or kTimeout if no reply came in
  // `timeout`. Blocks; thread-safe (requests are serialized: REQ has one
  // outstanding request).
  [[nodiscard]] Result<std::string> get(std::string_view key, std::chrono::milliseconds timeout);
  // Any cache request (PROTOCOL.md "Cache service"): function
  // "<server_name>.<instruction>", the `cache` field, the payload; returns
  // the raw reply. set: cache = the key ("" for a generated one), payload =
  // the value; get/delete: payload = the key. Errors as get.
  [[nodiscard]] Result<std::string> request(std::string_view instruction, std::string_view cache,
                                            std::span<const std::byte> payload,
                                            std::chrono::milliseconds timeout);

  const std::string& client_id() const noexcept { return client_id_; }
  Endpoint& endpoint() const noexcept { return *endpoint_; }

 private:
  DiscoveryClient(Context& context, std::unique_ptr<Endpoint> endpoint, std::string server_name);

  Context* context_ = nullptr;
  std::unique_ptr<Endpoint> endpoint_;
  std::string server_name_;
  std::string client_id_;
  std::uint64_t next_token_ = 1;  // under mutex_
  std::unique_ptr<std::mutex> mutex_ = std::make_unique<std::mutex>();
};

}  // namespace palm::transport
