#pragma once
// The peer table of a palm shm segment: the shared layout that lets processes
// attach to a server's segment, get their channels and be cleaned up after
// when they die. An ABI between processes: standard-layout, trivially
// copyable, fixed-width, explicitly padded; shared words are plain integers
// touched through std::atomic_ref (detail::atomic_of). Bump
// kPeerTableVersion on any change of width, order or meaning.
//
// The segment (segment.hpp) holds two areas: "pool" (the BlockPool, whose
// process slots already carry pid, start time and the held-block list of
// every attached process: not duplicated here) and "peers":
//
//   0                    PeerTableHeader (magic, version, nonce, sizes, owner,
//                        closed flag, the control doorbell, ServiceEntry[8])
//   entries_offset       PeerEntry[max_peers]                 512 B each
//   rings_offset         SpscRing<ChannelItem>[2 * max_peers]  ring_bytes each:
//                          2i   : peer i -> host ("to_host"; the peer produces)
//                          2i+1 : host -> peer i ("to_peer"; the host produces)
//
// Doorbells (one per consuming thread, DESIGN.md "Waiting"):
//   control       the owner's monitor thread; peers ring it after attaching,
//                 leaving and subscribing.
//   service bell  the bound endpoint's threads; peers ring it after pushing
//                 to to_host and after popping from to_peer (room for a
//                 waiting host producer).
//   entry bell    the peer's threads; the host rings it after pushing to
//                 to_peer and after popping from to_host, the owner after it
//                 registered the entry, after an acknowledgement (topic_ack)
//                 and at shutdown.
//
// Peer entry states (state_pid = {state:32 low | pid:32 high}: a claim names
// the claimer's pid in the same CAS, so the owner always knows whom to check):
//
//   Free --peer CAS--> Claiming --peer store (release)--> Attached
//   Attached --peer CAS--> Leaving                          (clean close)
//   Claiming | Attached | Leaving --owner CAS--> Discarding  (left or dead)
//   Discarding --owner store (release)--> Free
//
// Only the peer writes its entry while Claiming (start time, service,
// pattern, credits, topics, its pool slot, the generation, and it formats its
// two rings); Attached is stored last, so whoever reads Attached (acquire)
// sees formatted rings. Only the owner moves an entry out of
// Attached/Leaving/Claiming into Discarding, and only when the peer left or
// its death is confirmed (pid + start time): a slow peer is never discarded.
//
// Crash windows of the attach handshake (peer side):
//   1 claim (CAS Free -> Claiming{pid})   2 write fields, format rings,
//   BlockPool::attach_process, record pool_slot   3 store Attached, ring control
//   died after 1 or 2: a Claiming entry naming a dead pid: the owner frees it
//     (its rings were never used: nothing to release); a pool slot it took is
//     reclaimed by the owner's pool-slot sweep (BlockPool::reclaim_dead).
//   died after 3: an Attached entry of a dead pid: the owner discards its
//     channels and reclaims its pool slot.
// Owner side: Discarding entries left by an owner that died belong to a
// segment nobody serves any more (the segment is stale; `palm cleanup`).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "palm/core/detail/pool_layout.hpp"
#include "palm/core/doorbell.hpp"
#include "palm/core/error.hpp"
#include "palm/core/layout.hpp"
#include "palm/core/spsc_ring.hpp"

