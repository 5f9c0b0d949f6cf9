#pragma once
// What client.cpp and client_bypass.cpp share, private to the Client.

#include <chrono>

namespace palm::servers::detail {

using Clock = std::chrono::steady_clock;

// The longest one wait lasts before a `cancel` flag is looked at
// (ClientOptions::cancel: "within about 100 ms").
inline constexpr std::chrono::milliseconds kCancelSlice{100};

}  // namespace palm::servers::detail
