// An exponential moving average of a module's weights over training steps
// (Polyak averaging): the round's candidate becomes the average of the last
// ~1/(1-decay) steps' weights instead of the last step's, which sits less on
// the final mini-batches' classes. Floating-point parameters and buffers
// (BatchNorm running statistics) are averaged; integer buffers (batch
// counters) are copied as they are.
//
// Holds its own copies (no aliasing of the module's tensors); not
// thread-safe; the caller's training thread only.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <vector>

#include "common/status.h"

namespace distilld::learner {

class WeightAverage {
 public:
  // decay in (0, 1). The first updates use min(decay, (1 + t) / (10 + t))
  // (t = updates so far), so early weights, before training settled, fade
  // quickly instead of lingering for 1/(1-decay) steps.
  WeightAverage(const torch::jit::Module& module, double decay);

  // Folds the module's current weights into the average; call after each
  // optimizer step. A module whose tensors changed shape or number since
  // construction is an InvalidArgument.
  Status Update(const torch::jit::Module& module);

  // Writes the average into the module's parameters and float buffers.
  Status CopyTo(torch::jit::Module& module) const;

  int64_t updates() const { return updates_; }

 private:
  static std::vector<torch::Tensor> Tensors(const torch::jit::Module& module);
  Status Matches(const std::vector<torch::Tensor>& now) const;

  double decay_;
  int64_t updates_ = 0;
  std::vector<torch::Tensor> average_;  // one per Tensors() entry, undefined for integer ones
};

}  // namespace distilld::learner
