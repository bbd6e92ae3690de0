// Private to daemon/: one HTTP/1.1 connection (TCP or Unix), Beast style.
//
// A Session lives as long as some pending operation or Responder holds a
// shared_ptr to it. All its members are touched only on its strand (the
// socket's executor); the Responder given to handlers posts back onto it.
// SessionCore is the state shared by all sessions of one server.
#pragma once

#include <boost/asio/dispatch.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <string.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "common/clock.h"
#include "common/log.h"
#include "daemon/http/server.h"
#include "daemon/http/router.h"

namespace distilld::daemon::internal {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;

class SessionBase {
 public:
  virtual ~SessionBase() = default;
  // Closes the connection if it waits for a request; otherwise the response
  // in progress is the last one. Thread-safe (posts to the strand).
  virtual void BeginDrain() = 0;
  // Closes the connection if it still waits on its client: a new connection
  // needs its slot. Thread-safe (posts to the strand).
  virtual void Evict() = 0;

  // Monotonic microseconds since when the session has waited on its client,
  // for its next request or for the rest of one; 0 while it answers one.
  // Written on the strand, read by the acceptors to pick whom to evict.
  std::atomic<int64_t> waiting_since_us{0};
};

struct SessionCore {
  const Router* router = nullptr;
  std::atomic<uint64_t> max_body_bytes{0};
  std::atomic<uint64_t> max_header_bytes{0};
  std::atomic<int64_t> read_timeout_ms{0};
  std::atomic<int64_t> idle_timeout_ms{0};
  std::atomic<int> max_connections{0};
  std::atomic<bool> draining{false};

  RequestObserver* requests = nullptr;  // counts every answered request; may be null
  Gauge* open_gauge = nullptr;
  Counter* refused = nullptr;
  Counter* evicted = nullptr;

  std::mutex mu;
  std::condition_variable cv;
  std::unordered_map<uint64_t, std::weak_ptr<SessionBase>> sessions;  // guarded by mu
  uint64_t next_id = 0;                                               // guarded by mu
  std::atomic<int> open{0};

  // At max_connections: claims the session that has waited longest on its
  // client and evicts it, so that a flood of idle or half-sent requests
  // cannot lock out clients that send whole requests (nginx reclaims idle
  // keep-alive connections the same way). False when every session is
  // answering a request. The slot frees once the evicted session closes, so
  // `open` may exceed max_connections by the evictions in flight.
  bool EvictLongestWaiting() {
    std::shared_ptr<SessionBase> victim;
    {
      std::lock_guard<std::mutex> lock(mu);
      int64_t oldest = INT64_MAX;
      for (const auto& [id, weak] : sessions) {
        std::shared_ptr<SessionBase> s = weak.lock();
        const int64_t since = s ? s->waiting_since_us.load() : 0;
        if (since != 0 && since < oldest) {
          oldest = since;
          victim = std::move(s);
        }
      }
      // Claimed under mu: a second acceptor does not pick it again.
      if (victim == nullptr || !victim->waiting_since_us.compare_exchange_strong(oldest, 0)) return false;
    }
    if (evicted != nullptr) evicted->Increment();
    victim->Evict();
    return true;
  }

  uint64_t Register(std::weak_ptr<SessionBase> s) {
    std::lock_guard<std::mutex> lock(mu);
    uint64_t id = next_id++;
    sessions.emplace(id, std::move(s));
    return id;
  }
  void Unregister(uint64_t id) {
    {
      std::lock_guard<std::mutex> lock(mu);
      sessions.erase(id);
      open.fetch_sub(1);
    }
    if (open_gauge != nullptr) open_gauge->Add(-1);
    cv.notify_all();
  }
};

template <class Protocol>
class Session : public SessionBase, public std::enable_shared_from_this<Session<Protocol>> {
 public:
  using Stream = beast::basic_stream<Protocol, net::any_io_executor, beast::unlimited_rate_policy>;

