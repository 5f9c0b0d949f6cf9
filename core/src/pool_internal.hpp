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

// TSan ties happens-before to addresses. A process that maps one segment
// twice (a server and a shm client of the same process, as in-process
// tests do) frees a block through one mapping and reuses it through the
// other: the pool's own order (every holder's release decrement, the free
// list's release push and acquire pop, (B3) (B4) (F1) (F4)) is then on
// different addresses, and TSan reports the reuse as a race. So every drop
// of a reference releases, and every pop acquires, a process-wide stand-in
// for the block keyed by (class, index): the order the pool gives, made
// visible whatever mapping each side uses. Blocks of other pools may share
// a stand-in: more order in TSan builds only, never less. A use of a block
// after its holder dropped it is still a race (it follows the release).
#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
inline void* block_sync(std::uint32_t c, std::uint32_t index) noexcept {
  static char stand_ins[1 << 16];
  return &stand_ins[(std::size_t{index} * 64 + c) & ((1u << 16) - 1)];
}
inline void sync_dropped(std::uint32_t c, std::uint32_t index) noexcept { __tsan_release(block_sync(c, index)); }
inline void sync_popped(std::uint32_t c, std::uint32_t index) noexcept { __tsan_acquire(block_sync(c, index)); }
#else
inline void sync_dropped(std::uint32_t, std::uint32_t) noexcept {}
inline void sync_popped(std::uint32_t, std::uint32_t) noexcept {}
#endif

// For messages: "64 MiB", "3 KiB", "1000 bytes" (exact units only).
inline std::string bytes_str(std::uint64_t n) {
  constexpr std::uint64_t kKi = 1024, kMi = kKi * 1024, kGi = kMi * 1024;
  if (n >= kGi && n % kGi == 0) return std::to_string(n / kGi) + " GiB";
  if (n >= kMi && n % kMi == 0) return std::to_string(n / kMi) + " MiB";
  if (n >= kKi && n % kKi == 0) return std::to_string(n / kKi) + " KiB";
  return std::to_string(n) + " bytes";
}

}  // namespace palm::detail
