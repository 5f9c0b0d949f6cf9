#pragma once
// A Master for in-process tests: everything on 127.0.0.1, ports picked by
// the system, a fresh name.
#include <cstdint>

#include "palm/servers/master.hpp"
#include "peer.hpp"

namespace palm::servers::test {

// `messages`: the master's limit (0: none); `bypass`: offer the master
// bypass (bypass.hpp).
inline MasterConfig master_config(std::uint64_t messages = 0, bool bypass = false) {
  MasterConfig cfg;
  cfg.server.name = palm::test::unique_name("master");
  cfg.server.db_address = "tcp://127.0.0.1:*";
  cfg.server.log_level = LogLevel::kWarning;
  cfg.pull_address = "tcp://127.0.0.1:*";
  cfg.pub_address = "tcp://127.0.0.1:*";
  cfg.worker_pull_address = "tcp://127.0.0.1:*";
  cfg.worker_push_address = "tcp://127.0.0.1:*";
  cfg.messages = messages;
  cfg.bypass = bypass;
  return cfg;
}

}  // namespace palm::servers::test
