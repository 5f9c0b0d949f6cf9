// The choice of worker shared by the master and the bypass
// (servers/src/feed_busiest.hpp): how a worker's speed is learnt, and who
// takes the next message.
#include "feed_busiest.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace palm::servers::detail {
namespace {

struct W {
  std::uint32_t credits = 64;
  std::uint32_t held = 0;
  std::uint32_t offered = 64;
  std::int64_t last_result_ns = 0;
  std::int64_t gap_ns = INT64_MAX;
  bool busy = false;
};

constexpr std::int64_t kUs = 1'000;
constexpr std::int64_t kS = 1'000'000'000;

TEST(NoteResult, ABusyWorkersResultsTimeItsService) {
  W w;
  EXPECT_EQ(run_of(w), kRun);  // unknown speed: a run of kRun
  note_result(w, 1 * kS, 10);  // the first result: nothing to time yet
  EXPECT_EQ(w.gap_ns, INT64_MAX);
  note_result(w, 1 * kS + 5 * kUs, 9);
  EXPECT_EQ(w.gap_ns, 5 * kUs);
  EXPECT_EQ(run_of(w), 64u);  // fast: it may hold all it offered

  W slow;
  note_result(slow, 1 * kS, 10);
  note_result(slow, 1 * kS + 1000 * kUs, 9);
  EXPECT_EQ(slow.gap_ns, 1000 * kUs);
  EXPECT_EQ(run_of(slow), kRun);
}

TEST(NoteResult, APauseBetweenJobsIsNotServiceTime) {
  W w;
  note_result(w, 1 * kS, 3);
  note_result(w, 1 * kS + 4 * kUs, 2);
  note_result(w, 1 * kS + 8 * kUs, 1);  // the job's last: the worker is idle after it
  EXPECT_EQ(w.gap_ns, 4 * kUs);
  // The next job, a second later: its first result closes an idle second,
  // which says nothing of the worker's speed. It stays fast...
  note_result(w, 2 * kS, 64);
  EXPECT_EQ(w.gap_ns, 4 * kUs);
  EXPECT_EQ(run_of(w), 64u);
  // ...and the next result, the worker busy since, times it again.
  note_result(w, 2 * kS + 6 * kUs, 63);
  EXPECT_EQ(w.gap_ns, 6 * kUs);
}

TEST(NoteResult, ATrickleKeepsWhatWasKnown) {
  W unknown;
  for (int i = 1; i <= 5; ++i) note_result(unknown, i * kS, 1);  // one in flight each time
  EXPECT_EQ(unknown.gap_ns, INT64_MAX);

  W fast;  // five results 3 µs apart, the last leaving it idle
  for (std::uint32_t held = 5; held >= 1; --held) note_result(fast, 1 * kS + (5 - held) * 3 * kUs, held);
  for (int i = 2; i <= 5; ++i) note_result(fast, i * kS, 1);
  EXPECT_EQ(fast.gap_ns, 3 * kUs);
}

W* pick(std::vector<W>& ws) {
  return feed_the_busiest(
      ws, [](W& w) { return &w; }, [](const W& w) { return w.held; }, [](const W& w) { return run_of(w); });
}

TEST(FeedTheBusiest, TheFirstWorkerTakesItsRunBeforeTheNext) {
  std::vector<W> ws(3);
  // Unknown speed: kRun each, in joining order.
  for (std::uint32_t i = 0; i < 3 * kRun; ++i) {
    W* w = pick(ws);
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w, &ws[i / kRun]) << i;
    ++w->held;
    --w->credits;
  }
  // Every worker holds its run: the one holding fewest with credit.
  ws[1].held = kRun - 1 + 2;  // it holds more than the others now
  ws[0].held = kRun + 1;
  EXPECT_EQ(pick(ws), &ws[2]);
  ws[2].credits = 0;
  EXPECT_EQ(pick(ws), &ws[0]);
  for (W& w : ws) w.credits = 0;
  EXPECT_EQ(pick(ws), nullptr);
}

TEST(FeedTheBusiest, AFastWorkerHoldsAllItOfferedFirst) {
  std::vector<W> ws(2);
  ws[0].gap_ns = 2 * kUs;  // fast
  for (std::uint32_t i = 0; i < 64; ++i) {
    W* w = pick(ws);
    ASSERT_EQ(w, &ws[0]) << i;
    ++w->held;
    --w->credits;
  }
  EXPECT_EQ(pick(ws), &ws[1]);  // out of credit: the next takes it
}

}  // namespace
}  // namespace palm::servers::detail
