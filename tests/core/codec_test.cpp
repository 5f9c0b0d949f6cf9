// palm's PalmMessage codec, checked against libprotobuf 3.21 (the generated
// PalmMessage class) as the reference: both directions on random messages,
// non-canonical inputs, byte mutations, pylm's golden frames, and each edge
// case of libprotobuf's parser named in codec.hpp.
#include "palm/core/codec.hpp"

#include <google/protobuf/stubs/common.h>
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/unknown_field_set.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <new>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "palm.pb.h"

// Counts operator new calls while g_count_allocations is set (this thread).
thread_local bool g_count_allocations = false;
thread_local int g_allocations = 0;

[[gnu::noinline]] void* operator new(std::size_t size) {
  if (g_count_allocations) ++g_allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
// Out of line, so that GCC does not see free() meet a pointer from new.
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace palm {
namespace {

// The codec is single-threaded: TSan finds nothing here that the other
// builds miss, and runs the differential loops ~20x slower. It runs a tenth
// of them; Release and ASan run them all.
#if defined(PALM_SANITIZE_thread)
constexpr int kScale = 10;
#else
constexpr int kScale = 1;
#endif

// libprotobuf logs each invalid UTF-8 string it rejects; the tests make
// thousands.
[[maybe_unused]] const bool kQuietProtobuf = [] {
  google::protobuf::SetLogHandler(nullptr);
  return true;
}();

// --- Helpers ------------------------------------------------------------------

std::span<const std::byte> bytes_of(const std::string& s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}
std::string str_of(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}
std::string hex(const std::string& s) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}
std::string unhex(std::string_view h) {
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::string out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) {
    out += static_cast<char>(nibble(h[i]) * 16 + nibble(h[i + 1]));
  }
  return out;
}
std::string raw(std::initializer_list<int> bytes) {
  std::string s;
  for (int b : bytes) s += static_cast<char>(b);
  return s;
}
// v's varint, padded to minimal + pad bytes (overlong) when pad > 0.
std::string varint_bytes(std::uint64_t v, std::size_t pad = 0) {
  std::string s;
  while (v >= 0x80) {
    s += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  s += static_cast<char>(v);
  if (pad > 0) {
    s.back() = static_cast<char>(s.back() | 0x80);
    s.append(pad - 1, static_cast<char>(0x80));
    s += '\0';
  }
  return s;
}
std::string serialized_unknown(const PalmMessage& m) {
  std::string s;
  m.GetReflection()->GetUnknownFields(m).SerializeToString(&s);
  return s;
}

std::string describe(const MessageView& v) {
  std::ostringstream o;
  o << "pipeline=" << hex(std::string(v.pipeline)) << " client=" << hex(std::string(v.client))
    << " stage=" << v.stage << " function=" << hex(std::string(v.function))
    << " cache=" << hex(std::string(v.cache)) << " payload=" << v.payload.size()
    << "B error=" << hex(std::string(v.error)) << " dispatch_id=" << v.dispatch_id
    << " flags=" << v.flags << " unknown=" << hex(str_of(v.unknown));
  return o.str();
}
bool same_fields(const MessageView& v, const PalmMessage& m) {
  return v.pipeline == m.pipeline() && v.client == m.client() && v.stage == m.stage() &&
         v.function == m.function() && v.cache == m.cache() && str_of(v.payload) == m.payload() &&
         v.error == m.error() && v.dispatch_id == m.dispatch_id() && v.flags == m.flags() &&
         str_of(v.unknown) == serialized_unknown(m);
}

// Parses wire with libprotobuf and with palm. They must agree on accepting
// it; when accepted, palm's canonical output must be libprotobuf's
// re-serialization byte for byte, with the same field values, and every other
// reading/writing path must agree with it. Returns "" or what went wrong.
std::string check_agree(const std::string& wire) {
  PalmMessage ref;
  const bool ref_ok = ref.ParseFromString(wire);
  std::vector<std::byte> out(canonical_size_bound(wire.size()));
  const Result<WireLayout> got = parse_into(bytes_of(wire), out);
  const Result<WireLayout> in_place = layout_of(bytes_of(wire));
  if (ref_ok != got.has_value()) {
    return std::string("accept mismatch: libprotobuf ") + (ref_ok ? "accepts" : "rejects") +
           ", palm " + (got ? "accepts" : "rejects: " + got.error().describe());
  }
  if (!ref_ok) {
    const Errc code = got.error().code;
    if (code != Errc::kTruncated && code != Errc::kMalformed && code != Errc::kInvalidUtf8) {
      return "unexpected error code: " + got.error().describe();
    }
    if (in_place || in_place.error().code != code) return "layout_of disagrees on a rejection";
    return "";
  }
  const std::string expected = ref.SerializeAsString();
  const WireLayout& layout = *got;
  const std::string canonical = str_of(std::span(out).first(layout.size));
  if (canonical != expected) return "canonical output " + hex(canonical) + " != libprotobuf " + hex(expected);
  if (layout.size > wire.size()) return "canonical output longer than the input";
  // layout_of accepts exactly the canonical inputs.
  if (wire == expected) {
    if (!in_place || !(*in_place == layout)) return "layout_of rejects a canonical input";
  } else if (in_place || in_place.error().code != Errc::kInvalidArgument) {
    return "layout_of accepts a non-canonical input, or with the wrong error";
  }
  const Result<MessageView> view = view_of(layout, out);
  if (!view) return "view_of: " + view.error().describe();
  if (!same_fields(*view, ref)) return "fields differ: " + describe(*view);
  MessageView into;
  if (!view_into(layout, out, into) || !same_fields(into, ref)) return "view_into differs from view_of";
  const Result<MessageView> decoded = decode(bytes_of(canonical));
  if (!decoded || !same_fields(*decoded, ref)) return "decode of the canonical output differs";
  if (!(layout_for(*view, view->payload.size()) == layout)) return "layout_for differs";
  std::vector<std::byte> again(encoded_size(*view));
  if (encode(*view, again) != again.size() || str_of(again) != expected) return "re-encode differs";
  // Canonical in, the same out: the fast path.
  std::vector<std::byte> out2(canonical.size());
  const Result<WireLayout> twice = parse_into(bytes_of(canonical), out2);
  if (!twice || !(*twice == layout) || str_of(out2) != canonical) return "second parse differs";
  return "";
}

// Parses with palm only; the error code or kOk.
Errc palm_code(const std::string& wire) {
  std::vector<std::byte> out(wire.size());
  const Result<WireLayout> r = parse_into(bytes_of(wire), out);
  return r ? Errc::kOk : r.error().code;
}
bool protobuf_accepts(const std::string& wire) {
  PalmMessage m;
  return m.ParseFromString(wire);
}
// The canonical bytes palm makes of wire ("" on rejection).
std::string palm_canonical(const std::string& wire) {
  std::vector<std::byte> out(wire.size());
  const Result<WireLayout> r = parse_into(bytes_of(wire), out);
  return r ? str_of(std::span(out).first(r->size)) : std::string();
}

// --- Random data --------------------------------------------------------------

class Gen {
 public:
  explicit Gen(std::uint64_t seed) : rng_(seed) {}

  std::uint64_t u64() { return rng_(); }
  std::size_t below(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(rng_() % n); }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  std::mt19937_64& rng() { return rng_; }

  // A valid code point of a random UTF-8 length, encoded.
  std::string code_point() {
    std::uint32_t c;
    switch (below(5)) {
      case 0: case 1: c = static_cast<std::uint32_t>(below(0x80)); break;
      case 2: c = static_cast<std::uint32_t>(0x80 + below(0x800 - 0x80)); break;
      case 3:
        do c = static_cast<std::uint32_t>(0x800 + below(0x10000 - 0x800));
        while (c >= 0xD800 && c <= 0xDFFF);
        break;
      default: c = static_cast<std::uint32_t>(0x10000 + below(0x110000 - 0x10000)); break;
    }
    std::string s;
    if (c < 0x80) {
      s += static_cast<char>(c);
    } else if (c < 0x800) {
      s += static_cast<char>(0xC0 | (c >> 6));
      s += static_cast<char>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      s += static_cast<char>(0xE0 | (c >> 12));
      s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (c & 0x3F));
    } else {
      s += static_cast<char>(0xF0 | (c >> 18));
      s += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
      s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (c & 0x3F));
    }
    return s;
  }
  // Valid UTF-8 of about n bytes: mostly ASCII (uuids, names), some
  // multibyte.
  std::string utf8(std::size_t n) {
    std::string s;
    const bool ascii = chance(0.5);
    while (s.size() < n) {
      if (ascii || chance(0.6)) {
        s += static_cast<char>(0x20 + below(0x5F));
      } else {
        s += code_point();
      }
    }
    return s;
  }
  // Invalid UTF-8: a valid string with one ill-formed sequence in it.
  std::string bad_utf8() {
    static const std::vector<std::string> kBad = {
        raw({0x80}), raw({0xBF}), raw({0xC0, 0x80}), raw({0xC1, 0xBF}), raw({0xC2}),
        raw({0xE0, 0x80, 0x80}), raw({0xE0, 0x9F, 0xBF}), raw({0xED, 0xA0, 0x80}),
        raw({0xED, 0xBF, 0xBF}), raw({0xE2, 0x82}), raw({0xF0, 0x80, 0x80, 0x80}),
        raw({0xF0, 0x8F, 0xBF, 0xBF}), raw({0xF4, 0x90, 0x80, 0x80}),
        raw({0xF5, 0x80, 0x80, 0x80}), raw({0xF8, 0x88, 0x80, 0x80, 0x80}), raw({0xFE}),
        raw({0xFF}), raw({0xC2, 0x41}), raw({0xE2, 0x28, 0xA1})};
    return utf8(below(12)) + kBad[below(kBad.size())] + utf8(below(12));
  }
  std::string bytes(std::size_t n) {
    std::string s(n, '\0');
    for (char& c : s) c = static_cast<char>(rng_());
    return s;
  }
  // String lengths: 0, uuid-sized, short, now and then long.
  std::size_t string_length() {
    switch (below(6)) {
      case 0: return 0;
      case 1: return 36;
      case 2: return 1 + below(20);
      case 3: return below(130);
      case 4: return below(300);
      default: return below(20);
    }
  }
  std::size_t payload_length() {
    switch (below(10)) {
      case 0: return 0;
      case 1: return 64 * 1024;
      case 2: return below(200 * 1024);
      case 3: return below(5000);
      default: return below(200);
    }
  }
  std::uint64_t number() {
    switch (below(6)) {
      case 0: return 0;
      case 1: return below(4);
      case 2: return below(300);
      case 3: return std::uint64_t{1} << below(64);
      case 4: return ~std::uint64_t{0} - below(3);
      default: return u64() >> below(64);
    }
  }

 private:
  std::mt19937_64 rng_;
};

