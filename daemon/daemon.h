// Daemon: the serving process as one object that owns every component and
// knows the order in which they start and stop.
//
// Start(): open the state dir (SampleStore under <state>/samples, Registry at
// <state>/registry.sqlite), load the registry's active version (building,
// saving and activating the initial student when there is none), publish it
// to the ModelManager (warm-up included), start the Batcher, register the
// routes and start the listeners. Shutdown(): stop accepting, let in-flight
// requests finish (bounded by server.drain_timeout_ms), stop the inference
// threads, close the listeners, flush storage.
//
// The learner thread (learner::IncrementalDistiller) starts last, after the
// listeners, and publishes through the VersionActivator, which also serves
// the rollback endpoint; it is stopped first in Shutdown(). The online-
// learning API (/v1) and the dashboard register next to the inference API.
//
// Thread-safety: Start, Reload and Shutdown must not run concurrently with
// each other (RunServe calls them from its signal loop); accessors are safe
// from any thread once Start returned. The Daemon owns all components.
#pragma once

#include <atomic>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/heartbeat.h"
#include "common/status.h"
#include "config/config.h"
#include "daemon/http/auth.h"
#include "daemon/serving/batcher.h"
#include "daemon/http/blocking_executor.h"
#include "daemon/serving/capture.h"
#include "daemon/http/server.h"
#include "daemon/api/learning_api.h"
#include "daemon/http/listen_fds.h"
#include "daemon/http/metrics.h"
#include "daemon/serving/model_manager.h"
#include "daemon/serving/model_stats.h"
#include "daemon/http/router.h"
#include "daemon/serving/serving_stats.h"
#include "daemon/serving/version_activator.h"
#include "learner/distiller.h"
#include "replaybuffer/replay_buffer.h"
#include "storage/registry.h"
#include "storage/sample_store.h"

namespace distilld::daemon {

struct DaemonOptions {
  // Not owned; default Clock::Real(). Tests inject a ManualClock for records.
  Clock* clock = nullptr;
  // A --log-level from the command line; it wins over logging.level on reload.
  std::string log_level_override;
  // Listening sockets from systemd (socket activation); when not empty the
  // server serves on them instead of server.listen/server.unix_socket. The
  // Daemon takes ownership of the fds. Default: none (bind from the config).
  InheritedSockets listen_sockets;
  // Reports the free bytes of the state dir's filesystem instead of statvfs;
  // for tests of the storage.min_free_mb floor. Default none.
  std::function<Result<uint64_t>()> free_bytes_probe;
};

class Daemon {
 public:
  // Validates nothing beyond what Start needs; the config is already validated.
  static std::unique_ptr<Daemon> Create(const config::Config& config, const DaemonOptions& options = {});
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  Status Start();
  // Graceful stop; idempotent. Returns false if the drain timed out (the
  // remaining connections were closed).
  bool Shutdown();
  // Applies a reloaded config by each changed field's reload class
  // (config::ReloadClass): server and batching limits, log level and learner
  // triggers at once; training and gate fields from the learner's next
  // round; restart-only fields keep their running values. Logs every change
  // and records them as events ("config_reload", and "config_restart_needed"
  // naming the fields that wait for a restart). The new config must be
  // valid; on error nothing is applied.
  Status Reload(const config::Config& next);

  // "http://127.0.0.1:8080", "unix:/run/distilld/distilld.sock".
  std::vector<std::string> ListeningAddresses() const;
  uint16_t tcp_port() const;
  bool serving() const { return started_.load() && !draining_.load(); }

  config::Config config() const;
  ModelManager* models() const { return models_.get(); }
  Batcher* batcher() const { return batcher_.get(); }
  HttpServer* server() const { return server_.get(); }
  MetricsRegistry* metrics() const { return metrics_.get(); }
  storage::SampleStore* store() const { return store_.get(); }
  storage::Registry* registry() const { return registry_.get(); }
  replaybuffer::HoldoutSet* holdout() const { return holdout_.get(); }
  // Null when the learner is disabled (config, or no teacher file).
  learner::IncrementalDistiller* distiller() const { return distiller_.get(); }
  VersionActivator* activator() const { return activator_.get(); }
  replaybuffer::ReplayBuffer* buffer() const { return buffer_.get(); }
  // Beaten by the learner thread while idle (every poll) and per training
  // step (real clock); null when the learner is disabled. For the systemd
  // watchdog's liveness check, with Batcher::heartbeats().
  const Heartbeat* learner_heartbeat() const { return learner_beat_.get(); }

 private:
  Daemon(const config::Config& config, const DaemonOptions& options);
  Status OpenState();
  // The teacher, loaded and checked on a thread of its own (daemon.cc).
  struct LoadedTeacher;
  static LoadedTeacher LoadTeacher(const config::Config& c);
  Status StartLearner(int64_t active_version, std::future<LoadedTeacher> teacher);
  void RegisterLearnerMetrics();
  void RegisterRoutes();

  mutable std::mutex config_mu_;
  config::Config config_;  // guarded by config_mu_
  DaemonOptions options_;
  std::unique_ptr<MetricsRegistry> metrics_;
  // Before server_: the server records into it until it is destroyed.
  std::unique_ptr<ServingStats> serving_stats_;
  // Before the batcher and the server, which record into it.
  std::unique_ptr<ModelStats> model_stats_;
  std::unique_ptr<storage::FreeSpaceFloor> free_space_;  // outlives store_ and the learner
  std::unique_ptr<storage::SampleStore> store_;
  std::unique_ptr<storage::Registry> registry_;
  std::unique_ptr<ModelManager> models_;
  std::unique_ptr<Batcher> batcher_;
  std::unique_ptr<replaybuffer::ReplayBuffer> buffer_;
  std::unique_ptr<replaybuffer::HoldoutSet> holdout_;
  std::unique_ptr<Authorizer> auth_;
  std::unique_ptr<BlockingExecutor> executor_;
  std::unique_ptr<BlockingExecutor> read_executor_;  // the GET handlers' (LearningApiOptions)
  std::unique_ptr<CaptureIndex> capture_;
  std::unique_ptr<VersionActivator> activator_;
  std::unique_ptr<Heartbeat> learner_beat_;  // declared before distiller_: outlives its thread
  std::unique_ptr<learner::IncrementalDistiller> distiller_;
  std::string learner_disabled_reason_;  // why distiller_ is null ("" while it runs)
  LearningApiOptions learning_api_;
  Gauge* holdout_accuracy_ = nullptr;
  std::function<void(const storage::RoundRecord&)> round_observer_;  // learner metrics
  Router router_;
  std::unique_ptr<HttpServer> server_;
  std::atomic<bool> started_{false};
  std::atomic<bool> draining_{false};
  std::atomic<bool> shut_down_{false};
};

}  // namespace distilld::daemon
