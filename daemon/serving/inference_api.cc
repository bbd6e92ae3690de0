#include "daemon/serving/inference_api.h"

#include <algorithm>
#include <charconv>
#include <memory>
#include <optional>
#include <string_view>

#include "daemon/http/json_util.h"
#include "daemon/serving/serving_stats.h"
#include "daemon/serving/tensor_request.h"

#ifndef DISTILLD_VERSION
#define DISTILLD_VERSION "0.1.0"
#endif

namespace distilld::daemon {
namespace {

namespace http = boost::beast::http;

// A {version} path segment: digits only.
std::optional<int64_t> ParseVersion(std::string_view v) {
  int64_t version = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), version);
  if (ec != std::errc() || ptr != v.data() + v.size()) return std::nullopt;
  return version;
}

// The statistics of a version that has answered nothing yet.
VersionStats NoRequestsYet(int64_t version) {
  VersionStats s;
  s.version = version;
  return s;
}

class InferenceApi : public std::enable_shared_from_this<InferenceApi> {
 public:
  explicit InferenceApi(InferenceApiOptions options) : o_(std::move(options)) {
    if (o_.server_version.empty()) o_.server_version = DISTILLD_VERSION;
    if (o_.clock == nullptr) o_.clock = Clock::Real();
  }

  void Register(Router* r) {
    auto self = shared_from_this();
    auto bind = [self](void (InferenceApi::*fn)(const HttpRequest&, const RouteParams&, Responder)) {
      return [self, fn](const HttpRequest& req, const RouteParams& p, Responder respond) {
        ((*self).*fn)(req, p, std::move(respond));
      };
    };
    r->Add(HttpVerb::get, "/v2/health/live", "health_live", bind(&InferenceApi::Live));
    r->Add(HttpVerb::get, "/v2/health/ready", "health_ready", bind(&InferenceApi::Ready));
    r->Add(HttpVerb::get, "/v2", "server_metadata", bind(&InferenceApi::ServerMetadata));
    r->Add(HttpVerb::get, "/v2/models/{name}", "model_metadata", bind(&InferenceApi::ModelMetadata));
    r->Add(HttpVerb::get, "/v2/models/{name}/versions/{version}", "model_metadata",
           bind(&InferenceApi::ModelMetadata));
    r->Add(HttpVerb::get, "/v2/models/{name}/ready", "model_ready", bind(&InferenceApi::ModelReady));
    r->Add(HttpVerb::get, "/v2/models/{name}/versions/{version}/ready", "model_ready",
           bind(&InferenceApi::ModelReady));
    // ServingStats sums up the infer endpoint's requests by this name.
    const std::string infer(ServingStats::kInferEndpoint);
    r->Add(HttpVerb::post, "/v2/models/{name}/infer", infer, bind(&InferenceApi::Infer), o_.infer_access);
    r->Add(HttpVerb::post, "/v2/models/{name}/versions/{version}/infer", infer, bind(&InferenceApi::Infer),
           o_.infer_access);
    if (o_.model_stats != nullptr) {
      r->Add(HttpVerb::get, "/v2/models/stats", "model_stats", bind(&InferenceApi::Stats));
      r->Add(HttpVerb::get, "/v2/models/{name}/stats", "model_stats", bind(&InferenceApi::Stats));
      r->Add(HttpVerb::get, "/v2/models/{name}/versions/{version}/stats", "model_stats", bind(&InferenceApi::Stats));
    }
  }

 private:
  bool Serving() const { return o_.models->Active() != nullptr && (!o_.serving || o_.serving()); }

  void Live(const HttpRequest&, const RouteParams&, Responder respond) {
    respond(MakeResponse(HttpStatus::ok, "{\"live\":true}"));
  }

  void Ready(const HttpRequest&, const RouteParams&, Responder respond) {
    bool ready = Serving();
    respond(MakeResponse(ready ? HttpStatus::ok : HttpStatus::service_unavailable,
                         ready ? "{\"ready\":true}" : "{\"ready\":false}"));
  }

