// Process-level tests of the real daemon ($DISTILLD_BINARY) under a fake
// systemd: a $NOTIFY_SOCKET datagram listener, $WATCHDOG_USEC, sockets passed
// as fds 3.. with $LISTEN_FDS/$LISTEN_PID, and the systemd directory
// variables. Each case starts one daemon with a tiny MLP and no learner.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/temp_dir.h"
#include "tests/systemd/systemd_test_util.h"

namespace distilld::testing {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr milliseconds kStartTimeout{60000};  // LibTorch start-up on a loaded 2-core box
constexpr char kWatchdogUsec[] = "1000000";   // pings every 500 ms
constexpr milliseconds kPingPeriod{500};

std::string DistilldBinary() {
  const char* bin = std::getenv("DISTILLD_BINARY");
  return bin != nullptr ? bin : "distilld";
}

// A small daemon: tiny MLP, learner off, one I/O thread, relative state dir.
std::string WriteConfig(const TempDir& dir, const std::string& listen = "127.0.0.1:0",
                        const std::string& unix_socket = "") {
  const std::string path = dir.str("distilld.yaml");
  std::ofstream(path) << "server:\n"
                         "  listen: \""
                      << listen
                      << "\"\n"
                         "  unix_socket: \""
                      << unix_socket
                      << "\"\n"
                         "  io_threads: 1\n"
                         "  drain_timeout_ms: 2000\n"
                         "model:\n"
                         "  input_shape: [1, 28, 28]\n"
                         "  classes: 10\n"
                         "  architecture:\n"
                         "    kind: mlp\n"
                         "    hidden: [16]\n"
                         "batching:\n"
                         "  max_batch_size: 4\n"
                         "storage:\n"
                         "  state_dir: \"state\"\n"
                         "  sync: false\n"
                         "learner:\n"
                         "  enabled: false\n";
  return path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The port from "distilld listening on http://127.0.0.1:PORT" in the log.
int PortFromLog(const std::string& log_path) {
  static const std::regex re("distilld listening on http://127\\.0\\.0\\.1:([0-9]+)");
  std::smatch m;
  const std::string log = ReadFile(log_path);
  if (!std::regex_search(log, m, re)) return 0;
  return std::stoi(m[1]);
}

// One HTTP/1.1 GET over a connected stream socket; the status code, or 0 if
// no complete status line arrives within `timeout`.
int HttpGetOnFd(int fd, const std::string& target, milliseconds timeout) {
  const std::string req = "GET " + target + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) return 0;
  std::string reply;
  const auto deadline = Clock::now() + timeout;
  char buf[4096];
  while (reply.find("\r\n") == std::string::npos) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return 0;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) return 0;
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return 0;
    reply.append(buf, static_cast<size_t>(n));
  }
  int code = 0;
  if (std::sscanf(reply.c_str(), "HTTP/1.1 %d", &code) != 1) return 0;
  return code;
}

int HttpGetTcp(int port, const std::string& target, milliseconds timeout = milliseconds(5000)) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  int code = 0;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) code = HttpGetOnFd(fd, target, timeout);
  ::close(fd);
  return code;
}

int HttpGetUnix(const std::string& path, const std::string& target, milliseconds timeout = milliseconds(5000)) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int code = 0;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) code = HttpGetOnFd(fd, target, timeout);
  ::close(fd);
  return code;
}

// What systemd sets for a Type=notify service with WatchdogSec=.
ChildProcess::Options DaemonOptions(const TempDir& dir, const NotifyListener& notify, const std::string& config) {
  ChildProcess::Options o;
  o.argv = {DistilldBinary(), "serve", "--config", config};
  o.env = {{"NOTIFY_SOCKET", notify.path()},
           {"WATCHDOG_USEC", std::string(kWatchdogUsec)},
           {"WATCHDOG_PID", std::nullopt},
           {"STATE_DIRECTORY", dir.str("var-lib")},
           {"RUNTIME_DIRECTORY", std::nullopt},
           {"CONFIGURATION_DIRECTORY", std::nullopt},
           {"JOURNAL_STREAM", std::nullopt},
           {"DISTILLD_TEST_STALL_IO", std::nullopt}};
  o.output_path = dir.str("daemon.log");
  return o;
}

bool AnyHasLine(const std::vector<NotifyMessage>& ms, std::string_view line) {
  return std::any_of(ms.begin(), ms.end(), [&](const NotifyMessage& m) { return m.HasLine(line); });
}

std::vector<Clock::time_point> PingTimes(const std::vector<NotifyMessage>& ms) {
  std::vector<Clock::time_point> out;
  for (const auto& m : ms) {
    if (m.HasLine("WATCHDOG=1")) out.push_back(m.at);
  }
  return out;
}

