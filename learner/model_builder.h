// Built-in student (and demo teacher) architectures, created in C++ as
// TorchScript modules so every saved version loads in Python unchanged.
//
// Every built-in module takes float input [N, C, H, W] in [0, 1] and returns
// logits [N, classes] from forward(). It also has a method `features` that
// returns the last hidden activation [N, width], for feature distillation.
// Thread-safe (no shared state).
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace distilld::learner {

struct ArchSpec {
  std::string kind = "mlp";                        // "mlp" or "cnn"
  std::vector<int64_t> input_shape = {1, 28, 28};  // per sample (C, H, W)
  int64_t classes = 10;
  std::vector<int64_t> hidden = {64};              // mlp: hidden widths; cnn: widths after convs
  std::vector<int64_t> channels = {16, 32};        // cnn: 3x3 conv + ReLU + 2x2 max-pool each
};

// InvalidArgument for an unknown kind or a non-positive size. Weights are
// initialised from `seed` (deterministic).
Result<torch::jit::Module> BuildModel(const ArchSpec& spec, uint64_t seed);

}  // namespace distilld::learner
