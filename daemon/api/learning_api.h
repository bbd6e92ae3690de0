// The online-learning API (/v1) registered on a Router: sample ingest, label
// feedback for captured traffic, learner status and control, the version list
// with activation (rollback), events and serving stats for the dashboard.
//
// Handlers that touch disk (a durable RocksDB write, SQLite, a model load)
// run on the BlockingExecutor, never on an I/O thread; an executor that is
// full answers 503. Every POST needs the bearer token when auth is on: the
// routes are registered with Access::kToken and the router checks it.
//
// Thread-safety: handlers run concurrently. Nothing here is owned: every
// pointer in the options must outlive the server.
#pragma once

#include <functional>
#include <string>

#include "common/clock.h"
#include "daemon/http/blocking_executor.h"
#include "daemon/serving/capture.h"
#include "daemon/serving/kserve_codec.h"
#include "daemon/http/metrics.h"
#include "daemon/http/router.h"
#include "daemon/serving/serving_stats.h"
#include "daemon/serving/version_activator.h"
#include "learner/distiller.h"
#include "replaybuffer/replay_buffer.h"
#include "storage/registry.h"
#include "storage/sample_store.h"

namespace distilld::daemon {

struct LearningApiOptions {
  ModelSignature model;
  storage::SampleStore* store = nullptr;          // required
  storage::Registry* registry = nullptr;          // required
  replaybuffer::ReplayBuffer* buffer = nullptr;   // optional (learner off)
  replaybuffer::HoldoutSet* holdout = nullptr;    // optional
  learner::IncrementalDistiller* distiller = nullptr;  // optional: null = learner disabled
  std::string learner_disabled_reason;  // why distiller is null, for GET /v1/learner and 409s
  VersionActivator* activator = nullptr;          // required
  BlockingExecutor* executor = nullptr;           // required
  // Optional; default `executor`. The GET handlers run here, so a status
  // read never queues behind writes stalled in the store.
  BlockingExecutor* read_executor = nullptr;
  CaptureIndex* capture = nullptr;                // required
  MetricsRegistry* metrics = nullptr;             // optional
  Clock* clock = nullptr;                         // default Clock::Real()
  std::function<int64_t()> active_version;        // served version, for /v1/stats
  const ServingStats* serving_stats = nullptr;    // optional: without it /v1/stats counts no requests
};

void RegisterLearningApi(const LearningApiOptions& options, Router* router);

// Stores `count` captured inference samples as unlabelled incoming samples
// (on the executor) and indexes them under `request_id` for feedback.
// Returns false if the executor refused the work.
bool CaptureInferenceSamples(const LearningApiOptions& options, std::string request_id,
                             std::vector<float> data, int64_t count);

}  // namespace distilld::daemon
