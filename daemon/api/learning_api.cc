#include "daemon/api/learning_api.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <memory>
#include <mutex>

#include "daemon/serving/inference_api.h"
#include "daemon/serving/tensor_request.h"
// Last: replaces glog's LOG macro that LibTorch headers define.
#include "common/log.h"

namespace distilld::daemon {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;
using storage::Sample;

// State shared by the handlers (the options plus metrics and the stats window).
struct Api {
  LearningApiOptions o;
  Family<Counter>* ingested = nullptr;  // {source}
  Counter* feedback = nullptr;
  Counter* rollbacks = nullptr;

  std::mutex stats_mu;
  ServingCounters last;   // guarded by stats_mu
  int64_t last_us = 0;    // guarded by stats_mu
  double rps = 0, p50_ms = 0, p99_ms = 0;  // guarded by stats_mu
};

std::string_view Sv(boost::beast::string_view s) { return {s.data(), s.size()}; }

HttpResponse Json(HttpStatus status, const rapidjson::StringBuffer& sb) {
  return MakeResponse(status, std::string(sb.GetString(), sb.GetSize()));
}

HttpResponse ErrorFor(const Status& st) { return MakeError(HttpStatusFor(st), st.message()); }

// Runs `work` on the executor and answers with its response; 503 if full.
void Offload(Api* api, Responder respond, std::function<HttpResponse()> work) {
  auto shared = std::make_shared<Responder>(std::move(respond));
  bool ok = api->o.executor->Submit([shared, work = std::move(work)] { (*shared)(work()); });
  if (!ok) (*shared)(MakeError(HttpStatus::service_unavailable, "server busy: too many pending operations"));
}

bool Authorized(Api* api, const HttpRequest& req, const Responder& respond) {
  auto header = req[boost::beast::http::field::authorization];
  if (api->o.auth->Allows(std::string_view(header.data(), header.size()))) return true;
  HttpResponse res = MakeError(HttpStatus::unauthorized, "missing or wrong bearer token (Authorization header)");
  res.set(boost::beast::http::field::www_authenticate, "Bearer");
  respond(std::move(res));
  return false;
}

bool CheckModel(Api* api, const RouteParams& params, const Responder& respond) {
  if (params.Get("name") == api->o.model.name) return true;
  respond(MakeError(HttpStatus::not_found, "unknown model '" + std::string(params.Get("name")) + "'"));
  return false;
}

// A version number from a path: 1 to 18 digits. Anything else is 400.
std::optional<int64_t> ParseVersion(std::string_view s) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || v <= 0) return std::nullopt;
  return v;
}

void WriteRawJson(Writer& w, const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  if (d.HasParseError()) {
    w.Null();
  } else {
    d.Accept(w);
  }
}

void WriteVersion(Writer& w, const storage::VersionRecord& v) {
  w.StartObject();
  w.Key("id");
  w.Int64(v.id);
  w.Key("status");
  w.String(std::string(storage::VersionStatusName(v.status)).c_str());
  w.Key("parent");
  v.parent ? w.Int64(*v.parent) : w.Null();
  w.Key("round_id");
  v.round_id ? w.Int64(*v.round_id) : w.Null();
  w.Key("created_us");
  w.Int64(v.created_us);
  w.Key("size_bytes");
  w.Int64(v.size_bytes);
  w.Key("sha256");
  w.String(v.sha256.c_str());
  w.Key("note");
  w.String(v.note.c_str());
  w.Key("metrics");
  WriteRawJson(w, v.metrics_json);
  w.EndObject();
}

void WriteRound(Writer& w, const storage::RoundRecord& r) {
  w.StartObject();
  w.Key("id");
  w.Int64(r.id);
  w.Key("trigger");
  w.String(r.trigger.c_str());
  w.Key("started_us");
  w.Int64(r.started_us);
  w.Key("ended_us");
  r.ended_us ? w.Int64(*r.ended_us) : w.Null();
  w.Key("samples_new");
  w.Int64(r.samples_new);
  w.Key("samples_replay");
  w.Int64(r.samples_replay);
  w.Key("outcome");
  w.String(r.outcome.c_str());
  w.Key("reason");
  w.String(r.reason.c_str());
  w.Key("candidate_version");
  r.candidate_version ? w.Int64(*r.candidate_version) : w.Null();
  w.Key("loss");
  WriteRawJson(w, r.loss_json);
  w.Key("evaluation");
  WriteRawJson(w, r.eval_json);
  w.EndObject();
}

