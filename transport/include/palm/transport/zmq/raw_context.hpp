#pragma once
// The ZeroMQ context behind a Context's tcp/ipc/inproc endpoints, for raw
// libzmq sockets that must reach its inproc:// endpoints (tests, interop
// tools). Servers never need it.

#include "palm/core/error.hpp"
#include "palm/transport/context.hpp"

namespace palm::transport {

// Starts the ZeroMQ transport if it is not running yet. A raw socket made on
// it must be closed before the Context shuts down: zmq_ctx_term waits for
// every socket. kClosed after shutdown. Thread-safe.
[[nodiscard]] Result<void*> zmq_context_of(Context& context);

}  // namespace palm::transport
