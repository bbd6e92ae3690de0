// GET /v1/learner, POST /v1/learner/rounds, GET /v1/learner/rounds/{id}.
#include "daemon/api/api_internal.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <memory>

// Last: replaces glog's LOG macro that LibTorch headers define.
#include "common/log.h"

namespace distilld::daemon::api_internal {

void GetLearner(Api* api, const HttpRequest&, const RouteParams&, Responder respond) {
  OffloadRead(api, std::move(respond), [api]() {
    rapidjson::StringBuffer sb;
    Writer w(sb);
    w.StartObject();
    w.Key("enabled");
    w.Bool(api->o.distiller != nullptr);
    if (api->o.distiller == nullptr) {
      w.Key("disabled_reason");
      w.String(api->o.learner_disabled_reason.c_str());
    }
    learner::DistillerProgress p;
    if (api->o.distiller) p = api->o.distiller->Progress();
    w.Key("state");
    w.String(api->o.distiller ? std::string(learner::LearnerStateName(p.state)).c_str() : "disabled");
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
    // The store's kept count: a dashboard polls this, and counting by a scan
    // would read every pending sample each time.
    w.Key("samples_waiting");
    w.Uint64(api->o.store->IncomingCount());
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
      // Every sample ever held out, evicted ones included: with buffer.seen
      // and samples_waiting it accounts for every sample stored.
      w.Key("held_out_total");
      w.Uint64(api->o.holdout->generation());
      w.Key("class_counts");
      WriteClassCounts(w, api->o.holdout->ClassCounts());
      w.EndObject();
    } else {
      w.Null();
    }
    w.Key("last_round");
    w.StartObject();
    w.Key("outcome");
    w.String(p.last_outcome ? std::string(storage::RoundOutcomeName(*p.last_outcome)).c_str() : "");
    w.Key("reason");
    w.String(p.last_reason.c_str());
    w.Key("version");
    p.last_version ? w.Int64(p.last_version) : w.Null();
    w.EndObject();
    w.EndObject();
    return Json(HttpStatus::ok, sb);
  });
}

void PostRound(Api* api, const HttpRequest&, const RouteParams&, Responder respond) {
  if (api->o.distiller == nullptr) {
    respond(MakeError(HttpStatus::conflict, "the learner is disabled: " + api->o.learner_disabled_reason));
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
  OffloadRead(api, std::move(respond), [api, id]() {
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

}  // namespace distilld::daemon::api_internal
