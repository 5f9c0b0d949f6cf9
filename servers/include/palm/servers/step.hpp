#pragma once
// pylm's rules for the step a message is at (PROTOCOL.md "The message"), and
// palm's error reasons for when a message cannot be served.
//
// The step: if `function` has a space, function.split()[stage]; else all of
// `function`, whatever `stage` is. Server, Pipeline and Sink split the step
// at '.' into exactly `server` and `method` and check `server` is their
// name; a Worker runs the second '.'-separated field and ignores the first.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "palm/core/error.hpp"

namespace palm::servers {

// The step of `function` at `stage`. kOutOfRange for a stage outside the
// space-separated list (pylm's IndexError, which kills its thread); the
// message names the stage and the list.
[[nodiscard]] Result<std::string_view> current_step(std::string_view function,
                                                    std::int64_t stage);

// Server/Pipeline/Sink: "server.method", exactly one '.'. kMalformed names
// the step otherwise.
struct ServerStep {
  std::string_view server;
  std::string_view method;
};
[[nodiscard]] Result<ServerStep> split_server_step(std::string_view step);

// Worker: the second '.'-separated field ("_.foo" -> "foo", "a.b.c" -> "b").
// kMalformed without a '.'.
[[nodiscard]] Result<std::string_view> worker_method(std::string_view step);

// How many steps `function` has (1 without spaces).
std::size_t step_count(std::string_view function) noexcept;

// The payload a pylm peer expects when a message could not be served.
inline constexpr std::string_view kFailurePayload = "0";

}  // namespace palm::servers