// Random unknown fields (canonical: libprotobuf's own serialization).
void add_unknown_fields(Gen& g, google::protobuf::UnknownFieldSet* set, int depth) {
  const std::size_t count = g.below(4);
  for (std::size_t i = 0; i < count; ++i) {
    const int number = g.chance(0.5) ? static_cast<int>(10 + g.below(20))
                                     : static_cast<int>(1 + g.below((1U << 29) - 1));
    switch (g.below(depth < 3 ? 5 : 4)) {
      case 0: set->AddVarint(number, g.number()); break;
      case 1: set->AddFixed32(number, static_cast<std::uint32_t>(g.u64())); break;
      case 2: set->AddFixed64(number, g.u64()); break;
      case 3: set->AddLengthDelimited(number, g.bytes(g.below(40))); break;
      default: add_unknown_fields(g, set->AddGroup(number), depth + 1); break;
    }
  }
}

PalmMessage random_message(Gen& g, bool with_unknown) {
  PalmMessage m;
  if (g.chance(0.7)) m.set_pipeline(g.utf8(g.string_length()));
  if (g.chance(0.7)) m.set_client(g.utf8(g.string_length()));
  if (g.chance(0.4)) m.set_stage(static_cast<std::int64_t>(g.number()));
  if (g.chance(0.8)) m.set_function(g.utf8(g.string_length()));
  if (g.chance(0.5)) m.set_cache(g.utf8(g.string_length()));
  if (g.chance(0.8)) m.set_payload(g.bytes(g.payload_length()));
  if (g.chance(0.3)) m.set_error(g.utf8(g.string_length()));
  if (g.chance(0.3)) m.set_dispatch_id(g.number());
  if (g.chance(0.3)) m.set_flags(static_cast<std::uint32_t>(g.number()));
  if (with_unknown) add_unknown_fields(g, m.GetReflection()->MutableUnknownFields(&m), 0);
  return m;
}

