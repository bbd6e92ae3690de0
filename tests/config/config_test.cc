#include <doctest/doctest.h>

#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <functional>
#include <fstream>
#include <string>

#include "config/config.h"
#include "tests/support/temp_dir.h"

namespace distilld::config {
namespace {

std::string SourceDir() {
  const char* dir = std::getenv("DISTILLD_SOURCE_DIR");
  return dir ? dir : DISTILLD_SOURCE_DIR_DEFAULT;
}

// Every field set to a value other than its default.
constexpr const char* kEveryField = R"(server:
  listen: "0.0.0.0:9000"
  unix_socket: /run/distilld/sock
  unix_socket_mode: "0600"
  io_threads: 3
  loop_per_thread: false
  max_body_bytes: 2048
  max_header_bytes: 4096
  read_timeout_ms: 500
  idle_timeout_ms: 700
  max_connections: 10
  drain_timeout_ms: 900
  auth_token_file: /etc/distilld/token
  auth_inference: true
model:
  name: mnist-small
  input_name: pixels
  input_shape: [3, 8, 8]
  classes: 3
  class_names: [a, b, c]
  teacher: /t.pt
  student: /s.pt
  architecture:
    kind: cnn
    hidden: [32, 16]
    channels: [4]
  precision: int8
  optimize: false
batching:
  max_batch_size: 8
  max_queue_delay_us: 100
  queue_capacity: 64
  inference_threads: 2
  intra_op_threads: 3
  early_dispatch: false
storage:
  state_dir: /var/lib/distilld
  block_cache_mb: 4
  write_buffer_mb: 2
  sync: false
  min_free_mb: 64
replay:
  policy: reservoir
  capacity: 100
  max_mb: 5
  holdout_fraction: 0.2
  holdout_max: 50
  replay_ratio: 2.5
learner:
  enabled: false
  trigger_count: 10
  trigger_interval_s: 20
  min_samples: 5
  epochs: 3
  max_steps: 40
  batch_size: 16
  learning_rate: 0.01
  optimizer: sgd
  alpha: 0.25
  temperature: 2.0
  temperature_schedule: {start: 1.0, end: 8.0, curve: cosine}
  feature: {method: features, weight: 0.5}
  balanced_finetune_epochs: 2
  balanced_finetune_lr_scale: 0.5
  replay_shift_px: 1
  weight_average_decay: 0.99
  warmup_steps: 50
  recycle_dormant_units: false
  dormant_threshold: 0.05
  max_accuracy_drop: 0.01
  max_class_drop: 0.15
  min_class_retention: 0.4
  min_new_class_accuracy: 0.3
  min_class_samples: 50
  regression_z: 2.0
  threads: 2
  nice: 5
  idle_priority: false
  yield_above_rps: 50
  max_yield_s: 9
  seed: 7
  keep_versions: 3
  keep_served_versions: 2
capture:
  fraction: 0.5
  feedback_ttl_s: 60
logging:
  level: debug
)";

TEST_CASE("every field is parsed") {
  LoadResult r = ParseConfig(kEveryField);
  for (const auto& e : r.errors) INFO(e.ToString());
  REQUIRE(r.ok());
  const Config& c = r.config;
  CHECK(c.server.listen == "0.0.0.0:9000");
  CHECK(c.server.unix_socket == "/run/distilld/sock");
  CHECK(c.server.unix_socket_mode == 0600);
  CHECK(c.server.io_threads == 3);
  CHECK_FALSE(c.server.loop_per_thread);
  CHECK(c.server.max_body_bytes == 2048);
  CHECK(c.server.max_header_bytes == 4096);
  CHECK(c.server.read_timeout_ms == 500);
  CHECK(c.server.idle_timeout_ms == 700);
  CHECK(c.server.max_connections == 10);
  CHECK(c.server.drain_timeout_ms == 900);
  CHECK(c.server.auth_token_file == "/etc/distilld/token");
  CHECK(c.server.auth_inference);
  CHECK(c.model.name == "mnist-small");
  CHECK(c.model.input_name == "pixels");
  CHECK(c.model.input_shape == std::vector<int64_t>{3, 8, 8});
  CHECK(c.model.classes == 3);
  CHECK(c.model.class_names == std::vector<std::string>{"a", "b", "c"});
  CHECK(c.model.teacher == "/t.pt");
  CHECK(c.model.student == "/s.pt");
  CHECK(c.model.architecture.kind == "cnn");
  CHECK(c.model.architecture.hidden == std::vector<int64_t>{32, 16});
  CHECK(c.model.architecture.channels == std::vector<int64_t>{4});
  CHECK(c.model.precision == Precision::kInt8);
  CHECK_FALSE(c.model.optimize);
  CHECK(c.batching.max_batch_size == 8);
  CHECK(c.batching.max_queue_delay_us == 100);
  CHECK(c.batching.queue_capacity == 64);
  CHECK(c.batching.inference_threads == 2);
  CHECK(c.batching.intra_op_threads == 3);
  CHECK_FALSE(c.batching.early_dispatch);
  CHECK(c.storage.state_dir == "/var/lib/distilld");
  CHECK(c.storage.block_cache_mb == 4);
  CHECK(c.storage.write_buffer_mb == 2);
  CHECK_FALSE(c.storage.sync);
  CHECK(c.storage.min_free_mb == 64);
  CHECK(c.replay.policy == ReplayPolicy::kReservoir);
  CHECK(c.replay.capacity == 100);
  CHECK(c.replay.max_mb == 5);
  CHECK(c.replay.holdout_fraction == doctest::Approx(0.2));
  CHECK(c.replay.holdout_max == 50);
  CHECK(c.replay.replay_ratio == doctest::Approx(2.5));
  CHECK_FALSE(c.learner.enabled);
  CHECK(c.learner.trigger_count == 10);
  CHECK(c.learner.trigger_interval_s == 20);
  CHECK(c.learner.min_samples == 5);
  CHECK(c.learner.epochs == 3);
  CHECK(c.learner.max_steps == 40);
  CHECK(c.learner.batch_size == 16);
  CHECK(c.learner.learning_rate == doctest::Approx(0.01));
  CHECK(c.learner.optimizer == Optimizer::kSgd);
  CHECK(c.learner.alpha == doctest::Approx(0.25));
  CHECK(c.learner.temperature == doctest::Approx(2.0));
  CHECK(c.learner.temperature_schedule.start == doctest::Approx(1.0));
  CHECK(c.learner.temperature_schedule.end == doctest::Approx(8.0));
  CHECK(c.learner.temperature_schedule.curve == TemperatureCurve::kCosine);
  CHECK(c.learner.feature.method == "features");
  CHECK(c.learner.feature.weight == doctest::Approx(0.5));
  CHECK(c.learner.balanced_finetune_epochs == 2);
  CHECK(c.learner.balanced_finetune_lr_scale == doctest::Approx(0.5));
  CHECK(c.learner.replay_shift_px == 1);
  CHECK(c.learner.warmup_steps == 50);
  CHECK(c.learner.weight_average_decay == 0.99);
  CHECK_FALSE(c.learner.recycle_dormant_units);
  CHECK(c.learner.dormant_threshold == doctest::Approx(0.05));
  CHECK(c.learner.max_accuracy_drop == doctest::Approx(0.01));
  CHECK(c.learner.max_class_drop == doctest::Approx(0.15));
  CHECK(c.learner.min_class_retention == doctest::Approx(0.4));
  CHECK(c.learner.min_new_class_accuracy == doctest::Approx(0.3));
  CHECK(c.learner.min_class_samples == 50);
  CHECK(c.learner.regression_z == doctest::Approx(2.0));
  CHECK(c.learner.threads == 2);
  CHECK(c.learner.nice == 5);
  CHECK(c.learner.seed == 7);
  CHECK(c.learner.keep_versions == 3);
  CHECK(c.learner.keep_served_versions == 2);
  CHECK(c.capture.fraction == doctest::Approx(0.5));
  CHECK(c.capture.feedback_ttl_s == 60);
  CHECK(c.logging.level == "debug");
}

TEST_CASE("the schema: every field of the example file has one reload class, and each is its own member") {
  // The example documents every key; the schema must list exactly those.
  std::vector<std::string> example_keys;
  std::function<void(const YAML::Node&, const std::string&)> walk = [&](const YAML::Node& n,
                                                                         const std::string& prefix) {
    for (const auto& kv : n) {
      const std::string path = prefix.empty() ? kv.first.Scalar() : prefix + "." + kv.first.Scalar();
      if (kv.second.IsMap()) {
        walk(kv.second, path);
      } else {
        example_keys.push_back(path);
      }
    }
  };
  walk(YAML::LoadFile(SourceDir() + "/config/distilld.example.yaml"), "");
  std::vector<std::string> schema_keys;
  for (const FieldInfo& f : SchemaFields()) {
    schema_keys.push_back(f.path);
    const std::string name = ReloadClassName(f.reload);
    INFO(f.path);
    CHECK((name == "immediate" || name == "next_round" || name == "restart"));
  }
  std::string example_list;
  for (const auto& k : example_keys) example_list += k + " ";
  std::string schema_list;
  for (const auto& k : schema_keys) schema_list += k + " ";
  CHECK(example_list == schema_list);
  CHECK(schema_keys.size() == 82);

  // kEveryField changes every field, so a diff against the defaults names
  // each one: no two schema entries are bound to the same member.
  LoadResult r = ParseConfig(kEveryField);
  REQUIRE(r.ok());
  std::vector<std::string> changed;
  for (const FieldChange& c : DiffConfigs(Config{}, r.config)) changed.push_back(c.path);
  CHECK(changed == schema_keys);
}

TEST_CASE("DiffConfigs and CopyFields: values as written, copies by reload class") {
  Config a;
  Config b;
  b.learner.epochs = 3;
  b.replay.capacity = 9000;
  b.server.max_body_bytes = 4096;
  b.server.unix_socket_mode = 0600;
  b.model.name = "other";
  b.model.input_shape = {3, 32, 32};
  const std::vector<FieldChange> d = DiffConfigs(a, b);
  REQUIRE(d.size() == 6);
  CHECK(d[0].ToString() == "server.unix_socket_mode: 0660 -> 0600");
  CHECK(d[0].reload == ReloadClass::kRestart);
  CHECK(d[1].ToString() == "server.max_body_bytes: 16777216 -> 4096");
  CHECK(d[1].reload == ReloadClass::kImmediate);
  CHECK(d[2].ToString() == "model.name: 'fashion' -> 'other'");
  CHECK(d[3].ToString() == "model.input_shape: [1,28,28] -> [3,32,32]");
  CHECK(d[4].ToString() == "replay.capacity: 5000 -> 9000");
  CHECK(d[4].reload == ReloadClass::kRestart);
  CHECK(d[5].ToString() == "learner.epochs: 2 -> 3");
  CHECK(d[5].reload == ReloadClass::kNextRound);

  Config running = a;
  CopyFields(b, ReloadClass::kImmediate, &running);
  CHECK(running.server.max_body_bytes == 4096);
  CHECK(running.learner.epochs == 2);
  CHECK(running.replay.capacity == 5000);
  CopyFields(b, ReloadClass::kNextRound, &running);
  CHECK(running.learner.epochs == 3);
  CHECK(running.model.name == "fashion");
  CHECK(running.replay.capacity == 5000);
  CopyFields(b, ReloadClass::kRestart, &running);
  CHECK(DiffConfigs(running, b).empty());
}

TEST_CASE("an empty file gives every default") {
  LoadResult r = ParseConfig("");
  REQUIRE(r.ok());
  Config defaults;
  CHECK(r.config.server.listen == defaults.server.listen);
  CHECK(r.config.learner.temperature == doctest::Approx(4.0));
  CHECK(r.config.model.input_shape == std::vector<int64_t>{1, 28, 28});
  CHECK(r.config.replay.holdout_fraction == doctest::Approx(0.1));
  // A section present but empty also keeps its defaults.
  LoadResult r2 = ParseConfig("learner:\n");
  REQUIRE(r2.ok());
  CHECK(r2.config.learner.batch_size == 64);
}

TEST_CASE("the shipped example config is valid and equals the defaults") {
  LoadResult r = LoadConfigFile(SourceDir() + "/config/distilld.example.yaml");
  for (const auto& e : r.errors) INFO(e.ToString());
  REQUIRE(r.ok());
  for (const FieldChange& c : DiffConfigs(Config{}, r.config)) FAIL_CHECK(c.ToString());
}

TEST_CASE("a wrong value names the key path, line and column") {
  LoadResult r = ParseConfig("server:\n  io_threads: 2\nlearner:\n  epochs: 1\n  temperature: -3\n");
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].key_path == "learner.temperature");
  CHECK(r.errors[0].line == 5);
  CHECK(r.errors[0].column == 16);
  CHECK(r.errors[0].ToString() ==
        "learner.temperature: expected a number > 0 at line 5, column 16");
}

