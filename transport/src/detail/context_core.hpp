#pragma once
// The shared part of a Context: the pool received frames land in and the
// transports. Endpoints hold it by shared_ptr, so the pool outlives every
// frame still queued in their rings (see context.hpp, "Lifetime").

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "palm/core/pool.hpp"
#include "palm/core/region.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/endpoint.hpp"
#include "palm/transport/shm/host.hpp"

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
  // shm://SEGMENT/SERVICE: binds on this context's host of SEGMENT (created
  // on the first bind), or attaches to another process's segment.
  Result<std::unique_ptr<Endpoint>> open_shm(const EndpointSpec& spec, const Address& address);

  std::unique_ptr<Transport> zmq_;   // created on the first zmq open
  // The segments this context serves, by name: created on the first bind to
  // shm://NAME/..., shut down (and removed) with the context.
  std::map<std::string, shm::Host> shm_hosts_;
  bool shut_down_ = false;
};

}  // namespace palm::transport::detail