namespace palm::shm {

inline constexpr std::uint64_t kPeerTableMagic = 0x524545504D4C4150ULL;  // "PALMPEER"
inline constexpr std::uint32_t kPeerTableVersion = 2;  // 2: ServiceEntry::bell_of
inline constexpr std::uint32_t kMaxServices = 8;
inline constexpr std::size_t kServiceNameBytes = 32;
inline constexpr std::size_t kTopicAreaBytes = 256;

// What a channel carries: a handle plus a tag word. 16 bytes.
enum class ItemKind : std::uint32_t {
  kMessage = 1,  // `handle` is a frame; tag: credits returned (worker -> dispatcher)
  kCredit = 2,   // no handle; tag: credits granted (worker -> dispatcher)
};
struct ChannelItem {
  std::uint64_t handle;  // Handle::bits(), 0 for kCredit
  std::uint32_t kind;    // ItemKind
  std::uint32_t tag;
};
static_assert(sizeof(ChannelItem) == 16 && std::is_trivially_copyable_v<ChannelItem> &&
              std::is_standard_layout_v<ChannelItem>);
using ChannelRing = SpscRing<ChannelItem>;

enum class ServiceState : std::uint32_t { kFree = 0, kOpen = 1, kClosed = 2 };

// A bound endpoint of the segment. Owner-written (state with release after
// name and pattern); peers read state with acquire.
struct ServiceEntry {
  std::uint32_t state;               // 0   ServiceState; atomic_ref
  std::uint32_t pattern;             // 4   transport::Pattern of the bound side
  char name[kServiceNameBytes];      // 8   NUL-terminated
  // The service whose doorbell this one's peers and owner ring: itself, or
  // another service of the segment served by the same thread, which can
  // sleep on only one futex (Host::bind's `share_bell_with`).
  std::uint32_t bell_of;             // 40  index into services
  std::uint8_t pad[kFalseSharingRange - 12 - kServiceNameBytes];
  alignas(kFalseSharingRange) std::byte bell[kFalseSharingRange];  // 128 Doorbell
};
static_assert(sizeof(ServiceEntry) == 2 * kFalseSharingRange);
static_assert(offsetof(ServiceEntry, bell) == kFalseSharingRange);

struct PeerTableHeader {
  std::uint64_t magic;             // 0   kPeerTableMagic
  std::uint32_t version;           // 8   atomic_ref; 0 = not ready; stored last. Never moves.
  std::uint32_t header_bytes;      // 12  sizeof(PeerTableHeader)
  std::uint64_t nonce;             // 16  the segment's incarnation (= Segment::nonce())
  std::uint32_t max_peers;         // 24
  std::uint32_t channel_capacity;  // 28  items per ring, a power of two
  std::uint64_t entries_offset;    // 32  from the area's base
  std::uint64_t rings_offset;      // 40
  std::uint64_t ring_bytes;        // 48  ChannelRing::bytes_for(channel_capacity)
  std::uint64_t total_bytes;       // 56
  std::uint32_t owner_pid;         // 64
  std::uint32_t closed;            // 68  atomic_ref; owner sets 1 at shutdown
  std::uint64_t owner_start_time;  // 72
  std::uint8_t reserved[48];       // 80
  alignas(kFalseSharingRange) std::byte control[kFalseSharingRange];  // 128 Doorbell
  ServiceEntry services[kMaxServices];                                // 256
};
static_assert(offsetof(PeerTableHeader, version) == 8, "the version never moves");
static_assert(offsetof(PeerTableHeader, control) == 128);
static_assert(sizeof(PeerTableHeader) == 256 + kMaxServices * sizeof(ServiceEntry));

enum class PeerState : std::uint32_t {
  kFree = 0,
  kClaiming = 1,
  kAttached = 2,
  kLeaving = 3,
  kDiscarding = 4,
};

struct PeerEntry {
  std::uint64_t state_pid;   // 0   atomic_ref; see the state machine above
  std::uint64_t start_time;  // 8   peer while Claiming; the owner reads it
  std::uint32_t generation;  // 16  peer while Claiming (+1 per claim; PeerId)
  std::uint32_t service;     // 20  index into services
  std::uint32_t pattern;     // 24  transport::Pattern of the peer side
  std::uint32_t pool_slot;   // 28  the peer's BlockPool slot (~0u: none yet)
  std::uint32_t credits;     // 32  kWorker: credits offered at attach
  std::uint32_t overflow;    // 36  atomic_ref; host: 1 once a message was lost
  std::uint64_t lost;        // 40  atomic_ref; host: messages dropped for this peer
  std::uint32_t topic_seq;   // 48  atomic_ref; peer: seqlock (odd = writing), 0 at claim
  std::uint32_t topic_ack;   // 52  atomic_ref; owner: the topic_seq it applied (release,
                             //     then rings the entry bell); 0 at claim = not registered
  std::uint32_t topic_bytes; // 56  atomic_ref; peer, under the seqlock
  std::uint32_t reserved0;   // 60
  std::uint64_t topics[kTopicAreaBytes / 8];  // 64  atomic_ref words; [u8 len][bytes]...
  std::uint8_t pad[384 - 64 - kTopicAreaBytes];
  alignas(kFalseSharingRange) std::byte bell[kFalseSharingRange];  // 384 Doorbell
};
static_assert(sizeof(PeerEntry) == 512);
static_assert(offsetof(PeerEntry, bell) == 384);
static_assert(offsetof(PeerEntry, lost) % 8 == 0 && offsetof(PeerEntry, topics) % 8 == 0);

static_assert(palm::detail::kSharedLayout<ServiceEntry> && palm::detail::kSharedLayout<PeerTableHeader> &&
              palm::detail::kSharedLayout<PeerEntry>);
static_assert(sizeof(Doorbell) == kFalseSharingRange && alignof(Doorbell) <= kFalseSharingRange);

constexpr std::uint64_t pack_peer(PeerState s, std::uint32_t pid) noexcept {
  return (std::uint64_t{pid} << 32) | static_cast<std::uint32_t>(s);
}
constexpr PeerState peer_state(std::uint64_t w) noexcept {
  return static_cast<PeerState>(static_cast<std::uint32_t>(w));
}
constexpr std::uint32_t peer_pid(std::uint64_t w) noexcept { return static_cast<std::uint32_t>(w >> 32); }

// PeerId value of entry `index` in `generation`: never 0.
constexpr std::uint64_t make_peer_id(std::uint32_t index, std::uint32_t generation) noexcept {
  return (std::uint64_t{generation} << 32) | (std::uint64_t{index} + 1);
}
constexpr std::uint32_t peer_id_index(std::uint64_t id) noexcept {
  return static_cast<std::uint32_t>(id) - 1;
}
constexpr std::uint32_t peer_id_generation(std::uint64_t id) noexcept {
  return static_cast<std::uint32_t>(id >> 32);
}

// A process-local view of the "peers" area. Plain pointers into the mapping;
// copy freely; the mapping must outlive every copy. Thread-safe (a view).
class PeerTable {
 public:
  // Bytes the area needs.
  static std::size_t area_bytes(std::uint32_t max_peers, std::uint32_t channel_capacity) noexcept;
  // Formats the table (the owner, before anyone can attach): entries Free,
  // services Free, version stored last. kInvalidArgument for a bad size.
  [[nodiscard]] static Result<PeerTable> create(std::byte* base, std::size_t bytes, std::uint32_t max_peers,
                                                std::uint32_t channel_capacity, std::uint64_t nonce);
  // Validates a table another process formatted.
  [[nodiscard]] static Result<PeerTable> attach(std::byte* base, std::size_t bytes);

