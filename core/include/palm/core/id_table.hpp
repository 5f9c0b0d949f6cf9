#pragma once
// IdTable<T>: a map from nonzero 64-bit ids to values, for ids handed out
// in increasing order and mostly retired in about that order (the master's
// messages in flight, by dispatch id). One flat array, open addressing with
// linear probing, home slot `id & mask`: a window of consecutive ids lands
// in distinct slots, so the usual find is one compare. No allocation per
// entry (std::unordered_map allocates a node per insert: with its hashing,
// ~700 instructions per message in the master, callgrind). Robin Hood
// order: along a run, entries sit in the order of their home slots (an
// insert takes the place of an entry nearer its home, which moves on). A
// lookup then stops at the first entry nearer its home than the probe, and
// an erase shifts back only the entries up to the next one at its home (no
// tombstones, so a long-lived table does not slow down). Without that
// order, an erase in a window of consecutive ids (one long run) scanned the
// whole run: ~1 k instructions per erase at 256 in flight (callgrind).
// Single-threaded, like the containers of the standard library.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "palm/core/assert.hpp"

namespace palm {

template <class T>
class IdTable {
 public:
  explicit IdTable(std::size_t capacity = 64) { rehash(capacity < 8 ? 8 : capacity); }

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

  // The value of `id`, or nullptr. Stable until the next insert or erase.
  T* find(std::uint64_t id) noexcept {
    const std::size_t i = slot_of(id);
    return i == kAbsent ? nullptr : &slots_[i].value;
  }

  // Inserts or replaces the value of `id` (nonzero: asserted).
  T& put(std::uint64_t id, T value) {
    PALM_ASSERT(id != 0 && "IdTable ids are nonzero");
    // Load at most a half: probes stay short even when old ids linger.
    if (2 * (size_ + 1) > slots_.size()) rehash(2 * slots_.size());
    // One probe: `id` is met before any entry nearer its home than the
    // probe (the order above); from there on, `carry` is the entry being
    // placed, the new one first, then each one it displaces.
    Slot carry{id, std::move(value)};
    std::size_t placed = kAbsent;  // where the new entry went
    for (std::size_t i = id & mask_, d = 0;; i = (i + 1) & mask_, ++d) {
      Slot& s = slots_[i];
      if (s.id == 0) {
        s = std::move(carry);
        ++size_;
        return slots_[placed == kAbsent ? i : placed].value;
      }
      if (placed == kAbsent && s.id == id) {
        s.value = std::move(carry.value);
        return s.value;
      }
      if (const std::size_t sd = distance(i); sd < d) {
        std::swap(s, carry);
        if (placed == kAbsent) placed = i;
        d = sd;
      }
    }
  }

  // Removes `id` and returns its value (moved out), or false if absent.
  bool take(std::uint64_t id, T& out) {
    const std::size_t i = slot_of(id);
    if (i == kAbsent) return false;
    out = std::move(slots_[i].value);
    remove_at(i);
    return true;
  }
  bool erase(std::uint64_t id) {
    const std::size_t i = slot_of(id);
    if (i == kAbsent) return false;
    remove_at(i);
    return true;
  }

  // The ids present, in no order (for scans that erase: erasing moves
  // entries, so collect first).
  std::vector<std::uint64_t> ids() const {
    std::vector<std::uint64_t> out;
    out.reserve(size_);
    for (const Slot& s : slots_) {
      if (s.id != 0) out.push_back(s.id);
    }
    return out;
  }

 private:
  static constexpr std::size_t kAbsent = ~std::size_t{0};
  struct Slot {
    std::uint64_t id = 0;  // 0: empty
    T value{};
  };

  // How far the entry in slot `i` sits from its home, along the probe
  // direction (modulo the table size).
  std::size_t distance(std::size_t i) const noexcept { return (i - (slots_[i].id & mask_)) & mask_; }

  std::size_t slot_of(std::uint64_t id) const noexcept {
    if (id == 0) return kAbsent;
    for (std::size_t i = id & mask_, d = 0;; i = (i + 1) & mask_, ++d) {
      if (slots_[i].id == id) return i;
      if (slots_[i].id == 0 || distance(i) < d) return kAbsent;
    }
  }

  // What a slot held goes; the slot is default-initialized again. Not
  // `value = T{}`: value-initialization zeroes the whole T first (for a
  // T holding a Frame, a ~200-byte `rep stos` GCC emits on every erase).
  static void clear(T& value) noexcept {
    std::destroy_at(&value);
    ::new (static_cast<void*>(&value)) T;
  }

  // Backward-shift deletion: the entries after the hole move back one slot
  // each, up to a hole or an entry at its home (which must not move).
  void remove_at(std::size_t hole) {
    clear(slots_[hole].value);
    slots_[hole].id = 0;
    --size_;
    for (std::size_t j = (hole + 1) & mask_; slots_[j].id != 0 && distance(j) != 0; j = (j + 1) & mask_) {
      slots_[hole].id = slots_[j].id;
      slots_[hole].value = std::move(slots_[j].value);
      clear(slots_[j].value);
      slots_[j].id = 0;
      hole = j;
    }
  }

  void rehash(std::size_t capacity) {
    std::size_t n = 8;
    while (n < capacity) n *= 2;
    std::vector<Slot> old(n);
    old.swap(slots_);
    mask_ = n - 1;
    size_ = 0;
    for (Slot& s : old) {
      if (s.id != 0) put(s.id, std::move(s.value));
    }
  }

  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
};

}  // namespace palm
