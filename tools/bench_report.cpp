// `palm bench`'s CSV and table (bench.hpp).
#include <algorithm>
#include <map>
#include <tuple>

#include <fmt/format.h>

#include "bench.hpp"
#include "farm_run.hpp"

namespace palm::tools {
namespace {

const BenchRow* find_row(const std::vector<BenchRow>& rows, const std::string& transport, std::size_t payload,
                         unsigned workers) {
  for (const auto& r : rows) {
    if (r.transport == transport && r.payload == payload && r.workers == workers) return &r;
  }
  return nullptr;
}

std::string us(double v) {
  if (v >= 100) return fmt::format("{:.0f}", v);
  return fmt::format("{:.1f}", v);
}

// Three significant digits: "261 k", "6.80 k", "1.39 k", "163".
std::string rate3(double v) {
  const char* unit = "";
  if (v >= 1e6) {
    v /= 1e6;
    unit = " M";
  } else if (v >= 1e3) {
    v /= 1e3;
    unit = " k";
  }
  // The thresholds sit where rounding would carry a digit: 9.996 is "10.0".
  if (v >= 99.95) return fmt::format("{:.0f}{}", v, unit);
  if (v >= 9.995) return fmt::format("{:.1f}{}", v, unit);
  return fmt::format("{:.2f}{}", v, unit);
}

std::string ratio(double a, double b) {
  if (a <= 0 || b <= 0) return "-";
  return fmt::format("{:.1f}x", a / b);
}

}  // namespace

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string bench_csv(const std::vector<BenchRow>& rows) {
  std::string out = std::string(kBenchCsvHeader) + "\n";
  for (const auto& r : rows) {
    out += fmt::format("{},{},{},{},{:.1f},{:.3f},{:.1f},{:.1f},{:.1f},{}\n", r.transport, r.payload, r.workers,
                       r.messages, r.msgs_per_s, r.mb_per_s, r.p50_us, r.p99_us, r.p999_us, r.runs);
  }
  return out;
}

std::string bench_table(const std::vector<BenchRow>& rows, const std::vector<std::string>& transports) {
  if (rows.empty()) return {};
  const std::string& base = transports.front();
  std::vector<std::string> others(transports.begin() + 1, transports.end());

  std::string out = fmt::format("{:<10} {:>8} {:>7} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8}", "transport", "payload",
                                "workers", "messages", "msgs/s", "MB/s", "p50 us", "p99 us", "p99.9 us");
  // Ratios on the base transport's rows: its msgs/s over the other's, and
  // the other's p50 over its own (how many times shorter its round trip).
  for (const auto& t : others) out += fmt::format(" {:>9}", fmt::format("thr x {}", t));
  for (const auto& t : others) out += fmt::format(" {:>9}", fmt::format("p50 x {}", t));
  out += "\n";
  for (const auto& r : rows) {
    out += fmt::format("{:<10} {:>8} {:>7} {:>8} {:>9} {:>9.1f} {:>8} {:>8} {:>8}", r.transport,
                       format_bytes(r.payload), r.workers, r.messages, rate3(r.msgs_per_s), r.mb_per_s,
                       us(r.p50_us), us(r.p99_us), us(r.p999_us));
    if (r.transport == base) {
      for (const auto& t : others) {
        const BenchRow* o = find_row(rows, t, r.payload, r.workers);
        out += fmt::format(" {:>9}", o ? ratio(r.msgs_per_s, o->msgs_per_s) : "-");
      }
      for (const auto& t : others) {
        const BenchRow* o = find_row(rows, t, r.payload, r.workers);
        out += fmt::format(" {:>9}", o ? ratio(o->p50_us, r.p50_us) : "-");
      }
    }
    out += "\n";
  }
  if (!others.empty()) {
    out += fmt::format(
        "ratios on the {0} rows: thr x T = {0}'s messages/s over T's, p50 x T = T's median round trip over {0}'s "
        "(above 1x: {0} is ahead)\n",
        base);
  }

  // Idle CPU: transports down, worker counts across.
  std::vector<unsigned> workers;
  for (const auto& r : rows) {
    if (r.idle_cpu_percent && std::find(workers.begin(), workers.end(), r.workers) == workers.end()) {
      workers.push_back(r.workers);
    }
  }
  if (workers.empty()) return out;
  std::sort(workers.begin(), workers.end());
  out += "\nidle CPU of the whole farm at rest, % of one core (the master's process, the client and every worker, all threads):\n";
  out += fmt::format("{:<10}", "transport");
  for (unsigned w : workers) out += fmt::format(" {:>10}", fmt::format("{} worker{}", w, w == 1 ? "" : "s"));
  out += "\n";
  for (const auto& t : transports) {
    out += fmt::format("{:<10}", t);
    for (unsigned w : workers) {
      const BenchRow* found = nullptr;
      for (const auto& r : rows) {
        if (r.transport == t && r.workers == w && r.idle_cpu_percent) found = &r;
      }
      out += fmt::format(" {:>10}", found ? fmt::format("{:.1f} %", *found->idle_cpu_percent) : "-");
    }
    out += "\n";
  }
  return out;
}

}  // namespace palm::tools
