#pragma once
// Server: pylm's single server (FEATURES.md section 1), a composition of
// three parts on a ServerTemplate:
//
//   "inbound"   PullService on pull_address (+ shm)  -> route "exec"
//   "exec"      runs the message's method            -> route "outbound"
//   "outbound"  PubService on pub_address (+ shm)
//
// Threads: the three parts', the cache thread, the Context's bridge and the
// segment's monitor (server_template.hpp).
//
// A message names "server.method" (PROTOCOL.md "The message"); the method's
// result replaces the payload, handle_stream picks the topic (the client's
// uuid, or with `pipelined` the server's name and stage + 1) and the message
// is published. Where pylm's execution thread dies (a wrong server name, an
// unknown method, a bad step or stage, a method returning nothing) or
// answers b'0' (the method threw), palm answers b'0' with the reason in its
// error field, logs it, counts it (failures()), and goes on.
//
// The `messages` limit: after that many messages the server stops (serve()
// returns), as pylm's Server(messages=N).

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "palm/servers/failures.hpp"
#include "palm/servers/method.hpp"
#include "palm/servers/server_template.hpp"

namespace palm::servers {

// What handle_stream may change before a result is published.
struct StreamEdit {
  std::string topic;
  std::int64_t stage = 0;
};

struct ServerConfig {
  ServerOptions server;      // name, db_address, log level, shm...
  std::string pull_address;  // bound: clients push here
  std::string pub_address;   // bound: results are published here
  bool pipelined = false;
  std::uint64_t messages = 0;  // stop after this many; 0 = no limit
};

class Server : public ServerTemplate {
 public:
  // `echo` is registered (pylm's Server has it); add methods with
  // methods().on(...) before start().
  Server(transport::Context& context, ServerConfig config,
         std::shared_ptr<KeyValueStore> cache = nullptr);
  // Stops first: the exec part calls methods and handle_stream. A subclass
  // overriding handle_stream stops in its own destructor too.
  ~Server() override { stop(); }

  MethodTable& methods() noexcept { return methods_; }
  const FailureCounters& failures() const noexcept { return failures_; }
  const ServerConfig& config() const noexcept { return config_; }
  // The bound addresses in effect (ports chosen), once started.
  std::string pull_address() const;
  std::string pub_address() const;

  // pylm's handle_stream: called with the result (its payload set) and the
  // default topic and stage; change them to route the stream.
  virtual void handle_stream(const MessageView& message, StreamEdit& edit);

 protected:
  std::map<std::string, std::string> cache_presets() override;

 private:
  friend class ExecPart;
  ServerConfig config_;
  MethodTable methods_;
  FailureCounters failures_;
};

// Publishes under the default rule: pipelined -> {name, stage + 1}, else
// {client, stage}.
StreamEdit default_stream(const MessageView& message, std::string_view server_name,
                          bool pipelined);
// The same, into `edit`: its topic's buffer is reused (no allocation a
// message for a server that keeps one StreamEdit).
void default_stream(const MessageView& message, std::string_view server_name, bool pipelined,
                    StreamEdit& edit);

}  // namespace palm::servers
