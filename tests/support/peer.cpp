#include "peer.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <thread>
#include <utility>

namespace palm::test {
namespace {

std::map<std::string, PeerMain>& registry() {
  static std::map<std::string, PeerMain> roles;
  return roles;
}

}  // namespace

bool register_peer(const char* name, PeerMain fn) {
  registry().emplace(name, std::move(fn));
  return true;
}

std::optional<int> run_peer_if_requested(int argc, char** argv) {
  static constexpr std::string_view kFlag = "--palm-peer=";
  if (argc < 2 || std::string_view(argv[1]).substr(0, kFlag.size()) != kFlag) {
    return std::nullopt;
  }
  const std::string name(std::string_view(argv[1]).substr(kFlag.size()));
  auto it = registry().find(name);
  if (it == registry().end()) {
    std::fprintf(stderr, "test peer: no role named '%s'\n", name.c_str());
    return 127;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  return it->second(args);
}

Child::Child(Child&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), status_(std::exchange(other.status_, std::nullopt)) {}

Child& Child::operator=(Child&& other) noexcept {
  if (this != &other) {
    if (running()) kill_and_reap();
    pid_ = std::exchange(other.pid_, -1);
    status_ = std::exchange(other.status_, std::nullopt);
  }
  return *this;
}

Child::~Child() {
  if (running()) kill_and_reap();
}

std::optional<int> Child::wait_for(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return std::nullopt;
  if (status_) return status_;
  // Poll with a short sleep: waitpid has no timeout form, and a pidfd would
  // tie the tests to a kernel feature for no gain here.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = st;
      return status_;
    }
    if (r < 0 && errno != EINTR) return std::nullopt;
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

std::optional<int> Child::exit_code_within(std::chrono::milliseconds timeout) {
  auto st = wait_for(timeout);
  if (!st) return std::nullopt;
  if (WIFEXITED(*st)) return WEXITSTATUS(*st);
  if (WIFSIGNALED(*st)) return -WTERMSIG(*st);
  return std::nullopt;
}

void Child::signal(int sig) {
  if (running()) ::kill(pid_, sig);
}

void Child::kill_and_reap() {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
  }
  status_ = st;
}

Child spawn_peer(const std::string& name, const std::vector<std::string>& args) {
  std::vector<std::string> argv_s;
  argv_s.push_back("palm-test-peer");
  argv_s.push_back("--palm-peer=" + name);
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);

  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("fork");
    std::abort();
  }
  if (pid == 0) {
    ::execv("/proc/self/exe", argv.data());
    std::perror("execv /proc/self/exe");
    ::_exit(127);
  }
  return Child(pid);
}

Pipe::Pipe() {
  int fds[2];
  if (::pipe(fds) == 0) {
    r = fds[0];
    w = fds[1];
  }
}

Pipe::~Pipe() {
  if (r >= 0) ::close(r);
  if (w >= 0) ::close(w);
}

std::optional<std::string> Pipe::read_line(std::chrono::milliseconds timeout) const {
  return test::read_line(r, timeout);
}

std::optional<std::string> read_line(int fd, std::chrono::milliseconds timeout) {
  std::string s;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) != 1) continue;
    char c = 0;
    if (::read(fd, &c, 1) != 1) return std::nullopt;
    if (c == '\n') return s;
    s.push_back(c);
  }
  return std::nullopt;
}

bool write_line(int fd, const std::string& line) {
  const std::string s = line + "\n";
  std::size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

std::string unique_name(const std::string& tag) {
  static std::atomic<unsigned> counter{0};
  // relaxed: only uniqueness matters, not order.
  return "palm-test-" + std::to_string(::getpid()) + "-" +
         std::to_string(counter.fetch_add(1, std::memory_order_relaxed)) + "-" + tag;
}

ShmGuard::~ShmGuard() {
  if (!name_.empty()) ::shm_unlink(("/" + name_).c_str());
}

}  // namespace palm::test