TEST_CASE("unknown keys are errors, not silently ignored") {
  LoadResult r = ParseConfig("learner:\n  temprature: 3\nbogus: 1\n");
  REQUIRE(r.errors.size() == 2);
  CHECK(r.errors[0].key_path == "learner.temprature");
  CHECK(r.errors[0].message.find("unknown key") != std::string::npos);
  CHECK(r.errors[0].message.find("temperature") != std::string::npos);  // lists valid keys
  CHECK(r.errors[0].line == 2);
  CHECK(r.errors[0].column == 3);
  CHECK(r.errors[1].key_path == "bogus");
  CHECK(r.errors[1].line == 3);
}

TEST_CASE("wrong types are reported for each field kind") {
  LoadResult r = ParseConfig(
      "server:\n"
      "  io_threads: many\n"          // int
      "  auth_inference: maybe\n"     // bool
      "  unix_socket_mode: \"0999\"\n"  // mode
      "  listen: [1, 2]\n"            // string
      "model:\n"
      "  input_shape: [1, x]\n"       // int list
      "  architecture:\n"
      "    kind: transformer\n"       // choice
      "  class_names: 3\n"            // string list
      "batching: 5\n");               // section
  std::vector<std::string> paths;
  for (const auto& e : r.errors) paths.push_back(e.key_path);
  CHECK(paths == std::vector<std::string>{"server.io_threads", "server.auth_inference",
                                          "server.unix_socket_mode", "server.listen",
                                          "model.input_shape", "model.architecture.kind",
                                          "model.class_names", "batching"});
  for (const auto& e : r.errors) CHECK(e.line > 0);
}

