#include "palm/servers/cache.hpp"

namespace palm::servers {

std::optional<std::string> DictDB::get(std::string_view key) const {
  const std::shared_lock lock(mutex_);
  const auto it = map_.find(key);
  if (it == map_.end()) return std::nullopt;
  return it->second;
}

void DictDB::set(std::string_view key, std::string value) {
  const std::unique_lock lock(mutex_);
  const auto it = map_.find(key);
  if (it != map_.end()) {
    it->second = std::move(value);
  } else {
    map_.emplace(std::string(key), std::move(value));
  }
}

bool DictDB::remove(std::string_view key) {
  const std::unique_lock lock(mutex_);
  const auto it = map_.find(key);
  if (it == map_.end()) return false;
  map_.erase(it);
  return true;
}

std::size_t DictDB::clean(std::string_view prefix) {
  const std::unique_lock lock(mutex_);
  // Keys with `prefix` are contiguous in the ordered map, from lower_bound.
  std::size_t n = 0;
  auto it = map_.lower_bound(prefix);
  while (it != map_.end() && std::string_view(it->first).starts_with(prefix)) {
    it = map_.erase(it);
    ++n;
  }
  return n;
}

bool DictDB::contains(std::string_view key) const {
  const std::shared_lock lock(mutex_);
  return map_.find(key) != map_.end();
}

std::size_t DictDB::size() const {
  const std::shared_lock lock(mutex_);
  return map_.size();
}

ReservedKeys::ReservedKeys() { prefixes_.emplace_back(kPalmPrefix); }

void ReservedKeys::reserve(std::string_view key) {
  const std::unique_lock lock(mutex_);
  keys_.emplace(key);
}

void ReservedKeys::reserve_prefix(std::string_view prefix) {
  const std::unique_lock lock(mutex_);
  prefixes_.emplace_back(prefix);
}

bool ReservedKeys::is_reserved(std::string_view key) const {
  const std::shared_lock lock(mutex_);
  if (keys_.find(key) != keys_.end()) return true;
  for (const std::string& p : prefixes_) {
    if (key.starts_with(p)) return true;
  }
  return false;
}

}  // namespace palm::servers
