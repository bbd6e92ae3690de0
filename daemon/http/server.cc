#include "daemon/http/server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <cstring>
#include <functional>
#include <filesystem>
#include <thread>
#include <vector>

#include "daemon/http/session.h"

namespace distilld::daemon {
namespace {

using internal::Session;
using internal::SessionCore;
namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using unix_proto = net::local::stream_protocol;

Result<tcp::endpoint> ParseListen(const std::string& listen) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return Status::InvalidArgument("server.listen: expected host:port, got '" + listen + "'");
  std::string host = listen.substr(0, colon);
  std::string port_text = listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty() || host == "*") host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  char* end = nullptr;
  long port = std::strtol(port_text.c_str(), &end, 10);
  if (port_text.empty() || *end != '\0' || port < 0 || port > 65535) {
    return Status::InvalidArgument("server.listen: bad port in '" + listen + "'");
  }
  beast::error_code ec;
  auto addr = net::ip::make_address(host, ec);
  if (ec) return Status::InvalidArgument("server.listen: bad address '" + host + "': " + ec.message());
  return tcp::endpoint(addr, static_cast<uint16_t>(port));
}

// Picks the I/O loop for the next connection.
using LoopPicker = std::function<net::io_context&()>;

// Accepts connections for one protocol and starts a Session for each, on
// the loop `pick` chooses.
template <class Protocol>
class Listener : public std::enable_shared_from_this<Listener<Protocol>> {
 public:
  Listener(net::io_context& ioc, typename Protocol::acceptor acceptor, std::shared_ptr<SessionCore> core,
           LoopPicker pick)
      : ioc_(ioc), acceptor_(std::move(acceptor)), core_(std::move(core)), pick_(std::move(pick)) {}

  void Run() { DoAccept(); }

  void Close() {
    net::post(acceptor_.get_executor(), [self = this->shared_from_this()] {
      beast::error_code ec;
      self->acceptor_.close(ec);
    });
  }

 private:
  void DoAccept() {
    acceptor_.async_accept(net::make_strand(pick_()), [self = this->shared_from_this()](
                                                       beast::error_code ec, typename Protocol::socket socket) {
      self->OnAccept(ec, std::move(socket));
    });
  }

  void OnAccept(beast::error_code ec, typename Protocol::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) {
      LOG(kWarning) << "accept failed: " << ec.message();
      // Out of fds and similar: back off briefly instead of spinning.
      auto timer = std::make_shared<net::steady_timer>(ioc_, std::chrono::milliseconds(50));
      timer->async_wait([self = this->shared_from_this(), timer](beast::error_code) { self->DoAccept(); });
      return;
    }
    if (core_->draining.load()) {
      beast::error_code ignored;
      socket.close(ignored);
    } else if (core_->open.load() >= core_->max_connections.load() && !core_->EvictLongestWaiting()) {
      Refuse(std::move(socket));
    } else {
      core_->open.fetch_add(1);
      if (core_->open_gauge != nullptr) core_->open_gauge->Add(1);
      std::make_shared<Session<Protocol>>(std::move(socket), core_)->Run();
    }
    DoAccept();
  }

  // A fresh socket's send buffer is empty, so this short write cannot block.
  void Refuse(typename Protocol::socket socket) {
    if (core_->refused != nullptr) core_->refused->Increment();
    static const std::string kResponse = [] {
      const std::string body = "{\"error\":\"too many open connections\"}";
      return "HTTP/1.1 503 Service Unavailable\r\nServer: distilld\r\nContent-Type: application/json\r\n"
             "Connection: close\r\nContent-Length: " +
             std::to_string(body.size()) + "\r\n\r\n" + body;
    }();
    beast::error_code ec;
    net::write(socket, net::buffer(kResponse), ec);
    socket.shutdown(Protocol::socket::shutdown_send, ec);
    socket.close(ec);
  }

  net::io_context& ioc_;
  typename Protocol::acceptor acceptor_;
  std::shared_ptr<SessionCore> core_;
  LoopPicker pick_;
};

// The loop the calling thread runs, if it is an I/O thread of some server.
thread_local net::io_context* current_loop = nullptr;

class HttpServerImpl final : public HttpServer {
 public:
  explicit HttpServerImpl(const HttpServerOptions& options)
      : options_(options), core_(std::make_shared<SessionCore>()) {
    // By default one io_context per thread, each with its own epoll and its
    // own share of the connections: threads never contend for one queue, and
    // a request's handlers and its inline batch stay on one thread.
    const int threads = std::max(1, options.io_threads);
    const int loops = options.loop_per_thread ? threads : 1;
    for (int i = 0; i < loops; ++i) {
      loops_.push_back(std::make_unique<net::io_context>(loops == threads ? 1 : threads));
      work_.push_back(net::make_work_guard(*loops_.back()));
    }
    core_->router = options.router;
    core_->requests = options.requests;
    SetLimits(options.limits);
    if (options.metrics != nullptr) {
      core_->open_gauge =
          options.metrics->RegisterGauge("distilld_http_open_connections", "Open client connections.")->Get();
      core_->refused = options.metrics
                           ->RegisterCounter("distilld_http_refused_connections_total",
                                             "Connections refused because max_connections was reached and "
                                             "every connection was answering a request.")
                           ->Get();
      core_->evicted = options.metrics
                           ->RegisterCounter("distilld_http_evicted_connections_total",
                                             "Connections closed at max_connections to make room for a new one: "
                                             "the one that had waited longest on its client.")
                           ->Get();
    }
  }

