// GET /v1/stats: serving rates, latency percentiles and the learner in one poll for the dashboard.
#include "daemon/api/api_internal.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>

// Last: replaces glog's LOG macro that LibTorch headers define.
#include "common/log.h"

namespace distilld::daemon::api_internal {
namespace {

// Quantile of a bucketed distribution, interpolated inside the bucket.
double Quantile(const std::vector<double>& bounds, const std::vector<uint64_t>& counts, double q) {
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  if (total == 0) return 0;
  const double rank = q * static_cast<double>(total);
  double seen = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (seen + static_cast<double>(counts[i]) >= rank && counts[i] > 0) {
      double lo = i == 0 ? 0 : bounds[i - 1];
      double hi = i < bounds.size() ? bounds[i] : bounds.back();
      return lo + (hi - lo) * (rank - seen) / static_cast<double>(counts[i]);
    }
    seen += static_cast<double>(counts[i]);
  }
  return bounds.empty() ? 0 : bounds.back();
}

}  // namespace

void GetStats(Api* api, const HttpRequest&, const RouteParams&, Responder respond) {
  ServingSnapshot now;
  if (api->o.serving_stats != nullptr) now = api->o.serving_stats->Inference();
  const int64_t t = api->o.clock->MonotonicMicros();
  double rps, p50, p99;
  {
    std::lock_guard<std::mutex> lock(api->stats_mu);
    // Rates over the time since the previous look, at least one second, so
    // that a dashboard polling every two seconds sees a two-second window.
    if (api->last_us == 0 || t - api->last_us >= 1'000'000) {
      if (api->last_us != 0 && api->last.buckets.size() == now.buckets.size()) {
        std::vector<uint64_t> delta(now.buckets.size());
        for (size_t i = 0; i < delta.size(); ++i) delta[i] = now.buckets[i] - api->last.buckets[i];
        const double secs = static_cast<double>(t - api->last_us) / 1e6;
        api->rps = static_cast<double>(now.requests - api->last.requests) / secs;
        api->p50_ms = 1e3 * Quantile(now.bounds, delta, 0.5);
        api->p99_ms = 1e3 * Quantile(now.bounds, delta, 0.99);
      }
      api->last = now;
      api->last_us = t;
    }
    rps = api->rps;
    p50 = api->p50_ms;
    p99 = api->p99_ms;
  }
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  w.Key("model");
  w.String(api->o.model.name.c_str());
  w.Key("classes");
  w.Int64(api->o.model.classes);
  w.Key("active_version");
  w.Int64(api->o.active_version ? api->o.active_version() : 0);
  w.Key("requests_total");
  w.Uint64(now.requests);
  w.Key("errors");
  w.Uint64(now.errors);
  w.Key("requests_per_s");
  w.Double(rps);
  w.Key("p50_ms");
  w.Double(p50);
  w.Key("p99_ms");
  w.Double(p99);
  w.EndObject();
  respond(Json(HttpStatus::ok, sb));
}

}  // namespace distilld::daemon::api_internal