void WriteClassCounts(Writer& w, const std::map<int64_t, uint64_t>& counts) {
  w.StartObject();
  for (const auto& [k, n] : counts) {
    w.Key(std::to_string(k).c_str());
    w.Uint64(n);
  }
  w.EndObject();
}

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
  std::optional<std::string_view> header_length;
  auto hl = req.find("Inference-Header-Content-Length");
  if (hl != req.end()) header_length = Sv(hl->value());
  ASSIGN_OR_RETURN(internal::TensorRequest tr, internal::TensorRequest::Parse(req.body(), header_length));
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

void PostSamples(Api* api, const HttpRequest& req, const RouteParams&, Responder respond) {
  if (!Authorized(api, req, respond)) return;
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
  if (!Authorized(api, req, respond)) return;
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

void GetLearner(Api* api, const HttpRequest&, const RouteParams&, Responder respond) {
  Offload(api, std::move(respond), [api]() {
    rapidjson::StringBuffer sb;
    Writer w(sb);
    w.StartObject();
    w.Key("enabled");
    w.Bool(api->o.distiller != nullptr);
    learner::DistillerProgress p;
    if (api->o.distiller) p = api->o.distiller->Progress();
    w.Key("state");
    w.String(api->o.distiller ? p.state.c_str() : "disabled");
    w.Key("round");
    w.StartObject();
    w.Key("id");
    w.Int64(p.round_id);
    w.Key("step");
    w.Int64(p.step);
    w.Key("total_steps");
    w.Int64(p.total_steps);
    w.Key("loss");
    w.Double(std::isfinite(p.loss) ? p.loss : 0.0);
    w.Key("samples_per_s");
    w.Double(p.samples_per_s);
    w.EndObject();
    w.Key("rounds_completed");
    w.Int64(p.rounds_completed);
    w.Key("rounds_queued");
    w.Int64(p.queued_rounds);
    w.Key("active_version");
    w.Int64(api->o.active_version ? api->o.active_version() : p.active_version);
    Result<uint64_t> waiting = api->o.store->CountIncoming(0);
    w.Key("samples_waiting");
    waiting.ok() ? w.Uint64(*waiting) : w.Null();
    w.Key("buffer");
    if (api->o.buffer) {
      replaybuffer::BufferStats b = api->o.buffer->Stats();
      w.StartObject();
      w.Key("size");
      w.Uint64(b.size);
      w.Key("capacity");
      w.Uint64(b.capacity);
      w.Key("bytes");
      w.Uint64(b.bytes);
      w.Key("seen");
      w.Uint64(b.seen);
      w.Key("class_counts");
      WriteClassCounts(w, b.class_counts);
      w.EndObject();
    } else {
      w.Null();
    }
    w.Key("holdout");
    if (api->o.holdout) {
      w.StartObject();
      w.Key("size");
      w.Uint64(api->o.holdout->size());
      w.Key("class_counts");
      WriteClassCounts(w, api->o.holdout->ClassCounts());
      w.EndObject();
    } else {
      w.Null();
    }
    w.Key("last_round");
    w.StartObject();
    w.Key("outcome");
    w.String(p.last_outcome.c_str());
    w.Key("reason");
    w.String(p.last_reason.c_str());
    w.Key("version");
    p.last_version ? w.Int64(p.last_version) : w.Null();
    w.EndObject();
    w.EndObject();
    return Json(HttpStatus::ok, sb);
  });
}

void PostRound(Api* api, const HttpRequest& req, const RouteParams&, Responder respond) {
  if (!Authorized(api, req, respond)) return;
  if (api->o.distiller == nullptr) {
    respond(MakeError(HttpStatus::conflict, "the learner is disabled (learner.enabled: false)"));
    return;
  }
  // Counting pending samples reads RocksDB and queueing writes SQLite: not on
  // an I/O thread.
  Offload(api, std::move(respond), [api]() {
    Result<learner::RoundRequest> r = api->o.distiller->RequestRound();
    if (!r.ok()) return MakeError(HttpStatus::conflict, r.status().message());
    rapidjson::StringBuffer sb;
    Writer w(sb);
    w.StartObject();
    if (r->kind == learner::RoundRequest::Kind::kNothingNew) {
      w.Key("error");
      w.String(r->message.c_str());
      if (r->round_id > 0) {
        w.Key("round_id");
        w.Int64(r->round_id);
      }
      w.EndObject();
      return Json(HttpStatus::conflict, sb);
    }
    w.Key("round_id");
    w.Int64(r->round_id);
    w.Key("joined");
    w.Bool(r->kind == learner::RoundRequest::Kind::kJoined);
    w.EndObject();
    return Json(HttpStatus::accepted, sb);
  });
}

void GetRound(Api* api, const HttpRequest&, const RouteParams& params, Responder respond) {
  std::optional<int64_t> id = ParseVersion(params.Get("id"));
  if (!id) {
    respond(MakeError(HttpStatus::bad_request,
                      "round id: expected a positive integer, got '" + std::string(params.Get("id")) + "'"));
    return;
  }
  Offload(api, std::move(respond), [api, id]() {
    Result<storage::RoundRecord> r = api->o.registry->GetRound(*id);
    if (!r.ok()) {
      if (r.status().code() != StatusCode::kNotFound) return ErrorFor(r.status());
      Result<std::vector<storage::RoundRecord>> newest = api->o.registry->ListRounds(1);
      std::string latest = newest.ok() && !newest->empty()
                               ? "the latest round is " + std::to_string(newest->front().id)
                               : "no round has run yet";
      return MakeError(HttpStatus::not_found, "round " + std::to_string(*id) + " not found (" + latest + ")");
    }
    rapidjson::StringBuffer sb;
    Writer w(sb);
    WriteRound(w, *r);
    return Json(HttpStatus::ok, sb);
  });
}

void GetVersions(Api* api, const HttpRequest&, const RouteParams& params, Responder respond) {
  if (!CheckModel(api, params, respond)) return;
  Offload(api, std::move(respond), [api]() {
    Result<std::vector<storage::VersionRecord>> vs = api->o.registry->ListVersions();
    if (!vs.ok()) return ErrorFor(vs.status());
    rapidjson::StringBuffer sb;
    Writer w(sb);
    w.StartObject();
    w.Key("model");
    w.String(api->o.model.name.c_str());
    w.Key("active");
    int64_t active = 0;
    for (const auto& v : *vs) {
      if (v.status == storage::VersionStatus::kActive) active = v.id;
    }
    active ? w.Int64(active) : w.Null();
    w.Key("versions");
    w.StartArray();
    for (const auto& v : *vs) WriteVersion(w, v);
    w.EndArray();
    w.EndObject();
    return Json(HttpStatus::ok, sb);
  });
}

void PostActivate(Api* api, const HttpRequest& req, const RouteParams& params, Responder respond) {
  if (!Authorized(api, req, respond)) return;
  if (!CheckModel(api, params, respond)) return;
  std::optional<int64_t> v = ParseVersion(params.Get("v"));
  if (!v) {
    respond(MakeError(HttpStatus::bad_request, "version: expected a positive integer"));
    return;
  }
  Offload(api, std::move(respond), [api, v]() {
    Result<int64_t> previous = api->o.activator->Activate(*v);
    if (!previous.ok()) {
      if (previous.status().code() == StatusCode::kFailedPrecondition) {
        return MakeError(HttpStatus::conflict, previous.status().message());
      }
      return ErrorFor(previous.status());
    }
    if (api->rollbacks && *v < *previous) api->rollbacks->Increment();
    rapidjson::StringBuffer sb;
    Writer w(sb);
    w.StartObject();
    w.Key("model");
    w.String(api->o.model.name.c_str());
    w.Key("active");
    w.Int64(*v);
    w.Key("previous");
    w.Int64(*previous);
    w.EndObject();
    return Json(HttpStatus::ok, sb);
  });
}

int64_t QueryInt(std::string_view target, std::string_view key, int64_t fallback) {
  size_t q = target.find('?');
  if (q == std::string_view::npos) return fallback;
  std::string_view query = target.substr(q + 1);
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    if (pair.size() > key.size() && pair.substr(0, key.size()) == key && pair[key.size()] == '=') {
      int64_t v = fallback;
      std::string_view num = pair.substr(key.size() + 1);
      auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
      return ec == std::errc() && ptr == num.data() + num.size() ? v : fallback;
    }
    if (amp == std::string_view::npos) break;
    query = query.substr(amp + 1);
  }
  return fallback;
}

