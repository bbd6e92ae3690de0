// HttpClient: a small blocking HTTP/1.1 client with keep-alive, for the demo
// driver and tools (`distilld demo` streams samples and queries through it).
//
// One connection per client, reconnected once on a broken keep-alive
// connection. Thread-compatible: use one client per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace distilld::daemon {

struct HttpClientResponse {
  int status = 0;
  std::string body;
  std::string content_type;
};

class HttpClient {
 public:
  // host is a name or address, e.g. "127.0.0.1".
  static std::unique_ptr<HttpClient> Create(std::string host, uint16_t port,
                                            int64_t timeout_ms = 30000);
  virtual ~HttpClient() = default;

  using Headers = std::vector<std::pair<std::string, std::string>>;
  // IoError / DeadlineExceeded-like Unavailable on transport failure; any
  // HTTP status is a successful result.
  virtual Result<HttpClientResponse> Request(std::string_view method, std::string_view target,
                                             std::string body = "",
                                             const Headers& headers = {}) = 0;
  Result<HttpClientResponse> Get(std::string_view target) { return Request("GET", target); }
  Result<HttpClientResponse> Post(std::string_view target, std::string body,
                                  const Headers& headers = {}) {
    return Request("POST", target, std::move(body), headers);
  }
};

}  // namespace distilld::daemon
