#include "palm/transport/shm/host_identity.hpp"

#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace palm::shm {

std::string HostIdentity::to_string() const {
  return "boot=" + boot_id + ";shm=" + std::to_string(shm_dev) + ":" + std::to_string(shm_ino) + ":" +
         std::to_string(shm_fsid) + ";pidns=" + pid_ns;
}

Result<HostIdentity> HostIdentity::parse(std::string_view text) {
  const auto bad = [&] {
    return make_error(Errc::kMalformed, "host identity '" + std::string(text) +
                                            "' is not boot=<id>;shm=<dev>:<ino>:<fsid>;pidns=<ns>");
  };
  HostIdentity id;
  std::string_view rest = text;
  const auto field = [&](std::string_view key, std::string_view& value) {
    if (rest.substr(0, key.size()) != key) return false;
    rest.remove_prefix(key.size());
    const std::size_t end = rest.find(';');
    value = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end + 1);
    return true;
  };
  std::string_view boot, shm, ns;
  if (!field("boot=", boot) || !field("shm=", shm) || !field("pidns=", ns) || !rest.empty()) return bad();
  id.boot_id = std::string(boot);
  id.pid_ns = std::string(ns);
  std::uint64_t parts[3] = {};
  std::size_t p = 0;
  for (int i = 0; i < 3; ++i) {
    const std::size_t end = i < 2 ? shm.find(':', p) : shm.size();
    if (end == std::string_view::npos || end == p) return bad();
    std::uint64_t v = 0;
    for (std::size_t k = p; k < end; ++k) {
      if (shm[k] < '0' || shm[k] > '9') return bad();
      v = v * 10 + static_cast<std::uint64_t>(shm[k] - '0');
    }
    parts[i] = v;
    p = end + 1;
  }
  id.shm_dev = parts[0];
  id.shm_ino = parts[1];
  id.shm_fsid = parts[2];
  if (id.boot_id.empty() || id.pid_ns.empty()) return bad();
  return id;
}

Result<HostIdentity> host_identity() {
  HostIdentity id;
  {
    std::ifstream f("/proc/sys/kernel/random/boot_id");
    if (!(f >> id.boot_id) || id.boot_id.empty()) {
      return make_error(Errc::kSystem, "cannot read /proc/sys/kernel/random/boot_id: shm needs /proc");
    }
  }
  struct stat st {};
  if (::stat("/dev/shm", &st) != 0) return errno_error(errno, "stat /dev/shm");
  id.shm_dev = static_cast<std::uint64_t>(st.st_dev);
  id.shm_ino = static_cast<std::uint64_t>(st.st_ino);
  struct statfs fs {};
  if (::statfs("/dev/shm", &fs) != 0) return errno_error(errno, "statfs /dev/shm");
  std::uint32_t words[2] = {};
  static_assert(sizeof(fs.f_fsid) == sizeof(words));
  std::memcpy(words, &fs.f_fsid, sizeof words);
  id.shm_fsid = (std::uint64_t{words[0]} << 32) | words[1];
  char buf[128];
  const ssize_t n = ::readlink("/proc/self/ns/pid", buf, sizeof buf - 1);
  if (n <= 0) return errno_error(errno, "readlink /proc/self/ns/pid");
  id.pid_ns.assign(buf, static_cast<std::size_t>(n));
  return id;
}

std::optional<std::string> shm_obstacle(const HostIdentity& a, const HostIdentity& b) {
  if (a.boot_id != b.boot_id) return "different boot id (" + a.boot_id + " vs " + b.boot_id + "): another host";
  if (a.shm_dev != b.shm_dev || a.shm_ino != b.shm_ino || a.shm_fsid != b.shm_fsid) {
    return std::string("different /dev/shm (another mount: a container?)");
  }
  if (a.pid_ns != b.pid_ns) {
    return "different pid namespace (" + a.pid_ns + " vs " + b.pid_ns +
           "): liveness by pid cannot work across pid namespaces";
  }
  return std::nullopt;
}

const char* to_string(TransportMode mode) noexcept {
  switch (mode) {
    case TransportMode::kAuto: return "auto";
    case TransportMode::kShm: return "shm";
    case TransportMode::kTcp: return "tcp";
  }
  return "unknown";
}

const char* to_string(TransportChoice choice) noexcept {
  return choice == TransportChoice::kShm ? "shm" : "tcp";
}

Result<TransportMode> parse_transport_mode(std::string_view text) {
  if (text.empty() || text == "auto") return TransportMode::kAuto;
  if (text == "shm") return TransportMode::kShm;
  if (text == "tcp") return TransportMode::kTcp;
  return make_error(Errc::kInvalidArgument,
                    "PALM_TRANSPORT='" + std::string(text) + "' is not one of auto, shm, tcp");
}

Result<TransportMode> transport_mode_from_env() {
  const char* v = std::getenv("PALM_TRANSPORT");  // NOLINT(concurrency-mt-unsafe): read-only use
  return parse_transport_mode(v == nullptr ? std::string_view{} : std::string_view(v));
}

Result<TransportChoice> choose_transport(TransportMode mode, const HostIdentity& local,
                                         const std::optional<HostIdentity>& peer, std::string* why) {
  const auto say = [&](std::string s) {
    if (why != nullptr) *why = std::move(s);
  };
  if (mode == TransportMode::kTcp) {
    say("tcp: PALM_TRANSPORT=tcp");
    return TransportChoice::kTcp;
  }
  std::optional<std::string> obstacle;
  if (!peer) {
    obstacle = "the peer published no host identity (a pylm peer, or not a palm server)";
  } else {
    obstacle = shm_obstacle(local, *peer);
  }
  if (!obstacle) {
    say("shm: same host, same /dev/shm, same pid namespace");
    return TransportChoice::kShm;
  }
  if (mode == TransportMode::kShm) {
    return make_error(Errc::kInvalidArgument, "PALM_TRANSPORT=shm but shared memory is impossible with this peer: " +
                                                  *obstacle + "; use PALM_TRANSPORT=auto or tcp");
  }
  say("tcp: " + *obstacle);
  return TransportChoice::kTcp;
}

}  // namespace palm::shm
