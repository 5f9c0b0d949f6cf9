#pragma once
// Protobuf base-128 varints: seven bits a byte, least significant group first,
// the high bit set on every byte but the last.
//
// put_varint writes the minimal encoding, which is what libprotobuf writes.
// read_varint accepts what libprotobuf 3.21 accepts (checked against it in
// tests/core/codec_test.cpp): any encoding up to a byte limit, overlong ones
// included (0x81 0x80 0x00 is 1), with the bits past 64 dropped (the tenth
// byte of a 64-bit varint contributes its lowest bit only). The limits per use
// are libprotobuf's: 10 bytes for a value, 5 for a tag (whose bits past 32
// are dropped too) and 5 for a length. WireReader applies them to an input.

#include <bit>
#include <climits>
#include <cstddef>
#include <cstdint>

#include "palm/core/codec.hpp"
#include "palm/core/error.hpp"

namespace palm::detail {

inline constexpr std::size_t kMaxVarintBytes = 10;  // a 64-bit value
inline constexpr std::size_t kMaxTagBytes = 5;      // libprotobuf's ReadTag
inline constexpr std::size_t kMaxLengthBytes = 5;   // libprotobuf's ReadSize
// libprotobuf's ReadSize refuses lengths above INT_MAX - kSlopBytes (16).
inline constexpr std::uint64_t kMaxLength = INT_MAX - 16;

// Bytes of the minimal encoding of v: 1..10.
constexpr std::size_t varint_size(std::uint64_t v) noexcept {
  return (static_cast<std::size_t>(std::bit_width(v | 1U)) + 6) / 7;
}

// Writes the minimal encoding of v at p (varint_size(v) bytes must be
// writable); returns the byte after it.
inline std::byte* put_varint(std::byte* p, std::uint64_t v) noexcept {
  while (v >= 0x80) {
    *p++ = static_cast<std::byte>(static_cast<std::uint8_t>(v) | 0x80U);
    v >>= 7;
  }
  *p++ = static_cast<std::byte>(v);
  return p;
}

enum class VarintStatus : std::uint8_t {
  kOk,
  kTruncated,  // the input ended before the last byte
  kTooLong,    // max_bytes bytes, all with the continuation bit
};

struct VarintRead {
  std::uint64_t value = 0;  // the low 64 bits of what was encoded
  std::uint32_t length = 0;  // bytes read (when kOk)
  VarintStatus status = VarintStatus::kOk;
  // The bytes are exactly put_varint(value): no padding bytes, no bits
  // dropped. Callers that keep fewer bits (tags: 32) check those themselves.
  bool minimal = false;
};

// Reads one varint of at most max_bytes (<= kMaxVarintBytes) bytes from
// [p, end).
inline VarintRead read_varint(const std::byte* p, const std::byte* end,
                              std::size_t max_bytes) noexcept {
  VarintRead r;
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < max_bytes; ++i) {
    if (p + i == end) {
      r.status = VarintStatus::kTruncated;
      return r;
    }
    const auto b = std::to_integer<std::uint64_t>(p[i]);
    value |= (b & 0x7FU) << (7 * i);  // i == 9: only bit 0 of b survives
    if (b < 0x80) {
      r.value = value;
      r.length = static_cast<std::uint32_t>(i + 1);
      // A last byte of 0 is padding; a tenth byte other than 1 had bits
      // past 64 (or was padding).
      r.minimal = i == 0 || (b != 0 && (i < kMaxVarintBytes - 1 || b == 1));
      return r;
    }
  }
  r.status = VarintStatus::kTooLong;
  return r;
}

// Why and where a read failed.
struct Failure {
  Errc code = Errc::kOk;
  const char* what = "";
  std::size_t at = 0;  // byte offset in the input
};

