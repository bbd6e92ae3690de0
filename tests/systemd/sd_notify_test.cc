// Notifier and Watchdog against a real AF_UNIX datagram socket standing in
// for systemd's notify socket.
#include "daemon/sd_notify.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "common/clock.h"
#include "tests/support/temp_dir.h"
#include "tests/systemd/systemd_test_util.h"

namespace distilld::daemon {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using testing::NotifyListener;
using testing::NotifyMessage;
using testing::ScopedEnv;
using testing::TempDir;

int CountLine(const std::vector<NotifyMessage>& msgs, std::string_view line) {
  int n = 0;
  for (const auto& m : msgs) n += m.HasLine(line) ? 1 : 0;
  return n;
}

std::vector<NotifyMessage> Only(const std::vector<NotifyMessage>& msgs, std::string_view line) {
  std::vector<NotifyMessage> out;
  for (const auto& m : msgs) {
    if (m.HasLine(line)) out.push_back(m);
  }
  return out;
}

TEST_CASE("without NOTIFY_SOCKET every call is a no-op") {
  TempDir dir;
  NotifyListener listener(dir.str());
  ScopedEnv no_socket("NOTIFY_SOCKET", nullptr);
  ScopedEnv watchdog_usec("WATCHDOG_USEC", "100000");
  auto notifier = Notifier::Create({});
  CHECK_FALSE(notifier->enabled());
  CHECK(notifier->Ready().ok());
  CHECK(notifier->Reloading().ok());
  CHECK(notifier->SetStatus("x").ok());
  CHECK(notifier->Stopping().ok());
  CHECK(notifier->WatchdogPing().ok());
  CHECK(notifier->WatchdogTimeout() == microseconds(0));

  WatchdogOptions options;
  options.notifier = notifier.get();
  auto watchdog = Watchdog::Start(options);
  REQUIRE(watchdog.ok());
  CHECK_FALSE((*watchdog)->enabled());
  CHECK((*watchdog)->period() == microseconds(0));
  CHECK_FALSE(listener.Receive(milliseconds(150)).has_value());
  CHECK((*watchdog)->pings_sent() == 0);
}

TEST_CASE("lifecycle messages arrive in order with their fields") {
  TempDir dir;
  NotifyListener listener(dir.str());
  ScopedEnv socket("NOTIFY_SOCKET", listener.path().c_str());
  ManualClock clock(7'000'000);
  auto notifier = Notifier::Create({.clock = &clock});
  REQUIRE(notifier->enabled());

  REQUIRE(notifier->SetStatus("loading v000003").ok());
  REQUIRE(notifier->Ready().ok());
  REQUIRE(notifier->SetStatus("serving v000003\nlearner idle").ok());
  REQUIRE(notifier->Reloading().ok());
  clock.Advance(250'000);
  REQUIRE(notifier->Reloading().ok());
  REQUIRE(notifier->Ready().ok());
  REQUIRE(notifier->ExtendTimeout(microseconds(5'000'000)).ok());
  REQUIRE(notifier->Stopping().ok());

  std::vector<NotifyMessage> got = listener.ReceiveFor(milliseconds(200));
  REQUIRE(got.size() == 8);
  CHECK(got[0].text == "STATUS=loading v000003");
  CHECK(got[1].text == "READY=1");
  // A newline would have started a new field: it is flattened.
  CHECK(got[2].text == "STATUS=serving v000003 learner idle");
  CHECK(got[3].HasLine("RELOADING=1"));
  CHECK(got[3].Value("MONOTONIC_USEC") == std::optional<std::string>("7000000"));
  CHECK(got[4].Value("MONOTONIC_USEC") == std::optional<std::string>("7250000"));
  CHECK(got[5].text == "READY=1");
  CHECK(got[6].text == "EXTEND_TIMEOUT_USEC=5000000");
  CHECK(got[7].text == "STOPPING=1");
  CHECK(notifier->ExtendTimeout(microseconds(0)).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("the real clock gives MONOTONIC_USEC on CLOCK_MONOTONIC") {
  TempDir dir;
  NotifyListener listener(dir.str());
  ScopedEnv socket("NOTIFY_SOCKET", listener.path().c_str());
  auto notifier = Notifier::Create({});
  timespec before{};
  ::clock_gettime(CLOCK_MONOTONIC, &before);
  REQUIRE(notifier->Reloading().ok());
  timespec after{};
  ::clock_gettime(CLOCK_MONOTONIC, &after);
  auto m = listener.Receive(milliseconds(500));
  REQUIRE(m.has_value());
  auto v = m->Value("MONOTONIC_USEC");
  REQUIRE(v.has_value());
  int64_t usec = std::stoll(*v);
  CHECK(usec >= before.tv_sec * 1'000'000LL + before.tv_nsec / 1000);
  CHECK(usec <= after.tv_sec * 1'000'000LL + after.tv_nsec / 1000);
}

TEST_CASE("a notify socket that does not exist is an IoError") {
  TempDir dir;
  ScopedEnv socket("NOTIFY_SOCKET", dir.str("missing.sock").c_str());
  auto notifier = Notifier::Create({});
  CHECK(notifier->enabled());
  Status st = notifier->Ready();
  CHECK(st.code() == StatusCode::kIoError);
  CHECK(st.message().find("READY=1") != std::string::npos);
}

TEST_CASE("WatchdogTimeout follows WATCHDOG_USEC and WATCHDOG_PID") {
  TempDir dir;
  NotifyListener listener(dir.str());
  ScopedEnv socket("NOTIFY_SOCKET", listener.path().c_str());
  auto notifier = Notifier::Create({});
  {
    ScopedEnv usec("WATCHDOG_USEC", nullptr);
    CHECK(notifier->WatchdogTimeout() == microseconds(0));
  }
  {
    ScopedEnv usec("WATCHDOG_USEC", "30000000");
    ScopedEnv pid("WATCHDOG_PID", nullptr);
    CHECK(notifier->WatchdogTimeout() == microseconds(30'000'000));
  }
  {
    std::string self = std::to_string(::getpid());
    ScopedEnv usec("WATCHDOG_USEC", "30000000");
    ScopedEnv pid("WATCHDOG_PID", self.c_str());
    CHECK(notifier->WatchdogTimeout() == microseconds(30'000'000));
  }
  {
    // Meant for another process (e.g. inherited by a child): not ours.
    std::string other = std::to_string(::getpid() + 1);
    ScopedEnv usec("WATCHDOG_USEC", "30000000");
    ScopedEnv pid("WATCHDOG_PID", other.c_str());
    CHECK(notifier->WatchdogTimeout() == microseconds(0));
  }
  {
    ScopedEnv usec("WATCHDOG_USEC", "soon");
    CHECK(notifier->WatchdogTimeout() == microseconds(0));
  }
}

TEST_CASE("the watchdog pings at half of WATCHDOG_USEC") {
  TempDir dir;
  NotifyListener listener(dir.str());
  ScopedEnv socket("NOTIFY_SOCKET", listener.path().c_str());
  ScopedEnv usec("WATCHDOG_USEC", "200000");  // 200 ms -> a ping every 100 ms
  ScopedEnv pid("WATCHDOG_PID", nullptr);
  auto notifier = Notifier::Create({});
  REQUIRE(notifier->Ready().ok());
  WatchdogOptions options;
  options.notifier = notifier.get();
  auto watchdog = Watchdog::Start(options);
  REQUIRE(watchdog.ok());
  REQUIRE((*watchdog)->enabled());
  CHECK((*watchdog)->period() == microseconds(100'000));

  std::vector<NotifyMessage> got = listener.ReceiveFor(milliseconds(1050));
  (*watchdog)->Stop();
  // Pings already on their way when Stop() returned.
  auto late = listener.ReceiveFor(milliseconds(50));
  CHECK(CountLine(late, "WATCHDOG=1") + CountLine(got, "WATCHDOG=1") ==
        static_cast<int>((*watchdog)->pings_sent()));

  REQUIRE(got.size() >= 2);
  CHECK(got[0].text == "READY=1");
  auto pings = Only(got, "WATCHDOG=1");
  CHECK(pings.size() + 1 == got.size());
  // One at start, then one per 100 ms: 11 in 1.05 s if the machine keeps up.
  // Never more (that would mean pinging faster than half the timeout); on a
  // loaded machine a few fewer.
  CHECK(pings.size() <= 11);
  CHECK(pings.size() >= 6);
  REQUIRE(pings.size() >= 2);
  auto span = std::chrono::duration_cast<microseconds>(pings.back().at - pings.front().at);
  double mean_gap_us = static_cast<double>(span.count()) / static_cast<double>(pings.size() - 1);
  CHECK(mean_gap_us >= 90'000.0);
  // Well inside the 200 ms timeout, so systemd never sees a gap.
  CHECK(mean_gap_us <= 160'000.0);

  // Stopped: nothing more.
  CHECK(CountLine(listener.ReceiveFor(milliseconds(250)), "WATCHDOG=1") == 0);
}

TEST_CASE("pings stop while a heartbeat is stale and resume when it beats") {
  TempDir dir;
  NotifyListener listener(dir.str());
  ScopedEnv socket("NOTIFY_SOCKET", listener.path().c_str());
  ScopedEnv pid("WATCHDOG_PID", nullptr);
  ManualClock clock;
  Heartbeat io_loop(&clock);
  Heartbeat inference(&clock);
  Heartbeat learner(&clock);
  HeartbeatCheck check({{"io loop", &io_loop, std::chrono::seconds(2)},
                        {"inference 0", &inference, std::chrono::seconds(2)},
                        {"learner", &learner, std::chrono::seconds(60)}});
  auto notifier = Notifier::Create({});
  // The timeout comes from the options here (the environment has none).
  auto watchdog = Watchdog::Start(
      {.notifier = notifier.get(), .alive = check.AsFunction(), .timeout = milliseconds(100)});
  REQUIRE(watchdog.ok());
  const milliseconds period(50);
  REQUIRE((*watchdog)->period() == period);

  CHECK(CountLine(listener.ReceiveFor(period * 4), "WATCHDOG=1") >= 2);

  // The inference thread stops making progress (stuck forward pass).
  clock.Advance(3'000'000);
  io_loop.Beat();
  learner.Beat();
  std::string stale;
  CHECK_FALSE(check.Alive(&stale));
  CHECK(stale == "inference 0");
  listener.ReceiveFor(period * 3 / 2);  // a ping that was already in flight
  uint64_t failed_before = (*watchdog)->checks_failed();
  CHECK(CountLine(listener.ReceiveFor(period * 8), "WATCHDOG=1") == 0);
  CHECK((*watchdog)->checks_failed() >= failed_before + 3);

  // It recovers: pings resume within a period or two.
  inference.Beat();
  auto resumed = listener.ReceiveUntil("WATCHDOG=1", period * 6);
  CHECK_FALSE(resumed.empty());

  // The learner hangs in a training step for longer than its allowance.
  clock.Advance(61'000'000);
  io_loop.Beat();
  inference.Beat();
  CHECK_FALSE(check.Alive(&stale));
  CHECK(stale == "learner");
  listener.ReceiveFor(period * 3 / 2);
  CHECK(CountLine(listener.ReceiveFor(period * 8), "WATCHDOG=1") == 0);
  (*watchdog)->Stop();
}

TEST_CASE("a plain liveness function gates pings") {
  TempDir dir;
  NotifyListener listener(dir.str());
  ScopedEnv socket("NOTIFY_SOCKET", listener.path().c_str());
  std::atomic<bool> alive{false};
  auto notifier = Notifier::Create({});
  auto watchdog = Watchdog::Start({.notifier = notifier.get(),
                                   .alive = [&alive] { return alive.load(); },
                                   .timeout = milliseconds(100)});
  REQUIRE(watchdog.ok());
  CHECK(CountLine(listener.ReceiveFor(milliseconds(300)), "WATCHDOG=1") == 0);
  CHECK((*watchdog)->pings_sent() == 0);
  CHECK((*watchdog)->checks_failed() >= 3);
  alive = true;
  CHECK_FALSE(listener.ReceiveUntil("WATCHDOG=1", milliseconds(300)).empty());
  (*watchdog)->Stop();
  (*watchdog)->Stop();  // idempotent
  CHECK((*watchdog)->pings_sent() >= 1);
}

TEST_CASE("Watchdog::Start needs a notifier") {
  auto w = Watchdog::Start({});
  CHECK(w.status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("Heartbeat ages with the injected clock") {
  ManualClock clock(1'000'000);
  Heartbeat hb(&clock);
  CHECK(hb.AgeMicros() == 0);
  clock.Advance(1500);
  CHECK(hb.AgeMicros() == 1500);
  hb.Beat();
  CHECK(hb.last_beat_us() == 1'001'500);
  CHECK(hb.AgeMicros() == 0);

  HeartbeatCheck check({{"io loop", &hb, microseconds(1000)}});
  CHECK(check.Alive());
  clock.Advance(1000);
  CHECK(check.Alive());  // exactly at the limit still counts as alive
  clock.Advance(1);
  std::string stale;
  CHECK_FALSE(check.Alive(&stale));
  CHECK(stale == "io loop");
  CHECK_FALSE(check.AsFunction()());
  hb.Beat();
  CHECK(check.AsFunction()());
}

}  // namespace
}  // namespace distilld::daemon
