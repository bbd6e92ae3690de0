// A blocking HTTP/1.1 test client over TCP or a Unix socket, on Beast, plus
// a raw mode that sends arbitrary bytes (for malformed requests). One
// connection per object; not thread-safe (one per test thread).
#pragma once

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace distilld::testing {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;

struct Reply {
  int status = 0;  // 0: no response (connection closed or failed)
  std::string body;
  std::string content_type;
  std::string header_length;  // Inference-Header-Content-Length
  bool keep_alive = false;
  std::string error;
};

template <class Protocol>
class BasicClient {
 public:
  explicit BasicClient(typename Protocol::endpoint ep) : socket_(ioc_) {
    beast::error_code ec;
    socket_.connect(ep, ec);
    connected_ = !ec;
  }
  bool connected() const { return connected_; }

  Reply Request(http::verb method, const std::string& target, const std::string& body = "",
                const std::string& content_type = "application/json",
                std::optional<size_t> header_length = std::nullopt,
                const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, "127.0.0.1");
    for (const auto& [name, value] : headers) req.set(name, value);
    if (!body.empty() || method == http::verb::post) {
      req.set(http::field::content_type, content_type);
      req.body() = body;
    }
    if (header_length) req.set("Inference-Header-Content-Length", std::to_string(*header_length));
    req.prepare_payload();
    beast::error_code ec;
    http::write(socket_, req, ec);
    if (ec) return Reply{0, "", "", "", false, "write: " + ec.message()};
    return ReadReply();
  }

  Reply Get(const std::string& target) { return Request(http::verb::get, target); }
  Reply Post(const std::string& target, const std::string& body) { return Request(http::verb::post, target, body); }

  // Sends bytes as they are and reads one response (if any).
  Reply Raw(const std::string& bytes) {
    beast::error_code ec;
    net::write(socket_, net::buffer(bytes), ec);
    if (ec) return Reply{0, "", "", "", false, "write: " + ec.message()};
    return ReadReply();
  }

  void SendRaw(const std::string& bytes) {
    beast::error_code ec;
    net::write(socket_, net::buffer(bytes), ec);
  }

  // True once the server closed the connection (reads EOF or an error).
  bool ClosedByPeer() {
    char c;
    beast::error_code ec;
    socket_.read_some(net::buffer(&c, 1), ec);
    return static_cast<bool>(ec);
  }

  Reply ReadReply() {
    http::response_parser<http::string_body> parser;
    parser.body_limit(64u << 20);
    beast::error_code ec;
    http::read(socket_, buffer_, parser, ec);
    if (ec) return Reply{0, "", "", "", false, "read: " + ec.message()};
    auto& res = parser.get();
    Reply r;
    r.status = res.result_int();
    r.body = res.body();
    r.content_type = std::string(res[http::field::content_type]);
    r.header_length = std::string(res["Inference-Header-Content-Length"]);
    r.keep_alive = res.keep_alive();
    return r;
  }

 private:
  net::io_context ioc_;
  typename Protocol::socket socket_;
  beast::flat_buffer buffer_;
  bool connected_ = false;
};

using TcpClient = BasicClient<net::ip::tcp>;
using UnixClient = BasicClient<net::local::stream_protocol>;

inline net::ip::tcp::endpoint Loopback(uint16_t port) {
  return net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), port);
}

}  // namespace distilld::testing
