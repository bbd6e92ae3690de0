// Shared set-up for the online-learning integration tests: a small synthetic
// task (3 classes of noisy 1x4x4 patterns), a teacher trained on all classes
// and a first student trained on classes 0 and 1 only, both saved as
// TorchScript in the state dir, and request builders for /v1/samples.
#pragma once

#include "tests/learner/torch_doctest.h"

#include <sys/stat.h>

#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "config/config.h"
#include "learner/kd_loss.h"
#include "learner/model/arch.h"
#include "learner/model/model_io.h"
#include "learner/train_step.h"
#include "tests/support/temp_dir.h"

namespace distilld::testing {

constexpr int kTaskClasses = 3;
constexpr int kTaskPixels = 16;  // 1x4x4

// Fixed class means; every sample is its class mean plus noise, in [0, 1].
struct SyntheticTask {
  std::vector<std::vector<float>> means;
  explicit SyntheticTask(uint64_t seed = 5) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> u(0.f, 1.f);
    for (int c = 0; c < kTaskClasses; ++c) {
      std::vector<float> m(kTaskPixels);
      for (float& v : m) v = u(rng) < 0.5f ? 0.15f : 0.85f;
      means.push_back(m);
    }
  }
  // `n` samples of class `cls` (or of every class in turn when cls < 0).
  void Make(int n, int cls, std::mt19937_64& rng, std::vector<float>* x, std::vector<int64_t>* y) const {
    std::normal_distribution<float> noise(0.f, 0.12f);
    for (int i = 0; i < n; ++i) {
      int c = cls >= 0 ? cls : i % kTaskClasses;
      for (int p = 0; p < kTaskPixels; ++p) x->push_back(std::clamp(means[c][p] + noise(rng), 0.f, 1.f));
      y->push_back(c);
    }
  }
};

// Trains a 16-32-3 MLP on samples of `classes` (labels only) and saves it.
inline void TrainAndSave(const SyntheticTask& task, const std::vector<int>& classes, const std::string& path,
                         uint64_t seed) {
  learner::ArchSpec arch;
  arch.input_shape = {1, 4, 4};
  arch.classes = kTaskClasses;
  arch.hidden = {32};
  auto built = learner::BuildModel(arch, seed);
  REQUIRE(built.ok());
  auto model = learner::CloneForTraining(*built);
  REQUIRE(model.ok());
  std::vector<torch::Tensor> params;
  for (const auto& p : model->parameters()) params.push_back(p);
  auto opt = learner::MakeOptimizer(config::Optimizer::kAdam, 0.02, params);
  REQUIRE(opt.ok());
  std::mt19937_64 rng(seed);
  learner::StepOptions step;
  step.loss.alpha = 1.0;
  for (int it = 0; it < 150; ++it) {
    std::vector<float> x;
    std::vector<int64_t> y;
    for (int c : classes) task.Make(16, c, rng, &x, &y);
    learner::Batch b;
    b.inputs = torch::from_blob(x.data(), {static_cast<int64_t>(y.size()), 1, 4, 4}).clone();
    b.labels = torch::tensor(y, torch::kInt64);
    auto s = learner::TrainStep(*model, **opt, b, step);
    REQUIRE(s.ok());
  }
  model->eval();
  REQUIRE(learner::SaveModelAtomic(*model, path).ok());
}

inline config::Config LearningConfig(const TempDir& dir) {
  config::Config c;
  c.server.listen = "127.0.0.1:0";
  c.server.io_threads = 2;
  c.server.drain_timeout_ms = 5000;
  c.model.input_shape = {1, 4, 4};
  c.model.classes = kTaskClasses;
  c.model.architecture.hidden = {32};
  c.model.teacher = dir.str("teacher.pt");
  c.model.student = dir.str("student.pt");
  c.batching.max_batch_size = 8;
  c.batching.max_queue_delay_us = 200;
  c.storage.state_dir = dir.str("state");
  c.storage.sync = true;
  c.replay.holdout_fraction = 0.2;
  c.learner.trigger_count = 1'000'000;  // rounds only when asked
  c.learner.idle_priority = false;       // under ctest -j it would wait for other tests' CPU
  // The tests' load threads send requests flat out (thousands a second), so
  // with the default a round would wait up to max_yield_s (60 s) for them
  // before training. The waiting has its own test (learning_api_test).
  c.learner.yield_above_rps = 0;
  c.learner.trigger_interval_s = 3600;
  c.learner.epochs = 4;
  c.learner.batch_size = 32;
  c.learner.learning_rate = 0.01;
  c.learner.alpha = 0.7;
  // The promotion gate stays at its defaults, as a user's does.
  return c;
}

// A JSON /v1/samples body.
inline std::string SamplesJson(const std::vector<float>& x, const std::vector<int64_t>& y) {
  std::string body = R"({"inputs":[{"name":"input","datatype":"FP32","shape":[)" + std::to_string(y.size()) +
                     R"(,1,4,4],"data":[)";
  for (size_t i = 0; i < x.size(); ++i) {
    if (i) body += ',';
    body += std::isfinite(x[i]) ? std::to_string(x[i]) : "NaN";
  }
  body += R"(]},{"name":"label","datatype":"INT64","shape":[)" + std::to_string(y.size()) + R"(],"data":[)";
  for (size_t i = 0; i < y.size(); ++i) {
    if (i) body += ',';
    body += std::to_string(y[i]);
  }
  return body + "]}]}";
}

// A JSON infer body for one 1x4x4 sample.
inline std::string Infer4x4(const float* x, const std::string& id) {
  std::string body = R"({"id":")" + id + R"(","inputs":[{"name":"input","datatype":"FP32","shape":[1,1,4,4],"data":[)";
  for (int i = 0; i < kTaskPixels; ++i) {
    if (i) body += ',';
    body += std::to_string(x[i]);
  }
  return body + R"(]}],"outputs":[{"name":"label"}]})";
}

inline void WriteFile(const std::string& path, const std::string& text, mode_t mode) {
  std::ofstream(path) << text;
  REQUIRE(::chmod(path.c_str(), mode) == 0);
}

}  // namespace distilld::testing
