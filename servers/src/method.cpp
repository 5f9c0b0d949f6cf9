#include "palm/servers/method.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

namespace palm::servers {

void MethodTable::on(std::string name, Method method) { methods_[std::move(name)] = std::move(method); }

const Method* MethodTable::find(std::string_view name) const noexcept {
  auto it = methods_.find(name);
  return it == methods_.end() ? nullptr : &it->second;
}

std::vector<std::string> MethodTable::names() const {
  std::vector<std::string> out;
  out.reserve(methods_.size());
  for (const auto& entry : methods_) out.push_back(entry.first);
  std::sort(out.begin(), out.end());  // listed in a stable order
  return out;
}

namespace {

std::string sha256_hex(std::span<const std::byte> data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("sha256: OpenSSL EVP_Digest failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(std::size_t{length} * 2, '0');
  for (unsigned int i = 0; i < length; ++i) {
    out[2 * i] = kHex[digest[i] >> 4];
    out[2 * i + 1] = kHex[digest[i] & 0xf];
  }
  return out;
}

constexpr long kMaxSleepMs = 60'000;

}  // namespace

Result<Frame> build_result(BlockPool& pool, SlotId slot, const MessageView& fields,
                           std::string_view topic, const Output& output) {
  if (output.kind() != Output::Kind::kFill) {
    MessageView m = fields;
    if (output.kind() == Output::Kind::kBytes) {
      m.payload = {reinterpret_cast<const std::byte*>(output.bytes().data()), output.bytes().size()};
    }
    return Frame::build(pool, slot, m, topic);
  }
  // One writer per thread, reused: its plan's buffers are allocated once
  // (a result's fields differ per message, the cache key at least, so the
  // plan is made anew each time, into the same buffers). Every return
  // leaves it holding no block.
  thread_local FrameWriter writer;
  if (auto r = writer.begin(pool, slot, fields, topic, output.fill_max()); !r) {
    return tl::unexpected(std::move(r.error()));
  }
  std::size_t written = 0;
  try {
    written = output.filler() ? output.filler()(writer.payload()) : 0;
  } catch (const std::exception& e) {
    writer.abandon();
    return make_error(Errc::kInvalidArgument, fmt::format("the result's filler failed: {}", e.what()));
  } catch (...) {
    writer.abandon();
    throw;
  }
  if (written > output.fill_max()) {
    writer.abandon();
    return make_error(Errc::kInvalidArgument,
                      fmt::format("the result's filler wrote {} bytes into room for {}", written,
                                  output.fill_max()));
  }
  auto handle = writer.commit(written);
  if (!handle) {
    writer.abandon();
    return tl::unexpected(std::move(handle.error()));
  }
  return Frame(pool, slot, *handle);
}

void add_echo(MethodTable& table) {
  table.on("echo", [](const Call&) { return Output::same(); });
}

void add_builtin_methods(MethodTable& table) {
  add_echo(table);
  table.on("upper", [](const Call& call) {
    std::string out(call.payload_text());
    std::transform(out.begin(), out.end(), out.begin(), [](char c) {
      return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
    });
    return Output(std::move(out));
  });
  table.on("reverse", [](const Call& call) {
    std::string out(call.payload_text());
    std::reverse(out.begin(), out.end());
    return Output(std::move(out));
  });
  table.on("sha256", [](const Call& call) { return Output(sha256_hex(call.payload())); });
  table.on("sleep", [](const Call& call) {
    const auto text = call.payload_text();
    long ms = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), ms);
    if (ec != std::errc{} || end != text.data() + text.size() || ms < 0 || ms > kMaxSleepMs) {
      throw std::invalid_argument(fmt::format(
          "sleep wants the milliseconds as decimal text in [0, {}], got '{}'", kMaxSleepMs,
          text.substr(0, 32)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return Output::same();
  });
  table.on("fail", [](const Call&) -> Output { throw std::runtime_error("fail was called"); });
}

}  // namespace palm::servers
