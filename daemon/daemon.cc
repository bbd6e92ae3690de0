#include "daemon/daemon.h"


#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "daemon/api/dashboard.h"
#include "daemon/serving/inference_api.h"
#include "daemon/version.h"
#include "learner/model/arch.h"
#include "learner/model/model_io.h"
#include "learner/round_recovery.h"
#include "learner/round_settings.h"
#include "learner/version_retention.h"
// Last: replaces glog's LOG macro that LibTorch headers define.
#include "common/log.h"

namespace distilld::daemon {
namespace {

namespace fs = std::filesystem;

HttpLimits LimitsFrom(const config::ServerConfig& s) {
  HttpLimits l;
  l.max_body_bytes = s.max_body_bytes;
  l.max_header_bytes = s.max_header_bytes;
  l.read_timeout_ms = s.read_timeout_ms;
  l.idle_timeout_ms = s.idle_timeout_ms;
  l.max_connections = s.max_connections;
  return l;
}

BatchingLimits BatchingFrom(const config::BatchingConfig& b) {
  BatchingLimits l;
  l.max_batch_size = b.max_batch_size;
  l.max_queue_delay_us = b.max_queue_delay_us;
  l.queue_capacity = b.queue_capacity;
  l.early_dispatch = b.early_dispatch;
  return l;
}

ModelSignature SignatureFrom(const config::ModelConfig& m) {
  ModelSignature s;
  s.name = m.name;
  s.input_name = m.input_name;
  s.input_shape = m.input_shape;
  s.classes = m.classes;
  return s;
}

// The profiling executor specialises per input shape: warm the sizes the
// batcher will produce most (powers of two up to the maximum, and it).
std::vector<int64_t> WarmupSizes(int max_batch) {
  std::vector<int64_t> sizes;
  for (int64_t b = 1; b < max_batch; b *= 2) sizes.push_back(b);
  sizes.push_back(max_batch);
  return sizes;
}

// Held-out accuracy the learner recorded for a version, if it has one.
std::optional<double> HoldoutAccuracy(const storage::VersionMetrics& metrics) {
  if (!metrics.evaluation || metrics.evaluation->candidate.labelled <= 0) return std::nullopt;
  return metrics.evaluation->candidate.accuracy;
}

void AppendMetric(std::string* out, const char* name, const char* type, const char* help) {
  *out += "# HELP ";
  *out += name;
  *out += ' ';
  *out += help;
  *out += "\n# TYPE ";
  *out += name;
  *out += ' ';
  *out += type;
  *out += '\n';
}


}  // namespace

std::unique_ptr<Daemon> Daemon::Create(const config::Config& config, const DaemonOptions& options) {
  return std::unique_ptr<Daemon>(new Daemon(config, options));
}

Daemon::Daemon(const config::Config& config, const DaemonOptions& options)
    : config_(config), options_(options), metrics_(std::make_unique<MetricsRegistry>()) {
  if (options_.clock == nullptr) options_.clock = Clock::Real();
}

Daemon::~Daemon() { Shutdown(); }

config::Config Daemon::config() const {
  std::lock_guard<std::mutex> lock(config_mu_);
  return config_;
}

Status Daemon::OpenState() {
  const config::Config c = config();
  const fs::path state(c.storage.state_dir);
  std::error_code ec;
  fs::create_directories(state / "models", ec);
  if (ec) return Status::IoError("cannot create " + (state / "models").string() + ": " + ec.message());

  free_space_ = std::make_unique<storage::FreeSpaceFloor>(state.string(), c.storage.min_free_mb << 20,
                                                         options_.free_bytes_probe);
  storage::SampleStoreOptions so;
  so.free_space = free_space_.get();
  so.path = (state / "samples").string();
  so.block_cache_bytes = c.storage.block_cache_mb << 20;
  so.write_buffer_bytes = c.storage.write_buffer_mb << 20;
  so.sync = c.storage.sync;
  so.clock = options_.clock;
  ASSIGN_OR_RETURN(store_, storage::SampleStore::Open(so));

  storage::RegistryOptions ro;
  ro.path = (state / "registry.sqlite").string();
  ro.clock = options_.clock;
  ASSIGN_OR_RETURN(registry_, storage::Registry::Open(ro));

  replaybuffer::ReplayBufferOptions bo;
  bo.capacity = c.replay.capacity;
  bo.max_bytes = c.replay.max_mb << 20;
  bo.policy = c.replay.policy == config::ReplayPolicy::kReservoir ? replaybuffer::Policy::kReservoir
                                                                   : replaybuffer::Policy::kClassBalanced;
  ASSIGN_OR_RETURN(buffer_, replaybuffer::ReplayBuffer::Open(store_.get(), bo));
  replaybuffer::HoldoutOptions hold;
  hold.fraction = c.replay.holdout_fraction;
  hold.max_samples = c.replay.holdout_max;
  ASSIGN_OR_RETURN(holdout_, replaybuffer::HoldoutSet::Open(store_.get(), hold));

  // A round a crash interrupted: finished if its version was decided, else
  // aborted with its samples left for the next round (round_recovery.h).
  learner::RecoveryOptions rec;
  rec.store = store_.get();
  rec.registry = registry_.get();
  rec.buffer = buffer_.get();
  rec.seed = c.learner.seed;
  ASSIGN_OR_RETURN(learner::RecoveryReport recovered, learner::RecoverInterruptedRound(rec));
  if (recovered.rounds_finished + recovered.versions_rejected + recovered.samples_consumed > 0) {
    const std::string what = "after a restart: " + std::to_string(recovered.rounds_finished) +
                             " interrupted round(s) recorded with their version's outcome, " +
                             std::to_string(recovered.samples_consumed) + " of their samples consumed, " +
                             std::to_string(recovered.versions_rejected) + " never-activated version(s) rejected";
    LOG(kInfo) << "learner: " << what;
    (void)registry_->LogEvent(storage::EventKind::kRoundAborted, what);
  }
  return Status::Ok();
}

// Loaded while the active student is loaded and warmed, so that at a restart
// the two loads overlap rather than add up before the daemon listens.
struct Daemon::LoadedTeacher {
  std::string path;
  std::optional<torch::jit::Module> module;  // set when loaded and checked
  std::string why_not;                       // otherwise: why not
  bool error = false;                        // why_not is an error, not a missing default file
};

Daemon::LoadedTeacher Daemon::LoadTeacher(const config::Config& c) {
  LoadedTeacher t;
  t.path = c.model.teacher.empty() ? (fs::path(c.storage.state_dir) / "teacher.pt").string() : c.model.teacher;
  if (!fs::exists(t.path)) {
    t.error = !c.model.teacher.empty();
    t.why_not = t.error ? "model.teacher: no such file: " + t.path
                        : "no teacher at " + t.path + " (set model.teacher, or run `distilld train-teacher`)";
    return t;
  }
  Result<torch::jit::Module> loaded = learner::LoadModel(t.path);
  t.error = true;
  if (!loaded.ok()) {
    t.why_not = loaded.status().WithContext("model.teacher").message();
    return t;
  }
  torch::jit::Module teacher = std::move(loaded).value();
  if (Status sig = learner::CheckSignature(teacher, c.model.input_shape, c.model.classes); !sig.ok()) {
    t.why_not = sig.WithContext("model.teacher: " + t.path).message();
    return t;
  }
  t.module = std::move(teacher);
  t.error = false;
  return t;
}

Status Daemon::StartLearner(int64_t active_version, std::future<LoadedTeacher> loading) {
  const config::Config c = config();
  if (!c.learner.enabled) {
    learner_disabled_reason_ = "learner.enabled: false";
    LOG(kInfo) << "learner disabled (learner.enabled: false)";
    return Status::Ok();
  }
  // Without a usable teacher the daemon still serves; the learner stays off
  // and GET /v1/learner, the log and an event say why.
  auto disable = [this](const std::string& why, bool error) {
    learner_disabled_reason_ = why;
    if (error) {
      LOG(kError) << "learner disabled: " << why;
      (void)registry_->LogEvent(storage::EventKind::kError, "learner disabled: " + why);
    } else {
      LOG(kWarning) << "learner disabled: " << why;
    }
    return Status::Ok();
  };
  LoadedTeacher teacher = loading.get();
  if (!teacher.module) return disable(teacher.why_not, teacher.error);
  const std::string teacher_path = teacher.path;
  learner::DistillerOptions d;
  d.learner = c.learner;
  d.replay = c.replay;
  d.state_dir = c.storage.state_dir;
  d.store = store_.get();
  d.registry = registry_.get();
  d.free_space = free_space_.get();
  d.buffer = buffer_.get();
  d.holdout = holdout_.get();
  d.publisher = activator_.get();
  d.clock = options_.clock;
  d.teacher = *teacher.module;
  d.active_version = active_version;
  d.on_round_end = round_observer_;
  learner_beat_ = std::make_unique<Heartbeat>();
  Heartbeat* beat = learner_beat_.get();
  d.on_heartbeat = [beat] { beat->Beat(); };
  if (c.learner.yield_above_rps > 0) {
    // The request rate over windows of at least 100 ms (real time: it
    // describes the machine, not the test clock). Learner thread only.
    struct RateWindow {
      std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
      uint64_t count = 0;
      bool busy = false;
    };
    auto window = std::make_shared<RateWindow>();
    Batcher* batcher = batcher_.get();
    const double threshold = c.learner.yield_above_rps;
    window->count = batcher->completed_requests();
    d.inference_busy = [window, batcher, threshold] {
      const auto now = std::chrono::steady_clock::now();
      const double seconds = std::chrono::duration<double>(now - window->start).count();
      if (seconds >= 0.1) {
        const uint64_t count = batcher->completed_requests();
        window->busy = static_cast<double>(count - window->count) / seconds > threshold;
        window->start = now;
        window->count = count;
      }
      return window->busy;
    };
  }
  ASSIGN_OR_RETURN(distiller_, learner::IncrementalDistiller::Create(std::move(d)));
  LOG(kInfo) << "learner ready: teacher " << teacher_path << ", round every " << c.learner.trigger_count
             << " samples or " << c.learner.trigger_interval_s << " s";
  return Status::Ok();
}

void Daemon::RegisterLearnerMetrics() {
  holdout_accuracy_ = metrics_
                          ->RegisterGauge("distilld_active_holdout_accuracy",
                                          "Held-out accuracy the learner measured for the served version.")
                          ->Get();
  replaybuffer::ReplayBuffer* buffer = buffer_.get();
  replaybuffer::HoldoutSet* holdout = holdout_.get();
  const storage::FreeSpaceFloor* floor = free_space_.get();
  metrics_->AddCollector([](std::string* out) {
    // At most two: the served version, and one being prepared or draining.
    AppendMetric(out, "distilld_models_loaded", "gauge",
                 "Student versions loaded in memory (the served one, plus one being prepared or draining).");
    *out += "distilld_models_loaded " + std::to_string(ServedModel::alive()) + "\n";
  });
  metrics_->AddCollector([floor](std::string* out) {
    AppendMetric(out, "distilld_storage_free_bytes", "gauge",
                 "Free bytes on the state dir's filesystem; writes stop at storage.min_free_mb.");
    Result<uint64_t> free = floor->FreeBytes();
    *out += "distilld_storage_free_bytes " + (free.ok() ? std::to_string(*free) : std::string("NaN")) + "\n";
    AppendMetric(out, "distilld_storage_min_free_bytes", "gauge", "The storage.min_free_mb floor, in bytes.");
    *out += "distilld_storage_min_free_bytes " + std::to_string(floor->min_free_bytes()) + "\n";
  });
  metrics_->AddCollector([buffer, holdout](std::string* out) {
    replaybuffer::BufferStats b = buffer->Stats();
    AppendMetric(out, "distilld_replay_buffer_samples", "gauge", "Samples in the replay buffer.");
    *out += "distilld_replay_buffer_samples " + std::to_string(b.size) + "\n";
    AppendMetric(out, "distilld_replay_buffer_capacity", "gauge", "Replay buffer capacity in samples.");
    *out += "distilld_replay_buffer_capacity " + std::to_string(b.capacity) + "\n";
    AppendMetric(out, "distilld_replay_buffer_class_samples", "gauge", "Samples in the replay buffer by class.");
    for (const auto& [cls, n] : b.class_counts) {
      *out += "distilld_replay_buffer_class_samples{class=\"" + std::to_string(cls) + "\"} " + std::to_string(n) +
              "\n";
    }
    AppendMetric(out, "distilld_replay_offered_samples_total", "counter",
                 "Samples ever offered to the replay buffer.");
    *out += "distilld_replay_offered_samples_total " + std::to_string(b.seen) + "\n";
    AppendMetric(out, "distilld_holdout_samples", "gauge", "Samples in the held-out evaluation set.");
    *out += "distilld_holdout_samples " + std::to_string(holdout->size()) + "\n";
  });
  Family<Counter>* rounds = metrics_->RegisterCounter("distilld_learner_rounds_total",
                                                      "Learner rounds finished, by outcome.", {"outcome"});
  Family<Histogram>* durations = metrics_->RegisterHistogram(
      "distilld_learner_round_duration_seconds", "Wall time of a learner round.",
      ExponentialBuckets(0.25, 2, 12));
  for (const char* o : {"promoted", "rejected", "aborted", "failed"}) rounds->WithLabels({o});
  round_observer_ = [rounds, durations](const storage::RoundRecord& r) {
    rounds->WithLabels({std::string(storage::RoundOutcomeName(r.outcome))})->Increment();
    if (r.ended_us) durations->Get()->Observe(static_cast<double>(*r.ended_us - r.started_us) / 1e6);
  };
}

void Daemon::RegisterRoutes() {
  const config::Config c = config();
  InferenceApiOptions api;
  api.model = SignatureFrom(c.model);
  api.server_version = kVersion;
  api.precision = std::string(config::PrecisionName(c.model.precision));
  api.batcher = batcher_.get();
  api.models = models_.get();
  api.serving = [this] { return !draining_.load(); };
  api.model_stats = model_stats_.get();  // timed on the real clock, as the batcher is
  if (c.server.auth_inference) api.infer_access = Access::kToken;
  router_.set_authorizer(auth_.get());

  LearningApiOptions& l = learning_api_;
  l.model = api.model;
  l.store = store_.get();
  l.registry = registry_.get();
  l.buffer = buffer_.get();
  l.holdout = holdout_.get();
  l.distiller = distiller_.get();
  l.learner_disabled_reason = learner_disabled_reason_;
  l.activator = activator_.get();
  l.executor = executor_.get();
  l.read_executor = read_executor_.get();
  l.capture = capture_.get();
  l.metrics = metrics_.get();
  l.clock = options_.clock;
  ModelManager* models = models_.get();
  l.active_version = [models] {
    auto m = models->Active();
    return m ? m->version() : int64_t{0};
  };
  l.serving_stats = serving_stats_.get();
  if (c.capture.fraction > 0) {
    const double fraction = c.capture.fraction;
    const LearningApiOptions* lo = &learning_api_;
    api.on_request = [lo, fraction](const std::optional<std::string>& id, const std::vector<float>& input,
                                    int64_t batch) {
      if (!lo->capture->ShouldCapture(fraction)) return;
      if (!CaptureInferenceSamples(*lo, id.value_or(""), input, batch)) {
        LOG(kDebug) << "capture skipped: executor busy";
      }
    };
  }
  RegisterInferenceApi(api, &router_);
  RegisterLearningApi(learning_api_, &router_);
  RegisterDashboard(&router_);
  MetricsRegistry* metrics = metrics_.get();
  router_.Add(HttpVerb::get, "/metrics", "metrics", [metrics](const HttpRequest&, const RouteParams&, Responder r) {
    r(MakeResponse(HttpStatus::ok, metrics->Render(), "text/plain; version=0.0.4; charset=utf-8"));
  });
}

Status Daemon::Start() {
  if (started_.load()) return Status::FailedPrecondition("daemon already started");
  const config::Config c = config();
  metrics_->RegisterGauge("distilld_build_info", "Build information; the value is always 1.", {"version"})
      ->WithLabels({kVersion})
      ->Set(1);
  ASSIGN_OR_RETURN(auth_, Authorizer::FromTokenFile(c.server.auth_token_file));
  // Where a start spends its time, for the log (real time: a measurement).
  using Steady = std::chrono::steady_clock;
  const Steady::time_point t_start = Steady::now();
  auto ms_since = [](Steady::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - t).count();
  };
  RETURN_IF_ERROR(OpenState().WithContext("state dir " + c.storage.state_dir));
  const int64_t state_ms = ms_since(t_start);
  // An early return below waits for the load (the future's destructor).
  std::future<LoadedTeacher> teacher;
  if (c.learner.enabled) teacher = std::async(std::launch::async, [c] { return LoadTeacher(c); });

