#pragma once
// Frames: a PalmMessage in one pool block, ready to cross a channel as a
// handle or to be sent to ZeroMQ as it is.
//
// Block data layout (an ABI between processes; bump kFrameVersion on any
// change of width, order or meaning):
//
//   [FrameHeader, 128 B][topic bytes][slack][message wire bytes]
//                                           ^ header.wire_offset
//
// The message is kept in canonical protobuf wire order (what libprotobuf
// writes: fields 1-5, the payload, then palm's fields 7+ and unknown
// fields), so the wire bytes are what ZeroMQ sends and what a pylm peer
// parses. The header holds the WireLayout, so a reader finds every field
// without parsing. The slack lets a writer put the payload first, at a place
// computed for the largest payload, and write the fields before it once the
// payload's length is known (FrameWriter): the user's bytes are written once,
// straight into shared memory.
//
// A published frame is immutable while shared: whoever receives a handle
// reads it; a change is a new frame. The one exception is Frame::rewrite,
// by a holder whose reference is the only one left (a master stamping the
// message a client sent it): the payload stays where it is, the fields
// around it are written again. Frames are reference counted by the pool.

#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "palm/core/codec.hpp"
#include "palm/core/error.hpp"
#include "palm/core/handle.hpp"
#include "palm/core/pool.hpp"

namespace palm {

inline constexpr std::uint32_t kFrameMagic = 0x4d415246;  // "FRAM"
inline constexpr std::uint16_t kFrameVersion = 1;
inline constexpr std::size_t kFrameHeaderBytes = 128;
inline constexpr std::size_t kMaxTopicBytes = 1024;

// Frame flag bits (FrameHeader::flags), palm-internal.
enum FrameFlags : std::uint32_t {
  kFrameNone = 0,
};

// Written once by the frame's writer, before the handle is published;
// read-only after.
struct FrameHeader {
  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t topic_length;  // topic bytes follow the header
  std::uint32_t wire_offset;   // from the start of the block's data
  std::uint32_t flags;         // FrameFlags
  WireLayout layout;           // offsets relative to the wire bytes
  std::byte reserved[kFrameHeaderBytes - 16 - sizeof(WireLayout)];
};
static_assert(sizeof(FrameHeader) == kFrameHeaderBytes);
static_assert(std::is_trivially_copyable_v<FrameHeader>);
static_assert(std::is_standard_layout_v<FrameHeader>);

// A validated, read-only view of a frame. Valid while a reference is held.
struct FrameView {
  Handle handle;
  const FrameHeader* header = nullptr;
  std::string_view topic;
  std::span<const std::byte> wire;  // the serialized PalmMessage
  MessageView message;              // fields, viewed in place in `wire`
};

// The bytes of a frame as they go out: the topic and the wire bytes, with
// the handle and the frame header checked (magic, version, every offset
// inside the block) but not the message's fields. For a sender that hands
// the bytes on as they are (the ZeroMQ bridge): whoever receives them
// parses and validates them, so the sender need not view them first.
struct FrameWire {
  const FrameHeader* header = nullptr;
  std::string_view topic;
  std::span<const std::byte> wire;  // the serialized PalmMessage
};
[[nodiscard]] Result<FrameWire> frame_wire(const BlockPool& pool, Handle h) noexcept;

// Validates `h` (frame_wire's checks, then the message's fields against the
// header's layout) and views it. Data from another process is checked,
// never trusted: a damaged frame is kMalformed.
[[nodiscard]] Result<FrameView> view_frame(const BlockPool& pool, Handle h) noexcept;
// view_frame into `out`, false where it refuses (no reason: view_frame says
// it). The hot path of Frame::view.
[[nodiscard]] bool view_frame_into(const BlockPool& pool, Handle h, FrameView& out) noexcept;

// Bytes of block capacity a frame needs.
[[nodiscard]] std::size_t frame_bytes(const MessageView& m, std::string_view topic) noexcept;

// Encodes `m` under `topic` into a fresh block held by `slot`.
[[nodiscard]] Result<Handle> build_frame(BlockPool& pool, SlotId slot, const MessageView& m,
                                         std::string_view topic = {}) noexcept;

// Validates `wire` as libprotobuf would (see codec.hpp) and copies its
// canonical form into a fresh block held by `slot`: the one copy of a
// message that arrives from a socket.
[[nodiscard]] Result<Handle> parse_frame(BlockPool& pool, SlotId slot,
                                         std::span<const std::byte> wire,
                                         std::string_view topic = {}) noexcept;

namespace detail {

// A FrameView or nothing, as std::optional<FrameView>, but an empty one is
// one bool written: GCC 12's std::optional zeroes its whole storage when
// default-constructed (GCC PR 86173), ~200 bytes with a `rep stos` for
// every Frame made empty (each Delivery, Routed item, table entry), a
// measured 6 % of a master thread's samples. FrameView is trivially
// copyable and destructible: a copy is its bytes, nothing to destroy.
// The view is read only while has_ is set; GCC 12 cannot follow that
// through a Frame's inlined moves and warns of a maybe-uninitialized read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
class MaybeView {
 public:
  MaybeView() noexcept {}  // no member of the union is made: nothing written
  explicit MaybeView(const FrameView& v) noexcept : has_(true) { ::new (static_cast<void*>(&u_.view)) FrameView(v); }
  MaybeView(const MaybeView& other) noexcept { *this = other; }
  MaybeView& operator=(const MaybeView& other) noexcept {
    if (other.has_) {
      emplace(other.u_.view);
    } else {
      has_ = false;
    }
    return *this;
  }
  ~MaybeView() = default;  // FrameView is trivially destructible

