#include "daemon/api/learning_api.h"

#include <memory>
#include <utility>

#include "daemon/api/api_internal.h"
// Last: replaces glog's LOG macro that LibTorch headers define.
#include "common/log.h"

namespace distilld::daemon {

using api_internal::Api;

bool CaptureInferenceSamples(const LearningApiOptions& o, std::string request_id, std::vector<float> data,
                             int64_t count) {
  const int64_t per_sample = o.model.SampleElements();
  const int64_t now = (o.clock ? o.clock : Clock::Real())->NowMicros();
  auto samples = std::make_shared<std::vector<storage::Sample>>(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    storage::Sample& s = (*samples)[i];
    s.shape = o.model.input_shape;
    s.data.assign(reinterpret_cast<const char*>(data.data() + i * per_sample), per_sample * sizeof(float));
    s.source = storage::SampleSource::kCapture;
    s.ingest_time_us = now;
    s.request_id = request_id;
  }
  return o.executor->Submit([o, samples, request_id = std::move(request_id)]() {
    Result<storage::IdRange> range = o.store->AppendIncoming(*samples);
    if (!range.ok()) {
      LOG(kWarning) << "capture: could not store samples: " << range.status().ToString();
      return;
    }
    o.capture->Put(request_id, range->first, static_cast<int64_t>(samples->size()));
  });
}

void RegisterLearningApi(const LearningApiOptions& options, Router* router) {
  // Handlers share one Api object that lives as long as the router's
  // handlers (captured by shared_ptr).
  auto api = std::make_shared<Api>();
  api->o = options;
  if (api->o.clock == nullptr) api->o.clock = Clock::Real();
  if (MetricsRegistry* m = options.metrics) {
    api->ingested = m->RegisterCounter("distilld_samples_ingested_total",
                                       "Samples stored durably, by source (ingest, capture).", {"source"});
    api->feedback = m->RegisterCounter("distilld_feedback_labels_total",
                                       "Labels attached to captured samples through /v1/feedback.")
                        ->Get();
    api->rollbacks = m->RegisterCounter("distilld_rollbacks_total",
                                        "Activations of an older version through the API.")
                         ->Get();
  }
  auto bind = [api](api_internal::ApiHandler fn) {
    return [api, fn](const HttpRequest& req, const RouteParams& params, Responder respond) {
      fn(api.get(), req, params, std::move(respond));
    };
  };
  router->Add(HttpVerb::post, "/v1/samples", "samples", bind(&api_internal::PostSamples), Access::kToken);
  router->Add(HttpVerb::post, "/v1/feedback", "feedback", bind(&api_internal::PostFeedback), Access::kToken);
  router->Add(HttpVerb::get, "/v1/learner", "learner", bind(&api_internal::GetLearner));
  router->Add(HttpVerb::post, "/v1/learner/rounds", "round_start", bind(&api_internal::PostRound), Access::kToken);
  router->Add(HttpVerb::get, "/v1/learner/rounds/{id}", "round", bind(&api_internal::GetRound));
  router->Add(HttpVerb::get, "/v1/models/{name}/versions", "versions", bind(&api_internal::GetVersions));
  router->Add(HttpVerb::post, "/v1/models/{name}/versions/{v}/activate", "activate", bind(&api_internal::PostActivate), Access::kToken);
  router->Add(HttpVerb::get, "/v1/events", "events", bind(&api_internal::GetEvents));
  router->Add(HttpVerb::get, "/v1/stats", "stats", bind(&api_internal::GetStats));
}

}  // namespace distilld::daemon
