#pragma once
// Helpers of the servers' tests: golden frames, encoded requests, a raw
// libzmq REQ socket playing a pylm Client or Worker, and a Context.

#include <gtest/gtest.h>
#include <zmq.h>

#include <cstddef>
#include <fstream>
#include <iterator>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "palm/core/codec.hpp"
#include "palm/transport/context.hpp"

namespace palm::servers::test {

inline std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}
inline std::string string_of(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// Bytes of a golden frame (shared/golden/NAME.hex) as a string.
inline std::string golden(const std::string& name) {
  std::ifstream in(std::string(PALM_GOLDEN_DIR) + "/" + name + ".hex");
  EXPECT_TRUE(in.good()) << "no golden frame " << name;
  std::string hex((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// A cache request as a pylm Client sends it.
inline std::string request(std::string_view function, std::string_view payload,
                           std::string_view cache = {}) {
  MessageView m;
  m.pipeline = "a5f2ffec-3a36-47dc-90b2-aef99d876219";
  m.client = "ff63be28-4c36-44d1-87a7-5e16c404c9dc";
  m.function = function;
  m.cache = cache;
  m.payload = bytes_of(payload);
  std::string out(encoded_size(m), '\0');
  const std::size_t n = encode(m, std::as_writable_bytes(std::span<char>(out.data(), out.size())));
  out.resize(n);
  return out;
}

// "xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx", lower-case hex.
inline bool is_uuid4(std::string_view s) {
  if (s.size() != 36) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return s[14] == '4' && (s[19] == '8' || s[19] == '9' || s[19] == 'a' || s[19] == 'b');
}

// A raw libzmq context and REQ socket: the pylm side. Every call is bounded
// (receive and send timeouts); closed at the end of its scope.
class RawReq {
 public:
  explicit RawReq(const std::string& address, int timeout_ms = 10000)
      : ctx_(zmq_ctx_new()), s_(zmq_socket(ctx_, ZMQ_REQ)) {
    const int linger = 0;
    zmq_setsockopt(s_, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s_, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    zmq_setsockopt(s_, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms);
    connected_ = zmq_connect(s_, address.c_str()) == 0;
  }
  ~RawReq() {
    zmq_close(s_);
    zmq_ctx_term(ctx_);
  }
  RawReq(const RawReq&) = delete;  // one owner closes
  RawReq& operator=(const RawReq&) = delete;

  bool connected() const { return connected_; }
  // Sends one request and returns the one-part reply; nullopt on timeout or
  // a reply of several parts.
  std::optional<std::string> ask(std::string_view body) {
    if (zmq_send(s_, body.data(), body.size(), 0) < 0) return std::nullopt;
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, s_, 0) < 0) {
      zmq_msg_close(&m);
      return std::nullopt;
    }
    std::string out(static_cast<const char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
    const bool more = zmq_msg_more(&m) != 0;
    zmq_msg_close(&m);
    if (more) return std::nullopt;
    return out;
  }

 private:
  void* ctx_;
  void* s_;
  bool connected_ = false;
};

inline transport::Context make_context() {
  auto c = transport::Context::create();
  if (!c) {
    ADD_FAILURE() << c.error().describe();
    std::abort();
  }
  return std::move(*c);
}

}  // namespace palm::servers::test
