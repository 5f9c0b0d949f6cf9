#include "palm/transport/endpoint.hpp"

namespace palm::transport {

const char* to_string(Pattern pattern) noexcept {
  switch (pattern) {
    case Pattern::kPush: return "push";
    case Pattern::kPull: return "pull";
    case Pattern::kPub: return "pub";
    case Pattern::kSub: return "sub";
    case Pattern::kReq: return "req";
    case Pattern::kRep: return "rep";
    case Pattern::kDispatcher: return "dispatcher";
    case Pattern::kWorker: return "worker";
  }
  return "unknown";
}

const char* to_string(SendResult result) noexcept {
  switch (result) {
    case SendResult::kQueued: return "queued";
    case SendResult::kFull: return "full";
    case SendResult::kTimeout: return "timeout";
    case SendResult::kClosed: return "closed";
    case SendResult::kNoCredit: return "no credit";
    case SendResult::kPeerGone: return "peer gone";
    case SendResult::kInvalid: return "invalid";
  }
  return "unknown";
}

}  // namespace palm::transport
