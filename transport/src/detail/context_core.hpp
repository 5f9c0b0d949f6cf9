#pragma once
// The shared part of a Context: the pool received frames land in and the
// transports. Endpoints hold it by shared_ptr, so the pool outlives every
// frame still queued in their rings (see context.hpp, "Lifetime").

#include <cstddef>
#include <memory>
#include <mutex>

#include "palm/core/pool.hpp"
#include "palm/core/region.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/endpoint.hpp"

namespace palm::transport::detail {

class ContextCore : public std::enable_shared_from_this<ContextCore> {
 public:
  ContextCore(MappedRegion region, BlockPool pool, SlotId slot, const ContextOptions& options,
              std::size_t max_message_bytes);
  // Detaches the slot (releasing what it still holds); unmaps the region.
  // Runs after shutdown(): the Context shut down before dropping its share.
  ~ContextCore();
  ContextCore(const ContextCore&) = delete;  // owns the mapping and threads
  ContextCore& operator=(const ContextCore&) = delete;

  Result<std::unique_ptr<Endpoint>> open(const EndpointSpec& spec);
  void shutdown() noexcept;
  // The ZeroMQ context (zmq/raw_context.hpp); starts the transport.
  Result<void*> zmq_context();

  // Immutable after construction; BlockPool members are thread-safe.
  BlockPool& pool() noexcept { return pool_; }
  SlotId slot() const noexcept { return slot_; }
  const ContextOptions& options() const noexcept { return options_; }
  std::size_t max_message_bytes() const noexcept { return max_message_bytes_; }

 private:
  MappedRegion region_;  // first: destroyed last
  BlockPool pool_;
  SlotId slot_;
  const ContextOptions options_;
  const std::size_t max_message_bytes_;

  std::mutex mutex_;                 // guards the members below
  // The transport behind tcp/ipc/inproc, started on first use.
  Result<Transport*> zmq_transport();

  std::unique_ptr<Transport> zmq_;   // created on the first zmq open
  bool shut_down_ = false;
};

}  // namespace palm::transport::detail