TEST_CASE("choice fields parse to enums; another name is an error listing the choices") {
  LoadResult r = ParseConfig(
      "model:\n  precision: int4\nreplay:\n  policy: [reservoir]\nlearner:\n  optimizer: rmsprop\n"
      "  temperature_schedule:\n    curve: exponential\n");
  REQUIRE(r.errors.size() == 4);
  CHECK(r.errors[0].key_path == "model.precision");
  CHECK(r.errors[0].message.find("expected one of: float, int8") != std::string::npos);
  CHECK(r.errors[1].key_path == "replay.policy");
  CHECK(r.errors[1].message.find("class_balanced, reservoir") != std::string::npos);
  CHECK(r.errors[2].key_path == "learner.optimizer");
  CHECK(r.errors[2].message.find("adam, sgd") != std::string::npos);
  CHECK(r.errors[3].key_path == "learner.temperature_schedule.curve");
  CHECK(r.errors[3].message.find("constant, linear, cosine") != std::string::npos);
  for (Optimizer o : {Optimizer::kAdam, Optimizer::kSgd}) CHECK(*ParseOptimizer(OptimizerName(o)) == o);
  for (Precision p : {Precision::kFloat, Precision::kInt8}) CHECK(*ParsePrecision(PrecisionName(p)) == p);
  for (ReplayPolicy p : {ReplayPolicy::kClassBalanced, ReplayPolicy::kReservoir}) {
    CHECK(*ParseReplayPolicy(ReplayPolicyName(p)) == p);
  }
  for (TemperatureCurve c : {TemperatureCurve::kConstant, TemperatureCurve::kLinear, TemperatureCurve::kCosine}) {
    CHECK(*ParseTemperatureCurve(TemperatureCurveName(c)) == c);
  }
}

