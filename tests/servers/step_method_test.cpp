// pylm's step rules (PROTOCOL.md "The message") and the built-in methods.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <stdexcept>

#include <spdlog/sinks/null_sink.h>

#include "palm/servers/log.hpp"
#include "palm/servers/method.hpp"
#include "palm/servers/step.hpp"

namespace palm::servers {
namespace {

TEST(Step, WithoutSpaceTheWholeFunctionWhateverTheStage) {
  EXPECT_EQ(*current_step("server.foo", 0), "server.foo");
  EXPECT_EQ(*current_step("server.foo", 7), "server.foo");
  EXPECT_EQ(*current_step("server.foo", -1), "server.foo");
}

TEST(Step, WithSpacesTheStageIndexesTheSplit) {
  EXPECT_EQ(*current_step("a.x b.y  c.z", 0), "a.x");
  EXPECT_EQ(*current_step("a.x b.y  c.z", 1), "b.y");
  EXPECT_EQ(*current_step("a.x b.y  c.z", 2), "c.z");
  auto out = current_step("a.x b.y", 2);
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code, Errc::kOutOfRange);
  EXPECT_NE(out.error().message.find("stage 2"), std::string::npos);
  EXPECT_FALSE(current_step("a.x b.y", -1));
  EXPECT_EQ(step_count("a.x b.y  c.z"), 3u);
  EXPECT_EQ(step_count("a.x"), 1u);
}

TEST(Step, ServerStepNeedsExactlyOneDot) {
  auto s = split_server_step("srv.foo");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->server, "srv");
  EXPECT_EQ(s->method, "foo");
  EXPECT_EQ(split_server_step("foo").error().code, Errc::kMalformed);
  EXPECT_EQ(split_server_step("a.b.c").error().code, Errc::kMalformed);
}

TEST(Step, WorkerTakesTheSecondField) {
  EXPECT_EQ(*worker_method("_.foo"), "foo");
  EXPECT_EQ(*worker_method("anything.foo.bar"), "foo");
  EXPECT_EQ(*worker_method("x."), "");
  EXPECT_EQ(worker_method("foo").error().code, Errc::kMalformed);
}

Output run(const MethodTable& table, std::string_view name, std::string_view payload) {
  MessageView m;
  m.payload = {reinterpret_cast<const std::byte*>(payload.data()), payload.size()};
  auto logger = make_logger("step_method_test", LogLevel::kCritical,
                            std::make_shared<spdlog::sinks::null_sink_mt>());
  const Method* method = table.find(name);
  if (method == nullptr) throw std::logic_error("no method");
  return (*method)(Call{m, name, *logger, nullptr});
}

TEST(Builtins, EachDoesWhatItSays) {
  MethodTable table;
  add_builtin_methods(table);
  EXPECT_EQ(run(table, "echo", "abc").kind(), Output::Kind::kSame);
  EXPECT_EQ(run(table, "upper", "aBc-1").bytes(), "ABC-1");
  EXPECT_EQ(run(table, "reverse", "abc").bytes(), "cba");
  // sha256("abc"), FIPS 180-2 appendix B.1.
  EXPECT_EQ(run(table, "sha256", "abc").bytes(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_THROW(run(table, "fail", "x"), std::runtime_error);
  EXPECT_THROW(run(table, "sleep", "soon"), std::invalid_argument);
  EXPECT_THROW(run(table, "sleep", "60001"), std::invalid_argument);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(run(table, "sleep", "20").kind(), Output::Kind::kSame);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(20));
  EXPECT_EQ(table.find("nope"), nullptr);
  EXPECT_EQ(table.names().size(), 6u);
}

}  // namespace
}  // namespace palm::servers
