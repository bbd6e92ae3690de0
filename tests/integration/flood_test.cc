// A slow-request flood against the real `distilld serve` process with its
// default connection settings: 5,000 connections that each send half a
// request line and then nothing. Real clients on fresh connections are
// still answered within a second, and the daemon's memory stays bounded.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <string>
#include <vector>

#include "common/fd_limit.h"
#include "tests/integration/child_daemon.h"
#include "tests/integration/http_test_client.h"
#include "tests/support/temp_dir.h"

namespace distilld::testing {
namespace {

constexpr int kFlood = 5000;

int64_t RssKb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

// A blocking loopback connection that sends `bytes` and is then left alone;
// plain sockets, so that 5,000 of them cost 5,000 descriptors.
int HalfOpen(uint16_t port, const std::string& bytes) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(bytes.size())) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int64_t MetricValue(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stoll(text.substr(at + name.size() + 2));
}

TEST_CASE("5,000 half-sent requests: health and inference on fresh connections answer within a second") {
  // The flood's descriptors are this process's; the daemon raises its own.
  Result<uint64_t> fds = RaiseFdLimit(kFlood + 512);
  REQUIRE(fds.ok());
  REQUIRE_MESSAGE(*fds >= static_cast<uint64_t>(kFlood + 512), "this test needs an open-file hard limit of at least 5512 (ulimit -Hn)");
  TempDir dir;
  // Defaults for everything the flood meets: server.max_connections,
  // read_timeout_ms (10 s, longer than the test) and the rest.
  WriteTinyServeConfig(dir.str("d.yaml"), dir.str("state"));
  ChildProcess child;
  REQUIRE(StartServe(child, dir.str("d.yaml"), dir.str("log")));
  const uint16_t port = WaitForPort(dir.str("log"));
  REQUIRE(port != 0);
  {
    TcpClient warm(Loopback(port));
    REQUIRE(warm.Get("/v2/health/ready").status == 200);
  }
  const int64_t rss_before = RssKb(child.pid());

  std::vector<int> flood;
  for (int i = 0; i < kFlood; ++i) {
    int fd = HalfOpen(port, "POST /v2/models/fashion/infer HTTP/1.1\r\nHo");
    if (fd >= 0) flood.push_back(fd);
  }
  CHECK(flood.size() == static_cast<size_t>(kFlood));

  const std::string infer =
      R"({"inputs":[{"name":"input","datatype":"FP32","shape":[1,1,2,2],"data":[0.1,0.2,0.3,0.4]}]})";
  for (int probe = 0; probe < 5; ++probe) {
    CAPTURE(probe);
    const auto t0 = std::chrono::steady_clock::now();
    TcpClient health(Loopback(port));
    Reply ready = health.Get("/v2/health/ready");
    TcpClient client(Loopback(port));
    Reply answered = client.Post("/v2/models/fashion/infer", infer);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    INFO(ready.error << " " << answered.error);
    CHECK(ready.status == 200);
    CHECK(answered.status == 200);
    CHECK(ms < 1000);
  }
  TcpClient metrics_client(Loopback(port));
  const std::string metrics = metrics_client.Get("/metrics").body;
  // The cap held, by closing the connections that waited longest.
  const int64_t open = MetricValue(metrics, "distilld_http_open_connections");
  CHECK(open > 0);
  CHECK(open <= 4096);
  CHECK(MetricValue(metrics, "distilld_http_evicted_connections_total") >= kFlood - 4096);
  // Bounded memory: the cap times a session's buffers, not the flood's size.
  const int64_t rss_after = RssKb(child.pid());
  MESSAGE("daemon RSS " << rss_before / 1024 << " MiB before, " << rss_after / 1024 << " MiB with the flood");
  CHECK(rss_after - rss_before < 256 * 1024);

  for (int fd : flood) ::close(fd);
  REQUIRE(child.Signal(SIGTERM));
  REQUIRE(child.Wait(std::chrono::seconds(30)).has_value());
}

}  // namespace
}  // namespace distilld::testing