TEST_CASE("out-of-range values are reported with the range") {
  LoadResult r = ParseConfig("batching:\n  max_batch_size: 0\nreplay:\n  holdout_fraction: 1.5\n");
  REQUIRE(r.errors.size() == 2);
  CHECK(r.errors[0].ToString() ==
        "batching.max_batch_size: expected an integer in [1, 4096] at line 2, column 19");
  CHECK(r.errors[1].key_path == "replay.holdout_fraction");
  CHECK(r.errors[1].message == "expected a number in [0, 0.9]");
}

TEST_CASE("version retention: at least one file kept, -1 keeps every served version") {
  LoadResult bad = ParseConfig("learner:\n  keep_versions: 0\n  keep_served_versions: -2\n");
  REQUIRE(bad.errors.size() == 2);
  CHECK(bad.errors[0].key_path == "learner.keep_versions");
  CHECK(bad.errors[1].key_path == "learner.keep_served_versions");
  CHECK(bad.errors[1].message.find("[-1, ") != std::string::npos);
  LoadResult all = ParseConfig("learner:\n  keep_served_versions: -1\n");
  CHECK(all.errors.empty());
  CHECK(Config().learner.keep_versions == 20);
  CHECK(Config().learner.keep_served_versions == -1);
}

TEST_CASE("cross-field checks are positioned at the key") {
  LoadResult r = ParseConfig("model:\n  classes: 3\n  class_names: [a, b]\nserver:\n  listen: nope\n");
  REQUIRE(r.errors.size() == 2);
  CHECK(r.errors[0].key_path == "server.listen");
  CHECK(r.errors[0].line == 5);
  CHECK(r.errors[1].key_path == "model.class_names");
  CHECK(r.errors[1].line == 3);
  CHECK(r.errors[1].message.find("expected 3 names") != std::string::npos);
}

