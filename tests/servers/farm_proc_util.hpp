#pragma once
// Helpers of the farm's process tests (farm_proc_test.cpp,
// farm_interop_proc_test.cpp): the real `palm` binary and the Python pylm
// peers started with posix_spawn, stdout/stderr to files, ended by their
// pid only (palm::test::Child), every wait bounded. `palm server` and
// `palm master` bind port 0 ("tcp://127.0.0.1:*") and the test reads the
// ports in effect from their start lines: no port race.
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "palm/servers/server_template.hpp"
#include "peer.hpp"

extern char** environ;

namespace palm::servers::farm {

using namespace std::chrono_literals;
using palm::test::Child;
using Env = std::map<std::string, std::string>;

inline const std::string kAny = "tcp://127.0.0.1:*";

inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t end = std::min(text.find('\n', at), text.size());
    out.push_back(text.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

// The first line of file `path` containing `needle`, polled every 20 ms
// for at most `timeout`; nullopt if none came.
inline std::optional<std::string> wait_line(const std::string& path, std::string_view needle,
                                            std::chrono::milliseconds timeout = 15s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    for (const auto& line : lines_of(read_file(path))) {
      if (line.find(needle) != std::string::npos) return line;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(20ms);
  }
}

// `n` distinct free loopback ports (bound together, then released: another
// process could take one in between; unlikely on a test machine).
inline std::vector<int> free_ports(std::size_t n) {
  std::vector<int> fds, ports;
  for (std::size_t i = 0; i < n; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0) break;
    fds.push_back(fd);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      break;
    }
    ports.push_back(ntohs(a.sin_port));
  }
  for (int fd : fds) ::close(fd);
  EXPECT_EQ(ports.size(), n) << "could not find free ports";
  return ports;
}

inline std::string loopback(int port) { return "tcp://127.0.0.1:" + std::to_string(port); }

// Files of one test's children, removed at the end.
class TempFiles {
 public:
  std::string path(const std::string& tag) {
    paths_.push_back("/tmp/" + palm::test::unique_name(tag) + ".txt");
    return paths_.back();
  }
  TempFiles() = default;
  TempFiles(const TempFiles&) = delete;  // one owner unlinks
  TempFiles& operator=(const TempFiles&) = delete;
  ~TempFiles() {
    for (const auto& p : paths_) ::unlink(p.c_str());
  }

 private:
  std::vector<std::string> paths_;
};

// A started process and where its output goes.
struct Proc {
  Child child;
  std::string out, err;  // paths
  std::string output() const { return read_file(out); }
  std::string errors() const { return read_file(err); }
};

// Starts argv with this environment plus `env` (replacing the same names).
inline Proc spawn(TempFiles& files, std::vector<std::string> argv_s, const Env& env = {}) {
  Proc p;
  p.out = files.path("out");
  p.err = files.path("err");
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s;
  for (const auto& [k, v] : env) env_s.push_back(k + "=" + v);
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    if (env.count(std::string(entry.substr(0, entry.find('=')))) == 0) env_s.emplace_back(entry);
  }
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, p.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, p.err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  EXPECT_EQ(rc, 0) << "cannot start " << argv_s[0];
  if (rc == 0) p.child = Child(pid);
  return p;
}

inline Proc spawn_palm(TempFiles& files, std::vector<std::string> args, const Env& env = {}) {
  args.insert(args.begin(), PALM_BINARY);
  return spawn(files, std::move(args), env);
}

inline Proc spawn_python(TempFiles& files, const std::string& script, std::vector<std::string> args) {
  args.insert(args.begin(), {"/usr/bin/python3", std::string(PALM_SOURCE_DIR) + "/tests/interop/" + script});
  return spawn(files, std::move(args), {{"PALM_PB2_DIR", PALM_PB2_DIR}});
}

struct Finished {
  std::optional<int> exit_code;  // nullopt: killed at the deadline
  std::string out, err;
  std::vector<std::string> lines() const { return lines_of(out); }
};

// Runs a process to its end, bounded by `deadline` (then killed).
inline Finished finish(Proc p, std::chrono::milliseconds deadline = 30s) {
  Finished r;
  r.exit_code = p.child.exit_code_within(deadline);
  if (!r.exit_code) p.child.kill_and_reap();
  r.out = p.output();
  r.err = p.errors();
  return r;
}

inline Finished run_palm(TempFiles& files, std::vector<std::string> args, const Env& env = {},
                    std::chrono::milliseconds deadline = 30s) {
  return finish(spawn_palm(files, std::move(args), env), deadline);
}

inline Finished run_python(TempFiles& files, const std::string& script, std::vector<std::string> args,
                      std::chrono::milliseconds deadline = 30s) {
  return finish(spawn_python(files, script, std::move(args)), deadline);
}

// `palm server` or `palm master`, up: its cache address and segment read
// from its start lines; the segment removed at the end whatever happens.
struct Served {
  Proc proc;
  std::string name, db;
  std::unique_ptr<palm::test::ShmGuard> segment;
};

// Starts `palm <kind> --name NAME --db * --pull * --pub * [more]` (a master
// with --wpush * --wpull * too) and waits for "serving until".
inline Served start_served(TempFiles& files, const std::string& kind, const std::string& name,
                           std::vector<std::string> more = {}) {
  std::vector<std::string> args = {kind, "--name", name, "--db", kAny, "--pull", kAny, "--pub", kAny};
  if (kind == "master") args.insert(args.end(), {"--wpush", kAny, "--wpull", kAny});
  args.insert(args.end(), more.begin(), more.end());
  Served s{spawn_palm(files, args), name, {}, nullptr};
  const auto ready = wait_line(s.proc.out, "serving until");
  const auto cache = wait_line(s.proc.out, "cache REP bound on ", 1s);
  EXPECT_TRUE(ready && cache) << "palm " << kind << " did not start:\n"
                              << s.proc.output() << s.proc.errors();
  if (cache) {
    s.db = cache->substr(cache->find("tcp://"));
    s.segment = std::make_unique<palm::test::ShmGuard>(segment_name(name, s.db));
  }
  return s;
}

// The `key=N` token of `line`; nullopt if absent.
inline std::optional<std::uint64_t> counter(const std::string& line, const std::string& key) {
  const std::string token = " " + key + "=";
  const auto at = line.find(token);
  if (at == std::string::npos) return std::nullopt;
  return std::stoull(line.substr(at + token.size()));
}

inline bool segment_exists(const std::string& name) {
  return ::access(("/dev/shm/" + name).c_str(), F_OK) == 0;
}

}  // namespace palm::servers::farm