  explicit operator bool() const noexcept { return has_; }
  const FrameView& operator*() const noexcept { return u_.view; }
  FrameView& operator*() noexcept { return u_.view; }
  FrameView& emplace(const FrameView& v) noexcept {
    ::new (static_cast<void*>(&u_.view)) FrameView(v);
    has_ = true;
    return u_.view;
  }
  FrameView& emplace() noexcept {
    ::new (static_cast<void*>(&u_.view)) FrameView;
    has_ = true;
    return u_.view;
  }
  void reset() noexcept { has_ = false; }

 private:
  static_assert(std::is_trivially_copyable_v<FrameView> && std::is_trivially_destructible_v<FrameView>);
  // The flag first: an empty one is read from the Frame's first cache line.
  bool has_ = false;
  union Storage {
    Storage() noexcept {}
    FrameView view;
  } u_;
};
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace detail

// One reference to a frame, held by a pool slot and released when the Frame
// is destroyed (RAII for a handle). Move-only: a copy would be a second
// reference, which share() makes explicit. Not thread-safe; a Frame may move
// between threads of one process when its slot may.
//
// The first view() validates the frame and keeps the view: a published
// frame is immutable and its block stays mapped while the reference is
// held, so later views (counters, routing, sending) cost nothing. The kept
// view moves with the Frame and is copied by share().
class Frame {
 public:
  // Value-initialization (`Frame{}`, `T{}` of a struct holding a Frame)
  // zeroes the whole object first, the view's storage included: hot paths
  // default-initialize.
  Frame() = default;
  // Adopts a reference that `slot` holds (from allocate, build_frame, hold).
  Frame(BlockPool& pool, SlotId slot, Handle h) noexcept : pool_(&pool), slot_(slot), handle_(h) {}
  // The same, with the view this process validated for `h` before (a frame
  // that crossed the router of its process): not validated again.
  Frame(BlockPool& pool, SlotId slot, Handle h, const FrameView& viewed) noexcept
      : pool_(&pool), slot_(slot), handle_(h), view_(viewed) {}
  Frame(Frame&& other) noexcept
      : pool_(std::exchange(other.pool_, nullptr)), slot_(other.slot_),
        handle_(std::exchange(other.handle_, Handle{})) {
    take_view(other);
  }
  Frame& operator=(Frame&& other) noexcept {
    if (this != &other) {
      reset();
      pool_ = std::exchange(other.pool_, nullptr);
      slot_ = other.slot_;
      handle_ = std::exchange(other.handle_, Handle{});
      take_view(other);
    }
    return *this;
  }
  Frame(const Frame&) = delete;
  Frame& operator=(const Frame&) = delete;
  ~Frame() { reset(); }

  [[nodiscard]] static Result<Frame> build(BlockPool& pool, SlotId slot, const MessageView& m,
                                           std::string_view topic = {}) noexcept;
  [[nodiscard]] static Result<Frame> parse(BlockPool& pool, SlotId slot,
                                           std::span<const std::byte> wire,
                                           std::string_view topic = {}) noexcept;