// One field as it may appear on the wire, canonical or not: overlong tags,
// lengths and varints, defaults written out, known numbers with another wire
// type, unknown fields of every wire type, groups, truncating tags, and now
// and then invalid UTF-8 in a string field.
std::string random_field(Gen& g, int depth) {
  auto tag = [&g](std::uint32_t number, std::uint32_t wire_type) {
    const std::uint32_t t = number << 3 | wire_type;
    const std::size_t room = 5 - std::min<std::size_t>(5, varint_bytes(t).size());
    if (room > 0 && g.chance(0.05)) {  // bits past 32 that libprotobuf drops
      std::string s = varint_bytes(t, room);
      s.back() = static_cast<char>((g.below(7) + 1) << 4 | (static_cast<unsigned char>(s.back()) & 0x0F));
      return s;
    }
    return varint_bytes(t, g.chance(0.1) ? g.below(room + 1) : 0);
  };
  auto length_delimited = [&g](const std::string& value) {
    const std::size_t room = 5 - varint_bytes(value.size()).size();
    return varint_bytes(value.size(), g.chance(0.1) ? g.below(room + 1) : 0) + value;
  };
  auto varint = [&g](std::uint64_t v) {
    if (g.chance(0.05)) {  // ten bytes with bits past 64
      std::string s = varint_bytes(v, 10 - varint_bytes(v).size());
      if (s.size() == 10) s.back() = static_cast<char>(g.below(0x80));
      return s;
    }
    const std::size_t room = 10 - varint_bytes(v).size();
    return varint_bytes(v, g.chance(0.1) ? g.below(room + 1) : 0);
  };
  static constexpr std::uint32_t kStrings[] = {1, 2, 4, 5, 7};
  static constexpr std::uint32_t kVarints[] = {3, 8, 9};
  switch (g.below(depth == 0 ? 8 : 5)) {
    case 0: case 1: {  // unknown field (inside a group, anything is unknown)
      const std::uint32_t number = g.chance(0.6) ? static_cast<std::uint32_t>(1 + g.below(20))
                                                 : static_cast<std::uint32_t>(1 + g.below((1U << 29) - 1));
      switch (g.below(depth < 4 ? 5 : 4)) {
        case 0: return tag(number, 0) + varint(g.number());
        case 1: return tag(number, 1) + g.bytes(8);
        case 2: return tag(number, 5) + g.bytes(4);
        case 3: return tag(number, 2) + length_delimited(g.bytes(g.below(20)));
        default: {
          std::string s = tag(number, 3);
          const std::size_t n = g.below(4);
          for (std::size_t i = 0; i < n; ++i) s += random_field(g, depth + 1);
          return s + tag(number, 4);
        }
      }
    }
    case 2: {  // a known number with another wire type
      const std::uint32_t number = static_cast<std::uint32_t>(1 + g.below(9));
      const bool is_string = number != 3 && number != 8 && number != 9;
      return is_string ? tag(number, 0) + varint(g.number())
                       : tag(number, 2) + length_delimited(g.bytes(g.below(10)));
    }
    case 3: case 4: {
      const std::uint32_t number = kStrings[g.below(5)];
      return tag(number, 2) + length_delimited(g.chance(0.02) ? g.bad_utf8() : g.utf8(g.string_length()));
    }
    case 5:
      return tag(6, 2) + length_delimited(g.bytes(g.below(3) == 0 ? 0 : g.below(100)));
    default: {
      const std::uint32_t number = kVarints[g.below(3)];
      return tag(number, 0) + varint(g.number());
    }
  }
}

std::string random_wire(Gen& g) {
  std::string s;
  if (g.chance(0.3)) s = random_message(g, g.chance(0.3)).SerializeAsString();
  const std::size_t n = g.below(10);
  for (std::size_t i = 0; i < n; ++i) {
    std::string f = random_field(g, 0);
    s.insert(g.chance(0.5) ? s.size() : 0, f);  // before or after what is there
  }
  return s;
}

// --- Writing: palm -> libprotobuf ------------------------------------------

TEST(CodecEncode, EmptyMessageIsZeroBytes) {
  EXPECT_EQ(encoded_size(MessageView{}), 0U);
  std::vector<std::byte> out(1);
  EXPECT_EQ(encode(MessageView{}, out), 0U);
}

TEST(CodecEncode, NegativeStageTakesTenBytes) {
  MessageView m;
  m.stage = -1;
  std::vector<std::byte> out(encoded_size(m));
  ASSERT_EQ(encode(m, out), 11U);
  PalmMessage ref;
  ref.set_stage(-1);
  EXPECT_EQ(str_of(out), ref.SerializeAsString());
}

TEST(CodecEncode, RandomMessagesMatchLibprotobufSerialization) {
  Gen g(0x5eed0001);
  for (int i = 0; i < 3000 / kScale; ++i) {
    // Field values from libprotobuf's own random message; palm writes them.
    const PalmMessage ref = random_message(g, g.chance(0.2));
    const std::string expected = ref.SerializeAsString();
    const std::string unknown = serialized_unknown(ref);
    MessageView m;
    m.pipeline = ref.pipeline();
    m.client = ref.client();
    m.stage = ref.stage();
    m.function = ref.function();
    m.cache = ref.cache();
    m.payload = bytes_of(ref.payload());
    m.error = ref.error();
    m.dispatch_id = ref.dispatch_id();
    m.flags = ref.flags();
    m.unknown = bytes_of(unknown);
    ASSERT_EQ(encoded_size(m), expected.size());
    std::vector<std::byte> out(expected.size());
    ASSERT_EQ(encode(m, out), expected.size());
    ASSERT_EQ(str_of(out), expected) << describe(m);
    PalmMessage back;
    ASSERT_TRUE(back.ParseFromString(str_of(out)));
    ASSERT_EQ(back.SerializeAsString(), expected);
    // Head, payload written in place, tail: the same bytes.
    std::vector<std::byte> frame(expected.size());
    const std::size_t at = encode_head(m, m.payload.size(), frame);
    ASSERT_EQ(at, head_size(m, m.payload.size()));
    std::copy(m.payload.begin(), m.payload.end(), frame.begin() + static_cast<std::ptrdiff_t>(at));
    const std::size_t tail = encode_tail(m, std::span(frame).subspan(at + m.payload.size()));
    ASSERT_EQ(tail, tail_size(m));
    ASSERT_EQ(str_of(frame), expected);
    // The head's two parts: fields 1-4 are libprotobuf's first bytes, the
    // suffix (cache, the payload's tag and length) the rest of the head.
    const std::size_t prefix = head_prefix_size(m);
    ASSERT_EQ(prefix + head_suffix_size(m.cache.size(), m.payload.size()), at);
    std::vector<std::byte> suffix(at - prefix);
    ASSERT_EQ(encode_head_suffix(m, m.payload.size(), suffix), at - prefix);
    ASSERT_EQ(str_of(suffix), expected.substr(prefix, at - prefix));
    // The layout computed without the bytes is the one parsed from them.
    const Result<WireLayout> parsed = layout_of(bytes_of(expected));
    ASSERT_TRUE(parsed) << parsed.error().describe();
    const WireLayout computed = layout_for(m, m.payload.size());
    ASSERT_EQ(computed, *parsed);
    ASSERT_EQ(computed.payload_tag, m.payload.empty() ? at : at - 1 - (m.payload.size() < 128 ? 1 : m.payload.size() < 16384 ? 2 : 3));
    ASSERT_EQ(computed.tail, at + m.payload.size());
  }
}

