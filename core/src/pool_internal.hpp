#pragma once
// Internals shared by the block pool's sources, not part of its interface
// (core/src only): pool.cpp (addressing, validation, free lists, held lists,
// blocks: the hot paths), pool_create.cpp (config, layout, create, attach),
// pool_repair.cpp (process slots, reclaim, stats, audit).

#include <cstddef>
#include <cstdint>
#include <string>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace palm::detail {

// BlockHeader::owner of a block no slot has allocated.
inline constexpr std::uint32_t kNoOwner = 0xFFFFFFFFu;

// Each process has its own ASan shadow of the shared mapping: a block's data
// is poisoned where it is freed and unpoisoned where it is allocated or a
// handle to it is resolved (another process may have freed or allocated it).
inline void poison(std::byte* p, std::size_t n) noexcept {
#if defined(__SANITIZE_ADDRESS__)
  ASAN_POISON_MEMORY_REGION(p, n);
#else
  static_cast<void>(p);
  static_cast<void>(n);
#endif
}
inline void unpoison(std::byte* p, std::size_t n) noexcept {
#if defined(__SANITIZE_ADDRESS__)
  ASAN_UNPOISON_MEMORY_REGION(p, n);
#else
  static_cast<void>(p);
  static_cast<void>(n);
#endif
}

// For messages: "64 MiB", "3 KiB", "1000 bytes" (exact units only).
inline std::string bytes_str(std::uint64_t n) {
  constexpr std::uint64_t kKi = 1024, kMi = kKi * 1024, kGi = kMi * 1024;
  if (n >= kGi && n % kGi == 0) return std::to_string(n / kGi) + " GiB";
  if (n >= kMi && n % kMi == 0) return std::to_string(n / kMi) + " MiB";
  if (n >= kKi && n % kKi == 0) return std::to_string(n / kKi) + " KiB";
  return std::to_string(n) + " bytes";
}

}  // namespace palm::detail
