#pragma once
// Byte regions shared between processes. The core knows nothing of named
// segments: the transport layer creates and names them, and hands the core a
// Region (a view); MappedRegion is the RAII mapping used by tests, benchmarks
// and anonymous (memfd) pools.

#include <cstddef>
#include <cstdint>

#include "palm/core/error.hpp"

namespace palm {

// A non-owning view of a mapped range. `fd` (-1 if none) is the file behind
// it and `file_offset` where `base` sits in that file: the pool reserves the
// parts it uses with posix_fallocate(fd, file_offset + off, len), so a full
// backing store (/dev/shm) is an error at reservation, never a SIGBUS on a
// later write. Trivially copyable; the mapping must outlive every user.
struct Region {
  std::byte* base = nullptr;
  std::size_t size = 0;
  int fd = -1;
  std::uint64_t file_offset = 0;
};

// Under ASan, a BlockPool poisons the free blocks of a region in this
// process's shadow memory, and ASan keeps that poison after munmap: a later
// mapping at the same address would fault. Call this before unmapping a
// region a pool used (MappedRegion does). A no-op in other builds.
void forget_region_poison(const Region& region) noexcept;

// Owns a MAP_SHARED mapping and its file descriptor; unmaps and closes on
// destruction. Move-only: one owner unmaps. Not thread-safe to move or
// destroy while others use region(); the mapping itself is shared by all.
class MappedRegion {
 public:
  // A new memfd of `bytes` (ftruncate: sparse, nothing reserved until
  // used), mapped shared. `debug_name` shows in /proc/<pid>/maps. The fd is
  // close-on-exec; share it with a child through SCM_RIGHTS or inheritance.
  [[nodiscard]] static Result<MappedRegion> create_anonymous(std::size_t bytes,
                                                             const char* debug_name = "palm-region");
  // Maps `bytes` of a file another party created (a POSIX shm fd, a memfd).
  // The fd is dup'ed: the caller keeps (and closes) its own. Fails with
  // kInvalidArgument if the file is shorter than `bytes` (touching past its
  // end would raise SIGBUS).
  [[nodiscard]] static Result<MappedRegion> map_fd(int fd, std::size_t bytes);

  MappedRegion() = default;
  MappedRegion(MappedRegion&& other) noexcept;
  MappedRegion& operator=(MappedRegion&& other) noexcept;
  MappedRegion(const MappedRegion&) = delete;  // one owner unmaps and closes
  MappedRegion& operator=(const MappedRegion&) = delete;
  ~MappedRegion();

  Region region() const noexcept { return Region{base_, size_, fd_, 0}; }
  std::byte* data() const noexcept { return base_; }
  std::size_t size() const noexcept { return size_; }
  int fd() const noexcept { return fd_; }

 private:
  MappedRegion(std::byte* base, std::size_t size, int fd) noexcept
      : base_(base), size_(size), fd_(fd) {}
  void reset() noexcept;

  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
  int fd_ = -1;
};

}  // namespace palm
