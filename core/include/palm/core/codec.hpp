#pragma once
// palm's codec for PalmMessage (proto/palm.proto), byte-identical to
// libprotobuf 3.21 and without its allocations.
//
// Writing: encode() writes what libprotobuf's SerializeToString writes for
// the same field values: present fields in field-number order, proto3
// defaults (0, empty) omitted, minimal varints (a negative stage takes 10
// bytes), then the unknown fields. encode_head()/encode_tail() write the same
// bytes around a payload the caller writes itself (zero-copy frames).
//
// Reading: parse_into() accepts exactly the inputs libprotobuf's
// ParseFromArray accepts and writes the canonical encoding of the message,
// i.e. SerializeToString(ParseFromArray(input)), byte for byte, plus a
// WireLayout locating every field in it. Canonical inputs (all that pylm and
// palm send) are copied with one memcpy. What libprotobuf accepts, and so
// does palm (each checked against libprotobuf in tests/core/codec_test.cpp):
//   - fields in any order; a field given twice: the last one wins; a field
//     given its default (0, empty) on the wire: dropped;
//   - overlong varints, tags and lengths (up to 10, 5 and 5 bytes); bits past
//     64 (values) or 32 (tags) dropped; uint32 `flags` keeps the low 32 bits;
//   - a known field number with another wire type: an unknown field;
//   - unknown fields of wire types 0, 1, 2, 5 and groups (3 ... 4, nested up
//     to 100 deep), kept in the order read and written after the known
//     fields; libprotobuf keeps their values, not their bytes, so they are
//     written back canonically (minimal tags, varints and lengths, inside
//     groups too).
// And what it rejects:
//   - kInvalidUtf8: a string field (1, 2, 4, 5, 7) that is not UTF-8, in any
//     occurrence, even one a later occurrence replaces;
//   - kTruncated: input ending inside a tag, varint, length-delimited value,
//     fixed32/64 or group;
//   - kMalformed: field number 0; wire type 6 or 7; an end-group tag that
//     closes no group or another one (at the top level too); groups nested
//     over 100 deep; a varint over 10 bytes, a tag over 5; a length over 5
//     bytes or over INT_MAX - 16;
//   - kTooLarge: input over INT_MAX bytes (libprotobuf takes an int size).
//
// All functions are thread-safe (no shared state), never block, and do not
// allocate except to build the message of an Error. Views returned point into
// the caller's buffers: the caller keeps those alive.

#include <climits>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>

#include "palm/core/error.hpp"

