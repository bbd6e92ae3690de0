// Recovering the ArchSpec of a built-in model from its parameters, for the
// compression steps (pruning, QAT, int8) that rebuild a module of the same
// kind at other widths or with other kernels.
//
// Free functions, no shared state: thread-safe.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "learner/model_builder.h"

namespace distilld::learner {

// Reads conv<i>_weight, fc<i>_weight and out_weight of a module built by
// BuildModel (any widths) and returns its spec; input_shape (C, H, W) cannot
// be recovered from a flattening MLP alone, so the caller passes it.
// InvalidArgument if the module is not a built-in (missing or inconsistent
// parameters).
Result<ArchSpec> InferArchSpec(const torch::jit::Module& module, const std::vector<int64_t>& input_shape);

// Elements of all weights and biases a built-in of `spec` holds (what
// CountParameters reports for the float module; also the count behind an
// int8 module, whose packed weights are not parameters).
int64_t ArchParameterCount(const ArchSpec& spec);

// Multiply-accumulates of one forward pass of one sample.
int64_t ArchMacs(const ArchSpec& spec);

}  // namespace distilld::learner
