#pragma once
// PeerTable: the workers a kDispatcher endpoint knows, with their credits,
// shared between the bridge (joins, leaves, adds credits) and application
// threads (take a credit per send, read snapshots).
//
// One 64-bit word per slot, changed only by CAS, so a credit is never taken
// from a worker that left or from its slot's next occupant:
//
//   63          33 32   31            0
//  +--------------+-----+---------------+
//  | generation   |alive|    credits    |
//  +--------------+-----+---------------+
//
// A PeerId is (generation << 32) | slot index; the generation of a slot is
// bumped on every join, so a PeerId names one worker's whole stay and a stale
// one is refused (kPeerGone).
//   take (app):   load; generation == id's && alive && credits > 0:
//                 CAS word -> word - 1 (the linearization point of a send's
//                 credit); a failed CAS reloads and retries (a concurrent
//                 take, or the bridge adding or leaving).
//   give back (app, when its queue was full): CAS +1 if still the same stay.
//   add (bridge): CAS +n if the same stay and alive.
//   join (bridge only): store {generation + 1, alive, n} into a free slot.
//   leave (bridge only): CAS to {generation, dead, 0}: later takes fail.
// Orders: the bridge's join store is release and the app's loads acquire, but
// nothing else is published through the word (the bridge keeps the routing
// ids itself), so relaxed would do; acquire/release costs nothing on x86.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "palm/core/layout.hpp"
#include "palm/transport/endpoint.hpp"

namespace palm::transport::zeromq {

class PeerTable {
 public:
  explicit PeerTable(std::uint32_t capacity);
  PeerTable(const PeerTable&) = delete;  // shared by address between threads
  PeerTable& operator=(const PeerTable&) = delete;

  // ---- any thread -----------------------------------------------------------
  // kQueued when a credit was taken, else kNoCredit / kPeerGone.
  SendResult take_credit(PeerId peer) noexcept;
  // Returns a credit taken for a send that did not happen.
  void give_back(PeerId peer) noexcept;
  std::uint32_t credits(PeerId peer) const noexcept;
  std::vector<PeerInfo> snapshot() const;

  // ---- the bridge thread only ---------------------------------------------
  // Claims a free slot; nullopt when every slot is taken.
  std::optional<PeerId> join(std::uint32_t credits) noexcept;
  void add_credits(PeerId peer, std::uint32_t n) noexcept;
  void leave(PeerId peer) noexcept;
  bool alive(PeerId peer) const noexcept;
  static std::uint32_t index_of(PeerId peer) noexcept {
    return static_cast<std::uint32_t>(static_cast<std::uint64_t>(peer));
  }
  std::uint32_t capacity() const noexcept { return capacity_; }

 private:
  static constexpr std::uint64_t kAlive = std::uint64_t{1} << 32;
  static constexpr unsigned kGenerationShift = 33;
  static std::uint64_t generation_of_word(std::uint64_t w) noexcept { return w >> kGenerationShift; }
  static std::uint64_t generation_of_peer(PeerId p) noexcept {
    return static_cast<std::uint64_t>(p) >> 32;
  }
  static std::uint32_t credits_of(std::uint64_t w) noexcept { return static_cast<std::uint32_t>(w); }
  // The word of `peer`'s slot if it is that stay, else nullptr.
  std::atomic<std::uint64_t>* slot_of(PeerId peer) const noexcept;

  struct alignas(kCacheLine) Slot {
    std::atomic<std::uint64_t> word{0};  // written by the bridge and app threads (CAS)
  };
  std::uint32_t capacity_;
  std::unique_ptr<Slot[]> slots_;
  std::vector<std::uint32_t> free_;  // the bridge only
};

}  // namespace palm::transport::zeromq