TEST_CASE("shifted replay views need an image input shape larger than the shift") {
  LoadResult flat = ParseConfig("model:\n  input_shape: [784]\nlearner:\n  replay_shift_px: 1\n");
  REQUIRE(flat.errors.size() == 1);
  CHECK(flat.errors[0].key_path == "learner.replay_shift_px");
  CHECK(flat.errors[0].line == 4);
  CHECK(flat.errors[0].message.find("image input shape") != std::string::npos);
  LoadResult tiny = ParseConfig("model:\n  input_shape: [1, 2, 8]\nlearner:\n  replay_shift_px: 2\n");
  REQUIRE(tiny.errors.size() == 1);
  CHECK(tiny.errors[0].message.find("smaller than") != std::string::npos);
  LoadResult ok = ParseConfig("model:\n  input_shape: [1, 28, 28]\nlearner:\n  replay_shift_px: 2\n");
  CHECK(ok.errors.empty());
  CHECK(ok.config.learner.replay_shift_px == 2);
}

TEST_CASE("a weight average decay of 1 (never moving) or more is refused, naming the field") {
  for (const char* v : {"1", "1.5", "-0.1"}) {
    CAPTURE(v);
    LoadResult r = ParseConfig(std::string("learner:\n  weight_average_decay: ") + v + "\n");
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0].key_path == "learner.weight_average_decay");
  }
  CHECK(ParseConfig("learner:\n  weight_average_decay: 0.995\n").errors.empty());
}

TEST_CASE("the learning-rate warm-up is off by default and takes a step count, naming the field") {
  CHECK(Config{}.learner.warmup_steps == 0);
  LoadResult r = ParseConfig("learner:\n  warmup_steps: -1\n");
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].key_path == "learner.warmup_steps");
  LoadResult ok = ParseConfig("learner:\n  warmup_steps: 200\n");
  CHECK(ok.errors.empty());
  CHECK(ok.config.learner.warmup_steps == 200);
}

TEST_CASE("dormant-unit recycling is on by default; its threshold is a share in [0, 1]") {
  LoadResult defaults = ParseConfig("{}\n");
  REQUIRE(defaults.errors.empty());
  CHECK(defaults.config.learner.recycle_dormant_units);
  CHECK(defaults.config.learner.dormant_threshold == 0.0);
  LoadResult bad = ParseConfig("learner:\n  dormant_threshold: 2\n");
  REQUIRE(bad.errors.size() == 1);
  CHECK(bad.errors[0].key_path == "learner.dormant_threshold");
  CHECK(bad.errors[0].message.find("[0, 1]") != std::string::npos);
  LoadResult word = ParseConfig("learner:\n  recycle_dormant_units: sometimes\n");
  REQUIRE(word.errors.size() == 1);
  CHECK(word.errors[0].key_path == "learner.recycle_dormant_units");
}

TEST_CASE("the promotion gate's fields: defaults, ranges named by key") {
  LoadResult defaults = ParseConfig("{}\n");
  REQUIRE(defaults.errors.empty());
  const LearnerConfig& l = defaults.config.learner;
  CHECK(l.max_accuracy_drop == doctest::Approx(0.005));
  CHECK(l.max_class_drop == doctest::Approx(0.1));
  CHECK(l.min_class_retention == doctest::Approx(0.5));
  CHECK(l.min_new_class_accuracy == doctest::Approx(0.2));
  CHECK(l.min_class_samples == 20);
  CHECK(l.regression_z == doctest::Approx(1.645));
  LoadResult bad = ParseConfig("learner:\n  min_class_retention: 1.5\n  min_class_samples: 0\n");
  REQUIRE(bad.errors.size() == 2);
  CHECK(bad.errors[0].key_path == "learner.min_class_retention");
  CHECK(bad.errors[0].message.find("[0, 1]") != std::string::npos);
  CHECK(bad.errors[1].key_path == "learner.min_class_samples");
}

TEST_CASE("malformed YAML and missing files are errors, not crashes") {
  LoadResult r = ParseConfig("server: [unclosed\n");
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].message.find("invalid YAML") == 0);
  CHECK(r.errors[0].line >= 1);
  LoadResult top = ParseConfig("- a\n- b\n");
  REQUIRE(top.errors.size() == 1);
  CHECK(top.errors[0].message == "expected a mapping at the top level");
  testing::TempDir dir;
  Result<Config> missing = LoadConfig(dir.str("nope.yaml"));
  CHECK(missing.status().code() == StatusCode::kInvalidArgument);
  CHECK(missing.status().message().find("cannot read config file") != std::string::npos);
}

}  // namespace
}  // namespace distilld::config
