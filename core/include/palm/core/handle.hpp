#pragma once
// Handle: the name of one block of a BlockPool, a 64-bit value that travels
// through channels instead of the bytes. It is a plain value: it owns
// nothing (the pool's refcount and held lists say who holds a reference), and
// it means something only in the pool (the segment) it came from.
//
// Bit layout (little end first):
//
//   63                               32 31      26 25                       0
//  +-----------------------------------+----------+--------------------------+
//  |        generation (32 bits)       | class(6) |     block index (26)     |
//  +-----------------------------------+----------+--------------------------+
//
//   index       the block's index inside its size class (< 2^26 blocks)
//   class       the size class: block size = 256 B << class
//   generation  the block's generation when the handle was made; the pool
//               bumps it on every free, so an old handle is caught as stale.
//               Generations are never 0, hence a valid handle is never 0 and
//               0 is the null handle.
//
// A handle is checked by the pool on every use (class and index in range,
// generation current, block allocated): it catches bugs, not attackers.

#include <compare>
#include <cstdint>
#include <type_traits>

namespace palm {

class Handle {
 public:
  static constexpr unsigned kIndexBits = 26;
  static constexpr unsigned kClassBits = 6;
  static constexpr unsigned kGenerationBits = 32;
  static constexpr std::uint32_t kMaxIndex = (std::uint32_t{1} << kIndexBits) - 1;
  static constexpr std::uint32_t kMaxClass = (std::uint32_t{1} << kClassBits) - 1;

  constexpr Handle() noexcept = default;

  // Packs the three fields. The caller keeps them in range (index <=
  // kMaxIndex, size_class <= kMaxClass, generation != 0); out-of-range bits
  // are masked off, never spilled into a neighbour field.
  static constexpr Handle pack(std::uint32_t size_class, std::uint32_t index,
                               std::uint32_t generation) noexcept {
    return Handle((std::uint64_t{generation} << (kIndexBits + kClassBits)) |
                  (std::uint64_t{size_class & kMaxClass} << kIndexBits) |
                  std::uint64_t{index & kMaxIndex});
  }
  // A handle received as raw bits (from a ring, a frame, argv). Not checked
  // here: the pool checks it on use.
  static constexpr Handle from_bits(std::uint64_t bits) noexcept { return Handle(bits); }

  constexpr std::uint64_t bits() const noexcept { return bits_; }
  constexpr std::uint32_t index() const noexcept {
    return static_cast<std::uint32_t>(bits_) & kMaxIndex;
  }
  constexpr std::uint32_t size_class() const noexcept {
    return static_cast<std::uint32_t>(bits_ >> kIndexBits) & kMaxClass;
  }
  constexpr std::uint32_t generation() const noexcept {
    return static_cast<std::uint32_t>(bits_ >> (kIndexBits + kClassBits));
  }
  constexpr bool is_null() const noexcept { return bits_ == 0; }
  constexpr explicit operator bool() const noexcept { return bits_ != 0; }

  // Total order on the bits: for sorting and maps, no other meaning.
  friend constexpr auto operator<=>(const Handle&, const Handle&) noexcept = default;

 private:
  constexpr explicit Handle(std::uint64_t bits) noexcept : bits_(bits) {}
  std::uint64_t bits_ = 0;
};

static_assert(Handle::kIndexBits + Handle::kClassBits + Handle::kGenerationBits == 64);
static_assert(sizeof(Handle) == 8);
static_assert(std::is_trivially_copyable_v<Handle>);
static_assert(std::is_standard_layout_v<Handle>);
static_assert(Handle::pack(5, 7, 9).size_class() == 5);
static_assert(Handle::pack(5, 7, 9).index() == 7);
static_assert(Handle::pack(5, 7, 9).generation() == 9);
static_assert(Handle::pack(0, 0, 1).bits() != 0, "generation 1 keeps handles non-null");

}  // namespace palm