  ModelManagerOptions mo;
  mo.state_dir = c.storage.state_dir;
  mo.input_shape = c.model.input_shape;
  mo.classes = c.model.classes;
  mo.optimize = c.model.optimize;
  mo.int8 = c.model.precision == config::Precision::kInt8;
  mo.warmup_batch_sizes = WarmupSizes(c.batching.max_batch_size);
  mo.metrics = metrics_.get();
  mo.clock = options_.clock;
  ASSIGN_OR_RETURN(models_, ModelManager::Create(mo));
  // The active version's file is checked against its checksum, or the
  // initial student is saved, registered and activated.
  learner::InitialStudentOptions initial;
  initial.student_path = c.model.student;
  initial.arch = {c.model.architecture.kind, c.model.input_shape, c.model.classes, c.model.architecture.hidden,
                  c.model.architecture.channels};
  initial.seed = c.learner.seed;
  ASSIGN_OR_RETURN(std::unique_ptr<learner::VersionStore> versions,
                   learner::VersionStore::Create({c.storage.state_dir, registry_.get(), free_space_.get()}));
  ASSIGN_OR_RETURN(storage::VersionRecord active, versions->LoadOrCreateInitial(initial));
  // Files a crash left behind, then the retention policy (which a config
  // change may have tightened since the last round).
  ASSIGN_OR_RETURN(int64_t strays, learner::RemoveStrayVersionFiles(*registry_, c.storage.state_dir));
  if (strays > 0) {
    LOG(kInfo) << "removed " << strays << " stray file(s) from " << c.storage.state_dir << "/models";
  }
  Result<learner::RetentionReport> kept = learner::ApplyRetentionAndRecord(
      *registry_, c.storage.state_dir, learner::RetentionPolicyFrom(c.learner), "at start");
  if (!kept.ok()) {
    LOG(kWarning) << "version retention: " << kept.status().ToString();
  }
  const Steady::time_point t_student = Steady::now();
  RETURN_IF_ERROR(models_->Publish(active));
  const int64_t student_ms = ms_since(t_student);