// Waits for READY=1; fails the test (with the log) if it does not come.
std::vector<NotifyMessage> WaitReady(NotifyListener& notify, const TempDir& dir) {
  std::vector<NotifyMessage> seen;
  std::vector<NotifyMessage> got = notify.ReceiveUntil("READY=1", kStartTimeout, &seen);
  if (got.empty()) {
    FAIL("no READY=1; daemon log:\n" << ReadFile(dir.str("daemon.log")));
  }
  return got;
}

void ExpectCleanStop(ChildProcess& child, NotifyListener& notify, const TempDir& dir) {
  REQUIRE(child.Signal(SIGTERM));
  std::vector<NotifyMessage> seen;
  std::vector<NotifyMessage> until = notify.ReceiveUntil("STOPPING=1", milliseconds(10000), &seen);
  CHECK_MESSAGE(!until.empty(), "no STOPPING=1");
  std::optional<int> status = child.Wait(milliseconds(20000));
  REQUIRE(status.has_value());
  CHECK_MESSAGE(WIFEXITED(*status), "daemon log:\n" << ReadFile(dir.str("daemon.log")));
  CHECK(WEXITSTATUS(*status) == 0);
}

}  // namespace

TEST_CASE("daemon: READY after the port answers, watchdog at half the timeout, reload and stop") {
  TempDir dir;
  NotifyListener notify(dir.str());
  // A relative Unix socket, and no --config: the systemd directory rule.
  WriteConfig(dir, "127.0.0.1:0", "distilld.sock");
  fs::create_directories(dir.str("run"));
  ChildProcess child;
  ChildProcess::Options o = DaemonOptions(dir, notify, "");
  o.argv = {DistilldBinary(), "serve"};
  for (auto& [name, value] : o.env) {
    if (name == "CONFIGURATION_DIRECTORY") value = dir.str();
    if (name == "RUNTIME_DIRECTORY") value = dir.str("run");
  }
  REQUIRE(child.Start(o));

  std::vector<NotifyMessage> startup = WaitReady(notify, dir);
  // Before READY=1: a start-up STATUS=, and no watchdog ping (systemd arms
  // the watchdog only once start-up completed).
  CHECK(startup.front().Value("STATUS").value_or("").find("starting") == 0);
  CHECK_FALSE(AnyHasLine(startup, "WATCHDOG=1"));
  // READY=1 comes with (or right after) a STATUS= naming the served version.
  bool status_serving = false;
  for (const auto& m : startup) {
    if (m.Value("STATUS").value_or("").find("serving v000001") == 0) status_serving = true;
  }
  CHECK(status_serving);

  // The port answers at once: READY=1 was sent only once listeners accept.
  const int port = PortFromLog(dir.str("daemon.log"));
  REQUIRE(port > 0);
  CHECK(HttpGetTcp(port, "/v2/health/ready", milliseconds(2000)) == 200);

  // Paths: the config came from $CONFIGURATION_DIRECTORY, the relative
  // state dir "state" lands under $STATE_DIRECTORY, the relative Unix socket
  // under $RUNTIME_DIRECTORY.
  CHECK(fs::exists(dir.str("var-lib/state/registry.sqlite")));
  CHECK(HttpGetUnix(dir.str("run/distilld.sock"), "/v2/health/ready") == 200);

  // Watchdog: WATCHDOG_USEC=1 s, so a ping every ~500 ms.
  std::vector<NotifyMessage> window = notify.ReceiveFor(milliseconds(3000));
  std::vector<Clock::time_point> pings = PingTimes(window);
  CHECK(pings.size() >= 4);
  CHECK(pings.size() <= 8);
  if (pings.size() >= 2) {
    const double mean_ms =
        std::chrono::duration<double, std::milli>(pings.back() - pings.front()).count() / (pings.size() - 1);
    MESSAGE("watchdog: " << pings.size() << " pings in 3 s, mean interval " << mean_ms << " ms");
    CHECK(mean_ms > kPingPeriod.count() * 0.7);
    CHECK(mean_ms < kPingPeriod.count() * 1.5);
  }

  // SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 (pings may interleave).
  REQUIRE(child.Signal(SIGHUP));
  std::vector<NotifyMessage> seen;
  std::vector<NotifyMessage> reload = notify.ReceiveUntil("READY=1", milliseconds(10000), &seen);
  REQUIRE_MESSAGE(!reload.empty(), "no READY=1 after SIGHUP");
  auto reloading = std::find_if(reload.begin(), reload.end(), [](const NotifyMessage& m) {
    return m.HasLine("RELOADING=1");
  });
  REQUIRE(reloading != reload.end());
  const std::string usec = reloading->Value("MONOTONIC_USEC").value_or("");
  CHECK(!usec.empty());
  CHECK(std::strtoll(usec.c_str(), nullptr, 10) > 0);
  CHECK(reloading != reload.end() - 1);  // READY=1 strictly after it
  CHECK(HttpGetTcp(port, "/v2/health/ready") == 200);

  // Still pinging after the reload.
  CHECK(PingTimes(notify.ReceiveFor(milliseconds(1200))).size() >= 1);

  ExpectCleanStop(child, notify, dir);
  // A socket file the daemon bound itself is its own to remove.
  CHECK_FALSE(fs::exists(dir.str("run/distilld.sock")));
}

