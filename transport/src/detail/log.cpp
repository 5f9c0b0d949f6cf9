#include "detail/log.hpp"

#include <memory>

#include <spdlog/sinks/stdout_color_sinks.h>

namespace palm::transport::detail {

spdlog::logger& log() {
  // A function-local static: created once, thread-safely, on first use.
  static const std::shared_ptr<spdlog::logger> logger = [] {
    if (auto existing = spdlog::get("palm.transport")) return existing;
    return spdlog::stderr_color_mt("palm.transport");
  }();
  return *logger;
}

}  // namespace palm::transport::detail
