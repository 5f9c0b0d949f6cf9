#include "palm/transport/shm/channel.hpp"

namespace palm::shm {

ChannelPush channel_send(ChannelRing& ring, BlockPool& pool, SlotId slot, Handle h, std::uint32_t tag,
                         Doorbell* consumer_bell) noexcept {
  // 1. Room: the ring's head() is an acquire load, so a slot seen free is
  //    free (the consumer copied its item out before releasing it).
  if (!channel_has_room(ring)) return ChannelPush::kFull;
  // 2. The reference leaves the sender's held list (one CAS in the pool).
  if (!pool.unhold(slot, h)) return ChannelPush::kBadFrame;
  // 3. Publish (the ring's release store of tail, (P2) in spsc_ring_impl.hpp):
  //    cannot fail, step 1 saw room and only this thread adds, unless the
  //    consumer damaged its head (a peer's bug, never asserted on): then the
  //    reference goes back into the sender's list.
  const ChannelItem item{h.bits(), static_cast<std::uint32_t>(ItemKind::kMessage), tag};
  if (!ring.try_push(item)) {
    static_cast<void>(pool.hold(slot, h));
    return ChannelPush::kFull;
  }
  // 4. Wake the consumer only if it announced it sleeps (doorbell.hpp (N1)).
  if (consumer_bell != nullptr) consumer_bell->ring_if_waiting(Doorbell::kWakeAll);
  return ChannelPush::kPushed;
}

bool channel_publish(ChannelRing& ring, Handle h, std::uint32_t tag, Doorbell* consumer_bell) noexcept {
  const ChannelItem item{h.bits(), static_cast<std::uint32_t>(ItemKind::kMessage), tag};
  if (!ring.try_push(item)) return false;  // (P2) in spsc_ring_impl.hpp publishes it
  if (consumer_bell != nullptr) consumer_bell->ring_if_waiting(Doorbell::kWakeAll);
  return true;
}

ChannelPush channel_send_credit(ChannelRing& ring, std::uint32_t credits, Doorbell* consumer_bell) noexcept {
  const ChannelItem item{0, static_cast<std::uint32_t>(ItemKind::kCredit), credits};
  if (!ring.try_push(item)) return ChannelPush::kFull;
  if (consumer_bell != nullptr) consumer_bell->ring_if_waiting(Doorbell::kWakeAll);
  return ChannelPush::kPushed;
}

ChannelPop channel_receive(ChannelRing& ring, BlockPool& pool, SlotId slot, ChannelItem& out,
                           Doorbell* producer_bell) noexcept {
  // 1. Peek (acquire of tail pairs with the producer's publish).
  if (!ring.peek(out)) return ChannelPop::kEmpty;
  // 2. The reference enters the receiver's held list (validated by the pool:
  //    a stale or foreign handle is refused, never dereferenced), while the
  //    item is still in the ring: see the header for why this order.
  ChannelPop result = ChannelPop::kMessage;
  if (out.kind == static_cast<std::uint32_t>(ItemKind::kCredit)) {
    result = ChannelPop::kCredit;
  } else if (out.kind != static_cast<std::uint32_t>(ItemKind::kMessage) ||
             !pool.hold(slot, Handle::from_bits(out.handle))) {
    result = ChannelPop::kBadHandle;
  }
  // 3. Consume (the ring's release store of head gives the slot back).
  ring.consume_peeked();
  // 4. Room was made: a producer waiting for it may go on.
  if (producer_bell != nullptr) producer_bell->ring_if_waiting(Doorbell::kWakeAll);
  return result;
}

std::size_t discard_channel(ChannelRing& ring, BlockPool& pool, SlotId owner, SlotId dead_consumer) noexcept {
  std::size_t released = 0;
  ChannelItem item{};
  // The other side is gone: popping as the consumer is safe even on a ring
  // whose consumer was the dead peer (head is only ever moved forward, and
  // nobody else moves it now). Bounded by the capacity: a damaged tail
  // cannot make this loop longer than one ring.
  for (std::uint32_t n = 0; n < ring.capacity() && ring.try_pop(item); ++n) {
    if (item.kind != static_cast<std::uint32_t>(ItemKind::kMessage)) continue;
    const Handle h = Handle::from_bits(item.handle);
    // Only the item at head can be held by a consumer killed between its
    // hold and its consume; its held list will release that reference.
    if (n == 0 && dead_consumer != kNoSlot && pool.holds(dead_consumer, h)) continue;
    if (pool.hold(owner, h) && pool.release(owner, h)) ++released;
  }
  return released;
}

}  // namespace palm::shm
