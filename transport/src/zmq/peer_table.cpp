#include "zmq/peer_table.hpp"

namespace palm::transport::zeromq {

PeerTable::PeerTable(std::uint32_t capacity)
    : capacity_(capacity), slots_(std::make_unique<Slot[]>(capacity)) {
  free_.reserve(capacity);
  for (std::uint32_t i = capacity; i > 0; --i) free_.push_back(i - 1);
}

std::atomic<std::uint64_t>* PeerTable::slot_of(PeerId peer) const noexcept {
  const std::uint32_t index = index_of(peer);
  if (peer == PeerId::kNone || index >= capacity_) return nullptr;
  return &slots_[index].word;
}

SendResult PeerTable::take_credit(PeerId peer) noexcept {
  std::atomic<std::uint64_t>* word = slot_of(peer);
  if (word == nullptr) return SendResult::kPeerGone;
  // (T1) acquire: pairs with the bridge's join store (J1).
  std::uint64_t w = word->load(std::memory_order_acquire);
  for (;;) {
    if (generation_of_word(w) != generation_of_peer(peer) || (w & kAlive) == 0) {
      return SendResult::kPeerGone;
    }
    if (credits_of(w) == 0) return SendResult::kNoCredit;
    // (T2) The linearization point of taking a credit. A failure reloads w:
    // another take, an add or a leave committed first.
    if (word->compare_exchange_weak(w, w - 1, std::memory_order_acq_rel,
                                    std::memory_order_acquire)) {
      return SendResult::kQueued;
    }
  }
}

void PeerTable::give_back(PeerId peer) noexcept { add_credits(peer, 1); }

void PeerTable::add_credits(PeerId peer, std::uint32_t n) noexcept {
  std::atomic<std::uint64_t>* word = slot_of(peer);
  if (word == nullptr || n == 0) return;
  std::uint64_t w = word->load(std::memory_order_acquire);
  for (;;) {
    if (generation_of_word(w) != generation_of_peer(peer) || (w & kAlive) == 0) return;
    // Saturate instead of wrapping into the alive bit.
    const std::uint64_t room = 0xffffffffu - credits_of(w);
    const std::uint64_t add = n < room ? n : room;
    // (A1) As (T2): one CAS per change, retried on interference.
    if (word->compare_exchange_weak(w, w + add, std::memory_order_acq_rel,
                                    std::memory_order_acquire)) {
      return;
    }
  }
}

std::uint32_t PeerTable::credits(PeerId peer) const noexcept {
  const std::atomic<std::uint64_t>* word = slot_of(peer);
  if (word == nullptr) return 0;
  const std::uint64_t w = word->load(std::memory_order_acquire);
  if (generation_of_word(w) != generation_of_peer(peer) || (w & kAlive) == 0) return 0;
  return credits_of(w);
}

bool PeerTable::alive(PeerId peer) const noexcept {
  const std::atomic<std::uint64_t>* word = slot_of(peer);
  if (word == nullptr) return false;
  const std::uint64_t w = word->load(std::memory_order_acquire);
  return generation_of_word(w) == generation_of_peer(peer) && (w & kAlive) != 0;
}

std::vector<PeerInfo> PeerTable::snapshot() const {
  std::vector<PeerInfo> out;
  for (std::uint32_t i = 0; i < capacity_; ++i) {
    const std::uint64_t w = slots_[i].word.load(std::memory_order_acquire);
    if ((w & kAlive) == 0) continue;
    out.push_back({static_cast<PeerId>((generation_of_word(w) << 32) | i), credits_of(w)});
  }
  return out;
}

std::optional<PeerId> PeerTable::join(std::uint32_t credits) noexcept {
  if (free_.empty()) return std::nullopt;
  const std::uint32_t index = free_.back();
  free_.pop_back();
  std::atomic<std::uint64_t>& word = slots_[index].word;
  // Generations are 31 bits and never 0 for a live stay (PeerId 0 is none).
  std::uint64_t generation = (generation_of_word(word.load(std::memory_order_relaxed)) + 1) &
                             ((std::uint64_t{1} << 31) - 1);
  if (generation == 0) generation = 1;
  // (J1) release: pairs with (T1); the slot is free, so only the bridge
  // writes it now (a stale take fails on the generation).
  word.store((generation << kGenerationShift) | kAlive | credits, std::memory_order_release);
  return static_cast<PeerId>((generation << 32) | index);
}

void PeerTable::leave(PeerId peer) noexcept {
  std::atomic<std::uint64_t>* word = slot_of(peer);
  if (word == nullptr) return;
  std::uint64_t w = word->load(std::memory_order_acquire);
  for (;;) {
    if (generation_of_word(w) != generation_of_peer(peer) || (w & kAlive) == 0) return;
    // (L1) Dead, no credits: every later take fails. Retried against takes.
    if (word->compare_exchange_weak(w, generation_of_word(w) << kGenerationShift,
                                    std::memory_order_acq_rel, std::memory_order_acquire)) {
      free_.push_back(index_of(peer));
      return;
    }
  }
}

}  // namespace palm::transport::zeromq
