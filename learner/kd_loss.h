// Knowledge-distillation loss, temperature schedule and feature projection.
//
//   L = mean_i [ a*CE(s_i, y_i) + (1-a)*T^2*KL(softmax(t_i/T) || softmax(s_i/T)) ]
//
// for labelled samples; an unlabelled sample (label -1) contributes only
// T^2*KL(...) at full weight, so with a=1 unlabelled samples still teach
// something. Without teacher logits (an undefined tensor) the loss is plain
// CE over labelled samples. Free functions and a small module: thread-compatible.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "common/status.h"
#include "config/config.h"

namespace distilld::learner {

struct KdLossOptions {
  // a: weight of cross-entropy on labelled samples. Default 0.5.
  double alpha = 0.5;
  // T: softening temperature of the KD term. Default 4.
  double temperature = 4.0;
  // Compute the loss and its gradient in one pass over the logits (CPU,
  // float32, teacher logits not requiring grad), instead of ~20 ATen ops and
  // their autograd nodes. Same values as the op-by-op form up to rounding
  // (accumulated in double). Other inputs always take the op-by-op form.
  bool fused = true;
};

struct KdLossTerms {
  torch::Tensor total;  // scalar, differentiable
  double ce = 0.0;      // mean CE over labelled samples (0 if none)
  double kd = 0.0;      // mean T^2*KL over samples with teacher logits
  double feature = 0.0;  // b*MSE term, set by the caller that adds it
  int64_t labelled = 0;
};

// student_logits [N, C]; teacher_logits [N, C] or undefined; labels int64 [N]
// with -1 for unlabelled. InvalidArgument on shape mismatches or when no
// sample carries any signal (no labels and no teacher).
Result<KdLossTerms> KdLoss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                           const torch::Tensor& labels, const KdLossOptions& options);

// Progressive temperature across the steps of a round.
struct TemperatureScheduleOptions {
  double start = 4.0;
  double end = 4.0;
  config::TemperatureCurve curve = config::TemperatureCurve::kConstant;  // constant: always start
};
// InvalidArgument for a non-positive temperature.
Status ValidateSchedule(const TemperatureScheduleOptions& schedule);
// Temperature at `step` of `total_steps` (0-based; the last step gets `end`).
double TemperatureAt(const TemperatureScheduleOptions& schedule, int64_t step, int64_t total_steps);

// Learned linear map from the student's feature width to the teacher's, used
// in b*MSE(proj(f_s), f_t). Identity (no parameters) when the widths match.
class FeatureProjectorImpl : public torch::nn::Module {
 public:
  FeatureProjectorImpl(int64_t student_width, int64_t teacher_width);
  torch::Tensor forward(const torch::Tensor& student_features);
  bool identity() const { return !linear_; }

 private:
  torch::nn::Linear linear_{nullptr};
};
TORCH_MODULE(FeatureProjector);

// b * MSE(proj(f_s), f_t); InvalidArgument if widths or batch sizes disagree.
Result<torch::Tensor> FeatureLoss(FeatureProjector& projector, const torch::Tensor& student_features,
                                  const torch::Tensor& teacher_features, double weight);

}  // namespace distilld::learner
