// GET /v1/models/{name}/versions, POST .../versions/{v}/activate, GET /v1/events.
#include "daemon/api/api_internal.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
#include <memory>

// Last: replaces glog's LOG macro that LibTorch headers define.
#include "common/log.h"

namespace distilld::daemon::api_internal {

void GetVersions(Api* api, const HttpRequest&, const RouteParams& params, Responder respond) {
  if (!CheckModel(api, params, respond)) return;
  OffloadRead(api, std::move(respond), [api]() {
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

void PostActivate(Api* api, const HttpRequest&, const RouteParams& params, Responder respond) {
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

void GetEvents(Api* api, const HttpRequest& req, const RouteParams&, Responder respond) {
  const std::string_view target = Sv(req.target());
  Result<int64_t> limit = QueryInt(target, "limit", 50, 1, 1000);
  Result<int64_t> after = QueryInt(target, "after", 0, 0, INT64_MAX);
  for (const Status& st : {limit.status(), after.status()}) {
    if (!st.ok()) return respond(ErrorFor(st));
  }
  // With ?after= the client pages forward from a cursor (oldest first, every
  // event once); without it, it wants the latest (newest first).
  const bool forward = HasQueryParam(target, "after");
  OffloadRead(api, std::move(respond), [api, limit = *limit, after = *after, forward]() {
    Result<std::vector<storage::EventRecord>> ev = forward ? api->o.registry->ListEventsAfter(after, limit + 1)
                                                           : api->o.registry->ListEvents(limit);
    if (!ev.ok()) return ErrorFor(ev.status());
    const bool more = forward && ev->size() > static_cast<size_t>(limit);
    if (more) ev->pop_back();
    rapidjson::StringBuffer sb;
    Writer w(sb);
    w.StartObject();
    if (forward) {
      w.Key("more");  // another page follows the last event here
      w.Bool(more);
    }
    w.Key("events");
    w.StartArray();
    for (const auto& e : *ev) {
      w.StartObject();
      w.Key("id");
      w.Int64(e.id);
      w.Key("time_us");
      w.Int64(e.time_us);
      w.Key("kind");
      w.String(std::string(storage::EventKindName(e.kind)).c_str());
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

}  // namespace distilld::daemon::api_internal
