// Config: the daemon's whole configuration as a plain struct.
//
// Loaded from one YAML file by LoadConfig(); nothing else in the code base
// reads YAML. Every field has the default shown here, which is also what
// config/distilld.example.yaml documents. Validation is strict: an unknown
// key, a wrong type or an out-of-range value is an error naming the key path
// and the line and column. A Config is a value type (thread-compatible).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace distilld::config {

// The choice fields, each with its YAML name (XName) and the parser of that
// name (ParseX: InvalidArgument "expected one of: ..." for any other).
enum class Precision { kFloat, kInt8 };                       // model.precision: "float", "int8"
enum class ReplayPolicy { kClassBalanced, kReservoir };      // replay.policy: "class_balanced", "reservoir"
enum class TemperatureCurve { kConstant, kLinear, kCosine };  // "constant", "linear", "cosine"
enum class Optimizer { kAdam, kSgd };                         // learner.optimizer: "adam", "sgd"
std::string_view PrecisionName(Precision v);
Result<Precision> ParsePrecision(std::string_view name);
std::string_view ReplayPolicyName(ReplayPolicy v);
Result<ReplayPolicy> ParseReplayPolicy(std::string_view name);
std::string_view TemperatureCurveName(TemperatureCurve v);
Result<TemperatureCurve> ParseTemperatureCurve(std::string_view name);
std::string_view OptimizerName(Optimizer v);
Result<Optimizer> ParseOptimizer(std::string_view name);

struct ServerConfig {
  std::string listen = "127.0.0.1:8080";  // host:port; port 0 picks a free one; "" disables TCP
  std::string unix_socket;                 // path; "" disables the Unix socket
  uint32_t unix_socket_mode = 0660;        // file mode of the Unix socket
  // Threads running I/O loops, each with its own io_context and its share
  // of the connections (and, with batching.inference_threads 0, the forward
  // passes). 2 suits a 2-core box: see docs/benchmarks-serving.md.
  int io_threads = 2;
  // Each I/O thread runs its own io_context (true) or all share one (false,
  // measured slower on 2 cores; HttpServerOptions::loop_per_thread).
  bool loop_per_thread = true;
  uint64_t max_body_bytes = 16u << 20;     // 413 above it
  uint64_t max_header_bytes = 8192;        // 431 above it
  int64_t read_timeout_ms = 10000;         // per request, re-armed before every read
  int64_t idle_timeout_ms = 60000;         // keep-alive idle limit
  int max_connections = 4096;              // then the longest-waiting connection makes room, or 503
  int64_t drain_timeout_ms = 10000;        // graceful shutdown bound
  std::string auth_token_file;             // "" = no auth; else Bearer token needed on /v1 POSTs
  bool auth_inference = false;             // also require the token for inference
};

struct ArchitectureConfig {
  std::string kind = "mlp";                  // "mlp" or "cnn"
  std::vector<int64_t> hidden = {64};        // mlp hidden widths; cnn: linear widths after convs
  std::vector<int64_t> channels = {16, 32};  // cnn conv channels (3x3 conv, ReLU, 2x2 pool each)
};

struct ModelConfig {
  std::string name = "fashion";                // model name in KServe paths
  std::string input_name = "input";            // KServe input tensor name
  std::vector<int64_t> input_shape = {1, 28, 28};  // per sample, without batch
  int64_t classes = 10;
  std::vector<std::string> class_names;        // optional, for display
  std::string teacher;                          // TorchScript teacher file; "" = <state>/teacher.pt
  std::string student;                          // initial student .pt; "" = build `architecture`
  ArchitectureConfig architecture;
  Precision precision = Precision::kFloat;      // of the served version
  bool optimize = true;                         // freeze + optimize_for_inference before serving
};

