// Private to daemon/api/: what the /v1 handlers share. Each resource's
// handlers live in their own file (samples_api.cc, learner_api.cc,
// versions_api.cc, stats_api.cc); learning_api.cc registers them.
#pragma once

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/api/learning_api.h"

namespace distilld::daemon::api_internal {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

// State shared by the handlers (the options plus metrics and the stats window).
struct Api {
  LearningApiOptions o;
  Family<Counter>* ingested = nullptr;  // {source}
  Counter* feedback = nullptr;
  Counter* rollbacks = nullptr;

  std::mutex stats_mu;
  ServingSnapshot last;   // guarded by stats_mu
  int64_t last_us = 0;    // guarded by stats_mu
  double rps = 0, p50_ms = 0, p99_ms = 0;  // guarded by stats_mu
};

std::string_view Sv(boost::beast::string_view s);
HttpResponse Json(HttpStatus status, const rapidjson::StringBuffer& sb);
HttpResponse ErrorFor(const Status& st);
// Runs `work` on the executor and answers with its response; 503 if full.
void Offload(Api* api, Responder respond, std::function<HttpResponse()> work);
// The same on the read executor: for handlers that only read.
void OffloadRead(Api* api, Responder respond, std::function<HttpResponse()> work);
// False (having answered 404) unless the path's {name} is the served model.
bool CheckModel(Api* api, const RouteParams& params, const Responder& respond);
// A version number from a path: 1 to 18 digits. Anything else is 400.
std::optional<int64_t> ParseVersion(std::string_view s);
// An integer query parameter (?key=N) in [min, max]: `fallback` when absent,
// InvalidArgument naming the parameter when not an integer or out of range.
Result<int64_t> QueryInt(std::string_view target, std::string_view key, int64_t fallback, int64_t min, int64_t max);
// Whether the query has ?key=... at all.
bool HasQueryParam(std::string_view target, std::string_view key);
void WriteVersion(Writer& w, const storage::VersionRecord& v);
void WriteRound(Writer& w, const storage::RoundRecord& r);
void WriteClassCounts(Writer& w, const std::map<int64_t, uint64_t>& counts);

// Handlers, one file per resource.
using ApiHandler = void (*)(Api*, const HttpRequest&, const RouteParams&, Responder);
void PostSamples(Api* api, const HttpRequest& req, const RouteParams&, Responder respond);
void PostFeedback(Api* api, const HttpRequest& req, const RouteParams&, Responder respond);
void GetLearner(Api* api, const HttpRequest&, const RouteParams&, Responder respond);
void PostRound(Api* api, const HttpRequest& req, const RouteParams&, Responder respond);
void GetRound(Api* api, const HttpRequest&, const RouteParams& params, Responder respond);
void GetVersions(Api* api, const HttpRequest&, const RouteParams& params, Responder respond);
void PostActivate(Api* api, const HttpRequest& req, const RouteParams& params, Responder respond);
void GetEvents(Api* api, const HttpRequest& req, const RouteParams&, Responder respond);
void GetStats(Api* api, const HttpRequest&, const RouteParams&, Responder respond);

}  // namespace distilld::daemon::api_internal
