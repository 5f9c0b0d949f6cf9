// `palm demo` and its hidden peer: see demo.hpp.
#include <memory>
#include <string>
#include <vector>

#include "command.hpp"
#include "demo.hpp"

namespace palm::tools {

void add_demo_commands(CLI::App& app, std::vector<Command>& out) {
  auto options = std::make_shared<DemoOptions>();
  auto* demo = app.add_subcommand(
      "demo", "A producer and a consumer process exchange frame handles through shared memory");
  demo->add_option("-n,--messages", options->messages, "Messages to move")->capture_default_str();
  demo->add_option("-s,--payload", options->payload, "Payload bytes per message")
      ->check(CLI::Range(std::size_t{8}, std::size_t{64} << 20))
      ->capture_default_str();
  demo->add_option("--show", options->show, "Messages each side prints")->capture_default_str();
  out.push_back({demo, [options] { return run_demo(*options); }});

  struct Peer {
    std::string role, segment;
  };
  auto peer = std::make_shared<Peer>();
  auto* peer_cmd = app.add_subcommand("demo-peer", "One side of `palm demo` (started by it)");
  peer_cmd->group("");  // hidden: palm starts it itself
  peer_cmd->add_option("--role", peer->role)->required()->check(CLI::IsMember({"producer", "consumer"}));
  peer_cmd->add_option("--segment", peer->segment)->required();
  peer_cmd->add_option("--messages", options->messages);
  peer_cmd->add_option("--payload", options->payload);
  peer_cmd->add_option("--show", options->show);
  out.push_back({peer_cmd, [options, peer] {
                   return peer->role == "producer" ? run_demo_producer(peer->segment, *options)
                                                   : run_demo_consumer(peer->segment, *options);
                 }});
}

}  // namespace palm::tools