  BatcherOptions bo;
  bo.limits = BatchingFrom(c.batching);
  bo.inference_threads = c.batching.inference_threads;
  bo.intra_op_threads = c.batching.intra_op_threads;
  bo.input_shape = c.model.input_shape;
  bo.classes = c.model.classes;
  bo.models = models_.get();
  bo.metrics = metrics_.get();
  model_stats_ = std::make_unique<ModelStats>();
  bo.model_stats = model_stats_.get();
  // Requests reach the batcher only through the server, which exists by
  // then; the fallback keeps a caller without one from losing its task.
  bo.run_inline = [this](std::function<void()> fn) {
    if (server_) {
      server_->Post(std::move(fn));
    } else {
      fn();
    }
  };
  ASSIGN_OR_RETURN(batcher_, Batcher::Create(bo));

  Gauge** holdout_accuracy = &holdout_accuracy_;
  activator_ = std::make_unique<VersionActivator>(
      models_.get(), registry_.get(), [holdout_accuracy](const storage::VersionRecord& v) {
        std::optional<double> acc = HoldoutAccuracy(v.metrics);
        if (*holdout_accuracy != nullptr && acc) (*holdout_accuracy)->Set(*acc);
      });
  // Two threads: an ingest fsync and an SQLite read never queue behind each other.
  executor_ = std::make_unique<BlockingExecutor>(2, 4096);
  // And one for the GET handlers: a status read never waits behind ingest
  // writes that RocksDB is holding back (a write stall, a full disk).
  read_executor_ = std::make_unique<BlockingExecutor>(1, 4096);
  capture_ = std::make_unique<CaptureIndex>(options_.clock, c.capture.feedback_ttl_s * 1'000'000);
  RegisterLearnerMetrics();
  if (std::optional<double> acc = HoldoutAccuracy(active.metrics)) holdout_accuracy_->Set(*acc);
  const Steady::time_point t_learner = Steady::now();
  RETURN_IF_ERROR(StartLearner(active.id, std::move(teacher)).WithContext("learner"));
  const int64_t learner_ms = ms_since(t_learner);