struct BatchingConfig {
  int max_batch_size = 64;          // samples per forward pass
  int64_t max_queue_delay_us = 500;  // wait for more after the first request
  int queue_capacity = 4096;         // samples queued; 503 beyond
  // Threads running forward passes. 0 (the default): none; each I/O loop
  // batches what one pass over its sockets delivered and runs the forward
  // pass itself, saving two thread hand-offs per request (daemon/serving/batcher.h).
  // Use >= 1 for models whose forward pass is long enough (milliseconds)
  // that holding an I/O loop for it would delay other connections; then
  // max_queue_delay_us and early_dispatch apply.
  int inference_threads = 0;
  int intra_op_threads = 1;          // LibTorch threads per thread running forward passes
  // An idle inference thread runs the batch as soon as the queue holds as
  // many requests as were recently outstanding, instead of always waiting
  // out max_queue_delay_us (see daemon/serving/batcher.h). Turn off only to force
  // full batches or the full delay (e.g. to study batching).
  bool early_dispatch = true;
};

struct StorageConfig {
  std::string state_dir = "./state";  // samples/, registry.sqlite, models/
  uint64_t block_cache_mb = 16;
  uint64_t write_buffer_mb = 8;
  bool sync = true;  // fsync before acknowledging; only benchmarks turn it off
  // Writes (ingest, learner rounds, version saves) are refused while the
  // state dir's filesystem would have less than this free (storage/free_space.h).
  uint64_t min_free_mb = 256;
};

struct ReplayConfig {
  ReplayPolicy policy = ReplayPolicy::kClassBalanced;
  uint64_t capacity = 5000;               // samples
  uint64_t max_mb = 64;                   // encoded bytes cap
  double holdout_fraction = 0.1;          // labelled share kept for evaluation
  uint64_t holdout_max = 5000;
  double replay_ratio = 2.0;              // replayed samples per new sample in a round
};

struct TemperatureSchedule {
  double start = 4.0;
  double end = 4.0;
  TemperatureCurve curve = TemperatureCurve::kConstant;
};

struct FeatureDistillConfig {
  std::string method;  // TorchScript method returning the feature; "" = off
  double weight = 0.0;  // b in b*MSE(proj(f_s), f_t)
};

struct LearnerConfig {
  bool enabled = true;
  uint64_t trigger_count = 1000;     // new samples that start a round
  int64_t trigger_interval_s = 300;  // start a round after this long with any new samples
  uint64_t min_samples = 32;         // fewer new samples never start a timed round
  int epochs = 2;
  int64_t max_steps = 0;             // 0 = epochs decide
  int batch_size = 64;
  double learning_rate = 1e-3;
  Optimizer optimizer = Optimizer::kAdam;
  double alpha = 0.5;                // a: weight of CE on labelled samples
  double temperature = 4.0;          // T
  TemperatureSchedule temperature_schedule;
  FeatureDistillConfig feature;
  // Epochs over a class-balanced set (the replay buffer plus as many new
  // samples per class as it holds per class) at learning_rate *
  // balanced_finetune_lr_scale after each round's epochs; evens out the
  // tilt towards classes that just arrived in bulk. Not run with
  // replay_ratio 0. 0 = off.
  int balanced_finetune_epochs = 3;
  double balanced_finetune_lr_scale = 0.1;
  // Replayed samples shown as views shifted by up to this many pixels,
  // redrawn every epoch and relabelled by the teacher (one teacher pass over
  // the replayed rows per epoch). Needs image-shaped samples ([..., H, W]).
  // 0 = off. Worth it when replay_ratio draws a small buffer many times.
  int replay_shift_px = 0;
  // The candidate is the exponential moving average of the round's weights
  // over its steps (main pass and fine-tune) with this decay, not the last
  // step's weights; 0 = off. The average spans ~1/(1-decay) steps.
  double weight_average_decay = 0.995;
  // The main pass's learning rate rises linearly to learning_rate over its
  // first this many steps; 0 = off. Off by default: on the class-incremental
  // acceptance stream, 100 and 300 steps ended 0.8 and 1.4 points lower
  // (docs/benchmarks-acceptance.md, "Learning-rate warm-up"). For a student
  // whose first steps of a round diverge.
  int warmup_steps = 0;
  // Before each round, hidden units of the student (built-in or not) through
  // which no gradient flows on the round's data get new incoming and zero
  // outgoing weights (same function, full width to learn with;
  // learner/recycle.h).
  bool recycle_dormant_units = true;
  // A unit counts as dormant when the gradient reaching its outgoing weights
  // is <= this times its layer's mean. 0 = only units nothing flows through.
  double dormant_threshold = 0.0;
  // The promotion gate (learner/gate.h, same names and defaults).
  double max_accuracy_drop = 0.005;   // overall held-out accuracy may drop this much
  double max_class_drop = 0.1;        // an old class, among the active version's classes
  double min_class_retention = 0.5;   // share of an old class's accuracy to keep
  double min_new_class_accuracy = 0.2;  // a class counts as learned / recognised
  int64_t min_class_samples = 20;     // fewer held-out samples: class not judged
  double regression_z = 1.645;        // a drop must be this many standard errors beyond noise
  int threads = 1;                   // LibTorch intra-op threads of the learner
  int nice = 10;                     // learner thread priority
  // SCHED_IDLE for the learner thread: train only on CPU time inference
  // leaves idle (rounds pause while the cores are saturated).
  bool idle_priority = true;
  // The learner waits while inference answers more than this many requests
  // per second (0 = never), at most max_yield_s per round.
  double yield_above_rps = 1000;
  int64_t max_yield_s = 60;
  uint64_t seed = 42;
  // Version files kept on disk (learner/version_retention.h): the newest
  // keep_versions whatever their status, plus every version that was ever
  // served (keep_served_versions -1) or the newest N of them. Lower them on
  // a small disk where rounds promote often; rows stay in the registry.
  int64_t keep_versions = 20;
  int64_t keep_served_versions = -1;
};

