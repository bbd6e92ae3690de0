// ServingStats: the one record of the requests the daemon answers, which
// /metrics and /v1/stats both read.
//
// The HTTP server reports every answered request to it (RequestObserver):
// counts by endpoint and status code, latency by endpoint, from a request's
// first byte to its response being queued. They are kept in two Prometheus
// families that it registers, distilld_http_requests_total{endpoint,code} and
// distilld_http_request_duration_seconds{endpoint}, so that /metrics renders
// them with the rest of the registry; Inference() returns the infer
// endpoint's totals as a typed snapshot, from which /v1/stats derives recent
// rates and percentiles.
//
// Thread-safety: every method may be called concurrently. Ownership: the
// MetricsRegistry owns the families and must outlive this object; the
// counters and histograms Series() hands out live as long as the registry.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "daemon/http/metrics.h"
#include "daemon/http/request_observer.h"

namespace distilld::daemon {

// Totals of the inference endpoint since the daemon started.
struct ServingSnapshot {
  std::vector<double> bounds;     // latency bucket upper bounds, seconds
  std::vector<uint64_t> buckets;  // requests per bucket (not cumulative); the last is +Inf
  uint64_t requests = 0;          // answered, whatever the code
  uint64_t errors = 0;            // answered with a 5xx code
};

class ServingStats final : public RequestObserver {
 public:
  // Route name of the inference endpoint (the KServe infer routes), whose
  // requests Inference() sums up.
  static constexpr std::string_view kInferEndpoint = "infer";

  // metrics: required; not owned. The two families are registered in it here.
  explicit ServingStats(MetricsRegistry* metrics);
  ServingStats(const ServingStats&) = delete;
  ServingStats& operator=(const ServingStats&) = delete;

  // The series of one endpoint and code, created on first use.
  RequestSeries Series(std::string_view endpoint, unsigned code) override;

  // Of the infer endpoint. Buckets cover the same bounds before the first
  // request as after it, all zero.
  ServingSnapshot Inference() const;

 private:
  Family<Counter>* answered_;   // {endpoint, code}
  Family<Histogram>* latency_;  // {endpoint}
};

}  // namespace distilld::daemon
