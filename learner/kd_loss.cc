// See kd_loss.h.
#include "learner/kd_loss.h"

#include <cmath>
#include <numbers>

namespace distilld::learner {

Result<KdLossTerms> KdLoss(const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& labels,
                           const KdLossOptions& options) {
  if (s.dim() != 2) return Status::InvalidArgument("student logits must be [N, C]");
  const int64_t n = s.size(0);
  if (labels.dim() != 1 || labels.size(0) != n) return Status::InvalidArgument("labels must be [N]");
  const bool has_teacher = t.defined();
  if (has_teacher && (t.dim() != 2 || t.size(0) != n || t.size(1) != s.size(1))) {
    return Status::InvalidArgument("teacher logits must match student logits [N, C]");
  }
  if (options.temperature <= 0) return Status::InvalidArgument("temperature must be > 0");
  if (n == 0) return Status::InvalidArgument("empty batch");

  torch::Tensor mask = labels.ge(0);
  const int64_t labelled = mask.sum().item<int64_t>();
  if (!has_teacher && labelled == 0) {
    return Status::InvalidArgument("batch has neither labels nor teacher logits");
  }
  // Out-of-range labels would make CE read past the logits.
  if (labelled > 0 && labels.max().item<int64_t>() >= s.size(1)) {
    return Status::InvalidArgument("label out of range of the logits");
  }
  auto opts = s.options();
  torch::Tensor maskf = mask.to(opts.dtype());
  torch::Tensor ce_i = torch::nn::functional::cross_entropy(
      s, labels.clamp_min(0), torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  ce_i = ce_i * maskf;

  KdLossTerms out;
  out.labelled = labelled;
  out.ce = labelled > 0 ? ce_i.sum().item<double>() / static_cast<double>(labelled) : 0.0;
  torch::Tensor per_sample;
  if (has_teacher) {
    const double temp = options.temperature;
    torch::Tensor log_ps = torch::log_softmax(s / temp, 1);
    torch::Tensor log_pt = torch::log_softmax(t.to(opts.dtype()) / temp, 1);
    torch::Tensor kl_i = (log_pt.exp() * (log_pt - log_ps)).sum(1) * (temp * temp);
    out.kd = kl_i.mean().item<double>();
    // Labelled: a*CE + (1-a)*KD; unlabelled: KD only, at full weight.
    torch::Tensor kd_w = maskf * (1.0 - options.alpha) + (1.0 - maskf);
    per_sample = options.alpha * ce_i + kd_w * kl_i;
    out.total = per_sample.mean();
  } else {
    out.total = ce_i.sum() / static_cast<double>(labelled);
  }
  return out;
}

Status ValidateSchedule(const TemperatureScheduleOptions& s) {
  if (s.curve != "constant" && s.curve != "linear" && s.curve != "cosine") {
    return Status::InvalidArgument("unknown temperature curve '" + s.curve + "'");
  }
  if (s.start <= 0 || s.end <= 0) return Status::InvalidArgument("temperatures must be > 0");
  return Status::Ok();
}

double TemperatureAt(const TemperatureScheduleOptions& s, int64_t step, int64_t total_steps) {
  if (s.curve == "constant" || total_steps <= 1) return s.start;
  double p = static_cast<double>(std::clamp<int64_t>(step, 0, total_steps - 1)) /
             static_cast<double>(total_steps - 1);
  if (s.curve == "cosine") p = 0.5 * (1.0 - std::cos(std::numbers::pi * p));
  return s.start + (s.end - s.start) * p;
}

FeatureProjectorImpl::FeatureProjectorImpl(int64_t student_width, int64_t teacher_width) {
  if (student_width != teacher_width) {
    linear_ = register_module("linear", torch::nn::Linear(student_width, teacher_width));
  }
}

torch::Tensor FeatureProjectorImpl::forward(const torch::Tensor& f) { return linear_ ? linear_(f) : f; }

Result<torch::Tensor> FeatureLoss(FeatureProjector& projector, const torch::Tensor& fs,
                                  const torch::Tensor& ft, double weight) {
  if (fs.dim() != 2 || ft.dim() != 2 || fs.size(0) != ft.size(0)) {
    return Status::InvalidArgument("features must be [N, width] with equal N");
  }
  try {
    torch::Tensor p = projector->forward(fs);
    if (p.size(1) != ft.size(1)) return Status::InvalidArgument("projected width differs from teacher's");
    return weight * torch::mse_loss(p, ft.detach());
  } catch (const c10::Error& e) {
    return Status::InvalidArgument(std::string("feature loss: ") + e.what_without_backtrace());
  }
}

}  // namespace distilld::learner
