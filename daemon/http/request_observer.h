// RequestObserver: where the HTTP server counts the requests it answers.
//
// The server knows each request's endpoint (its route's name), the status
// code it answered and how long that took, not what they mean to the daemon:
// the observer keeps them (ServingStats, daemon/serving/serving_stats.h, for
// /metrics and /v1/stats alike). It hands out the counter and histogram of one
// (endpoint, code) pair; a connection keeps the last pair it was given and
// updates it without a lock, since it mostly repeats one endpoint and code.
//
// Thread-safety: Series is called concurrently from every I/O thread. The
// pointers it returns stay valid as long as the observer, which must outlive
// the server.
#pragma once

#include <string_view>

#include "daemon/http/metrics.h"

namespace distilld::daemon {

struct RequestSeries {
  // Requests answered on this endpoint with this code.
  Counter* answered = nullptr;
  // Seconds from a request's first byte to its response being queued for
  // writing, on this endpoint (any code).
  Histogram* latency = nullptr;
};

class RequestObserver {
 public:
  virtual ~RequestObserver() = default;
  virtual RequestSeries Series(std::string_view endpoint, unsigned code) = 0;
};

}  // namespace distilld::daemon
