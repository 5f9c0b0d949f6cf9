#include "palm/servers/worker.hpp"

#include <stdexcept>
#include <utility>

#include <fmt/format.h>

#include "palm/servers/step.hpp"
#include "palm/transport/auto_select.hpp"

namespace palm::servers {
namespace {

using transport::Endpoint;
using transport::EndpointSpec;
using transport::Pattern;
using transport::Scheme;

std::span<const std::byte> bytes_of(std::string_view s) noexcept {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

// The host of "tcp://HOST:PORT" (empty for another form).
std::string_view tcp_host(std::string_view address) noexcept {
  constexpr std::string_view kTcp = "tcp://";
  if (!address.starts_with(kTcp)) return {};
  const std::string_view rest = address.substr(kTcp.size());
  const std::size_t colon = rest.rfind(':');
  return colon == std::string_view::npos ? std::string_view{} : rest.substr(0, colon);
}

// A reason for the error field and the log: one line, at most 512 bytes,
// UTF-8 (a protobuf peer rejects a message whose string field is not).
std::string one_line(std::string text) {
  constexpr std::size_t kMax = 512;
  if (text.size() > kMax) text.resize(kMax);
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  if (!is_valid_utf8(text)) {
    for (char& c : text) {
      if (static_cast<unsigned char>(c) >= 0x80) c = '?';
    }
  }
  return text;
}

// The bound of a wait that events end (stop(), a message, the master's
// death): not a poll, a safety net against a missed wake-up (as
// Part::kRest). An idle worker wakes this rarely.
constexpr auto kRest = std::chrono::seconds(5);
constexpr std::size_t kMaxThrottled = 1024;  // distinct reasons remembered
constexpr auto kThrottlePeriod = std::chrono::seconds(1);

}  // namespace

// The master's cache as a method sees it (Call::cache): every call is a
// request to the master (Worker::set/get/remove). A failed request throws
// std::runtime_error, which fails the message being served (b"0" and the
// reason), not the worker. clean() and size() have no cache instruction:
// they throw std::logic_error.
class Worker::RemoteCache final : public KeyValueStore {
 public:
  explicit RemoteCache(Worker& worker) : worker_(worker) {}

  // The cache answers b"" for a missing key and an empty value alike:
  // both read as nullopt.
  std::optional<std::string> get(std::string_view key) const override {
    auto r = worker_.get(key);
    if (!r) throw std::runtime_error("the master's cache: " + r.error().describe());
    if (r->empty()) return std::nullopt;
    return std::move(*r);
  }
  void set(std::string_view key, std::string value) override {
    auto r = worker_.set(bytes_of(value), key);
    if (!r) throw std::runtime_error("the master's cache: " + r.error().describe());
  }
  // The cache answers the key when it deleted it, b"" otherwise.
  bool remove(std::string_view key) override {
    auto r = worker_.remove(key);
    if (!r) throw std::runtime_error("the master's cache: " + r.error().describe());
    return !r->empty();
  }
  std::size_t clean(std::string_view) override {
    throw std::logic_error("a worker cannot clean its master's cache (no such cache instruction)");
  }
  bool contains(std::string_view key) const override { return get(key).has_value(); }
  std::size_t size() const override {
    throw std::logic_error("a worker cannot count its master's cache (no such cache instruction)");
  }

