#include "palm/core/frame.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>

#include "palm/core/assert.hpp"
#include "palm/core/detail/varint.hpp"

namespace palm {
namespace {

constexpr std::size_t kAlign = 8;

std::size_t align_up(std::size_t n) { return (n + kAlign - 1) & ~(kAlign - 1); }

// Room for later Frame::rewrites: a uuid4 cache field (38 bytes) and then
// a uuid4 topic (36) before the head (a master stamps a client's message,
// a worker echoes it, the master publishes it); a dispatch id and flags
// after the tail.
// Left only where the block has it spare anyway (its size class rounds the
// frame up): frames never take a larger block for it.
constexpr std::size_t kRewriteHeadRoom = 80;
constexpr std::size_t kRewriteTailRoom = 16;

std::size_t head_room(const BlockPool& pool, std::size_t need) {
  // The room fits when the block `need` takes holds it too (one class
  // lookup: it runs for every frame built or parsed).
  auto plain = pool.class_for(need);
  return plain && need + kRewriteHeadRoom + kRewriteTailRoom <= pool.class_capacity(*plain)
             ? kRewriteHeadRoom
             : 0;
}

// Where the wire bytes start when nothing needs slack.
std::size_t wire_start(std::size_t topic_length) {
  return align_up(kFrameHeaderBytes + topic_length);
}

[[gnu::cold]] Error topic_too_large(std::size_t bytes) {
  return Error{Errc::kTooLarge, "a topic of " + std::to_string(bytes) +
                                    " bytes exceeds palm's limit of " +
                                    std::to_string(kMaxTopicBytes)};
}

void write_header(std::byte* data, std::string_view topic, std::size_t wire_offset,
                  const WireLayout& layout) {
  // Field by field into the block: a header built on the stack and copied
  // in was read back in 16-byte loads over its 2- and 4-byte stores, a
  // store-forwarding stall (perf: a fifth of a master's Frame::rewrite).
  const auto put = [data](std::size_t at, const auto& value) { std::memcpy(data + at, &value, sizeof value); };
  put(offsetof(FrameHeader, magic), kFrameMagic);
  put(offsetof(FrameHeader, version), kFrameVersion);
  put(offsetof(FrameHeader, topic_length), static_cast<std::uint16_t>(topic.size()));
  put(offsetof(FrameHeader, wire_offset), static_cast<std::uint32_t>(wire_offset));
  put(offsetof(FrameHeader, flags), static_cast<std::uint32_t>(kFrameNone));
  put(offsetof(FrameHeader, layout), layout);
  std::memset(data + offsetof(FrameHeader, reserved), 0, sizeof(FrameHeader::reserved));
  if (!topic.empty()) std::memcpy(data + kFrameHeaderBytes, topic.data(), topic.size());
}

}  // namespace

std::size_t frame_bytes(const MessageView& m, std::string_view topic) noexcept {
  return wire_start(topic.size()) + encoded_size(m);
}

namespace {

// frame_wire's checks of a resolved block: kFine when `w` is set.
enum class WireCheck { kFine, kTooSmall, kNoFrame, kOffsets };

WireCheck check_wire(const BlockView& block, FrameWire& w) noexcept {
  if (block.capacity < kFrameHeaderBytes) return WireCheck::kTooSmall;
  const auto* fh = reinterpret_cast<const FrameHeader*>(block.data);  // NOLINT: the layout ABI
  if (fh->magic != kFrameMagic || fh->version != kFrameVersion) return WireCheck::kNoFrame;
  const std::size_t topic_end = kFrameHeaderBytes + fh->topic_length;
  if (fh->topic_length > kMaxTopicBytes || fh->wire_offset < topic_end || fh->wire_offset > block.capacity ||
      fh->layout.size > block.capacity - fh->wire_offset) {
    return WireCheck::kOffsets;
  }
  w.header = fh;
  w.topic = std::string_view(reinterpret_cast<const char*>(block.data + kFrameHeaderBytes), fh->topic_length);
  w.wire = std::span<const std::byte>(block.data + fh->wire_offset, fh->layout.size);
  return WireCheck::kFine;
}

}  // namespace

Result<FrameWire> frame_wire(const BlockPool& pool, Handle h) noexcept {
  BlockView block;
  if (!pool.try_resolve(h, block)) return tl::unexpected(pool.resolve(h).error());
  FrameWire w;
  switch (check_wire(block, w)) {
    case WireCheck::kFine: return w;
    case WireCheck::kTooSmall: return make_error(Errc::kMalformed, "block too small for a frame");
    case WireCheck::kNoFrame:
      return make_error(Errc::kMalformed, "block holds no frame of version " + std::to_string(kFrameVersion));
    case WireCheck::kOffsets: break;
  }
  return make_error(Errc::kMalformed, "frame offsets out of its block");
}

bool view_frame_into(const BlockPool& pool, Handle h, FrameView& out) noexcept {
  BlockView block;
  FrameWire w;
  if (!pool.try_resolve(h, block) || check_wire(block, w) != WireCheck::kFine) return false;
  out.handle = h;
  out.header = w.header;
  out.topic = w.topic;
  out.wire = w.wire;
  return view_into(w.header->layout, w.wire, out.message);
}

Result<FrameView> view_frame(const BlockPool& pool, Handle h) noexcept {
  FrameView v;
  if (view_frame_into(pool, h, v)) return v;
  // Refused: the same checks again, for the reason.
  auto w = frame_wire(pool, h);
  if (!w) return tl::unexpected(std::move(w.error()));
  auto msg = view_of(w->header->layout, w->wire);
  if (!msg) return tl::unexpected(std::move(msg.error()));
  return make_error(Errc::kMalformed, "frame refused");  // not reached: the checks are the same
}

Result<Handle> build_frame(BlockPool& pool, SlotId slot, const MessageView& m,
                           std::string_view topic) noexcept {
  if (topic.size() > kMaxTopicBytes) return tl::unexpected(topic_too_large(topic.size()));
  const std::size_t wire_size = encoded_size(m);
  const std::size_t start =
      wire_start(topic.size()) + head_room(pool, wire_start(topic.size()) + wire_size);
  // The fresh block's view comes with it: we hold the only reference.
  auto block = pool.allocate_block(start + wire_size, slot);
  if (!block) return tl::unexpected(std::move(block.error()));
  const std::size_t written =
      encode(m, std::span<std::byte>(block->data + start, block->capacity - start));
  PALM_ASSERT(written == wire_size);
  write_header(block->data, topic, start, layout_for(m, m.payload.size()));
  (void)pool.set_used(*block, start + wire_size);
  return block->handle;
}

Result<Handle> parse_frame(BlockPool& pool, SlotId slot, std::span<const std::byte> wire,
                           std::string_view topic) noexcept {
  if (topic.size() > kMaxTopicBytes) return tl::unexpected(topic_too_large(topic.size()));
  const std::size_t bound = canonical_size_bound(wire.size());
  const std::size_t start = wire_start(topic.size()) + head_room(pool, wire_start(topic.size()) + bound);
  auto block = pool.allocate_block(start + bound, slot);
  if (!block) return tl::unexpected(std::move(block.error()));
  auto layout =
      parse_into(wire, std::span<std::byte>(block->data + start, block->capacity - start));
  if (!layout) {
    (void)pool.release(slot, block->handle);
    return tl::unexpected(std::move(layout.error()));
  }
  write_header(block->data, topic, start, *layout);
  (void)pool.set_used(*block, start + layout->size);
  return block->handle;
}

Result<Frame> Frame::build(BlockPool& pool, SlotId slot, const MessageView& m,
                           std::string_view topic) noexcept {
  auto h = build_frame(pool, slot, m, topic);
  if (!h) return tl::unexpected(std::move(h.error()));
  return Frame(pool, slot, *h);
}

Result<Frame> Frame::parse(BlockPool& pool, SlotId slot, std::span<const std::byte> wire,
                           std::string_view topic) noexcept {
  auto h = parse_frame(pool, slot, wire, topic);
  if (!h) return tl::unexpected(std::move(h.error()));
  return Frame(pool, slot, *h);
}

Result<FrameView> Frame::view() const noexcept {
  if (view_) return *view_;
  if (!*this) return make_error(Errc::kInvalidArgument, "an empty Frame has no view");
  // Viewed straight into the cache: no Result layers to build and copy.
  if (view_frame_into(*pool_, handle_, view_.emplace())) return *view_;
  view_.reset();
  return view_frame(*pool_, handle_);  // refused: says why
}

namespace {

// head_size, tail_size and layout_for of a message, which depend on its
// shape only: every length, the stage and flags (their varints are in the
// head and tail), the dispatch id's varint width (its value is patched
// into the layout by the caller).
struct Shape {
  std::array<std::size_t, 7> lengths{};  // pipeline, client, function, cache, payload, error, unknown
  std::int64_t stage = 0;
  std::uint32_t flags = 0;
  std::size_t id_width = 0;  // bytes of the dispatch id field (0: absent)
  bool valid = false;
  std::size_t head = 0;
  std::size_t prefix = 0;  // the head's fields 1-4 (head_prefix_size)
  std::size_t tail = 0;
  WireLayout layout;
};

// The last shape this thread saw, recomputed when another comes.
const Shape& shape_of(const MessageView& m, std::size_t payload_len) noexcept {
  thread_local Shape last;
  const std::array<std::size_t, 7> lengths{m.pipeline.size(), m.client.size(), m.function.size(), m.cache.size(),
                                           payload_len,       m.error.size(),  m.unknown.size()};
  // The dispatch id's field: its tag and varint, none for 0 (a MessageView
  // holding the id alone, for tail_size, was zeroed with a `rep stos`).
  const std::size_t id_width = m.dispatch_id == 0 ? 0 : 1 + detail::varint_size(m.dispatch_id);
  if (last.valid && last.lengths == lengths && last.stage == m.stage && last.flags == m.flags &&
      last.id_width == id_width) {
    return last;
  }
  last.lengths = lengths;
  last.stage = m.stage;
  last.flags = m.flags;
  last.id_width = id_width;
  last.head = head_size(m, payload_len);
  last.prefix = head_prefix_size(m);
  last.tail = tail_size(m);
  last.layout = layout_for(m, payload_len);
  last.valid = true;
  return last;
}

}  // namespace

bool Frame::rewrite(const MessageView& m, std::string_view topic) noexcept {
  const FrameView* v = peek();
  if (v == nullptr || m.payload.empty() || m.payload.data() != v->message.payload.data() ||
      m.payload.size() != v->message.payload.size() || topic.size() > kMaxTopicBytes) {
    return false;
  }
  if (!pool_->sole_reference(handle_)) return false;
  BlockView block;
  if (!pool_->try_resolve(handle_, block)) return false;
  std::byte* const data = block.data;
  const std::size_t payload_at = static_cast<std::size_t>(m.payload.data() - data);
  const std::size_t payload_len = m.payload.size();
  const std::size_t wire_now = static_cast<std::size_t>(v->wire.data() - data);

  // The head unchanged: its fields are the very bytes the frame holds (the
  // same place and length) and the stage is the same. Then only the tail
  // (error, dispatch id, flags, unknown fields) and the header are written,
  // if the new topic fits before the wire: a master's result going out
  // (the dispatch id cleared, the client's uuid as topic) is this case.
  // Fields 1-4 unchanged but another cache key: those bytes move as they
  // are, only the key and the payload's tag are written: a master stamping
  // a client's message is this case.
  const auto same_bytes = [](std::string_view a, std::string_view b) {
    return a.size() == b.size() && (a.empty() || a.data() == b.data());  // an empty field is no bytes
  };
  // The sizes and layout of this shape of message (its fields' lengths,
  // not their bytes), computed once per shape: a master rewrites a stream
  // of messages of one shape (the same field lengths, stage and flags;
  // dispatch ids of one varint width).
  const Shape& shape = shape_of(m, payload_len);
  const std::size_t head = shape.head;
  const std::size_t tail = shape.tail;
  const MessageView& now_m = v->message;
  // (The size checks only guard the premise: a frame's wire is canonical,
  // built or parsed into its block so, and its head then encode_head's.)
  const bool prefix_kept = same_bytes(m.pipeline, now_m.pipeline) && same_bytes(m.client, now_m.client) &&
                           same_bytes(m.function, now_m.function) && m.stage == now_m.stage &&
                           payload_at - wire_now == shape.prefix + head_suffix_size(now_m.cache.size(), payload_len);
  const bool head_kept = prefix_kept && same_bytes(m.cache, now_m.cache) &&
                         kFrameHeaderBytes + topic.size() <= wire_now;
  const bool suffix_only = !head_kept && prefix_kept && payload_at >= kFrameHeaderBytes + topic.size() + head;

  // Every field but the payload, and the topic, may view the bytes about to
  // be written: copy them aside first, then encode from the copies (the
  // head's fields too, unless the head stays).
  MessageView n = m;
  std::string_view new_topic = topic;
  std::size_t aside = n.error.size() + n.unknown.size() + topic.size();
  if (!head_kept) aside += n.cache.size();
  if (!head_kept && !suffix_only) aside += n.pipeline.size() + n.client.size() + n.function.size();
  thread_local std::string scratch;
  scratch.resize(aside);
  std::size_t at = 0;
  const auto keep = [&](std::string_view s) {
    if (s.empty()) return std::string_view{};  // its data() may be null: no memcpy
    std::memcpy(scratch.data() + at, s.data(), s.size());
    const std::string_view kept(scratch.data() + at, s.size());
    at += s.size();
    return kept;
  };
  if (!head_kept && !suffix_only) {
    n.pipeline = keep(n.pipeline);
    n.client = keep(n.client);
    n.function = keep(n.function);
  }
  if (!head_kept) n.cache = keep(n.cache);
  n.error = keep(n.error);
  const std::string_view unknown =
      keep(std::string_view(reinterpret_cast<const char*>(n.unknown.data()), n.unknown.size()));
  n.unknown = std::as_bytes(std::span<const char>(unknown.data(), unknown.size()));
  new_topic = keep(topic);

  std::size_t wire_offset = 0;
  std::size_t new_payload_at = payload_at;
  if (head_kept) {
    if (payload_at + payload_len + tail > block.capacity) return false;  // nothing written yet
    wire_offset = wire_now;  // the head's bytes stay
  } else if (suffix_only) {
    if (payload_at + payload_len + tail > block.capacity) return false;  // nothing written yet
    // The payload stays; fields 1-4 move to meet the new suffix (memmove:
    // the two places overlap by all but the key's change in length).
    wire_offset = payload_at - head;
    std::memmove(data + wire_offset, data + wire_now, shape.prefix);
    const std::size_t suffix = encode_head_suffix(
        n, payload_len, std::span<std::byte>(data + wire_offset + shape.prefix, head - shape.prefix));
    PALM_ASSERT(shape.prefix + suffix == head);
  } else {
    const std::size_t topic_end = kFrameHeaderBytes + new_topic.size();
    if (payload_at >= topic_end + head && payload_at + payload_len + tail <= block.capacity) {
      wire_offset = payload_at - head;  // the payload stays where it is
    } else {
      // No room around it: the message moves to the start of the wire area
      // (one memmove of the payload, still no new block).
      wire_offset = wire_start(new_topic.size());
      new_payload_at = wire_offset + head;
      if (new_payload_at + payload_len + tail > block.capacity) return false;  // nothing written yet
      std::memmove(data + new_payload_at, data + payload_at, payload_len);
    }
    // The payload is in place: the head and tail never overlap it.
    const std::size_t payload_from = encode_head(n, payload_len, std::span<std::byte>(data + wire_offset, head));
    PALM_ASSERT(payload_from == head);
  }
  const std::size_t tail_written =
      encode_tail(n, std::span<std::byte>(data + new_payload_at + payload_len, tail));
  PALM_ASSERT(tail_written == tail);
  write_header(data, new_topic, wire_offset, shape.layout);
  // The one value a shape leaves open, patched in the block (not in a copy
  // of the layout: the same stall as write_header's).
  std::memcpy(data + offsetof(FrameHeader, layout) + offsetof(WireLayout, dispatch_id), &n.dispatch_id,
              sizeof n.dispatch_id);
#ifndef NDEBUG
  // The memo's premise, checked in the sanitizer builds.
  PALM_ASSERT(reinterpret_cast<const FrameHeader*>(data)->layout == layout_for(n, payload_len));  // NOLINT
#endif
  (void)pool_->set_used(handle_, wire_offset + shape.layout.size);
  // The new view, from what was just written: a holder that views the frame
  // next (a master does, each time) does not parse it again.
  // Written in place, field by field: a view built aside and copied in is
  // read back in wide loads over the narrow stores that made it (a
  // store-forwarding stall: a third of this function's samples, perf annotate).
  FrameView& now = view_.emplace();
  now.handle = handle_;
  now.header = reinterpret_cast<const FrameHeader*>(data);  // NOLINT: the layout ABI
  now.topic = std::string_view(reinterpret_cast<const char*>(data) + kFrameHeaderBytes, new_topic.size());
  now.wire = std::span<const std::byte>(data + wire_offset, shape.layout.size);
  if (!view_into(now.header->layout, now.wire, now.message)) view_.reset();  // not expected: view() says why
  return true;
}

Result<Frame> Frame::share() const noexcept {
  if (!*this) return make_error(Errc::kInvalidArgument, "an empty Frame cannot be shared");
  if (auto r = pool_->add_ref(slot_, handle_); !r) return tl::unexpected(std::move(r.error()));
  Frame copy(*pool_, slot_, handle_);
  copy.view_ = view_;
  return copy;
}

Result<Frame> Frame::share_unviewed() const noexcept {
  if (!*this) return make_error(Errc::kInvalidArgument, "an empty Frame cannot be shared");
  if (auto r = pool_->add_ref(slot_, handle_); !r) return tl::unexpected(std::move(r.error()));
  return Frame(*pool_, slot_, handle_);
}

Result<Handle> Frame::give_away() noexcept {
  if (!*this) return make_error(Errc::kInvalidArgument, "an empty Frame has nothing to give");
  if (auto r = pool_->unhold(slot_, handle_); !r) return tl::unexpected(std::move(r.error()));
  pool_ = nullptr;
  view_.reset();
  return std::exchange(handle_, Handle{});
}

void Frame::drop() noexcept {
  if (*this) (void)pool_->release(slot_, handle_);
  pool_ = nullptr;
  handle_ = Handle{};
  view_.reset();
}

FrameWriter::~FrameWriter() { abandon(); }

void FrameWriter::abandon() noexcept {
  if (pool_ != nullptr && !handle_.is_null()) (void)pool_->release(slot_, handle_);
  pool_ = nullptr;
  handle_ = Handle{};
  payload_ = {};
}

namespace {

// The string fields a Plan compares, in its order; the topic is the 7th.
std::array<std::string_view, 6> plan_strings(const MessageView& m) noexcept {
  return {m.pipeline,
          m.client,
          m.function,
          m.cache,
          m.error,
          std::string_view(reinterpret_cast<const char*>(m.unknown.data()), m.unknown.size())};
}

}  // namespace

bool FrameWriter::Plan::matches(const BlockPool& p, const MessageView& m, std::string_view topic,
                                std::size_t max, std::size_t tail_bytes) const noexcept {
  if (pool != &p || max_payload != max || stage != m.stage || flags != m.flags) return false;
  // A wider dispatch id needs a larger block (the tail follows the payload).
  if (tail_bytes > room_tail) return false;
  const auto strings = plan_strings(m);
  std::size_t at = 0;
  const auto same = [&](std::size_t i, std::string_view v) {
    if (lengths[i] != v.size()) return false;
    const bool eq = v.empty() || std::memcmp(text.data() + at, v.data(), v.size()) == 0;
    at += v.size();
    return eq;
  };
  for (std::size_t i = 0; i < strings.size(); ++i) {
    if (!same(i, strings[i])) return false;
  }
  return same(6, topic);
}

void FrameWriter::Plan::reset(const BlockPool& p, const MessageView& m, std::string_view topic, std::size_t max) {
  pool = &p;
  max_payload = max;
  stage = m.stage;
  flags = m.flags;
  text.clear();
  const auto strings = plan_strings(m);
  for (std::size_t i = 0; i < strings.size(); ++i) {
    lengths[i] = strings[i].size();
    text.append(strings[i]);
  }
  lengths[6] = topic.size();
  text.append(topic);
  // The payload goes where the longest head (that of a max_payload payload)
  // would end; a shorter payload's head is written closer to it at commit.
  // Room is left before the head when the block has it spare, so that a
  // later holder can stamp fields or a topic around the payload without
  // moving it (Frame::rewrite: a master adds a cache key and a dispatch id).
  MessageView sized = m;
  sized.payload = {};
  room_tail = tail_size(sized);
  const std::size_t bare = wire_start(topic.size()) + head_size(sized, max) + max + room_tail;
  start = wire_start(topic.size()) + head_room(p, bare);
  payload_offset = start + head_size(sized, max);
  need = payload_offset + max + room_tail;
  length = SIZE_MAX;  // nothing encoded yet
}

Result<void> FrameWriter::begin(BlockPool& pool, SlotId slot, const MessageView& fields,
                                std::string_view topic, std::size_t max_payload) noexcept {
  abandon();
  if (topic.size() > kMaxTopicBytes) return tl::unexpected(topic_too_large(topic.size()));
  // The tail's size, once a message: the plan's test and commit need it.
  tail_len_ = tail_size(fields);
  if (!plan_.matches(pool, fields, topic, max_payload, tail_len_)) {
    try {
      plan_.reset(pool, fields, topic, max_payload);
    } catch (const std::bad_alloc&) {
      plan_ = Plan{};
      return make_error(Errc::kExhausted, "FrameWriter: no memory for the frame's plan");
    }
  }
  auto block = pool.allocate_block(plan_.need, slot);
  if (!block) return tl::unexpected(std::move(block.error()));
  pool_ = &pool;
  slot_ = slot;
  handle_ = block->handle;
  data_ = block->data;
  fields_ = fields;
  fields_.payload = {};
  payload_offset_ = plan_.payload_offset;
  payload_ = std::span<std::byte>(data_ + payload_offset_, max_payload);
  write_header(data_, topic, plan_.start, WireLayout{});  // topic now; layout at commit
  return {};
}

Result<Handle> FrameWriter::commit(std::size_t payload_length) noexcept {
  if (pool_ == nullptr) return make_error(Errc::kInvalidArgument, "FrameWriter: commit without begin");
  if (payload_length > payload_.size()) {
    return make_error(Errc::kOutOfRange, "FrameWriter: payload of " +
                                             std::to_string(payload_length) +
                                             " bytes exceeds the " +
                                             std::to_string(payload_.size()) + " reserved");
  }
  const std::size_t tail_len = tail_len_;  // <= plan_.room_tail (begin)
  if (payload_length != plan_.length || tail_len != plan_.tail) {
    // A new payload length (or dispatch id width): encode the head and the
    // layout again. Otherwise they are the last message's: the head holds
    // fields 1-5 and the payload's length only, and with a tail of the same
    // size every offset is the same.
    try {
      plan_.head.resize(head_size(fields_, payload_length));
    } catch (const std::bad_alloc&) {
      plan_.length = SIZE_MAX;
      return make_error(Errc::kExhausted, "FrameWriter: no memory for the frame's head");
    }
    const std::size_t written = encode_head(fields_, payload_length, plan_.head);
    PALM_ASSERT(written == plan_.head.size());
    plan_.layout = layout_for(fields_, payload_length);
    plan_.length = payload_length;
    plan_.tail = tail_len;
  }
  const std::size_t head = plan_.head.size();
  const std::size_t wire_offset = payload_offset_ - head;
  std::memcpy(data_ + wire_offset, plan_.head.data(), head);
  const std::size_t tail =
      encode_tail(fields_, std::span<std::byte>(data_ + payload_offset_ + payload_length, tail_len));
  WireLayout layout = plan_.layout;
  layout.dispatch_id = fields_.dispatch_id;  // the one field that differs within a plan
  PALM_ASSERT(layout.size == head + payload_length + tail);
  FrameHeader* fh = reinterpret_cast<FrameHeader*>(data_);  // NOLINT: the layout ABI
  fh->wire_offset = static_cast<std::uint32_t>(wire_offset);
  fh->layout = layout;
  (void)pool_->set_used(handle_, wire_offset + layout.size);
  const Handle out = handle_;
  pool_ = nullptr;
  handle_ = Handle{};
  payload_ = {};
  return out;
}

}  // namespace palm
