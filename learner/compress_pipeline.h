// CompressStudent: the post-distillation steps of `distilld distill`, in
// order: structured pruning with KD recovery (PruneWithRecovery), then
// quantization-aware fine-tuning (QatFineTune, "the last part of training"),
// then, optionally, conversion to an int8 TorchScript module. Each step is
// optional; the result is saved with SaveModelAtomic.
//
// Blocking, in the caller's thread; owns nothing after returning.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "learner/offline.h"

namespace distilld::learner {

struct CompressOptions {
  std::string student_path;  // a built-in student .pt (required)
  std::string teacher_path;  // teacher for the KD terms (required)
  std::string output_path;   // where the compressed student goes (required)
  std::string data_dir = kDefaultFashionMnistDir;
  // The last `holdout` training images score units and measure recovery;
  // the rest (up to train_limit, 0 = all) train.
  int64_t holdout = 5000;
  int64_t train_limit = 0;
  double prune_fraction = 0.0;  // of parameters; 0 = no pruning
  int prune_steps = 3;
  int64_t recovery_steps = 300;
  int qat_bits = 0;             // 8 or 4; 0 = no QAT
  int64_t qat_steps = 300;
  bool int8 = false;            // write the int8 module instead of float
  int threads = 2;
  uint64_t seed = 42;
  ProgressCallback progress;
};

struct CompressReport {
  int64_t params_before = 0, params_after = 0;
  double holdout_accuracy_before = 0.0, holdout_accuracy_after = 0.0;
  double test_accuracy_after = 0.0;
  int64_t file_bytes = 0;
  std::vector<int64_t> widths_after;  // hidden (and channel) widths
  std::string ToText() const;
};

Result<CompressReport> CompressStudent(const CompressOptions& options);

}  // namespace distilld::learner