  void ServerMetadata(const HttpRequest&, const RouteParams&, Responder respond) {
    std::string body = "{\"name\":";
    AppendJsonString(&body, o_.server_name);
    body += ",\"version\":";
    AppendJsonString(&body, o_.server_version);
    body += o_.model_stats != nullptr ? ",\"extensions\":[\"binary_tensor_data\",\"statistics\"]}"
                                      : ",\"extensions\":[\"binary_tensor_data\"]}";
    respond(MakeResponse(HttpStatus::ok, std::move(body)));
  }

  // Resolves {name} and the optional {version}. On failure it has responded
  // and returns null.
  std::shared_ptr<const ServedModel> Resolve(const RouteParams& p, const Responder& respond, bool* unavailable) {
    *unavailable = false;
    if (p.Get("name") != o_.model.name) {
      respond(MakeError(HttpStatus::not_found, "unknown model '" + std::string(p.Get("name")) + "'"));
      return nullptr;
    }
    if (p.Has("version")) {
      std::string_view v = p.Get("version");
      std::shared_ptr<const ServedModel> m;
      if (std::optional<int64_t> version = ParseVersion(v)) m = o_.models->Find(*version);
      if (!m) {
        respond(MakeError(HttpStatus::not_found,
                          "unknown or unloaded version '" + std::string(v) + "' of model '" + o_.model.name + "'"));
      }
      return m;
    }
    auto m = o_.models->Active();
    if (!m) {
      *unavailable = true;
      respond(MakeError(HttpStatus::service_unavailable, "no model version is loaded yet"));
    }
    return m;
  }

  void ModelMetadata(const HttpRequest&, const RouteParams& p, Responder respond) {
    bool unavailable = false;
    auto m = Resolve(p, respond, &unavailable);
    if (!m) return;
    std::string body = "{\"name\":";
    AppendJsonString(&body, o_.model.name);
    body += ",\"versions\":[";
    body += "\"" + std::to_string(m->version()) + "\"";
    body += "],\"platform\":\"pytorch_torchscript\",\"inputs\":[{\"name\":";
    AppendJsonString(&body, o_.model.input_name);
    body += ",\"datatype\":\"FP32\",\"shape\":[-1";
    for (int64_t d : o_.model.input_shape) body += "," + std::to_string(d);
    const std::string c = std::to_string(o_.model.classes);
    body += "]}],\"outputs\":[{\"name\":\"logits\",\"datatype\":\"FP32\",\"shape\":[-1," + c +
            "]},{\"name\":\"probabilities\",\"datatype\":\"FP32\",\"shape\":[-1," + c +
            "]},{\"name\":\"label\",\"datatype\":\"INT64\",\"shape\":[-1]}],\"parameters\":{\"precision\":";
    AppendJsonString(&body, o_.precision);
    body += "}}";
    respond(MakeResponse(HttpStatus::ok, std::move(body)));
  }

  void ModelReady(const HttpRequest&, const RouteParams& p, Responder respond) {
    bool unavailable = false;
    auto m = Resolve(p, respond, &unavailable);
    if (!m) return;
    bool ready = !o_.serving || o_.serving();
    respond(MakeResponse(ready ? HttpStatus::ok : HttpStatus::service_unavailable,
                         ready ? "{\"ready\":true}" : "{\"ready\":false}"));
  }

