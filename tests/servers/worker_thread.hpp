#pragma once
// A palm Worker serving in a thread of the test until stopped, with the
// built-in methods and a few of the tests' own: "tag" (NAME:payload),
// "slow" (the same after 2 ms), "fill" (filled:payload, written in place).
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "palm/servers/worker.hpp"
#include "palm/transport/context.hpp"

namespace palm::servers::test {

// A palm Worker serving in its own thread until stopped.
class WorkerThread {
 public:
  WorkerThread(transport::Context& ctx, const std::string& db, shm::TransportMode mode, std::string name,
               std::uint32_t credits = 4) {
    WorkerOptions o;
    o.name = std::move(name);
    o.db_address = db;
    o.transport = mode;
    o.credits = credits;
    o.log_level = LogLevel::kWarning;
    o.poll = std::chrono::milliseconds(20);
    MethodTable methods;
    add_builtin_methods(methods);
    const std::string tag = o.name;
    methods.on("tag", [tag](const Call& c) { return Output(tag + ":" + std::string(c.payload_text())); });
    methods.on("slow", [tag](const Call& c) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      return Output(tag + ":" + std::string(c.payload_text()));
    });
    methods.on("fill", [](const Call& c) {
      const std::string text = "filled:" + std::string(c.payload_text());
      return Output::fill(text.size(), [text](std::span<std::byte> room) {
        std::memcpy(room.data(), text.data(), text.size());
        return text.size();
      });
    });
    worker_ = std::make_unique<Worker>(ctx, o, std::move(methods));
    auto r = worker_->connect();
    EXPECT_TRUE(r) << r.error().describe();
    thread_ = std::thread([this] { result_ = worker_->run(); });
  }
  ~WorkerThread() { stop(); }
  void stop() {
    worker_->stop();
    if (thread_.joinable()) thread_.join();
  }
  Worker& worker() { return *worker_; }

 private:
  std::unique_ptr<Worker> worker_;
  std::thread thread_;
  Result<void> result_;
};

}  // namespace palm::servers::test
