#include "palm/core/frame.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "palm/core/process.hpp"
#include "palm/core/region.hpp"
#include "anonymous_pool.hpp"

namespace palm {
namespace {

std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

std::vector<std::byte> from_hex(const std::string& hex) {
  std::vector<std::byte> out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<std::byte>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

std::vector<std::byte> golden(const std::string& name) {
  std::ifstream in(std::string(PALM_GOLDEN_DIR) + "/" + name);
  std::string hex((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return from_hex(hex);
}

class FrameTest : public test::AnonymousPool {
 protected:
  FrameTest() : AnonymousPool("frame-test") {}

  std::vector<std::byte> encoded(const MessageView& m) {
    std::vector<std::byte> out(encoded_size(m));
    out.resize(encode(m, out));
    return out;
  }
};

MessageView sample(std::span<const std::byte> payload) {
  MessageView m;
  m.pipeline = "3d99e99b-2554-435d-81e0-ac9d42c65db8";
  m.client = "663d6598-1339-4747-afab-1b65934e8c1c";
  m.function = "my_master.foo";
  m.cache = "my_cache";
  m.payload = payload;
  return m;
}

TEST_F(FrameTest, BuiltFrameViewsItsFieldsAndTopic) {
  const auto m = sample(bytes_of("a message"));
  auto h = build_frame(*pool_, slot_, m, m.client);
  ASSERT_TRUE(h) << h.error().describe();
  auto v = view_frame(*pool_, *h);
  ASSERT_TRUE(v) << v.error().describe();
  EXPECT_EQ(v->topic, m.client);
  EXPECT_EQ(v->message.function, "my_master.foo");
  EXPECT_EQ(v->message.cache, "my_cache");
  ASSERT_EQ(v->message.payload.size(), 9u);
  EXPECT_EQ(std::memcmp(v->message.payload.data(), "a message", 9), 0);
  const auto want = encoded(m);
  ASSERT_EQ(v->wire.size(), want.size());
  EXPECT_EQ(std::memcmp(v->wire.data(), want.data(), want.size()), 0);
  ASSERT_TRUE(pool_->release(slot_, *h));
}

TEST_F(FrameTest, ParsedGoldenFrameIsByteIdenticalAndViewable) {
  for (const char* name : {"master_eval.master_to_worker.hex", "pipeline_eval.server_pub.part1.hex",
                           "server_eval_64k.client_push.hex", "server_eval_empty.client_push.hex"}) {
    const auto wire = golden(name);
    ASSERT_FALSE(wire.empty()) << name;
    auto h = parse_frame(*pool_, slot_, wire, "topic");
    ASSERT_TRUE(h) << name << ": " << h.error().describe();
    auto v = view_frame(*pool_, *h);
    ASSERT_TRUE(v) << name;
    ASSERT_EQ(v->wire.size(), wire.size()) << name;
    EXPECT_EQ(std::memcmp(v->wire.data(), wire.data(), wire.size()), 0) << name;
    EXPECT_EQ(v->topic, "topic");
    ASSERT_TRUE(pool_->release(slot_, *h));
  }
}

TEST_F(FrameTest, MalformedWireIsRejectedAndLosesNoBlock) {
  const auto wire = golden("server_eval.client_push.hex");
  ASSERT_GT(wire.size(), 3u);
  // Cut inside the payload.
  auto h = parse_frame(*pool_, slot_, std::span<const std::byte>(wire).first(wire.size() - 3));
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, Errc::kTruncated);
}

// The writer places the payload for the longest head and closes the gap at
// commit: the frame must equal encode() for every length, whatever the
// varint width of the length (1, 2, 3 bytes) and with a tail (error field).
TEST_F(FrameTest, WriterMatchesEncodeForEveryLengthWidth) {
  std::vector<std::byte> payload(70000);
  for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<std::byte>(i * 7);
  for (std::size_t max : {std::size_t{0}, std::size_t{127}, std::size_t{200}, std::size_t{70000}}) {
    for (std::size_t len : {std::size_t{0}, std::size_t{1}, std::size_t{127}, std::size_t{128},
                            std::size_t{16383}, std::size_t{16384}, std::size_t{70000}}) {
      if (len > max) continue;
      auto fields = sample({});
      fields.error = "unknown function";
      fields.stage = 2;
      FrameWriter w;
      ASSERT_TRUE(w.begin(*pool_, slot_, fields, "t", max));
      ASSERT_EQ(w.payload().size(), max);
      std::memcpy(w.payload().data(), payload.data(), len);
      auto h = w.commit(len);
      ASSERT_TRUE(h) << h.error().describe();
      fields.payload = std::span<const std::byte>(payload.data(), len);
      const auto want = encoded(fields);
      auto v = view_frame(*pool_, *h);
      ASSERT_TRUE(v) << v.error().describe();
      ASSERT_EQ(v->wire.size(), want.size()) << "max " << max << " len " << len;
      EXPECT_EQ(std::memcmp(v->wire.data(), want.data(), want.size()), 0);
      EXPECT_EQ(v->message.error, "unknown function");
      EXPECT_EQ(v->message.stage, 2);
      ASSERT_TRUE(pool_->release(slot_, *h));
    }
  }
}

// One writer reused for a stream of frames, as a job uses it: it keeps the
// head it encoded while the fields stay the same. Every frame must still be
// exactly encode()'s, whatever changes between two of them: the payload
// length, the dispatch id (and its varint width), the topic, the stage, a
// field's bytes rewritten in the same buffer (same pointer, same size).
TEST_F(FrameTest, AReusedWriterMatchesEncodeWhateverChangesBetweenFrames) {
  std::string function = "echo";  // its bytes change in place below
  struct Step {
    std::size_t len;
    std::uint64_t id;
    std::string_view topic;
    std::int64_t stage;
    const char* function;
  };
  const Step steps[] = {
      {10, 0, "", 0, "echo"},          {10, 1, "", 0, "echo"},
      {10, 127, "", 0, "echo"},        {10, 128, "", 0, "echo"},  // id 1 -> 2 bytes
      {11, 129, "", 0, "echo"},        {10, 1ULL << 40, "", 0, "echo"},
      {10, 5, "", 0, "echo"},          {10, 5, "", 0, "ECHO"},  // same buffer, other bytes
      {10, 5, "topic", 0, "ECHO"},     {10, 5, "topic", 3, "ECHO"},
      {0, 0, "", 0, "echo"},           {64, UINT64_MAX, "", 0, "echo"},
      {64, 7, "", 0, "echo"},
  };
  std::vector<std::byte> payload(64);
  FrameWriter w;
  for (std::size_t i = 0; i < std::size(steps); ++i) {
    const Step& st = steps[i];
    std::memcpy(function.data(), st.function, function.size());
    auto fields = sample({});
    fields.function = function;
    fields.dispatch_id = st.id;
    fields.stage = st.stage;
    ASSERT_TRUE(w.begin(*pool_, slot_, fields, st.topic, 64)) << "step " << i;
    for (std::size_t k = 0; k < st.len; ++k) payload[k] = static_cast<std::byte>(i * 31 + k);
    std::memcpy(w.payload().data(), payload.data(), st.len);
    auto h = w.commit(st.len);
    ASSERT_TRUE(h) << "step " << i << ": " << h.error().describe();
    fields.payload = std::span<const std::byte>(payload.data(), st.len);
    const auto want = encoded(fields);
    auto v = view_frame(*pool_, *h);
    ASSERT_TRUE(v) << "step " << i << ": " << v.error().describe();
    ASSERT_EQ(v->wire.size(), want.size()) << "step " << i;
    EXPECT_EQ(std::memcmp(v->wire.data(), want.data(), want.size()), 0) << "step " << i;
    EXPECT_EQ(v->topic, st.topic) << "step " << i;
    EXPECT_EQ(v->message.function, st.function) << "step " << i;
    EXPECT_EQ(v->message.dispatch_id, st.id) << "step " << i;
    EXPECT_EQ(v->message.stage, st.stage) << "step " << i;
    ASSERT_TRUE(pool_->release(slot_, *h));
  }
}

TEST_F(FrameTest, WriterRefusesOverlongCommitAndReleasesWhenAbandoned) {
  FrameWriter w;
  ASSERT_TRUE(w.begin(*pool_, slot_, sample({}), "", 16));
  auto h = w.commit(17);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, Errc::kOutOfRange);
  // w goes out of scope uncommitted: TearDown checks the block came back.
}

TEST_F(FrameTest, DamagedHeaderIsMalformedNotARead) {
  auto h = build_frame(*pool_, slot_, sample(bytes_of("x")));
  ASSERT_TRUE(h);
  auto block = pool_->resolve(*h);
  ASSERT_TRUE(block);
  auto* fh = reinterpret_cast<FrameHeader*>(block->data);
  const auto saved = fh->layout.size;
  fh->layout.size = 0x7fffffff;
  EXPECT_EQ(view_frame(*pool_, *h).error().code, Errc::kMalformed);
  fh->layout.size = saved;
  fh->magic = 0;
  EXPECT_EQ(view_frame(*pool_, *h).error().code, Errc::kMalformed);
  ASSERT_TRUE(pool_->release(slot_, *h));
}

TEST_F(FrameTest, FrameWireIsTheViewsBytesAndChecksTheHeaderOnly) {
  const auto m = sample(bytes_of("wire bytes"));
  auto h = build_frame(*pool_, slot_, m, "a topic");
  ASSERT_TRUE(h);
  auto v = view_frame(*pool_, *h);
  auto w = frame_wire(*pool_, *h);
  ASSERT_TRUE(v && w) << (w ? v.error().describe() : w.error().describe());
  EXPECT_EQ(w->header, v->header);
  EXPECT_EQ(w->topic, "a topic");
  EXPECT_EQ(w->wire.data(), v->wire.data());
  const auto want = encoded(m);
  ASSERT_EQ(w->wire.size(), want.size());
  EXPECT_EQ(std::memcmp(w->wire.data(), want.data(), want.size()), 0);

  auto block = pool_->resolve(*h);
  ASSERT_TRUE(block);
  auto* fh = reinterpret_cast<FrameHeader*>(block->data);
  // Offsets out of the block and a foreign magic are refused, as by view_frame.
  const FrameHeader saved = *fh;
  fh->wire_offset = static_cast<std::uint32_t>(block->capacity + 1);
  EXPECT_EQ(frame_wire(*pool_, *h).error().code, Errc::kMalformed);
  *fh = saved;
  fh->topic_length = kMaxTopicBytes + 1;
  EXPECT_EQ(frame_wire(*pool_, *h).error().code, Errc::kMalformed);
  *fh = saved;
  fh->version = kFrameVersion + 1;
  EXPECT_EQ(frame_wire(*pool_, *h).error().code, Errc::kMalformed);
  *fh = saved;
  // Field offsets that disagree with the bytes are the reader's to find
  // (view_frame): frame_wire hands the bytes on as they are.
  fh->layout.payload.offset = static_cast<std::uint32_t>(fh->layout.size);
  EXPECT_TRUE(frame_wire(*pool_, *h));
  EXPECT_EQ(view_frame(*pool_, *h).error().code, Errc::kMalformed);
  *fh = saved;
  ASSERT_TRUE(pool_->release(slot_, *h));
  EXPECT_EQ(frame_wire(*pool_, *h).error().code, Errc::kStaleHandle);
}

TEST_F(FrameTest, StaleHandleIsRefused) {
  auto h = build_frame(*pool_, slot_, sample(bytes_of("x")));
  ASSERT_TRUE(h);
  ASSERT_TRUE(pool_->release(slot_, *h));
  auto v = view_frame(*pool_, *h);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().code, Errc::kStaleHandle);
}

TEST_F(FrameTest, OversizedTopicIsRefused) {
  const std::string topic(kMaxTopicBytes + 1, 't');
  auto h = build_frame(*pool_, slot_, sample({}), topic);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, Errc::kTooLarge);
}

}  // namespace
}  // namespace palm

