#pragma once
// `palm bench`'s results and their reports: the table on stdout, the CSV
// (--csv) and the SVG chart (--plot). The runs themselves are in
// bench_cmd.cpp (farm_run.hpp does each).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace palm::tools {

// One case: a transport, a payload, a worker count; medians over its runs.
struct BenchRow {
  // "shm", "ipc", "tcp", and "shm-bypass": the master bypass
  // (servers/bypass.hpp), its client feeding the workers directly.
  std::string transport;
  std::size_t payload = 0;
  unsigned workers = 0;
  std::uint64_t messages = 0;  // of each run's measured job
  unsigned runs = 0;
  double msgs_per_s = 0, mb_per_s = 0;
  double p50_us = 0, p99_us = 0, p999_us = 0;
  // % of one core, the whole farm at rest; measured for one payload only.
  std::optional<double> idle_cpu_percent;
};

// The header of --csv, exactly.
inline constexpr const char* kBenchCsvHeader =
    "transport,payload_bytes,workers,messages,msgs_per_s,mb_per_s,p50_us,p99_us,p999_us,runs";

// The header line and one line per row.
std::string bench_csv(const std::vector<BenchRow>& rows);

// The table for people: one line per row, with the ratios of `base`'s rows
// (the first transport) to each other transport's same case; then the idle
// CPU per transport and worker count, if measured.
std::string bench_table(const std::vector<BenchRow>& rows, const std::vector<std::string>& transports);

// An SVG chart: messages/s and round trips (p50, p99) against the payload,
// one line per transport, a panel per worker count.
std::string bench_svg(const std::vector<BenchRow>& rows, const std::vector<std::string>& transports,
                      const std::string& title, const std::string& subtitle);

// The median of `v` (the mean of the middle two for an even count); 0 if empty.
double median(std::vector<double> v);

}  // namespace palm::tools