  explicit operator bool() const noexcept { return pool_ != nullptr && !handle_.is_null(); }
  Handle handle() const noexcept { return handle_; }
  BlockPool* pool() const noexcept { return pool_; }
  SlotId slot() const noexcept { return slot_; }
  [[nodiscard]] Result<FrameView> view() const noexcept;
  // The view, validated on first use; null for an empty or unreadable
  // frame. Valid while this Frame holds its reference.
  const FrameView* peek() const noexcept {
    if (!view_) static_cast<void>(view());
    return view_ ? &*view_ : nullptr;
  }
  // The view if validated already, else null (validates nothing).
  const FrameView* cached_view() const noexcept { return view_ ? &*view_ : nullptr; }
  // Bytes of the serialized message; 0 for an empty or unreadable frame.
  std::size_t wire_bytes() const noexcept {
    const FrameView* v = peek();
    return v != nullptr ? v->wire.size() : 0;
  }
  // Rewrites the frame in place as `m` under `topic` when this reference is
  // the only one and m's payload is this frame's own payload bytes (same
  // place, same length): the fields before and after the payload are
  // encoded again around it, nothing else moves (no new block, no payload
  // copy). m's other fields and `topic` may view this frame's bytes. Returns
  // false, with nothing changed, when that is not possible (shared, another
  // payload, an empty payload, no room in the block); then build a new frame.
  [[nodiscard]] bool rewrite(const MessageView& m, std::string_view topic = {}) noexcept;
  // A second reference for fan-out (the count goes up; nothing is copied).
  [[nodiscard]] Result<Frame> share() const noexcept;
  // share() without the kept view (copying it is ~200 bytes, and as many
  // again each time the Frame moves): for a reference kept aside and seldom
  // read, such as a copy to send again. Its first view() validates again.
  [[nodiscard]] Result<Frame> share_unviewed() const noexcept;
  // The reference leaves this slot (sent through a channel): unheld, not
  // released; the Frame becomes empty. Returns the handle to send.
  [[nodiscard]] Result<Handle> give_away() noexcept;
  // The reference stays held by this slot but the Frame forgets it: for
  // passing it between threads of the process through a ring of plain
  // words (the router). Frame(pool, slot, h) takes it back. Empty -> null.
  Handle detach() noexcept {
    pool_ = nullptr;
    view_.reset();
    return std::exchange(handle_, Handle{});
  }
  // reset(), then holds `h` as Frame(pool, slot, h) or Frame(pool, slot, h,
  // *viewed) would, the view copied once, straight into place (no
  // temporary Frame moved in).
  void adopt(BlockPool& pool, SlotId slot, Handle h, const FrameView* viewed) noexcept {
    reset();
    pool_ = &pool;
    slot_ = slot;
    handle_ = h;
    if (viewed != nullptr) view_.emplace(*viewed);
  }
  // Drops the reference now. Inline for the common case of an empty Frame
  // (every Frame moved from is destroyed through it).
  void reset() noexcept {
    if (pool_ != nullptr || !handle_.is_null() || view_) drop();
  }

 private:
  void drop() noexcept;  // reset() of a Frame that holds something
  // Moves other's kept view, if any. Tested first: most moved frames were
  // never viewed, and an exchange of optionals copies a whole FrameView
  // (a frame handed to a ring and back is moved once per message).
  void take_view(Frame& other) noexcept {
    if (other.view_) {
      view_.emplace(*other.view_);
      other.view_.reset();
    } else if (view_) {
      view_.reset();
    }
  }

  BlockPool* pool_ = nullptr;
  SlotId slot_{};
  Handle handle_;
  // Constructed only once viewed: an empty one costs no zeroing of a
  // FrameView per Frame (detail::MaybeView).
  mutable detail::MaybeView view_;
};

// Builds a frame whose payload the caller writes in place:
//
//   FrameWriter w;
//   if (auto r = w.begin(pool, slot, fields, topic, max_payload); !r) ...
//   std::span<std::byte> out = w.payload();   // max_payload bytes
//   ... write n <= max_payload bytes ...
//   Result<Handle> h = w.commit(n);
//
// `fields.payload` is ignored; the strings `fields` views must stay alive
// until commit. A writer dropped before commit releases its
// block. Not thread-safe; one frame at a time.
class FrameWriter {
 public:
  FrameWriter() = default;
  FrameWriter(const FrameWriter&) = delete;  // owns an uncommitted block
  FrameWriter& operator=(const FrameWriter&) = delete;
  ~FrameWriter();

  [[nodiscard]] Result<void> begin(BlockPool& pool, SlotId slot, const MessageView& fields,
                                   std::string_view topic, std::size_t max_payload) noexcept;
  std::span<std::byte> payload() const noexcept { return payload_; }
  [[nodiscard]] Result<Handle> commit(std::size_t payload_length) noexcept;
  void abandon() noexcept;

 private:
  // What begin() and commit() derive from the fields alone, kept while the
  // fields (but the payload and the dispatch id), the topic, the pool and
  // max_payload stay the same: a job's messages differ in their payload and
  // dispatch id only, so the head is sized and encoded once per job, not
  // once per message. The fields are compared by content (copies in
  // `text`): a caller may reuse a buffer for other bytes.
  struct Plan {
    const BlockPool* pool = nullptr;
    std::size_t max_payload = 0;
    std::string text;  // pipeline, client, function, cache, error, unknown, topic
    std::int64_t stage = 0;
    std::uint32_t flags = 0;
    std::size_t lengths[7] = {};
    std::size_t start = 0;           // where the wire bytes may start
    std::size_t payload_offset = 0;  // from the block's data
    std::size_t need = 0;            // block bytes
    std::size_t room_tail = 0;       // tail bytes the block has room for
    // The encoding for one payload length and tail size (the last committed).
    std::size_t length = SIZE_MAX;
    std::size_t tail = 0;
    std::vector<std::byte> head;
    WireLayout layout;
    bool matches(const BlockPool& p, const MessageView& m, std::string_view topic, std::size_t max,
                 std::size_t tail_bytes) const noexcept;
    void reset(const BlockPool& p, const MessageView& m, std::string_view topic, std::size_t max);
  };

  BlockPool* pool_ = nullptr;
  SlotId slot_{};
  Handle handle_;
  std::byte* data_ = nullptr;
  MessageView fields_;
  std::span<std::byte> payload_;
  std::size_t payload_offset_ = 0;  // from data_
  std::size_t tail_len_ = 0;        // tail_size(fields_), from begin
  Plan plan_;
};

}  // namespace palm
