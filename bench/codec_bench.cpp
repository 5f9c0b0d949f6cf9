// palm's PalmMessage codec against libprotobuf 3.21 (the baseline, same
// binary), on a typical pylm message: a master's push to a worker (uuid4
// pipeline, client and cache, "my_master.foo", stage 0) with a 64 B or
// 64 KiB payload. Bytes/s count the whole serialized message.
//
//   encode         palm::encode              vs PalmMessage::SerializeToArray
//   encode_frame   palm::encode_head + encode_tail around a payload written in
//                  place (the zero-copy frame path: no payload copy)
//   decode         palm::decode: validate, view in place (no copy)
//   parse_into     palm::parse_into: validate + copy into a block (one memcpy)
//   parse          PalmMessage::ParseFromArray into a reused message,
//                  and into a fresh message on a reset Arena
//   *_noncanonical the same message with its fields in reverse order (palm's
//                  slow path: canonicalizing)
//
// Run: codec_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <google/protobuf/arena.h>

#include <cstddef>
#include <string>
#include <vector>

#include "palm.pb.h"
#include "palm/core/codec.hpp"

namespace {

std::span<const std::byte> bytes_of(const std::string& s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

PalmMessage typical_message(std::size_t payload_size) {
  PalmMessage m;
  m.set_pipeline("3d99e99b-2554-435d-81e0-ac9d42c65db8");
  m.set_client("663d6598-1339-4747-afab-1b65934e8c1c");
  m.set_function("my_master.foo");
  m.set_cache("0117d02b-d9fc-48e8-b219-7e04465cc166");
  std::string payload(payload_size, '\0');
  for (std::size_t i = 0; i < payload_size; ++i) payload[i] = static_cast<char>(i * 7);
  m.set_payload(payload);
  return m;
}

palm::MessageView view_of(const PalmMessage& m) {
  palm::MessageView v;
  v.pipeline = m.pipeline();
  v.client = m.client();
  v.stage = m.stage();
  v.function = m.function();
  v.cache = m.cache();
  v.payload = bytes_of(m.payload());
  return v;
}

// The fields of the typical message, last to first (valid, not canonical).
std::string reversed_wire(const PalmMessage& m) {
  std::string out;
  auto field = [&out](int number, const std::string& value) {
    PalmMessage one;
    switch (number) {
      case 1: one.set_pipeline(value); break;
      case 2: one.set_client(value); break;
      case 4: one.set_function(value); break;
      case 5: one.set_cache(value); break;
      default: one.set_payload(value); break;
    }
    out += one.SerializeAsString();
  };
  field(6, m.payload());
  field(5, m.cache());
  field(4, m.function());
  field(2, m.client());
  field(1, m.pipeline());
  return out;
}

void report(benchmark::State& state, std::size_t message_bytes) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(message_bytes));
  state.counters["msg_bytes"] = static_cast<double>(message_bytes);
}

// --- encode ----------------------------------------------------------------