struct CaptureConfig {
  double fraction = 0.0;         // share of inference inputs stored unlabelled
  int64_t feedback_ttl_s = 3600;  // how long a captured id accepts feedback
};

struct LoggingConfig {
  std::string level = "info";  // debug, info, warning, error
};

struct Config {
  ServerConfig server;
  ModelConfig model;
  BatchingConfig batching;
  StorageConfig storage;
  ReplayConfig replay;
  LearnerConfig learner;
  CaptureConfig capture;
  LoggingConfig logging;
};

// One validation problem, positioned in the file (1-based; 0 when unknown).
struct ConfigError {
  std::string key_path;  // e.g. "learner.temperature"
  std::string message;   // e.g. "expected a number > 0"
  int line = 0;
  int column = 0;
  // "learner.temperature: expected a number > 0 at line 12, column 16"
  std::string ToString() const;
};

struct LoadResult {
  Config config;
  std::vector<ConfigError> errors;  // empty when the config is valid
  bool ok() const { return errors.empty(); }
};

// Parses YAML text; `source` names it in messages. Collects every error.
LoadResult ParseConfig(const std::string& yaml_text);
// Reads and parses a file. A missing or unreadable file is one error with key "".
LoadResult LoadConfigFile(const std::string& path);
// Single-Status convenience: InvalidArgument joining every error with "; ".
Result<Config> LoadConfig(const std::string& path);

// Checks cross-field constraints (also done by ParseConfig).
std::vector<ConfigError> Validate(const Config& config);

// When a changed field takes effect on a reload (SIGHUP). Every field of the
// schema has exactly one class (config/schema.cc).
enum class ReloadClass {
  kImmediate,  // the reload applies it: limits, batching, triggers, log level
  kNextRound,  // the learner uses it from its next round on (training, gate)
  kRestart,    // read at start only: a reload keeps the running value and says so
};
// "immediate", "next_round", "restart".
const char* ReloadClassName(ReloadClass reload);

struct FieldInfo {
  std::string path;  // key path, e.g. "learner.epochs"
  ReloadClass reload;
};
// Every leaf field, in the order of config/distilld.example.yaml.
const std::vector<FieldInfo>& SchemaFields();

struct FieldChange {
  std::string path;
  ReloadClass reload;
  std::string before;  // values as written in YAML, strings quoted
  std::string after;
  // "learner.epochs: 2 -> 3"
  std::string ToString() const;
};
// The fields whose values differ, in schema order.
std::vector<FieldChange> DiffConfigs(const Config& before, const Config& after);
// Copies into `*to` every field of `from` whose class is `reload`.
void CopyFields(const Config& from, ReloadClass reload, Config* to);

}  // namespace distilld::config
