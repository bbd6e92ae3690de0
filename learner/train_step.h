// One training step, tensor <-> Sample conversion, batched teacher forward.
//
// TrainStep is deliberately a plain function of (student, optimizer, batch,
// options): a multi-machine learner wraps it by passing a `before_update` hook
// that allreduces gradients (c10d ProcessGroupGloo), without touching the
// distiller. Nothing here assumes a single process or owns global state;
// all functions are thread-compatible (callers serialise use of one module).
#pragma once

#include <torch/script.h>
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "learner/kd_loss.h"
#include "storage/sample.h"

namespace distilld::learner {

// A mini-batch as tensors. labels use -1 for unlabelled samples.
struct Batch {
  torch::Tensor inputs;           // float32 [N, C, H, W] (or any per-sample shape)
  torch::Tensor labels;           // int64 [N]
  torch::Tensor teacher_logits;   // float32 [N, classes], or undefined
  torch::Tensor teacher_features; // float32 [N, width], or undefined (computed on demand)
  int64_t size() const { return inputs.defined() ? inputs.size(0) : 0; }
};

struct StepOptions {
  KdLossOptions loss;
  // Feature distillation is on when both are set and feature_weight > 0:
  // teacher and student must expose `feature_method`. The projector's
  // parameters must be in the optimizer too. Not owned.
  std::string feature_method;
  double feature_weight = 0.0;
  torch::jit::Module* teacher = nullptr;  // only for teacher features not in the batch
  FeatureProjector* projector = nullptr;
  // Called after backward(), before the optimizer updates: the place to
  // allreduce gradients across processes. Optional.
  std::function<Status()> before_update;
  // For a built-in MLP (BuildModel kind "mlp", recognised by its exact
  // TorchScript code), run forward as the same ATen ops on the module's own
  // parameter tensors instead of through the interpreter. Same ops, same
  // autograd graph, same weights; any other module runs its forward().
  bool direct_builtin_mlp = true;
};

struct StepStats {
  double loss = 0.0;
  double ce = 0.0;
  double kd = 0.0;
  double feature = 0.0;
  int64_t samples = 0;
};

// Forward, loss, backward, update. A NaN or infinite loss returns Aborted
// before the optimizer touches the weights. c10::Error becomes Internal.
Result<StepStats> TrainStep(torch::jit::Module& student, torch::optim::Optimizer& optimizer,
                            const Batch& batch, const StepOptions& options);

// torch::optim::Adam whose step() updates each float32 CPU parameter in one
// fused pass (moments, bias correction, update) instead of eight ATen ops and
// two temporaries. Same algorithm, options, state and serialisation as Adam;
// other parameters (and amsgrad) take Adam's op-by-op path.
class FusedAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

// Adam (FusedAdam) or SGD with momentum 0.9 over `params`; InvalidArgument
// for a non-positive learning rate.
Result<std::unique_ptr<torch::optim::Optimizer>> MakeOptimizer(config::Optimizer kind, double lr,
                                                               std::vector<torch::Tensor> params);

// A deep copy of `module` whose parameters are fresh leaves requiring grad,
// in train mode: the warm-start candidate, independent of the served model.
Result<torch::jit::Module> CloneForTraining(const torch::jit::Module& module);

// Width of `method`'s output for one sample of `input_shape` (probe forward).
Result<int64_t> FeatureWidth(torch::jit::Module& module, const std::string& method,
                             const std::vector<int64_t>& input_shape);

// Runs `method` (default forward) over `inputs` in chunks of batch_size under
// NoGradGuard and concatenates the outputs.
Result<torch::Tensor> ForwardInBatches(torch::jit::Module& module, const torch::Tensor& inputs,
                                       int64_t batch_size, const std::string& method = "forward");

// Samples -> Batch. All samples must share shape; inputs become float32
// (whatever their stored dtype). teacher_logits is defined only if every
// sample has logits (InvalidArgument if only some do, or widths differ).
Result<Batch> SamplesToBatch(std::span<const storage::Sample> samples);
// Inputs of samples only ([N, ...] float32).
Result<torch::Tensor> SamplesToInputs(std::span<const storage::Sample> samples);
// One sample from a [shape] float tensor (copied as FP32), optional label.
storage::Sample TensorToSample(const torch::Tensor& input, std::optional<int64_t> label);

}  // namespace distilld::learner
