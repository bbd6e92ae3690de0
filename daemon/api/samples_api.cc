// POST /v1/samples and POST /v1/feedback: durable ingest and labels for captured traffic.
#include "daemon/api/api_internal.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <charconv>
#include <memory>

#include "daemon/api/samples_decode.h"
#include "daemon/serving/inference_api.h"
#include "daemon/serving/tensor_request.h"
// Last: replaces glog's LOG macro that LibTorch headers define.
#include "common/log.h"

namespace distilld::daemon::api_internal {
namespace {

using storage::Sample;

// parameters.holdout: the labelled samples join the held-out set directly
// (durably, one atomic write); they are never trained on.
HttpResponse AddToHoldout(Api* api, const std::vector<Sample>& batch) {
  if (api->o.holdout == nullptr) {
    return MakeError(HttpStatus::conflict, "parameters.holdout: the learner is disabled, so there is no held-out set");
  }
  Status st = api->o.holdout->Add(batch);
  if (!st.ok()) {
    LOG(kWarning) << "holdout ingest failed: " << st.ToString();
    if (st.code() == StatusCode::kResourceExhausted) {
      return MakeError(HttpStatus::insufficient_storage,
                       "parameters.holdout: " + st.message() + " (replay.holdout_max)");
    }
    return ErrorFor(Status::Unavailable("could not store the held-out samples: " + st.message()));
  }
  if (api->ingested) api->ingested->WithLabels({"holdout"})->Increment(batch.size());
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  w.Key("accepted");
  w.Uint64(batch.size());
  w.Key("holdout");
  w.Bool(true);
  w.Key("holdout_size");
  w.Uint64(api->o.holdout->size());
  w.EndObject();
  return Json(HttpStatus::ok, sb);
}

}  // namespace

void PostSamples(Api* api, const HttpRequest& req, const RouteParams&, Responder respond) {
  auto samples = std::make_shared<Result<DecodedSamples>>(
      DecodeSamplesBody(api->o.model, req.body(), internal::HeaderLengthOf(req)));
  if (!samples->ok()) {
    respond(MakeError(HttpStatus::bad_request, samples->status().message()));
    return;
  }
  Offload(api, std::move(respond), [api, samples]() {
    const auto& batch = samples->value().samples;
    if (samples->value().holdout) return AddToHoldout(api, batch);
    Result<storage::IdRange> range = api->o.store->AppendIncoming(batch);
    if (!range.ok()) {
      LOG(kWarning) << "ingest failed: " << range.status().ToString();
      return ErrorFor(range.status().code() == StatusCode::kInvalidArgument
                          ? range.status()
                          : Status::Unavailable("could not store the samples: " + range.status().message()));
    }
    if (api->ingested) api->ingested->WithLabels({"ingest"})->Increment(batch.size());
    rapidjson::StringBuffer sb;
    Writer w(sb);
    w.StartObject();
    w.Key("accepted");
    w.Uint64(batch.size());
    w.Key("first_id");
    w.Uint64(range->first);
    w.Key("last_id");
    w.Uint64(range->last);
    w.EndObject();
    return Json(HttpStatus::ok, sb);
  });
}

void PostFeedback(Api* api, const HttpRequest& req, const RouteParams&, Responder respond) {
  rapidjson::Document d;
  d.Parse(req.body().data(), req.body().size());
  if (d.HasParseError() || !d.IsObject()) {
    respond(MakeError(HttpStatus::bad_request, "body: expected a JSON object {\"id\": ..., \"label\": ...}"));
    return;
  }
  if (!d.HasMember("id") || !d["id"].IsString() || d["id"].GetStringLength() == 0) {
    respond(MakeError(HttpStatus::bad_request, "id: expected the non-empty id of a captured inference request"));
    return;
  }
  std::vector<int64_t> labels;
  if (d.HasMember("label") && d["label"].IsInt64()) {
    labels.push_back(d["label"].GetInt64());
  } else if (d.HasMember("label") && d["label"].IsArray()) {
    for (const auto& v : d["label"].GetArray()) {
      if (!v.IsInt64()) {
        respond(MakeError(HttpStatus::bad_request, "label: expected integers"));
        return;
      }
      labels.push_back(v.GetInt64());
    }
  } else {
    respond(MakeError(HttpStatus::bad_request, "label: expected a class index or a list of them"));
    return;
  }
  for (int64_t l : labels) {
    if (l < 0 || l >= api->o.model.classes) {
      respond(MakeError(HttpStatus::bad_request, "label: " + std::to_string(l) + " outside [0, " +
                                                     std::to_string(api->o.model.classes - 1) + "]"));
      return;
    }
  }
  const std::string id = d["id"].GetString();
  std::optional<CaptureIndex::Entry> entry = api->o.capture->Find(id);
  if (!entry) {
    respond(MakeError(HttpStatus::not_found, "id: no captured request '" + id + "' (unknown or expired)"));
    return;
  }
  if (static_cast<int64_t>(labels.size()) != entry->count) {
    respond(MakeError(HttpStatus::bad_request, "label: request '" + id + "' had " + std::to_string(entry->count) +
                                                   " samples, got " + std::to_string(labels.size()) + " labels"));
    return;
  }
  Offload(api, std::move(respond), [api, entry = *entry, labels, id]() {
    for (int64_t i = 0; i < entry.count; ++i) {
      Result<Sample> s = api->o.store->GetIncoming(entry.first + i);
      if (!s.ok()) {
        if (s.status().code() == StatusCode::kNotFound) {
          return MakeError(HttpStatus::conflict, "id: the samples of '" + id +
                                                     "' were already consumed by a learner round");
        }
        return ErrorFor(s.status());
      }
      s->label = labels[i];
      s->source = storage::SampleSource::kFeedback;
      Status st = api->o.store->PutIncoming(entry.first + i, *s);
      if (!st.ok()) return ErrorFor(st);
    }
    if (api->feedback) api->feedback->Increment(labels.size());
    rapidjson::StringBuffer sb;
    Writer w(sb);
    w.StartObject();
    w.Key("id");
    w.String(id.c_str());
    w.Key("labelled");
    w.Uint64(labels.size());
    w.EndObject();
    return Json(HttpStatus::ok, sb);
  });
}

}  // namespace distilld::daemon::api_internal
