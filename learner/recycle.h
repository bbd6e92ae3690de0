// Recycling dormant hidden units of a built-in student between rounds.
//
// Why: a round that trains on only a few classes (the first phase of a
// class-incremental stream) leaves many ReLU units that never fire on any
// input. A dead unit gets no gradient, so it stays dead in every later round
// and the student keeps only part of its width for the classes still to come
// (Fashion-MNIST, MLP 784-64-10: 20 of 64 hidden units dead after the first
// two-class round and 19 still dead after the fifth; an offline student has
// 7). Recycling re-draws a dormant unit's incoming weights and zeroes its
// outgoing ones, as in ReDo (Sokar et al. 2023, "The Dormant Neuron
// Phenomenon in Deep Reinforcement Learning"): the module computes exactly the
// same function afterwards, so nothing is forgotten by the reset itself, and
// the unit can learn again in the round that follows.
// Measured in docs/benchmarks-learner.md ("Dormant units").
//
// Thread-safety: a pure function of its arguments; the caller must not use
// `module` on other threads meanwhile.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <random>

#include "common/status.h"

namespace distilld::learner {

struct RecycleOptions {
  // A unit is dormant when its mean activation over the inputs is at most
  // `threshold` times the mean over its layer's units (ReDo's tau). Default 0:
  // only units that are zero on every input. Raise (ReDo uses 0.025-0.1) to
  // also recycle units that fire rarely; they lose what they carry.
  double threshold = 0.0;
  // At most this many inputs, drawn at random, are measured. Default 8192:
  // bounds the pass (the learner must stop within a second) while a unit
  // that fires on even 0.1% of the inputs is still seen with probability
  // 0.9997. 0 = all.
  int64_t max_inputs = 8192;
  // Inputs per forward chunk while measuring activations. Default 1024;
  // lower it for large convolutional inputs.
  int64_t chunk = 1024;
};

struct RecycleStats {
  int64_t units = 0;     // hidden units (conv channels and fc units) measured
  int64_t recycled = 0;  // of which recycled
};

// For a built-in architecture (learner/model_builder.h, kinds mlp and cnn):
// measures every hidden unit (conv channel or fc unit) on `inputs` [N, C, H, W]
// (or a random max_inputs of them)
// and, for each dormant one, draws new incoming weights and bias (the same
// uniform initialisation BuildModel uses, from `rng`) and zeroes its weights in
// the next layer. Changes the module's parameter tensors in place.
// FailedPrecondition (module untouched) for any other module; InvalidArgument for
// inputs that do not fit it or an empty batch; Internal for a LibTorch error.
Result<RecycleStats> RecycleDormantUnits(torch::jit::Module& module, const torch::Tensor& inputs,
                                         const RecycleOptions& options, std::mt19937_64& rng);

}  // namespace distilld::learner
