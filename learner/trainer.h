// The mini-batch loop every trainer in learner/ runs: the incremental
// distiller's rounds, offline distillation and compression (pruning
// recovery, QAT). One shuffling rule, one RNG type, one place for the
// per-step hooks.
//
// Free function over caller-owned state; not thread-safe with respect to
// the model, optimizer or RNG it is given (the caller's thread only).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <random>

#include "common/status.h"
#include "learner/train_step.h"

namespace distilld::learner {

struct TrainLoopOptions {
  // Optimizer steps to run. 0 runs none.
  int64_t steps = 0;
  // Rows per mini-batch (the last one of an epoch may be shorter); >= 1.
  int64_t batch_size = 64;
  // Called before each step, before its mini-batch is drawn; a non-OK status
  // ends the loop with that status. Where the distiller beats its heartbeat,
  // checks for a stop, waits for inference and refreshes augmented views at
  // an epoch start (epoch_start is true there). Optional.
  std::function<Status(int64_t step, bool epoch_start)> before_step;
  // The KD temperature of a step (a schedule); unset keeps StepOptions'.
  std::function<double(int64_t step)> temperature;
  // The learning rate of a step, set on every parameter group before it
  // (a warm-up); unset keeps the optimizer's.
  std::function<double(int64_t step)> learning_rate;
  // After each step, with its statistics (progress, loss curves). Optional.
  std::function<void(int64_t step, const StepStats& stats)> after_step;
};

// Steps in an epoch of `rows` rows.
int64_t StepsPerEpoch(int64_t rows, int64_t batch_size);

// Runs options.steps TrainStep calls on consecutive slices of a permutation
// of data's rows, reshuffled (std::shuffle with `rng`) at the start of
// every epoch. Teacher logits and features are sliced when `data` has them.
// Errors of TrainStep come back unchanged (InvalidArgument for bad shapes,
// Aborted for a diverging loss).
Status RunTrainLoop(torch::jit::Module& model, torch::optim::Optimizer& optimizer, const Batch& data,
                    StepOptions step_options, std::mt19937_64& rng, const TrainLoopOptions& options);

}  // namespace distilld::learner
