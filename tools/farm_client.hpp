#pragma once
// The farm's client in a process of its own: `palm farm-client`, started by
// run_farm_once (fork + exec, as the workers are) once every worker joined.
// It connects to the farm's master, streams the warm-up and the measured
// job (fresh bytes in every message, every reply checked), times the evals,
// and tells the farm what it measured in lines on file descriptor
// kFarmReportFd, a pipe (its stdout and stderr are the farm's, for its log
// lines):
//
//   transports PUSH SUB           its Client's push and sub schemes
//   progress PHASE FRACTION       with --progress: FarmPhase as a number
//   job SECONDS CHECKED_OK TRACED the measured job (TRACED: 1 or 0)
//   trips US US ...               the evals' round trips, in µs
//   bypass DISPATCHED RESULTS DUPLICATES REDISPATCHED WORKERS
//   done                          all of the above were sent
//   error REASON                  instead of what is left: why it failed (exit 1)
//
// After `done` it stays connected, idle, until its stdin closes (or
// SIGINT/SIGTERM): the farm measures the idle cost of every process, the
// client's too, then stops it first. Exit codes: 0, 1 (an error line sent),
// 2 (no report pipe: not started by the farm), 130 (a signal).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "farm_run.hpp"

namespace palm::tools {

// The client's report pipe, as the farm hands it over.
inline constexpr int kFarmReportFd = 3;

struct FarmClientOptions {
  std::string server;  // the master's name, checked against its cache
  std::string db;      // the master's cache address
  // ipc: the master's pull and pub (the cache is asked nothing else).
  std::string push, sub;
  FarmTransport transport = FarmTransport::kShm;
  std::string method = "echo";
  std::size_t payload = 64;
  std::uint64_t warmup = 0;
  std::uint64_t messages = 0;
  int evals = 0;
  bool bypass = false;
  bool progress = false;
  std::string log_level = "WARNING";
};

// The options as `palm farm-client` flags (after the command's name).
std::vector<std::string> farm_client_args(const FarmClientOptions& o);

// What the farm reads from a client's lines.
struct FarmClientReport {
  std::string push = "?", sub = "?";
  double seconds = 0;
  std::uint64_t checked_ok = 0;
  bool traced = true;
  std::vector<double> trips_us;
  servers::BypassStats bypass;
  bool done = false;
  std::optional<std::string> error;
};

// Reads one line (without its newline) into `report`; a progress line's
// phase and fraction into `phase`/`fraction` (true: it was one). False for
// a line it does not know (ignored by the farm, so a newer client's extra
// lines do not break an older farm).
bool read_farm_client_line(std::string_view line, FarmClientReport& report, std::optional<FarmPhase>& phase,
                           double& fraction);

}  // namespace palm::tools
