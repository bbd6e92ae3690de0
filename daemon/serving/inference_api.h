// The KServe v2 REST endpoints (health, metadata, infer) registered on a
// Router. Handlers never block: infer decodes on the I/O thread, hands the
// samples to the Batcher and answers from the inference thread's callback.
//
// Thread-safety: handlers run concurrently on I/O threads. The API does not
// own the Batcher or the ModelManager, which must outlive the server.
#pragma once

#include <functional>
#include <optional>
#include <vector>
#include <string>

#include "common/clock.h"
#include "common/status.h"
#include "daemon/serving/batcher.h"
#include "daemon/http/types.h"
#include "daemon/serving/kserve_codec.h"
#include "daemon/serving/model_manager.h"
#include "daemon/serving/model_stats.h"
#include "daemon/http/router.h"

namespace distilld::daemon {

struct InferenceApiOptions {
  ModelSignature model;
  std::string server_name = "distilld";
  std::string server_version;  // default: the project version
  std::string precision = "float";  // reported in model metadata ("float" or "int8")
  // Required; not owned.
  Batcher* batcher = nullptr;
  ModelManager* models = nullptr;
  // Extra readiness condition (e.g. false while draining). Default: always.
  std::function<bool()> serving;
  // Access of the infer routes: kToken with server.auth_inference (the
  // router checks the token before the handler runs).
  Access infer_access = Access::kOpen;
  // Optional: sees every valid infer request before it is queued (traffic
  // capture). Runs on the I/O thread: it must not block.
  std::function<void(const std::optional<std::string>& id, const std::vector<float>& input, int64_t batch)>
      on_request;
  // Optional; not owned. Gets every infer request's outcome and timings, and
  // serves GET /v2/models[/{name}[/versions/{v}]]/stats (the statistics
  // extension). Without it those routes are not registered.
  ModelStats* model_stats = nullptr;
  // Not owned; default Clock::Real(). Times the requests for model_stats.
  Clock* clock = nullptr;
};

// HTTP status for a Status code (OK -> 200, InvalidArgument -> 400, ...).
HttpStatus HttpStatusFor(const Status& status);

// Adds GET /v2, /v2/health/{live,ready}, /v2/models/{name}[/versions/{v}],
// .../ready, .../stats (with model_stats) and POST .../infer to `router`.
// The options are copied.
void RegisterInferenceApi(const InferenceApiOptions& options, Router* router);

}  // namespace distilld::daemon