  ~HttpServerImpl() override { Stop(); }

  net::io_context& ioc() { return *loops_.front(); }
  net::io_context& NextLoop() { return *loops_[next_loop_.fetch_add(1) % loops_.size()]; }
  LoopPicker Picker() {
    return [this]() -> net::io_context& { return NextLoop(); };
  }

  // Socket activation: serve on the sockets systemd bound for us.
  Status Adopt() {
    InheritedSockets in = std::move(options_.inherited);
    options_.inherited = {};
    // Whatever is not adopted when an error returns is closed here.
    auto close_from = [&in](size_t tcp_from, size_t unix_from) {
      for (size_t i = tcp_from; i < in.tcp.size(); ++i) ::close(in.tcp[i].fd);
      for (size_t i = unix_from; i < in.unix_stream.size(); ++i) ::close(in.unix_stream[i].fd);
    };
    for (size_t i = 0; i < in.tcp.size(); ++i) {
      const InheritedSocket& s = in.tcp[i];
      tcp::acceptor acceptor(net::make_strand(ioc()));
      beast::error_code ec;
      acceptor.assign(s.family == AF_INET6 ? tcp::v6() : tcp::v4(), s.fd, ec);
      if (ec) {
        close_from(i, 0);
        return Status::IoError("cannot adopt inherited socket " + s.local_address + ": " + ec.message());
      }
      const tcp::endpoint local = acceptor.local_endpoint(ec);
      auto listener = std::make_shared<Listener<tcp>>(ioc(), std::move(acceptor), core_, Picker());
      if (!tcp_) {
        tcp_ = listener;
        bound_ = local;
      } else {
        extra_tcp_.push_back(listener);
      }
    }
    for (size_t i = 0; i < in.unix_stream.size(); ++i) {
      const InheritedSocket& s = in.unix_stream[i];
      unix_proto::acceptor acceptor(net::make_strand(ioc()));
      beast::error_code ec;
      acceptor.assign(unix_proto(), s.fd, ec);
      if (ec) {
        close_from(in.tcp.size(), i);
        return Status::IoError("cannot adopt inherited socket " + s.local_address + ": " + ec.message());
      }
      auto listener = std::make_shared<Listener<unix_proto>>(ioc(), std::move(acceptor), core_, Picker());
      if (!unix_) {
        unix_ = listener;
        unix_bound_ = s.local_address;
      } else {
        extra_unix_.push_back(listener);
      }
    }
    return Status::Ok();
  }

