// The schema: every leaf field of Config with its YAML parser and its reload
// class. A field is declared once, by its member path, which is also its
// key path in the YAML file; its reload class is a required argument.
#include "config/schema.h"

#include <limits>
#include <sstream>

namespace distilld::config::internal {
namespace {

template <typename T>
std::string Show(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}
std::string Show(const std::string& v) { return "'" + v + "'"; }
std::string Show(bool v) { return v ? "true" : "false"; }
std::string Show(Precision v) { return Show(std::string(PrecisionName(v))); }
std::string Show(ReplayPolicy v) { return Show(std::string(ReplayPolicyName(v))); }
std::string Show(TemperatureCurve v) { return Show(std::string(TemperatureCurveName(v))); }
std::string Show(Optimizer v) { return Show(std::string(OptimizerName(v))); }
// The one uint32_t field is a file mode: shown as it is written.
std::string Show(uint32_t mode) {
  std::ostringstream os;
  os << '0' << std::oct << mode;
  return os.str();
}
template <typename T>
std::string Show(const std::vector<T>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + Show(v[i]);
  return s + "]";
}

constexpr int64_t kMaxI = std::numeric_limits<int32_t>::max();
constexpr uint64_t kMaxSeed = std::numeric_limits<int64_t>::max();

// DISTILLD_FIELD(member path, reload class, Reader parser, parser bounds...)
#define DISTILLD_FIELD(field, reload, parser, ...)                                                \
  Leaf {                                                                                          \
    #field, ReloadClass::reload,                                                                  \
        [](Reader& r, const YAML::Node& n, const std::string& p, Config& c) {                     \
          r.parser(&c.field __VA_OPT__(, ) __VA_ARGS__)(n, p);                                    \
        },                                                                                        \
        [](const Config& a, const Config& b) { return a.field == b.field; },                      \
        [](const Config& c) { return Show(c.field); },                                            \
        [](const Config& from, Config& to) { to.field = from.field; }                             \
  }

std::vector<Leaf> BuildLeaves() {
  return {
      DISTILLD_FIELD(server.listen, kRestart, String),
      DISTILLD_FIELD(server.unix_socket, kRestart, String),
      DISTILLD_FIELD(server.unix_socket_mode, kRestart, Mode),
      DISTILLD_FIELD(server.io_threads, kRestart, Int32, 1, 64),
      DISTILLD_FIELD(server.loop_per_thread, kRestart, Bool),
      DISTILLD_FIELD(server.max_body_bytes, kImmediate, UInt, 1024, 1ull << 32),
      DISTILLD_FIELD(server.max_header_bytes, kImmediate, UInt, 512, 1u << 20),
      DISTILLD_FIELD(server.read_timeout_ms, kImmediate, Int, 1, 3'600'000),
      DISTILLD_FIELD(server.idle_timeout_ms, kImmediate, Int, 1, 86'400'000),
      DISTILLD_FIELD(server.max_connections, kImmediate, Int32, 1, 1'000'000),
      DISTILLD_FIELD(server.drain_timeout_ms, kImmediate, Int, 0, 3'600'000),
      DISTILLD_FIELD(server.auth_token_file, kRestart, String),
      DISTILLD_FIELD(server.auth_inference, kRestart, Bool),

      DISTILLD_FIELD(model.name, kRestart, String),
      DISTILLD_FIELD(model.input_name, kRestart, String),
      DISTILLD_FIELD(model.input_shape, kRestart, IntList, 1, 1 << 16, false),
      DISTILLD_FIELD(model.classes, kRestart, Int, 2, 1 << 16),
      DISTILLD_FIELD(model.class_names, kRestart, StringList),
      DISTILLD_FIELD(model.teacher, kRestart, String),
      DISTILLD_FIELD(model.student, kRestart, String),
      DISTILLD_FIELD(model.architecture.kind, kRestart, Choice, {"mlp", "cnn"}),
      DISTILLD_FIELD(model.architecture.hidden, kRestart, IntList, 1, 1 << 16, true),
      DISTILLD_FIELD(model.architecture.channels, kRestart, IntList, 1, 4096, true),
      DISTILLD_FIELD(model.precision, kRestart, Enum, ParsePrecision),
      DISTILLD_FIELD(model.optimize, kRestart, Bool),

      DISTILLD_FIELD(batching.max_batch_size, kImmediate, Int32, 1, 4096),
      DISTILLD_FIELD(batching.max_queue_delay_us, kImmediate, Int, 0, 1'000'000),
      DISTILLD_FIELD(batching.early_dispatch, kImmediate, Bool),
      DISTILLD_FIELD(batching.queue_capacity, kImmediate, Int32, 1, 1 << 20),
      DISTILLD_FIELD(batching.inference_threads, kRestart, Int32, 0, 64),
      DISTILLD_FIELD(batching.intra_op_threads, kRestart, Int32, 1, 64),

      DISTILLD_FIELD(storage.state_dir, kRestart, String),
      DISTILLD_FIELD(storage.block_cache_mb, kRestart, UInt, 1, 1 << 16),
      DISTILLD_FIELD(storage.write_buffer_mb, kRestart, UInt, 1, 1 << 12),
      DISTILLD_FIELD(storage.sync, kRestart, Bool),
      DISTILLD_FIELD(storage.min_free_mb, kImmediate, UInt, 0, 1 << 24),

      // The buffer and the held-out set are sized when they are opened.
      DISTILLD_FIELD(replay.policy, kRestart, Enum, ParseReplayPolicy),
      DISTILLD_FIELD(replay.capacity, kRestart, UInt, 0, 10'000'000),
      DISTILLD_FIELD(replay.max_mb, kRestart, UInt, 1, 1 << 20),
      DISTILLD_FIELD(replay.holdout_fraction, kRestart, Number, 0, 0.9, false, "in [0, 0.9]"),
      DISTILLD_FIELD(replay.holdout_max, kRestart, UInt, 0, 10'000'000),
      DISTILLD_FIELD(replay.replay_ratio, kNextRound, Number, 0, 100, false, "in [0, 100]"),

      DISTILLD_FIELD(learner.enabled, kRestart, Bool),
      DISTILLD_FIELD(learner.trigger_count, kImmediate, UInt, 1, 100'000'000),
      DISTILLD_FIELD(learner.trigger_interval_s, kImmediate, Int, 1, 30 * 86400),
      DISTILLD_FIELD(learner.min_samples, kImmediate, UInt, 1, 100'000'000),
      DISTILLD_FIELD(learner.epochs, kNextRound, Int32, 1, 1000),
      DISTILLD_FIELD(learner.max_steps, kNextRound, Int, 0, kMaxI),
      DISTILLD_FIELD(learner.batch_size, kNextRound, Int32, 1, 65536),
      DISTILLD_FIELD(learner.learning_rate, kNextRound, Number, 0, 10, true, "> 0 and <= 10"),
      DISTILLD_FIELD(learner.optimizer, kNextRound, Enum, ParseOptimizer),
      DISTILLD_FIELD(learner.alpha, kNextRound, Number, 0, 1, false, "in [0, 1]"),
      DISTILLD_FIELD(learner.temperature, kNextRound, Number, 0, 100, true, "> 0"),
      DISTILLD_FIELD(learner.temperature_schedule.start, kNextRound, Number, 0, 100, true, "> 0"),
      DISTILLD_FIELD(learner.temperature_schedule.end, kNextRound, Number, 0, 100, true, "> 0"),
      DISTILLD_FIELD(learner.temperature_schedule.curve, kNextRound, Enum, ParseTemperatureCurve),
      // The feature method is checked against the student when the learner starts.
      DISTILLD_FIELD(learner.feature.method, kRestart, String),
      DISTILLD_FIELD(learner.feature.weight, kNextRound, Number, 0, 1000, false, ">= 0"),
      DISTILLD_FIELD(learner.balanced_finetune_epochs, kNextRound, Int32, 0, 1000),
      DISTILLD_FIELD(learner.balanced_finetune_lr_scale, kNextRound, Number, 0, 10, true, "in (0, 10]"),
      DISTILLD_FIELD(learner.replay_shift_px, kNextRound, Int32, 0, 8),
      DISTILLD_FIELD(learner.weight_average_decay, kNextRound, Number, 0, 0.9999, false, "in [0, 0.9999]"),
      DISTILLD_FIELD(learner.warmup_steps, kNextRound, Int32, 0, 1'000'000),
      DISTILLD_FIELD(learner.recycle_dormant_units, kNextRound, Bool),
      DISTILLD_FIELD(learner.dormant_threshold, kNextRound, Number, 0, 1, false, "in [0, 1]"),
      DISTILLD_FIELD(learner.max_accuracy_drop, kNextRound, Number, 0, 1, false, "in [0, 1]"),
      DISTILLD_FIELD(learner.max_class_drop, kNextRound, Number, 0, 1, false, "in [0, 1]"),
      DISTILLD_FIELD(learner.min_class_retention, kNextRound, Number, 0, 1, false, "in [0, 1]"),
      DISTILLD_FIELD(learner.min_new_class_accuracy, kNextRound, Number, 0, 1, false, "in [0, 1]"),
      DISTILLD_FIELD(learner.min_class_samples, kNextRound, Int, 1, 1'000'000),
      DISTILLD_FIELD(learner.regression_z, kNextRound, Number, 0, 10, false, "in [0, 10]"),
      // Thread settings are applied once, when the learner thread starts.
      DISTILLD_FIELD(learner.threads, kRestart, Int32, 1, 64),
      DISTILLD_FIELD(learner.nice, kRestart, Int32, 0, 19),
      DISTILLD_FIELD(learner.idle_priority, kRestart, Bool),
      DISTILLD_FIELD(learner.yield_above_rps, kRestart, Number, 0, 1e9, false, ">= 0"),
      DISTILLD_FIELD(learner.max_yield_s, kNextRound, Int, 0, 86400),
      DISTILLD_FIELD(learner.seed, kRestart, UInt, 0, kMaxSeed),
      DISTILLD_FIELD(learner.keep_versions, kNextRound, Int, 1, kMaxI),
      DISTILLD_FIELD(learner.keep_served_versions, kNextRound, Int, -1, kMaxI),

      DISTILLD_FIELD(capture.fraction, kRestart, Number, 0, 1, false, "in [0, 1]"),
      DISTILLD_FIELD(capture.feedback_ttl_s, kRestart, Int, 1, 30 * 86400),

      DISTILLD_FIELD(logging.level, kImmediate, Choice, {"debug", "info", "warning", "error"}),
  };
}

#undef DISTILLD_FIELD

}  // namespace

const std::vector<Leaf>& Leaves() {
  static const std::vector<Leaf>* leaves = new std::vector<Leaf>(BuildLeaves());
  return *leaves;
}

}  // namespace distilld::config::internal