void BM_palm_encode(benchmark::State& state) {
  const PalmMessage m = typical_message(static_cast<std::size_t>(state.range(0)));
  const palm::MessageView v = view_of(m);
  std::vector<std::byte> out(palm::encoded_size(v));
  for (auto _ : state) {
    std::size_t n = palm::encode(v, out);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  report(state, out.size());
}

void BM_palm_encode_frame(benchmark::State& state) {
  const PalmMessage m = typical_message(static_cast<std::size_t>(state.range(0)));
  const palm::MessageView v = view_of(m);
  const std::size_t payload = v.payload.size();
  std::vector<std::byte> out(palm::encoded_size(v));
  for (auto _ : state) {
    std::size_t at = palm::encode_head(v, payload, out);
    // (the payload is written at out[at] by its producer)
    std::size_t tail = palm::encode_tail(v, std::span(out).subspan(at + payload));
    benchmark::DoNotOptimize(at);
    benchmark::DoNotOptimize(tail);
    benchmark::ClobberMemory();
  }
  report(state, out.size());
}

void BM_protobuf_serialize(benchmark::State& state) {
  const PalmMessage m = typical_message(static_cast<std::size_t>(state.range(0)));
  std::vector<char> out(m.ByteSizeLong());
  for (auto _ : state) {
    bool ok = m.SerializeToArray(out.data(), static_cast<int>(out.size()));
    benchmark::DoNotOptimize(ok);
    benchmark::ClobberMemory();
  }
  report(state, out.size());
}

// --- parse -----------------------------------------------------------------

void BM_palm_decode(benchmark::State& state) {
  const std::string wire = typical_message(static_cast<std::size_t>(state.range(0))).SerializeAsString();
  for (auto _ : state) {
    auto v = palm::decode(bytes_of(wire));
    benchmark::DoNotOptimize(v);
    if (!v) state.SkipWithError("decode failed");
  }
  report(state, wire.size());
}

void parse_into(benchmark::State& state, const std::string& wire, std::size_t message_bytes) {
  std::vector<std::byte> out(palm::canonical_size_bound(wire.size()));
  for (auto _ : state) {
    auto layout = palm::parse_into(bytes_of(wire), out);
    benchmark::DoNotOptimize(layout);
    benchmark::ClobberMemory();
    if (!layout) state.SkipWithError("parse_into failed");
  }
  report(state, message_bytes);
}

void BM_palm_parse_into(benchmark::State& state) {
  const std::string wire = typical_message(static_cast<std::size_t>(state.range(0))).SerializeAsString();
  parse_into(state, wire, wire.size());
}

void BM_palm_parse_into_noncanonical(benchmark::State& state) {
  const std::string wire = reversed_wire(typical_message(static_cast<std::size_t>(state.range(0))));
  parse_into(state, wire, wire.size());
}

void protobuf_parse(benchmark::State& state, const std::string& wire) {
  PalmMessage m;
  for (auto _ : state) {
    bool ok = m.ParseFromArray(wire.data(), static_cast<int>(wire.size()));
    benchmark::DoNotOptimize(ok);
    benchmark::ClobberMemory();
    if (!ok) state.SkipWithError("ParseFromArray failed");
  }
  report(state, wire.size());
}

void BM_protobuf_parse(benchmark::State& state) {
  protobuf_parse(state, typical_message(static_cast<std::size_t>(state.range(0))).SerializeAsString());
}

void BM_protobuf_parse_noncanonical(benchmark::State& state) {
  protobuf_parse(state, reversed_wire(typical_message(static_cast<std::size_t>(state.range(0)))));
}

void BM_protobuf_parse_arena(benchmark::State& state) {
  const std::string wire = typical_message(static_cast<std::size_t>(state.range(0))).SerializeAsString();
  // An initial block big enough for the message: Reset() keeps it, so the
  // loop does not call malloc.
  std::vector<char> block(256 * 1024);
  google::protobuf::ArenaOptions options;
  options.initial_block = block.data();
  options.initial_block_size = block.size();
  google::protobuf::Arena arena(options);
  for (auto _ : state) {
    auto* m = google::protobuf::Arena::CreateMessage<PalmMessage>(&arena);
    bool ok = m->ParseFromArray(wire.data(), static_cast<int>(wire.size()));
    benchmark::DoNotOptimize(ok);
    benchmark::ClobberMemory();
    arena.Reset();
    if (!ok) state.SkipWithError("ParseFromArray failed");
  }
  report(state, wire.size());
}

BENCHMARK(BM_palm_encode)->Arg(64)->Arg(64 << 10);
BENCHMARK(BM_palm_encode_frame)->Arg(64)->Arg(64 << 10);
BENCHMARK(BM_protobuf_serialize)->Arg(64)->Arg(64 << 10);
BENCHMARK(BM_palm_decode)->Arg(64)->Arg(64 << 10);
BENCHMARK(BM_palm_parse_into)->Arg(64)->Arg(64 << 10);
BENCHMARK(BM_protobuf_parse)->Arg(64)->Arg(64 << 10);
BENCHMARK(BM_protobuf_parse_arena)->Arg(64)->Arg(64 << 10);
BENCHMARK(BM_palm_parse_into_noncanonical)->Arg(64)->Arg(64 << 10);
BENCHMARK(BM_protobuf_parse_noncanonical)->Arg(64)->Arg(64 << 10);

}  // namespace
