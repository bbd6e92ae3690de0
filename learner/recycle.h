// Recycling dormant hidden units of a student between rounds.
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
// Any TorchScript module whose parameters, in declaration order, form a chain
// of linear and 2-d convolution layers (each optionally followed by a
// BatchNorm, with running statistics) is supported: distilld's built-ins and
// the usual Python nn.Sequential or nn.Module with layers declared in the
// order forward uses them. Dormancy is read from gradients (a unit through
// which no gradient flows, in or out), so ReLU, pooling and BatchNorm need
// not be located in the code. Residual connections, shared layers, grouped
// convolutions, embeddings or layers declared out of order are refused.
//
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <random>

#include "common/status.h"

namespace distilld::learner {

struct RecycleOptions {
  // A unit is dormant when the gradient reaching its outgoing weights (its
  // activations, weighted by the gradient they feed) is at most `threshold`
  // times its layer's mean (ReDo's tau). Default 0: only units through which
  // nothing flows, in or out, on any input. Raise (ReDo uses 0.025-0.1) to
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

// OK if RecycleDormantUnits can work on `module` (its parameters chain, see
// above); else FailedPrecondition saying which parameter does not fit.
Status CheckRecyclable(const torch::jit::Module& module);

// Measures every hidden unit (conv channel or linear unit) on `inputs` (or a
// random max_inputs of them) in eval mode and, for each dormant one, draws new
// incoming weights and bias (PyTorch's default uniform initialisation, from
// `rng`), resets its BatchNorm channel (weight 1, bias 0, mean 0, variance 1)
// and zeroes its weights in the next layer. Changes the module's tensors in
// place; its training mode is left as it was. With threshold 0 the outputs on
// the inputs are checked to be unchanged, else everything is put back and
// FailedPrecondition returned (a forward that does not use the layers in
// parameter order). FailedPrecondition (module untouched) for a module that
// does not chain; InvalidArgument for inputs that do not fit it or an empty
// batch.
Result<RecycleStats> RecycleDormantUnits(torch::jit::Module& module, const torch::Tensor& inputs,
                                         const RecycleOptions& options, std::mt19937_64& rng);

}  // namespace distilld::learner
