#pragma once
// POSIX shared-memory objects for multi-process tests: the test creates one
// by name (unique_name, removed by a ShmGuard), its peers open it by name.
//
// SharedMapping maps the whole object MAP_SHARED read-write, for tests that
// lay out their own structs in it (doorbells, rings). ShmFile is its first
// step alone (the open fd and the size), for a test that maps the fd itself:
// a pool test hands it to palm::MappedRegion::map_fd, which keeps the fd for
// posix_fallocate and forgets ASan's poison before it unmaps.
//
// Both are palm-free (the support library links no palm module): a failure
// is nullopt with errno set by the call that failed, for the caller to turn
// into its own error type. Neither unlinks the name: ShmGuard does.

#include <cstddef>
#include <optional>
#include <string>
#include <utility>

namespace palm::test {

// An open POSIX shm object; closes its fd on destruction. Move-only: one
// owner closes. Not thread-safe to move or destroy while others use fd().
class ShmFile {
 public:
  // Creates `name` (a unique_name: no leading '/') exclusively, mode 0600,
  // and sizes it to `bytes` (ftruncate: zero-filled, nothing reserved yet).
  // nullopt if the name exists or a call fails.
  static std::optional<ShmFile> create(const std::string& name, std::size_t bytes);
  // Opens an existing `name` read-write; size() is its current size (fstat).
  static std::optional<ShmFile> open(const std::string& name);

  ShmFile(ShmFile&& other) noexcept;
  ShmFile(const ShmFile&) = delete;  // one owner closes the fd
  ShmFile& operator=(const ShmFile&) = delete;
  ShmFile& operator=(ShmFile&&) = delete;  // not needed: held by value or in an optional
  ~ShmFile();

  // Close-on-exec: a spawned peer opens the object by name instead.
  int fd() const { return fd_; }
  std::size_t size() const { return size_; }

 private:
  ShmFile(int fd, std::size_t size) : fd_(fd), size_(size) {}

  int fd_;
  std::size_t size_;
};

// A POSIX shm object mapped MAP_SHARED read-write; unmaps and closes on
// destruction. Move-only: one owner unmaps. The mapping itself is shared by
// every process that maps the name.
class SharedMapping {
 public:
  // Creates `name` exclusively (0600) with `bytes` zero bytes, and maps it.
  static std::optional<SharedMapping> create(const std::string& name, std::size_t bytes);
  // Opens the existing `name` and maps its first `bytes`. nullopt (EINVAL)
  // if it is shorter: touching past its end would raise SIGBUS.
  static std::optional<SharedMapping> open(const std::string& name, std::size_t bytes);

  SharedMapping(SharedMapping&& other) noexcept;
  SharedMapping(const SharedMapping&) = delete;  // one owner unmaps
  SharedMapping& operator=(const SharedMapping&) = delete;
  SharedMapping& operator=(SharedMapping&&) = delete;  // not needed: held by value or in an optional
  ~SharedMapping();

  void* data() const { return data_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  std::size_t size() const { return bytes_; }
  int fd() const { return file_.fd(); }

 private:
  static std::optional<SharedMapping> map(ShmFile file, std::size_t bytes);
  SharedMapping(ShmFile file, void* data, std::size_t bytes)
      : file_(std::move(file)), data_(data), bytes_(bytes) {}

  ShmFile file_;
  void* data_;
  std::size_t bytes_;
};

}  // namespace palm::test
