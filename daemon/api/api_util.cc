// Helpers the /v1 handlers share (api_internal.h).
#include "daemon/api/api_internal.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <charconv>
#include <memory>

#include "daemon/serving/inference_api.h"
// Last: replaces glog's LOG macro that LibTorch headers define.
#include "common/log.h"
#include "storage/evaluation_json.h"

namespace distilld::daemon::api_internal {

std::string_view Sv(boost::beast::string_view s) { return {s.data(), s.size()}; }

HttpResponse Json(HttpStatus status, const rapidjson::StringBuffer& sb) {
  return MakeResponse(status, std::string(sb.GetString(), sb.GetSize()));
}

HttpResponse ErrorFor(const Status& st) { return MakeError(HttpStatusFor(st), st.message()); }

namespace {
void OffloadTo(BlockingExecutor* executor, Responder respond, std::function<HttpResponse()> work) {
  auto shared = std::make_shared<Responder>(std::move(respond));
  bool ok = executor->Submit([shared, work = std::move(work)] { (*shared)(work()); });
  if (!ok) (*shared)(MakeError(HttpStatus::service_unavailable, "server busy: too many pending operations"));
}
}  // namespace

void Offload(Api* api, Responder respond, std::function<HttpResponse()> work) {
  OffloadTo(api->o.executor, std::move(respond), std::move(work));
}

void OffloadRead(Api* api, Responder respond, std::function<HttpResponse()> work) {
  OffloadTo(api->o.read_executor != nullptr ? api->o.read_executor : api->o.executor, std::move(respond),
            std::move(work));
}

bool CheckModel(Api* api, const RouteParams& params, const Responder& respond) {
  if (params.Get("name") == api->o.model.name) return true;
  respond(MakeError(HttpStatus::not_found, "unknown model '" + std::string(params.Get("name")) + "'"));
  return false;
}

std::optional<int64_t> ParseVersion(std::string_view s) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || v <= 0) return std::nullopt;
  return v;
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
  // false once the retention policy deleted the file (it cannot be activated).
  w.Key("file_kept");
  w.Bool(!v.file_removed_us.has_value());
  w.Key("metrics");
  storage::WriteVersionMetrics(w, v.metrics);
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
  w.String(std::string(storage::RoundOutcomeName(r.outcome)).c_str());
  w.Key("reason");
  w.String(r.reason.c_str());
  w.Key("candidate_version");
  r.candidate_version ? w.Int64(*r.candidate_version) : w.Null();
  w.Key("loss");
  if (r.loss) {
    storage::WriteRoundLoss(w, *r.loss);
  } else {
    w.StartObject();
    w.EndObject();
  }
  w.Key("evaluation");
  if (r.evaluation) {
    storage::WriteRoundEvaluation(w, *r.evaluation);
  } else {
    w.StartObject();
    w.EndObject();
  }
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

namespace {

// The value of ?key=..., if the query has the key.
std::optional<std::string_view> QueryValue(std::string_view target, std::string_view key) {
  size_t q = target.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view query = target.substr(q + 1);
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    if (pair.size() > key.size() && pair.substr(0, key.size()) == key && pair[key.size()] == '=') {
      return pair.substr(key.size() + 1);
    }
    if (amp == std::string_view::npos) break;
    query = query.substr(amp + 1);
  }
  return std::nullopt;
}

}  // namespace

bool HasQueryParam(std::string_view target, std::string_view key) { return QueryValue(target, key).has_value(); }

Result<int64_t> QueryInt(std::string_view target, std::string_view key, int64_t fallback, int64_t min, int64_t max) {
  std::optional<std::string_view> num = QueryValue(target, key);
  if (!num) return fallback;
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(num->data(), num->data() + num->size(), v);
  const std::string name = "query parameter '" + std::string(key) + "'";
  if (ec != std::errc() || ptr != num->data() + num->size()) {
    return Status::InvalidArgument(name + ": not an integer: '" + std::string(num->substr(0, 32)) + "'");
  }
  if (v < min || v > max) {
    return Status::InvalidArgument(name + ": " + std::to_string(v) + " is outside [" + std::to_string(min) + ", " +
                                   std::to_string(max) + "]");
  }
  return v;
}

}  // namespace distilld::daemon::api_internal