TEST(CodecEncodeDeathTest, OutputTooSmallIsACallerBug) {
  MessageView m;
  m.function = "my_server.foo";
  std::vector<std::byte> out(encoded_size(m) - 1);
  EXPECT_DEATH((void)encode(m, out), "out.size");
  EXPECT_DEATH((void)encode_head(m, 100, out), "out.size");
}

// --- Reading: libprotobuf -> palm ------------------------------------------

TEST(CodecParse, RandomCanonicalMessagesMatchLibprotobuf) {
  Gen g(0x5eed0002);
  for (int i = 0; i < 3000 / kScale; ++i) {
    const std::string wire = random_message(g, g.chance(0.2)).SerializeAsString();
    ASSERT_EQ(check_agree(wire), "") << hex(wire.substr(0, 400));
    const Result<MessageView> view = decode(bytes_of(wire));  // canonical: in place
    ASSERT_TRUE(view) << view.error().describe();
    ASSERT_EQ(encoded_size(*view), wire.size());
  }
}

TEST(CodecParse, RandomNonCanonicalInputsMatchLibprotobuf) {
  Gen g(0x5eed0003);
  int accepted = 0;
  int non_canonical = 0;
  for (int i = 0; i < 25000 / kScale; ++i) {
    const std::string wire = random_wire(g);
    ASSERT_EQ(check_agree(wire), "") << hex(wire.substr(0, 600));
    const std::string canonical = palm_canonical(wire);
    accepted += protobuf_accepts(wire) ? 1 : 0;
    non_canonical += protobuf_accepts(wire) && canonical != wire ? 1 : 0;
  }
  // The generator reaches both sides and the slow path.
  EXPECT_GT(accepted, 5000 / kScale);
  EXPECT_GT(non_canonical, 3000 / kScale);
  EXPECT_LT(accepted, 25000 / kScale);
}

TEST(CodecParse, ByteMutationsMatchLibprotobuf) {
  Gen g(0x5eed0004);
  std::vector<std::string> seeds;
  for (int i = 0; i < 50; ++i) seeds.push_back(random_wire(g));
  for (int i = 0; i < 50; ++i) {
    PalmMessage m = random_message(g, true);
    m.set_payload(g.bytes(g.below(64)));
    seeds.push_back(m.SerializeAsString());
  }
  static constexpr int kInteresting[] = {0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x0B, 0x0C, 0x18, 0x32,
                                         0x3A, 0x48, 0x53, 0x54, 0x0E, 0x0F, 0xC0, 0xED, 0xF4};
  int accepted = 0;
  constexpr int kMutants = 200000 / kScale;
  for (int i = 0; i < kMutants; ++i) {
    std::string w = seeds[g.below(seeds.size())];
    const std::size_t mutations = 1 + g.below(3);
    for (std::size_t k = 0; k < mutations; ++k) {
      const std::size_t at = g.below(w.size() + 1);
      switch (g.below(6)) {
        case 0: if (at < w.size()) w[at] = static_cast<char>(w[at] ^ (1 << g.below(8))); break;
        case 1: if (at < w.size()) w[at] = static_cast<char>(kInteresting[g.below(std::size(kInteresting))]); break;
        case 2: w.insert(at, 1, static_cast<char>(g.below(256))); break;
        case 3: if (at < w.size()) w.erase(at, 1 + g.below(3)); break;
        case 4: w.resize(at); break;
        default: w.insert(at, w.substr(at, g.below(8))); break;
      }
    }
    ASSERT_EQ(check_agree(w), "") << hex(w.substr(0, 600));
    accepted += protobuf_accepts(w) ? 1 : 0;
  }
  EXPECT_GT(accepted, kMutants / 10);  // both sides reached
  EXPECT_LT(accepted, kMutants * 9 / 10);
  for (int i = 0; i < 50000 / kScale; ++i) {  // short random byte strings
    const std::string w = g.bytes(g.below(12));
    ASSERT_EQ(check_agree(w), "") << hex(w);
  }
}

// --- libprotobuf's edge cases, one each --------------------------------------
// Expected bytes are what libprotobuf 3.21 re-serializes; each test also asks
// libprotobuf itself via check_agree.

TEST(CodecEdge, EmptyInputIsTheEmptyMessage) {
  EXPECT_EQ(check_agree(""), "");
  const Result<MessageView> v = decode({});
  ASSERT_TRUE(v);
  EXPECT_TRUE(v->pipeline.empty() && v->payload.empty() && v->stage == 0);
}

TEST(CodecEdge, FieldsInAnyOrderComeOutInNumberOrder) {
  const std::string in = raw({0x32, 0x01, 'p', 0x18, 0x02, 0x0A, 0x01, 'a'});
  EXPECT_EQ(check_agree(in), "");
  EXPECT_EQ(palm_canonical(in), raw({0x0A, 0x01, 'a', 0x18, 0x02, 0x32, 0x01, 'p'}));
}

