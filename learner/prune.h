// Structured pruning of built-in students (MLP hidden units, CNN conv
// channels and hidden units), with knowledge-distillation recovery.
//
// Importance of a unit j (a hidden unit or a conv output channel), measured
// on held-out inputs:
//
//     score_j = E[|a_j|] * ||W_next[:, j]||_2
//
// where a_j is the unit's activation as the next layer sees it (after ReLU,
// and after max-pooling for conv channels; the mean runs over samples and
// spatial positions) and W_next[:, j] are the outgoing weights that read it
// (the next conv's input-channel slice, or the columns of the next linear
// layer; for the last conv stage, the fc0 columns of that channel's flattened
// positions). The product bounds the typical magnitude of what the unit adds
// to the next layer's pre-activation, so removing the lowest-scoring units
// changes the network's function least to first order. We chose it over the
// loss change per removed unit because it needs one forward pass over the
// held-out set for all units instead of one per unit, which matters on the
// two-core edge machines distilld targets; its blind spot (units that matter
// only together) is what the KD recovery after each step repairs.
//
// Removal is real: the result is BuildModel() at the smaller widths with the
// kept slices of every weight copied in, a dense TorchScript module of the
// same kind with fewer parameters (not a mask). Input and output widths never
// change, so a pruned student is a drop-in replacement.
//
// Free functions; thread-compatible (one caller per module). They set no
// global LibTorch state except PruneWithRecovery, which sets the caller's
// thread count (at::set_num_threads(options.threads)) like the offline calls.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "learner/idx_dataset.h"
#include "learner/kd_loss.h"
#include "learner/model/arch.h"
#include "learner/offline.h"

namespace distilld::learner {

// One importance score per unit: conv[i] has spec.channels[i] entries,
// hidden[i] has spec.hidden[i] entries (float32, >= 0).
struct UnitScores {
  std::vector<torch::Tensor> conv;
  std::vector<torch::Tensor> hidden;
};

// Scores every prunable unit of `model` (a built-in of `spec`) over `inputs`
// [N, C, H, W] in chunks of batch_size. InvalidArgument if the module does
// not match the spec or inputs is empty.
Result<UnitScores> ScoreUnits(const torch::jit::Module& model, const ArchSpec& spec, const torch::Tensor& inputs,
                              int64_t batch_size = 256);

// Keeps, in every layer, the `to` width's highest-scoring units (in their
// original order) and returns a new dense module of spec `to`. `to` must
// equal `from` except for smaller or equal widths. Parameters of the result
// require grad (ready to train).
Result<torch::jit::Module> PruneToWidths(const torch::jit::Module& model, const ArchSpec& from,
                                         const UnitScores& scores, const ArchSpec& to);

// The widths of `spec` all scaled by one keep ratio (rounded, at least
// min_width each) that is the largest whose cost is <= max_cost. Cost is
// ArchParameterCount or, with by_macs, ArchMacs. Returns the narrowest
// (min_width) spec if even that is above the budget.
ArchSpec WidthsForBudget(const ArchSpec& spec, int64_t max_cost, bool by_macs, int64_t min_width = 1);

struct PruneOptions {
  // The trained student (a built-in) and its spec. Not modified; the result
  // is a new module. Required.
  torch::jit::Module student;
  ArchSpec spec;
  // Teacher for the recovery's KD term (forward only). Not owned; must
  // outlive the call. nullptr: recovery trains on labels alone.
  torch::jit::Module* teacher = nullptr;
  // Recovery training data and the held-out set that scores units and
  // measures accuracy after every step. Both required (labels needed).
  Dataset train;
  Dataset holdout;
  // Fraction of the student's parameters (or MACs, with by_macs) to remove
  // in total, reached in `steps` equal gradual steps. Default: half the
  // parameters in 3 steps. Raise steps for large fractions; each step costs
  // one scoring pass plus recovery_steps optimizer steps.
  double target_fraction = 0.5;
  bool by_macs = false;
  int steps = 3;
  int64_t min_width = 2;
  // KD recovery after each pruning step: optimizer steps over shuffled
  // mini-batches of `train`. 0 disables recovery (prune only).
  int64_t recovery_steps = 300;
  int batch_size = 64;
  double learning_rate = 1e-3;  // Adam
  KdLossOptions loss;           // alpha (CE weight) and temperature
  int threads = 2;
  uint64_t seed = 42;           // shuffling
  ProgressCallback progress;    // stage "prune<k>"; optional
};

struct PruneStepReport {
  ArchSpec spec;                    // widths after this step
  int64_t params = 0;
  int64_t macs = 0;
  double accuracy_pruned = 0.0;     // holdout, right after removal
  double accuracy_recovered = 0.0;  // holdout, after KD recovery
};

struct PruneReport {
  torch::jit::Module module;  // the final pruned student (train mode off)
  ArchSpec spec;
  int64_t params_before = 0, params_after = 0;
  int64_t macs_before = 0, macs_after = 0;
  double accuracy_before = 0.0;  // holdout accuracy of the input student
  std::vector<PruneStepReport> steps;
  std::string ToText() const;
};

// Gradual prune-and-recover: for k = 1..steps, shrink to the widths whose
// cost is (1 - target_fraction * k / steps) of the original, removing the
// lowest-scoring units of the current model, then recover by KD from the
// teacher. InvalidArgument for bad options; errors of the training step
// propagate.
Result<PruneReport> PruneWithRecovery(const PruneOptions& options);

}  // namespace distilld::learner