namespace palm {
namespace {

TEST_F(FrameTest, MovesCarryTheKeptViewAndLeaveNothingBehind) {
  auto a = Frame::build(*pool_, slot_, sample(bytes_of("first")));
  auto b = Frame::build(*pool_, slot_, sample(bytes_of("second")));
  ASSERT_TRUE(a && b);
  ASSERT_NE(a->peek(), nullptr);  // a is viewed, b is not
  const auto* wire = a->peek()->wire.data();
  Frame moved(std::move(*a));
  EXPECT_FALSE(*a);
  EXPECT_EQ(a->cached_view(), nullptr);
  ASSERT_NE(moved.cached_view(), nullptr);
  EXPECT_EQ(moved.cached_view()->wire.data(), wire);
  // Assigning an unviewed frame over a viewed one: the old reference is
  // released and its view goes with it.
  const Handle old = moved.handle();
  moved = std::move(*b);
  EXPECT_EQ(moved.cached_view(), nullptr);
  EXPECT_EQ(view_frame(*pool_, old).error().code, Errc::kStaleHandle);
  ASSERT_NE(moved.peek(), nullptr);
  EXPECT_EQ(std::memcmp(moved.peek()->message.payload.data(), "second", 6), 0);
  moved.reset();
  EXPECT_FALSE(moved);
  EXPECT_EQ(moved.cached_view(), nullptr);
  // TearDown checks that every block came back.
}

TEST_F(FrameTest, FrameOwnsOneReferenceAndSharesByCount) {
  auto f = Frame::build(*pool_, slot_, sample(bytes_of("fan-out")), "t");
  ASSERT_TRUE(f) << f.error().describe();
  auto g = f->share();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->handle(), f->handle());  // the same block, nothing copied
  f->reset();
  auto v = g->view();  // still alive: g holds a reference
  ASSERT_TRUE(v);
  EXPECT_EQ(v->topic, "t");
  Frame moved = std::move(*g);
  EXPECT_FALSE(*g);
  EXPECT_TRUE(moved);
  // Given away (as through a channel) and taken back by the same slot.
  auto h = moved.give_away();
  ASSERT_TRUE(h);
  EXPECT_FALSE(moved);
  ASSERT_TRUE(pool_->hold(slot_, *h));
  Frame back(*pool_, slot_, *h);
  EXPECT_TRUE(back.view());

