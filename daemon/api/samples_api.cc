// POST /v1/samples and POST /v1/feedback: durable ingest and labels for captured traffic.
#include "daemon/api/api_internal.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <charconv>
#include <memory>

#include "daemon/serving/inference_api.h"
#include "daemon/serving/tensor_request.h"
// Last: replaces glog's LOG macro that LibTorch headers define.
#include "common/log.h"

namespace distilld::daemon::api_internal {
namespace {

using storage::Sample;

// Sample index of an element-level error ("...data[123]: ..."), for messages
// that must name the first bad sample.
std::string SampleContext(const Status& st, int64_t per_sample) {
  const std::string& m = st.message();
  size_t p = m.find(".data[");
  if (p == std::string::npos) return st.message();
  int64_t element = 0;
  const char* begin = m.data() + p + 6;
  auto [ptr, ec] = std::from_chars(begin, m.data() + m.size(), element);
  if (ec != std::errc() || *ptr != ']') return st.message();
  return "sample " + std::to_string(element / per_sample) + ": " + m;
}

struct DecodedSamples {
  std::vector<Sample> samples;
  // parameters.holdout: the samples go straight into the held-out set (to
  // seed it for classes the initial student already knows).
  bool holdout = false;
};

// Decodes a POST /v1/samples body into samples, or the 400 message.
Result<DecodedSamples> DecodeSamples(Api* api, const HttpRequest& req) {
  const ModelSignature& model = api->o.model;
  ASSIGN_OR_RETURN(internal::TensorRequest tr, internal::TensorRequest::Parse(req.body(), internal::HeaderLengthOf(req)));
  const internal::InputTensor* input = nullptr;
  const internal::InputTensor* label = nullptr;
  for (const auto& t : tr.inputs()) {
    if (t.view.name == model.input_name) {
      input = &t;
    } else if (t.view.name == "label") {
      label = &t;
    } else {
      return Status::InvalidArgument(t.field + ".name: unknown input '" + t.view.name + "' (expected '" +
                                     model.input_name + "' and optionally 'label')");
    }
  }
  if (input == nullptr) return Status::InvalidArgument("inputs: no tensor named '" + model.input_name + "'");
  const auto& shape = input->view.shape;
  if (shape.size() != model.input_shape.size() + 1 ||
      !std::equal(model.input_shape.begin(), model.input_shape.end(), shape.begin() + 1) || shape[0] < 1) {
    std::vector<int64_t> expected = {-1};
    expected.insert(expected.end(), model.input_shape.begin(), model.input_shape.end());
    return Status::InvalidArgument(input->field + ".shape: got " + internal::ShapeString(shape) + ", expected " +
                                   internal::ShapeString(expected));
  }
  const int64_t n = shape[0];
  const int64_t per_sample = model.SampleElements();
  std::vector<float> values;
  values.reserve(static_cast<size_t>(n * per_sample));
  Status st = internal::TensorRequest::AppendAsFloat(*input, &values);
  if (!st.ok()) return Status::InvalidArgument(SampleContext(st, per_sample));
  std::vector<int64_t> labels;
  if (label != nullptr) {
    if (label->view.shape != std::vector<int64_t>{n}) {
      return Status::InvalidArgument(label->field + ".shape: got " + internal::ShapeString(label->view.shape) +
                                     ", expected [" + std::to_string(n) + "]");
    }
    RETURN_IF_ERROR(internal::TensorRequest::AppendAsInt64(*label, &labels));
    for (int64_t i = 0; i < n; ++i) {
      if (labels[i] < -1 || labels[i] >= model.classes) {
        return Status::InvalidArgument("sample " + std::to_string(i) + ": " + label->field + ".data[" +
                                       std::to_string(i) + "]: label " + std::to_string(labels[i]) +
                                       " outside [-1, " + std::to_string(model.classes - 1) + "]");
      }
    }
  }
  bool holdout = false;
  if (const rapidjson::Value* params = tr.parameters()) {
    if (auto h = params->FindMember("holdout"); h != params->MemberEnd()) {
      if (!h->value.IsBool()) return Status::InvalidArgument("parameters.holdout: expected a boolean");
      holdout = h->value.GetBool();
    }
  }
  if (holdout) {
    if (label == nullptr) {
      return Status::InvalidArgument("parameters.holdout: held-out samples need a 'label' input");
    }
    for (int64_t i = 0; i < n; ++i) {
      if (labels[i] < 0) {
        return Status::InvalidArgument("sample " + std::to_string(i) + ": " + label->field + ".data[" +
                                       std::to_string(i) + "]: held-out samples need a label, got -1");
      }
    }
  }
  std::vector<Sample> samples(static_cast<size_t>(n));
  const size_t bytes = static_cast<size_t>(per_sample) * sizeof(float);
  for (int64_t i = 0; i < n; ++i) {
    Sample& s = samples[i];
    s.dtype = storage::DType::kFloat32;
    s.shape = model.input_shape;
    s.data.assign(reinterpret_cast<const char*>(values.data() + i * per_sample), bytes);
    if (!labels.empty() && labels[i] >= 0) s.label = labels[i];
    s.source = storage::SampleSource::kIngest;
  }
  return DecodedSamples{std::move(samples), holdout};
}

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
  auto samples = std::make_shared<Result<DecodedSamples>>(DecodeSamples(api, req));
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