TEST(CodecEdge, RepeatedFieldLastOneWins) {
  const std::string in = raw({0x0A, 0x01, 'a', 0x18, 0x05, 0x0A, 0x01, 'b', 0x18, 0x07});
  EXPECT_EQ(check_agree(in), "");
  EXPECT_EQ(palm_canonical(in), raw({0x0A, 0x01, 'b', 0x18, 0x07}));
}

TEST(CodecEdge, InvalidUtf8InAReplacedOccurrenceIsStillRejected) {
  const std::string in = raw({0x0A, 0x01, 0xFF, 0x0A, 0x01, 'b'});
  EXPECT_FALSE(protobuf_accepts(in));
  EXPECT_EQ(palm_code(in), Errc::kInvalidUtf8);
}

TEST(CodecEdge, DefaultValuesWrittenOutAreDropped) {
  const std::string in = raw({0x0A, 0x00, 0x18, 0x00, 0x32, 0x00, 0x40, 0x80, 0x00, 0x48, 0x00});
  EXPECT_EQ(check_agree(in), "");
  EXPECT_EQ(palm_canonical(in), "");
}

TEST(CodecEdge, OverlongTagsLengthsAndVarintsAreAcceptedAndShortened) {
  for (const std::string& in : {raw({0x8A, 0x00, 0x01, 'a'}),                      // tag, 2 bytes
                                raw({0x8A, 0x80, 0x80, 0x80, 0x00, 0x01, 'a'}),    // tag, 5 bytes
                                raw({0x0A, 0x81, 0x80, 0x80, 0x80, 0x00, 'a'})}) {  // length, 5 bytes
    EXPECT_EQ(check_agree(in), "");
    EXPECT_EQ(palm_canonical(in), raw({0x0A, 0x01, 'a'}));
  }
  const std::string stage = raw({0x18, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00});
  EXPECT_EQ(check_agree(stage), "");
  EXPECT_EQ(palm_canonical(stage), raw({0x18, 0x01}));
}

TEST(CodecEdge, TenthVarintByteKeepsOnlyItsLowestBit) {
  const std::string in = raw({0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F});
  EXPECT_EQ(check_agree(in), "");
  EXPECT_EQ(palm_canonical(in), raw({0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}));
}

TEST(CodecEdge, FlagsKeepTheLow32Bits) {
  const std::string in = raw({0x48, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F});
  EXPECT_EQ(check_agree(in), "");
  EXPECT_EQ(palm_canonical(in), raw({0x48, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F}));
  EXPECT_EQ(palm_canonical(raw({0x48, 0x80, 0x80, 0x80, 0x80, 0x10})), "");  // 2^32 -> 0
}

TEST(CodecEdge, TagBitsPast32AreDropped) {
  // 0x8A 0x80 0x80 0x80 0x10: 10 + 2^32, read as tag 10, field 1.
  const std::string in = raw({0x8A, 0x80, 0x80, 0x80, 0x10, 0x01, 'a'});
  EXPECT_EQ(check_agree(in), "");
  EXPECT_EQ(palm_canonical(in), raw({0x0A, 0x01, 'a'}));
}

TEST(CodecEdge, KnownNumberWithAnotherWireTypeIsAnUnknownField) {
  const std::string in = raw({0x30, 0x05, 0x0A, 0x01, 'a', 0x1A, 0x01, 0xFF});  // 6 varint, 3 bytes
  EXPECT_EQ(check_agree(in), "");
  EXPECT_EQ(palm_canonical(in), raw({0x0A, 0x01, 'a', 0x30, 0x05, 0x1A, 0x01, 0xFF}));
  const std::string canonical = palm_canonical(in);
  const Result<MessageView> v = decode(bytes_of(canonical));
  ASSERT_TRUE(v);
  EXPECT_EQ(str_of(v->unknown), raw({0x30, 0x05, 0x1A, 0x01, 0xFF}));
  EXPECT_TRUE(v->payload.empty());
}

