#pragma once
// Host identity for transport auto-selection (DESIGN.md "Transports and
// auto-selection"): two palm processes may talk through a shared-memory
// segment only if they run on the same kernel (boot id), see the same
// /dev/shm (a container may mount its own), and share a pid namespace
// (liveness is checked by pid + start time, which mean nothing across pid
// namespaces). Otherwise they use TCP.
//
// The rule: same boot id, same /dev/shm, same pid namespace -> shm, else tcp.
// PALM_TRANSPORT=auto|shm|tcp overrides: tcp always, shm or an error that
// names what differs, auto by the rule.
//
// Thread-safe; the reads go to /proc and /dev/shm each call.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "palm/core/error.hpp"

namespace palm::shm {

struct HostIdentity {
  std::string boot_id;         // /proc/sys/kernel/random/boot_id
  std::uint64_t shm_dev = 0;   // stat("/dev/shm").st_dev as this process sees it
  std::uint64_t shm_ino = 0;   //                  .st_ino
  std::uint64_t shm_fsid = 0;  // statfs("/dev/shm").f_fsid (both words)
  std::string pid_ns;          // readlink("/proc/self/ns/pid"), e.g. "pid:[4026531836]"

  // One line, for the cache key a server publishes:
  // "boot=<id>;shm=<dev>:<ino>:<fsid>;pidns=<ns>".
  std::string to_string() const;
  // Parses to_string()'s form; kMalformed naming the text otherwise.
  [[nodiscard]] static Result<HostIdentity> parse(std::string_view text);

  friend bool operator==(const HostIdentity&, const HostIdentity&) = default;
};

// This process's identity. kSystem (naming the file) if /proc or /dev/shm
// cannot be read: shm is then impossible.
[[nodiscard]] Result<HostIdentity> host_identity();

// Why `a` and `b` cannot share memory ("different boot id", "different
// /dev/shm", "different pid namespace"), or nullopt if they can.
std::optional<std::string> shm_obstacle(const HostIdentity& a, const HostIdentity& b);

enum class TransportMode : std::uint8_t { kAuto, kShm, kTcp };
enum class TransportChoice : std::uint8_t { kShm, kTcp };
const char* to_string(TransportMode mode) noexcept;
const char* to_string(TransportChoice choice) noexcept;

// "auto", "shm", "tcp" (case-sensitive; "" = auto). kInvalidArgument naming
// the value and the choices otherwise.
[[nodiscard]] Result<TransportMode> parse_transport_mode(std::string_view text);
// PALM_TRANSPORT from the environment (unset: auto).
[[nodiscard]] Result<TransportMode> transport_mode_from_env();

// Applies the rule. `peer` is the identity the server published (nullopt: a
// pylm peer or none published). kShm mode where shm is impossible is an
// error (kInvalidArgument) that names the reason; `why` (if given) gets a
// line for the INFO log in every case.
[[nodiscard]] Result<TransportChoice> choose_transport(TransportMode mode, const HostIdentity& local,
                                                       const std::optional<HostIdentity>& peer,
                                                       std::string* why = nullptr);

}  // namespace palm::shm
