#pragma once
// The key-value store behind every server's cache service (FEATURES.md
// "Persistence": pylm's DictDB; PROTOCOL.md "Cache service").
//
// KeyValueStore is the pluggable interface (pylm's Master takes `cache=` any
// object with get/set/delete); DictDB is the default, in memory. Keys are
// strings (utf-8 on the wire), values bytes (held in std::string).
//
// ReservedKeys names the keys the wire may not change: palm's own
// announcements (its shm segment, host...), "__palm" keys by default ("__palm.host", "__palm.shm:5555"). The
// cache service refuses a set or delete of one from a requester (reply b'',
// logged, counted); preset_cache writes them.

#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

namespace palm::servers {

class KeyValueStore {
 public:
  virtual ~KeyValueStore() = default;
  KeyValueStore() = default;
  KeyValueStore(const KeyValueStore&) = delete;  // a store is shared by reference
  KeyValueStore& operator=(const KeyValueStore&) = delete;

  // The value of `key`; nullopt if missing (pylm: None). An empty value is a
  // value (the service answers b'' for both, as pylm does).
  virtual std::optional<std::string> get(std::string_view key) const = 0;
  // Sets `key` to `value`, replacing any value.
  virtual void set(std::string_view key, std::string value) = 0;
  // Deletes `key`; false if it was missing (pylm raises KeyError).
  virtual bool remove(std::string_view key) = 0;
  // Deletes every key that starts with `prefix` ("" deletes all); returns
  // how many.
  virtual std::size_t clean(std::string_view prefix) = 0;
  // pylm's `key in cache`.
  virtual bool contains(std::string_view key) const = 0;
  virtual std::size_t size() const = 0;
};

// pylm's DictDB: an in-memory map. Thread-safe (a reader-writer lock: gets
// share it, writes take it alone); every call blocks only for the lock.
class DictDB final : public KeyValueStore {
 public:
  std::optional<std::string> get(std::string_view key) const override;
  void set(std::string_view key, std::string value) override;
  bool remove(std::string_view key) override;
  std::size_t clean(std::string_view prefix) override;
  bool contains(std::string_view key) const override;
  std::size_t size() const override;

 private:
  mutable std::shared_mutex mutex_;
  std::map<std::string, std::string, std::less<>> map_;  // under mutex_
};

// Keys the wire may not set or delete: exact keys and key prefixes.
// Thread-safe (a reader-writer lock); is_reserved may be stale on return if
// another thread adds keys meanwhile.
class ReservedKeys {
 public:
  static constexpr std::string_view kPalmPrefix = "__palm";

  // Reserves the "__palm" prefix (auto_select.hpp's "__palm.host", "__palm.shm:PORT", ...).
  ReservedKeys();
  ReservedKeys(const ReservedKeys&) = delete;  // guarded by its lock
  ReservedKeys& operator=(const ReservedKeys&) = delete;

  void reserve(std::string_view key);
  void reserve_prefix(std::string_view prefix);
  bool is_reserved(std::string_view key) const;

 private:
  mutable std::shared_mutex mutex_;
  std::set<std::string, std::less<>> keys_;  // under mutex_
  std::vector<std::string> prefixes_;        // under mutex_
};

}  // namespace palm::servers