  // A bare second reference: the same block, counted, no kept view until
  // it views (validating again); the first outlives it and the reverse.
  ASSERT_NE(back.cached_view(), nullptr);
  auto bare = back.share_unviewed();
  ASSERT_TRUE(bare) << bare.error().describe();
  EXPECT_EQ(bare->handle(), back.handle());
  EXPECT_EQ(bare->cached_view(), nullptr);
  const Handle handle = back.handle();
  back.reset();
  auto bv = bare->view();
  ASSERT_TRUE(bv) << bv.error().describe();
  EXPECT_EQ(bv->topic, "t");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(bv->message.payload.data()), bv->message.payload.size()), "fan-out");
  ASSERT_NE(bare->cached_view(), nullptr);
  Frame moved_bare = std::move(*bare);
  EXPECT_EQ(moved_bare.handle(), handle);
  ASSERT_NE(moved_bare.cached_view(), nullptr);  // the view moved with it
  EXPECT_EQ(bare->cached_view(), nullptr);
  EXPECT_FALSE(Frame().share_unviewed());
}

// Rewriting in place: what a master does to the message a client sent it
// (a cache key and a dispatch id) and to a worker's result (a topic, the
// dispatch id cleared). The result must be byte for byte what building the
// edited message gives, in the same block.
TEST_F(FrameTest, RewriteStampsFieldsAroundThePayloadInTheSameBlock) {
  std::string payload(64, 'p');
  MessageView m = sample(bytes_of(payload));
  m.cache = {};
  auto f = Frame::build(*pool_, slot_, m);
  ASSERT_TRUE(f) << f.error().describe();
  const Handle before = f->handle();
  auto v = f->view();
  ASSERT_TRUE(v);
  const std::byte* payload_at = v->message.payload.data();

  MessageView stamped = v->message;  // views the frame's own bytes
  stamped.cache = "d18e4a53-41a4-413e-8ce7-fe8533e469fe";
  stamped.dispatch_id = 123456789;
  ASSERT_TRUE(f->rewrite(stamped));
  EXPECT_EQ(f->handle(), before);
  auto w = f->view();
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ(w->message.payload.data(), payload_at);  // not moved: the room was there
  EXPECT_EQ(w->message.pipeline, m.pipeline);
  EXPECT_EQ(w->message.client, m.client);
  EXPECT_EQ(w->message.function, m.function);
  EXPECT_EQ(w->message.cache, "d18e4a53-41a4-413e-8ce7-fe8533e469fe");
  EXPECT_EQ(w->message.dispatch_id, 123456789u);
  MessageView want_fields = m;
  want_fields.cache = "d18e4a53-41a4-413e-8ce7-fe8533e469fe";
  want_fields.dispatch_id = 123456789;
  const auto want = encoded(want_fields);
  ASSERT_EQ(w->wire.size(), want.size());
  EXPECT_EQ(std::memcmp(w->wire.data(), want.data(), want.size()), 0);

  // Then as a result going out: the client's uuid as topic (a view of the
  // frame's own bytes), the dispatch id cleared, the stage bumped.
  MessageView out = w->message;
  out.dispatch_id = 0;
  out.stage = 2;
  ASSERT_TRUE(f->rewrite(out, out.client));
  auto x = f->view();
  ASSERT_TRUE(x);
  EXPECT_EQ(x->topic, m.client);
  want_fields.dispatch_id = 0;
  want_fields.stage = 2;
  const auto want2 = encoded(want_fields);
  ASSERT_EQ(x->wire.size(), want2.size());
  EXPECT_EQ(std::memcmp(x->wire.data(), want2.data(), want2.size()), 0);
  auto parsed = view_frame(*pool_, f->handle());  // a receiver's validation
  ASSERT_TRUE(parsed) << parsed.error().describe();
  EXPECT_EQ(parsed->message.cache, want_fields.cache);
  // rewrite left the frame viewed (a holder does not parse it again): that
  // view must be exactly the parse's, the same bytes in the block.
  ASSERT_NE(f->cached_view(), nullptr);
  const FrameView& kept = *f->cached_view();
  EXPECT_EQ(kept.header, parsed->header);
  EXPECT_EQ(kept.topic.data(), parsed->topic.data());
  EXPECT_EQ(kept.topic, parsed->topic);
  EXPECT_EQ(kept.wire.data(), parsed->wire.data());
  EXPECT_EQ(kept.wire.size(), parsed->wire.size());
  EXPECT_EQ(kept.message.client.data(), parsed->message.client.data());
  EXPECT_EQ(kept.message.cache.data(), parsed->message.cache.data());
  EXPECT_EQ(kept.message.payload.data(), parsed->message.payload.data());
  EXPECT_EQ(kept.message.stage, parsed->message.stage);
  EXPECT_EQ(kept.message.dispatch_id, parsed->message.dispatch_id);

  // Only the tail and the topic change (the head's fields are the frame's
  // own bytes, the stage kept): the head stays where it is, untouched, and
  // the frame is still byte for byte encode()'s. Then a topic too long for
  // the room before the wire: the whole message is laid out again.
  const std::byte* head_at = x->wire.data();
  MessageView tail_only = x->message;
  tail_only.dispatch_id = 300;  // a wider varint than none
  tail_only.error = "worker says no";
  tail_only.flags = 1;
  static constexpr std::byte kUnknown[] = {std::byte{0x78}, std::byte{0x2a}};  // field 15, varint 42
  tail_only.unknown = kUnknown;
  const std::string topic3 = "f18e4a53-41a4-413e-8ce7-fe8533e469fe";
  ASSERT_TRUE(f->rewrite(tail_only, topic3));
  auto y = f->view();
  ASSERT_TRUE(y);
  EXPECT_EQ(y->wire.data(), head_at);
  EXPECT_EQ(y->topic, topic3);
  want_fields.dispatch_id = 300;
  want_fields.error = "worker says no";
  want_fields.flags = 1;
  want_fields.unknown = kUnknown;
  const auto want3 = encoded(want_fields);
  ASSERT_EQ(y->wire.size(), want3.size());
  EXPECT_EQ(std::memcmp(y->wire.data(), want3.data(), want3.size()), 0);
  auto parsed3 = view_frame(*pool_, f->handle());
  ASSERT_TRUE(parsed3) << parsed3.error().describe();
  EXPECT_EQ(parsed3->message.error, "worker says no");
  EXPECT_EQ(parsed3->message.dispatch_id, 300u);
  EXPECT_EQ(f->cached_view()->message.error.data(), parsed3->message.error.data());
  EXPECT_EQ(f->cached_view()->wire.size(), parsed3->wire.size());

  // Again with the head kept, the error now viewing the frame's own tail,
  // which the new tail overwrites (a one-byte id: everything after moves).
  MessageView again = y->message;
  again.dispatch_id = 5;
  ASSERT_TRUE(f->rewrite(again, topic3));
  auto y2 = f->view();
  ASSERT_TRUE(y2);
  EXPECT_EQ(y2->wire.data(), head_at);
  EXPECT_EQ(std::string_view(y2->message.error), "worker says no");
  EXPECT_EQ(y2->message.dispatch_id, 5u);
  ASSERT_EQ(y2->message.unknown.size(), 2u);  // moved a byte back, intact
  EXPECT_EQ(y2->message.unknown[1], std::byte{0x2a});
  want_fields.dispatch_id = 5;
  const auto want_again = encoded(want_fields);
  ASSERT_EQ(y2->wire.size(), want_again.size());
  EXPECT_EQ(std::memcmp(y2->wire.data(), want_again.data(), want_again.size()), 0);

  MessageView cleared = y2->message;  // the tail's fields view the frame: kept aside first
  cleared.dispatch_id = 0;
  const auto room = static_cast<std::size_t>(head_at - reinterpret_cast<const std::byte*>(y->header)) -
                    kFrameHeaderBytes;  // for a topic before the wire
  const std::string long_topic(room + 8, 't');
  ASSERT_TRUE(f->rewrite(cleared, long_topic));
  auto z = f->view();
  ASSERT_TRUE(z);
  EXPECT_EQ(z->topic, long_topic);
  want_fields.dispatch_id = 0;
  const auto want4 = encoded(want_fields);
  ASSERT_EQ(z->wire.size(), want4.size());
  EXPECT_EQ(std::memcmp(z->wire.data(), want4.data(), want4.size()), 0);
  EXPECT_EQ(std::string_view(z->message.error), "worker says no");
}

