// BlockPool, processes and repair: attaching and detaching process slots,
// reclaiming a dead process's references, stats and audit. The held lists
// they drain are in pool.cpp (with the note on their memory order).
#include "palm/core/pool.hpp"

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pool_internal.hpp"

namespace palm {

using detail::atomic_of;
using detail::BlockHeader;
using detail::BlockState;
using detail::kBlockHeaderBytes;
using detail::kNilIndex;
using detail::ProcessSlot;
using detail::SlotState;
using detail::kNoOwner;
using detail::poison;

// ---------------------------------------------------------------------------
// Processes

Result<SlotId> BlockPool::attach_process(const ProcessId& id) {
  if (id.pid <= 0) return make_error(Errc::kInvalidArgument, "attach_process: pid " + std::to_string(id.pid));
  const auto pid = static_cast<std::uint32_t>(id.pid);
  for (std::uint32_t s = 0; s < process_slots_; ++s) {
    ProcessSlot& slot = slot_at(s);
    auto word = atomic_of(slot.state_pid);
    std::uint64_t w = word.load(std::memory_order_relaxed);  // a hint; the CAS checks it
    if (detail::slot_state(w) != SlotState::kFree) continue;
    // (S1) Claim, naming the pid in the same CAS (a claimer that dies next
    // leaves a slot the owner can check). acquire pairs with (S3) of the
    // slot's last reclaimer: its drained list is visible.
    if (!word.compare_exchange_strong(w, detail::pack_slot(SlotState::kClaiming, pid), std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
      continue;
    }
    // relaxed: published by (S2).
    atomic_of(slot.start_time).store(id.start_time, std::memory_order_relaxed);
    atomic_of(slot.attach_count).fetch_add(1, std::memory_order_relaxed);  // diagnostics only
    std::uint64_t* list = held_list(s);
    for (std::uint32_t i = 0; i < held_per_process_; ++i) {
      // Empty after a complete drain; cleared anyway (relaxed, published by
      // (S2)): a reference left by a damaged list is lost, never released twice.
      atomic_of(list[i]).store(0, std::memory_order_relaxed);
    }
    // (S2) Attached. Pairs with (S4) in reclaim_dead: a reclaimer that sees
    // Attached sees the start time.
    word.store(detail::pack_slot(SlotState::kAttached, pid), std::memory_order_release);
    return SlotId{s};
  }
  return make_error(Errc::kExhausted, "all " + std::to_string(process_slots_) +
                                          " process slots are taken; raise PoolConfig::process_slots or reclaim "
                                          "dead processes");
}

Result<ProcessId> BlockPool::slot_process(SlotId slot) const {
  const auto s = static_cast<std::uint32_t>(slot);
  if (s >= process_slots_) return make_error(Errc::kInvalidArgument, "process slot " + std::to_string(s) + " out of range");
  // (S4') acquire: pairs with (S2), as (S4).
  const std::uint64_t w = atomic_of(slot_at(s).state_pid).load(std::memory_order_acquire);
  return ProcessId{static_cast<pid_t>(detail::slot_pid(w)),
                   atomic_of(slot_at(s).start_time).load(std::memory_order_relaxed)};
}

bool BlockPool::holds(SlotId slot, Handle h) const noexcept {
  if (!check_slot(slot)) return false;
  const std::uint64_t* list = held_list(static_cast<std::uint32_t>(slot));
  for (std::uint32_t i = 0; i < held_per_process_; ++i) {
    // relaxed: the slot's process is dead; its last stores are visible
    // after the owner's confirmation of the death (a system call).
    if (atomic_of(const_cast<std::uint64_t&>(list[i])).load(std::memory_order_relaxed) == h.bits()) return true;
  }
  return false;
}

ReclaimReport BlockPool::drain(std::uint32_t s) noexcept {
  ReclaimReport report;
  std::uint64_t* list = held_list(s);
  for (std::uint32_t i = 0; i < held_per_process_; ++i) {
    // 1. Take the entry (relaxed, see the held-list note in pool.cpp): a
    //    reclaimer that dies after this leaks the reference instead of
    //    releasing it twice.
    const std::uint64_t bits = atomic_of(list[i]).exchange(0, std::memory_order_relaxed);
    if (bits == 0) continue;
    const Handle h = Handle::from_bits(bits);
    // 2. Drop the reference (validated: an entry naming a freed or
    //    out-of-range block is counted, not followed).
    bool freed = false;
    if (find(h) != nullptr && drop_ref(h, &freed)) {
      ++report.references_released;
      if (freed) ++report.blocks_freed;
    } else {
      ++report.stale_entries;
    }
  }
  return report;
}

Result<std::size_t> BlockPool::detach_process(SlotId slot) {
  if (auto r = check_slot(slot); !r) return tl::unexpected(std::move(r.error()));
  const auto s = static_cast<std::uint32_t>(slot);
  auto word = atomic_of(slot_at(s).state_pid);
  std::uint64_t w = word.load(std::memory_order_relaxed);  // checked by the CAS
  // (S5) Attached -> Reclaiming: one drainer. A crash after this leaves a
  // Reclaiming slot that reclaim_dead finishes.
  if (!word.compare_exchange_strong(w, detail::pack_slot(SlotState::kReclaiming, detail::slot_pid(w)),
                                    std::memory_order_acquire, std::memory_order_relaxed) ||
      detail::slot_state(w) != SlotState::kAttached) {
    return make_error(Errc::kInvalidArgument, "process slot " + std::to_string(s) + " changed state during detach");
  }
  const ReclaimReport report = drain(s);
  atomic_of(slot_at(s).start_time).store(0, std::memory_order_relaxed);  // published by (S3)
  // (S3) Free. release pairs with (S1) of the next claimer.
  word.store(detail::pack_slot(SlotState::kFree, 0), std::memory_order_release);
  return report.references_released;
}

Result<ReclaimReport> BlockPool::reclaim_dead(SlotId slot) {
  const auto s = static_cast<std::uint32_t>(slot);
  if (s >= process_slots_) {
    return make_error(Errc::kInvalidArgument, "process slot " + std::to_string(s) + " out of range");
  }
  auto word = atomic_of(slot_at(s).state_pid);
  // (S4) Pairs with (S2): an Attached slot shows its start time.
  std::uint64_t w = word.load(std::memory_order_acquire);
  const SlotState state = detail::slot_state(w);
  if (state == SlotState::kFree) return make_error(Errc::kInvalidArgument, "process slot " + std::to_string(s) + " is free");
  const ProcessId id{static_cast<pid_t>(detail::slot_pid(w)),
                     atomic_of(slot_at(s).start_time).load(std::memory_order_relaxed)};
  // A claimer that died before writing its start time left 0: check the pid
  // alone. A reused pid then reads as alive and the slot waits: a leak,
  // never a release on behalf of a live process.
  const bool alive = id.start_time == 0 ? process_start_time(id.pid).has_value() : process_alive(id);
  if (alive) {
    return make_error(Errc::kInvalidArgument, "process " + std::to_string(id.pid) + " (slot " + std::to_string(s) +
                                                  ") is alive; only a dead process's slot is reclaimed");
  }
  if (state != SlotState::kReclaiming) {
    // (S5') As (S5). A Reclaiming slot was left by a reclaimer (a previous
    // owner) that died: finish its drain.
    if (!word.compare_exchange_strong(w, detail::pack_slot(SlotState::kReclaiming, detail::slot_pid(w)),
                                      std::memory_order_acquire, std::memory_order_relaxed)) {
      return make_error(Errc::kInvalidArgument, "process slot " + std::to_string(s) + " changed state during reclaim");
    }
  }
  const ReclaimReport report = drain(s);
  atomic_of(slot_at(s).start_time).store(0, std::memory_order_relaxed);  // published by (S3')
  // (S3') As (S3).
  word.store(detail::pack_slot(SlotState::kFree, 0), std::memory_order_release);
  return report;
}

// ---------------------------------------------------------------------------
// Inspection and repair

std::uint32_t BlockPool::walk_free_list(std::uint32_t c, std::vector<bool>* listed) const {
  const std::uint32_t n = cut_count(c);
  std::vector<bool> seen(n, false);
  std::uint32_t length = 0;
  // acquire: as (F1). The walk is exact only in a quiescent pool; a cycle
  // or an index out of range (corruption) ends it.
  std::uint32_t idx = detail::head_index(atomic_of(class_state(c).head).load(std::memory_order_acquire));
  while (idx < n && !seen[idx]) {
    seen[idx] = true;
    ++length;
    idx = atomic_of(block(c, idx).next).load(std::memory_order_relaxed);  // quiescent: any order
  }
  if (listed != nullptr) *listed = std::move(seen);
  return length;
}

PoolStats BlockPool::stats() const {
  PoolStats out;
  for (std::uint32_t c = 0; c < class_count_; ++c) {
    const LocalClass& lc = classes_[c];
    ClassStats cs;
    cs.block_bytes = lc.block_bytes;
    cs.capacity = lc.block_bytes - kBlockHeaderBytes;
    cs.count = lc.count;
    cs.cut = cut_count(c);
    cs.lazy = lc.lazy;
    for (std::uint32_t i = 0; i < cs.cut; ++i) {
      // relaxed: a snapshot, exact only when quiescent.
      const BlockState st = detail::ctl_state(atomic_of(block(c, i).ctl).load(std::memory_order_relaxed));
      if (st == BlockState::kFree) ++cs.free;
      if (st == BlockState::kAllocated) ++cs.allocated;
    }
    cs.listed = walk_free_list(c, nullptr);
    out.free_blocks += cs.free;
    out.allocated_blocks += cs.allocated;
    out.classes.push_back(cs);
  }
  for (std::uint32_t s = 0; s < process_slots_; ++s) {
    // relaxed: a snapshot.
    if (detail::slot_state(atomic_of(slot_at(s).state_pid).load(std::memory_order_relaxed)) != SlotState::kFree) {
      ++out.attached_processes;
    }
  }
  return out;
}

Result<AuditReport> BlockPool::audit() {
  AuditReport report;
  const auto self = static_cast<std::uint32_t>(::getpid());
  // 1. Every other process must be dead; reclaim their slots.
  std::vector<std::uint32_t> live;
  for (std::uint32_t s = 0; s < process_slots_; ++s) {
    const std::uint64_t w = atomic_of(slot_at(s).state_pid).load(std::memory_order_acquire);  // as (S4)
    const SlotState st = detail::slot_state(w);
    if (st == SlotState::kFree) continue;
    if (detail::slot_pid(w) == self && st == SlotState::kAttached) {
      live.push_back(s);
      continue;
    }
    auto r = reclaim_dead(SlotId{s});
    if (!r) {
      return make_error(Errc::kInvalidArgument, "audit needs a quiescent pool: " + r.error().message);
    }
    ++report.slots_reclaimed;
  }
  // 2. The live slots' entries are the truth: count references per handle,
  //    dropping entries that name no allocated block.
  std::unordered_map<std::uint64_t, std::uint32_t> refs;
  for (const std::uint32_t s : live) {
    std::uint64_t* list = held_list(s);
    for (std::uint32_t i = 0; i < held_per_process_; ++i) {
      auto e = atomic_of(list[i]);
      const std::uint64_t bits = e.load(std::memory_order_relaxed);  // quiescent
      if (bits == 0) continue;
      if (find(Handle::from_bits(bits)) != nullptr) {
        ++refs[bits];
      } else {
        e.store(0, std::memory_order_relaxed);
        ++report.stale_entries_dropped;
      }
    }
  }
  // 3. Fix each block, then rebuild each free list from the states. Plain
  //    (relaxed) accesses: no other thread or process uses the pool.
  for (std::uint32_t c = 0; c < class_count_; ++c) {
    const LocalClass& lc = classes_[c];
    const std::size_t cap = lc.block_bytes - kBlockHeaderBytes;
    std::vector<bool> listed;
    walk_free_list(c, &listed);
    const std::uint32_t n = cut_count(c);
    std::uint32_t first = kNilIndex;
    std::uint32_t last = kNilIndex;
    for (std::uint32_t i = 0; i < n; ++i) {
      BlockHeader& b = block(c, i);
      auto ctl = atomic_of(b.ctl);
      const std::uint64_t cur = ctl.load(std::memory_order_relaxed);
      const std::uint32_t gen = detail::ctl_generation(cur);
      switch (detail::ctl_state(cur)) {
        case BlockState::kAllocated: {
          const auto it = refs.find(Handle::pack(c, i, gen).bits());
          const std::uint32_t r = it == refs.end() ? 0 : it->second;
          if (r == detail::ctl_refs(cur)) continue;
          if (r > 0) {
            ctl.store(detail::pack_ctl(gen, BlockState::kAllocated, r), std::memory_order_relaxed);
            ++report.refcounts_fixed;
            continue;
          }
          poison(block_data(c, i), cap);
          ctl.store(detail::pack_ctl(detail::next_generation(gen), BlockState::kFree, 0), std::memory_order_relaxed);
          ++report.unheld_freed;
          break;
        }
        case BlockState::kFree:
          if (!listed[i]) ++report.free_relisted;
          break;
        default:  // Uncut below `cut` (a cutter died), or a damaged state
          if (lc.lazy && !reserve(lc.area_offset + std::uint64_t{i} * lc.block_bytes, lc.block_bytes,
                                  static_cast<int>(c))) {
            continue;  // still not reserved: leave it out of the list
          }
          b.index = i;
          b.size_class = static_cast<std::uint8_t>(c);
          atomic_of(b.used).store(0, std::memory_order_relaxed);
          atomic_of(b.owner).store(kNoOwner, std::memory_order_relaxed);
          poison(block_data(c, i), cap);
          ctl.store(detail::pack_ctl(detail::next_generation(gen), BlockState::kFree, 0), std::memory_order_relaxed);
          ++report.uncut_recovered;
          break;
      }
      // Free now: append to the rebuilt list (in index order).
      atomic_of(b.next).store(kNilIndex, std::memory_order_relaxed);
      if (last == kNilIndex) {
        first = i;
      } else {
        atomic_of(block(c, last).next).store(i, std::memory_order_relaxed);
      }
      last = i;
    }
    auto head = atomic_of(class_state(c).head);
    const std::uint64_t old = head.load(std::memory_order_relaxed);
    // release: as (F4), for whoever uses the pool after the audit.
    head.store(detail::pack_head(first, detail::head_tag(old) + 1), std::memory_order_release);
  }
  return report;
}

}  // namespace palm