  Session(typename Protocol::socket socket, std::shared_ptr<SessionCore> core)
      : stream_(std::move(socket)), core_(std::move(core)) {
    // Waiting for its first request from the start: evictable before its
    // first read is even posted.
    waiting_since_us.store(Clock::Real()->MonotonicMicros());
  }

  ~Session() override {
    if (registered_) core_->Unregister(id_);
  }

  void Run() {
    id_ = core_->Register(this->weak_from_this());
    registered_ = true;
    if constexpr (std::is_same_v<Protocol, net::ip::tcp>) {
      beast::error_code ec;
      // Small responses must not wait for Nagle's algorithm.
      stream_.socket().set_option(net::ip::tcp::no_delay(true), ec);
    }
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] { self->StartRequest(); });
  }

  void BeginDrain() override {
    net::post(stream_.get_executor(), [self = this->shared_from_this()] {
      self->drain_ = true;
      if (self->waiting_idle_) self->CloseNow();
    });
  }

  void Evict() override {
    net::post(stream_.get_executor(), [self = this->shared_from_this()] {
      // The claim cleared waiting_since_us; answering_ tells whether a
      // request arrived in between (then it is answered, and this is moot).
      if (!self->answering_) self->CloseNow();
    });
  }

 private:
  static constexpr size_t kReadChunk = 16 * 1024;

  void StartRequest() {
    if (closed_) return;
    answering_ = false;
    // A first request has waited since the accept (the constructor's
    // stamp): re-stamping here, when a loop busy accepting a burst gets to
    // it, would make a client whose whole request is already buffered look
    // younger than flood connections accepted before it, and evict it first.
    if (served_ > 0) waiting_since_us.store(Clock::Real()->MonotonicMicros());
    parser_.emplace();
    parser_->body_limit(core_->max_body_bytes.load());
    parser_->header_limit(static_cast<uint32_t>(std::min<uint64_t>(core_->max_header_bytes.load(), UINT32_MAX)));
    if (buffer_.size() > 0) {
      ReadRequest();
      return;
    }
    if (drain_) {
      CloseNow();
      return;
    }
    // Between requests only the idle timeout applies; the request deadline
    // starts with its first byte.
    waiting_idle_ = true;
    stream_.expires_after(std::chrono::milliseconds(served_ == 0 ? core_->read_timeout_ms.load()
                                                                   : core_->idle_timeout_ms.load()));
    stream_.async_read_some(buffer_.prepare(kReadChunk),
                            [self = this->shared_from_this()](beast::error_code ec, size_t n) {
                              self->waiting_idle_ = false;
                              if (ec) return self->CloseNow();
                              self->buffer_.commit(n);
                              self->ReadRequest();
                            });
  }

  // The whole message in one read, unless the client waits for
  // "100 Continue" before sending its body (then the header comes first).
  void ReadRequest() {
    start_us_ = Clock::Real()->MonotonicMicros();
    // Look for "Expect: 100-continue" in the header only: the body (kilobytes
    // of tensor data) cannot hold it and scanning it cost a visible share of
    // a binary request's time. Without the end of the header in the buffer,
    // scan what is there.
    auto data = buffer_.data();
    const char* begin = static_cast<const char*>(data.data());
    const void* end = ::memmem(begin, data.size(), "\r\n\r\n", 4);
    const size_t header = end != nullptr ? static_cast<size_t>(static_cast<const char*>(end) - begin) : data.size();
    if (::memmem(begin, header, "100-continue", 12) != nullptr ||
        ::memmem(begin, header, "100-Continue", 12) != nullptr) {
      return ReadHeader();
    }
    ReadBody();
  }

  void ReadHeader() {
    stream_.expires_after(std::chrono::milliseconds(core_->read_timeout_ms.load()));
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = this->shared_from_this()](beast::error_code ec, size_t) {
                              self->OnHeader(ec);
                            });
  }

  void OnHeader(beast::error_code ec) {
    if (ec) return OnReadError(ec);
    auto& req = parser_->get();
    auto expect = req[http::field::expect];
    if (!parser_->is_done() && beast::iequals(expect, "100-continue")) {
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, 11);
      http::async_write(stream_, *cont,
                        [self = this->shared_from_this(), cont](beast::error_code wec, size_t) {
                          if (wec) return self->CloseNow();
                          self->ReadBody();
                        });
      return;
    }
    if (parser_->is_done()) return Dispatch();
    ReadBody();
  }

  void ReadBody() {
    stream_.expires_after(std::chrono::milliseconds(core_->read_timeout_ms.load()));
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, size_t) {
                       if (ec) return self->OnReadError(ec);
                       self->Dispatch();
                     });
  }

  void OnReadError(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      return Fail(HttpStatus::payload_too_large, "request body exceeds the limit of " +
                                                     std::to_string(core_->max_body_bytes.load()) + " bytes");
    }
    if (ec == http::error::header_limit) {
      return Fail(HttpStatus::request_header_fields_too_large,
                  "request header exceeds the limit of " + std::to_string(core_->max_header_bytes.load()) +
                      " bytes");
    }
    if (ec.category() == http::make_error_code(http::error::end_of_stream).category() && ec != http::error::end_of_stream &&
        ec != http::error::partial_message) {
      // Framing the parser refused: bad chunk, conflicting Content-Length
      // and Transfer-Encoding, bad header syntax, ...
      return Fail(HttpStatus::bad_request, "malformed HTTP request: " + ec.message());
    }
    // EOF, reset, timeout: nobody left to answer.
    CloseNow();
  }

  // Answers a request that could not be read, then closes.
  void Fail(HttpStatus status, const std::string& message) {
    Answering();
    if (start_us_ == 0) start_us_ = Clock::Real()->MonotonicMicros();
    endpoint_ = "invalid";
    keep_alive_ = false;
    linger_ = true;  // the client may still be sending the refused body
    method_ = "-";
    target_ = "-";
    LOG(kDebug) << "http: " << static_cast<unsigned>(status) << " " << message;
    Write(MakeError(status, message));
  }

  // From here until the response is written, eviction leaves it alone.
  void Answering() {
    answering_ = true;
    waiting_since_us.store(0);
  }

  void Dispatch() {
    Answering();
    req_ = parser_->release();
    parser_.reset();
    keep_alive_ = req_.keep_alive();
    if (start_us_ == 0) start_us_ = Clock::Real()->MonotonicMicros();
    Router::Match m = core_->router->Find(req_.method(), std::string_view(req_.target().data(), req_.target().size()));
    endpoint_ = m.endpoint;
    method_ = std::string(req_.method_string());
    target_ = std::string(req_.target());
    if (m.kind == Router::Match::Kind::kNotFound) {
      return Write(MakeError(HttpStatus::not_found, "no route for " + target_));
    }
    if (m.kind == Router::Match::Kind::kMethodNotAllowed) {
      HttpResponse res = MakeError(HttpStatus::method_not_allowed, method_ + " not allowed on " + target_);
      res.set(http::field::allow, m.allow);
      return Write(std::move(res));
    }
    if (m.access != Access::kOpen &&
        !core_->router->Authorized(m, std::string_view(req_[http::field::authorization].data(),
                                                       req_[http::field::authorization].size()))) {
      HttpResponse res = MakeError(HttpStatus::unauthorized, "missing or wrong bearer token (Authorization header)");
      res.set(http::field::www_authenticate, "Bearer");
      return Write(std::move(res));
    }
    auto self = this->shared_from_this();
    Responder respond = [self](HttpResponse res) {
      auto shared = std::make_shared<HttpResponse>(std::move(res));
      net::dispatch(self->stream_.get_executor(), [self, shared] { self->Write(std::move(*shared)); });
    };
    try {
      (*m.handler)(req_, m.params, std::move(respond));
    } catch (const std::exception& e) {
      // Handlers convert errors to responses; reaching here is a bug, but
      // the connection must still get an answer. (The handler did not
      // respond: it threw before doing so.)
      LOG(kError) << "handler for " << target_ << " threw: " << e.what();
      Write(MakeError(HttpStatus::internal_server_error, "internal error"));
    }
  }

  void Write(HttpResponse res) {
    if (closed_) return;
    bool keep = keep_alive_ && !drain_ && !core_->draining.load();
    res.keep_alive(keep);
    res.set(http::field::server, "distilld");
    unsigned code = res.result_int();
    double seconds = static_cast<double>(Clock::Real()->MonotonicMicros() - start_us_) / 1e6;
    if (endpoint_ != recorded_endpoint_ || code != recorded_code_) {
      // Looking a series up takes a mutex; a connection mostly repeats the
      // same endpoint and code, so keep the last pair's.
      recorded_endpoint_ = endpoint_;
      recorded_code_ = code;
      recorded_ = core_->requests ? core_->requests->Series(endpoint_, code) : RequestSeries{};
    }
    if (recorded_.answered != nullptr) recorded_.answered->Increment();
    if (recorded_.latency != nullptr) recorded_.latency->Observe(seconds);
    if (code >= 500) {
      LOG(kWarning) << method_ << " " << target_ << " " << code << " " << res.body();
    } else {
      LOG(kDebug) << method_ << " " << target_ << " " << code << " " << static_cast<int64_t>(seconds * 1e6)
                  << "us";
    }
    start_us_ = 0;
    res_ = std::make_shared<HttpResponse>(std::move(res));
    stream_.expires_after(std::chrono::milliseconds(core_->read_timeout_ms.load()));
    http::async_write(stream_, *res_, [self = this->shared_from_this(), keep](beast::error_code ec, size_t) {
      self->res_.reset();
      self->req_ = {};
      ++self->served_;
      if (ec) return self->CloseNow();
      if (!keep) return self->linger_ ? self->LingeringClose() : self->CloseNow();
      self->StartRequest();
    });
  }

  // Half-closes and discards what the client still sends for a moment, so it
  // reads our final response instead of a reset caused by unread input.
  void LingeringClose() {
    beast::error_code ec;
    stream_.socket().shutdown(Protocol::socket::shutdown_send, ec);
    if (ec) return CloseNow();
    stream_.expires_after(std::chrono::milliseconds(1000));
    buffer_.consume(buffer_.size());
    Discard();
  }

  void Discard() {
    stream_.async_read_some(buffer_.prepare(kReadChunk),
                            [self = this->shared_from_this()](beast::error_code ec, size_t n) {
                              if (ec || (self->discarded_ += n) > (64u << 20)) return self->CloseNow();
                              self->buffer_.consume(self->buffer_.size());
                              self->Discard();
                            });
  }

  void CloseNow() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(Protocol::socket::shutdown_both, ec);
    stream_.socket().close(ec);
  }

  Stream stream_;
  std::shared_ptr<SessionCore> core_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  HttpRequest req_;
  std::shared_ptr<HttpResponse> res_;
  std::string endpoint_;
  std::string method_;
  std::string target_;
  int64_t start_us_ = 0;
  uint64_t served_ = 0;
  uint64_t discarded_ = 0;
  uint64_t id_ = 0;
  bool registered_ = false;
  bool keep_alive_ = true;
  bool waiting_idle_ = false;
  bool answering_ = false;  // a request is being answered (strand-only)
  bool drain_ = false;
  bool closed_ = false;
  bool linger_ = false;
  std::string recorded_endpoint_;
  unsigned recorded_code_ = 0;
  RequestSeries recorded_;
};

}  // namespace distilld::daemon::internal
