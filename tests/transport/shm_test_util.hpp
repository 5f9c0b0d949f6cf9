#pragma once
// Helpers of the shm transport tests: numbered messages built in an shm
// endpoint's pool, and small host options.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "palm/transport/shm/host.hpp"

namespace palm::shm::test {

using namespace std::chrono_literals;

// A frame whose payload is `id` (8 bytes), with `function` and `topic`.
inline Result<Frame> numbered(BlockPool& pool, SlotId slot, std::uint64_t id, std::string_view function = "f",
                              std::string_view topic = {}) {
  std::byte payload[8];
  std::memcpy(payload, &id, sizeof id);
  MessageView m;
  m.function = function;
  m.payload = std::span<const std::byte>(payload, sizeof payload);
  return Frame::build(pool, slot, m, topic);
}
inline Result<Frame> numbered(ShmEndpoint& ep, std::uint64_t id, std::string_view function = "f",
                              std::string_view topic = {}) {
  return numbered(ep.pool(), ep.slot(), id, function, topic);
}

// The payload's id and the function of a received frame; nullopt if it is
// not one of numbered()'s.
struct Numbered {
  std::uint64_t id = 0;
  std::string function;
  std::string topic;
};
inline std::optional<Numbered> read_numbered(const Frame& f) {
  auto v = f.view();
  if (!v || v->message.payload.size() != 8) return std::nullopt;
  Numbered n;
  std::memcpy(&n.id, v->message.payload.data(), 8);
  n.function = std::string(v->message.function);
  n.topic = std::string(v->topic);
  return n;
}

// A small segment: a few MiB of blocks, short liveness period.
// Connect options naming the bound service to attach to.
inline ConnectOptions to(const char* service) {
  ConnectOptions o;
  o.service = service;
  return o;
}

inline HostOptions small_host(std::uint32_t capacity = 256) {
  HostOptions o;
  o.pool = PoolConfig{};
  o.pool.blocks = {4096, 256, 64, 16, 8, 4, 2, 2, 1, 1, 1, 1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  o.pool.largest_block = std::size_t{2} << 20;
  o.pool.process_slots = 16;
  o.pool.held_per_process = 8192;
  o.max_peers = 16;
  o.channel_capacity = capacity;
  o.liveness_period = 20ms;
  o.slow_subscriber_wait = 5ms;
  return o;
}

}  // namespace palm::shm::test
