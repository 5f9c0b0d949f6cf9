#include "palm/transport/address.hpp"

#include <array>
#include <string>
#include <utility>

namespace palm::transport {
namespace {

struct SchemeName {
  std::string_view prefix;
  Scheme scheme;
};

constexpr std::array<SchemeName, 5> kSchemes{{
    {"tcp://", Scheme::kTcp},
    {"ipc://", Scheme::kIpc},
    {"inproc://", Scheme::kInproc},
    {"shm://", Scheme::kShm},
    {"auto://", Scheme::kAuto},
}};

}  // namespace

const char* to_string(Scheme scheme) noexcept {
  switch (scheme) {
    case Scheme::kTcp: return "tcp";
    case Scheme::kIpc: return "ipc";
    case Scheme::kInproc: return "inproc";
    case Scheme::kShm: return "shm";
    case Scheme::kAuto: return "auto";
  }
  return "unknown";
}

Result<Address> Address::parse(std::string_view text) {
  for (const SchemeName& s : kSchemes) {
    if (text.substr(0, s.prefix.size()) != s.prefix) continue;
    if (text.size() == s.prefix.size()) {
      return make_error(Errc::kInvalidArgument,
                        "address '" + std::string(text) + "' names no host, path or name after " +
                            std::string(s.prefix));
    }
    Address a;
    a.scheme = s.scheme;
    a.text = std::string(text);
    a.rest = std::string(text.substr(s.prefix.size()));
    return a;
  }
  return make_error(Errc::kInvalidArgument,
                    "address '" + std::string(text) +
                        "' has no scheme palm knows (tcp://, ipc://, inproc://, shm://, auto://)");
}

}  // namespace palm::transport