// A cursor over an input with libprotobuf 3.21's read rules for tags,
// varints, lengths and fixed-width values (parse_context.h: ReadTag,
// VarintParse, ReadSize). Each read returns false after recording a Failure;
// offsets fit a uint32 (inputs are at most INT_MAX bytes).
class WireReader {
 public:
  WireReader(const std::byte* base, std::size_t size, std::size_t start = 0) noexcept
      : base_(base), p_(base + start), end_(base + size) {}

  bool done() const noexcept { return p_ == end_; }
  std::size_t offset() const noexcept { return static_cast<std::size_t>(p_ - base_); }
  const std::byte* base() const noexcept { return base_; }
  const Failure& failure() const noexcept { return failure_; }

  bool fail(Errc code, const char* what) noexcept { return fail_at(code, what, offset()); }
  bool fail_at(Errc code, const char* what, std::size_t at) noexcept {
    failure_ = {code, what, at};
    return false;
  }

  // A tag: at most 5 bytes, bits past 32 dropped (libprotobuf's ReadTag).
  bool tag(std::uint32_t& out, bool& minimal) noexcept {
    if (p_ != end_ && std::to_integer<std::uint32_t>(*p_) < 0x80) {
      out = std::to_integer<std::uint32_t>(*p_++);
      minimal = true;
      return true;
    }
    const VarintRead v = read_varint(p_, end_, kMaxTagBytes);
    if (v.status != VarintStatus::kOk) {
      return fail_varint(v.status, "input ends inside a tag", "tag longer than 5 bytes");
    }
    out = static_cast<std::uint32_t>(v.value);
    minimal = v.minimal && (v.value >> 32) == 0;
    p_ += v.length;
    return true;
  }

  // A varint value: at most 10 bytes, bits past 64 dropped.
  bool varint(std::uint64_t& out, bool& minimal) noexcept {
    const VarintRead v = read_varint(p_, end_, kMaxVarintBytes);
    if (v.status != VarintStatus::kOk) {
      return fail_varint(v.status, "input ends inside a varint", "varint longer than 10 bytes");
    }
    out = v.value;
    minimal = v.minimal;
    p_ += v.length;
    return true;
  }

  // A length-delimited value (libprotobuf's ReadSize: at most 5 bytes, at
  // most kMaxLength); out locates its bytes.
  bool bytes(FieldSpan& out, bool& minimal) noexcept {
    std::uint64_t len;
    if (p_ != end_ && std::to_integer<std::uint32_t>(*p_) < 0x80) {
      len = std::to_integer<std::uint32_t>(*p_++);
      minimal = true;
    } else {
      const VarintRead v = read_varint(p_, end_, kMaxLengthBytes);
      if (v.status != VarintStatus::kOk) {
        return fail_varint(v.status, "input ends inside a length", "length longer than 5 bytes");
      }
      if (v.value > kMaxLength) return fail(Errc::kMalformed, "length of 2 GiB or more");
      len = v.value;
      minimal = v.minimal;
      p_ += v.length;
    }
    if (len > static_cast<std::uint64_t>(end_ - p_)) {
      return fail(Errc::kTruncated, "length-delimited field past the end of the input");
    }
    // kMaxWireSize fits a uint32: checked on entry.
    out = {static_cast<std::uint32_t>(offset()), static_cast<std::uint32_t>(len)};
    p_ += len;
    return true;
  }

  // n bytes (a fixed32/fixed64 value); at is where they start.
  bool fixed(std::size_t n, const std::byte*& at) noexcept {
    if (static_cast<std::size_t>(end_ - p_) < n) {
      return fail(Errc::kTruncated, n == 8 ? "fixed64 past the end of the input"
                                           : "fixed32 past the end of the input");
    }
    at = p_;
    p_ += n;
    return true;
  }

 private:
  bool fail_varint(VarintStatus status, const char* truncated, const char* too_long) noexcept {
    return status == VarintStatus::kTruncated ? fail(Errc::kTruncated, truncated)
                                              : fail(Errc::kMalformed, too_long);
  }

  const std::byte* base_;
  const std::byte* p_;
  const std::byte* end_;
  Failure failure_;
};

}  // namespace palm::detail