namespace distilld::config {

const char* ReloadClassName(ReloadClass reload) {
  switch (reload) {
    case ReloadClass::kImmediate:
      return "immediate";
    case ReloadClass::kNextRound:
      return "next_round";
    case ReloadClass::kRestart:
      return "restart";
  }
  return "?";
}

const std::vector<FieldInfo>& SchemaFields() {
  static const std::vector<FieldInfo>* fields = [] {
    auto* out = new std::vector<FieldInfo>;
    for (const internal::Leaf& leaf : internal::Leaves()) out->push_back({leaf.path, leaf.reload});
    return out;
  }();
  return *fields;
}

std::string FieldChange::ToString() const { return path + ": " + before + " -> " + after; }

std::vector<FieldChange> DiffConfigs(const Config& before, const Config& after) {
  std::vector<FieldChange> changes;
  for (const internal::Leaf& leaf : internal::Leaves()) {
    if (leaf.equal(before, after)) continue;
    changes.push_back({leaf.path, leaf.reload, leaf.show(before), leaf.show(after)});
  }
  return changes;
}

void CopyFields(const Config& from, ReloadClass reload, Config* to) {
  for (const internal::Leaf& leaf : internal::Leaves()) {
    if (leaf.reload == reload) leaf.copy(from, *to);
  }
}

}  // namespace distilld::config