namespace palm {

// A PalmMessage that does not own its bytes. Members are in field-number
// order; a default value (empty, 0) is an absent field.
struct MessageView {
  std::string_view pipeline;           // 1
  std::string_view client;             // 2
  std::int64_t stage = 0;              // 3
  std::string_view function;           // 4
  std::string_view cache;              // 5
  std::span<const std::byte> payload;  // 6
  std::string_view error;              // 7
  std::uint64_t dispatch_id = 0;       // 8
  std::uint32_t flags = 0;             // 9
  // Unknown fields, as canonical wire bytes (tag, value, tag, value, ...);
  // encode() writes them verbatim after the known fields.
  std::span<const std::byte> unknown;
};

// Where a field's value bytes are, relative to the start of the message.
struct FieldSpan {
  std::uint32_t offset = 0;
  std::uint32_t length = 0;
  friend bool operator==(const FieldSpan&, const FieldSpan&) = default;
};

// The map of a canonical PalmMessage: every field located, the numbers read.
// Fixed-width and trivially copyable, so a frame header in shared memory can
// hold one; it is part of the frame layout (bump the frame layout version on
// any change). An absent string/bytes field is {0, 0}.
struct WireLayout {
  std::int64_t stage = 0;
  std::uint64_t dispatch_id = 0;
  std::uint32_t flags = 0;
  std::uint32_t size = 0;  // bytes of the whole message
  FieldSpan pipeline;
  FieldSpan client;
  FieldSpan function;
  FieldSpan cache;
  FieldSpan payload;
  FieldSpan error;
  FieldSpan unknown;  // all unknown fields, tags included; last in a message
  // Offset of the payload's tag, or, with no payload, where it would go: the
  // end of fields 1-5. [0, payload_tag) is what encode_head writes before the
  // tag.
  std::uint32_t payload_tag = 0;
  // Offset of what follows the payload: fields 7+, then unknown fields
  // ([tail, size) is what encode_tail writes).
  std::uint32_t tail = 0;
  friend bool operator==(const WireLayout&, const WireLayout&) = default;
};
static_assert(std::is_trivially_copyable_v<WireLayout>);
static_assert(std::is_standard_layout_v<WireLayout>);
static_assert(sizeof(FieldSpan) == 8 && alignof(WireLayout) == 8);
static_assert(sizeof(WireLayout) == 88, "no implicit padding: a shared layout");

// The largest input parse_into accepts: libprotobuf parses an int's worth.
inline constexpr std::size_t kMaxWireSize = INT_MAX;

// --- Writing ---------------------------------------------------------------
// The caller provides room: out.size() below the size named is a caller bug
// (PALM_ASSERT). String fields are written as given: they should be UTF-8, or
// a protobuf peer rejects the message.

// Bytes encode(m, ...) writes.
[[nodiscard]] std::size_t encoded_size(const MessageView& m) noexcept;
// Writes m at the start of out; returns the bytes written.
[[nodiscard]] std::size_t encode(const MessageView& m,
                                 std::span<std::byte> out) noexcept;

// Bytes encode_head writes: fields 1-5, and the payload's tag and length if
// payload_len > 0 (an empty payload is omitted).
[[nodiscard]] std::size_t head_size(const MessageView& m,
                                    std::size_t payload_len) noexcept;
// Writes fields 1-5 of m (m.payload is ignored) and, if payload_len > 0, the
// tag and length of a payload of payload_len bytes; returns the offset in
// out where the payload bytes go. Then the caller writes them there and
// calls encode_tail at offset + payload_len.
[[nodiscard]] std::size_t encode_head(const MessageView& m,
                                      std::size_t payload_len,
                                      std::span<std::byte> out) noexcept;
// The head in two: fields 1-4 (pipeline, client, stage, function), then
// the suffix, field 5 (cache) and the payload's tag and length. A master
// stamping a cache key keeps the first part's bytes and writes the suffix
// only (Frame::rewrite). head_size == head_prefix_size + head_suffix_size.
[[nodiscard]] std::size_t head_prefix_size(const MessageView& m) noexcept;
[[nodiscard]] std::size_t head_suffix_size(std::size_t cache_len,
                                           std::size_t payload_len) noexcept;
// Writes the suffix of m's head (m.cache, and the payload's tag and length
// if payload_len > 0) at the start of out; returns the bytes written.
[[nodiscard]] std::size_t encode_head_suffix(const MessageView& m,
                                             std::size_t payload_len,
                                             std::span<std::byte> out) noexcept;
// Bytes encode_tail writes: fields 7-9 and the unknown fields.
[[nodiscard]] std::size_t tail_size(const MessageView& m) noexcept;
// Writes fields 7-9 and m.unknown at the start of out; returns the bytes
// written.
[[nodiscard]] std::size_t encode_tail(const MessageView& m,
                                      std::span<std::byte> out) noexcept;

// The layout encode() gives m with a payload of payload_len bytes (m.payload
// ignored), computed without writing it. The message must fit a uint32.
[[nodiscard]] WireLayout layout_for(const MessageView& m,
                                    std::size_t payload_len) noexcept;

// --- Reading ---------------------------------------------------------------

// The canonical encoding of a message is never longer than any encoding of
// it: parse_into needs at most wire.size() bytes of out. (Each field libprotobuf
// keeps is written with a minimal tag, varint and length, and no bits are
// added: the truncated tags, values and flags re-encode shorter or equal,
// dropped fields and defaults shrink it. Checked by a PALM_ASSERT on each
// parse and by the differential tests.)
[[nodiscard]] constexpr std::size_t canonical_size_bound(
    std::size_t wire_size) noexcept {
  return wire_size;
}

// Validates wire as libprotobuf does and writes its canonical encoding at the
// start of out (which must not overlap wire). Fails with the Errc listed
// above, or kOutOfRange if out is shorter than the canonical encoding
// (never so with canonical_size_bound(wire.size()) bytes). On failure out
// holds unspecified bytes.
[[nodiscard]] Result<WireLayout> parse_into(std::span<const std::byte> wire,
                                            std::span<std::byte> out) noexcept;

// Validates a message in place and maps it: as parse_into, without the copy,
// for an input that is canonical already (as parse_into writes and encode
// writes). A valid but non-canonical message fails with kInvalidArgument:
// parse_into canonicalizes it.
[[nodiscard]] Result<WireLayout> layout_of(
    std::span<const std::byte> canonical) noexcept;

// Views the fields of a message mapped by layout, in place. buffer starts at
// the message; each span of the layout is checked to lie within
// layout.size <= buffer.size() (kOutOfRange, kMalformed), so a damaged layout
// is an error, not a stray read. Strings are not revalidated.
[[nodiscard]] Result<MessageView> view_of(
    const WireLayout& layout, std::span<const std::byte> buffer) noexcept;
// view_of into `out`, each field written where it stays; false where
// view_of fails (it says why), `out` then unspecified. For a view kept in a
// larger struct: a MessageView returned and copied in is read back in wide
// loads over the narrow stores that made it, a store-forwarding stall.
[[nodiscard]] bool view_into(const WireLayout& layout, std::span<const std::byte> buffer,
                             MessageView& out) noexcept;

// layout_of + view_of: the fields of a canonical message, viewed in place.
[[nodiscard]] Result<MessageView> decode(
    std::span<const std::byte> canonical) noexcept;

// UTF-8 as libprotobuf 3.21 checks proto3 strings, which is the Unicode
// standard's (Table 3-7): no overlong forms, no surrogates (U+D800-DFFF),
// nothing over U+10FFFF; U+0000 and noncharacters are valid.
[[nodiscard]] bool is_valid_utf8(std::string_view s) noexcept;

}  // namespace palm
