// Vocabulary shared by the HTTP server, the router and the endpoint handlers.
//
// A handler gets the parsed request and a Responder. It must call the
// Responder exactly once, from any thread, possibly after it returned (the
// inference handler completes on an inference thread). The session keeps the
// request alive until then and posts the response back to its own strand.
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace distilld::daemon {

using HttpRequest = boost::beast::http::request<boost::beast::http::string_body>;
using HttpResponse = boost::beast::http::response<boost::beast::http::string_body>;
using HttpStatus = boost::beast::http::status;
using HttpVerb = boost::beast::http::verb;

// Values captured by {name} segments of a route pattern.
class RouteParams {
 public:
  void Add(std::string name, std::string value) { items_.emplace_back(std::move(name), std::move(value)); }
  // "" when absent.
  std::string_view Get(std::string_view name) const {
    for (const auto& [n, v] : items_) {
      if (n == name) return v;
    }
    return {};
  }
  bool Has(std::string_view name) const {
    for (const auto& [n, v] : items_) {
      if (n == name) return true;
    }
    return false;
  }

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

using Responder = std::function<void(HttpResponse)>;
using Handler = std::function<void(const HttpRequest&, const RouteParams&, Responder)>;

// A response with a body and Content-Type; keep-alive is set by the session.
HttpResponse MakeResponse(HttpStatus status, std::string body,
                          std::string_view content_type = "application/json");
// {"error": "<message>"} with the given status.
HttpResponse MakeError(HttpStatus status, std::string_view message);

}  // namespace distilld::daemon
