// Private to learner/: the KD training loop shared by pruning recovery and
// quantization-aware fine-tuning. Not part of the public API.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <string>

#include "common/status.h"
#include "learner/idx_dataset.h"
#include "learner/kd_loss.h"
#include "learner/offline.h"

namespace distilld::learner::internal {

struct KdRunOptions {
  int64_t steps = 0;
  int batch_size = 64;
  double learning_rate = 1e-3;  // Adam
  KdLossOptions loss;
  uint64_t seed = 42;
  std::string stage;           // progress label
  ProgressCallback progress;   // optional
};

// `steps` TrainStep calls over shuffled mini-batches of `train` (reshuffled
// every epoch); teacher_logits [N, classes] or undefined (labels only).
// Trains model's parameters in place and leaves it in eval mode.
Status RunKdSteps(torch::jit::Module& model, const Dataset& train, const torch::Tensor& teacher_logits,
                  const KdRunOptions& options);

}  // namespace distilld::learner::internal
