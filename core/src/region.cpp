#include "palm/core/region.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <utility>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace palm {
namespace {

// One syscall wrapper each: errno mapped once, the message names the call.
Result<std::byte*> map_shared(int fd, std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    return errno_error(errno, "mmap of " + std::to_string(bytes) + " bytes");
  }
  return static_cast<std::byte*>(p);
}

}  // namespace

Result<MappedRegion> MappedRegion::create_anonymous(std::size_t bytes, const char* debug_name) {
  if (bytes == 0) return make_error(Errc::kInvalidArgument, "a region of 0 bytes");
  const int fd = ::memfd_create(debug_name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return errno_error(errno, "memfd_create");
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int err = errno;
    ::close(fd);
    return errno_error(err, "ftruncate of a memfd to " + std::to_string(bytes) + " bytes");
  }
  auto base = map_shared(fd, bytes);
  if (!base) {
    ::close(fd);
    return tl::unexpected(std::move(base.error()));
  }
  return MappedRegion(*base, bytes, fd);
}

Result<MappedRegion> MappedRegion::map_fd(int fd, std::size_t bytes) {
  if (bytes == 0) return make_error(Errc::kInvalidArgument, "a region of 0 bytes");
  struct stat st {};
  if (::fstat(fd, &st) != 0) return errno_error(errno, "fstat of the region's fd");
  if (st.st_size < 0 || static_cast<std::size_t>(st.st_size) < bytes) {
    return make_error(Errc::kInvalidArgument,
                      "the file is " + std::to_string(st.st_size) + " bytes, the mapping needs " +
                          std::to_string(bytes) + " (touching past its end would raise SIGBUS)");
  }
  const int own = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) return errno_error(errno, "dup of the region's fd");
  auto base = map_shared(own, bytes);
  if (!base) {
    ::close(own);
    return tl::unexpected(std::move(base.error()));
  }
  return MappedRegion(*base, bytes, own);
}

void forget_region_poison(const Region& region) noexcept {
#if defined(__SANITIZE_ADDRESS__)
  if (region.base != nullptr) ASAN_UNPOISON_MEMORY_REGION(region.base, region.size);
#else
  static_cast<void>(region);
#endif
}

MappedRegion::MappedRegion(MappedRegion&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      fd_(std::exchange(other.fd_, -1)) {}

MappedRegion& MappedRegion::operator=(MappedRegion&& other) noexcept {
  if (this != &other) {
    reset();
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

MappedRegion::~MappedRegion() { reset(); }

void MappedRegion::reset() noexcept {
  if (base_ != nullptr) {
    forget_region_poison(region());
    ::munmap(base_, size_);
  }
  if (fd_ >= 0) ::close(fd_);
  base_ = nullptr;
  size_ = 0;
  fd_ = -1;
}

}  // namespace palm
