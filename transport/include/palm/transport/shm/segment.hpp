#pragma once
// A palm shared-memory segment: one POSIX shared-memory object (created and
// mapped with Boost.Interprocess `shared_memory_object` + `mapped_region`,
// not its managed segment, whose allocator lock does not survive a peer's
// death), starting with palm's header and a table of areas (the block pool,
// the channels, ...).
//
// The creator fills the header, then stores the layout version last
// (release); an attacher loads it (acquire): 0 means not ready yet, another
// value is a layout it cannot read. The object is created 0600 and a segment
// of another user is refused. The file is sparse: an area is reserved (with
// posix_fallocate, by its user) only where it is used.
//
// Thread-safety: a Segment object is not shared between threads while it is
// created or destroyed; the mapping itself is shared by everyone.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "palm/core/error.hpp"
#include "palm/core/process.hpp"

namespace palm::shm {

inline constexpr std::size_t kMaxAreas = 8;
inline constexpr std::size_t kAreaNameBytes = 24;

struct AreaSpec {
  std::string name;   // at most kAreaNameBytes - 1 bytes
  std::size_t bytes;  // rounded up to a page
};

// A mapped area of a segment. `file_offset` is where it starts in the
// segment's file, for posix_fallocate on `fd`.
struct Area {
  std::byte* base = nullptr;
  std::size_t bytes = 0;
  int fd = -1;
  std::uint64_t file_offset = 0;
};

class Segment {
 public:
  // Creates segment `name` (no leading '/') holding `areas`, owned by this
  // process. Fails with kAlreadyExists if the name is taken.
  static Result<Segment> create(std::string_view name, const std::vector<AreaSpec>& areas);
  // Opens an existing segment; checks owner uid, magic and version.
  static Result<Segment> open(std::string_view name);
  // Removes the name (mapped users keep their mapping). Missing: not an error.
  static void remove(std::string_view name) noexcept;

  Segment(Segment&&) noexcept;
  Segment& operator=(Segment&&) noexcept;
  Segment(const Segment&) = delete;  // one owner unmaps
  Segment& operator=(const Segment&) = delete;
  ~Segment();

  const std::string& name() const { return name_; }
  std::uint64_t nonce() const;
  ProcessId owner() const;
  bool owned() const { return owned_; }  // created by this object
  // The area named `name`, or kNotFound.
  Result<Area> area(std::string_view name) const;

 private:
  struct Impl;
  explicit Segment(std::unique_ptr<Impl> impl, std::string name, bool owned);
  std::unique_ptr<Impl> impl_;
  std::string name_;
  bool owned_ = false;
};

// Names of palm segments in /dev/shm whose owner process is dead, after
// removing them. `prefix` restricts the names considered ("palm-" by default).
std::vector<std::string> remove_stale_segments(std::string_view prefix = "palm-");

}  // namespace palm::shm
