// See kd_loss.h.
#include "learner/kd_loss.h"

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

namespace distilld::learner {
namespace {

// The KD loss as one autograd node. forward() evaluates the loss and, when the
// student logits require grad, dL/ds for a unit upstream gradient, in one pass
// over the rows (double accumulation); backward() only scales that by the
// upstream gradient. Inputs: s [N, C] float32 contiguous, t [N, C] float32
// contiguous if has_teacher (else a defined placeholder: apply() rejects
// undefined inputs), labels int64 [N] contiguous (-1 = unlabelled, already
// checked to be < C), labelled = number of labels >= 0 (> 0 without a
// teacher), want_grad = s requires grad under grad mode. Outputs: {total
// (float32 scalar), ce mean, kd mean (float64 scalars, not differentiable)}.
class FusedKdLoss : public torch::autograd::Function<FusedKdLoss> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& s,
                                                const torch::Tensor& t, const torch::Tensor& labels,
                                                bool has_teacher, int64_t labelled, double alpha, double temp,
                                                bool want_grad) {
    const int64_t n = s.size(0), c = s.size(1);
    const float* sp = s.data_ptr<float>();
    const float* tp = has_teacher ? t.data_ptr<float>() : nullptr;
    const int64_t* lp = labels.data_ptr<int64_t>();
    torch::Tensor grad = want_grad ? torch::empty({n, c}, s.options().requires_grad(false)) : torch::Tensor();
    float* gp = want_grad ? grad.data_ptr<float>() : nullptr;
    std::vector<double> ps(static_cast<size_t>(c)), pt(static_cast<size_t>(c)), p1(static_cast<size_t>(c));
    const double inv_temp = 1.0 / temp;
    double total = 0, ce_sum = 0, kd_sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float* si = sp + i * c;
      const int64_t y = lp[i];
      const bool lab = y >= 0;
      double w_ce = 0, w_kd = 0;  // d total / d ce_i and d total / d kl_i
      if (has_teacher) {
        w_ce = lab ? alpha / static_cast<double>(n) : 0.0;
        w_kd = (lab ? 1.0 - alpha : 1.0) / static_cast<double>(n);
      } else {
        w_ce = lab ? 1.0 / static_cast<double>(labelled) : 0.0;
      }
      double ce_i = 0;
      if (lab) {  // CE: logsumexp(s_i) - s_i[y]; softmax(s_i) for the gradient
        double mx = si[0];
        for (int64_t j = 1; j < c; ++j) mx = std::max(mx, static_cast<double>(si[j]));
        double sum = 0;
        for (int64_t j = 0; j < c; ++j) sum += (p1[j] = std::exp(static_cast<double>(si[j]) - mx));
        ce_i = mx + std::log(sum) - static_cast<double>(si[y]);
        for (int64_t j = 0; j < c; ++j) p1[j] /= sum;
        ce_sum += ce_i;
      }
      double kl_i = 0;
      if (has_teacher) {  // T^2 * sum_j pt_j (log pt_j - log ps_j) with softmax at temperature T
        const float* ti = tp + i * c;
        double ms = si[0] * inv_temp, mt = ti[0] * inv_temp;
        for (int64_t j = 1; j < c; ++j) {
          ms = std::max(ms, si[j] * inv_temp);
          mt = std::max(mt, ti[j] * inv_temp);
        }
        double zs = 0, zt = 0;
        for (int64_t j = 0; j < c; ++j) {
          zs += (ps[j] = std::exp(si[j] * inv_temp - ms));
          zt += (pt[j] = std::exp(ti[j] * inv_temp - mt));
        }
        const double lzs = ms + std::log(zs), lzt = mt + std::log(zt);
        double kl = 0;
        for (int64_t j = 0; j < c; ++j) {
          ps[j] /= zs;
          pt[j] /= zt;
          kl += pt[j] * ((ti[j] * inv_temp - lzt) - (si[j] * inv_temp - lzs));
        }
        kl_i = kl * temp * temp;
        kd_sum += kl_i;
      }
      total += w_ce * ce_i + w_kd * kl_i;
      if (want_grad) {
        // d ce_i / d s_ij = softmax(s_i)_j - [j == y];
        // d kl_i / d s_ij = T^2 * (1/T) * (ps_j - pt_j).
        float* gi = gp + i * c;
        for (int64_t j = 0; j < c; ++j) {
          double g = 0;
          if (lab) g += w_ce * (p1[j] - (j == y ? 1.0 : 0.0));
          if (has_teacher) g += w_kd * temp * (ps[j] - pt[j]);
          gi[j] = static_cast<float>(g);
        }
      }
    }
    if (want_grad) ctx->saved_data["grad"] = grad;
    auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
    torch::Tensor ce = torch::scalar_tensor(labelled > 0 ? ce_sum / static_cast<double>(labelled) : 0.0, f64);
    torch::Tensor kd = torch::scalar_tensor(has_teacher ? kd_sum / static_cast<double>(n) : 0.0, f64);
    ctx->mark_non_differentiable({ce, kd});
    return {torch::scalar_tensor(total, s.options().requires_grad(false)), ce, kd};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    torch::Tensor grad = ctx->saved_data["grad"].toTensor();
    // One input gradient per forward() argument: only s is differentiable.
    return {grad * grad_outputs[0], torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

bool FusableInputs(const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& labels) {
  auto cpu_f32 = [](const torch::Tensor& x) {
    return x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.layout() == torch::kStrided;
  };
  if (!cpu_f32(s) || !labels.device().is_cpu() || labels.scalar_type() != torch::kInt64) return false;
  if (t.defined() && (!cpu_f32(t) || t.requires_grad())) return false;
  return true;
}

}  // namespace

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

  if (options.fused && FusableInputs(s, t, labels)) {
    try {
      torch::Tensor lab = labels.contiguous();
      const int64_t* lp = lab.data_ptr<int64_t>();
      int64_t labelled = 0, max_label = -1;
      for (int64_t i = 0; i < n; ++i) {
        if (lp[i] >= 0) ++labelled;
        max_label = std::max(max_label, lp[i]);
      }
      if (!has_teacher && labelled == 0) {
        return Status::InvalidArgument("batch has neither labels nor teacher logits");
      }
      // Out-of-range labels would make CE read past the logits.
      if (max_label >= s.size(1)) return Status::InvalidArgument("label out of range of the logits");
      torch::autograd::variable_list r =
          FusedKdLoss::apply(s.contiguous(), has_teacher ? t.contiguous() : torch::empty({0}, s.options()), lab,
                             has_teacher, labelled, options.alpha, options.temperature,
                             s.requires_grad() && torch::GradMode::is_enabled());
      KdLossTerms out;
      out.total = r[0];
      out.ce = r[1].item<double>();
      out.kd = r[2].item<double>();
      out.labelled = labelled;
      return out;
    } catch (const c10::Error& e) {
      return Status::InvalidArgument(std::string("kd loss: ") + e.what_without_backtrace());
    }
  }

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
  if (s.start <= 0 || s.end <= 0) return Status::InvalidArgument("temperatures must be > 0");
  return Status::Ok();
}

double TemperatureAt(const TemperatureScheduleOptions& s, int64_t step, int64_t total_steps) {
  if (s.curve == config::TemperatureCurve::kConstant || total_steps <= 1) return s.start;
  double p = static_cast<double>(std::clamp<int64_t>(step, 0, total_steps - 1)) /
             static_cast<double>(total_steps - 1);
  if (s.curve == config::TemperatureCurve::kCosine) p = 0.5 * (1.0 - std::cos(std::numbers::pi * p));
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