void GetEvents(Api* api, const HttpRequest& req, const RouteParams&, Responder respond) {
  const int64_t limit = std::clamp<int64_t>(QueryInt(Sv(req.target()), "limit", 50), 1, 1000);
  const int64_t after = std::max<int64_t>(0, QueryInt(Sv(req.target()), "after", 0));
  Offload(api, std::move(respond), [api, limit, after]() {
    Result<std::vector<storage::EventRecord>> ev = api->o.registry->ListEvents(limit, after);
    if (!ev.ok()) return ErrorFor(ev.status());
    rapidjson::StringBuffer sb;
    Writer w(sb);
    w.StartObject();
    w.Key("events");
    w.StartArray();
    for (const auto& e : *ev) {
      w.StartObject();
      w.Key("id");
      w.Int64(e.id);
      w.Key("time_us");
      w.Int64(e.time_us);
      w.Key("kind");
      w.String(e.kind.c_str());
      w.Key("message");
      w.String(e.message.c_str());
      w.Key("version");
      e.version_id ? w.Int64(*e.version_id) : w.Null();
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
    return Json(HttpStatus::ok, sb);
  });
}

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

void GetStats(Api* api, const HttpRequest&, const RouteParams&, Responder respond) {
  ServingCounters now;
  if (api->o.serving_counters) now = api->o.serving_counters();
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

}  // namespace

bool CaptureInferenceSamples(const LearningApiOptions& o, std::string request_id, std::vector<float> data,
                             int64_t count) {
  const int64_t per_sample = o.model.SampleElements();
  const int64_t now = (o.clock ? o.clock : Clock::Real())->NowMicros();
  auto samples = std::make_shared<std::vector<Sample>>(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    Sample& s = (*samples)[i];
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
  auto bind = [api](void (*fn)(Api*, const HttpRequest&, const RouteParams&, Responder)) {
    return [api, fn](const HttpRequest& req, const RouteParams& params, Responder respond) {
      fn(api.get(), req, params, std::move(respond));
    };
  };
  router->Add(HttpVerb::post, "/v1/samples", "samples", bind(&PostSamples));
  router->Add(HttpVerb::post, "/v1/feedback", "feedback", bind(&PostFeedback));
  router->Add(HttpVerb::get, "/v1/learner", "learner", bind(&GetLearner));
  router->Add(HttpVerb::post, "/v1/learner/rounds", "round_start", bind(&PostRound));
  router->Add(HttpVerb::get, "/v1/learner/rounds/{id}", "round", bind(&GetRound));
  router->Add(HttpVerb::get, "/v1/models/{name}/versions", "versions", bind(&GetVersions));
  router->Add(HttpVerb::post, "/v1/models/{name}/versions/{v}/activate", "activate", bind(&PostActivate));
  router->Add(HttpVerb::get, "/v1/events", "events", bind(&GetEvents));
  router->Add(HttpVerb::get, "/v1/stats", "stats", bind(&GetStats));
}

}  // namespace distilld::daemon
