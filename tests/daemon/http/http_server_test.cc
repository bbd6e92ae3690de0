// The HTTP server alone (no daemon): a flood of idle and half-sent
// requests at max_connections, and the 503 when every connection is busy.
#include "daemon/http/server.h"

#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon/http/types.h"
#include "tests/integration/http_test_client.h"

namespace distilld::daemon {
namespace {

using testing::Loopback;
using testing::Reply;
using testing::TcpClient;

// A router with /ok (answers at once) and /hold (answers when Release()d).
struct TestRouter {
  Router router;
  std::mutex mu;
  std::vector<Responder> held;

  TestRouter() {
    router.Add(HttpVerb::get, "/ok", "ok", [](const HttpRequest&, const RouteParams&, Responder respond) {
      respond(MakeResponse(HttpStatus::ok, "{}", "application/json"));
    });
    router.Add(HttpVerb::get, "/hold", "hold", [this](const HttpRequest&, const RouteParams&, Responder respond) {
      std::lock_guard<std::mutex> lock(mu);
      held.push_back(std::move(respond));
    });
  }
  size_t Held() {
    std::lock_guard<std::mutex> lock(mu);
    return held.size();
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& r : held) r(MakeResponse(HttpStatus::ok, "{\"held\":true}", "application/json"));
    held.clear();
  }
};

std::unique_ptr<HttpServer> Start(TestRouter& r, MetricsRegistry* metrics, int max_connections) {
  HttpServerOptions o;
  o.listen = "127.0.0.1:0";
  o.router = &r.router;
  o.metrics = metrics;
  o.limits.max_connections = max_connections;
  o.limits.read_timeout_ms = 30'000;  // the flood must not simply time out
  auto s = HttpServer::Create(o);
  REQUIRE_MESSAGE(s.ok(), s.status().ToString());
  REQUIRE((*s)->Start().ok());
  return std::move(s).value();
}

template <typename F>
bool WaitFor(F pred) {
  for (int i = 0; i < 500 && !pred(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return pred();
}

TEST_CASE("a flood of half-sent requests at max_connections does not lock out a client that sends whole requests") {
  TestRouter r;
  auto metrics = std::make_unique<MetricsRegistry>();
  auto server = Start(r, metrics.get(), 8);
  // Four times the limit, each sending half a request line and then nothing.
  std::vector<std::unique_ptr<TcpClient>> flood;
  for (int i = 0; i < 32; ++i) {
    flood.push_back(std::make_unique<TcpClient>(Loopback(server->tcp_port())));
    REQUIRE(flood.back()->connected());
    flood.back()->SendRaw("GET /ok HTTP/1.1\r\nHo");
  }
  CHECK(WaitFor([&] { return server->open_connections() <= 8; }));
  // A real client still gets its answer, repeatedly.
  for (int i = 0; i < 3; ++i) {
    TcpClient client(Loopback(server->tcp_port()));
    Reply reply = client.Get("/ok");
    INFO(reply.error);
    CHECK(reply.status == 200);
  }
  // The oldest of the flood were closed to make room; the newest still wait.
  CHECK(flood.front()->ClosedByPeer());
  const std::string text = metrics->Render();
  CHECK(text.find("distilld_http_evicted_connections_total 0\n") == std::string::npos);
  CHECK(text.find("distilld_http_refused_connections_total 0\n") != std::string::npos);
  // Evicted and finished sessions leave the count once their loop has run
  // their close, which on a loaded machine is after the clients are gone.
  CHECK(WaitFor([&] { return server->open_connections() <= 9; }));
}

TEST_CASE("idle keep-alive connections make room too; only when all are answering is a new one refused") {
  TestRouter r;
  auto metrics = std::make_unique<MetricsRegistry>();
  auto server = Start(r, metrics.get(), 2);
  TcpClient idle(Loopback(server->tcp_port()));
  REQUIRE(idle.Get("/ok").status == 200);  // keep-alive, now idle
  TcpClient busy(Loopback(server->tcp_port()));
  busy.SendRaw("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(WaitFor([&] { return r.Held() == 1; }));

  // The idle one makes room for a third.
  TcpClient third(Loopback(server->tcp_port()));
  third.SendRaw("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(WaitFor([&] { return r.Held() == 2; }));
  CHECK(idle.ClosedByPeer());

  // Both remaining connections are answering: a fourth is refused.
  TcpClient fourth(Loopback(server->tcp_port()));
  Reply refused = fourth.ReadReply();
  CHECK(refused.status == 503);
  CHECK(refused.body.find("too many open connections") != std::string::npos);
  CHECK(metrics->Render().find("distilld_http_refused_connections_total 1\n") != std::string::npos);

  // The busy ones were not evicted: they get their answers.
  r.Release();
  Reply a = busy.ReadReply();
  Reply b = third.ReadReply();
  CHECK(a.status == 200);
  CHECK(b.status == 200);
  CHECK(a.body == "{\"held\":true}");
}

}  // namespace
}  // namespace distilld::daemon
