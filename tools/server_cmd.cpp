// `palm server`: pylm's Server (FEATURES.md section 1; example "single") as a
// process: the built-in methods (echo upper reverse sha256 sleep fail) and
// the examples' `foo`, b"you sent me " + payload (tests/interop/
// pylm_master.py --server). Serves until SIGINT/SIGTERM (exit 130, a clean
// stop: drained, the segment removed) or --messages (exit 0); an error is
// one line `palm server: <reason>` on stderr and exit 1.
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "command.hpp"
#include "palm/servers/method.hpp"
#include "palm/servers/server.hpp"
#include "palm/transport/context.hpp"
#include "serving.hpp"
#include "signals.hpp"

namespace palm::tools {
namespace {

constexpr std::string_view kCommand = "server";

int run_server(const ServeFlags& f) {
  // Before any thread starts: every thread inherits the mask (signals.hpp).
  if (!block_stop_signals()) return fail(kCommand, "cannot block SIGINT/SIGTERM");
  auto options = server_options(f);
  if (!options) return fail(kCommand, options.error().message);
  servers::ServerConfig cfg;
  cfg.server = std::move(*options);
  cfg.pull_address = f.pull;
  cfg.pub_address = f.pub;
  cfg.pipelined = f.pipelined;
  cfg.messages = f.messages;

  auto ctx = transport::Context::create();
  if (!ctx) return fail(kCommand, ctx.error().describe());
  int code = kExitFailure;
  {
    servers::Server server(*ctx, std::move(cfg));
    servers::add_builtin_methods(server.methods());
    server.methods().on("foo", [](const servers::Call& call) {
      return servers::Output("you sent me " + std::string(call.payload_text()));
    });
    code = serve(server, kCommand, f.messages, [&server] {
      std::string out;
      for (std::size_t i = 0; i < static_cast<std::size_t>(servers::Failure::kCount); ++i) {
        const auto kind = static_cast<servers::Failure>(i);
        std::string key = servers::to_string(kind);
        for (char& c : key) c = c == ' ' ? '_' : c;
        out += fmt::format(" {}={}", key, server.failures().count(kind));
      }
      return out;
    });
  }
  ctx->shutdown();  // removes the segment before the process ends
  return code;
}

}  // namespace

void add_server_commands(CLI::App& app, std::vector<Command>& out) {
  auto f = std::make_shared<ServeFlags>();
  auto* cmd = app.add_subcommand(
      "server",
      "pylm's Server: runs \"NAME.method\" for clients (echo upper reverse sha256 sleep fail, and foo: "
      "\"you sent me \" + payload); the cache on --db");
  add_serve_flags(*cmd, *f, "Stop after this many messages (0: no limit)");
  out.push_back({cmd, [f] { return run_server(*f); }});
}

}  // namespace palm::tools
