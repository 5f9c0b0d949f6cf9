#include "palm/transport/shm/peer_table.hpp"

#include <unistd.h>

#include <cstring>
#include <new>

#include "palm/core/process.hpp"

namespace palm::shm {
namespace {

using palm::detail::atomic_of;

constexpr std::size_t round_up(std::size_t n, std::size_t to) noexcept { return (n + to - 1) / to * to; }

struct Offsets {
  std::size_t entries, rings, ring_bytes, total;
};

Offsets offsets_for(std::uint32_t max_peers, std::uint32_t capacity) noexcept {
  Offsets o{};
  o.entries = round_up(sizeof(PeerTableHeader), kFalseSharingRange);
  o.ring_bytes = ChannelRing::bytes_for(capacity);
  o.rings = round_up(o.entries + std::size_t{max_peers} * sizeof(PeerEntry), kFalseSharingRange);
  o.total = o.rings + 2 * std::size_t{max_peers} * o.ring_bytes;
  return o;
}

}  // namespace

std::size_t PeerTable::area_bytes(std::uint32_t max_peers, std::uint32_t channel_capacity) noexcept {
  if (max_peers == 0 || !ChannelRing::valid_capacity(channel_capacity)) return 0;
  return offsets_for(max_peers, channel_capacity).total;
}

Result<PeerTable> PeerTable::create(std::byte* base, std::size_t bytes, std::uint32_t max_peers,
                                    std::uint32_t channel_capacity, std::uint64_t nonce) {
  const std::size_t need = area_bytes(max_peers, channel_capacity);
  if (need == 0 || max_peers > 4096) {
    return make_error(Errc::kInvalidArgument,
                      "peer table: max_peers must be in [1, 4096] and the channel capacity a power of two "
                      "in [2, 2^31] (got " +
                          std::to_string(max_peers) + ", " + std::to_string(channel_capacity) + ")");
  }
  if (base == nullptr || bytes < need || reinterpret_cast<std::uintptr_t>(base) % kFalseSharingRange != 0) {
    return make_error(Errc::kOutOfRange, "peer table needs " + std::to_string(need) +
                                             " bytes, aligned to 128; the area has " + std::to_string(bytes));
  }
  const Offsets o = offsets_for(max_peers, channel_capacity);
  auto* h = reinterpret_cast<PeerTableHeader*>(base);
  // (T0) Unpublish first (a reused area): attachers see "not ready".
  atomic_of(h->version).store(0, std::memory_order_relaxed);
  std::memset(base + sizeof(std::uint64_t) + sizeof(std::uint32_t), 0,
              o.rings - sizeof(std::uint64_t) - sizeof(std::uint32_t));
  h->magic = kPeerTableMagic;
  h->header_bytes = sizeof(PeerTableHeader);
  h->nonce = nonce;
  h->max_peers = max_peers;
  h->channel_capacity = channel_capacity;
  h->entries_offset = o.entries;
  h->rings_offset = o.rings;
  h->ring_bytes = o.ring_bytes;
  h->total_bytes = o.total;
  const ProcessId me = self_process();
  h->owner_pid = static_cast<std::uint32_t>(me.pid);
  h->owner_start_time = me.start_time;
  PeerTable t;
  t.header_ = h;
  t.base_ = base;
  Doorbell::create_at(h->control);
  for (std::uint32_t s = 0; s < kMaxServices; ++s) {
    Doorbell::create_at(h->services[s].bell);
    h->services[s].bell_of = s;
  }
  for (std::uint32_t i = 0; i < max_peers; ++i) {
    PeerEntry& e = t.entry(i);
    e.pool_slot = ~0u;
    Doorbell::create_at(e.bell);
  }
  // (T1) Publish. Pairs with (T2) in attach(): an attacher that reads the
  // version sees every field above.
  atomic_of(h->version).store(kPeerTableVersion, std::memory_order_release);
  return t;
}

Result<PeerTable> PeerTable::attach(std::byte* base, std::size_t bytes) {
  if (base == nullptr || bytes < sizeof(PeerTableHeader)) {
    return make_error(Errc::kMalformed, "peer table area too small");
  }
  auto* h = reinterpret_cast<PeerTableHeader*>(base);
  // (T2) Pairs with (T1).
  const std::uint32_t v = atomic_of(h->version).load(std::memory_order_acquire);
  if (v == 0) return make_error(Errc::kNotReady, "peer table still being created");
  if (h->magic != kPeerTableMagic) return make_error(Errc::kBadMagic, "not a palm peer table");
  if (v != kPeerTableVersion) {
    return make_error(Errc::kVersionMismatch, "peer table layout version " + std::to_string(v) +
                                                  ", this palm reads version " + std::to_string(kPeerTableVersion));
  }
  const std::size_t need = area_bytes(h->max_peers, h->channel_capacity);
  if (h->header_bytes != sizeof(PeerTableHeader) || need == 0 || need != h->total_bytes || need > bytes) {
    return make_error(Errc::kMalformed, "peer table sizes are inconsistent with its area");
  }
  PeerTable t;
  t.header_ = h;
  t.base_ = base;
  return t;
}

PeerEntry& PeerTable::entry(std::uint32_t i) const noexcept {
  return *std::launder(reinterpret_cast<PeerEntry*>(base_ + header_->entries_offset + std::size_t{i} * sizeof(PeerEntry)));
}
Doorbell& PeerTable::control() const noexcept { return *Doorbell::attach_at(header_->control); }
Doorbell& PeerTable::service_bell(std::uint32_t i) const noexcept {
  // bell_of is published with the service's state (SV1/SV2); a value out of
  // range (a corrupt segment) falls back to the service's own doorbell.
  const std::uint32_t b = header_->services[i].bell_of;
  return *Doorbell::attach_at(header_->services[b < kMaxServices ? b : i].bell);
}
Doorbell& PeerTable::entry_bell(std::uint32_t i) const noexcept { return *Doorbell::attach_at(entry(i).bell); }

std::byte* PeerTable::to_host_memory(std::uint32_t i) const noexcept {
  return base_ + header_->rings_offset + (2 * std::size_t{i}) * header_->ring_bytes;
}
std::byte* PeerTable::to_peer_memory(std::uint32_t i) const noexcept {
  return base_ + header_->rings_offset + (2 * std::size_t{i} + 1) * header_->ring_bytes;
}

Result<ChannelRing*> PeerTable::to_host(std::uint32_t i) const {
  auto r = ChannelRing::attach_at(to_host_memory(i), header_->ring_bytes);
  if (r && (*r)->capacity() != header_->channel_capacity) {
    return make_error(Errc::kMalformed, "channel of peer " + std::to_string(i) + " has another capacity");
  }
  return r;
}
Result<ChannelRing*> PeerTable::to_peer(std::uint32_t i) const {
  auto r = ChannelRing::attach_at(to_peer_memory(i), header_->ring_bytes);
  if (r && (*r)->capacity() != header_->channel_capacity) {
    return make_error(Errc::kMalformed, "channel of peer " + std::to_string(i) + " has another capacity");
  }
  return r;
}

bool PeerTable::closed() const noexcept {
  // acquire: pairs with the owner's release store at shutdown; nothing else
  // is published with it, it only orders the caller's later reads.
  return atomic_of(header_->closed).load(std::memory_order_acquire) != 0;
}

Result<std::uint32_t> PeerTable::find_service(std::string_view name) const {
  for (std::uint32_t s = 0; s < kMaxServices; ++s) {
    const ServiceEntry& e = header_->services[s];
    // (SV2) acquire, pairs with the owner's (SV1) in Host::bind: an open
    // service shows its name and pattern.
    if (atomic_of(const_cast<std::uint32_t&>(e.state)).load(std::memory_order_acquire) !=
        static_cast<std::uint32_t>(ServiceState::kOpen)) {
      continue;
    }
    if (std::string_view(e.name, ::strnlen(e.name, kServiceNameBytes)) == name) return s;
  }
  return make_error(Errc::kNotFound, "no service '" + std::string(name) + "' is bound in this segment");
}

// ---- topics ----------------------------------------------------------------

Result<std::vector<std::uint8_t>> encode_topics(const std::vector<std::string>& prefixes) {
  std::vector<std::uint8_t> out;
  for (const std::string& p : prefixes) {
    if (p.size() > 255 || out.size() + 1 + p.size() > kTopicAreaBytes) {
      return make_error(Errc::kOutOfRange, "the subscriptions of one shm subscriber take at most " +
                                               std::to_string(kTopicAreaBytes) +
                                               " bytes (each prefix 255), a byte of length each; use fewer "
                                               "or shorter prefixes, or several subscribers");
    }
    out.push_back(static_cast<std::uint8_t>(p.size()));
    out.insert(out.end(), p.begin(), p.end());
  }
  return out;
}

std::vector<std::string> decode_topics(const std::uint8_t* bytes, std::size_t n) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < n) {
    const std::size_t len = bytes[i++];
    if (len > n - i) break;  // damaged: keep what parsed
    out.emplace_back(reinterpret_cast<const char*>(bytes + i), len);
    i += len;
  }
  return out;
}

