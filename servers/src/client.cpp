// Client: pylm's Client over one PUSH and one SUB (client.hpp).

#include "palm/servers/client.hpp"

#include <algorithm>
#include <thread>
#include <utility>

#include "client_internal.hpp"
#include "palm/transport/auto_select.hpp"
#include "palm/transport/shm/host.hpp"

namespace palm::servers {

namespace {

using detail::Clock;
using detail::kCancelSlice;
using namespace std::chrono_literals;

// A job whose PUSH is full sleeps this long for a reply before it retries
// the send: room on a PUSH rings nobody.
constexpr std::chrono::milliseconds kFullRetry{1};

std::span<const std::byte> bytes_of(std::string_view s) noexcept {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

std::string string_of(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

std::string join(const std::vector<std::string>& steps) {
  std::string out;
  for (const auto& s : steps) {
    if (!out.empty()) out += ' ';
    out += s;
  }
  return out;
}

std::string ms_text(std::chrono::milliseconds ms) { return std::to_string(ms.count()) + " ms"; }

const char* scheme_name(const transport::Endpoint& e) noexcept {
  return e.scheme() == transport::Scheme::kShm ? "shm" : transport::to_string(e.scheme());
}

}  // namespace

Client::Client(transport::Context& ctx, ClientOptions options)
    : ctx_(&ctx),
      options_(std::move(options)),
      uuid_(transport::make_uuid4()),
      pipeline_(options_.session.empty() ? transport::make_uuid4() : options_.session),
      push_address_(options_.push_address),
      sub_address_(options_.sub_address),
      logger_(server_logger(options_.server_name.empty() ? std::string_view("client")
                                                         : std::string_view(options_.server_name),
                            options_.log_level)) {}

Client::~Client() {
  // The SUB and PUSH close before the cache's REQ (members in reverse order
  // would do the same; said for the reader).
  sub_.reset();
  push_.reset();
}

Result<std::unique_ptr<Client>> Client::connect(transport::Context& ctx, ClientOptions options) {
  if (options.timeout.count() <= 0) {
    return make_error(Errc::kInvalidArgument, "ClientOptions::timeout must be > 0 ms, not " + ms_text(options.timeout));
  }
  if (options.settle.count() < 0) {
    return make_error(Errc::kInvalidArgument, "ClientOptions::settle must be >= 0 ms");
  }
  if (options.this_config) {
    if (options.push_address.empty() || options.sub_address.empty()) {
      return make_error(Errc::kInvalidArgument,
                        "this_config asks the cache nothing: give push_address and sub_address");
    }
  } else if (options.db_address.empty()) {
    return make_error(Errc::kInvalidArgument, "no db_address: the client asks the server's cache for its name "
                                              "and addresses (or give this_config and both addresses)");
  }
  std::unique_ptr<Client> c(new Client(ctx, std::move(options)));
  const ClientOptions& o = c->options_;

  if (!o.this_config) {
    auto db = transport::DiscoveryClient::connect(ctx, o.db_address, o.server_name);
    if (!db) return tl::unexpected(std::move(db.error()));
    c->db_.emplace(std::move(*db));
    // PROTOCOL.md "Cache service": "A client gets `name` and raises 'You are
    // connecting to the wrong server' if it differs from its `server_name`
    // (or is missing)".
    auto name = c->db_->get("name", o.timeout);
    if (!name) return tl::unexpected(std::move(name.error()));
    if (*name != o.server_name) {
      return make_error(Errc::kInvalidArgument, "You are connecting to the wrong server: asked for '" +
                                                    o.server_name + "', the server at " + o.db_address + " is " +
                                                    (name->empty() ? std::string("unnamed (no `name` key)")
                                                                   : "'" + *name + "'"));
    }
    // "then `pub_address` unless given `sub_address` and `pull_address`
    // unless given `push_address`".
    if (c->sub_address_.empty()) {
      auto pub = c->db_->get("pub_address", o.timeout);
      if (!pub) return tl::unexpected(std::move(pub.error()));
      if (pub->empty()) {
        return make_error(Errc::kNotFound, "the server '" + o.server_name + "' at " + o.db_address +
                                               " published no pub_address; give sub_address");
      }
      c->sub_address_ = std::move(*pub);
    }
    if (c->push_address_.empty()) {
      auto pull = c->db_->get("pull_address", o.timeout);
      if (!pull) return tl::unexpected(std::move(pull.error()));
      if (pull->empty()) {
        return make_error(Errc::kNotFound, "the server '" + o.server_name + "' at " + o.db_address +
                                               " published no pull_address (a Hub takes no pushes); "
                                               "give push_address");
      }
      c->push_address_ = std::move(*pull);
    }
  }
  if (auto r = c->open_endpoints(); !r) return tl::unexpected(std::move(r.error()));
  c->logger_->info("Client {} to '{}': push {}, sub {}", c->uuid_.substr(0, 8), o.server_name,
                   scheme_name(*c->push_), scheme_name(*c->sub_));
  if (o.bypass) c->open_bypass();
  return c;
}

Result<void> Client::open_endpoints() {
  using transport::EndpointSpec;
  using transport::Pattern;
  const ClientOptions& o = options_;
  EndpointSpec sub = EndpointSpec::connect_to(Pattern::kSub, sub_address_);
  sub.subscriptions = {uuid_};
  EndpointSpec push = EndpointSpec::connect_to(Pattern::kPush, push_address_);
  transport::AutoOptions ao;
  ao.mode = o.transport;
  ao.server_name = o.server_name;
  ao.discovery_timeout = o.timeout;
  // The SUB first: on shm it is then attached before the PUSH (see the
  // header comment); on tcp its subscription travels while we settle.
  auto open = [&](const EndpointSpec& spec) -> Result<std::unique_ptr<transport::Endpoint>> {
    // this_config asks the cache nothing, so no auto-selection either: the
    // addresses are opened as given (tcp://, or an explicit shm://).
    if (o.this_config) return ctx_->open(spec);
    return transport::open_auto(*ctx_, spec, o.db_address, ao);
  };
  auto s = open(sub);
  if (!s) {
    return make_error(s.error().code, "opening the SUB to " + sub_address_ + ": " + s.error().message);
  }
  sub_ = std::move(*s);
  auto p = open(push);
  if (!p) {
    return make_error(p.error().code, "opening the PUSH to " + push_address_ + ": " + p.error().message);
  }
  push_ = std::move(*p);

  const bool shm = sub_->scheme() == transport::Scheme::kShm;
  if (o.settle.count() > 0 && (!shm || o.shm_settle)) {
    // The slow joiner (header comment): the only wait of its kind, once.
    const auto end = Clock::now() + o.settle;
    for (auto now = Clock::now(); now < end; now = Clock::now()) {
      if (cancelled()) return cancelled_error();
      std::this_thread::sleep_for(std::min<Clock::duration>(end - now, kCancelSlice));
    }
  }
  return {};
}

transport::Scheme Client::push_scheme() const noexcept { return push_->scheme(); }
transport::Scheme Client::sub_scheme() const noexcept { return sub_->scheme(); }

ClientStats Client::stats() const noexcept {
  // relaxed: independent counters, a snapshot.
  ClientStats s;
  s.sent = counters_.sent.load(std::memory_order_relaxed);
  s.received = counters_.received.load(std::memory_order_relaxed);
  s.errors = counters_.errors.load(std::memory_order_relaxed);
  s.wrong_topic = counters_.wrong_topic.load(std::memory_order_relaxed);
  s.timeouts = counters_.timeouts.load(std::memory_order_relaxed);
  s.stale = counters_.stale.load(std::memory_order_relaxed);
  return s;
}

bool Client::cancelled() const noexcept {
  // acquire: the flag's writer (a signal handler) publishes nothing else,
  // but this keeps the check from moving above the caller's work.
  return options_.cancel != nullptr && options_.cancel->load(std::memory_order_acquire);
}

tl::unexpected<Error> Client::cancelled_error() { return make_error(Errc::kClosed, "interrupted"); }

std::string Client::sub_name() const {
  // "tcp://H:P", or "tcp://H:P (shm://SEGMENT/outbound)" when shm carries it.
  const std::string& carried = sub_->address();
  return carried == sub_address_ ? sub_address_ : sub_address_ + " (" + carried + ")";
}

tl::unexpected<Error> Client::timeout_error(std::string what) {
  counters_.timeouts.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  // On ZeroMQ a server that died is only silence: say so when the
  // connections to it are down (transport::EndpointStats::connections).
  std::string down;
  for (const auto* ep : {push_.get(), sub_.get()}) {
    if (ep != nullptr && transport::is_zmq(ep->scheme()) && ep->stats().connections == 0) {
      down += (down.empty() ? "" : " nor ") + ep->address();
    }
  }
  if (!down.empty()) what = "the server is gone (no connection to " + down + "): " + what;
  return make_error(Errc::kTimeout, std::move(what));
}

std::uint64_t Client::master_window() const noexcept {
  std::uint64_t window = std::max<std::uint32_t>(options_.window, 1);
  // Over shm, no more in flight than the SUB's channel holds: each message
  // answers once (the master's default scatter), so its replies always fit
  // and a client descheduled for a while (a loaded machine) loses none to
  // the master's slow-subscriber drop (a channel full longer than
  // shm::HostOptions::slow_subscriber_wait). Only a scatter that answers
  // several times per message can still overrun it (lost() says so).
  const auto* shm = dynamic_cast<const shm::ShmEndpoint*>(sub_.get());
  if (shm != nullptr && shm->inbound_capacity() != 0) window = std::min<std::uint64_t>(window, shm->inbound_capacity());
  return window;
}

std::uint64_t Client::sub_lost() const noexcept {
  const auto* shm = dynamic_cast<const shm::ShmEndpoint*>(sub_.get());
  return shm != nullptr ? shm->lost() : 0;
}

Result<void> Client::send_one(std::string_view function, std::span<const std::byte> payload,
                              std::string_view cache, Clock::time_point deadline) {
  MessageView m;
  m.pipeline = pipeline_;
  m.client = uuid_;
  m.stage = 0;
  m.function = function;
  m.cache = cache;
  m.payload = payload;
  const Target t = push_target();
  auto frame = Frame::build(*t.pool, t.slot, m);
  if (!frame) return tl::unexpected(std::move(frame.error()));
  for (;;) {
    const auto now = Clock::now();
    if (now >= deadline) {
      return timeout_error("sending '" + std::string(function) + "' to " + push_address_ + ": the PUSH stayed full for " +
                           ms_text(options_.timeout) + " (is the server up?)");
    }
    const auto slice = std::min<Clock::duration>(deadline - now, kCancelSlice);
    const transport::SendResult r = push_->send_for(*frame, slice);
    if (r == transport::SendResult::kQueued) break;
    if (r != transport::SendResult::kTimeout && r != transport::SendResult::kFull) {
      return make_error(Errc::kClosed, "sending to " + push_address_ + ": " + transport::to_string(r));
    }
    if (cancelled()) return cancelled_error();
  }
  counters_.sent.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  return {};
}

bool Client::accept(transport::Delivery& d, std::string& out, bool direct) {
  if (d.event != transport::Event::kMessage) return false;
  auto view = d.frame.view();
  if (!view) {
    logger_->warn("Client {}: an unreadable reply was skipped: {}", uuid_.substr(0, 8), view.error().describe());
    return false;
  }
  if (!direct && view->topic != uuid_) {
    // PROTOCOL.md "Message flow": pylm's job raises on a topic that is not
    // its uuid; palm counts it and goes on.
    counters_.wrong_topic.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
    logger_->debug("Client {}: skipped a reply under topic '{}'", uuid_.substr(0, 8), view->topic);
    return false;
  }
  const MessageView& m = view->message;
  if (!m.error.empty()) {
    counters_.errors.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
    logger_->warn("Reply to {} failed: {}", m.function, m.error);
  }
  out = string_of(m.payload);
  counters_.received.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  return true;
}

bool Client::accept_view(transport::Delivery& d, std::span<const std::byte>& out, bool direct) {
  std::string ignored;
  if (d.event != transport::Event::kMessage) return false;
  const FrameView* view = d.frame.peek();
  if (view == nullptr) return accept(d, ignored, direct);  // logs it
  if ((!direct && view->topic != uuid_) || !view->message.error.empty()) {
    // The rare paths (counted and logged there); the payload is then
    // viewed again below.
    if (!accept(d, ignored, direct)) return false;
    out = view->message.payload;
    return true;
  }
  out = view->message.payload;
  counters_.received.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  return true;
}

void Client::drop_stale() {
  transport::Delivery d;
  std::string ignored;
  while (sub_->try_recv(d)) {
    if (accept(d, ignored)) {
      // Counted as received by accept(); it is stale, not a reply handed out.
      counters_.received.fetch_sub(1, std::memory_order_relaxed);  // relaxed: a statistic
      counters_.stale.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

Result<std::string> Client::await_reply(Clock::time_point deadline, std::string_view what, std::uint64_t got,
                                        std::uint64_t wanted) {
  transport::Delivery d;
  std::string out;
  for (;;) {
    const auto now = Clock::now();
    if (now >= deadline) {
      return timeout_error("no reply to " + std::string(what) + " from " + sub_address_ + " within " +
                           ms_text(options_.timeout) + ": " + std::to_string(got) + " of " + std::to_string(wanted) +
                           " replies came");
    }
    const auto slice = options_.cancel != nullptr ? std::min<Clock::duration>(deadline - now, kCancelSlice)
                                                  : Clock::duration(deadline - now);
    const WaitResult r = sub_->recv_for(d, slice);
    if (r == WaitResult::kReady) {
      if (accept(d, out)) return out;
      continue;
    }
    if (r == WaitResult::kShutdown) {
      return make_error(Errc::kClosed, "the server is gone: the SUB to " + sub_name() + " closed while awaiting " + std::string(what) +
                                           " (" + std::to_string(got) + " of " + std::to_string(wanted) +
                                           " replies came)");
    }
    if (cancelled()) return cancelled_error();
  }
}

Result<std::string> Client::eval(std::string_view function, std::span<const std::byte> payload,
                                 std::string_view cache) {
  auto r = eval(function, payload, 1, cache);
  if (!r) return tl::unexpected(std::move(r.error()));
  return std::move(r->front());
}

Result<std::string> Client::eval(std::string_view function, std::string_view payload, std::string_view cache) {
  return eval(function, bytes_of(payload), cache);
}

Result<std::string> Client::eval(const std::vector<std::string>& function, std::string_view payload,
                                 std::string_view cache) {
  return eval(join(function), bytes_of(payload), cache);
}

Result<std::vector<std::string>> Client::eval(std::string_view function, std::span<const std::byte> payload,
                                              std::uint64_t messages, std::string_view cache) {
  if (messages == 0) return make_error(Errc::kInvalidArgument, "eval awaits at least 1 reply (messages = 0)");
  if (messages == 1 && bypass_ != nullptr) {
    // One message, one reply: the loop of job carries it (the bypass when
    // it has workers, else the master).
    bool made = false;
    std::string reply;
    auto got = run_job(
        function,
        [&](Frame& out, const Target& t) -> Result<Made> {
          if (std::exchange(made, true)) return Made::kDone;
          MessageView m;
          m.pipeline = pipeline_;
          m.client = uuid_;
          m.function = function;
          m.cache = cache;
          m.payload = payload;
          m.dispatch_id = t.dispatch_id;
          auto f = Frame::build(*t.pool, t.slot, m);
          if (!f) return tl::unexpected(std::move(f.error()));
          out = std::move(*f);
          return Made::kBuilt;
        },
        [&](transport::Delivery& d, bool direct) { return accept(d, reply, direct); }, 1);
    if (!got) return tl::unexpected(std::move(got.error()));
    std::vector<std::string> replies;  // not {reply}: an initializer list copies
    replies.push_back(std::move(reply));
    return replies;
  }
  std::lock_guard lock(call_mu_);
  drop_stale();
  const auto deadline = Clock::now() + options_.timeout;
  if (auto s = send_one(function, payload, cache, deadline); !s) return tl::unexpected(std::move(s.error()));
  std::vector<std::string> replies;
  replies.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(messages, 1024)));
  std::string what(1, '\'');  // appended: g++ 12 warns falsely (-Wrestrict) on "'" + string
  what.append(function).push_back('\'');
  while (replies.size() < messages) {
    auto r = await_reply(deadline, what, replies.size(), messages);
    if (!r) return tl::unexpected(std::move(r.error()));
    replies.push_back(std::move(*r));
  }
  return replies;
}

Result<std::uint64_t> Client::job(std::string_view function, const std::function<bool(std::string& payload)>& next,
                                  const std::function<void(std::string_view reply)>& on_reply,
                                  std::uint64_t messages, std::string_view cache) {
  std::string payload;
  std::string reply;
  const auto make = [&](Frame& out, const Target& t) -> Result<Made> {
    if (!next(payload)) return Made::kDone;
    MessageView m;
    m.pipeline = pipeline_;
    m.client = uuid_;
    m.function = function;
    m.cache = cache;
    m.payload = bytes_of(payload);
    m.dispatch_id = t.dispatch_id;
    auto f = Frame::build(*t.pool, t.slot, m);
    if (!f) return tl::unexpected(std::move(f.error()));
    out = std::move(*f);
    return Made::kBuilt;
  };
  return run_job(
      function, make,
      [&](transport::Delivery& d, bool direct) {
        if (!accept(d, reply, direct)) return false;
        on_reply(reply);
        return true;
      },
      messages);
}

Client::Target Client::push_target() const {
  // A shm PUSH takes frames of its segment's pool without a copy.
  if (push_->scheme() == transport::Scheme::kShm) {
    if (auto* shm = dynamic_cast<shm::ShmEndpoint*>(push_.get()); shm != nullptr) {
      return {&shm->pool(), shm->slot(), 0};
    }
  }
  return {&ctx_->pool(), ctx_->slot(), 0};
}

Result<std::uint64_t> Client::job_in_place(std::string_view function, std::size_t max_payload, const Fill& fill,
                                           const OnReplyBytes& on_reply, std::uint64_t messages,
                                           std::string_view cache) {
  MessageView fields;
  fields.pipeline = pipeline_;
  fields.client = uuid_;
  fields.function = function;
  fields.cache = cache;
  FrameWriter writer;
  const auto make = [&](Frame& out, const Target& t) -> Result<Made> {
    fields.dispatch_id = t.dispatch_id;
    if (auto r = writer.begin(*t.pool, t.slot, fields, {}, max_payload); !r) {
      return tl::unexpected(std::move(r.error()));
    }
    const std::optional<std::size_t> n = fill(writer.payload());
    if (!n) {
      writer.abandon();
      return Made::kDone;
    }
    auto h = writer.commit(*n);
    if (!h) return tl::unexpected(std::move(h.error()));
    out = Frame(*t.pool, t.slot, *h);
    return Made::kBuilt;
  };
  std::span<const std::byte> reply;
  return run_job(
      function, make,
      [&](transport::Delivery& d, bool direct) {
        if (!accept_view(d, reply, direct)) return false;
        on_reply(reply);
        return true;
      },
      messages);
}

Result<std::uint64_t> Client::run_job(std::string_view function, const Make& make, const OnDelivery& on_reply,
                                      std::uint64_t messages) {
  std::lock_guard lock(call_mu_);
  drop_stale();
  if (bypass_ready()) return run_bypass(function, make, on_reply, messages);
  return run_master(function, make, on_reply, messages);
}

Result<std::uint64_t> Client::run_master(std::string_view function, const Make& make, const OnDelivery& on_reply,
                                         std::uint64_t messages) {
  const std::uint64_t window = master_window();
  JobState job(messages);
  Frame pending;  // built, not yet taken by the PUSH
  const Target target = push_target();
  transport::Delivery d;
  bool full = false;  // the PUSH refused the last send: this round's
  // Replies dropped for this client since the job began: the master's PUB
  // gives a subscriber whose channel stays full slow_subscriber_wait
  // (shm::HostOptions), then drops what does not fit. They never come.
  const std::uint64_t lost_before = sub_lost();
  const auto lost = [&] { return sub_lost() - lost_before; };
  const auto lost_note = [&](std::uint64_t n) {
    return fmt::format("{} replies were lost: the server dropped them because this client read its SUB ({}) too "
                       "slowly and the channel stayed full",
                       n, sub_name());
  };
  const std::function<std::string()> stalled = [&] {
    const std::uint64_t n = lost();
    return job.stalled(function, "", options_.timeout,
                       (full ? " (the PUSH to " + push_address_ + " is full)" : std::string()) +
                           (n != 0 ? "; " + lost_note(n) : std::string()));
  };
  // Hands one delivery to the caller if it is a reply for us.
  const auto take = [&]() {
    if (!on_reply(d, false)) return false;
    ++job.got;
    return true;
  };

  while (!job.finished()) {
    bool progressed = false;
    full = false;
    // Send while the window has room. In flight: sent and not answered (a
    // master's scatter may answer more than once, hence the guard).
    while (!job.done_sending && (job.sent > job.got ? job.sent - job.got : 0) < window) {
      if (!pending) {
        auto made = make(pending, target);
        if (!made) return tl::unexpected(std::move(made.error()));
        if (*made == Made::kDone) {
          job.done_sending = true;
          break;
        }
      }
      const transport::SendResult r = push_->try_send(pending);
      if (r == transport::SendResult::kQueued) {
        ++job.sent;
        counters_.sent.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
        progressed = true;
        continue;
      }
      if (r == transport::SendResult::kFull) {
        full = true;
        break;
      }
      return make_error(Errc::kClosed, "sending to " + push_address_ + ": " + transport::to_string(r) + " after " +
                                           std::to_string(job.sent) + " messages");
    }
    // Drain what came, without waiting.
    while (!job.finished() && sub_->try_recv(d)) progressed = take() || progressed;
    if (job.finished()) break;
    if (!progressed) {
      // When every reply still awaited is one of the lost, none will come:
      // fail now rather than after `timeout` of silence. Awaited: those of
      // the messages in flight, or, when the caller named how many replies
      // the job makes (a scatter may answer a message several times: the
      // only way to overrun the capped window, master_window), those not yet
      // come. Read at every idle round, a relaxed load: a drop counted after
      // this look (the master was descheduled between its full check and the
      // count) is seen at the next round, or named by the timeout's message.
      const std::uint64_t n = lost();
      const std::uint64_t in_flight = std::max<std::uint64_t>(
          job.sent > job.got ? job.sent - job.got : 0, job.messages > job.got ? job.messages - job.got : 0);
      if (n != 0 && in_flight <= n) {
        return make_error(Errc::kExhausted, fmt::format("job '{}': {}; {} replies of {} came", function, lost_note(n),
                                                        job.got,
                                                        job.messages > 0 ? std::to_string(job.messages)
                                                                         : std::to_string(job.sent) + " sent"));
      }
    }
    // Sleep on the SUB's doorbell (recv_for) until a reply comes. A full
    // PUSH gains room without ringing us: retry it soon.
    const auto cap = full ? Clock::duration(kFullRetry) : Clock::duration::max();
    const auto slice = after_round(job, progressed, cap, stalled);
    if (!slice) return tl::unexpected(std::move(slice.error()));
    if (*slice == Clock::duration::zero()) continue;
    const WaitResult w = sub_->recv_for(d, *slice);
    if (w == WaitResult::kReady) {
      if (take()) job.last_progress = Clock::now();
    } else if (w == WaitResult::kShutdown) {
      return make_error(Errc::kClosed, "the server is gone: the SUB to " + sub_name() + " closed during job '" + std::string(function) +
                                           "' after " + std::to_string(job.got) + " replies");
    }
  }
  return job.got;
}

Result<Clock::duration> Client::after_round(JobState& job, bool progressed, Clock::duration cap,
                                            const std::function<std::string()>& stalled) {
  const auto now = Clock::now();
  if (progressed) {
    job.last_progress = now;
    return Clock::duration::zero();
  }
  if (cancelled()) return cancelled_error();
  const auto deadline = job.last_progress + options_.timeout;
  if (now >= deadline) return timeout_error(stalled());
  Clock::duration slice = std::min<Clock::duration>(deadline - now, cap);
  if (options_.cancel != nullptr) slice = std::min<Clock::duration>(slice, kCancelSlice);
  return slice;
}

Result<std::string> Client::cache_request(std::string_view instruction, std::string_view cache,
                                          std::span<const std::byte> payload) {
  std::lock_guard lock(call_mu_);
  if (!db_) {
    if (options_.db_address.empty()) {
      return make_error(Errc::kInvalidArgument, "no db_address: the cache cannot be asked");
    }
    auto db = transport::DiscoveryClient::connect(*ctx_, options_.db_address, options_.server_name);
    if (!db) return tl::unexpected(std::move(db.error()));
    db_.emplace(std::move(*db));
  }
  auto r = db_->request(instruction, cache, payload, options_.timeout);
  if (!r && r.error().code == Errc::kTimeout) {
    counters_.timeouts.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  }
  return r;
}

Result<std::string> Client::set(std::span<const std::byte> value, std::string_view key) {
  // PROTOCOL.md: "with a `session` the key sent is session+key (no
  // separator)"; no key: the server makes a uuid4 (not prefixed).
  std::string sent;
  if (!key.empty()) {
    sent = options_.session;
    sent += key;
  }
  return cache_request("set", sent, value);
}

Result<std::string> Client::set(std::string_view value, std::string_view key) { return set(bytes_of(value), key); }

Result<std::string> Client::get(std::string_view key) { return cache_request("get", {}, bytes_of(key)); }

Result<std::string> Client::remove(std::string_view key) { return cache_request("delete", {}, bytes_of(key)); }

}  // namespace palm::servers
