#include "palm/core/frame.hpp"

#include <cstring>
#include <string>

#include "palm/core/assert.hpp"

namespace palm {
namespace {

constexpr std::size_t kAlign = 8;

std::size_t align_up(std::size_t n) { return (n + kAlign - 1) & ~(kAlign - 1); }

// Where the wire bytes start when nothing needs slack.
std::size_t wire_start(std::size_t topic_length) {
  return align_up(kFrameHeaderBytes + topic_length);
}

Result<void> check_topic(std::string_view topic) {
  if (topic.size() > kMaxTopicBytes) {
    return make_error(Errc::kTooLarge, "a topic of " + std::to_string(topic.size()) +
                                           " bytes exceeds palm's limit of " +
                                           std::to_string(kMaxTopicBytes));
  }
  return {};
}

void write_header(std::byte* data, std::string_view topic, std::size_t wire_offset,
                  const WireLayout& layout) {
  FrameHeader h{};
  h.magic = kFrameMagic;
  h.version = kFrameVersion;
  h.topic_length = static_cast<std::uint16_t>(topic.size());
  h.wire_offset = static_cast<std::uint32_t>(wire_offset);
  h.flags = kFrameNone;
  h.layout = layout;
  std::memcpy(data, &h, sizeof h);
  if (!topic.empty()) std::memcpy(data + kFrameHeaderBytes, topic.data(), topic.size());
}

}  // namespace

std::size_t frame_bytes(const MessageView& m, std::string_view topic) noexcept {
  return wire_start(topic.size()) + encoded_size(m);
}

Result<FrameView> view_frame(const BlockPool& pool, Handle h) noexcept {
  auto block = pool.resolve(h);
  if (!block) return tl::unexpected(std::move(block.error()));
  FrameView v;
  v.handle = h;
  if (block->capacity < kFrameHeaderBytes) {
    return make_error(Errc::kMalformed, "block too small for a frame");
  }
  v.header = reinterpret_cast<const FrameHeader*>(block->data);  // NOLINT: the layout ABI
  const FrameHeader& fh = *v.header;
  if (fh.magic != kFrameMagic || fh.version != kFrameVersion) {
    return make_error(Errc::kMalformed, "block holds no frame of version " +
                                            std::to_string(kFrameVersion));
  }
  const std::size_t topic_end = kFrameHeaderBytes + fh.topic_length;
  if (fh.topic_length > kMaxTopicBytes || fh.wire_offset < topic_end ||
      fh.wire_offset > block->capacity ||
      fh.layout.size > block->capacity - fh.wire_offset) {
    return make_error(Errc::kMalformed, "frame offsets out of its block");
  }
  v.topic = std::string_view(reinterpret_cast<const char*>(block->data + kFrameHeaderBytes),
                             fh.topic_length);
  v.wire = std::span<const std::byte>(block->data + fh.wire_offset, fh.layout.size);
  auto msg = view_of(fh.layout, v.wire);
  if (!msg) return tl::unexpected(std::move(msg.error()));
  v.message = *msg;
  return v;
}

Result<Handle> build_frame(BlockPool& pool, SlotId slot, const MessageView& m,
                           std::string_view topic) noexcept {
  if (auto t = check_topic(topic); !t) return tl::unexpected(std::move(t.error()));
  const std::size_t start = wire_start(topic.size());
  const std::size_t wire_size = encoded_size(m);
  auto h = pool.allocate(start + wire_size, slot);
  if (!h) return h;
  auto block = pool.resolve(*h);
  PALM_ASSERT(block.has_value());  // we hold the only reference
  const std::size_t written =
      encode(m, std::span<std::byte>(block->data + start, block->capacity - start));
  PALM_ASSERT(written == wire_size);
  write_header(block->data, topic, start, layout_for(m, m.payload.size()));
  (void)pool.set_used(*h, start + wire_size);
  return h;
}

Result<Handle> parse_frame(BlockPool& pool, SlotId slot, std::span<const std::byte> wire,
                           std::string_view topic) noexcept {
  if (auto t = check_topic(topic); !t) return tl::unexpected(std::move(t.error()));
  const std::size_t start = wire_start(topic.size());
  auto h = pool.allocate(start + canonical_size_bound(wire.size()), slot);
  if (!h) return h;
  auto block = pool.resolve(*h);
  PALM_ASSERT(block.has_value());
  auto layout =
      parse_into(wire, std::span<std::byte>(block->data + start, block->capacity - start));
  if (!layout) {
    (void)pool.release(slot, *h);
    return tl::unexpected(std::move(layout.error()));
  }
  write_header(block->data, topic, start, *layout);
  (void)pool.set_used(*h, start + layout->size);
  return h;
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
  if (!*this) return make_error(Errc::kInvalidArgument, "an empty Frame has no view");
  return view_frame(*pool_, handle_);
}

Result<Frame> Frame::share() const noexcept {
  if (!*this) return make_error(Errc::kInvalidArgument, "an empty Frame cannot be shared");
  if (auto r = pool_->add_ref(slot_, handle_); !r) return tl::unexpected(std::move(r.error()));
  return Frame(*pool_, slot_, handle_);
}

Result<Handle> Frame::give_away() noexcept {
  if (!*this) return make_error(Errc::kInvalidArgument, "an empty Frame has nothing to give");
  if (auto r = pool_->unhold(slot_, handle_); !r) return tl::unexpected(std::move(r.error()));
  pool_ = nullptr;
  return std::exchange(handle_, Handle{});
}

void Frame::reset() noexcept {
  if (*this) (void)pool_->release(slot_, handle_);
  pool_ = nullptr;
  handle_ = Handle{};
}

FrameWriter::~FrameWriter() { abandon(); }

void FrameWriter::abandon() noexcept {
  if (pool_ != nullptr && !handle_.is_null()) (void)pool_->release(slot_, handle_);
  pool_ = nullptr;
  handle_ = Handle{};
  payload_ = {};
}

Result<void> FrameWriter::begin(BlockPool& pool, SlotId slot, const MessageView& fields,
                                std::string_view topic, std::size_t max_payload) noexcept {
  abandon();
  if (auto t = check_topic(topic); !t) return t;
  MessageView head_fields = fields;
  head_fields.payload = {};
  // The payload goes where the longest head (that of a max_payload payload)
  // would end; a shorter payload's head is written closer to it at commit.
  const std::size_t start = wire_start(topic.size());
  const std::size_t payload_offset = start + head_size(head_fields, max_payload);
  const std::size_t need = payload_offset + max_payload + tail_size(head_fields);
  auto h = pool.allocate(need, slot);
  if (!h) return tl::unexpected(std::move(h.error()));
  auto block = pool.resolve(*h);
  PALM_ASSERT(block.has_value());
  pool_ = &pool;
  slot_ = slot;
  handle_ = *h;
  data_ = block->data;
  fields_ = head_fields;
  payload_offset_ = payload_offset;
  payload_ = std::span<std::byte>(data_ + payload_offset, max_payload);
  write_header(data_, topic, start, WireLayout{});  // topic now; layout at commit
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
  const std::size_t head = head_size(fields_, payload_length);
  const std::size_t wire_offset = payload_offset_ - head;
  const std::size_t payload_at =
      encode_head(fields_, payload_length, std::span<std::byte>(data_ + wire_offset, head));
  PALM_ASSERT(payload_at == head);
  const std::size_t tail = encode_tail(
      fields_, std::span<std::byte>(data_ + payload_offset_ + payload_length, tail_size(fields_)));
  const WireLayout layout = layout_for(fields_, payload_length);
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