TEST(CodecEdge, UnknownFieldsFollowTheKnownOnesInInputOrder) {
  const std::string in = raw({0x50, 0x01, 0x0A, 0x01, 'a', 0x45, 1, 2, 3, 4, 0x59, 1, 2, 3, 4, 5, 6, 7, 8});
  EXPECT_EQ(check_agree(in), "");
  EXPECT_EQ(palm_canonical(in),
            raw({0x0A, 0x01, 'a', 0x50, 0x01, 0x45, 1, 2, 3, 4, 0x59, 1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST(CodecEdge, UnknownFieldsAreWrittenBackCanonically) {
  // libprotobuf keeps values, not bytes: an overlong varint or length of an
  // unknown field comes back minimal.
  EXPECT_EQ(palm_canonical(raw({0x50, 0x81, 0x80, 0x00})), raw({0x50, 0x01}));
  EXPECT_EQ(palm_canonical(raw({0x52, 0x81, 0x00, 'x'})), raw({0x52, 0x01, 'x'}));
  EXPECT_EQ(check_agree(raw({0x50, 0x81, 0x80, 0x00})), "");
  EXPECT_EQ(check_agree(raw({0x52, 0x81, 0x00, 'x'})), "");
}

TEST(CodecEdge, UnknownLengthDelimitedFieldsAreNotUtf8Checked) {
  EXPECT_EQ(check_agree(raw({0x52, 0x01, 0xFF})), "");
  EXPECT_EQ(palm_code(raw({0x52, 0x01, 0xFF})), Errc::kOk);
  EXPECT_EQ(palm_code(raw({0x32, 0x01, 0xFF})), Errc::kOk);  // payload: bytes
}

TEST(CodecEdge, GroupsAreKeptWithCanonicalContents) {
  EXPECT_EQ(palm_canonical(raw({0x53, 0x54})), raw({0x53, 0x54}));
  EXPECT_EQ(palm_canonical(raw({0x0B, 0x0C})), raw({0x0B, 0x0C}));  // field 1 as a group
  EXPECT_EQ(palm_canonical(raw({0x53, 0x50, 0x81, 0x80, 0x00, 0x54})), raw({0x53, 0x50, 0x01, 0x54}));
  EXPECT_EQ(palm_canonical(raw({0x53, 0xD4, 0x00})), raw({0x53, 0x54}));  // overlong end tag
  EXPECT_EQ(palm_canonical(raw({0x53, 0x0A, 0x01, 0xFF, 0x54})), raw({0x53, 0x0A, 0x01, 0xFF, 0x54}));
  for (const std::string& in : {raw({0x53, 0x54}), raw({0x53, 0x50, 0x81, 0x80, 0x00, 0x54}),
                                raw({0x53, 0xD4, 0x00}), raw({0x53, 0x0A, 0x01, 0xFF, 0x54})}) {
    EXPECT_EQ(check_agree(in), "") << hex(in);
  }
}

TEST(CodecEdge, GroupsNestUpTo100Deep) {
  auto nested = [](int depth) {
    return std::string(static_cast<std::size_t>(depth), '\x53') + std::string(static_cast<std::size_t>(depth), '\x54');
  };
  EXPECT_EQ(check_agree(nested(100)), "");
  EXPECT_EQ(palm_code(nested(100)), Errc::kOk);
  EXPECT_EQ(check_agree(nested(101)), "");
  EXPECT_EQ(palm_code(nested(101)), Errc::kMalformed);
}

// --- Malformed input: the error code ----------------------------------------

struct Bad {
  const char* name;
  std::string wire;
  Errc code;
};

TEST(CodecMalformed, RejectedWithTheRightCode) {
  const std::vector<Bad> cases = {
      {"truncated tag", raw({0x80}), Errc::kTruncated},
      {"truncated varint", raw({0x18, 0x80}), Errc::kTruncated},
      {"truncated length", raw({0x0A, 0x80}), Errc::kTruncated},
      {"length past the end", raw({0x0A, 0x05, 'a', 'b'}), Errc::kTruncated},
      {"payload past the end", raw({0x32, 0x02, 'a'}), Errc::kTruncated},
      {"truncated fixed64", raw({0x59, 1, 2, 3, 4, 5, 6, 7}), Errc::kTruncated},
      {"truncated fixed32", raw({0x5D, 1, 2, 3}), Errc::kTruncated},
      {"unterminated group", raw({0x53, 0x50, 0x01}), Errc::kTruncated},
      {"invalid UTF-8 in pipeline", raw({0x0A, 0x02, 0xC0, 0x80}), Errc::kInvalidUtf8},
      {"invalid UTF-8 in client", raw({0x12, 0x03, 0xED, 0xA0, 0x80}), Errc::kInvalidUtf8},
      {"invalid UTF-8 in function", raw({0x22, 0x04, 0xF4, 0x90, 0x80, 0x80}), Errc::kInvalidUtf8},
      {"invalid UTF-8 in cache", raw({0x2A, 0x01, 0x80}), Errc::kInvalidUtf8},
      {"invalid UTF-8 in error", raw({0x3A, 0x02, 'a', 0xFF}), Errc::kInvalidUtf8},
      {"field 0, varint", raw({0x00, 0x01}), Errc::kMalformed},
      {"field 0, bytes", raw({0x02, 0x00}), Errc::kMalformed},
      {"field 0, end group", raw({0x04}), Errc::kMalformed},
      {"field 0 in a group", raw({0x53, 0x00, 0x54}), Errc::kMalformed},
      {"wire type 6", raw({0x0E, 0x00}), Errc::kMalformed},
      {"wire type 7", raw({0x57, 0x00}), Errc::kMalformed},
      {"wire type 6 in a group", raw({0x53, 0x56, 0x54}), Errc::kMalformed},
      {"varint over 10 bytes", raw({0x18, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}),
       Errc::kMalformed},
      {"unknown varint over 10 bytes",
       raw({0x50, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}), Errc::kMalformed},
      {"tag over 5 bytes", raw({0x8A, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01, 'a'}), Errc::kMalformed},
      {"length over 5 bytes", raw({0x0A, 0x81, 0x80, 0x80, 0x80, 0x80, 0x00, 'a'}), Errc::kMalformed},
      {"length of 2 GiB", raw({0x0A, 0x80, 0x80, 0x80, 0x80, 0x08}), Errc::kMalformed},
      {"end group at the top level", raw({0x0A, 0x01, 'a', 0x54}), Errc::kMalformed},
      {"end group of another field", raw({0x53, 0x5C}), Errc::kMalformed},
      {"end groups crossed", raw({0x53, 0x63, 0x54, 0x64}), Errc::kMalformed},
  };
  for (const Bad& c : cases) {
    EXPECT_FALSE(protobuf_accepts(c.wire)) << c.name;  // libprotobuf agrees it is bad
    EXPECT_EQ(palm_code(c.wire), c.code) << c.name << ": " << hex(c.wire);
    EXPECT_EQ(check_agree(c.wire), "") << c.name;
  }
  // The error names the problem and where.
  std::vector<std::byte> out(8);
  const Result<WireLayout> r = parse_into(bytes_of(raw({0x0A, 0x01, 'a', 0x22, 0x01, 0xFF})), out);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("field 4 (function)"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("at byte 5"), std::string::npos) << r.error().message;
}

TEST(CodecMalformed, OutputTooSmallIsOutOfRange) {
  const std::string wire = raw({0x0A, 0x01, 'a', 0x0A, 0x01, 'b'});  // canonical: 3 bytes
  std::vector<std::byte> out(2);
  const Result<WireLayout> r = parse_into(bytes_of(wire), out);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kOutOfRange);
  std::vector<std::byte> exact(3);
  EXPECT_TRUE(parse_into(bytes_of(wire), exact));  // the exact canonical size is enough
}

TEST(CodecMalformed, NonCanonicalInputIsRefusedByLayoutOf) {
  const Result<WireLayout> r = layout_of(bytes_of(raw({0x18, 0x01, 0x0A, 0x01, 'a'})));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kInvalidArgument);
}

TEST(CodecMalformed, DamagedLayoutIsAnErrorNotAStrayRead) {
  const std::string wire = raw({0x0A, 0x01, 'a', 0x32, 0x02, 'p', 'q'});
  Result<WireLayout> layout = layout_of(bytes_of(wire));
  ASSERT_TRUE(layout);
  EXPECT_TRUE(view_of(*layout, bytes_of(wire)));
  MessageView into;
  EXPECT_TRUE(view_into(*layout, bytes_of(wire), into));
  EXPECT_EQ(into.pipeline, "a");
  EXPECT_EQ(view_of(*layout, bytes_of(wire).first(6)).error().code, Errc::kOutOfRange);
  EXPECT_FALSE(view_into(*layout, bytes_of(wire).first(6), into));
  WireLayout bad = *layout;
  bad.payload.length = 100;
  EXPECT_EQ(view_of(bad, bytes_of(wire)).error().code, Errc::kMalformed);
  EXPECT_FALSE(view_into(bad, bytes_of(wire), into));
  bad = *layout;
  bad.unknown = {0xFFFFFFFFU, 2};  // offset + length overflows 32 bits
  EXPECT_EQ(view_of(bad, bytes_of(wire)).error().code, Errc::kMalformed);
  EXPECT_FALSE(view_into(bad, bytes_of(wire), into));
}

TEST(CodecAlloc, WritingAndReadingDoNotAllocate) {
  Gen g(0x5eed0006);
  std::vector<std::string> wires;
  for (int i = 0; i < 200; ++i) {
    PalmMessage m = random_message(g, g.chance(0.3));
    wires.push_back(m.SerializeAsString());
  }
  for (int i = 0; i < 200; ++i) {
    std::string w = random_wire(g);
    if (protobuf_accepts(w)) wires.push_back(std::move(w));  // errors allocate their message
  }
  std::vector<std::byte> out(512 * 1024);
  std::vector<std::byte> again(512 * 1024);
  int accepted = 0;
  g_allocations = 0;
  g_count_allocations = true;
  for (const std::string& w : wires) {
    const Result<WireLayout> layout = parse_into(bytes_of(w), out);
    if (!layout) break;
    ++accepted;
    const Result<MessageView> view = view_of(*layout, out);
    const Result<WireLayout> in_place = layout_of(std::span(out).first(layout->size));
    const Result<MessageView> decoded = decode(std::span(out).first(layout->size));
    if (!view || !in_place || !decoded) break;
    const std::size_t n = encode(*view, again);
    const std::size_t head = encode_head(*view, view->payload.size(), again);
    const std::size_t tail = encode_tail(*view, std::span(again).subspan(head + view->payload.size()));
    if (n != layout->size || !(layout_for(*view, view->payload.size()) == *layout) || tail > n) break;
  }
  g_count_allocations = false;
  EXPECT_EQ(g_allocations, 0);
  EXPECT_EQ(accepted, static_cast<int>(wires.size()));
  EXPECT_GT(accepted, 250);
}

// --- UTF-8 against libprotobuf's validator -----------------------------------

bool reference_utf8(const std::string& s) {
  return google::protobuf::internal::IsStructurallyValidUTF8(s.data(), static_cast<int>(s.size()));
}

TEST(CodecUtf8, AllOneAndTwoByteStringsMatchLibprotobuf) {
  std::string s;
  for (int a = 0; a < 256; ++a) {
    s.assign(1, static_cast<char>(a));
    ASSERT_EQ(is_valid_utf8(s), reference_utf8(s)) << hex(s);
    for (int b = 0; b < 256; ++b) {
      s.assign({static_cast<char>(a), static_cast<char>(b)});
      ASSERT_EQ(is_valid_utf8(s), reference_utf8(s)) << hex(s);
    }
  }
}

TEST(CodecUtf8, AllThreeByteStringsWithALeadByteMatchLibprotobuf) {
  std::string s(3, '\0');
  for (int a = 0xC0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      for (int c = 0; c < 256; ++c) {
        s[0] = static_cast<char>(a);
        s[1] = static_cast<char>(b);
        s[2] = static_cast<char>(c);
        ASSERT_EQ(is_valid_utf8(s), reference_utf8(s)) << hex(s);
      }
    }
  }
}

TEST(CodecUtf8, FourByteBoundariesMatchLibprotobuf) {
  static constexpr int kEdges[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xF4, 0xFF};
  std::string s(4, '\0');
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      for (int c : kEdges) {
        for (int d : kEdges) {
          s = {static_cast<char>(a), static_cast<char>(b), static_cast<char>(c), static_cast<char>(d)};
          ASSERT_EQ(is_valid_utf8(s), reference_utf8(s)) << hex(s);
        }
      }
    }
  }
}

