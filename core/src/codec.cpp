// PalmMessage codec: see codec.hpp for the contract.
//
// Parsing is two passes over the input at most:
//   1. scan(): validates everything as libprotobuf's generated
//      PalmMessage::_InternalParse + UnknownFieldParse do, records the last
//      occurrence of each known field, sums the canonical size of the unknown
//      fields and notes whether the input is canonical already.
//   2. Canonical input: one memcpy. Otherwise write_canonical(): the known
//      fields in number order from what scan() recorded, then a second walk
//      from the first unknown field re-encodes the unknown ones in order.
// A canonical input's layout is read off the scan (layout_in_place); a
// canonicalized one's is computed from the field values (canonical_layout,
// also behind layout_for). The tests check the two agree.

#include "palm/core/codec.hpp"

#include <array>
#include <bit>
#include <cstring>
#include <functional>
#include <string>
#include <utility>

#include "palm/core/assert.hpp"
#include "palm/core/detail/varint.hpp"

namespace palm {
namespace {

using detail::Failure;
using detail::put_varint;
using detail::varint_size;
using detail::WireReader;

// io::CodedInputStream's default recursion limit: 100 nested groups parse,
// 101 do not.
constexpr std::size_t kMaxGroupDepth = 100;

// The length-delimited known fields, in field-number order.
enum Slot : std::size_t { kPipeline, kClient, kFunction, kCache, kPayload, kError, kSlots };

// Tags (field << 3 | wire type) of the known fields: one byte each.
constexpr std::uint8_t kTagPipeline = 0x0A;  // 1, length-delimited
constexpr std::uint8_t kTagClient = 0x12;    // 2, length-delimited
constexpr std::uint8_t kTagStage = 0x18;     // 3, varint
constexpr std::uint8_t kTagFunction = 0x22;  // 4, length-delimited
constexpr std::uint8_t kTagCache = 0x2A;     // 5, length-delimited
constexpr std::uint8_t kTagPayload = 0x32;   // 6, length-delimited
constexpr std::uint8_t kTagError = 0x3A;     // 7, length-delimited
constexpr std::uint8_t kTagDispatch = 0x40;  // 8, varint
constexpr std::uint8_t kTagFlags = 0x48;     // 9, varint

constexpr std::uint8_t kSlotTag[kSlots] = {kTagPipeline, kTagClient, kTagFunction,
                                           kTagCache,    kTagPayload, kTagError};
constexpr const char* kBadUtf8[kSlots] = {
    "invalid UTF-8 in string field 1 (pipeline)", "invalid UTF-8 in string field 2 (client)",
    "invalid UTF-8 in string field 4 (function)", "invalid UTF-8 in string field 5 (cache)",
    "", "invalid UTF-8 in string field 7 (error)"};

std::string_view chars(const std::byte* p, std::size_t n) noexcept {
  return {reinterpret_cast<const char*>(p), n};  // char may alias any byte
}

// --- UTF-8 -----------------------------------------------------------------

std::uint32_t byte_at(const std::byte* p) noexcept { return std::to_integer<std::uint32_t>(*p); }

// Index, in memory order, of the first byte whose high bit is set in
// high_bits (8 bytes as loaded, masked to their high bits; not 0).
unsigned first_high_byte(std::uint64_t high_bits) noexcept {
  if constexpr (std::endian::native == std::endian::little) {
    return static_cast<unsigned>(std::countr_zero(high_bits)) / 8;
  } else {
    return static_cast<unsigned>(std::countl_zero(high_bits)) / 8;
  }
}

std::uint64_t load64(const std::byte* p) noexcept {
  std::uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}

bool valid_utf8(const std::byte* const begin, std::size_t n) noexcept {
  constexpr std::uint64_t kHighBits = 0x8080808080808080U;
  const std::byte* p = begin;
  const std::byte* const end = begin + n;
  for (;;) {
    // ASCII fast path: 16 bytes at a time, then 8, then the last 8 bytes of
    // the string (overlapping what was checked already).
    while (end - p >= 16) {
      if (((load64(p) | load64(p + 8)) & kHighBits) != 0) break;
      p += 16;
    }
    while (end - p >= 8) {
      const std::uint64_t high = load64(p) & kHighBits;
      if (high != 0) {
        p += first_high_byte(high);
        break;
      }
      p += 8;
    }
    if (p == end) return true;
    if (end - p < 8 && n >= 8 && (load64(end - 8) & kHighBits) == 0) return true;
    const std::uint32_t b = byte_at(p);
    if (b < 0x80) {
      ++p;
      continue;
    }
    // Unicode Table 3-7, well-formed byte sequences. The second byte's
    // range depends on the first (overlongs, surrogates, > U+10FFFF); the
    // others are 80..BF.
    std::size_t len;
    std::uint32_t lo = 0x80;
    std::uint32_t hi = 0xBF;
    if (b < 0xC2) {
      return false;  // a continuation byte, or C0/C1 (overlong)
    } else if (b < 0xE0) {
      len = 2;
    } else if (b < 0xF0) {
      len = 3;
      if (b == 0xE0) lo = 0xA0;  // overlong
      if (b == 0xED) hi = 0x9F;  // surrogates
    } else if (b < 0xF5) {
      len = 4;
      if (b == 0xF0) lo = 0x90;  // overlong
      if (b == 0xF4) hi = 0x8F;  // over U+10FFFF
    } else {
      return false;
    }
    if (static_cast<std::size_t>(end - p) < len) return false;
    const std::uint32_t b1 = byte_at(p + 1);
    if (b1 < lo || b1 > hi) return false;
    for (std::size_t i = 2; i < len; ++i) {
      if ((byte_at(p + i) & 0xC0U) != 0x80) return false;
    }
    p += len;
  }
}

// --- Reading ---------------------------------------------------------------

[[gnu::cold, gnu::noinline]] tl::unexpected<Error> to_error(const Failure& f, std::size_t size) {
  return make_error(f.code, std::string("PalmMessage: ") + f.what + " at byte " +
                                std::to_string(f.at) + " of " + std::to_string(size));
}

// Reads one unknown field whose tag was just read (a group: up to its
// end-group tag, nested groups included), with libprotobuf's FieldParser
// rules. Adds its canonical size to size, clears canonical if its bytes are
// not canonical. kWrite: also writes its canonical encoding at w (a pass over
// validated input: it cannot fail).
template <bool kWrite>
bool unknown_field(WireReader& r, std::uint32_t tag, std::byte*& w, std::uint64_t& size,
                   bool& canonical) noexcept {
  std::uint32_t open[kMaxGroupDepth];  // start-group tags of the open groups
  std::size_t depth = 0;
  for (;;) {
    if ((tag >> 3) == 0) return r.fail(Errc::kMalformed, "field number 0");
    size += varint_size(tag);
    if constexpr (kWrite) w = put_varint(w, tag);
    switch (tag & 7) {
      case 0: {  // varint
        std::uint64_t v;
        bool minimal;
        if (!r.varint(v, minimal)) return false;
        canonical &= minimal;
        size += varint_size(v);
        if constexpr (kWrite) w = put_varint(w, v);
        break;
      }
      case 1:    // fixed64
      case 5: {  // fixed32
        const std::size_t n = (tag & 7) == 1 ? 8 : 4;
        const std::byte* at;
        if (!r.fixed(n, at)) return false;
        size += n;
        if constexpr (kWrite) {
          std::memcpy(w, at, n);
          w += n;
        }
        break;
      }
      case 2: {  // length-delimited: unknown, so no UTF-8 check
        FieldSpan v;
        bool minimal;
        if (!r.bytes(v, minimal)) return false;
        canonical &= minimal;
        size += varint_size(v.length) + v.length;
        if constexpr (kWrite) {
          w = put_varint(w, v.length);
          std::memcpy(w, r.base() + v.offset, v.length);
          w += v.length;
        }
        break;
      }
      case 3:  // start group
        if (depth == kMaxGroupDepth) return r.fail(Errc::kMalformed, "groups nested over 100 deep");
        open[depth++] = tag;
        break;
      case 4:  // end group
        if (depth == 0) return r.fail(Errc::kMalformed, "end-group tag outside a group");
        if (tag != open[depth - 1] + 1) {
          return r.fail(Errc::kMalformed, "end-group tag of another field than its group");
        }
        --depth;
        break;
      default:
        return r.fail(Errc::kMalformed, "wire type 6 or 7");
    }
    if (depth == 0) return true;
    if (r.done()) return r.fail(Errc::kTruncated, "input ends inside a group");
    bool minimal;
    if (!r.tag(tag, minimal)) return false;
    canonical &= minimal;
  }
}

// What a tag is: a known field (the whole tag counts: a known field number
// with another wire type is an unknown field), or not. One byte per one-byte
// tag: 0 for unknown, else kIsBytes | its Slot, or kIsVarint.
constexpr std::uint8_t kIsBytes = 0x40;
constexpr std::uint8_t kIsVarint = 0x80;
constexpr auto kTagInfo = [] {
  std::array<std::uint8_t, 128> t{};
  for (std::size_t slot = 0; slot < kSlots; ++slot) {
    t[kSlotTag[slot]] = static_cast<std::uint8_t>(kIsBytes | slot);
  }
  t[kTagStage] = kIsVarint;
  t[kTagDispatch] = kIsVarint;
  t[kTagFlags] = kIsVarint;
  return t;
}();

std::uint8_t tag_info(std::uint32_t tag) noexcept { return tag < kTagInfo.size() ? kTagInfo[tag] : 0; }

// What pass 1 learns.
struct Scan {
  // Each member zeroed by name: GCC 12 clears a value-initialized aggregate
  // of this size with `rep stos`, whose start-up cost showed in decode.
  Scan() noexcept {
    for (FieldSpan& v : value) v = FieldSpan{};
  }
  FieldSpan value[kSlots];         // last occurrence of each, in the input
  std::int64_t stage = 0;
  std::uint64_t dispatch_id = 0;
  std::uint32_t flags = 0;
  bool has_unknown = false;
  bool canonical = true;           // input == its canonical encoding
  std::uint32_t head_end = 0;      // end of the last field numbered 1-5
  std::uint32_t first_unknown = 0; // offset of the first unknown field's tag
  std::uint64_t unknown_size = 0;  // canonical bytes of all unknown fields
};

// Pass 1 over the whole input. Inlined into each entry point: it is the
// whole cost of a parse.
[[gnu::always_inline]] inline bool scan(WireReader& r, Scan& s) noexcept {
  std::uint32_t last_field = 0;  // number of the last known field read
  std::byte* no_output = nullptr;
  while (!r.done()) {
    const std::size_t tag_at = r.offset();
    std::uint32_t tag;
    bool minimal;
    if (!r.tag(tag, minimal)) return false;
    const std::uint8_t info = tag_info(tag);
    if (info == 0) {
      if (!s.has_unknown) {
        s.has_unknown = true;
        s.first_unknown = static_cast<std::uint32_t>(tag_at);
      }
      s.canonical &= minimal;
      if (!unknown_field<false>(r, tag, no_output, s.unknown_size, s.canonical)) return false;
      continue;
    }
    // A known field is where canonical encoding puts it if it follows the
    // lower-numbered ones and precedes the unknown fields.
    const std::uint32_t field = tag >> 3;
    const bool in_place = minimal && field > last_field && !s.has_unknown;
    last_field = field;
    if (info & kIsBytes) {
      FieldSpan v;
      if (!r.bytes(v, minimal)) return false;
      const std::size_t slot = info & 7U;
      // Checked on every occurrence, as libprotobuf does (VerifyUTF8 right
      // after each read), even one a later occurrence replaces.
      if (slot != kPayload && !valid_utf8(r.base() + v.offset, v.length)) {
        return r.fail_at(Errc::kInvalidUtf8, kBadUtf8[slot], v.offset);
      }
      s.value[slot] = v;
      s.canonical &= in_place && minimal && v.length != 0;
    } else {
      std::uint64_t v;
      if (!r.varint(v, minimal)) return false;
      bool kept = v != 0;
      if (field == 3) {
        s.stage = std::bit_cast<std::int64_t>(v);
      } else if (field == 8) {
        s.dispatch_id = v;
      } else {
        s.flags = static_cast<std::uint32_t>(v);  // uint32: the low 32 bits
        minimal &= (v >> 32) == 0;
        kept = s.flags != 0;
      }
      s.canonical &= in_place && minimal && kept;
    }
    if (field <= 5) s.head_end = static_cast<std::uint32_t>(r.offset());
  }
  return true;
}

// The layout of a canonical input, read off its scan.
[[gnu::always_inline]] inline WireLayout layout_in_place(const Scan& s, std::size_t size) noexcept {
  WireLayout l;
  l.stage = s.stage;
  l.dispatch_id = s.dispatch_id;
  l.flags = s.flags;
  l.size = static_cast<std::uint32_t>(size);
  l.pipeline = s.value[kPipeline];
  l.client = s.value[kClient];
  l.function = s.value[kFunction];
  l.cache = s.value[kCache];
  l.payload = s.value[kPayload];
  l.error = s.value[kError];
  if (s.has_unknown) {
    l.unknown = {s.first_unknown, static_cast<std::uint32_t>(size - s.first_unknown)};
  }
  // Canonical: the payload's tag follows fields 1-5 at once.
  l.payload_tag = s.head_end;
  l.tail = l.payload.length != 0 ? l.payload.offset + l.payload.length : l.payload_tag;
  return l;
}

// The layout of the canonical message with these values.
WireLayout canonical_layout(const std::uint64_t (&len)[kSlots], std::int64_t stage,
                            std::uint64_t dispatch_id, std::uint32_t flags,
                            std::uint64_t unknown_size) noexcept {
  WireLayout l;
  l.stage = stage;
  l.dispatch_id = dispatch_id;
  l.flags = flags;
  std::uint64_t pos = 0;
  auto bytes_field = [&pos](std::uint64_t n) noexcept {
    FieldSpan f;
    if (n != 0) {
      pos += 1 + varint_size(n);
      f = {static_cast<std::uint32_t>(pos), static_cast<std::uint32_t>(n)};
      pos += n;
    }
    return f;
  };
  auto varint_field = [&pos](std::uint64_t v) noexcept {
    if (v != 0) pos += 1 + varint_size(v);
  };
  l.pipeline = bytes_field(len[kPipeline]);
  l.client = bytes_field(len[kClient]);
  varint_field(std::bit_cast<std::uint64_t>(stage));
  l.function = bytes_field(len[kFunction]);
  l.cache = bytes_field(len[kCache]);
  l.payload_tag = static_cast<std::uint32_t>(pos);
  l.payload = bytes_field(len[kPayload]);
  l.tail = static_cast<std::uint32_t>(pos);
  l.error = bytes_field(len[kError]);
  varint_field(dispatch_id);
  varint_field(flags);
  if (unknown_size != 0) {
    l.unknown = {static_cast<std::uint32_t>(pos), static_cast<std::uint32_t>(unknown_size)};
    pos += unknown_size;
  }
  PALM_ASSERT(pos <= UINT32_MAX);
  l.size = static_cast<std::uint32_t>(pos);
  return l;
}

std::byte* put_bytes_field(std::byte* w, std::uint8_t tag, const std::byte* data,
                           std::size_t n) noexcept {
  if (n == 0) return w;
  *w++ = std::byte{tag};
  w = put_varint(w, n);
  std::memcpy(w, data, n);
  return w + n;
}

std::byte* put_varint_field(std::byte* w, std::uint8_t tag, std::uint64_t v) noexcept {
  if (v == 0) return w;
  *w++ = std::byte{tag};
  return put_varint(w, v);
}

// Pass 2 for a non-canonical input: writes its canonical encoding at out.
// Returns the end of what it wrote.
std::byte* write_canonical(const std::byte* in, std::size_t size, const Scan& s,
                           std::byte* out) noexcept {
  std::byte* w = out;
  auto put = [&](Slot slot) {
    w = put_bytes_field(w, kSlotTag[slot], in + s.value[slot].offset, s.value[slot].length);
  };
  put(kPipeline);
  put(kClient);
  w = put_varint_field(w, kTagStage, std::bit_cast<std::uint64_t>(s.stage));
  put(kFunction);
  put(kCache);
  put(kPayload);
  put(kError);
  w = put_varint_field(w, kTagDispatch, s.dispatch_id);
  w = put_varint_field(w, kTagFlags, s.flags);
  if (!s.has_unknown) return w;
  // The unknown fields, in input order; the known ones among them skipped.
  WireReader r(in, size, s.first_unknown);
  std::uint64_t unknown_size = 0;
  bool canonical = true;
  while (!r.done()) {
    std::uint32_t tag;
    bool minimal;
    const bool tag_ok = r.tag(tag, minimal);
    PALM_ASSERT(tag_ok);  // scan() accepted these bytes
    const std::uint8_t info = tag_info(tag);
    bool ok;
    if (info & kIsBytes) {
      FieldSpan v;
      ok = r.bytes(v, minimal);
    } else if (info & kIsVarint) {
      std::uint64_t v;
      ok = r.varint(v, minimal);
    } else {
      ok = unknown_field<true>(r, tag, w, unknown_size, canonical);
    }
    PALM_ASSERT(ok);
  }
  PALM_ASSERT(unknown_size == s.unknown_size);
  return w;
}

// A view of the message mapped by l, built in the caller's result slot from
// its fields: neither zeroed first nor copied (see the reading functions).
[[gnu::always_inline]] inline Result<MessageView> view_result(const WireLayout& l,
                                                              const std::byte* base) noexcept {
  auto str = [base](FieldSpan f) { return chars(base + f.offset, f.length); };
  auto span = [base](FieldSpan f) { return std::span<const std::byte>(base + f.offset, f.length); };
  return Result<MessageView>(tl::in_place, str(l.pipeline), str(l.client), l.stage,
                             str(l.function), str(l.cache), span(l.payload), str(l.error),
                             l.dispatch_id, l.flags, span(l.unknown));
}

std::size_t bytes_field_size(std::size_t n) noexcept { return n == 0 ? 0 : 1 + varint_size(n) + n; }
std::size_t varint_field_size(std::uint64_t v) noexcept { return v == 0 ? 0 : 1 + varint_size(v); }

const std::byte* data_of(std::string_view s) noexcept {
  return std::as_bytes(std::span<const char>(s.data(), s.size())).data();
}

[[gnu::cold, gnu::noinline]] tl::unexpected<Error> too_large(std::size_t size) {
  return make_error(Errc::kTooLarge, "PalmMessage: " + std::to_string(size) +
                                         " bytes exceed protobuf's limit of 2 GiB - 1 (INT_MAX)");
}

[[gnu::cold, gnu::noinline]] tl::unexpected<Error> no_room(std::size_t need, std::size_t have,
                                                           std::size_t wire) {
  return make_error(Errc::kOutOfRange, "PalmMessage: canonical encoding of " + std::to_string(need) +
                                           " bytes does not fit " + std::to_string(have) +
                                           "; give canonical_size_bound(" + std::to_string(wire) +
                                           ")");
}

[[gnu::cold, gnu::noinline]] tl::unexpected<Error> not_canonical() {
  return make_error(Errc::kInvalidArgument,
                    "PalmMessage: valid but not canonical (fields out of order, repeated, "
                    "default-valued or overlong); parse_into() canonicalizes it");
}

}  // namespace

// --- Writing ---------------------------------------------------------------

std::size_t head_prefix_size(const MessageView& m) noexcept {
  return bytes_field_size(m.pipeline.size()) + bytes_field_size(m.client.size()) +
         varint_field_size(std::bit_cast<std::uint64_t>(m.stage)) + bytes_field_size(m.function.size());
}

std::size_t head_suffix_size(std::size_t cache_len, std::size_t payload_len) noexcept {
  return bytes_field_size(cache_len) + (payload_len == 0 ? 0 : 1 + varint_size(payload_len));
}

std::size_t head_size(const MessageView& m, std::size_t payload_len) noexcept {
  return head_prefix_size(m) + head_suffix_size(m.cache.size(), payload_len);
}

std::size_t tail_size(const MessageView& m) noexcept {
  return bytes_field_size(m.error.size()) + varint_field_size(m.dispatch_id) +
         varint_field_size(m.flags) + m.unknown.size();
}

std::size_t encoded_size(const MessageView& m) noexcept {
  return head_size(m, m.payload.size()) + m.payload.size() + tail_size(m);
}

namespace {

std::byte* write_head_suffix(const MessageView& m, std::size_t payload_len, std::byte* w) noexcept {
  w = put_bytes_field(w, kTagCache, data_of(m.cache), m.cache.size());
  if (payload_len != 0) {
    *w++ = std::byte{kTagPayload};
    w = put_varint(w, payload_len);
  }
  return w;
}

std::byte* write_head(const MessageView& m, std::size_t payload_len, std::byte* w) noexcept {
  w = put_bytes_field(w, kTagPipeline, data_of(m.pipeline), m.pipeline.size());
  w = put_bytes_field(w, kTagClient, data_of(m.client), m.client.size());
  w = put_varint_field(w, kTagStage, std::bit_cast<std::uint64_t>(m.stage));
  w = put_bytes_field(w, kTagFunction, data_of(m.function), m.function.size());
  return write_head_suffix(m, payload_len, w);
}

std::byte* write_tail(const MessageView& m, std::byte* w) noexcept {
  w = put_bytes_field(w, kTagError, data_of(m.error), m.error.size());
  w = put_varint_field(w, kTagDispatch, m.dispatch_id);
  w = put_varint_field(w, kTagFlags, m.flags);
  if (!m.unknown.empty()) {
    std::memcpy(w, m.unknown.data(), m.unknown.size());
    w += m.unknown.size();
  }
  return w;
}

}  // namespace

std::size_t encode_head(const MessageView& m, std::size_t payload_len,
                        std::span<std::byte> out) noexcept {
  PALM_ASSERT(out.size() >= head_size(m, payload_len));
  return static_cast<std::size_t>(write_head(m, payload_len, out.data()) - out.data());
}

std::size_t encode_head_suffix(const MessageView& m, std::size_t payload_len,
                               std::span<std::byte> out) noexcept {
  PALM_ASSERT(out.size() >= head_suffix_size(m.cache.size(), payload_len));
  return static_cast<std::size_t>(write_head_suffix(m, payload_len, out.data()) - out.data());
}

std::size_t encode_tail(const MessageView& m, std::span<std::byte> out) noexcept {
  PALM_ASSERT(out.size() >= tail_size(m));
  return static_cast<std::size_t>(write_tail(m, out.data()) - out.data());
}

std::size_t encode(const MessageView& m, std::span<std::byte> out) noexcept {
  PALM_ASSERT(out.size() >= encoded_size(m));
  const std::size_t n = m.payload.size();
  std::byte* w = write_head(m, n, out.data());
  if (n != 0) std::memcpy(w, m.payload.data(), n);
  w = write_tail(m, w + n);
  return static_cast<std::size_t>(w - out.data());
}

WireLayout layout_for(const MessageView& m, std::size_t payload_len) noexcept {
  const std::uint64_t len[kSlots] = {m.pipeline.size(), m.client.size(), m.function.size(),
                                     m.cache.size(),    payload_len,     m.error.size()};
  return canonical_layout(len, m.stage, m.dispatch_id, m.flags, m.unknown.size());
}

// --- Reading ---------------------------------------------------------------

// The reading functions return prvalues only, which C++17 builds in the
// caller's slot. (With GCC 12 a named local Result was zeroed with `rep stos`
// and a Result made from a value was copied in 16-byte loads of 8-byte
// stores, a store-forwarding stall per field: together 2/3 of a decode.)

Result<WireLayout> parse_into(std::span<const std::byte> wire, std::span<std::byte> out) noexcept {
  if (wire.size() > kMaxWireSize) return too_large(wire.size());
  // No overlap. (std::less orders pointers into different objects.)
  PALM_ASSERT(wire.empty() || out.empty() ||
              std::less<const std::byte*>{}(wire.data() + wire.size(), out.data() + 1) ||
              std::less<const std::byte*>{}(out.data() + out.size(), wire.data() + 1));
  WireReader r(wire.data(), wire.size());
  Scan s;
  if (!scan(r, s)) return to_error(r.failure(), wire.size());
  if (s.canonical) {  // the common case: one copy
    if (wire.size() > out.size()) return no_room(wire.size(), out.size(), wire.size());
    if (!wire.empty()) std::memcpy(out.data(), wire.data(), wire.size());
    return layout_in_place(s, wire.size());
  }
  std::uint64_t len[kSlots];
  for (std::size_t i = 0; i < kSlots; ++i) len[i] = s.value[i].length;
  const WireLayout layout = canonical_layout(len, s.stage, s.dispatch_id, s.flags, s.unknown_size);
  PALM_ASSERT(layout.size <= canonical_size_bound(wire.size()));
  if (layout.size > out.size()) return no_room(layout.size, out.size(), wire.size());
  const std::byte* end = write_canonical(wire.data(), wire.size(), s, out.data());
  PALM_ASSERT(end == out.data() + layout.size);
  return layout;
}

Result<WireLayout> layout_of(std::span<const std::byte> canonical) noexcept {
  if (canonical.size() > kMaxWireSize) return too_large(canonical.size());
  WireReader r(canonical.data(), canonical.size());
  Scan s;
  if (!scan(r, s)) return to_error(r.failure(), canonical.size());
  if (!s.canonical) return not_canonical();
  return layout_in_place(s, canonical.size());
}

namespace {

// Every span of the layout within its size (the caller checks the size
// against the buffer).
bool layout_fits(const WireLayout& layout) noexcept {
  const std::uint64_t size = layout.size;
  bool fits = layout.payload_tag <= layout.tail && layout.tail <= size;
  for (const FieldSpan& f : {layout.pipeline, layout.client, layout.function, layout.cache,
                             layout.payload, layout.error, layout.unknown}) {
    fits = fits && std::uint64_t{f.offset} + f.length <= size;
  }
  return fits;
}

}  // namespace

bool view_into(const WireLayout& l, std::span<const std::byte> buffer, MessageView& out) noexcept {
  if (l.size > buffer.size() || !layout_fits(l)) return false;
  const std::byte* base = buffer.data();
  const auto str = [base](FieldSpan f) { return chars(base + f.offset, f.length); };
  const auto span = [base](FieldSpan f) { return std::span<const std::byte>(base + f.offset, f.length); };
  out.pipeline = str(l.pipeline);
  out.client = str(l.client);
  out.stage = l.stage;
  out.function = str(l.function);
  out.cache = str(l.cache);
  out.payload = span(l.payload);
  out.error = str(l.error);
  out.dispatch_id = l.dispatch_id;
  out.flags = l.flags;
  out.unknown = span(l.unknown);
  return true;
}

Result<MessageView> view_of(const WireLayout& layout, std::span<const std::byte> buffer) noexcept {
  const std::uint64_t size = layout.size;
  if (size > buffer.size()) {
    return make_error(Errc::kOutOfRange, "WireLayout of " + std::to_string(size) +
                                             " bytes over a buffer of " +
                                             std::to_string(buffer.size()));
  }
  if (!layout_fits(layout)) {
    return make_error(Errc::kMalformed, "WireLayout: a field or offset past the message's " +
                                            std::to_string(size) + " bytes");
  }
  return view_result(layout, buffer.data());
}

Result<MessageView> decode(std::span<const std::byte> canonical) noexcept {
  if (canonical.size() > kMaxWireSize) return too_large(canonical.size());
  WireReader r(canonical.data(), canonical.size());
  Scan s;
  if (!scan(r, s)) return to_error(r.failure(), canonical.size());
  if (!s.canonical) return not_canonical();
  return view_result(layout_in_place(s, canonical.size()), canonical.data());
}

bool is_valid_utf8(std::string_view s) noexcept { return valid_utf8(data_of(s), s.size()); }

}  // namespace palm
