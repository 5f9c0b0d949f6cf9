#pragma once
// Channels: one single-producer SpscRing<ChannelItem> per (peer, direction),
// in the server's segment (peer_table.hpp), moving frame references between
// the held lists of two processes without copying the frame.
//
// Protocol. A reference is never in two held lists at once (pool.hpp): the
// sender takes it out of its list before it publishes, the receiver records
// it after it has taken the item. While an item is in a ring, its reference
// belongs to the ring; the positions [head(), tail()) say exactly which items
// those are (spsc_ring.hpp), which is what the owner releases when it
// discards a dead peer's channel.
//
//   send     1 room? (tail - head < capacity; the producer alone adds, so
//              room seen stays room)   2 unhold (CAS entry h->0)
//            3 push (release store of tail: the item is published whole)
//            4 ring the consumer's doorbell if it announced it sleeps
//     died after 2, before 3: the reference is in no list and no ring: the
//       block leaks until BlockPool::audit (never a double release).
//     died after 3: the item is in the ring: the consumer takes it, or the
//       owner discards it (discard_channel releases it).
//   receive  1 peek (the item at head, not consumed)   2 hold (CAS entry
//            0->h)   3 consume (release store of head)   4 ring the
//            producer's doorbell if it announced it waits for room
//     died before 2: the item is in the ring: the owner discards it.
//     died after 2, before 3: the reference is in the list AND at head: the
//       owner's discard, told the dead consumer's slot, skips the item at
//       head when that slot holds its handle (reclaim_dead releases it), so
//       it is released once. (Pop then hold would leak it instead: a block
//       lost for every receiver killed between the two, ~1 in 100 kills of
//       a busy worker.)
//     died after 3: the reference is held; BlockPool::reclaim_dead frees it.
//   discard  (owner, after the peer's death is confirmed or it left; the
//            other side of the ring is the owner itself, under its lock)
//            for p in [head, tail): hold(owner, h_p), then release it
//            (the item at head skipped if the dead consumer holds it).
//     died midway: the segment's owner is gone; the segment is stale.
//
// Items with kind kCredit carry no reference and need none of this.
//
// Thread-safety: a ChannelRing has one producer thread and one consumer
// thread at a time; callers serialize (the endpoints hold a lock).

#include <cstddef>
#include <cstdint>

#include "palm/core/doorbell.hpp"
#include "palm/core/error.hpp"
#include "palm/core/handle.hpp"
#include "palm/core/pool.hpp"
#include "palm/transport/shm/peer_table.hpp"

namespace palm::shm {

enum class ChannelPush : std::uint8_t {
  kPushed,   // the reference moved into the ring
  kFull,     // no room; nothing changed
  kBadFrame  // `slot` holds no reference to the handle; nothing changed
};

// True if the producer can push one item now (exact for the producer: only
// it adds items, and the consumer only makes room).
inline bool channel_has_room(const ChannelRing& ring) noexcept {
  return ring.tail() - ring.head() < ring.capacity();
}

// Moves one of `slot`'s references to `h` into `ring` (steps 1-4 above),
// tagged `tag`, then rings `consumer_bell` (if not null) when its sleeper
// announced itself. Producer thread only; never blocks.
ChannelPush channel_send(ChannelRing& ring, BlockPool& pool, SlotId slot, Handle h, std::uint32_t tag,
                         Doorbell* consumer_bell) noexcept;
// Step 3-4 alone, for a reference the caller already took out of its list
// (Frame::give_away). False if full (the reference is still the caller's).
bool channel_publish(ChannelRing& ring, Handle h, std::uint32_t tag, Doorbell* consumer_bell) noexcept;
// Pushes a credit item (no reference). Producer thread only.
ChannelPush channel_send_credit(ChannelRing& ring, std::uint32_t credits, Doorbell* consumer_bell) noexcept;

enum class ChannelPop : std::uint8_t {
  kEmpty,
  kMessage,    // `out` holds a frame handle, now held by `slot`
  kCredit,     // `out` is a credit item
  kBadHandle,  // an item whose handle the pool refused (a peer's bug): dropped
};

// Takes the oldest item (steps 1-3 above). Consumer thread only; never blocks.
ChannelPop channel_receive(ChannelRing& ring, BlockPool& pool, SlotId slot, ChannelItem& out,
                           Doorbell* producer_bell) noexcept;

// The owner's discard of a channel whose other side is gone (see above):
// releases the reference of every item in [head, tail) through `owner`'s
// slot and empties the ring. `dead_consumer`: the pool slot of the ring's
// consumer when it died (its held list not yet reclaimed), or kNoSlot.
// Returns the references released. The caller is the only user of the
// ring's live side.
inline constexpr SlotId kNoSlot = static_cast<SlotId>(~0u);
std::size_t discard_channel(ChannelRing& ring, BlockPool& pool, SlotId owner,
                            SlotId dead_consumer = kNoSlot) noexcept;

}  // namespace palm::shm
