// The `palm` command line.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

#include "demo.hpp"

int main(int argc, char** argv) {
  CLI::App app{"palm: clusters of micro-services over shared memory and ZeroMQ"};
  app.require_subcommand(1);

  palm::tools::DemoOptions demo;
  auto* demo_cmd = app.add_subcommand(
      "demo", "A producer and a consumer process exchange frame handles through shared memory");
  demo_cmd->add_option("-n,--messages", demo.messages, "Messages to move")->capture_default_str();
  demo_cmd->add_option("-s,--payload", demo.payload, "Payload bytes per message")
      ->check(CLI::Range(std::size_t{8}, std::size_t{64} << 20))
      ->capture_default_str();
  demo_cmd->add_option("--show", demo.show, "Messages each side prints")->capture_default_str();

  std::string role, segment;
  auto* peer_cmd = app.add_subcommand("demo-peer", "One side of `palm demo` (started by it)");
  peer_cmd->group("");  // hidden: palm starts it itself
  peer_cmd->add_option("--role", role)->required()->check(CLI::IsMember({"producer", "consumer"}));
  peer_cmd->add_option("--segment", segment)->required();
  peer_cmd->add_option("--messages", demo.messages);
  peer_cmd->add_option("--payload", demo.payload);
  peer_cmd->add_option("--show", demo.show);

  CLI11_PARSE(app, argc, argv);
  if (*demo_cmd) return palm::tools::run_demo(demo);
  if (*peer_cmd) {
    return role == "producer" ? palm::tools::run_demo_producer(segment, demo)
                              : palm::tools::run_demo_consumer(segment, demo);
  }
  return 2;
}