  void Infer(const HttpRequest& req, const RouteParams& p, Responder respond) {
    const int64_t start_us = o_.clock->MonotonicMicros();
    bool unavailable = false;
    auto m = Resolve(p, respond, &unavailable);
    if (!m) return;
    const int64_t resolved = m->version();
    // A failure counts against the version the request was resolved to.
    auto fail = [this, resolved, start_us](const Responder& respond, const Status& s) {
      if (o_.model_stats != nullptr) o_.model_stats->RecordFailure(resolved, o_.clock->MonotonicMicros() - start_us);
      respond(MakeError(HttpStatusFor(s), s.message()));
    };
    if (o_.serving && !o_.serving()) {
      fail(respond, Status::Unavailable("server is not serving (shutting down)"));
      return;
    }
    auto decoded = DecodeInferRequest(std::string_view(req.body().data(), req.body().size()),
                                      internal::HeaderLengthOf(req), o_.model);
    if (!decoded.ok()) {
      fail(respond, decoded.status());
      return;
    }
    const int64_t input_us = o_.clock->MonotonicMicros() - start_us;
    auto request = std::make_shared<InferRequest>(std::move(decoded).value());
    if (o_.on_request) o_.on_request(request->id, request->data, request->batch);
    InferTask task;
    task.batch = request->batch;
    task.input = std::move(request->data);
    if (p.Has("version")) task.version = m->version();
    m.reset();  // the batcher picks the version; do not keep this one alive
    auto self = shared_from_this();
    task.done = [self, request, respond, fail, start_us, input_us](Result<InferOutput> out) {
      if (!out.ok()) {
        fail(respond, out.status());
        return;
      }
      const int64_t encode_us = self->o_.clock->MonotonicMicros();
      EncodedResponse enc = EncodeInferResponse(self->o_.model, out->version, *request, out->logits.data());
      HttpResponse res = MakeResponse(HttpStatus::ok, std::move(enc.body),
                                      enc.header_length ? "application/octet-stream" : "application/json");
      if (enc.header_length) res.set(internal::kHeaderLengthField, std::to_string(*enc.header_length));
      if (self->o_.model_stats != nullptr) {
        const int64_t end_us = self->o_.clock->MonotonicMicros();
        self->o_.model_stats->RecordSuccess(
            out->version, {end_us - start_us, out->queue_us, input_us, out->infer_us, end_us - encode_us});
      }
      respond(std::move(res));
    };
    Status s = o_.batcher->Submit(std::move(task));
    if (!s.ok()) fail(respond, s);
  }

  // The statistics extension: every version with a record (or the one asked
  // for), in Triton's response shape.
  void Stats(const HttpRequest&, const RouteParams& p, Responder respond) {
    if (p.Has("name") && p.Get("name") != o_.model.name) {
      respond(MakeError(HttpStatus::not_found, "unknown model '" + std::string(p.Get("name")) + "'"));
      return;
    }
    std::vector<VersionStats> versions;
    if (p.Has("version")) {
      std::string_view v = p.Get("version");
      std::optional<VersionStats> one;
      if (std::optional<int64_t> version = ParseVersion(v)) {
        one = o_.model_stats->Of(*version);
        if (!one && o_.models->Find(*version)) one = NoRequestsYet(*version);
      }
      if (!one) {
        respond(MakeError(HttpStatus::not_found, "no statistics for version '" + std::string(v) + "' of model '" +
                                                     o_.model.name + "'"));
        return;
      }
      versions.push_back(std::move(*one));
    } else {
      versions = o_.model_stats->All();
      // The served version is listed even before its first request.
      if (auto active = o_.models->Active()) {
        const int64_t a = active->version();
        if (std::none_of(versions.begin(), versions.end(), [a](const VersionStats& s) { return s.version == a; })) {
          versions.push_back(NoRequestsYet(a));
        }
      }
    }
    respond(MakeResponse(HttpStatus::ok, EncodeModelStats(o_.model.name, versions)));
  }

  InferenceApiOptions o_;
};

}  // namespace

HttpStatus HttpStatusFor(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk: return HttpStatus::ok;
    case StatusCode::kInvalidArgument: return HttpStatus::bad_request;
    case StatusCode::kNotFound: return HttpStatus::not_found;
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition: return HttpStatus::conflict;
    case StatusCode::kUnavailable:
    case StatusCode::kCancelled:  // shutting down
    case StatusCode::kResourceExhausted: return HttpStatus::service_unavailable;
    case StatusCode::kUnauthenticated: return HttpStatus::unauthorized;
    default: return HttpStatus::internal_server_error;
  }
}

void RegisterInferenceApi(const InferenceApiOptions& options, Router* router) {
  std::make_shared<InferenceApi>(options)->Register(router);
}

}  // namespace distilld::daemon