std::uint32_t write_topics(PeerEntry& e, const std::vector<std::uint8_t>& encoded) noexcept {
  auto seq = atomic_of(e.topic_seq);
  // relaxed: this thread (under its endpoint's lock) is the only writer.
  const std::uint32_t s = seq.load(std::memory_order_relaxed);
  // (Q1) Odd: writing. relaxed; the release stores (Q2) below order it first
  // for any reader that sees one of them.
  seq.store(s + 1, std::memory_order_relaxed);
  std::uint64_t words[kTopicAreaBytes / 8] = {};
  if (!encoded.empty()) std::memcpy(words, encoded.data(), encoded.size());
  for (std::size_t w = 0; w < kTopicAreaBytes / 8; ++w) {
    // (Q2) release: a reader that reads this word also reads seq >= s+1 at (Q5).
    atomic_of(e.topics[w]).store(words[w], std::memory_order_release);
  }
  atomic_of(e.topic_bytes).store(static_cast<std::uint32_t>(encoded.size()), std::memory_order_release);  // (Q2)
  // (Q3) Even: done. release pairs with (Q4): a reader that sees s+2 sees the words.
  seq.store(s + 2, std::memory_order_release);
  return s + 2;
}

bool read_topics(const PeerEntry& e, std::vector<std::string>& out, std::uint32_t& seq_out) noexcept {
  auto& m = const_cast<PeerEntry&>(e);
  for (int attempt = 0; attempt < 16; ++attempt) {
    // (Q4) acquire, pairs with (Q3).
    const std::uint32_t s1 = atomic_of(m.topic_seq).load(std::memory_order_acquire);
    if (s1 % 2 != 0) continue;
    std::uint64_t words[kTopicAreaBytes / 8];
    // acquire on each data load: keeps the re-read (Q5) after them.
    const std::uint32_t n = atomic_of(m.topic_bytes).load(std::memory_order_acquire);
    for (std::size_t w = 0; w < kTopicAreaBytes / 8; ++w) {
      words[w] = atomic_of(m.topics[w]).load(std::memory_order_acquire);
    }
    // (Q5) relaxed: ordered after the acquire loads above. Unchanged: no
    // write overlapped the copy.
    if (atomic_of(m.topic_seq).load(std::memory_order_relaxed) != s1) continue;
    std::uint8_t bytes[kTopicAreaBytes];
    std::memcpy(bytes, words, sizeof bytes);
    out = decode_topics(bytes, n > kTopicAreaBytes ? kTopicAreaBytes : n);
    seq_out = s1;
    return true;
  }
  return false;
}

}  // namespace palm::shm
