// `palm client`: pylm's example launcher (FEATURES.md section 2): sends N
// messages to a server and prints each reply on its own line; or asks its
// cache (--set / --get / --delete). Errors: one line on stderr, exit 1;
// SIGINT / SIGTERM: exit 130 (within about 300 ms).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "command.hpp"
#include "signals.hpp"
#include "palm/servers/client.hpp"
#include "palm/servers/log.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/shm/host_identity.hpp"

namespace palm::tools {

namespace {

struct ClientCmdOptions {
  std::string server, db, push, sub, session, transport, cache, log_level = "WARNING";
  std::vector<std::string> functions;
  std::string payload = " a message";
  std::uint64_t messages = 10;
  std::int64_t timeout_ms = 10000;
  std::int64_t settle_ms = 500;
  bool job = false;
  bool numbered = false;
  std::optional<std::string> set, key, get, del;
};

// Set on SIGINT / SIGTERM; the client's waits look at it (ClientOptions::cancel).
std::atomic<bool> g_interrupted{false};

// How long a call may take to notice the flag before the process ends
// anyway: a cache request (REQ) is bounded by --timeout only.
constexpr std::chrono::milliseconds kInterruptGrace{300};

int fail(std::string_view reason) {
  // One line: a reason with a newline in it is cut there.
  const std::string_view line = reason.substr(0, reason.find('\n'));
  std::fprintf(stderr, "palm client: %.*s\n", static_cast<int>(line.size()), line.data());
  return kExitFailure;
}

int fail(const Error& e) {
  if (g_interrupted.load(std::memory_order_relaxed)) return kExitInterrupted;  // relaxed: a flag
  return fail(e.message);
}

void print_line(std::string_view reply) {
  std::fwrite(reply.data(), 1, reply.size(), stdout);
  std::fputc('\n', stdout);
}

int run_client(const ClientCmdOptions& o) {
  // First, before any thread starts (signals.hpp). On a signal: set the
  // flag, give the call kInterruptGrace to return, then end the process
  // with 130 anyway.
  if (!block_stop_signals()) return fail("cannot block SIGINT/SIGTERM");
  StopSignals signals([&signals](int) {
    // release: pairs with the client's acquire load of the flag.
    g_interrupted.store(true, std::memory_order_release);
    if (signals.wait_stopped_for(kInterruptGrace)) return;  // the command ended first
    std::fflush(stdout);
    std::_Exit(kExitInterrupted);
  });

  const std::size_t cache_ops = (o.set ? 1 : 0) + (o.get ? 1 : 0) + (o.del ? 1 : 0);
  if (cache_ops > 1) return fail("give one of --set, --get, --delete");
  if (cache_ops == 0 && o.functions.empty()) return fail("give --function (or --set, --get, --delete)");
  if (o.key && !o.set) return fail("--key goes with --set");

  auto level = servers::parse_log_level(o.log_level);
  if (!level) return fail("--log-level " + o.log_level + ": DEBUG, INFO, WARNING, ERROR or CRITICAL");
  // The transport's own logger (auto-selection lines) at the same level, on
  // stderr: stdout holds the replies.
  if (spdlog::get("palm.transport") == nullptr) {
    spdlog::stderr_color_mt("palm.transport")->set_level(servers::to_spdlog(*level));
  }

  servers::ClientOptions co;
  co.server_name = o.server;
  co.db_address = o.db;
  co.push_address = o.push;
  co.sub_address = o.sub;
  co.session = o.session;
  co.timeout = std::chrono::milliseconds(o.timeout_ms);
  co.settle = std::chrono::milliseconds(o.settle_ms);
  co.log_level = *level;
  co.cancel = &g_interrupted;
  if (!o.transport.empty()) {  // else PALM_TRANSPORT decides (the Client reads it)
    auto mode = shm::parse_transport_mode(o.transport);
    if (!mode) return fail(mode.error());
    co.transport = *mode;
  }

  auto ctx = transport::Context::create();
  if (!ctx) return fail(ctx.error());
  auto client = servers::Client::connect(*ctx, co);
  if (!client) return fail(client.error());
  servers::Client& c = **client;

  if (cache_ops == 1) {
    Result<std::string> r = o.set ? c.set(std::string_view(*o.set), o.key ? std::string_view(*o.key) : std::string_view())
                            : o.get ? c.get(*o.get)
                                    : c.remove(*o.del);
    if (!r) return fail(r.error());
    print_line(*r);
    return kExitOk;
  }

  std::string function;
  for (const auto& f : o.functions) {
    if (!function.empty()) function += ' ';
    function += f;
  }
  if (o.job) {
    std::uint64_t queued = 0;
    auto r = c.job(
        function,
        [&](std::string& payload) {
          if (queued == o.messages || g_interrupted.load(std::memory_order_relaxed)) return false;  // relaxed: a flag
          payload = o.numbered ? o.payload + std::to_string(queued) : o.payload;
          ++queued;
          return true;
        },
        [](std::string_view reply) { print_line(reply); }, o.messages, o.cache);
    if (!r) return fail(r.error());
  } else {
    for (std::uint64_t i = 0; i < o.messages; ++i) {
      const std::string payload = o.numbered ? o.payload + std::to_string(i) : o.payload;
      auto r = c.eval(function, std::string_view(payload), o.cache);
      if (!r) return fail(r.error());
      print_line(*r);
    }
  }
  std::fflush(stdout);
  return g_interrupted.load(std::memory_order_relaxed) ? kExitInterrupted : kExitOk;  // relaxed: a flag
}

}  // namespace

void add_client_commands(CLI::App& app, std::vector<Command>& out) {
  auto o = std::make_shared<ClientCmdOptions>();
  auto* cmd = app.add_subcommand(
      "client", "pylm's Client: send messages to a server and print each reply on its own line, or use its cache");
  cmd->add_option("--server", o->server, "The server's name (checked against its cache's `name`)")->required();
  cmd->add_option("--db", o->db, "The server's cache address (db_address), e.g. tcp://127.0.0.1:5555")->required();
  cmd->add_option("--function", o->functions,
                  "\"server.method\" to call; several give a pipeline, one step each (joined by spaces)");
  cmd->add_option("--payload", o->payload, "The payload of every message")->capture_default_str();
  cmd->add_option("--messages", o->messages, "Messages to send (one reply awaited each)")->capture_default_str();
  cmd->add_option("--push", o->push, "Where to push (default: the cache's pull_address)");
  cmd->add_option("--sub", o->sub, "Where to subscribe (default: the cache's pub_address; a pipeline's last step)");
  cmd->add_option("--session", o->session,
                  "Session: every message's `pipeline` field, and the prefix of --set keys");
  cmd->add_option("--transport", o->transport,
                  "auto (shared memory when the server shares this host), shm or tcp (default: PALM_TRANSPORT, "
                  "else auto)")
      ->check(CLI::IsMember({"auto", "shm", "tcp"}));
  cmd->add_option("--timeout", o->timeout_ms, "Bound on every call, in ms")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--settle", o->settle_ms, "Wait after subscribing, once, in ms (the slow joiner)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_flag("--job", o->job, "Stream the messages (pylm's job) instead of one eval each");
  cmd->add_flag("--numbered", o->numbered,
                "Append each message's number (0, 1, ...) to --payload: distinct payloads");
  cmd->add_option("--cache", o->cache, "Every message's cache field (a key a worker may read)");
  cmd->add_option("--set", o->set, "Store VALUE in the server's cache; prints the key");
  cmd->add_option("--key", o->key, "The key for --set (default: the server makes a uuid4)");
  cmd->add_option("--get", o->get, "Print the cached value of KEY (empty if missing)");
  cmd->add_option("--delete", o->del, "Delete KEY from the cache; prints the key");
  cmd->add_option("--log-level", o->log_level, "Log level of the client's lines (DEBUG ... CRITICAL)")
      ->capture_default_str();
  out.push_back({cmd, [o] { return run_client(*o); }});
}

}  // namespace palm::tools
