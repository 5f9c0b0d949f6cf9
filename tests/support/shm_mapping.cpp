#include "shm_mapping.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace palm::test {
namespace {

// Closes `fd` keeping the errno of the call that failed before it.
void close_keeping_errno(int fd) {
  const int err = errno;
  ::close(fd);
  errno = err;
}

}  // namespace

std::optional<ShmFile> ShmFile::create(const std::string& name, std::size_t bytes) {
  const int fd = ::shm_open(("/" + name).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return std::nullopt;
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    close_keeping_errno(fd);
    return std::nullopt;
  }
  return ShmFile(fd, bytes);
}

std::optional<ShmFile> ShmFile::open(const std::string& name) {
  const int fd = ::shm_open(("/" + name).c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    close_keeping_errno(fd);
    return std::nullopt;
  }
  return ShmFile(fd, static_cast<std::size_t>(st.st_size));
}

ShmFile::ShmFile(ShmFile&& other) noexcept : fd_(std::exchange(other.fd_, -1)), size_(other.size_) {}

ShmFile::~ShmFile() {
  if (fd_ >= 0) ::close(fd_);
}

std::optional<SharedMapping> SharedMapping::create(const std::string& name, std::size_t bytes) {
  auto file = ShmFile::create(name, bytes);
  if (!file) return std::nullopt;
  return map(std::move(*file), bytes);
}

std::optional<SharedMapping> SharedMapping::open(const std::string& name, std::size_t bytes) {
  auto file = ShmFile::open(name);
  if (!file) return std::nullopt;
  return map(std::move(*file), bytes);
}

std::optional<SharedMapping> SharedMapping::map(ShmFile file, std::size_t bytes) {
  int err = EINVAL;  // the object is shorter than `bytes`
  if (bytes <= file.size()) {
    void* mem = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, file.fd(), 0);
    if (mem != MAP_FAILED) return SharedMapping(std::move(file), mem, bytes);
    err = errno;
  }
  { const ShmFile closing = std::move(file); }  // close the fd now, then report the failure's errno
  errno = err;
  return std::nullopt;
}

SharedMapping::SharedMapping(SharedMapping&& other) noexcept
    : file_(std::move(other.file_)), data_(std::exchange(other.data_, nullptr)), bytes_(other.bytes_) {}

SharedMapping::~SharedMapping() {
  if (data_ != nullptr) ::munmap(data_, bytes_);
}

}  // namespace palm::test
