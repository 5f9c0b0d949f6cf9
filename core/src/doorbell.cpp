#include "palm/core/doorbell.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <new>

#include "palm/core/assert.hpp"

namespace palm {
namespace detail {
namespace {

// The one wrapper of the futex syscall. Shared (no FUTEX_PRIVATE_FLAG): the
// word may live in a mapping shared between processes, and the kernel then
// keys it by (inode, offset) instead of (mm, address). Returns 0 or an errno.
int futex(std::uint32_t* word, int op, std::uint32_t val, const timespec* timeout,
          std::uint32_t val3) noexcept {
  const long rc = ::syscall(SYS_futex, word, op, val, timeout, nullptr, val3);
  return rc < 0 ? errno : 0;
}

}  // namespace

FutexWait futex_wait_until(std::uint32_t* word, std::uint32_t expected,
                           std::chrono::steady_clock::time_point deadline) noexcept {
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time (steady_clock's
  // clock on Linux), so a retry after EINTR needs no recomputation.
  timespec abs{};
  const timespec* timeout = nullptr;
  if (deadline != std::chrono::steady_clock::time_point::max()) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        deadline.time_since_epoch())
                        .count();
    if (ns <= 0) return FutexWait::kTimedOut;
    abs.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    abs.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    timeout = &abs;
  }
  const int err = futex(word, FUTEX_WAIT_BITSET, expected, timeout, FUTEX_BITSET_MATCH_ANY);
  switch (err) {
    case 0: return FutexWait::kWoken;
    case EAGAIN: return FutexWait::kChanged;
    case EINTR: return FutexWait::kInterrupted;
    case ETIMEDOUT: return FutexWait::kTimedOut;
    default:
      // EFAULT, EINVAL, ENOSYS: a bad address or a kernel without futexes,
      // palm's bug, not a peer's.
      PALM_ASSERT(err == 0 && "FUTEX_WAIT_BITSET failed");
      return FutexWait::kWoken;
  }
}

void futex_wake(std::uint32_t* word, std::uint32_t count) noexcept {
  const int n = count > static_cast<std::uint32_t>(INT_MAX) ? INT_MAX : static_cast<int>(count);
  const int err = futex(word, FUTEX_WAKE, static_cast<std::uint32_t>(n), nullptr, 0);
  PALM_ASSERT(err == 0 && "FUTEX_WAKE failed");
}

}  // namespace detail

namespace {
// The integer in environment variable `name` if it is one from 0 to `max`,
// else `fallback` (ignored, as documented: a tuning knob never fails).
long env_tunable(const char* name, long max, long fallback) noexcept {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return fallback;
  char* end = nullptr;
  const long n = std::strtol(env, &end, 10);
  return *end != '\0' || n < 0 || n > max ? fallback : n;
}
}  // namespace

std::chrono::nanoseconds Doorbell::default_spin() noexcept {
  // Function-local statics: initialized once, thread-safely, on first use.
  static const std::chrono::nanoseconds spin = std::chrono::microseconds(env_tunable(
      "PALM_SPIN_US", 1000, std::chrono::duration_cast<std::chrono::microseconds>(kDefaultSpin).count()));
  return spin;
}

unsigned Doorbell::default_spin_rounds() noexcept {
  static const auto rounds = static_cast<unsigned>(env_tunable("PALM_SPIN_ROUNDS", 4096, kDefaultSpinRounds));
  return rounds;
}

const char* to_string(WaitResult result) noexcept {
  switch (result) {
    case WaitResult::kReady: return "ready";
    case WaitResult::kTimeout: return "timeout";
    case WaitResult::kShutdown: return "shutdown";
  }
  return "unknown wait result";
}

Doorbell* Doorbell::create_at(void* mem) noexcept {
  PALM_ASSERT(mem != nullptr);
  PALM_ASSERT(reinterpret_cast<std::uintptr_t>(mem) % alignof(Doorbell) == 0);
  return ::new (mem) Doorbell();
}

Doorbell* Doorbell::attach_at(void* mem) noexcept {
  PALM_ASSERT(mem != nullptr);
  PALM_ASSERT(reinterpret_cast<std::uintptr_t>(mem) % alignof(Doorbell) == 0);
  // Formatted by create_at (here or in another process) or zero-filled: both
  // are a valid doorbell. launder: the object was not created through a
  // pointer this compiler can see.
  return std::launder(static_cast<Doorbell*>(mem));
}

void Doorbell::shutdown() noexcept {
  // (S1) Raise the flag before the bump, so a waiter woken by (or noticing)
  // the bump at (W3) reads the flag set. seq_cst like the rest of the pair.
  ref(shutdown_).store(1, std::memory_order_seq_cst);
  // (R1) as in ring(): every waiter past (W3) is queued in the kernel or sees
  // the bump. Wake all unconditionally: shutdown is rare.
  ref(seq_).fetch_add(1, std::memory_order_seq_cst);
  detail::futex_wake(&seq_, kWakeAll);
}

void Doorbell::wake(std::uint32_t max_woken) noexcept {
  detail::futex_wake(&seq_, max_woken == 0 ? 1 : max_woken);
}

}  // namespace palm
