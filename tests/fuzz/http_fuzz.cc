// Raw bytes into the server's own session code: one HttpServer on loopback
// (started once), each input written to a fresh connection, the write side
// shut, and the answer read until the server closes. The server must answer
// or close every connection and stay up; the sanitizers catch the rest.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "daemon/http/server.h"
#include "daemon/http/types.h"

namespace {

using namespace distilld::daemon;

struct Fixture {
  Router router;
  std::unique_ptr<HttpServer> server;

  Fixture() {
    router.Add(HttpVerb::get, "/v2/health/live", "live", [](const HttpRequest&, const RouteParams&, Responder r) {
      r(MakeResponse(HttpStatus::ok, "{}", "application/json"));
    });
    router.Add(HttpVerb::post, "/v2/models/{name}/infer", "infer",
               [](const HttpRequest& req, const RouteParams& p, Responder r) {
                 r(MakeResponse(HttpStatus::ok, std::string(p.Get("name")) + std::to_string(req.body().size()),
                                "text/plain"));
               });
    HttpServerOptions o;
    o.listen = "127.0.0.1:0";
    o.router = &router;
    o.io_threads = 1;
    o.limits.max_body_bytes = 1 << 16;
    o.limits.max_header_bytes = 4096;
    o.limits.read_timeout_ms = 1000;
    o.limits.idle_timeout_ms = 1000;
    auto s = HttpServer::Create(o);
    if (!s.ok() || !(*s)->Start().ok()) std::abort();
    server = std::move(s).value();
  }
};

Fixture& Get() {
  static Fixture* f = new Fixture();  // lives for the process: libFuzzer never returns
  return *f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& f = Get();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(f.server->tcp_port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // Out of local ports (EADDRNOTAVAIL), or libFuzzer's timer signal during
  // connect (EINTR), is the harness's, not the server's: retry on a fresh
  // socket (a failed connect leaves the old one unusable). Refused means
  // the server is gone.
  int fd = -1;
  for (int tries = 0;; ++tries) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) std::abort();
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) break;
    const int err = errno;
    ::close(fd);
    if ((err != EADDRNOTAVAIL && err != EINTR) || tries >= 100) {
      std::fprintf(stderr, "connect: %s\n", std::strerror(err));
      std::abort();
    }
    ::usleep(50'000);
  }
  timeval tv{3, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  size_t off = 0;
  while (off < size) {
    const ssize_t n = ::send(fd, data + off, size - off, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server closed early (a refused request): fine
    off += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n == 0) break;
    if (n < 0) {
      // A reset is an answer too; a timeout means the server neither answered nor closed.
      if (errno == EAGAIN || errno == EWOULDBLOCK) std::abort();
      break;
    }
  }
  // Close with a reset: a million runs would otherwise leave a million
  // connections in TIME_WAIT and run the loopback out of ports.
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  ::close(fd);
  return 0;
}
