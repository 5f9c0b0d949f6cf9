#include "palm/core/error.hpp"

#include <cerrno>
#include <cstring>

namespace palm {

const char* to_string(Errc code) noexcept {
  switch (code) {
    case Errc::kOk: return "ok";
    case Errc::kInvalidArgument: return "invalid argument";
    case Errc::kOutOfRange: return "out of range";
    case Errc::kStaleHandle: return "stale handle";
    case Errc::kBadHandle: return "bad handle";
    case Errc::kExhausted: return "exhausted";
    case Errc::kTooLarge: return "too large";
    case Errc::kNoSpace: return "no space";
    case Errc::kMalformed: return "malformed";
    case Errc::kTruncated: return "truncated";
    case Errc::kInvalidUtf8: return "invalid utf-8";
    case Errc::kBadMagic: return "bad magic";
    case Errc::kVersionMismatch: return "version mismatch";
    case Errc::kNotReady: return "not ready";
    case Errc::kPermission: return "permission denied";
    case Errc::kNotFound: return "not found";
    case Errc::kAlreadyExists: return "already exists";
    case Errc::kTimeout: return "timeout";
    case Errc::kClosed: return "closed";
    case Errc::kPeerDead: return "peer dead";
    case Errc::kSystem: return "system error";
  }
  return "unknown error";
}

std::string Error::describe() const {
  std::string out = to_string(code);
  if (!message.empty()) {
    out += ": ";
    out += message;
  }
  return out;
}

tl::unexpected<Error> errno_error(int err, std::string_view what) {
  Errc code = Errc::kSystem;
  switch (err) {
    case ENOSPC: code = Errc::kNoSpace; break;
    case EACCES:
    case EPERM: code = Errc::kPermission; break;
    case ENOENT: code = Errc::kNotFound; break;
    case EEXIST: code = Errc::kAlreadyExists; break;
    case EINVAL: code = Errc::kInvalidArgument; break;
    case ETIMEDOUT: code = Errc::kTimeout; break;
    case ESRCH: code = Errc::kPeerDead; break;
    default: break;
  }
  std::string msg(what);
  msg += ": ";
  msg += std::strerror(err);
  return make_error(code, std::move(msg));
}

}  // namespace palm
