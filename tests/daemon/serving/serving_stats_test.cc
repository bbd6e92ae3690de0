// ServingStats: what the HTTP server records shows up both in the typed
// snapshot /v1/stats reads and in the Prometheus text /metrics renders.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/http/metrics.h"
#include "daemon/serving/serving_stats.h"

using namespace distilld::daemon;

namespace {

// As the HTTP session records one answered request.
void Record(ServingStats& stats, std::string_view endpoint, unsigned code, double seconds) {
  RequestSeries s = stats.Series(endpoint, code);
  REQUIRE(s.answered != nullptr);
  REQUIRE(s.latency != nullptr);
  s.answered->Increment();
  s.latency->Observe(seconds);
}

// Index of the bucket a latency falls in: the first bound it does not exceed
// (Prometheus "le"), or the +Inf bucket.
size_t BucketOf(const std::vector<double>& bounds, double seconds) {
  size_t i = 0;
  while (i < bounds.size() && seconds > bounds[i]) ++i;
  return i;
}

bool Has(const std::string& text, const std::string& line) {
  return text.find(line + "\n") != std::string::npos;
}

}  // namespace

TEST_CASE("ServingStats: before any request, zero totals over the latency buckets and no series") {
  MetricsRegistry metrics;
  ServingStats stats(&metrics);
  ServingSnapshot s = stats.Inference();
  CHECK(s.requests == 0);
  CHECK(s.errors == 0);
  REQUIRE(!s.bounds.empty());
  CHECK(s.buckets == std::vector<uint64_t>(s.bounds.size() + 1, 0));
  const std::string text = metrics.Render();
  CHECK(Has(text, "# TYPE distilld_http_requests_total counter"));
  CHECK(Has(text, "# TYPE distilld_http_request_duration_seconds histogram"));
  // Reading the snapshot created no infer series.
  CHECK(text.find("endpoint=\"infer\"") == std::string::npos);
}

TEST_CASE("ServingStats: recorded requests, errors and latencies in the snapshot and the exposition") {
  MetricsRegistry metrics;
  ServingStats stats(&metrics);
  for (int i = 0; i < 3; ++i) Record(stats, "infer", 200, 0.001);
  Record(stats, "infer", 404, 0.00015);
  Record(stats, "infer", 503, 0.002);
  Record(stats, "infer", 500, 10.0);  // beyond the last bound
  // Other endpoints are in /metrics, not in the inference snapshot.
  Record(stats, "samples", 500, 0.001);
  Record(stats, "metrics", 200, 0.0001);

  ServingSnapshot s = stats.Inference();
  CHECK(s.requests == 6);
  CHECK(s.errors == 2);  // the 503 and the 500; a 404 is the client's error
  REQUIRE(s.buckets.size() == s.bounds.size() + 1);
  std::vector<uint64_t> expected(s.buckets.size(), 0);
  expected[BucketOf(s.bounds, 0.001)] += 3;
  expected[BucketOf(s.bounds, 0.00015)] += 1;
  expected[BucketOf(s.bounds, 0.002)] += 1;
  expected.back() += 1;
  CHECK(s.buckets == expected);
  CHECK(BucketOf(s.bounds, 0.00015) < BucketOf(s.bounds, 0.001));
  CHECK(BucketOf(s.bounds, 0.001) < BucketOf(s.bounds, 0.002));
  CHECK(BucketOf(s.bounds, 0.002) < s.bounds.size());

  const std::string text = metrics.Render();
  CHECK(Has(text, R"(distilld_http_requests_total{endpoint="infer",code="200"} 3)"));
  CHECK(Has(text, R"(distilld_http_requests_total{endpoint="infer",code="404"} 1)"));
  CHECK(Has(text, R"(distilld_http_requests_total{endpoint="infer",code="503"} 1)"));
  CHECK(Has(text, R"(distilld_http_requests_total{endpoint="infer",code="500"} 1)"));
  CHECK(Has(text, R"(distilld_http_requests_total{endpoint="samples",code="500"} 1)"));
  CHECK(Has(text, R"(distilld_http_requests_total{endpoint="metrics",code="200"} 1)"));
  CHECK(Has(text, R"(distilld_http_request_duration_seconds_count{endpoint="infer"} 6)"));
  CHECK(Has(text, R"(distilld_http_request_duration_seconds_bucket{endpoint="infer",le="+Inf"} 6)"));
  CHECK(Has(text, R"(distilld_http_request_duration_seconds_count{endpoint="samples"} 1)"));
  // The exposition's buckets are the snapshot's, cumulated.
  uint64_t cumulative = 0;
  for (size_t i = 0; i < s.bounds.size(); ++i) {
    cumulative += s.buckets[i];
    std::string le;
    AppendPromDouble(&le, s.bounds[i]);
    INFO("le=" << le);
    CHECK(Has(text, R"(distilld_http_request_duration_seconds_bucket{endpoint="infer",le=")" + le + "\"} " +
                        std::to_string(cumulative)));
  }
}

TEST_CASE("ServingStats: one series per endpoint and code, stable for the session to keep") {
  MetricsRegistry metrics;
  ServingStats stats(&metrics);
  RequestSeries ok = stats.Series("infer", 200);
  RequestSeries again = stats.Series("infer", 200);
  RequestSeries error = stats.Series("infer", 500);
  CHECK(ok.answered == again.answered);
  CHECK(ok.latency == again.latency);
  CHECK(error.answered != ok.answered);
  CHECK(error.latency == ok.latency);  // latency is by endpoint only
  CHECK(stats.Series("health_live", 200).latency != ok.latency);
}
