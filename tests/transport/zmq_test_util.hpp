#pragma once
// Helpers of the transport tests: test messages (client, function, topic and
// a sequence number), golden frames, temporary directories, addresses per
// scheme, a raw libzmq socket, and a wait over several endpoints.

#include <stdlib.h>
#include <gtest/gtest.h>
#include <zmq.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "palm/core/doorbell.hpp"
#include "palm/transport/context.hpp"
#include "palm/transport/endpoint.hpp"
#include "peer.hpp"

namespace palm::transport::test {

using namespace std::chrono_literals;

inline std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}
// prefix + the number (spelled out: g++ 12 warns falsely, -Wrestrict, on
// "literal" + std::to_string(n)).
template <class N>
std::string concat(std::string_view prefix, N n) {
  std::string s(prefix);
  s.append(std::to_string(n));
  return s;
}
inline std::string string_of(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// A test message: who sent it (client), what it is (function), a sequence
// number in the payload (8 bytes little-endian, then `extra` bytes).
inline Frame make_msg(Context& ctx, std::string_view client, std::string_view function,
                      std::uint64_t seq, std::string_view topic = {}, std::size_t extra = 0) {
  std::vector<std::byte> payload(8 + extra);
  for (int i = 0; i < 8; ++i) payload[i] = static_cast<std::byte>((seq >> (8 * i)) & 0xff);
  for (std::size_t i = 0; i < extra; ++i) payload[8 + i] = static_cast<std::byte>(seq + i);
  MessageView m;
  m.client = client;
  m.function = function;
  m.payload = payload;
  auto f = ctx.build(m, topic);
  if (!f) {
    ADD_FAILURE() << f.error().describe();
    return Frame{};
  }
  return std::move(*f);
}

struct TestMsg {
  std::string client;
  std::string function;
  std::string topic;
  std::uint64_t seq = 0;
  std::size_t payload_bytes = 0;
};

inline std::optional<TestMsg> read_msg(const Delivery& d) {
  if (d.event != Event::kMessage || !d.frame) return std::nullopt;
  auto v = d.frame.view();
  if (!v || v->message.payload.size() < 8) return std::nullopt;
  TestMsg m;
  m.client = std::string(v->message.client);
  m.function = std::string(v->message.function);
  m.topic = std::string(v->topic);
  for (int i = 0; i < 8; ++i) m.seq |= std::to_integer<std::uint64_t>(v->message.payload[i]) << (8 * i);
  m.payload_bytes = v->message.payload.size();
  return m;
}

// Bytes of a golden frame (shared/golden/NAME.hex).
inline std::vector<std::byte> golden(const std::string& name) {
  std::ifstream in(std::string(PALM_GOLDEN_DIR) + "/" + name + ".hex");
  std::string hex((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<std::byte>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// A directory under /tmp, removed with its contents at the end of the scope.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/palm-test-XXXXXX";
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;  // one owner removes it
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// An address to bind for `scheme`: tcp on 127.0.0.1 with a port the kernel
// picks (read back with Endpoint::address()), ipc in `dir`, inproc unique.
inline std::string bind_address(Scheme scheme, const TempDir& dir, const std::string& name) {
  switch (scheme) {
    case Scheme::kTcp: return "tcp://127.0.0.1:*";
    case Scheme::kIpc: return "ipc://" + dir.path() + "/" + name;
    default: return "inproc://" + palm::test::unique_name(name);
  }
}

inline std::unique_ptr<Endpoint> open_or_fail(Context& ctx, const EndpointSpec& spec) {
  auto ep = ctx.open(spec);
  if (!ep) {
    ADD_FAILURE() << "open " << to_string(spec.pattern) << " " << spec.address << ": "
                  << ep.error().describe();
    return nullptr;
  }
  return std::move(*ep);
}

inline EndpointSpec sub_spec(std::string address, std::vector<std::string> prefixes) {
  EndpointSpec s = EndpointSpec::connect_to(Pattern::kSub, std::move(address));
  s.subscriptions = std::move(prefixes);
  return s;
}

// Waits on one doorbell for a delivery from any of `eps`; `which` says from
// which. The endpoints must have `bell` set (set_doorbell).
inline WaitResult wait_any(Doorbell& bell, std::span<Endpoint* const> eps, Delivery& out,
                           std::size_t& which, std::chrono::nanoseconds timeout) {
  return bell.wait_for(
      [&]() noexcept {
        for (std::size_t i = 0; i < eps.size(); ++i) {
          if (eps[i]->try_recv(out)) {
            which = i;
            return true;
          }
        }
        return false;
      },
      timeout);
}

// A raw libzmq socket (a pylm peer, or a source of garbage), closed at the
// end of its scope. Its context must outlive it.
class RawSocket {
 public:
  RawSocket(void* context, int type) : s_(zmq_socket(context, type)) {
    const int linger = 0;
    zmq_setsockopt(s_, ZMQ_LINGER, &linger, sizeof linger);
    const int timeout = 10000;  // every blocking call is bounded
    zmq_setsockopt(s_, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(s_, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
  }
  ~RawSocket() {
    if (s_ != nullptr) zmq_close(s_);
  }
  RawSocket(const RawSocket&) = delete;  // one owner closes
  RawSocket& operator=(const RawSocket&) = delete;
  void* get() const { return s_; }
  bool send(std::span<const std::byte> b, bool more = false) {
    return zmq_send(s_, b.data(), b.size(), more ? ZMQ_SNDMORE : 0) >= 0;
  }
  bool send(std::string_view s, bool more = false) { return send(bytes_of(s), more); }
  // One message; empty vector on timeout.
  std::vector<std::vector<std::byte>> recv() {
    std::vector<std::vector<std::byte>> parts;
    for (;;) {
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, s_, 0) < 0) {
        zmq_msg_close(&m);
        return {};
      }
      auto* p = static_cast<const std::byte*>(zmq_msg_data(&m));
      parts.emplace_back(p, p + zmq_msg_size(&m));
      const bool more = zmq_msg_more(&m) != 0;
      zmq_msg_close(&m);
      if (!more) return parts;
    }
  }

 private:
  void* s_;
};

// A private ZeroMQ context for raw sockets, terminated at the end of scope.
class RawContext {
 public:
  RawContext() : c_(zmq_ctx_new()) {}
  ~RawContext() { zmq_ctx_term(c_); }
  RawContext(const RawContext&) = delete;  // one owner terminates
  RawContext& operator=(const RawContext&) = delete;
  void* get() const { return c_; }

 private:
  void* c_;
};

}  // namespace palm::transport::test
