// HttpServer: HTTP/1.1 listeners (TCP and optionally a Unix socket) on
// Boost.Beast, dispatching requests to a Router.
//
// `io_threads` threads each run their own io_context (own epoll, own
// handler queue) unless loop_per_thread is false: with one io_context
// shared by two threads, Asio wakes the other thread for nearly every
// handler, and 2 threads served fewer requests than 1 (measured in
// docs/benchmarks-serving.md). The listener hands new
// connections to the loops in turn; every connection is a session whose
// handlers run on its own strand on its loop. Each request is parsed by a
// fresh Beast parser with the body and header limits (413 / 431), under a
// read deadline re-armed before every read; between requests an idle
// keep-alive timeout applies. Malformed framing, including Content-Length
// together with Transfer-Encoding, is answered with 400 and the connection
// closes. At max_connections a new connection takes the slot of the one
// that has waited longest on its client (idle keep-alive, or a request
// still arriving), so slow or idle clients cannot lock out whole requests;
// only when every connection is answering a request does it get a 503.
//
// Thread-safety: all methods may be called from any thread. The server owns
// its io_context, threads, acceptors and sessions; the Router, the
// MetricsRegistry and the RequestObserver are not owned and must outlive it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "daemon/http/listen_fds.h"
#include "daemon/http/metrics.h"
#include "daemon/http/request_observer.h"
#include "daemon/http/router.h"

namespace distilld::daemon {

// Limits that may change at run time (SIGHUP); they apply from the next request.
struct HttpLimits {
  uint64_t max_body_bytes = 16u << 20;  // 413 above it
  uint64_t max_header_bytes = 8192;     // 431 above it
  int64_t read_timeout_ms = 10000;      // whole-request deadline, re-armed before each read
  int64_t idle_timeout_ms = 60000;      // keep-alive wait for the next request
  int max_connections = 1024;           // then the longest-waiting one is evicted, or 503 if none waits
};

struct HttpServerOptions {
  // "host:port" ("[::1]:8080" for IPv6); port 0 binds a free port (see
  // tcp_port()). "" disables TCP.
  std::string listen = "127.0.0.1:8080";
  // Unix socket path; "" disables it. A stale socket file is replaced.
  std::string unix_socket;
  uint32_t unix_socket_mode = 0660;
  // Listening sockets passed by systemd (socket activation, TakeListenFds).
  // When not empty the server adopts them (acceptor.assign) and binds
  // nothing itself: `listen` and `unix_socket` are ignored, and the Unix
  // socket file, which systemd owns, is never unlinked. The server takes
  // ownership of the fds (also on error). tcp_port()/tcp_address() and
  // unix_path() describe the first socket of each kind. Default: none.
  InheritedSockets inherited;
  // Threads, each running one I/O loop. 2 suits 2-core edge boxes when
  // forward passes run inline on the loops (batching.inference_threads 0).
  int io_threads = 2;
  // true: each I/O thread runs its own io_context (see above). false: one
  // io_context run by all io_threads, Asio's other model; measured slower
  // here, kept for comparison and for handlers that must not be pinned to a
  // thread.
  bool loop_per_thread = true;
  HttpLimits limits;
  // Required; not owned.
  const Router* router = nullptr;
  // Optional; not owned. Gets the open and refused connection metrics.
  MetricsRegistry* metrics = nullptr;
  // Optional; not owned; must outlive the server. Counts every answered
  // request, with its latency (the daemon passes its ServingStats).
  RequestObserver* requests = nullptr;
};

class HttpServer {
 public:
  // Binds the listeners (so tcp_port() is known) but accepts nothing until
  // Start(). IoError naming the address if a bind fails.
  static Result<std::unique_ptr<HttpServer>> Create(const HttpServerOptions& options);
  virtual ~HttpServer() = default;

  // Starts the I/O threads and accepting.
  virtual Status Start() = 0;
  // Stops accepting, closes idle keep-alive connections, lets requests in
  // progress finish (their responses carry Connection: close), and waits up to
  // `timeout` for every connection to end. True if all ended in time.
  virtual bool Drain(std::chrono::milliseconds timeout) = 0;
  // Closes everything and joins the I/O threads. Idempotent.
  virtual void Stop() = 0;

  virtual void SetLimits(const HttpLimits& limits) = 0;
  virtual HttpLimits limits() const = 0;

  // Bound TCP port (0 if TCP is disabled) and printable addresses.
  virtual uint16_t tcp_port() const = 0;
  virtual std::string tcp_address() const = 0;  // "127.0.0.1:43121" or ""
  virtual std::string unix_path() const = 0;    // "" if disabled
  virtual int open_connections() const = 0;
  // Run `fn` on an I/O loop; fire and forget. Called on one of the
  // server's I/O threads, it runs on that thread's loop (the batcher's
  // inline drains rely on that); from any other thread, on the loops in
  // turn, so a periodic heartbeat posted this way stalls if any loop does.
  virtual void Post(std::function<void()> fn) = 0;
};

}  // namespace distilld::daemon
