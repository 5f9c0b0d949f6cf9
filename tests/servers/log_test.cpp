// The server logger: pylm's line format (FEATURES.md section 1:
// "`<asctime> - <name> - <LEVEL> - <message>` to stdout").
#include <gtest/gtest.h>

#include <regex>
#include <sstream>
#include <string>

#include <spdlog/sinks/ostream_sink.h>

#include "palm/servers/log.hpp"

namespace palm::servers {
namespace {

// Python's default asctime: "2017-07-26 10:11:12,345".
const std::string kAsctime = R"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3})";

TEST(ServerLogger, LinesHavePylmsFormatAndPythonsLevelNames) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  auto log = make_logger("my_server", LogLevel::kDebug, sink);
  log->debug("d {}", 1);
  log->info("i");
  log->warn("w");
  log->error("e");
  log->critical("c");
  const std::regex line("^" + kAsctime +
                        " - my_server - (DEBUG - d 1|INFO - i|WARNING - w|ERROR - e|CRITICAL - c)$");
  std::istringstream in(out.str());
  std::string l;
  const char* const want[] = {"DEBUG - d 1", "INFO - i", "WARNING - w", "ERROR - e",
                              "CRITICAL - c"};
  int n = 0;
  while (std::getline(in, l)) {
    ASSERT_LT(n, 5) << l;
    EXPECT_TRUE(std::regex_match(l, line)) << l;
    EXPECT_NE(l.find(want[n]), std::string::npos) << l;
    ++n;
  }
  EXPECT_EQ(n, 5);
}

TEST(ServerLogger, TheLevelFilters) {
  std::ostringstream out;
  auto log = make_logger("s", LogLevel::kWarning,
                         std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  log->debug("no");
  log->info("no");
  log->warn("yes");
  EXPECT_EQ(out.str().find("no"), std::string::npos);
  EXPECT_NE(out.str().find(" - s - WARNING - yes"), std::string::npos);
}

TEST(ServerLogger, ServerLoggerWritesToStdoutAndIsOnePerName) {
  auto a = server_logger("stdout_server", LogLevel::kInfo);
  auto b = server_logger("stdout_server", LogLevel::kDebug);
  EXPECT_EQ(a.get(), b.get());
  EXPECT_EQ(a->level(), spdlog::level::debug);  // the last call's level
  ::testing::internal::CaptureStdout();
  a->warn("to stdout");
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_TRUE(std::regex_match(out, std::regex("^" + kAsctime +
                                               " - stdout_server - WARNING - to stdout\n$")))
      << out;
}

TEST(ServerLogger, ParsesPythonLevels) {
  EXPECT_EQ(parse_log_level("DEBUG"), LogLevel::kDebug);
  EXPECT_EQ(parse_log_level("WARNING"), LogLevel::kWarning);
  EXPECT_EQ(parse_log_level("WARN"), LogLevel::kWarning);
  EXPECT_EQ(parse_log_level("40"), LogLevel::kError);
  EXPECT_EQ(parse_log_level("CRITICAL"), LogLevel::kCritical);
  EXPECT_FALSE(parse_log_level("warning").has_value());
  EXPECT_FALSE(parse_log_level("15").has_value());
  EXPECT_STREQ(to_string(LogLevel::kWarning), "WARNING");
}

}  // namespace
}  // namespace palm::servers
