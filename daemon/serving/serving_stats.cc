#include "daemon/serving/serving_stats.h"

#include <string>

namespace distilld::daemon {
namespace {

std::vector<double> LatencyBounds() { return ExponentialBuckets(50e-6, 2, 16); }

}  // namespace

ServingStats::ServingStats(MetricsRegistry* metrics)
    : answered_(metrics->RegisterCounter("distilld_http_requests_total",
                                         "HTTP requests answered, by endpoint and status code.",
                                         {"endpoint", "code"})),
      latency_(metrics->RegisterHistogram("distilld_http_request_duration_seconds",
                                          "Time from a request's first byte to its response being queued for writing.",
                                          LatencyBounds(), {"endpoint"})) {}

RequestSeries ServingStats::Series(std::string_view endpoint, unsigned code) {
  RequestSeries s;
  s.answered = answered_->WithLabels({std::string(endpoint), std::to_string(code)});
  s.latency = latency_->WithLabels({std::string(endpoint)});
  return s;
}

ServingSnapshot ServingStats::Inference() const {
  ServingSnapshot s;
  s.bounds = LatencyBounds();
  s.buckets.assign(s.bounds.size() + 1, 0);
  // Children, not WithLabels: looking the infer series up must not create it,
  // or /metrics would show an infer histogram before any infer request.
  for (const auto& [labels, histogram] : latency_->Children()) {
    if (labels.size() == 1 && labels[0] == kInferEndpoint) s.buckets = histogram->BucketCounts();
  }
  // Requests and errors from one pass over the counters, so errors never
  // exceed requests in a snapshot taken while requests are answered.
  for (const auto& [labels, counter] : answered_->Children()) {
    if (labels.size() != 2 || labels[0] != kInferEndpoint) continue;
    const uint64_t n = counter->value();
    s.requests += n;
    if (!labels[1].empty() && labels[1][0] == '5') s.errors += n;
  }
  return s;
}

}  // namespace distilld::daemon