 private:
  Worker& worker_;
};

Worker::Worker(transport::Context& ctx, WorkerOptions options, MethodTable methods)
    : ctx_(&ctx),
      options_(std::move(options)),
      methods_(std::move(methods)),
      uuid_(transport::make_uuid4()),
      name_(options_.name.empty() ? uuid_ : options_.name),
      logger_(server_logger(name_, options_.log_level)),
      remote_cache_(std::make_unique<RemoteCache>(*this)) {}

Worker::~Worker() {
  // Endpoints first: they may hold frames of the segments they attached to.
  if (out_) out_->close();
  if (in_) in_->close();
}

void Worker::stop() noexcept {
  // relaxed: published by the interrupts (their raise is a release the
  // woken wait acquires).
  stop_.store(true, std::memory_order_relaxed);
  wake_all();
}

void Worker::wake_all() noexcept {
  const std::lock_guard lock(wake_mu_);
  for (transport::Endpoint* ep : wake_) ep->interrupt();
}

void Worker::wake_on_stop(transport::Endpoint* ep, bool add) {
  const std::lock_guard lock(wake_mu_);
  if (add) {
    wake_.push_back(ep);
  } else {
    std::erase(wake_, ep);
  }
}

Result<transport::DiscoveryClient*> Worker::cache_client() {
  const std::lock_guard lock(cache_mutex_);
  if (!cache_) {
    if (options_.db_address.empty()) {
      return make_error(Errc::kInvalidArgument,
                        "a Worker needs db_address, the master's cache (pylm: ValueError)");
    }
    auto c = transport::DiscoveryClient::connect(*ctx_, options_.db_address, "_");
    if (!c) {
      return make_error(c.error().code, "the master's cache at " + options_.db_address + ": " +
                                            c.error().message);
    }
    cache_.emplace(std::move(*c));
  }
  return &*cache_;
}

Result<std::string> Worker::request(std::string_view instruction, std::string_view cache,
                                    std::span<const std::byte> payload) {
  auto client = cache_client();
  if (!client) return tl::unexpected(std::move(client.error()));
  auto r = (*client)->request(instruction, cache, payload, options_.discovery_timeout);
  if (!r) {
    return make_error(r.error().code,
                      fmt::format("the master's cache at {} ({} {} ms): {}", options_.db_address,
                                  instruction, options_.discovery_timeout.count(), r.error().message));
  }
  return r;
}

Result<std::string> Worker::set(std::span<const std::byte> value, std::string_view key) {
  return request("set", key, value);
}
Result<std::string> Worker::get(std::string_view key) { return request("get", {}, bytes_of(key)); }
Result<std::string> Worker::remove(std::string_view key) {
  return request("delete", {}, bytes_of(key));
}

std::string Worker::resolve(const std::string& address) const {
  const std::string_view host = tcp_host(address);
  if (host != "0.0.0.0" && host != "*") return address;
  const std::string_view db_host = tcp_host(options_.db_address);
  if (db_host.empty()) return address;
  return fmt::format("tcp://{}{}", db_host, std::string_view(address).substr(6 + host.size()));
}

Result<std::unique_ptr<Endpoint>> Worker::open_to(EndpointSpec spec) {
  const std::string address = spec.address;
  Result<std::unique_ptr<Endpoint>> ep;
  if (address.starts_with("tcp://") || address.starts_with("auto://")) {
    transport::AutoOptions o;
    o.mode = options_.transport;
    o.server_name = "_";
    o.discovery_timeout = options_.discovery_timeout;
    ep = transport::open_auto(*ctx_, std::move(spec), options_.db_address, o);
  } else {
    ep = ctx_->open(spec);  // ipc, inproc, shm: as given
  }
  if (!ep) {
    return make_error(ep.error().code, fmt::format("{} {}: {}", transport::to_string(spec.pattern),
                                                   address, ep.error().message));
  }
  return ep;
}

Result<void> Worker::connect() {
  if (connected_.load(std::memory_order_acquire)) return {};
  if (options_.credits == 0) {
    return make_error(Errc::kInvalidArgument, "a Worker needs at least 1 credit (--credits)");
  }
  auto client = cache_client();
  if (!client) return tl::unexpected(std::move(client.error()));
  const auto lookup = [&](std::string_view key) -> Result<std::string> {
    auto r = (*client)->get(key, options_.discovery_timeout);
    if (!r) {
      return make_error(r.error().code, "asking the master's cache: " + r.error().message);
    }
    return r;
  };

  std::string pull = options_.pull_address;  // work comes from here
  std::string push = options_.push_address;  // results go there
  if (pull.empty() && push.empty()) {
    auto dispatch = lookup(kDispatchKey);
    if (!dispatch) return tl::unexpected(std::move(dispatch.error()));
    if (!dispatch->empty()) {
      EndpointSpec spec = EndpointSpec::connect_to(Pattern::kWorker, resolve(*dispatch));
      spec.credits = options_.credits;
      auto ep = open_to(std::move(spec));
      if (!ep) return tl::unexpected(std::move(ep.error()));
      in_ = std::move(*ep);
      wake_on_stop(in_.get(), true);
      summary_ = fmt::format("work and results: {} over {} ({}), {} credits", resolve(*dispatch),
                             transport::to_string(in_->scheme()), in_->address(), options_.credits);
      logger_->info("Worker {}: palm dispatch: {}", name_, summary_);
      receive_scheme_.store(in_->scheme(), std::memory_order_relaxed);  // published by (C) below
      send_scheme_.store(in_->scheme(), std::memory_order_relaxed);
      mode_.store(Mode::kPalmDispatch, std::memory_order_relaxed);
      // (C) Pairs with the acquire loads in stats()/mode(): they see the
      // schemes and mode stored above.
      connected_.store(true, std::memory_order_release);
      return {};
    }
  }
  if (pull.empty()) {
    auto a = lookup("worker_push_address");
    if (!a) return tl::unexpected(std::move(a.error()));
    if (a->empty()) {
      return make_error(Errc::kNotFound, "the cache at " + options_.db_address +
                                             " has no worker_push_address nor " +
                                             std::string(kDispatchKey) + ": is it a Master's?");
    }
    pull = std::move(*a);
    logger_->info("Got worker push address: {}", pull);
  }
  if (push.empty()) {
    auto a = lookup("worker_pull_address");
    if (!a) return tl::unexpected(std::move(a.error()));
    if (a->empty()) {
      return make_error(Errc::kNotFound, "the cache at " + options_.db_address +
                                             " has no worker_pull_address: is it a Master's?");
    }
    push = std::move(*a);
    logger_->info("Got worker pull address: {}", push);
  }
  pull = resolve(pull);
  push = resolve(push);
  auto in = open_to(EndpointSpec::connect_to(Pattern::kPull, pull));
  if (!in) return tl::unexpected(std::move(in.error()));
  auto out = open_to(EndpointSpec::connect_to(Pattern::kPush, push));
  if (!out) return tl::unexpected(std::move(out.error()));
  in_ = std::move(*in);
  out_ = std::move(*out);
  wake_on_stop(in_.get(), true);
  wake_on_stop(out_.get(), true);
  summary_ = fmt::format("work from {} over {} ({}), results to {} over {} ({})", pull,
                         transport::to_string(in_->scheme()), in_->address(), push,
                         transport::to_string(out_->scheme()), out_->address());
  logger_->info("Worker {}: pylm push/pull: {}", name_, summary_);
  receive_scheme_.store(in_->scheme(), std::memory_order_relaxed);  // published by (C2)
  send_scheme_.store(out_->scheme(), std::memory_order_relaxed);
  mode_.store(Mode::kPylm, std::memory_order_relaxed);
  // (C2) As (C).
  connected_.store(true, std::memory_order_release);
  return {};
}

std::string Worker::transport_summary() const { return summary_; }

Result<void> Worker::master_gone(MasterWatch& watch, std::uint64_t taken) {
  if (!transport::is_zmq(in_->scheme()) || options_.master_timeout.count() <= 0) return {};
  const auto now = std::chrono::steady_clock::now();
  // A message taken since the last look means connected then too: the
  // clock starts at the first idle look that finds no connection.
  if (in_->stats().connections > 0 || taken != watch.taken) {
    watch = MasterWatch{now, taken};
    return {};
  }
  if (now - watch.connected_at < options_.master_timeout) return {};
  const std::string why = fmt::format("the master is gone: no connection to {} for {} ms ({} messages served)",
                                      in_->address(), options_.master_timeout.count(), taken);
  logger_->error("Worker {}: {}", name_, why);
  return make_error(Errc::kPeerDead, why);
}

WorkerStats Worker::stats() const noexcept {
  WorkerStats s;
  constexpr auto r = std::memory_order_relaxed;  // counters: a snapshot
  s.messages = counters_.messages.load(r);
  s.bytes_in = counters_.bytes_in.load(r);
  s.bytes_out = counters_.bytes_out.load(r);
  s.errors.unknown_method = counters_.unknown_method.load(r);
  s.errors.bad_step = counters_.bad_step.load(r);
  s.errors.method_threw = counters_.method_threw.load(r);
  s.errors.no_result = counters_.no_result.load(r);
  s.errors.lost = counters_.lost.load(r);
  // Pairs with (C)/(C2) in connect().
  s.connected = connected_.load(std::memory_order_acquire);
  s.receive_scheme = receive_scheme_.load(r);
  s.send_scheme = send_scheme_.load(r);
  return s;
}

void Worker::fail(Fault fault, std::string_view function, const std::string& reason) {
  constexpr auto r = std::memory_order_relaxed;  // a statistic
  switch (fault) {
    case Fault::kUnknownMethod: counters_.unknown_method.fetch_add(1, r); break;
    case Fault::kBadStep: counters_.bad_step.fetch_add(1, r); break;
    case Fault::kMethodThrew: counters_.method_threw.fetch_add(1, r); break;
    case Fault::kNoResult: counters_.no_result.fetch_add(1, r); break;
    case Fault::kLost: counters_.lost.fetch_add(1, r); break;
  }
  const auto now = std::chrono::steady_clock::now();
  auto it = throttle_.find(reason);
  if (it != throttle_.end() && now - it->second.last < kThrottlePeriod) {
    ++it->second.suppressed;
    return;
  }
  std::uint64_t suppressed = 0;
  if (it == throttle_.end()) {
    if (throttle_.size() >= kMaxThrottled) throttle_.clear();
    it = throttle_.emplace(reason, Throttle{}).first;
  } else {
    suppressed = std::exchange(it->second.suppressed, 0);
  }
  it->second.last = now;
  if (suppressed > 0) {
    logger_->error("Worker {}: {}: {} ({} more like it not logged)", name_, one_line(std::string(function)),
                   reason, suppressed);
  } else {
    logger_->error("Worker {}: {}: {}", name_, one_line(std::string(function)), reason);
  }
}

bool Worker::send_result(Frame& frame, bool& dead, Endpoint& ep) {
  transport::Envelope to;
  to.credits = 1;  // kWorker: this result returns the message's credit; ignored by kPush
  for (;;) {
    const auto r = ep.send_for(frame, options_.poll, to);
    if (r == transport::SendResult::kQueued) return true;
    if (r == transport::SendResult::kTimeout || r == transport::SendResult::kFull) {
      if (!stop_.load(std::memory_order_relaxed)) continue;  // relaxed: a flag
      fail(Fault::kLost, "-", "stopped with a result unsent (the master took none)");
      return false;
    }
    if (r == transport::SendResult::kClosed) {
      dead = true;
      return false;
    }
    fail(Fault::kLost, "-", fmt::format("sending a result: {}", transport::to_string(r)));
    return false;
  }
}

void Worker::serve_one(Frame& received, bool& dead, Endpoint& back) {
  auto view = received.view();
  if (!view) {  // the transport validated it: not expected
    fail(Fault::kLost, "-", "a received frame: " + view.error().describe());
    return;
  }
  const MessageView& message = view->message;
  if (message.function == kBypassFunction && &back == in_.get() && mode() == Mode::kPalmDispatch) {
    // Our master hands us a client's dispatcher (bypass.hpp); answering
    // gives the master its credit back. Not a message served. The thread
    // starts last: run() may serve without serve_mu_ while it has no
    // bypass thread, so nothing of this call may run beside one.
    std::string address(reinterpret_cast<const char*>(message.payload.data()), message.payload.size());
    Frame same = std::move(received);
    static_cast<void>(send_result(same, dead, back));
    start_bypass(std::move(address));
    return;
  }
  const std::size_t in_bytes = view->wire.size();
  counters_.bytes_in.fetch_add(in_bytes, std::memory_order_relaxed);  // a statistic

  std::optional<Output> output;
  Fault fault = Fault::kBadStep;
  std::string reason;
  // A stream calls one function: resolve it once (last_method_, worker.hpp).
  LastMethod& last = last_method_;
  const Method* fn = nullptr;
  std::string_view method;
  if (last.fn != nullptr && last.stage == message.stage && last.function == message.function) {
    fn = last.fn;
    method = std::string_view(message.function).substr(last.at, last.size);
  } else {
    auto step = current_step(message.function, message.stage);
    auto name = step ? worker_method(*step) : Result<std::string_view>(tl::unexpected(step.error()));
    if (!name) {
      reason = name.error().message;
    } else if (fn = methods_.find(*name); fn == nullptr) {
      fault = Fault::kUnknownMethod;
      reason = fmt::format("worker {} has no method '{}'", name_, *name);
    } else {
      method = *name;
      last.function.assign(message.function);
      last.stage = message.stage;
      last.at = static_cast<std::size_t>(method.data() - std::string_view(message.function).data());
      last.size = method.size();
      last.fn = fn;
    }
  }
  if (fn != nullptr) {
    try {
      const Call call{message, method, *logger_, remote_cache_.get()};
      Output out = (*fn)(call);
      if (out.kind() == Output::Kind::kNone) {
        fault = Fault::kNoResult;
        reason = fmt::format("method '{}' returned no result", method);
      } else {
        output.emplace(std::move(out));
      }
    } catch (const std::exception& e) {
      fault = Fault::kMethodThrew;
      reason = fmt::format("method '{}' raised: {}", method, e.what());
    } catch (...) {
      fault = Fault::kMethodThrew;
      reason = fmt::format("method '{}' raised a non-standard exception", method);
    }
  }

  Frame result;
  std::size_t out_bytes = in_bytes;
  if (output && output->kind() == Output::Kind::kSame) {
    result = std::move(received);  // the frame goes back as it came: no copy
  } else {
    MessageView out = message;  // every field kept...
    if (output) {
      if (output->kind() == Output::Kind::kBytes) out.payload = bytes_of(output->bytes());  // ...but the payload
    } else {
      reason = one_line(std::move(reason));
      fail(fault, message.function, reason);
      out.payload = bytes_of(kFailurePayload);
      out.error = reason;
    }
    // In the received frame's pool (a shm segment's: sent without a copy),
    // else the Context's.
    const Output failed = Output(std::string(kFailurePayload));
    const Output& payload = output ? *output : failed;
    auto built = build_result(*received.pool(), received.slot(), out, view->topic, payload);
    if (!built && payload.kind() == Output::Kind::kFill) {
      // The filler failed: the message's failure, answered as a throw is.
      reason = one_line(built.error().message);
      fail(Fault::kMethodThrew, message.function, reason);
      out.payload = bytes_of(kFailurePayload);
      out.error = reason;
      built = Frame::build(*received.pool(), received.slot(), out, view->topic);
    }
    if (!built) built = ctx_->build(out, view->topic);
    if (!built) {
      fail(Fault::kLost, message.function, "building the result: " + built.error().describe());
      // The master (or the bypass's client) still gets its credit back.
      if (back.pattern() == Pattern::kWorker) static_cast<void>(back.grant(1));
      return;
    }
    result = std::move(*built);
    auto sent_view = result.view();
    out_bytes = sent_view ? sent_view->wire.size() : 0;
  }
  if (!send_result(result, dead, back)) return;
  counters_.bytes_out.fetch_add(out_bytes, std::memory_order_relaxed);  // a statistic
  counters_.messages.fetch_add(1, std::memory_order_relaxed);
}

Result<void> Worker::run() {
  if (auto c = connect(); !c) {
    logger_->error("Worker {}: {}", name_, c.error().describe());
    return c;
  }
  // The bypass's threads (start_bypass) end before run() returns.
  struct EndBypass {
    Worker& w;
    ~EndBypass() { w.end_bypass(); }
  } end_bypass{*this};
  bypass_stop_.store(false, std::memory_order_relaxed);  // relaxed: a flag (see end_bypass)
  MasterWatch watch{std::chrono::steady_clock::now(), 0};
  const bool watches_master = transport::is_zmq(in_->scheme()) && options_.master_timeout.count() > 0;
  for (;;) {
    // relaxed: a count (the bypass's threads add theirs under serve_mu_).
    const std::uint64_t taken = taken_.load(std::memory_order_relaxed);
    if (options_.messages != 0 && taken >= options_.messages) {
      logger_->info("Worker {}: {} messages served, the limit", name_, taken);
      return {};
    }
    if (stop_.load(std::memory_order_relaxed)) {  // relaxed: a flag
      logger_->info("Worker {}: stopped after {} messages", name_, taken);
      return {};
    }
    transport::Delivery d;
    // Events end this wait (a message, stop(), the limit reached by the
    // bypass, the master's death or shutdown): it wakes on its own only
    // where a ZeroMQ connection is watched (master_gone).
    const WaitResult w = in_->recv_for(d, watches_master ? options_.poll : kRest);
    bool dead = false;
    if (w == WaitResult::kReady) {
      if (d.event != transport::Event::kMessage || !d.frame) continue;
      {
        // Only bypass threads serve beside run(), and only run()'s thread
        // starts them (serve_one, as its last step) and ends them: with
        // none, nobody else serves and the lock is skipped.
        std::unique_lock lock(serve_mu_, std::defer_lock);
        if (!bypass_threads_.empty()) lock.lock();
        taken_.fetch_add(1, std::memory_order_relaxed);
        serve_one(d.frame, dead, out_ ? *out_ : *in_);
      }
      if (!dead) continue;
    } else if (w == WaitResult::kTimeout) {
      if (auto gone = master_gone(watch, taken); !gone) return gone;
      continue;
    }
    // The endpoint is shut down: on shm the master's segment went away.
    const Endpoint& ep = dead && out_ ? *out_ : *in_;
    if (ep.scheme() == Scheme::kShm) {
      const std::string why = fmt::format(
          "the master is gone: its shared memory {} was shut down or its process died "
          "({} messages served)",
          ep.address(), taken);
      logger_->error("Worker {}: {}", name_, why);
      return make_error(Errc::kPeerDead, why);
    }
    const std::string why = fmt::format("the endpoint {} was closed ({} messages served)",
                                        ep.address(), taken);
    logger_->error("Worker {}: {}", name_, why);
    return make_error(Errc::kClosed, why);
  }
}

// ---- the bypass (bypass.hpp) -------------------------------------------------

void Worker::start_bypass(std::string address) {
  std::erase_if(bypass_threads_, [](BypassThread& b) {
    if (!b.done->load(std::memory_order_acquire)) return false;  // pairs with the release in serve_bypass
    b.thread.join();
    return true;
  });
  auto done = std::make_shared<std::atomic<bool>>(false);
  bypass_threads_.push_back(BypassThread{std::thread([this, address = std::move(address), done] {
                                           serve_bypass(address);
                                           // Release: it ran to its end; start_bypass may join it.
                                           done->store(true, std::memory_order_release);
                                         }),
                                         done});
}

void Worker::end_bypass() noexcept {
  bypass_stop_.store(true, std::memory_order_relaxed);  // relaxed: published by the interrupts, as stop_
  wake_all();
  for (BypassThread& b : bypass_threads_) b.thread.join();
  bypass_threads_.clear();
}

void Worker::serve_bypass(const std::string& address) {
  EndpointSpec spec = EndpointSpec::connect_to(Pattern::kWorker, address);
  spec.credits = options_.credits;
  auto ep = ctx_->open(spec);
  if (!ep) {  // the client left already, most often
    logger_->info("Worker {}: not serving the client at {} directly: {}", name_, address, ep.error().describe());
    return;
  }
  logger_->info("Worker {}: serving a client directly (master bypass) at {}", name_, address);
  wake_on_stop(ep->get(), true);
  struct Unlist {
    Worker& w;
    transport::Endpoint* ep;
    ~Unlist() { w.wake_on_stop(ep, false); }
  } unlist{*this, ep->get()};
  std::uint64_t served = 0;
  // relaxed: flags and a count, published by the interrupts that end a wait.
  const auto more = [&] {
    return !stop_.load(std::memory_order_relaxed) && !bypass_stop_.load(std::memory_order_relaxed) &&
           (options_.messages == 0 || taken_.load(std::memory_order_relaxed) < options_.messages);
  };
  while (more()) {
    transport::Delivery d;
    const WaitResult w = (*ep)->recv_for(d, kRest);  // events end it, as in run()
    if (w == WaitResult::kTimeout) continue;
    if (w != WaitResult::kReady) break;  // the client's segment is gone
    if (d.event != transport::Event::kMessage || !d.frame) continue;
    bool dead = false;
    bool last = false;
    {
      const std::lock_guard lock(serve_mu_);
      last = taken_.fetch_add(1, std::memory_order_relaxed) + 1 == options_.messages;
      serve_one(d.frame, dead, **ep);
    }
    if (last) wake_all();  // run() and the other bypass threads see the limit
    ++served;
    if (dead) break;
  }
  logger_->info("Worker {}: done with the client at {} ({} messages served directly)", name_, address, served);
}

}  // namespace palm::servers
