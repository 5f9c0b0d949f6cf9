#include "palm/servers/server.hpp"

#include <exception>

#include <fmt/format.h>

#include "palm/servers/parts.hpp"
#include "palm/servers/step.hpp"

namespace palm::servers {
namespace {

std::span<const std::byte> bytes_of(std::string_view s) noexcept {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace

StreamEdit default_stream(const MessageView& message, std::string_view server_name,
                          bool pipelined) {
  StreamEdit edit;
  default_stream(message, server_name, pipelined, edit);
  return edit;
}

void default_stream(const MessageView& message, std::string_view server_name, bool pipelined,
                    StreamEdit& edit) {
  edit.topic.assign(pipelined ? server_name : message.client);
  edit.stage = pipelined ? message.stage + 1 : message.stage;
}

// Runs each message's method and hands the result to "outbound".
class ExecPart final : public OutboundPart {
 public:
  explicit ExecPart(Server& server) : OutboundPart("exec", PartAddress{}), server_(server) {}

 protected:
  void handle(Routed& item) override {
    auto view = item.frame.view();
    if (!view) {
      PartCounters::bump(counters_.errors);
      logger().error("exec: an unreadable frame: {}", view.error().describe());
      return;
    }
    const MessageView& in = view->message;
    std::string error;
    Failure failure = Failure::kCount;
    std::optional<Output> out;
    const auto fail = [&](Failure f, std::string reason) {
      failure = f;
      error = std::move(reason);
    };
    auto step = current_step(in.function, in.stage);
    if (!step) {
      fail(Failure::kStageOutOfRange, step.error().message);
    } else if (auto parts = split_server_step(*step); !parts) {
      fail(Failure::kBadStep, parts.error().message);
    } else if (parts->server != server_.name()) {
      fail(Failure::kWrongServer,
           fmt::format("You called {}, instead of {}", parts->server, server_.name()));
    } else if (const Method* method = server_.methods_.find(parts->method); method == nullptr) {
      fail(Failure::kUnknownMethod,
           fmt::format("server '{}' has no method '{}'", server_.name(), parts->method));
    } else {
      try {
        out = (*method)(Call{in, parts->method, logger(), env().cache});
        if (out->kind() == Output::Kind::kNone) {
          fail(Failure::kNoResult, fmt::format("method '{}' returned nothing", parts->method));
        }
      } catch (const std::exception& e) {
        fail(Failure::kMethodFailed,
             fmt::format("method '{}' failed on '{}': {}", parts->method, in.function, e.what()));
      } catch (...) {
        fail(Failure::kMethodFailed,
             fmt::format("method '{}' failed on '{}'", parts->method, in.function));
      }
    }

    if (failure == Failure::kCount && out->kind() == Output::Kind::kFill) {
      std::string why;
      if (publish_filled(item, *view, *out, why)) return;
      fail(Failure::kMethodFailed, fmt::format("method '{}' on '{}': {}", out_method(in), in.function, why));
    }
    MessageView result = in;
    if (failure != Failure::kCount) {
      server_.failures_.record(failure, logger(), error);
      PartCounters::bump(counters_.errors);
      result.payload = bytes_of(kFailurePayload);
      result.error = error;
    } else if (out->kind() == Output::Kind::kBytes) {
      result.payload = bytes_of(out->bytes());
    }
    StreamEdit& edit = edit_;
    default_stream(result, server_.name(), server_.config_.pipelined, edit);
    server_.handle_stream(result, edit);
    result.stage = edit.stage;
    const bool unchanged = failure == Failure::kCount && out->kind() == Output::Kind::kSame &&
                           edit.stage == in.stage && edit.topic == view->topic;
    if (unchanged) {
      feedback(item, item.frame);  // nothing to write: the frame goes on as it came
      return;
    }
    auto frame = Frame::build(*item.frame.pool(), item.frame.slot(), result, edit.topic);
    if (!frame) {
      PartCounters::bump(counters_.errors);
      logger().error("exec: the result could not be built: {}", frame.error().describe());
      return;
    }
    item.frame.reset();
    feedback(item, *frame);
  }

  // The method fills a fresh block: written once, under the default topic
  // and stage; rebuilt only if handle_stream changes them.
  // False, with the reason, if the filler failed: the caller answers b'0'.
  bool publish_filled(Routed& item, const FrameView& in, const Output& out, std::string& why) {
    const StreamEdit first = default_stream(in.message, server_.name(), server_.config_.pipelined);
    MessageView fields = in.message;
    fields.stage = first.stage;
    auto frame = build_result(*item.frame.pool(), item.frame.slot(), fields, first.topic, out);
    if (!frame) {
      why = frame.error().message;
      return false;
    }
    auto built = frame->view();
    if (!built) {
      why = built.error().message;
      return false;
    }
    MessageView result = built->message;
    result.stage = in.message.stage;  // handle_stream sees the stage the message came with
    StreamEdit edit = first;
    server_.handle_stream(result, edit);
    if (edit.topic != first.topic || edit.stage != first.stage) {
      result.stage = edit.stage;
      auto moved = Frame::build(*item.frame.pool(), item.frame.slot(), result, edit.topic);
      if (!moved) {
        PartCounters::bump(counters_.errors);
        logger().error("exec: the result could not be built: {}", moved.error().describe());
        return true;
      }
      *frame = std::move(*moved);
    }
    item.frame.reset();
    feedback(item, *frame);
    return true;
  }

  static std::string_view out_method(const MessageView& in) {
    auto step = current_step(in.function, in.stage);
    if (!step) return {};
    auto parts = split_server_step(*step);
    return parts ? parts->method : std::string_view{};
  }

 private:
  Server& server_;
  StreamEdit edit_;  // reused by handle: its topic's buffer is allocated once, not a message
};

Server::Server(transport::Context& context, ServerConfig config,
               std::shared_ptr<KeyValueStore> cache)
    : ServerTemplate(context, config.server, std::move(cache)), config_(std::move(config)) {
  add_echo(methods_);
  register_inbound(PullService("inbound", config_.pull_address), "exec");
  register_outbound(std::make_unique<ExecPart>(*this), "outbound", config_.messages);
  register_outbound(PubService("outbound", config_.pub_address));
}

void Server::handle_stream(const MessageView&, StreamEdit&) {}

std::string Server::pull_address() const {
  auto* p = dynamic_cast<InboundPart*>(part("inbound"));
  return p != nullptr ? p->address() : std::string{};
}

std::string Server::pub_address() const {
  auto* p = dynamic_cast<OutboundPart*>(part("outbound"));
  return p != nullptr ? p->address() : std::string{};
}

std::map<std::string, std::string> Server::cache_presets() {
  return {{"name", name()}, {"pull_address", pull_address()}, {"pub_address", pub_address()}};
}

}  // namespace palm::servers
