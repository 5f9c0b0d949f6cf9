#include "palm/transport/shm/segment.hpp"

#include "palm/core/region.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <random>
#include <type_traits>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

namespace palm::shm {
namespace bip = boost::interprocess;

namespace {

constexpr std::uint64_t kMagic = 0x314745534d4c4150ull;  // "PALMSEG1"
// Bump on any change of width, order or meaning of the header.
constexpr std::uint32_t kLayoutVersion = 1;
constexpr std::size_t kPage = 4096;

struct AreaEntry {
  char name[kAreaNameBytes];
  std::uint64_t offset;
  std::uint64_t bytes;
};

// Written by the creator before `version`; read-only after.
struct Header {
  std::uint64_t magic;
  std::atomic<std::uint32_t> version;  // 0 until the creator is done
  std::uint32_t area_count;
  std::uint64_t total_bytes;
  std::int32_t owner_pid;
  std::uint32_t owner_uid;
  std::uint64_t owner_start_time;
  std::uint64_t nonce;  // tells a restarted server from the dead one
  AreaEntry areas[kMaxAreas];
};
static_assert(std::is_standard_layout_v<Header>);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(Header) <= kPage);

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

std::uint64_t random_nonce() {
  std::random_device rd;
  std::uint64_t n = 0;
  while (n == 0) n = (std::uint64_t{rd()} << 32) | rd();
  return n;
}

}  // namespace

struct Segment::Impl {
  bip::shared_memory_object object;
  bip::mapped_region region;
  Header* header() const { return static_cast<Header*>(region.get_address()); }
  // A pool in this mapping poisons freed blocks for ASan, which keeps the
  // poison after munmap: clear it before the region is unmapped.
  ~Impl() {
    if (region.get_address() != nullptr) {
      forget_region_poison(Region{static_cast<std::byte*>(region.get_address()), region.get_size()});
    }
  }
};

Segment::Segment(std::unique_ptr<Impl> impl, std::string name, bool owned)
    : impl_(std::move(impl)), name_(std::move(name)), owned_(owned) {}
Segment::Segment(Segment&&) noexcept = default;
Segment& Segment::operator=(Segment&&) noexcept = default;
Segment::~Segment() = default;

Result<Segment> Segment::create(std::string_view name, const std::vector<AreaSpec>& areas) {
  if (areas.size() > kMaxAreas) {
    return make_error(Errc::kInvalidArgument, "a segment holds at most " +
                                                  std::to_string(kMaxAreas) + " areas");
  }
  std::size_t total = kPage;
  for (const auto& a : areas) {
    if (a.name.size() >= kAreaNameBytes) {
      return make_error(Errc::kInvalidArgument, "area name too long: " + a.name);
    }
    total += round_up(a.bytes, kPage);
  }
  auto impl = std::make_unique<Impl>();
  const std::string sname(name);
  try {
    bip::permissions perm(0600);
    impl->object = bip::shared_memory_object(bip::create_only, sname.c_str(), bip::read_write, perm);
  } catch (const bip::interprocess_exception& e) {
    if (e.get_error_code() == bip::already_exists_error) {
      return make_error(Errc::kAlreadyExists, "segment /dev/shm/" + sname + " exists");
    }
    return make_error(Errc::kSystem, "creating segment /dev/shm/" + sname + ": " + e.what());
  }
  try {
    // Sparse: no page is reserved until an area's user reserves it.
    impl->object.truncate(static_cast<bip::offset_t>(total));
    impl->region = bip::mapped_region(impl->object, bip::read_write);
  } catch (const bip::interprocess_exception& e) {
    bip::shared_memory_object::remove(sname.c_str());
    return make_error(Errc::kSystem, "mapping segment /dev/shm/" + sname + ": " + e.what());
  }
  // The header page is written now: reserve it so a full /dev/shm fails here.
  const int fd = impl->object.get_mapping_handle().handle;
  if (const int err = ::posix_fallocate(fd, 0, kPage); err != 0) {
    bip::shared_memory_object::remove(sname.c_str());
    return errno_error(err, "reserving the header of /dev/shm/" + sname);
  }
  Header* h = impl->header();
  const ProcessId me = self_process();
  h->magic = kMagic;
  h->area_count = static_cast<std::uint32_t>(areas.size());
  h->total_bytes = total;
  h->owner_pid = me.pid;
  h->owner_uid = ::geteuid();
  h->owner_start_time = me.start_time;
  h->nonce = random_nonce();
  std::uint64_t offset = kPage;
  for (std::size_t i = 0; i < areas.size(); ++i) {
    std::memset(h->areas[i].name, 0, kAreaNameBytes);
    std::memcpy(h->areas[i].name, areas[i].name.data(), areas[i].name.size());
    h->areas[i].offset = offset;
    h->areas[i].bytes = round_up(areas[i].bytes, kPage);
    offset += h->areas[i].bytes;
  }
  // (V1) Publish. Pairs with (V2) in open(): an attacher that reads the
  // version also sees every header field written above.
  h->version.store(kLayoutVersion, std::memory_order_release);
  return Segment(std::move(impl), sname, true);
}