  PeerTableHeader& header() const noexcept { return *header_; }
  std::uint32_t max_peers() const noexcept { return header_->max_peers; }
  PeerEntry& entry(std::uint32_t i) const noexcept;
  ServiceEntry& service(std::uint32_t i) const noexcept { return header_->services[i]; }
  Doorbell& control() const noexcept;
  // The doorbell service i's peers and owner ring and wait on: its own or
  // the one it shares (ServiceEntry::bell_of).
  Doorbell& service_bell(std::uint32_t i) const noexcept;
  Doorbell& entry_bell(std::uint32_t i) const noexcept;
  // The memory of entry i's rings (formatted by the claimer).
  std::byte* to_host_memory(std::uint32_t i) const noexcept;
  std::byte* to_peer_memory(std::uint32_t i) const noexcept;
  std::size_t ring_bytes() const noexcept { return header_->ring_bytes; }
  // The rings of an entry that is (or was) Attached; kMalformed if damaged.
  [[nodiscard]] Result<ChannelRing*> to_host(std::uint32_t i) const;
  [[nodiscard]] Result<ChannelRing*> to_peer(std::uint32_t i) const;

  bool closed() const noexcept;
  // Index of the open service named `name`, or kNotFound.
  [[nodiscard]] Result<std::uint32_t> find_service(std::string_view name) const;

 private:
  PeerTableHeader* header_ = nullptr;
  std::byte* base_ = nullptr;
};

// ---- topic lists (kSub) -------------------------------------------------
// Encodes prefixes as [u8 len][bytes]... in at most kTopicAreaBytes;
// kOutOfRange naming the limit otherwise.
[[nodiscard]] Result<std::vector<std::uint8_t>> encode_topics(const std::vector<std::string>& prefixes);
std::vector<std::string> decode_topics(const std::uint8_t* bytes, std::size_t n);

// Seqlock writer (the peer, one thread at a time): publishes `encoded`.
// Returns the new (even) sequence number.
std::uint32_t write_topics(PeerEntry& e, const std::vector<std::uint8_t>& encoded) noexcept;
// Seqlock reader (the owner): a consistent copy, or false if a write was in
// progress for every one of a few tries (try again later). `seq` gets the
// sequence the copy belongs to.
bool read_topics(const PeerEntry& e, std::vector<std::string>& out, std::uint32_t& seq) noexcept;

}  // namespace palm::shm
