#include "palm/servers/log.hpp"

#include <charconv>
#include <map>
#include <mutex>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace palm::servers {
namespace {

// %L is spdlog's one-letter level; pylm prints Python's level names.
class PythonLevelName final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm& /*time*/,
              spdlog::memory_buf_t& dest) override {
    const std::string_view name = level_name(msg.level);
    dest.append(name.data(), name.data() + name.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<PythonLevelName>();
  }

 private:
  static std::string_view level_name(spdlog::level::level_enum level) noexcept {
    switch (level) {
      case spdlog::level::trace:
      case spdlog::level::debug: return "DEBUG";
      case spdlog::level::info: return "INFO";
      case spdlog::level::warn: return "WARNING";
      case spdlog::level::err: return "ERROR";
      case spdlog::level::critical: return "CRITICAL";
      default: return "NOTSET";
    }
  }
};

struct Table {
  Table() : stdout_sink(std::make_shared<spdlog::sinks::stdout_sink_mt>()) {
    stdout_sink->set_formatter(make_pylm_formatter());
    stdout_sink->set_level(spdlog::level::trace);  // the loggers filter
  }
  std::mutex mutex;
  std::map<std::string, std::shared_ptr<spdlog::logger>, std::less<>> loggers;  // under mutex
  const spdlog::sink_ptr stdout_sink;  // shared: one lock orders all servers' lines
};

Table& table() {
  // Function-local static: built once, thread-safely, on first use.
  static Table t;
  return t;
}

}  // namespace

const char* to_string(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::kDebug: return "DEBUG";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kWarning: return "WARNING";
    case LogLevel::kError: return "ERROR";
    case LogLevel::kCritical: return "CRITICAL";
  }
  return "NOTSET";
}

std::optional<LogLevel> parse_log_level(std::string_view text) noexcept {
  if (text == "DEBUG") return LogLevel::kDebug;
  if (text == "INFO") return LogLevel::kInfo;
  if (text == "WARNING" || text == "WARN") return LogLevel::kWarning;
  if (text == "ERROR") return LogLevel::kError;
  if (text == "CRITICAL" || text == "FATAL") return LogLevel::kCritical;
  int n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  switch (n) {
    case 10: return LogLevel::kDebug;
    case 20: return LogLevel::kInfo;
    case 30: return LogLevel::kWarning;
    case 40: return LogLevel::kError;
    case 50: return LogLevel::kCritical;
    default: return std::nullopt;
  }
}

spdlog::level::level_enum to_spdlog(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::kDebug: return spdlog::level::debug;
    case LogLevel::kInfo: return spdlog::level::info;
    case LogLevel::kWarning: return spdlog::level::warn;
    case LogLevel::kError: return spdlog::level::err;
    case LogLevel::kCritical: return spdlog::level::critical;
  }
  return spdlog::level::info;
}

std::unique_ptr<spdlog::formatter> make_pylm_formatter() {
  auto f = std::make_unique<spdlog::pattern_formatter>();
  // Python's asctime: "%Y-%m-%d %H:%M:%S" local time, then ",%03d" ms.
  f->add_flag<PythonLevelName>('*').set_pattern("%Y-%m-%d %H:%M:%S,%e - %n - %* - %v");
  return f;
}

std::shared_ptr<spdlog::logger> server_logger(std::string_view name, LogLevel level) {
  Table& t = table();
  const std::lock_guard lock(t.mutex);
  auto it = t.loggers.find(name);
  if (it == t.loggers.end()) {
    auto logger = std::make_shared<spdlog::logger>(std::string(name), t.stdout_sink);
    it = t.loggers.emplace(std::string(name), std::move(logger)).first;
  }
  it->second->set_level(to_spdlog(level));
  it->second->flush_on(spdlog::level::trace);
  return it->second;
}

std::shared_ptr<spdlog::logger> make_logger(std::string_view name, LogLevel level,
                                            spdlog::sink_ptr sink) {
  sink->set_formatter(make_pylm_formatter());
  auto logger = std::make_shared<spdlog::logger>(std::string(name), std::move(sink));
  logger->set_level(to_spdlog(level));
  logger->flush_on(spdlog::level::trace);
  return logger;
}

}  // namespace palm::servers
