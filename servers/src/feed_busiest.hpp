#pragma once
// The choice of worker shared by the master's dispatch and the client's
// bypass (DESIGN.md "The farm": feed the busiest workers, let the rest
// sleep).
//
// In joining order, the first worker with credit holding fewer than kRun
// messages takes the next one. A trickle stays on one worker and the others
// fall asleep (with more workers than cores, every awake one costs its
// peers context switches); under load a worker takes up to kRun before the
// next is used, so a worker woken for one message finds the next ones
// there, and a short job of slow messages still spreads. When every worker
// holds kRun, the one holding fewest (with credit) takes it, so deep
// credits still fill.

#include <algorithm>
#include <cstdint>

namespace palm::servers::detail {

inline constexpr std::uint32_t kRun = 16;  // held at one worker before the next takes any
// A worker whose last two results came closer than this is fast: it may
// hold all the credits it joined with before the next worker is used.
inline constexpr std::int64_t kFastGapNs = 20'000;

// Pacing, for a Worker with `offered` (the credits it joined with),
// `last_result_ns`, `gap_ns` and `busy` (false at first), shared by the
// master and the bypass. A result came at `now` while the worker held
// `held` (this one included). The time since its last result is how long
// it took to serve one only if it was busy all along: if it still held
// others when that result came. Otherwise (a trickle, one in flight; or
// the first result after a pause, between two jobs) the gap says nothing
// of its speed and the one known is kept: a fast worker stays fast across
// a pause, and the next job does not wake every worker before it learns
// again (8 bypassed workers of a 20 000-message job: 5 of them woke).
template <class Worker>
void note_result(Worker& w, std::int64_t now, std::uint32_t held) noexcept {
  if (w.busy && w.last_result_ns != 0) w.gap_ns = now - w.last_result_ns;
  w.last_result_ns = now;
  w.busy = held > 1;
}
// How many it may hold before the next worker is used (feed_the_busiest's
// `run`): all it offered while fast, else kRun.
template <class Worker>
std::uint32_t run_of(const Worker& w) noexcept {
  return w.gap_ns < kFastGapNs ? std::max(w.offered, kRun) : kRun;
}

// `workers`: a range in joining order; `at(element)` gives a Worker* with
// `credits`, `held(Worker&)` what it holds, and `run(Worker&)` how many it
// may hold before the next is used (kRun, or more for a worker known to be
// fast). nullptr: none has credit.
template <class Range, class At, class Held, class Run>
auto* feed_the_busiest(Range& workers, At at, Held held, Run run) {
  decltype(at(*workers.begin())) pick = nullptr;
  std::uint32_t fewest = ~0u;
  for (auto& element : workers) {
    auto* w = at(element);
    if (w->credits == 0) continue;
    const std::uint32_t h = held(*w);
    if (h < run(*w)) return w;
    if (h < fewest) {
      fewest = h;
      pick = w;
    }
  }
  return pick;
}

}  // namespace palm::servers::detail
