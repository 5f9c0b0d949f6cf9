#pragma once
// What client.cpp and client_bypass.cpp share, private to the Client.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "palm/servers/client.hpp"

namespace palm::servers {

namespace detail {

using Clock = std::chrono::steady_clock;

// The longest one wait lasts before a `cancel` flag is looked at
// (ClientOptions::cancel: "within about 100 ms").
inline constexpr std::chrono::milliseconds kCancelSlice{100};

}  // namespace detail

// What a job loop (run_master, run_bypass) counts, and when it last sent
// or received.
struct Client::JobState {
  explicit JobState(std::uint64_t wanted) : messages(wanted) {}

  std::uint64_t messages;     // replies awaited; 0: as many as sent
  std::uint64_t sent = 0;
  std::uint64_t got = 0;      // replies handed to the caller
  bool done_sending = false;  // make() said kDone
  detail::Clock::time_point last_progress = detail::Clock::now();

  bool finished() const noexcept { return messages > 0 ? got >= messages : done_sending && got >= sent; }
  // kTimeout's message: "job 'F'<via>: nothing sent or received for T ms;
  // G replies of M came<note>".
  std::string stalled(std::string_view function, std::string_view via, std::chrono::milliseconds timeout,
                      std::string_view note) const {
    return fmt::format("job '{}'{}: nothing sent or received for {} ms; {} replies of {} came{}", function, via,
                       timeout.count(), got, messages > 0 ? std::to_string(messages) : std::to_string(sent) + " sent",
                       note);
  }
};

}  // namespace palm::servers