  serving_stats_ = std::make_unique<ServingStats>(metrics_.get());
  RegisterRoutes();
  HttpServerOptions ho;
  ho.listen = c.server.listen;
  ho.unix_socket = c.server.unix_socket;
  ho.unix_socket_mode = c.server.unix_socket_mode;
  ho.io_threads = c.server.io_threads;
  ho.loop_per_thread = c.server.loop_per_thread;
  ho.limits = LimitsFrom(c.server);
  ho.router = &router_;
  ho.metrics = metrics_.get();
  ho.requests = serving_stats_.get();
  ho.inherited = std::move(options_.listen_sockets);
  options_.listen_sockets = {};
  ASSIGN_OR_RETURN(server_, HttpServer::Create(ho));
  RETURN_IF_ERROR(server_->Start());
  if (distiller_) RETURN_IF_ERROR(distiller_->Start());
  started_.store(true);
  for (const auto& a : ListeningAddresses()) LOG(kInfo) << "listening on " << a;
  LOG(kInfo) << "started in " << ms_since(t_start) << " ms: state dir opened in " << state_ms
             << " ms, active student loaded and warmed in " << student_ms << " ms, learner started in "
             << learner_ms << " ms (its teacher loaded meanwhile)";
  return Status::Ok();
}

bool Daemon::Shutdown() {
  if (shut_down_.exchange(true)) return true;
  draining_.store(true);
  bool drained = true;
  const int64_t drain_ms = config().server.drain_timeout_ms;
  // The learner first: it may be mid-publish, and it must not write a
  // version after the store is flushed.
  if (distiller_) distiller_->Stop();
  if (server_) {
    LOG(kInfo) << "shutting down: draining " << server_->open_connections() << " connection(s), at most "
               << drain_ms << " ms";
    drained = server_->Drain(std::chrono::milliseconds(drain_ms));
    if (!drained) {
      LOG(kWarning) << "drain timed out; closing " << server_->open_connections() << " connection(s)";
    }
  }
  if (batcher_) batcher_->Stop();  // answers whatever is still queued
  if (server_) server_->Stop();
  if (executor_) executor_->Shutdown();  // finishes acknowledged ingest writes
  if (read_executor_) read_executor_->Shutdown();
  if (store_) {
    Status s = store_->Flush();
    if (!s.ok()) {
      LOG(kWarning) << "flushing the sample store: " << s.ToString();
    }
  }
  started_.store(false);
  LOG(kInfo) << "shutdown complete";
  return drained;
}