Result<Segment> Segment::open(std::string_view name) {
  auto impl = std::make_unique<Impl>();
  const std::string sname(name);
  try {
    impl->object = bip::shared_memory_object(bip::open_only, sname.c_str(), bip::read_write);
  } catch (const bip::interprocess_exception& e) {
    if (e.get_error_code() == bip::not_found_error) {
      return make_error(Errc::kNotFound, "no segment /dev/shm/" + sname);
    }
    return make_error(Errc::kPermission, "opening segment /dev/shm/" + sname + ": " + e.what());
  }
  struct stat st {};
  const int fd = impl->object.get_mapping_handle().handle;
  if (::fstat(fd, &st) != 0) return errno_error(errno, "fstat /dev/shm/" + sname);
  if (st.st_uid != ::geteuid()) {
    return make_error(Errc::kPermission, "segment /dev/shm/" + sname + " belongs to uid " +
                                             std::to_string(st.st_uid) + ", not to this user (" +
                                             std::to_string(::geteuid()) + ")");
  }
  if (static_cast<std::size_t>(st.st_size) < kPage) {
    return make_error(Errc::kNotReady, "segment /dev/shm/" + sname + " is still being created");
  }
  try {
    impl->region = bip::mapped_region(impl->object, bip::read_write);
  } catch (const bip::interprocess_exception& e) {
    return make_error(Errc::kSystem, "mapping segment /dev/shm/" + sname + ": " + e.what());
  }
  const Header* h = impl->header();
  if (h->magic != kMagic) {
    // The magic is written before the version: a zero magic is a creator
    // that has not got that far yet.
    if (h->magic == 0) {
      return make_error(Errc::kNotReady, "segment /dev/shm/" + sname + " is still being created");
    }
    return make_error(Errc::kBadMagic, "/dev/shm/" + sname + " is not a palm segment");
  }
  // (V2) Pairs with (V1): the header is complete once the version reads non-zero.
  const std::uint32_t v = h->version.load(std::memory_order_acquire);
  if (v == 0) {
    return make_error(Errc::kNotReady, "segment /dev/shm/" + sname + " is still being created");
  }
  if (v != kLayoutVersion) {
    return make_error(Errc::kVersionMismatch,
                      "segment /dev/shm/" + sname + " has layout version " + std::to_string(v) +
                          ", this palm reads version " + std::to_string(kLayoutVersion));
  }
  if (h->total_bytes > impl->region.get_size()) {
    return make_error(Errc::kMalformed, "segment /dev/shm/" + sname + " is shorter than its header says");
  }
  return Segment(std::move(impl), sname, false);
}

void Segment::remove(std::string_view name) noexcept {
  bip::shared_memory_object::remove(std::string(name).c_str());
}

std::uint64_t Segment::nonce() const { return impl_->header()->nonce; }

ProcessId Segment::owner() const {
  const Header* h = impl_->header();
  return ProcessId{h->owner_pid, h->owner_start_time};
}

Result<Area> Segment::area(std::string_view name) const {
  const Header* h = impl_->header();
  for (std::uint32_t i = 0; i < h->area_count && i < kMaxAreas; ++i) {
    if (name == std::string_view(h->areas[i].name)) {
      auto* base = static_cast<std::byte*>(impl_->region.get_address());
      return Area{base + h->areas[i].offset, h->areas[i].bytes,
                  impl_->object.get_mapping_handle().handle, h->areas[i].offset};
    }
  }
  return make_error(Errc::kNotFound, "segment " + name_ + " has no area '" + std::string(name) + "'");
}

std::vector<std::string> remove_stale_segments(std::string_view prefix) {
  std::vector<std::string> removed;
  DIR* dir = ::opendir("/dev/shm");
  if (dir == nullptr) return removed;
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(dir)) {
    std::string_view n(e->d_name);
    if (n.substr(0, prefix.size()) == prefix) names.emplace_back(n);
  }
  ::closedir(dir);
  for (const auto& n : names) {
    // Read the header without mapping the whole (sparse, maybe huge) file.
    const int fd = ::shm_open(("/" + n).c_str(), O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) continue;
    Header h{};
    struct stat st {};
    const bool ours = ::fstat(fd, &st) == 0 && st.st_uid == ::geteuid() &&
                      ::pread(fd, &h, sizeof h, 0) == static_cast<ssize_t>(sizeof h);
    ::close(fd);
    if (!ours || h.magic != kMagic) continue;
    // A segment whose version is still 0 has a creator that may be alive
    // and busy: only its owner's death makes it stale.
    if (!process_alive(ProcessId{h.owner_pid, h.owner_start_time})) {
      bip::shared_memory_object::remove(n.c_str());
      removed.push_back(n);
    }
  }
  return removed;
}

}  // namespace palm::shm