TEST(CodecUtf8, RandomStringsAtEveryAlignmentMatchLibprotobuf) {
  Gen g(0x5eed0005);
  int invalid = 0;
  for (int i = 0; i < 100000 / kScale; ++i) {
    std::string s(g.below(20), 'a');  // ASCII before: the 8-byte fast path
    const std::size_t pieces = g.below(6);
    for (std::size_t k = 0; k < pieces; ++k) {
      switch (g.below(4)) {
        case 0: s += g.code_point(); break;
        case 1: s += g.bad_utf8(); break;
        case 2: s += g.bytes(1 + g.below(4)); break;
        default: s += std::string(g.below(17), 'z'); break;
      }
    }
    const bool ours = is_valid_utf8(s);
    ASSERT_EQ(ours, reference_utf8(s)) << hex(s);
    invalid += ours ? 0 : 1;
  }
  EXPECT_GT(invalid, 10000 / kScale);
  EXPECT_LT(invalid, 90000 / kScale);
}

// --- pylm's golden frames ------------------------------------------------------

// Just enough JSON for manifest.json.
struct Json {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject } type = Type::kNull;
  double number = 0;
  std::string string;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;

  const Json& operator[](std::string_view key) const {
    static const Json kNone;
    for (const auto& [k, v] : object) {
      if (k == key) return v;
    }
    return kNone;
  }
};

class JsonParser {
 public:
  explicit JsonParser(std::string_view text) : s_(text) {}
  Json parse() {
    skip_space();
    Json v;
    const char c = s_.at(i_);
    if (c == '{') {
      v.type = Json::Type::kObject;
      ++i_;
      while (next_is('}') == false) {
        std::string key = parse().string;
        expect(':');
        v.object.emplace_back(std::move(key), parse());
        if (!next_is(',')) {
          expect('}');
          break;
        }
      }
    } else if (c == '[') {
      v.type = Json::Type::kArray;
      ++i_;
      while (next_is(']') == false) {
        v.array.push_back(parse());
        if (!next_is(',')) {
          expect(']');
          break;
        }
      }
    } else if (c == '"') {
      v.type = Json::Type::kString;
      v.string = parse_string();
    } else if (c == 't' || c == 'f' || c == 'n') {
      v.type = c == 'n' ? Json::Type::kNull : Json::Type::kBool;
      v.number = c == 't' ? 1 : 0;
      i_ += c == 'f' ? 5 : 4;
    } else {
      v.type = Json::Type::kNumber;
      std::size_t used = 0;
      v.number = std::stod(std::string(s_.substr(i_, 40)), &used);
      i_ += used;
    }
    return v;
  }