Status Daemon::Reload(const config::Config& next) {
  const config::Config old = config();
  const std::vector<config::FieldChange> changes = config::DiffConfigs(old, next);
  if (changes.empty()) {
    LOG(kInfo) << "config reload: no field changed";
    return Status::Ok();
  }
  // What the daemon will run: every field a reload can change, and the
  // running value of each restart-only one, so config() describes what runs.
  config::Config live = old;
  config::CopyFields(next, config::ReloadClass::kImmediate, &live);
  config::CopyFields(next, config::ReloadClass::kNextRound, &live);
  if (distiller_) {
    // First: the only step that can refuse, and it changes nothing then.
    RETURN_IF_ERROR(distiller_->Reconfigure(live.learner, live.replay).WithContext("config reload"));
  }
  if (live.logging.level != old.logging.level && options_.log_level_override.empty()) {
    log::Level level;
    if (log::ParseLevel(live.logging.level, &level)) log::SetLevel(level);
  }
  if (server_) server_->SetLimits(LimitsFrom(live.server));
  if (free_space_) free_space_->set_min_free_bytes(live.storage.min_free_mb << 20);
  if (batcher_) batcher_->UpdateLimits(BatchingFrom(live.batching));
  {
    std::lock_guard<std::mutex> lock(config_mu_);
    config_ = live;
  }
  std::string applied;
  std::string restart;
  for (const config::FieldChange& change : changes) {
    std::string line = change.ToString();
    switch (change.reload) {
      case config::ReloadClass::kImmediate:
        LOG(kInfo) << "config reload: " << line;
        break;
      case config::ReloadClass::kNextRound:
        line += " (from the next round)";
        LOG(kInfo) << "config reload: " << line;
        break;
      case config::ReloadClass::kRestart:
        LOG(kWarning) << "config reload: " << line << " needs a restart; still running with "
                      << change.before;
        restart += (restart.empty() ? "" : "; ") + line;
        continue;
    }
    applied += (applied.empty() ? "" : "; ") + line;
  }
  if (registry_) {
    if (!applied.empty()) {
      if (auto logged = registry_->LogEvent(storage::EventKind::kConfigReload, applied); !logged.ok()) {
        LOG(kWarning) << "recording the reload: " << logged.status().ToString();
      }
    }
    if (!restart.empty()) {
      auto logged = registry_->LogEvent(storage::EventKind::kConfigRestartNeeded, "changed in the file, applied after a restart: " + restart);
      if (!logged.ok()) {
        LOG(kWarning) << "recording the reload: " << logged.status().ToString();
      }
    }
  }
  return Status::Ok();
}

std::vector<std::string> Daemon::ListeningAddresses() const {
  std::vector<std::string> out;
  if (!server_) return out;
  if (!server_->tcp_address().empty()) out.push_back("http://" + server_->tcp_address());
  if (!server_->unix_path().empty()) out.push_back("unix:" + server_->unix_path());
  return out;
}

uint16_t Daemon::tcp_port() const { return server_ ? server_->tcp_port() : 0; }

}  // namespace distilld::daemon
