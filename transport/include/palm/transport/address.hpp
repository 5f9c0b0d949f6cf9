#pragma once
// Endpoint addresses: the scheme of the string picks the transport
// (DESIGN.md "Transports and auto-selection").
//
//   tcp://host:port       ZeroMQ over TCP; "*" as the port binds a free one
//   ipc:///path           ZeroMQ over a Unix socket
//   inproc://name         ZeroMQ between the threads of one Context
//   shm://name[/service]  shared memory only (shm/host.hpp; Context::open)
//   auto://host:port      shm when the peer shares this host, else tcp
//                         (open_auto, auto_select.hpp)
//
// Parsing is pure (no I/O, no allocation beyond the strings) and thread-safe.

#include <cstdint>
#include <string>
#include <string_view>

#include "palm/core/error.hpp"

namespace palm::transport {

enum class Scheme : std::uint8_t { kTcp, kIpc, kInproc, kShm, kAuto };

// "tcp", "ipc", ...
const char* to_string(Scheme scheme) noexcept;

// True for the schemes ZeroMQ carries (tcp, ipc, inproc).
constexpr bool is_zmq(Scheme scheme) noexcept {
  return scheme == Scheme::kTcp || scheme == Scheme::kIpc || scheme == Scheme::kInproc;
}

struct Address {
  Scheme scheme = Scheme::kTcp;
  std::string text;  // the whole address, as given ("tcp://127.0.0.1:5555")
  std::string rest;  // what follows "scheme://"

  // Parses `text`. kInvalidArgument (naming the text and the schemes palm
  // knows) for an unknown scheme or an empty rest.
  [[nodiscard]] static Result<Address> parse(std::string_view text);
};

}  // namespace palm::transport
