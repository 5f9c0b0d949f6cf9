#pragma once
// The standard parts (pylm's parts.services and parts.connections;
// FEATURES.md section 3), built on part.hpp:
//
//   services (bind; serve tcp and, beside it, shm peers of this host)
//     PullService   pull -> route             PubService   route -> pub
//     RepService    rep -> route, waits for    PushService  route -> push
//                   the feedback, answers it
//   connections (connect; shm or tcp by auto-selection for a palm server)
//     PullConnection, SubConnection (topic `previous`)  -> route
//     PushConnection                                    route -> push
//
// Inbound parts run `scatter` on each message (pylm's generator: zero or
// more messages out); the default passes it on unchanged, without a copy.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "palm/core/codec.hpp"
#include "palm/core/frame.hpp"
#include "palm/servers/part.hpp"
#include "palm/transport/endpoint.hpp"

namespace palm::servers {

// Where scatter/gather put their messages.
class Emitter {
 public:
  virtual ~Emitter() = default;
  // A new message (written into a fresh frame).
  virtual void emit(const MessageView& message) = 0;
  // The message being handled, as it came (no copy).
  virtual void emit_same() = 0;
};

// pylm's change_payload: `message` with `payload` instead of its own.
inline MessageView change_payload(MessageView message, std::span<const std::byte> payload) {
  message.payload = payload;
  return message;
}

struct PartAddress {
  transport::Pattern pattern = transport::Pattern::kPull;
  std::string address;
  bool bind = true;
  std::vector<std::string> subscriptions;  // kSub
  // A connection to a tcp address of a palm server asks its cache at
  // `db_address` whether shm is possible ("" = connect as the address says).
  std::string db_address;
};

class InboundPart : public Part {
 public:
  InboundPart(std::string name, PartAddress address)
      : Part(std::move(name)), address_(std::move(address)) {}
  // The address in effect once open (the tcp port chosen).
  const std::string& address() const noexcept { return bound_; }

 protected:
  // pylm's scatter: the default passes the message on.
  virtual void scatter(const MessageView& message, Emitter& out);
  Result<void> on_open() override;
  bool step() override;
  bool drain() override;
  // A new message's frame, in the pool the input came in (a subclass may
  // prefer another: the shm segment's).
  virtual Result<Frame> build(const MessageView& message, BlockPool& pool, SlotId slot);
  // Called once scatter returned, for each frame it emitted as is
  // (emit_same), before it goes into the route: a part that stamps what it
  // passes on (the master: a cache key, a dispatch id) changes it here,
  // with Frame::rewrite when the frame is its alone, else into a new frame.
  // False drops it. The default passes it on unchanged.
  virtual bool restamp(Frame& same);

 private:
  class Out;
  struct Emitted {
    Frame frame;
    bool same = false;  // emitted as is: restamp() it
  };
  // `clock`: when the last take of this step ended (its closing clock
  // read, this one's start), or 0 at a step's first: one read a message.
  bool take(transport::Delivery& delivery, transport::Endpoint& from, std::int64_t& clock);
  bool answer_feedback();

  PartAddress address_;
  std::string bound_;
  std::size_t next_ = 0;  // round robin over endpoints
  std::vector<Emitted> emitted_;  // one input's scatter output, pushed after scatter returns
  // A batch of deliveries taken from one endpoint under one lock (shm),
  // each emptied once handled.
  std::vector<transport::Delivery> batch_;
};

class OutboundPart : public Part {
 public:
  OutboundPart(std::string name, PartAddress address)
      : Part(std::move(name)), address_(std::move(address)) {}
  const std::string& address() const noexcept { return bound_; }

 protected:
  Result<void> on_open() override;
  bool step() override;
  // What to do with one routed message; the default sends it out: to every
  // endpoint for kPub (tcp and shm subscribers), round robin otherwise.
  virtual void handle(Routed& item);
  // Hands `frame` on as feedback: to the route the item asked for (a
  // blocking inbound part), else to this part's own route. Without either
  // the frame is released.
  void feedback(const Routed& origin, Frame& frame);
  // Sends on endpoint `i`, waiting (bounded by stop) for room.
  bool send(std::size_t i, Frame& frame);

  PartAddress address_;
  std::string bound_;
  std::size_t next_ = 0;
};

inline std::unique_ptr<InboundPart> PullService(std::string name, std::string address) {
  return std::make_unique<InboundPart>(std::move(name), PartAddress{transport::Pattern::kPull, std::move(address), true, {}, {}});
}
inline std::unique_ptr<InboundPart> PullConnection(std::string name, std::string address,
                                                   std::string db_address = {}) {
  return std::make_unique<InboundPart>(std::move(name), PartAddress{transport::Pattern::kPull, std::move(address), false, {}, std::move(db_address)});
}
inline std::unique_ptr<InboundPart> SubConnection(std::string name, std::string address,
                                                  std::string previous,
                                                  std::string db_address = {}) {
  return std::make_unique<InboundPart>(std::move(name), PartAddress{transport::Pattern::kSub, std::move(address), false, {std::move(previous)}, std::move(db_address)});
}
inline std::unique_ptr<InboundPart> RepService(std::string name, std::string address) {
  return std::make_unique<InboundPart>(std::move(name), PartAddress{transport::Pattern::kRep, std::move(address), true, {}, {}});
}
inline std::unique_ptr<OutboundPart> PubService(std::string name, std::string address) {
  return std::make_unique<OutboundPart>(std::move(name), PartAddress{transport::Pattern::kPub, std::move(address), true, {}, {}});
}
inline std::unique_ptr<OutboundPart> PushService(std::string name, std::string address) {
  return std::make_unique<OutboundPart>(std::move(name), PartAddress{transport::Pattern::kPush, std::move(address), true, {}, {}});
}
inline std::unique_ptr<OutboundPart> PushConnection(std::string name, std::string address,
                                                    std::string db_address = {}) {
  return std::make_unique<OutboundPart>(std::move(name), PartAddress{transport::Pattern::kPush, std::move(address), false, {}, std::move(db_address)});
}

}  // namespace palm::servers