// Rewrites in a row, as a master makes them: a thread keeps the sizes and
// layout of the last shape of message it rewrote. Whatever changes from one
// to the next (the dispatch id's value or width, the stage, a field's
// length, the payload's), every frame must be encode()'s bytes, and its
// kept view the parse's.
TEST_F(FrameTest, RewritesInARowMatchEncodeWhateverTheShape) {
  struct Step {
    std::uint64_t id;
    std::int64_t stage;
    std::string_view cache;
    std::size_t payload;
  };
  const Step steps[] = {
      {1, 0, "d18e4a53-41a4-413e-8ce7-fe8533e469fe", 64},   {2, 0, "a18e4a53-41a4-413e-8ce7-fe8533e469fe", 64},
      {300, 0, "b18e4a53-41a4-413e-8ce7-fe8533e469fe", 64}, {301, 0, "c18e4a53-41a4-413e-8ce7-fe8533e469fe", 64},
      {0, 0, "d18e4a53-41a4-413e-8ce7-fe8533e469fe", 64},   {7, 1, "d18e4a53-41a4-413e-8ce7-fe8533e469fe", 64},
      {7, 1, "short", 64},                                  {7, 1, "short", 65},
      {UINT64_MAX, 1, "short", 65},                         {5, 1, "short", 65},
  };
  for (std::size_t i = 0; i < std::size(steps); ++i) {
    const Step& st = steps[i];
    const std::string payload(st.payload, static_cast<char>('a' + i));
    MessageView m = sample(bytes_of(payload));
    m.cache = {};
    auto f = Frame::build(*pool_, slot_, m);
    ASSERT_TRUE(f) << f.error().describe();
    auto v = f->view();
    ASSERT_TRUE(v);
    MessageView stamped = v->message;
    stamped.cache = st.cache;
    stamped.dispatch_id = st.id;
    stamped.stage = st.stage;
    ASSERT_TRUE(f->rewrite(stamped)) << "step " << i;
    MessageView want = m;
    want.cache = st.cache;
    want.dispatch_id = st.id;
    want.stage = st.stage;
    const auto bytes = encoded(want);
    auto parsed = view_frame(*pool_, f->handle());
    ASSERT_TRUE(parsed) << "step " << i << ": " << parsed.error().describe();
    ASSERT_EQ(parsed->wire.size(), bytes.size()) << "step " << i;
    EXPECT_EQ(std::memcmp(parsed->wire.data(), bytes.data(), bytes.size()), 0) << "step " << i;
    ASSERT_NE(f->cached_view(), nullptr);
    EXPECT_EQ(f->cached_view()->message.dispatch_id, st.id) << "step " << i;
    EXPECT_EQ(f->cached_view()->message.stage, st.stage) << "step " << i;
    EXPECT_EQ(f->cached_view()->message.cache, st.cache) << "step " << i;
    EXPECT_EQ(f->cached_view()->wire.size(), bytes.size()) << "step " << i;
  }
}

