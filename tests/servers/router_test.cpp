// The router between a server's parts: a frame pushed into a route comes out
// of it as it went in (the same block, its reply route, token and time, and
// the view its pusher had validated, not validated again), or unviewed if it
// went in unviewed; a full route refuses a push and leaves the frame with
// its pusher; frames left in a route are released with the router.
#include "palm/servers/router.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "palm/core/frame.hpp"
#include "palm/core/process.hpp"
#include "palm/core/region.hpp"
#include "anonymous_pool.hpp"

namespace palm::servers {
namespace {

class RouterTest : public test::AnonymousPool {
 protected:
  RouterTest() : AnonymousPool("router-test") {}
  Frame frame(const std::string& payload) {
    MessageView m;
    m.client = "663d6598-1339-4747-afab-1b65934e8c1c";
    m.function = "_.echo";
    m.payload = std::as_bytes(std::span<const char>(payload.data(), payload.size()));
    auto f = Frame::build(*pool_, slot_, m, "topic");
    EXPECT_TRUE(f) << f.error().describe();
    return f ? std::move(*f) : Frame{};
  }
};

TEST_F(RouterTest, AFrameComesOutAsItWentInWithItsView) {
  Router router;
  auto route = router.add("r", 4, nullptr);
  ASSERT_TRUE(route);

  Frame viewed = frame("one");
  ASSERT_NE(viewed.peek(), nullptr);
  const FrameView kept = *viewed.cached_view();
  const Handle h1 = viewed.handle();
  Frame bare = frame("two");
  ASSERT_EQ(bare.cached_view(), nullptr);
  const Handle h2 = bare.handle();

  ASSERT_TRUE(router.try_push(*route, viewed, 3, 77, 12345));
  EXPECT_FALSE(viewed);
  ASSERT_TRUE(router.try_push(*route, bare));
  EXPECT_FALSE(bare);
  EXPECT_EQ(router.depth(*route), 2u);

  Routed out;
  ASSERT_TRUE(router.try_pop(*route, out));
  EXPECT_EQ(out.frame.handle(), h1);
  EXPECT_EQ(out.reply_to, 3u);
  EXPECT_EQ(out.token, 77u);
  EXPECT_EQ(out.since_ns, 12345);
  const FrameView* v = out.frame.cached_view();
  ASSERT_NE(v, nullptr) << "the pusher's view rides along";
  EXPECT_EQ(v->header, kept.header);
  EXPECT_EQ(v->topic.data(), kept.topic.data());
  EXPECT_EQ(v->wire.data(), kept.wire.data());
  EXPECT_EQ(v->wire.size(), kept.wire.size());
  EXPECT_EQ(v->message.client, kept.message.client);
  EXPECT_EQ(v->message.payload.data(), kept.message.payload.data());

  // Popped into the same Routed: its frame is released first.
  ASSERT_TRUE(router.try_pop(*route, out));
  EXPECT_EQ(out.frame.handle(), h2);
  EXPECT_EQ(out.frame.cached_view(), nullptr) << "an unviewed frame comes out unviewed";
  EXPECT_GT(out.since_ns, 0) << "stamped at the push";
  auto w = out.frame.view();
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(w->message.payload.data()), w->message.payload.size()), "two");
  EXPECT_FALSE(router.try_pop(*route, out));
  EXPECT_FALSE(out.frame) << "released by the pop, even an empty route's";
}

TEST_F(RouterTest, AFullRouteRefusesAndTheRouterReleasesWhatItHolds) {
  std::optional<Router> router(std::in_place);
  auto route = router->add("r", 2, nullptr);
  ASSERT_TRUE(route);
  Frame a = frame("a");
  Frame b = frame("b");
  Frame c = frame("c");
  ASSERT_NE(c.peek(), nullptr);
  ASSERT_TRUE(router->try_push(*route, a));
  ASSERT_TRUE(router->try_push(*route, b));
  const Handle hc = c.handle();
  EXPECT_FALSE(router->try_push(*route, c));
  EXPECT_EQ(c.handle(), hc) << "refused: the frame stays with its pusher";
  EXPECT_NE(c.cached_view(), nullptr);
  c.reset();
  router.reset();  // a and b: released with it (TearDown checks every block is free)
}

}  // namespace
}  // namespace palm::servers