#ifdef DISTILLD_TEST_HOOKS
// Needs the daemon's test-only fault hook (a DISTILLD_TEST_HOOKS=ON build).
TEST_CASE("daemon: watchdog pings stop while the I/O loop is stuck (test hook)") {
  TempDir dir;
  NotifyListener notify(dir.str());
  const std::string config = WriteConfig(dir);
  ChildProcess child;
  ChildProcess::Options o = DaemonOptions(dir, notify, config);
  // 1.5 s after READY=1 the daemon blocks its only I/O thread.
  for (auto& [name, value] : o.env) {
    if (name == "DISTILLD_TEST_STALL_IO") value = "1500";
  }
  REQUIRE(child.Start(o));
  WaitReady(notify, dir);
  const auto ready_at = Clock::now();
  const int port = PortFromLog(dir.str("daemon.log"));
  REQUIRE(port > 0);

  std::vector<NotifyMessage> window = notify.ReceiveFor(milliseconds(5000));
  const auto end = Clock::now();
  std::vector<Clock::time_point> pings = PingTimes(window);
  // Pings while alive, then none once the I/O heartbeat is older than the
  // timeout: the stall starts at 1.5 s, the check fails from ~2.5 s, so the
  // last ping comes by ~3 s (one period of slack) and nothing after.
  REQUIRE(pings.size() >= 1);
  const double last_ping_s = std::chrono::duration<double>(pings.back() - ready_at).count();
  const double quiet_s = std::chrono::duration<double>(end - pings.back()).count();
  MESSAGE("stall: " << pings.size() << " pings, last " << last_ping_s << " s after READY, then " << quiet_s
                    << " s without");
  CHECK(last_ping_s < 3.6);
  CHECK(quiet_s > 1.4);
  // The loop is really stuck: no HTTP answer, and the daemon says why.
  CHECK(HttpGetTcp(port, "/v2/health/live", milliseconds(500)) == 0);
  CHECK(ReadFile(dir.str("daemon.log")).find("liveness: io loop made no progress") != std::string::npos);

  // Shutdown releases the stall and still exits cleanly.
  ExpectCleanStop(child, notify, dir);
}
#endif  // DISTILLD_TEST_HOOKS

TEST_CASE("daemon: serves on sockets passed with LISTEN_FDS and leaves systemd's socket file") {
  TempDir dir;
  NotifyListener notify(dir.str());
  // The config would bind elsewhere; socket activation must win.
  const std::string config = WriteConfig(dir, "127.0.0.1:0");
  int port = 0;
  const int tcp_fd = ListenTcpLoopback(&port);
  const std::string unix_path = dir.str("activated.sock");
  const int unix_fd = ListenUnix(unix_path);

  ChildProcess child;
  ChildProcess::Options o = DaemonOptions(dir, notify, config);
  o.listen_fds = {tcp_fd, unix_fd};
  o.listen_fdnames = "distilld:distilld";
  REQUIRE(child.Start(o));
  // The child has its copies; the daemon alone accepts from now on.
  ::close(tcp_fd);
  ::close(unix_fd);

  WaitReady(notify, dir);
  CHECK(PortFromLog(dir.str("daemon.log")) == port);
  CHECK(ReadFile(dir.str("daemon.log")).find("socket activation: TCP 127.0.0.1:" + std::to_string(port)) !=
        std::string::npos);
  CHECK(HttpGetTcp(port, "/v2/health/ready") == 200);
  CHECK(HttpGetUnix(unix_path, "/v2/health/ready") == 200);
  CHECK(HttpGetTcp(port, "/v2/models/fashion") == 200);

  ExpectCleanStop(child, notify, dir);
  // The socket file belongs to the .socket unit: the daemon must not unlink it.
  CHECK(fs::exists(unix_path));
}

}  // namespace distilld::testing
