#pragma once
// palm's error type. Full, empty, would-block and timeout are outcomes, not
// errors (they are small enums on the calls that have them); Result<T> is for
// failures a caller can recover from. Messages name the limit and the fix;
// they are built off the hot path.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include <tl/expected.hpp>

namespace palm {

enum class Errc : std::uint16_t {
  kOk = 0,
  kInvalidArgument,   // a caller's value is out of its domain
  kOutOfRange,        // an index or size beyond a limit
  kStaleHandle,       // a handle whose generation is no longer current
  kBadHandle,         // a handle that does not name a block of this pool
  kExhausted,         // no free block / slot left
  kTooLarge,          // bigger than the largest size class or a configured max
  kNoSpace,           // the backing store (e.g. /dev/shm) is full
  kMalformed,         // bytes that do not parse
  kTruncated,         // bytes that end in the middle of a field
  kInvalidUtf8,       // a protobuf string field that is not UTF-8
  kBadMagic,          // a shared region that is not palm's
  kVersionMismatch,   // a shared region of another layout version
  kNotReady,          // a shared region still being created
  kPermission,        // EACCES/EPERM, a segment of another user
  kNotFound,          // no such segment, key, peer
  kAlreadyExists,     // a name in use
  kTimeout,           // a bounded wait ran out (where that is an error)
  kClosed,            // shut down
  kPeerDead,          // a peer process is gone
  kSystem,            // any other errno
};

const char* to_string(Errc code) noexcept;

struct Error {
  Errc code = Errc::kOk;
  std::string message;

  // "<code>: <message>", for logs and one-line CLI errors.
  std::string describe() const;
};

template <class T>
using Result = tl::expected<T, Error>;

// An error for a `return` in a function returning Result<T>.
inline tl::unexpected<Error> make_error(Errc code, std::string message) {
  return tl::unexpected<Error>(Error{code, std::move(message)});
}

// Maps an errno to an Errc and builds "<what>: <strerror>".
tl::unexpected<Error> errno_error(int err, std::string_view what);

}  // namespace palm
