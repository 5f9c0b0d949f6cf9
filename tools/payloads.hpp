// The farm's payloads: fresh bytes in every message, and the check of
// every reply against the message it answers.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace palm::tools {

inline constexpr std::size_t kSeqDigits = 12;  // the sequence number, first in every payload

// Message `seq`: its number in kSeqDigits decimal digits, then lower-case
// letters that shift with it: fresh bytes in every message.
class Payloads {
 public:
  Payloads(std::size_t size, std::string method)
      : size_(size), kind_(method == "sha256"    ? Kind::kDigest
                           : method == "reverse" ? Kind::kReversed
                           : method == "upper"   ? Kind::kUpper
                                                 : Kind::kSame) {
    // A window of whole alphabets, 26 bytes longer than its chunk: the
    // filler is written and compared chunk by chunk from this window, which
    // stays in L1. A window as long as the payload made the client read
    // twice the bytes from memory at 1 MiB (the source and the payload).
    lower_.resize(std::min(size_ - kSeqDigits, kChunk) + 26);
    for (std::size_t i = 0; i < lower_.size(); ++i) lower_[i] = static_cast<char>('a' + i % 26);
    upper_ = lower_;
    for (char& c : upper_) c = static_cast<char>(c - 'a' + 'A');
  }

  void write(std::uint64_t seq, std::string& out) const {
    out.resize(size_);
    write(seq, std::as_writable_bytes(std::span<char>(out.data(), out.size())));
  }
  // Into a frame's payload (at least size() bytes): returns the bytes written.
  std::size_t write(std::uint64_t seq, std::span<std::byte> out) const {
    char* p = reinterpret_cast<char*>(out.data());
    // The digits of seq: the last ones plus one when seq follows them (the
    // common case, a carry or two), else written out (12 divisions, ~150
    // instructions of the client's thread a message).
    if (seq == digits_seq_ + 1) {
      for (std::size_t i = kSeqDigits; i-- > 0;) {
        if (digits_[i] != '9') {
          ++digits_[i];
          break;
        }
        digits_[i] = '0';
      }
    } else {
      std::uint64_t rest = seq;
      for (std::size_t i = kSeqDigits; i-- > 0; rest /= 10) digits_[i] = static_cast<char>('0' + rest % 10);
    }
    digits_seq_ = seq;
    std::memcpy(p, digits_.data(), kSeqDigits);
    const char* from = lower_.data() + offset(seq);
    for (std::size_t at = kSeqDigits; at < size_; at += kChunk) {
      std::memcpy(p + at, from, std::min(kChunk, size_ - at));
    }
    return size_;
  }
  std::size_t size() const noexcept { return size_; }

  // The sequence number the reply answers, if it is the right reply to
  // some message (sha256: 0 when it is 64 lower-case hex digits; the
  // digest is not traced back to its message).
  std::optional<std::uint64_t> check(std::string_view reply) const {
    if (kind_ == Kind::kDigest) {
      if (reply.size() != 64) return std::nullopt;
      for (char c : reply) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return std::nullopt;
      }
      return 0;
    }
    if (reply.size() != size_) return std::nullopt;
    std::string reversed;
    if (kind_ == Kind::kReversed) {
      reversed.assign(reply.rbegin(), reply.rend());
      reply = reversed;
    }
    std::uint64_t seq = 0;
    for (std::size_t i = 0; i < kSeqDigits; ++i) {
      const char c = reply[i];
      if (c < '0' || c > '9') return std::nullopt;
      seq = seq * 10 + static_cast<std::uint64_t>(c - '0');
    }
    const std::string& letters = kind_ == Kind::kUpper ? upper_ : lower_;
    const char* want = letters.data() + offset(seq);
    for (std::size_t at = kSeqDigits; at < size_; at += kChunk) {
      if (std::memcmp(reply.data() + at, want, std::min(kChunk, size_ - at)) != 0) return std::nullopt;
    }
    return seq;
  }

  bool traced() const noexcept { return kind_ != Kind::kDigest; }

  // The filler is written and checked in chunks of this many bytes: whole
  // alphabets (the letters at a chunk's start are those at the filler's),
  // small enough for L1 with both windows: 6.5 KiB.
  static constexpr std::size_t kChunk = 26 * 256;

 private:
  static std::size_t offset(std::uint64_t seq) noexcept { return static_cast<std::size_t>(seq % 26); }

  // What the method makes of a payload, decided once: every reply is
  // checked, and comparing the method's name per reply cost the client
  // ~250 instructions a message.
  enum class Kind { kSame, kUpper, kReversed, kDigest };

  std::size_t size_;
  Kind kind_;
  // The digits write() wrote last, and their number: one producer thread.
  mutable std::array<char, kSeqDigits> digits_{};
  mutable std::uint64_t digits_seq_ = UINT64_MAX - 1;  // follows nothing: digits_ not yet written
  std::string lower_, upper_;  // a chunk of filler, 26 bytes longer: a window per seq
};

// Every reply checked: right for its message, each message answered once.
class ReplyCheck {
 public:
  ReplyCheck(const Payloads& payloads, std::uint64_t total) : payloads_(payloads), seen_(total, false) {}

  void operator()(std::string_view reply) {
    const auto seq = payloads_.check(reply);
    if (!seq) {
      ++bad_;
      return;
    }
    if (payloads_.traced()) {
      if (*seq >= seen_.size() || seen_[*seq]) {
        ++bad_;
        return;
      }
      seen_[*seq] = true;
    }
    ++ok_;
  }
  std::uint64_t ok() const noexcept { return ok_; }
  std::uint64_t bad() const noexcept { return bad_; }

 private:
  const Payloads& payloads_;
  std::vector<bool> seen_;
  std::uint64_t ok_ = 0, bad_ = 0;
};

}  // namespace palm::tools