  Status Bind() {
    if (!options_.inherited.empty()) {
      RETURN_IF_ERROR(Adopt());
      return tcp_ || unix_ ? Status::Ok() : Status::InvalidArgument("no inherited listener");
    }
    if (!options_.listen.empty()) {
      ASSIGN_OR_RETURN(tcp::endpoint ep, ParseListen(options_.listen));
      tcp::acceptor acceptor(net::make_strand(ioc()));
      beast::error_code ec;
      acceptor.open(ep.protocol(), ec);
      if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
      if (!ec) acceptor.bind(ep, ec);
      if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
      if (ec) return Status::IoError("cannot listen on " + options_.listen + ": " + ec.message());
      bound_ = acceptor.local_endpoint(ec);
      tcp_ = std::make_shared<Listener<tcp>>(ioc(), std::move(acceptor), core_, Picker());
    }
    if (!options_.unix_socket.empty()) {
      const std::string& path = options_.unix_socket;
      struct stat st {};
      if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) return Status::IoError("unix socket path exists and is not a socket: " + path);
        ::unlink(path.c_str());  // stale socket of an earlier run
      }
      unix_proto::acceptor acceptor(net::make_strand(ioc()));
      beast::error_code ec;
      acceptor.open(unix_proto(), ec);
      if (!ec) acceptor.bind(unix_proto::endpoint(path), ec);
      if (ec) return Status::IoError("cannot bind unix socket " + path + ": " + ec.message());
      if (::chmod(path.c_str(), options_.unix_socket_mode) != 0) {
        return Status::IoError("cannot chmod unix socket " + path + ": " + std::strerror(errno));
      }
      acceptor.listen(net::socket_base::max_listen_connections, ec);
      if (ec) return Status::IoError("cannot listen on unix socket " + path + ": " + ec.message());
      unix_ = std::make_shared<Listener<unix_proto>>(ioc(), std::move(acceptor), core_, Picker());
      unix_bound_ = path;
      unlink_unix_ = true;
    }
    if (!tcp_ && !unix_) return Status::InvalidArgument("no listener configured (server.listen and server.unix_socket are empty)");
    return Status::Ok();
  }

  Status Start() override {
    if (!threads_.empty()) return Status::FailedPrecondition("server already started");
    if (tcp_) tcp_->Run();
    if (unix_) unix_->Run();
    for (auto& l : extra_tcp_) l->Run();
    for (auto& l : extra_unix_) l->Run();
    for (int i = 0; i < std::max(1, options_.io_threads); ++i) {
      threads_.emplace_back([l = loops_[static_cast<size_t>(i) % loops_.size()].get()] {
        current_loop = l;
        l->run();
        current_loop = nullptr;
      });
    }
    return Status::Ok();
  }

  bool Drain(std::chrono::milliseconds timeout) override {
    core_->draining.store(true);
    CloseListeners();
    std::vector<std::shared_ptr<internal::SessionBase>> live;
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      for (auto& [id, weak] : core_->sessions) {
        if (auto s = weak.lock()) live.push_back(std::move(s));
      }
    }
    for (auto& s : live) s->BeginDrain();
    live.clear();  // holding them would keep the count up
    std::unique_lock<std::mutex> lock(core_->mu);
    return core_->cv.wait_for(lock, timeout, [this] { return core_->open.load() == 0; });
  }

  void Stop() override {
    std::lock_guard<std::mutex> lock(stop_mu_);
    if (stopped_) return;
    stopped_ = true;
    core_->draining.store(true);
    CloseListeners();
    for (auto& w : work_) w.reset();
    for (auto& l : loops_) l->stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
    if (unlink_unix_) ::unlink(unix_bound_.c_str());
  }

  void CloseListeners() {
    if (tcp_) tcp_->Close();
    if (unix_) unix_->Close();
    for (auto& l : extra_tcp_) l->Close();
    for (auto& l : extra_unix_) l->Close();
  }

  void SetLimits(const HttpLimits& l) override {
    core_->max_body_bytes.store(l.max_body_bytes);
    core_->max_header_bytes.store(l.max_header_bytes);
    core_->read_timeout_ms.store(l.read_timeout_ms);
    core_->idle_timeout_ms.store(l.idle_timeout_ms);
    core_->max_connections.store(l.max_connections);
  }

  HttpLimits limits() const override {
    HttpLimits l;
    l.max_body_bytes = core_->max_body_bytes.load();
    l.max_header_bytes = core_->max_header_bytes.load();
    l.read_timeout_ms = core_->read_timeout_ms.load();
    l.idle_timeout_ms = core_->idle_timeout_ms.load();
    l.max_connections = core_->max_connections.load();
    return l;
  }

  uint16_t tcp_port() const override { return tcp_ ? bound_.port() : 0; }
  std::string tcp_address() const override {
    if (!tcp_) return "";
    std::string host = bound_.address().to_string();
    if (bound_.address().is_v6()) host = "[" + host + "]";
    return host + ":" + std::to_string(bound_.port());
  }
  std::string unix_path() const override { return unix_bound_; }
  int open_connections() const override { return core_->open.load(); }
  void Post(std::function<void()> fn) override {
    for (auto& l : loops_) {
      if (l.get() == current_loop) {
        net::post(*l, std::move(fn));
        return;
      }
    }
    net::post(NextLoop(), std::move(fn));
  }

 private:
  HttpServerOptions options_;
  // Declared before loops_: sessions destroyed with an io_context still use it.
  std::shared_ptr<SessionCore> core_;
  // One per I/O thread, or one shared by all (loop_per_thread false); fixed
  // after construction.
  std::vector<std::unique_ptr<net::io_context>> loops_;
  std::vector<net::executor_work_guard<net::io_context::executor_type>> work_;
  std::atomic<size_t> next_loop_{0};
  std::shared_ptr<Listener<tcp>> tcp_;
  std::shared_ptr<Listener<unix_proto>> unix_;
  tcp::endpoint bound_;
  std::string unix_bound_;
  bool unlink_unix_ = false;  // we bound it (an inherited socket file is systemd's)
  std::vector<std::shared_ptr<Listener<tcp>>> extra_tcp_;  // inherited sockets beyond the first
  std::vector<std::shared_ptr<Listener<unix_proto>>> extra_unix_;
  std::vector<std::thread> threads_;
  std::mutex stop_mu_;
  bool stopped_ = false;
};

}  // namespace

Result<std::unique_ptr<HttpServer>> HttpServer::Create(const HttpServerOptions& options) {
  if (options.router == nullptr) return Status::InvalidArgument("HttpServerOptions.router is required");
  auto server = std::make_unique<HttpServerImpl>(options);
  RETURN_IF_ERROR(server->Bind());
  return std::unique_ptr<HttpServer>(std::move(server));
}

}  // namespace distilld::daemon
