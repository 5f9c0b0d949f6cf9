#pragma once
// Constants of palm's shared layouts. They are an ABI between processes, so
// they are fixed numbers, not std::hardware_destructive_interference_size
// (which follows compiler flags).

#include <cstddef>

namespace palm {

inline constexpr std::size_t kCacheLine = 64;
// Hot atomics written by different sides are kept this far apart: the
// adjacent-line prefetcher pulls cache lines in pairs.
inline constexpr std::size_t kFalseSharingRange = 128;

}  // namespace palm
