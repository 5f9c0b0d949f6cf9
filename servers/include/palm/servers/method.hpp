#pragma once
// Methods: what a Server, Pipeline, Sink or Worker runs for a message
// (FEATURES.md "user methods foo(payload) -> bytes"). They are registered by
// name (pylm looks them up with getattr) in a MethodTable.
//
// A method reads the message in place (Call::payload points into the frame
// it arrived in, valid during the call) and returns an Output:
//   bytes      the new payload (copied once, into the outgoing frame)
//   same()     the payload unchanged: the frame goes on as it came, nothing
//              copied (echo)
//   none()     no result. A Pipeline or Sink publishes nothing (pylm's tee);
//              a Server or Worker answers b'0' with the reason, since pylm's
//              thread would die on it.
// A method that throws is an error of that message only: logged with the
// server's name and the function, answered b'0' with the exception's text
// in palm's error field, and the server goes on (FEATURES.md 4 "Errors").

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/logger.h>

#include "palm/core/codec.hpp"
#include "palm/servers/cache.hpp"

namespace palm::servers {

class Output {
 public:
  enum class Kind : std::uint8_t { kBytes, kSame, kNone };

  Output(std::string bytes) : kind_(Kind::kBytes), bytes_(std::move(bytes)) {}  // NOLINT: implicit on purpose
  Output(std::string_view bytes) : Output(std::string(bytes)) {}                // NOLINT
  Output(const char* bytes) : Output(std::string(bytes)) {}                     // NOLINT
  static Output same() { return Output(Kind::kSame); }
  static Output none() { return Output(Kind::kNone); }

  Kind kind() const noexcept { return kind_; }
  const std::string& bytes() const noexcept { return bytes_; }
  std::string& bytes() noexcept { return bytes_; }

 private:
  explicit Output(Kind kind) : kind_(kind) {}
  Kind kind_;
  std::string bytes_;
};

// What a method sees. References are valid during the call only.
struct Call {
  const MessageView& message;          // the whole message (pylm's self.message)
  std::string_view method;             // the name it was called by
  spdlog::logger& logger;              // the server's logger (pylm's self.logger)
  KeyValueStore* cache = nullptr;      // the server's cache (a Worker: its master's)

  std::span<const std::byte> payload() const noexcept { return message.payload; }
  std::string_view payload_text() const noexcept {
    return {reinterpret_cast<const char*>(message.payload.data()), message.payload.size()};
  }
};

using Method = std::function<Output(const Call&)>;

// Methods by name. Filled before the server starts, read-only while it runs
// (so lookups need no lock).
class MethodTable {
 public:
  // Adds or replaces `name`.
  void on(std::string name, Method method);
  // nullptr if there is no such method.
  const Method* find(std::string_view name) const noexcept;
  std::vector<std::string> names() const;
  bool empty() const noexcept { return methods_.empty(); }

 private:
  std::map<std::string, Method, std::less<>> methods_;
};

// The built-in methods of palm's workers and servers (the `palm` command):
//   echo     the payload unchanged (pylm's Server.echo)
//   upper    ASCII upper case
//   reverse  the bytes reversed
//   sha256   the hex SHA-256 digest of the payload (64 ASCII characters)
//   sleep    sleeps the milliseconds the payload says (decimal text, at most
//            60000), answers the payload
//   fail     throws std::runtime_error("fail was called"), to show error
//            isolation
// Only echo is added to every Server (as pylm); add_builtin_methods adds all.
void add_echo(MethodTable& table);
void add_builtin_methods(MethodTable& table);

}  // namespace palm::servers
