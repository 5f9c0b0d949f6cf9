#pragma once
// A logger per server, in pylm's format (FEATURES.md section 1):
//
//   2017-07-26 10:11:12,345 - my_server - WARNING - the message
//
// i.e. Python logging's `%(asctime)s - %(name)s - %(levelname)s - %(message)s`
// with asctime's default form (local time, milliseconds after a comma) and
// Python's level names (DEBUG, INFO, WARNING, ERROR, CRITICAL; spdlog's trace
// prints as DEBUG). Lines go to stdout, as pylm's StreamHandler(sys.stdout)
// does, flushed line by line.
//
// Loggers are spdlog loggers kept in palm's own table, not in spdlog's
// registry: a server may be called "palm.transport" without taking the
// transport's logger, and spdlog::drop_all() does not take them away.
//
// Thread-safety: every function here is thread-safe; so is logging through
// the returned logger (the sinks are the _mt kinds).

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <spdlog/logger.h>
#include <spdlog/sinks/sink.h>

namespace palm::servers {

// Python logging's levels, with Python's numbers (log_level=logging.INFO is
// 20).
enum class LogLevel : int {
  kDebug = 10,
  kInfo = 20,
  kWarning = 30,
  kError = 40,
  kCritical = 50,
};

// "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL".
const char* to_string(LogLevel level) noexcept;
// A level by Python's name (upper case, as logging.getLevelName takes it;
// "WARN" too, as Python accepts it) or by number ("20"); nullopt otherwise.
std::optional<LogLevel> parse_log_level(std::string_view text) noexcept;
// The spdlog level a Python level filters at.
spdlog::level::level_enum to_spdlog(LogLevel level) noexcept;

// The pylm line format: a formatter for any sink (tests give their own).
std::unique_ptr<spdlog::formatter> make_pylm_formatter();

// The logger of server `name`, writing to stdout at `level`: created on the
// first call, the same logger afterwards (with its level set to `level`).
// Never null.
std::shared_ptr<spdlog::logger> server_logger(std::string_view name,
                                              LogLevel level = LogLevel::kInfo);

// A logger named `name` writing to `sink` in pylm's format, at `level`. Not
// kept in the table (a test's capture, a file). The sink's formatter is
// replaced.
std::shared_ptr<spdlog::logger> make_logger(std::string_view name, LogLevel level,
                                            spdlog::sink_ptr sink);

}  // namespace palm::servers