 private:
  void skip_space() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool next_is(char c) {
    skip_space();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!next_is(c)) throw std::runtime_error(std::string("JSON: expected ") + c);
  }
  void put_utf8(std::string& out, std::uint32_t c) {
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (c < 0x800) {
      out += static_cast<char>(0xC0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      out += static_cast<char>(0xE0 | (c >> 12));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (c >> 18));
      out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }
  std::string parse_string() {
    std::string out;
    ++i_;  // "
    for (;;) {
      const char c = s_.at(i_++);
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      const char e = s_.at(i_++);
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {
          std::uint32_t c1 = static_cast<std::uint32_t>(std::stoul(std::string(s_.substr(i_, 4)), nullptr, 16));
          i_ += 4;
          if (c1 >= 0xD800 && c1 < 0xDC00 && s_.substr(i_, 2) == "\\u") {
            const auto c2 = static_cast<std::uint32_t>(std::stoul(std::string(s_.substr(i_ + 2, 4)), nullptr, 16));
            i_ += 6;
            c1 = 0x10000 + ((c1 - 0xD800) << 10) + (c2 - 0xDC00);
          }
          put_utf8(out, c1);
          break;
        }
        default: out += e; break;  // " \ /
      }
    }
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::string s(static_cast<std::size_t>(std::filesystem::file_size(p)), '\0');
  f.read(s.data(), static_cast<std::streamsize>(s.size()));
  return s;
}

// The golden files that hold a PalmMessage, by name: requests, pushes and
// the second part of each PUB message (the first is the topic; *.reply.hex
// are raw cache values).
bool holds_palm_message(const std::string& name) {
  auto ends_with = [&name](std::string_view suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".request.hex") || ends_with("client_push.hex") || ends_with("master_to_worker.hex") ||
         ends_with("worker_to_master.hex") || ends_with(".part1.hex");
}

TEST(CodecGolden, EveryPylmFrameParsesToItsManifestAndReencodesIdentically) {
  const std::filesystem::path dir(PALM_GOLDEN_DIR);
  const Json manifest = JsonParser(read_file(dir / "manifest.json")).parse();
  ASSERT_EQ(manifest.type, Json::Type::kObject);
  const auto& fields = manifest["fields"];
  ASSERT_EQ(fields["payload"].number, 6);  // the manifest's field numbers are ours
  std::set<std::string> from_manifest;
  for (const Json& entry : manifest["entries"].array) {
    const std::string& kind = entry["kind"].string;
    if (kind != "PalmMessage" && kind != "PUB [topic, PalmMessage]") continue;
    // PalmMessage: its one file; PUB: [topic, message].
    const std::size_t index = kind == "PalmMessage" ? 0 : 1;
    const std::string name = entry["files"].array.at(index).string;
    from_manifest.insert(name);
    SCOPED_TRACE(name);
    const std::string wire = unhex(read_file(dir / name));
    ASSERT_EQ(wire.size(), entry["sizes"].array.at(index).number);
    ASSERT_EQ(check_agree(wire), "");
    // PROTOCOL.md, "Observed on the wire": "Fields appear in number order,
    // once each, defaults omitted [...]: the encoding is canonical." So
    // decode (canonical input only) views it in place.
    const Result<MessageView> v = decode(bytes_of(wire));
    ASSERT_TRUE(v) << v.error().describe();
    const Json& d = entry["decoded"];
    EXPECT_EQ(v->pipeline, d["pipeline"].string);
    EXPECT_EQ(v->client, d["client"].string);
    EXPECT_EQ(v->stage, static_cast<std::int64_t>(d["stage"].number));
    EXPECT_EQ(v->function, d["function"].string);
    EXPECT_EQ(v->cache, d["cache"].string);
    EXPECT_EQ(v->payload.size(), d["payload_len"].number);
    if (d["payload_hex"].type == Json::Type::kString) {
      EXPECT_EQ(hex(str_of(v->payload)), d["payload_hex"].string);
    } else {  // 64 KiB: bytes 0, 1, ..., 255, 0, 1, ...
      for (std::size_t i = 0; i < v->payload.size(); ++i) {
        ASSERT_EQ(std::to_integer<std::size_t>(v->payload[i]), i % 256) << i;
      }
    }
    // Each length prefix is as long as the manifest says (minimal).
    const std::size_t lengths[] = {0, v->pipeline.size(), v->client.size(), 0, v->function.size(),
                                   v->cache.size(), v->payload.size()};
    for (const auto& [field, prefix] : d["length_prefix_bytes"].object) {
      EXPECT_EQ(varint_bytes(lengths[std::stoul(field)]).size(), prefix.number) << "field " << field;
    }
    EXPECT_TRUE(v->error.empty() && v->dispatch_id == 0 && v->flags == 0 && v->unknown.empty());
    std::vector<int> present;
    if (!v->pipeline.empty()) present.push_back(1);
    if (!v->client.empty()) present.push_back(2);
    if (v->stage != 0) present.push_back(3);
    if (!v->function.empty()) present.push_back(4);
    if (!v->cache.empty()) present.push_back(5);
    if (!v->payload.empty()) present.push_back(6);
    std::vector<int> listed;
    for (const Json& f : d["wire_fields"].array) listed.push_back(static_cast<int>(f.number));
    EXPECT_EQ(present, listed);
    // Re-encoded: whole, and as head + payload + tail.
    std::vector<std::byte> out(encoded_size(*v));
    ASSERT_EQ(encode(*v, out), wire.size());
    EXPECT_EQ(str_of(out), wire);
    std::vector<std::byte> frame(wire.size());
    const std::size_t at = encode_head(*v, v->payload.size(), frame);
    std::copy(v->payload.begin(), v->payload.end(), frame.begin() + static_cast<std::ptrdiff_t>(at));
    EXPECT_EQ(encode_tail(*v, std::span(frame).subspan(at + v->payload.size())), 0U);
    EXPECT_EQ(str_of(frame), wire);
  }
  // The name rule picks exactly the manifest's PalmMessage files.
  std::set<std::string> by_name;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (holds_palm_message(name)) by_name.insert(name);
  }
  EXPECT_EQ(by_name, from_manifest);
  EXPECT_GE(from_manifest.size(), 30U);
}

}  // namespace
}  // namespace palm
