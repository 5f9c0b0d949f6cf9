#pragma once
// Test peers: roles that a multi-process test runs in a separate process.
//
// A test binary registers roles with PALM_TEST_PEER(name) and starts them
// with spawn_peer(): fork + exec of /proc/self/exe with `--palm-peer=<name>`,
// so every peer is a fresh process image (no state inherited from gtest, and
// sanitizers see an ordinary exec). test_main.cpp dispatches the role.
//
// Children are tracked by pid. A Child that is destroyed while still running
// is SIGKILLed and reaped: a failing test ends exactly the processes it
// started, never others.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace palm::test {

using PeerMain = std::function<int(const std::vector<std::string>& args)>;

// Registers a role; used through PALM_TEST_PEER.
bool register_peer(const char* name, PeerMain fn);

// Runs the role named in argv if argv[1] is --palm-peer=NAME; returns its exit
// code, or nullopt when this is not a peer invocation.
std::optional<int> run_peer_if_requested(int argc, char** argv);

class Child {
 public:
  Child() = default;
  explicit Child(pid_t pid) : pid_(pid) {}
  Child(Child&& other) noexcept;
  Child& operator=(Child&& other) noexcept;
  Child(const Child&) = delete;  // one owner reaps the pid
  Child& operator=(const Child&) = delete;
  ~Child();

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && !status_; }

  // Waits up to `timeout` for the child to exit. Returns its wait status
  // (as from waitpid), or nullopt on timeout (the child keeps running).
  std::optional<int> wait_for(std::chrono::milliseconds timeout);
  // Exit code if it exited normally, -signal if killed, nullopt on timeout.
  std::optional<int> exit_code_within(std::chrono::milliseconds timeout);
  // Sends `sig` (only to this pid).
  void signal(int sig);
  // SIGKILL and reap.
  void kill_and_reap();

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// Starts role `name` with `args` in a new process. stdout/stderr are inherited.
Child spawn_peer(const std::string& name, const std::vector<std::string>& args = {});

// A pipe whose ends survive exec, so a peer started with spawn_peer can be
// given their numbers in its arguments (readiness signals, reports).
class Pipe {
 public:
  Pipe();
  Pipe(const Pipe&) = delete;  // one owner closes
  Pipe& operator=(const Pipe&) = delete;
  ~Pipe();
  int r = -1;  // read end
  int w = -1;  // write end
  // A line written to the pipe, within `timeout`; nullopt on timeout or EOF.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout) const;
};

// The same on a bare descriptor (a peer given a pipe end's number): a line
// read from `fd` within `timeout` (nullopt on timeout or EOF), and a line
// written whole (false if the write failed).
std::optional<std::string> read_line(int fd, std::chrono::milliseconds timeout);
bool write_line(int fd, const std::string& line);

// A name unique to this test process, for segments and sockets:
// "palm-test-<pid>-<counter>-<tag>".
std::string unique_name(const std::string& tag);

// Removes a POSIX shared-memory object by name when it goes out of scope,
// whether the test passed or not.
class ShmGuard {
 public:
  explicit ShmGuard(std::string name) : name_(std::move(name)) {}
  ShmGuard(const ShmGuard&) = delete;  // one owner unlinks
  ShmGuard& operator=(const ShmGuard&) = delete;
  ~ShmGuard();
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

}  // namespace palm::test

#define PALM_TEST_PEER_CAT2(a, b) a##b
#define PALM_TEST_PEER_CAT(a, b) PALM_TEST_PEER_CAT2(a, b)
// PALM_TEST_PEER(role) { ...; return exit_code; }  — `args` holds the
// arguments given to spawn_peer.
#define PALM_TEST_PEER(role)                                                  \
  static int palm_peer_##role(const std::vector<std::string>& args);          \
  [[maybe_unused]] static const bool PALM_TEST_PEER_CAT(palm_peer_reg_, role) = \
      ::palm::test::register_peer(#role, &palm_peer_##role);                  \
  static int palm_peer_##role([[maybe_unused]] const std::vector<std::string>& args)