// Only the cache key changes (a master stamping a client's message): fields
// 1-4 move as they are to meet the new key, the payload stays put. Keys
// that grow, shrink, vanish, alias the bytes that move, and one too long
// for the room before the payload (the message is laid out again); each
// frame must be encode()'s bytes, its kept view the parse's.
TEST_F(FrameTest, RewriteOfTheCacheKeyAloneMatchesEncode) {
  const std::string payload(500, 'q');  // a block with room after the frame, not before
  MessageView m = sample(bytes_of(payload));
  m.cache = {};
  m.stage = 3;
  auto f = Frame::build(*pool_, slot_, m);
  ASSERT_TRUE(f) << f.error().describe();
  const std::byte* payload_at = f->view()->message.payload.data();
  MessageView want = m;

  const auto check = [&](const char* step, std::string_view topic) {
    SCOPED_TRACE(step);
    const auto bytes = encoded(want);
    auto parsed = view_frame(*pool_, f->handle());
    ASSERT_TRUE(parsed) << parsed.error().describe();
    ASSERT_EQ(parsed->wire.size(), bytes.size());
    EXPECT_EQ(std::memcmp(parsed->wire.data(), bytes.data(), bytes.size()), 0);
    EXPECT_EQ(parsed->topic, topic);
    const FrameView* kept = f->cached_view();
    ASSERT_NE(kept, nullptr);
    EXPECT_EQ(kept->wire.data(), parsed->wire.data());
    EXPECT_EQ(kept->wire.size(), parsed->wire.size());
    EXPECT_EQ(kept->topic, parsed->topic);
    EXPECT_EQ(kept->message.pipeline, std::string_view(want.pipeline));
    EXPECT_EQ(kept->message.client, std::string_view(want.client));
    EXPECT_EQ(kept->message.function, std::string_view(want.function));
    EXPECT_EQ(kept->message.cache, std::string_view(want.cache));
    EXPECT_EQ(kept->message.stage, want.stage);
    EXPECT_EQ(kept->message.dispatch_id, want.dispatch_id);
    EXPECT_EQ(kept->message.payload.data(), parsed->message.payload.data());
  };

  // None to a uuid4, with a dispatch id: the master's stamp.
  MessageView n = f->view()->message;
  n.cache = "d18e4a53-41a4-413e-8ce7-fe8533e469fe";
  n.dispatch_id = 77;
  ASSERT_TRUE(f->rewrite(n));
  want.cache = "d18e4a53-41a4-413e-8ce7-fe8533e469fe";
  want.dispatch_id = 77;
  check("stamped", {});
  EXPECT_EQ(f->view()->message.payload.data(), payload_at);

  // Shorter, with a topic.
  const std::string topic = "663d6598-1339-4747-afab-1b65934e8c1c";
  n = f->view()->message;
  n.cache = "short";
  ASSERT_TRUE(f->rewrite(n, topic));
  want.cache = "short";
  check("shorter", topic);
  EXPECT_EQ(f->view()->message.payload.data(), payload_at);

  // The key is the frame's own client bytes, which move.
  n = f->view()->message;
  n.cache = n.client;
  ASSERT_TRUE(f->rewrite(n, topic));
  want.cache = want.client;
  check("aliasing", topic);
  EXPECT_EQ(f->view()->message.payload.data(), payload_at);

  // No key.
  n = f->view()->message;
  n.cache = {};
  n.dispatch_id = 0;
  ASSERT_TRUE(f->rewrite(n));
  want.cache = {};
  want.dispatch_id = 0;
  check("none", {});
  EXPECT_EQ(f->view()->message.payload.data(), payload_at);

  // Longer than the room before the payload: laid out again, still right.
  const std::string long_key(200, 'k');
  n = f->view()->message;
  n.cache = long_key;
  ASSERT_TRUE(f->rewrite(n));
  want.cache = long_key;
  check("too long for the room", {});
  EXPECT_NE(f->view()->message.payload.data(), payload_at);
}

