#pragma once
// One run of palm's local farm, shared by `palm farm` and `palm bench`:
// this process runs a Master (its cache and ports on tcp://HOST, chosen by
// the OS unless a base port is given, and a shared-memory segment
// "palm-farm-<pid>-<db port>"); N `palm worker` processes and one
// `palm farm-client` process (fork + exec of /proc/self/exe) attach to it
// over shared memory, ZeroMQ tcp or ZeroMQ ipc. The client (farm_client.hpp)
// streams messages through
// `_.<method>` (Client::job), each with fresh bytes (its sequence number
// first), checks every reply, then times sequential evals (round trips).
// Optionally it then measures the CPU the idle farm burns.
//
//   shm   workers and client on the master's segment
//   tcp   workers and client on ZeroMQ tcp (PALM_TRANSPORT=tcp)
//   ipc   the master binds its pull, pub and dispatcher on ipc:// sockets in
//         a temp dir (no segment); workers and client connect there with
//         ZeroMQ
//
// Workers' stdout and stderr go to a file each in the run's temp dir: the
// run reads their start and end lines (transport, messages served) and a
// failing worker's reason; the client's report comes through a pipe.
// Processes are ended by pid, the client first: SIGTERM, a bounded wait,
// then SIGKILL. Everything the run started is stopped and its segment
// removed on every way out, a failure or a cancel included.
#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tl/expected.hpp>

#include "palm/servers/log.hpp"
#include "palm/servers/bypass.hpp"
#include "palm/servers/master.hpp"
#include "palm/transport/context.hpp"
#include "payloads.hpp"

namespace palm::tools {

enum class FarmTransport { kShm, kTcp, kIpc };
std::string_view to_string(FarmTransport t) noexcept;
std::optional<FarmTransport> parse_farm_transport(std::string_view s) noexcept;

// What a run reports while it goes (for a progress bar): its phase and the
// fraction of that phase done. Called on the calling thread.
enum class FarmPhase { kStart, kWarmup, kJob, kEvals, kIdle };
using FarmProgress = std::function<void(FarmPhase phase, double fraction)>;

struct FarmRunOptions {
  unsigned workers = 1;
  std::uint64_t messages = 200000;  // measured: one job of this many
  std::uint64_t warmup = 0;         // a job of this many first, checked but not timed
  int evals = 1000;                 // sequential evals timed after the job
  std::size_t payload = 64;         // >= kSeqDigits
  std::string method = "echo";      // echo, upper, reverse or sha256
  FarmTransport transport = FarmTransport::kShm;
  // The client feeds the workers directly (servers/bypass.hpp); shm only.
  // The run fails if the bypass did not carry every message.
  bool bypass = false;
  std::uint32_t credits = 64;
  servers::LogLevel log_level = servers::LogLevel::kWarning;
  // Where the master binds: tcp://HOST:PORT for its cache, and PORT+1 ...
  // PORT+5 for pull, pub, worker push, worker pull and the dispatcher (the
  // ones on tcp); port 0: every port chosen by the OS.
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  // Idle cost: after the evals, wait `idle_settle`, then measure the CPU
  // of every thread of this process, of the client and of every worker
  // over `idle` (0: not measured).
  std::chrono::milliseconds idle{0};
  std::chrono::milliseconds idle_settle{500};
  // Set by the caller (release) to stop the run; read with acquire.
  const std::atomic<bool>* cancel = nullptr;
  FarmProgress progress;  // optional
};

struct FarmWorkerReport {
  std::string name;
  std::string transport = "?";              // from its start line
  std::optional<std::uint64_t> messages;    // from its end line
};

struct FarmRunResult {
  std::uint64_t messages = 0;  // of the measured job, every reply checked
  double seconds = 0;          // the measured job
  double msgs_per_s = 0;
  double mb_per_s = 0;          // of payload, 10^6 bytes
  std::vector<double> trips_us;  // the evals' round trips, sorted
  std::uint64_t checked_ok = 0;  // replies of the measured job checked right
  bool traced = true;            // replies traced back to their message (not sha256)
  std::vector<FarmWorkerReport> workers;
  std::string client_push, client_sub;  // the client's transports: "shm", "tcp", "ipc"
  long client_pid = 0;                  // its process (`palm farm-client`), ended
  servers::DispatchStats dispatch;
  servers::BypassStats bypass;  // the client's side of the bypass (zero without)
  std::string segment;  // the master's segment, removed; "" on ipc
  // % of one core: CPU time of this process (every thread), the client and
  // every worker over the idle window, per second of it. Empty if not asked.
  std::optional<double> idle_cpu_percent;
};

// Pools sized for the payload: the farm's Contexts and segment hold the
// client's window of messages several times over (its queue, the master's
// routes and in-flight table, the replies), within a memory budget; the
// client's window shrinks when big blocks are few. Workers on ZeroMQ
// receive into their own Context's default pool: their credits are cut to
// what its class holds.
struct Sizing {
  std::size_t block = 256;        // the size class of one message
  std::uint32_t blocks = 0;       // its count in the farm's pools
  std::uint32_t window = 256;     // the client's messages in flight
  std::uint32_t zmq_credits = 0;  // a worker's credits at most on tcp/ipc
};
Sizing size_for(std::size_t payload);
// A Context's options with its pools (ZeroMQ's and its segments') sized so:
// the master's and the client's alike.
transport::ContextOptions context_options_for(const Sizing& sizing);

// Runs the farm once. The error is one line (without the command's name);
// "interrupted" when `cancel` was set.
[[nodiscard]] tl::expected<FarmRunResult, std::string> run_farm_once(const FarmRunOptions& options);

// The exact percentile `q` (0..1) of sorted samples: the sample at
// floor(q * n), clamped (p50 of 1000 samples is sample 500).
double percentile(const std::vector<double>& sorted, double q);

// --host and --port (FarmRunOptions::host, port) for `palm farm` and
// `palm bench`.
void add_farm_address_flags(CLI::App& cmd, std::string& host, std::uint16_t& port);

// "1.23 M", "45 k", "678": a rate for people.
std::string format_rate(double per_s);
// "64 B", "4 KiB", "1 MiB": a size for people (exact multiples only).
std::string format_bytes(std::size_t n);

}  // namespace palm::tools
