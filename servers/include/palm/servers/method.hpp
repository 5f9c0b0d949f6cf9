#pragma once
// Methods: what a Server, Pipeline, Sink or Worker runs for a message
// (FEATURES.md "user methods foo(payload) -> bytes"). They are registered by
// name (pylm looks them up with getattr) in a MethodTable.
//
// A method reads the message in place (Call::payload points into the frame
// it arrived in, valid during the call) and returns an Output:
//   bytes      the new payload (copied once, into the outgoing frame)
//   fill(n, f) the result is written straight into a fresh block: the
//              server opens the outgoing frame with room for n payload
//              bytes and calls f(room) once, on the same thread, after the
//              method returned; f returns the length it wrote (at most n).
//              For large results: nothing is copied after f writes.
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
#include <unordered_map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/logger.h>

#include "palm/core/codec.hpp"
#include "palm/core/error.hpp"
#include "palm/core/frame.hpp"
#include "palm/servers/cache.hpp"

namespace palm::servers {

class Output {
 public:
  enum class Kind : std::uint8_t { kBytes, kFill, kSame, kNone };
  // Writes the payload into `room`; returns the bytes written (<= room).
  using Filler = std::function<std::size_t(std::span<std::byte> room)>;

  Output(std::string bytes) : kind_(Kind::kBytes), bytes_(std::move(bytes)) {}  // NOLINT: implicit on purpose
  Output(std::string_view bytes) : Output(std::string(bytes)) {}                // NOLINT
  Output(const char* bytes) : Output(std::string(bytes)) {}                     // NOLINT
  static Output same() { return Output(Kind::kSame); }
  static Output none() { return Output(Kind::kNone); }
  static Output fill(std::size_t max_bytes, Filler filler) {
    Output out(Kind::kFill);
    out.fill_max_ = max_bytes;
    out.filler_ = std::move(filler);
    return out;
  }

  Kind kind() const noexcept { return kind_; }
  const std::string& bytes() const noexcept { return bytes_; }
  std::string& bytes() noexcept { return bytes_; }
  std::size_t fill_max() const noexcept { return fill_max_; }
  const Filler& filler() const noexcept { return filler_; }

 private:
  explicit Output(Kind kind) : kind_(kind) {}
  Kind kind_;
  std::string bytes_;
  std::size_t fill_max_ = 0;
  Filler filler_;
};

// The outgoing frame of a result: `fields` (every field but the payload is
// kept) with the payload `output` gives (kBytes, or kFill written in place),
// under `topic`, in `pool`. A filler that throws or claims more than its
// room is an error (kInvalidArgument naming it); the block is given back.
[[nodiscard]] Result<Frame> build_result(BlockPool& pool, SlotId slot, const MessageView& fields,
                                         std::string_view topic, const Output& output);

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
  // Hashed: a worker looks its method up for every message (a map of a
  // few names cost ~200 instructions a lookup in string compares).
  // Transparent, so a string_view finds without building a string.
  struct NameHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, Method, NameHash, std::equal_to<>> methods_;
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
