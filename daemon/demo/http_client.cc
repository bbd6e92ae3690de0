#include "daemon/demo/http_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <optional>

namespace distilld::daemon {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

class BeastClient final : public HttpClient {
 public:
  BeastClient(std::string host, uint16_t port, int64_t timeout_ms)
      : host_(std::move(host)), port_(port), timeout_(std::chrono::milliseconds(timeout_ms)) {}

  Result<HttpClientResponse> Request(std::string_view method, std::string_view target,
                                     std::string body, const Headers& headers) override {
    // A keep-alive connection may have been closed by the server's idle
    // timeout; one retry on a fresh connection covers that.
    for (int attempt = 0; attempt < 2; ++attempt) {
      bool fresh = false;
      if (!stream_) {
        Status st = Connect();
        if (!st.ok()) return st;
        fresh = true;
      }
      beast::error_code ec;
      http::request<http::string_body> req{http::string_to_verb(beast::string_view(method.data(), method.size())),
                                          std::string(target), 11};
      req.set(http::field::host, host_);
      req.keep_alive(true);
      for (const auto& [k, v] : headers) req.set(k, v);
      if (req[http::field::content_type].empty() && !body.empty()) {
        req.set(http::field::content_type, "application/json");
      }
      req.body() = body;
      req.prepare_payload();
      // Async operations driven to completion here, because beast::tcp_stream
      // timeouts apply only to async operations.
      stream_->expires_after(timeout_);
      http::async_write(*stream_, req, [&ec](beast::error_code e, size_t) { ec = e; });
      RunLoop();
      if (!ec) {
        http::response_parser<http::string_body> parser;
        parser.body_limit(1u << 30);
        stream_->expires_after(timeout_);
        http::async_read(*stream_, buffer_, parser, [&ec](beast::error_code e, size_t) { ec = e; });
        RunLoop();
        if (!ec) {
          auto& res = parser.get();
          HttpClientResponse out;
          out.status = static_cast<int>(res.result_int());
          out.body = std::move(res.body());
          out.content_type = std::string(res[http::field::content_type]);
          if (!res.keep_alive()) Close();
          return out;
        }
      }
      Close();
      if (fresh) return Status::IoError("HTTP " + std::string(method) + " " +
                                        std::string(target) + ": " + ec.message());
    }
    return Status::IoError("HTTP request failed twice");
  }

 private:
  Status Connect() {
    beast::error_code ec;
    tcp::resolver resolver(ioc_);
    auto results = resolver.resolve(host_, std::to_string(port_), ec);
    if (ec) return Status::IoError("resolve " + host_ + ": " + ec.message());
    stream_.emplace(ioc_);
    stream_->expires_after(timeout_);
    stream_->async_connect(results, [&ec](beast::error_code e, const tcp::endpoint&) { ec = e; });
    RunLoop();
    if (ec) {
      stream_.reset();
      return Status::Unavailable("connect " + host_ + ":" + std::to_string(port_) + ": " +
                                 ec.message());
    }
    stream_->socket().set_option(tcp::no_delay(true), ec);
    return Status::Ok();
  }
  void RunLoop() {
    ioc_.restart();
    ioc_.run();
  }
  void Close() {
    if (stream_) {
      beast::error_code ec;
      stream_->socket().shutdown(tcp::socket::shutdown_both, ec);
    }
    stream_.reset();
    buffer_.clear();
  }

  std::string host_;
  uint16_t port_;
  std::chrono::milliseconds timeout_;
  asio::io_context ioc_;
  std::optional<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
};

}  // namespace

std::unique_ptr<HttpClient> HttpClient::Create(std::string host, uint16_t port, int64_t timeout_ms) {
  return std::make_unique<BeastClient>(std::move(host), port, timeout_ms);
}

}  // namespace distilld::daemon