TEST_F(FrameTest, RewriteMovesThePayloadWhenTheRoomIsShortAndRefusesWhatCannotBeDone) {
  // A frame parsed from a pylm peer's golden bytes: a long topic eats the
  // room before the head, so the payload moves (one memmove, same block).
  const auto wire = golden("master_eval.master_to_worker.hex");
  auto h = parse_frame(*pool_, slot_, wire);
  ASSERT_TRUE(h);
  Frame f(*pool_, slot_, *h);
  auto v = f.view();
  ASSERT_TRUE(v);
  const std::string payload(reinterpret_cast<const char*>(v->message.payload.data()), v->message.payload.size());
  const std::string topic(100, 't');
  MessageView m = v->message;
  m.dispatch_id = 7;
  ASSERT_TRUE(f.rewrite(m, topic));
  auto w = f.view();
  ASSERT_TRUE(w);
  EXPECT_EQ(w->topic, topic);
  EXPECT_EQ(w->message.dispatch_id, 7u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(w->message.payload.data()), w->message.payload.size()),
            payload);

  // Refused, nothing changed: another payload; a shared frame; a block too
  // small for the new fields.
  MessageView other = w->message;
  other.payload = bytes_of("another payload");
  EXPECT_FALSE(f.rewrite(other));
  auto shared = f.share();
  ASSERT_TRUE(shared);
  MessageView same = w->message;
  same.dispatch_id = 8;
  EXPECT_FALSE(f.rewrite(same));
  shared->reset();
  const std::string huge_error(4096, 'e');
  same.error = huge_error;
  EXPECT_FALSE(f.rewrite(same));
  auto after = f.view();
  ASSERT_TRUE(after);
  EXPECT_EQ(after->message.dispatch_id, 7u);
  EXPECT_EQ(after->topic, topic);
}

}  // namespace
}  // namespace palm
