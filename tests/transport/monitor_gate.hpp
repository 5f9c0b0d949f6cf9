#pragma once
// Holds a shm host's monitor thread still, from outside the library, so a
// test can make a peer attach, send and go before the host registers it.
//
// The monitor logs "attached to shm://SEGMENT/SERVICE" while it registers a
// peer, holding the host's lock, in the middle of its scan of the peer
// table. A sink added to the transport's logger ("palm.transport") that
// blocks on that line stops the monitor there: until open() it reads no
// other entry, so a peer that attaches meanwhile is first seen in whatever
// state it left its entry in. The monitor's thread blocks no other thread
// (the sink takes no lock of spdlog's: null_mutex, its own state under mu_).
//
// Install before the process's first transport log line from another
// thread: the sink is added to the logger's list unsynchronized (spdlog's
// sinks() is not thread-safe), and never removed (it stays, disarmed).

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace palm::shm::test {

class MonitorGateSink final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
 public:
  // Holds the next thread that logs a line containing `marker`.
  void arm(std::string marker) {
    std::lock_guard lock(mu_);
    marker_ = std::move(marker);
    held_ = false;
    open_ = false;
  }
  // Whether a thread is held, waiting up to `timeout` for one.
  bool wait_held(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return held_; });
  }
  // Lets the held thread (and any later one) go; disarms.
  void open() {
    {
      std::lock_guard lock(mu_);
      open_ = true;
      marker_.clear();
    }
    cv_.notify_all();
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    const std::string_view text(msg.payload.data(), msg.payload.size());
    std::unique_lock lock(mu_);
    if (marker_.empty() || text.find(marker_) == std::string_view::npos) return;
    held_ = true;
    cv_.notify_all();
    // Bounded: a test that fails without opening the gate still ends (its
    // host's shutdown joins this thread).
    cv_.wait_for(lock, std::chrono::seconds(60), [&] { return open_; });
  }
  void flush_() override {}

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string marker_;
  bool held_ = false;
  bool open_ = false;
};

// The gate, added once to the transport's logger.
inline std::shared_ptr<MonitorGateSink> monitor_gate() {
  static const std::shared_ptr<MonitorGateSink> gate = [] {
    auto g = std::make_shared<MonitorGateSink>();
    auto logger = spdlog::get("palm.transport");
    // The transport takes a logger registered under its name (detail/log.cpp).
    if (!logger) logger = spdlog::stderr_color_mt("palm.transport");
    logger->sinks().push_back(g);
    return g;
  }();
  return gate;
}

// Opens the gate when the test ends, passed or not: declared after the Host,
// so it is destroyed first and the host's shutdown can join its monitor.
struct GateOpener {
  std::shared_ptr<MonitorGateSink> gate;
  ~GateOpener() { gate->open(); }
};

}  // namespace palm::shm::test
