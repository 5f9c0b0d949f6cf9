#pragma once
// The tests of the pattern suite (pattern_suite.hpp); instantiated per scheme
// by zmq_patterns_test.cpp and zmq_patterns_proc_test.cpp.

namespace palm::transport::test {

// PUSH/PULL load-balances: with 1..4 consumers every message arrives exactly
// once (the sets of sequence ids are compared).
TEST_P(TransportPushPull, EveryMessageExactlyOnce) {
  auto push = bind(Pattern::kPush, "push");
  auto results = bind(Pattern::kPull, "results");
  auto control = bind(Pattern::kPub, "control");
  ASSERT_TRUE(push && results && control);
  Peers peers(scheme(), ctx());
  const int k = consumers();
  for (int i = 0; i < k; ++i) {
    peers.start("consumer", {push->address(), results->address(), control->address(),
                             concat("c", i)});
  }
  constexpr std::uint64_t kMessages = 2000;
  std::set<std::string> hello, ended;
  std::map<std::uint64_t, int> seen;
  std::map<std::string, int> per_consumer;
  const auto on = [&](const TestMsg& m) {
    if (m.function == "hello") hello.insert(m.client);
    if (m.function == "end") ended.insert(m.client);
    if (m.function == "got") {
      ++seen[m.seq];
      ++per_consumer[m.client];
    }
  };
  collect(*results, on, [&] { return hello.size() == static_cast<std::size_t>(k); });
  ASSERT_EQ(hello.size(), static_cast<std::size_t>(k));
  ASSERT_EQ(control->wait_subscriptions(static_cast<std::uint64_t>(k), 30s), WaitResult::kReady);

  for (std::uint64_t seq = 0; seq < kMessages; ++seq) {
    Frame f = make_msg(ctx(), "test", "work", seq);
    ASSERT_TRUE(send_draining(*push, f, *results, on)) << "seq " << seq;
  }
  collect(*results, on, [&] { return seen.size() == kMessages; });
  ASSERT_EQ(seen.size(), kMessages);
  for (const auto& [seq, n] : seen) ASSERT_EQ(n, 1) << "seq " << seq << " arrived " << n << " times";
  for (const auto& [id, n] : per_consumer) std::printf("  %s: %d messages\n", id.c_str(), n);
  // shm: every consumer attached by name, and the segment carried it all.
  const auto kk = static_cast<std::uint64_t>(k);
  expect_carried_by_shm(*push, static_cast<std::size_t>(k), kMessages, 0);
  expect_carried_by_shm(*results, static_cast<std::size_t>(k), 0, kMessages + kk);

  publish_control(*control, "stop");
  collect(*results, on, [&] { return ended.size() == static_cast<std::size_t>(k); });
  EXPECT_EQ(ended.size(), static_cast<std::size_t>(k));
  for (int i = 0; i < k; ++i) EXPECT_EQ(peers.exit_code(static_cast<std::size_t>(i), 30s), 0);
  EXPECT_EQ(push->stats().messages_out, kMessages);
  EXPECT_EQ(push->stats().errors, 0u);
}

// PUB/SUB: topic prefixes filter, one publisher fans out to three
// subscribers; the publisher waits for their subscriptions (no slow joiner).
// PROTOCOL.md: "PUB messages are two frames, [topic (utf-8), serialized
// PalmMessage]; SUB matches topics by prefix."
TEST_P(TransportPatterns, PubSubFiltersByPrefixAndFansOut) {
  auto pub = bind(Pattern::kPub, "pub");
  auto results = bind(Pattern::kPull, "results");
  ASSERT_TRUE(pub && results);
  Peers peers(scheme(), ctx());
  peers.start("subscriber", {pub->address(), results->address(), "all", ""});
  peers.start("subscriber", {pub->address(), results->address(), "a", "a"});
  peers.start("subscriber", {pub->address(), results->address(), "bc", "b", "c."});
  // Subscriptions: ""+$end, a+$end, b+c.+$end.
  ASSERT_EQ(pub->wait_subscriptions(7, 30s), WaitResult::kReady);

  const char* const topics[] = {"a.1", "b.2", "c.3", "c.x", "d"};
  constexpr std::uint64_t kMessages = 600;
  std::map<std::string, std::set<std::uint64_t>> got;
  std::map<std::string, int> duplicates;
  std::set<std::string> ended;
  const auto on = [&](const TestMsg& m) {
    if (m.function == "end") ended.insert(m.client);
    if (m.function == "got" && !got[m.client].insert(m.seq).second) ++duplicates[m.client];
  };
  for (std::uint64_t seq = 0; seq < kMessages; ++seq) {
    Frame f = make_msg(ctx(), "test", "news", seq, topics[seq % 5]);
    ASSERT_TRUE(send_draining(*pub, f, *results, on));
  }
  // Every report in (before "$end": the subscribers leave after it).
  collect(*results, on, [&] {
    return got["all"].size() == kMessages && got["a"].size() == kMessages / 5 &&
           got["bc"].size() == 3 * kMessages / 5;
  });
  constexpr std::uint64_t kDelivered = kMessages + kMessages / 5 + 3 * kMessages / 5;
  expect_carried_by_shm(*pub, 3, kDelivered, 0);
  expect_carried_by_shm(*results, 3, 0, kDelivered);
  Frame end = make_msg(ctx(), "test", "end", 0, "$end");
  ASSERT_TRUE(send_draining(*pub, end, *results, on));
  collect(*results, on, [&] { return ended.size() == 3; });
  ASSERT_EQ(ended.size(), 3u);

  std::set<std::uint64_t> all, a, bc;
  for (std::uint64_t seq = 0; seq < kMessages; ++seq) {
    all.insert(seq);
    if (seq % 5 == 0) a.insert(seq);
    if (seq % 5 >= 1 && seq % 5 <= 3) bc.insert(seq);
  }
  EXPECT_EQ(got["all"], all);
  EXPECT_EQ(got["a"], a);
  EXPECT_EQ(got["bc"], bc);
  EXPECT_TRUE(duplicates.empty());
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(peers.exit_code(i, 30s), 0);
}

// REQ/REP: the rep side answers each request with raw bytes (PROTOCOL.md
// "The reply is raw bytes").
TEST_P(TransportZmqPatterns, ReqRepAnswersWithRawBytes) {
  auto rep = bind(Pattern::kRep, "rep");
  ASSERT_TRUE(rep);
  Peers peers(scheme(), ctx());
  constexpr int kRequests = 50;
  const std::size_t requester = peers.start("requester", {rep->address(), std::to_string(kRequests)});
  int served = 0;
  std::optional<int> code;
  for (const auto deadline = Clock::now() + 30s; !code && Clock::now() < deadline;) {
    Delivery d;
    if (rep->recv_for(d, 20ms) == WaitResult::kReady) {
      auto m = read_msg(d);
      ASSERT_TRUE(m);
      ASSERT_EQ(d.body, Body::kMessage);
      auto reply = ctx().raw(concat("echo:", m->seq));
      ASSERT_TRUE(reply);
      Envelope to;
      to.peer = d.peer;
      to.body = Body::kRaw;
      ASSERT_EQ(rep->send_for(*reply, 10s, to), SendResult::kQueued);
      ++served;
    }
    code = peers.exit_code(requester, 0ms);
  }
  EXPECT_EQ(code, 0);
  EXPECT_EQ(served, kRequests);
}

// The discovery client asks a cache; a request that timed out does not wedge
// the REQ socket, and its late reply is not taken for the next one's.
TEST_P(TransportZmqPatterns, DiscoveryGetsKeysAndSurvivesATimeout) {
  auto rep = bind(Pattern::kRep, "db");
  ASSERT_TRUE(rep);
  Peers peers(scheme(), ctx());
  const std::size_t client = peers.start("discoverer", {rep->address()});
  const std::map<std::string, std::string> cache = {{"name", "my_server"},
                                                    {"pub_address", "tcp://127.0.0.1:5556"}};
  PeerId held = PeerId::kNone;  // the "slow" request, answered late
  std::optional<int> code;
  const auto answer = [&](PeerId peer, std::string_view value) {
    auto reply = ctx().raw(value);
    ASSERT_TRUE(reply);
    Envelope to;
    to.peer = peer;
    to.body = Body::kRaw;
    ASSERT_EQ(rep->send_for(*reply, 10s, to), SendResult::kQueued);
  };
  for (const auto deadline = Clock::now() + 30s; !code && Clock::now() < deadline;) {
    Delivery d;
    if (rep->recv_for(d, 20ms) == WaitResult::kReady) {
      auto v = d.frame.view();
      ASSERT_TRUE(v);
      // PROTOCOL.md: clients send "<server>.get", payload = the key.
      EXPECT_EQ(v->message.function, "my_server.get");
      EXPECT_EQ(v->message.pipeline.size(), 36u);
      EXPECT_EQ(v->message.client.size(), 36u);
      const std::string key = string_of(v->message.payload);
      if (key == "slow") {
        held = d.peer;
        continue;
      }
      if (held != PeerId::kNone) {
        answer(held, "late");
        held = PeerId::kNone;
      }
      auto it = cache.find(key);
      answer(d.peer, it == cache.end() ? std::string_view{} : std::string_view(it->second));
    }
    code = peers.exit_code(client, 0ms);
  }
  EXPECT_EQ(code, 0);
}

// Addressed dispatch: each worker holds at most its credits; a worker out of
// credits is refused (kNoCredit); results come back exactly once and return
// their credits; both workers are used.
TEST_P(TransportPatterns, DispatchHonoursCredits) {
  auto dispatcher = bind(Pattern::kDispatcher, "dispatch");
  auto control = bind(Pattern::kPub, "control");
  ASSERT_TRUE(dispatcher && control);
  Peers peers(scheme(), ctx());
  constexpr std::uint32_t kCredits = 4;
  peers.start("worker", {dispatcher->address(), control->address(), "A", "4"});
  peers.start("worker", {dispatcher->address(), control->address(), "B", "4"});
  std::vector<PeerId> workers;
  for (const auto deadline = Clock::now() + 30s; workers.size() < 2 && Clock::now() < deadline;) {
    Delivery d;
    if (dispatcher->recv_for(d, 50ms) != WaitResult::kReady) continue;
    ASSERT_EQ(d.event, Event::kPeerJoined);
    EXPECT_EQ(d.credits, kCredits);
    workers.push_back(d.peer);
  }
  ASSERT_EQ(workers.size(), 2u);
  ASSERT_EQ(control->wait_subscriptions(2, 30s), WaitResult::kReady);

  constexpr std::uint64_t kMessages = 400;
  std::uint64_t next = 0;
  std::map<std::uint64_t, int> results;
  std::map<PeerId, int> per_worker;
  // The workers hold everything until "go": credits run out.
  for (PeerId w : workers) {
    for (std::uint32_t i = 0; i < kCredits; ++i) {
      Frame f = make_msg(ctx(), "test", "work", next);
      ASSERT_EQ(dispatcher->try_send(f, {w}), SendResult::kQueued);
      ++next;
    }
    EXPECT_EQ(dispatcher->credits(w), 0u);
    Frame extra = make_msg(ctx(), "test", "work", next);
    EXPECT_EQ(dispatcher->try_send(extra, {w}), SendResult::kNoCredit);
    EXPECT_TRUE(extra);  // still the caller's
  }
  Frame stranger = make_msg(ctx(), "test", "work", next);
  EXPECT_EQ(dispatcher->try_send(stranger, {static_cast<PeerId>(12345)}), SendResult::kPeerGone);
  publish_control(*control, "go");

  for (const auto deadline = Clock::now() + 30s;
       results.size() < kMessages && Clock::now() < deadline;) {
    for (PeerId w : workers) {
      while (next < kMessages && dispatcher->credits(w) > 0) {
        Frame f = make_msg(ctx(), "test", "work", next);
        if (dispatcher->try_send(f, {w}) != SendResult::kQueued) break;
        ++next;
      }
    }
    Delivery d;
    if (dispatcher->recv_for(d, 50ms) != WaitResult::kReady) continue;
    auto m = read_msg(d);
    ASSERT_TRUE(m) << "event " << static_cast<int>(d.event);
    ++results[m->seq];
    ++per_worker[d.peer];
  }
  ASSERT_EQ(results.size(), kMessages);
  for (const auto& [seq, n] : results) ASSERT_EQ(n, 1) << "seq " << seq;
  EXPECT_GT(per_worker[workers[0]], 0);
  EXPECT_GT(per_worker[workers[1]], 0);
  for (PeerId w : workers) EXPECT_EQ(dispatcher->credits(w), kCredits);
  EXPECT_EQ(dispatcher->peers().size(), 2u);
  expect_carried_by_shm(*dispatcher, 2, kMessages, kMessages);
  expect_carried_by_shm(*control, 2, 1, 0);
  publish_control(*control, "stop");
  for (std::size_t i = 0; i < 2; ++i) EXPECT_EQ(peers.exit_code(i, 30s), 0);
}

// A worker vanishes mid-stream (SIGKILL; for threads, its endpoint closes at
// once): the dispatcher is told it is gone, re-sends what it held to the
// other worker, and every message gets its result.
TEST_P(TransportPatterns, DispatchGoesOnWhenAWorkerVanishes) {
  auto dispatcher = bind(Pattern::kDispatcher, "dispatch");
  auto control = bind(Pattern::kPub, "control");
  ASSERT_TRUE(dispatcher && control);
  Peers peers(scheme(), ctx());
  const std::size_t a = peers.start("worker", {dispatcher->address(), control->address(), "A", "4"});
  peers.start("worker", {dispatcher->address(), control->address(), "B", "4"});
  std::map<std::string, PeerId> by_name;
  std::vector<PeerId> alive;
  for (const auto deadline = Clock::now() + 30s; alive.size() < 2 && Clock::now() < deadline;) {
    Delivery d;
    if (dispatcher->recv_for(d, 50ms) == WaitResult::kReady && d.event == Event::kPeerJoined) {
      alive.push_back(d.peer);
    }
  }
  ASSERT_EQ(alive.size(), 2u);
  ASSERT_EQ(control->wait_subscriptions(2, 30s), WaitResult::kReady);
  publish_control(*control, "go");

  constexpr std::uint64_t kMessages = 300;
  std::vector<std::uint64_t> to_send;
  for (std::uint64_t s = kMessages; s > 0; --s) to_send.push_back(s - 1);
  std::map<PeerId, std::set<std::uint64_t>> in_flight;
  std::map<std::uint64_t, int> results;
  std::set<std::uint64_t> resent;
  std::optional<PeerId> killed;
  bool gone_seen = false;
  int from_a = 0;
  for (const auto deadline = Clock::now() + 30s;
       results.size() < kMessages && Clock::now() < deadline;) {
    for (PeerId w : alive) {
      while (!to_send.empty() && dispatcher->credits(w) > 0) {
        Frame f = make_msg(ctx(), "test", "work", to_send.back());
        if (dispatcher->try_send(f, {w}) != SendResult::kQueued) break;
        in_flight[w].insert(to_send.back());
        to_send.pop_back();
      }
    }
    Delivery d;
    if (dispatcher->recv_for(d, 50ms) != WaitResult::kReady) continue;
    if (d.event == Event::kPeerGone) {
      gone_seen = true;
      EXPECT_EQ(killed, d.peer);
      for (std::uint64_t seq : in_flight[d.peer]) {
        to_send.push_back(seq);
        resent.insert(seq);
      }
      in_flight.erase(d.peer);
      std::erase(alive, d.peer);
      continue;
    }
    auto m = read_msg(d);
    ASSERT_TRUE(m);
    ++results[m->seq];
    in_flight[d.peer].erase(m->seq);
    if (m->client == "A") {
      by_name["A"] = d.peer;
      // At A's first result: A answers at least the credits it was sent
      // first, so this comes before the last result whatever the pace.
      if (++from_a == 1) {
        killed = d.peer;
        peers.kill(a);
      }
    }
  }
  // A may have answered everything it held before it died (shm is quick):
  // then its kPeerGone comes after the last result, once the transport
  // noticed the death (the host's liveness check, ZeroMQ's disconnect).
  ASSERT_TRUE(killed.has_value());
  for (const auto deadline = Clock::now() + 30s; !gone_seen && Clock::now() < deadline;) {
    Delivery d;
    if (dispatcher->recv_for(d, 50ms) != WaitResult::kReady) continue;
    if (d.event == Event::kPeerGone) {
      gone_seen = true;
      EXPECT_EQ(killed, d.peer);
    } else if (auto m = read_msg(d)) {
      ++results[m->seq];  // a late duplicate of a re-sent message
    }
  }
  EXPECT_TRUE(gone_seen);
  ASSERT_EQ(results.size(), kMessages);
  // B alone is left (A was discarded before kPeerGone), on shm.
  expect_carried_by_shm(*dispatcher, 1, 1, 1);
  for (const auto& [seq, n] : results) {
    // At least once; twice only for what was re-sent after A vanished.
    if (n > 1) {
      EXPECT_TRUE(resent.count(seq)) << "seq " << seq;
    }
  }
  publish_control(*control, "stop");
  EXPECT_EQ(peers.exit_code(1, 30s), 0);
}

// A consumer vanishes mid-stream: the pusher goes on, and the next consumer
// gets the messages. (What sat in the dead consumer's queue is lost with it:
// ZeroMQ's PUSH has no acknowledgements.)
TEST_P(TransportPatterns, PushPullGoesOnWhenAConsumerVanishes) {
  auto push = bind(Pattern::kPush, "push");
  auto results = bind(Pattern::kPull, "results");
  auto control = bind(Pattern::kPub, "control");
  ASSERT_TRUE(push && results && control);
  Peers peers(scheme(), ctx());
  std::set<std::string> hello;
  std::map<std::string, int> got;
  bool b_ended = false;
  const auto on = [&](const TestMsg& m) {
    if (m.function == "hello") hello.insert(m.client);
    if (m.function == "got") ++got[m.client];
    if (m.function == "end" && m.client == "B") b_ended = true;
  };
  std::uint64_t seq = 0;
  // Sends until `who` reported `target` messages, with at most 16 unreported
  // at a time (one more whenever 20 ms pass without a report: messages sent
  // into a vanished consumer's queue never report).
  const auto feed = [&](const std::string& who, int target) {
    int window = 16;
    for (const auto deadline = Clock::now() + 30s; got[who] < target && Clock::now() < deadline;) {
      if (window > 0) {
        Frame f = make_msg(ctx(), "test", "work", seq++);
        ASSERT_TRUE(send_draining(*push, f, *results, on));
        --window;
      }
      Delivery d;
      if (results->recv_for(d, 20ms) != WaitResult::kReady) {
        ++window;
        continue;
      }
      if (auto m = read_msg(d)) {
        on(*m);
        if (m->function == "got") ++window;
      }
    }
  };
  const std::size_t a =
      peers.start("consumer", {push->address(), results->address(), control->address(), "A"});
  collect(*results, on, [&] { return hello.count("A") == 1; });
  ASSERT_EQ(hello.count("A"), 1u);
  feed("A", 20);
  ASSERT_GE(got["A"], 20);
  peers.kill(a);
  const std::size_t b =
      peers.start("consumer", {push->address(), results->address(), control->address(), "B"});
  collect(*results, on, [&] { return hello.count("B") == 1; });
  ASSERT_EQ(hello.count("B"), 1u);
  feed("B", 20);
  EXPECT_GE(got["B"], 20);
  // A may still be attached until the host's liveness check discards it.
  expect_carried_by_shm(*push, std::nullopt, 20, 0);
  expect_carried_by_shm(*results, std::nullopt, 0, 20);
  EXPECT_EQ(push->stats().errors, 0u);
  // Both consumers subscribed to the control channel once each.
  ASSERT_EQ(control->wait_subscriptions(2, 30s), WaitResult::kReady);
  publish_control(*control, "stop");
  collect(*results, on, [&] { return b_ended; });
  EXPECT_TRUE(b_ended);
  EXPECT_EQ(peers.exit_code(b, 30s), 0);
}

// Raw garbage from a raw libzmq socket: logged, counted, and the socket goes
// on to deliver the next (golden) frame byte for byte.
TEST_P(TransportZmqPatterns, MalformedFrameIsCountedAndTheSocketGoesOn) {
  auto zmq_ctx = zmq_context_of(ctx());
  ASSERT_TRUE(zmq_ctx);
  auto pull = bind(Pattern::kPull, "pull");
  ASSERT_TRUE(pull);
  const auto good = golden("server_eval.client_push");
  {
    RawSocket raw(*zmq_ctx, ZMQ_PUSH);  // closed before the context shuts down
    ASSERT_EQ(zmq_connect(raw.get(), pull->address().c_str()), 0);
    ASSERT_TRUE(raw.send(std::string_view("\x0f\x0f\x0f", 3)));  // wire type 7
    ASSERT_TRUE(raw.send(std::string_view("\x0a\x05" "ab", 4)));  // truncated string
    ASSERT_TRUE(raw.send(good));
    Delivery d;
    ASSERT_EQ(pull->recv_for(d, 10s), WaitResult::kReady);
    auto v = d.frame.view();
    ASSERT_TRUE(v);
    EXPECT_TRUE(std::equal(v->wire.begin(), v->wire.end(), good.begin(), good.end()));
  }
  EXPECT_EQ(pull->stats().malformed, 2u);
  EXPECT_EQ(pull->stats().messages_in, 1u);
}

}  // namespace palm::transport::test
