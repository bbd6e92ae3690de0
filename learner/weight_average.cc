#include "learner/weight_average.h"

#include <algorithm>
#include <string>

namespace distilld::learner {

std::vector<torch::Tensor> WeightAverage::Tensors(const torch::jit::Module& module) {
  std::vector<torch::Tensor> out;
  for (const auto& p : module.parameters()) out.push_back(p);
  for (const auto& b : module.buffers()) out.push_back(b);
  return out;
}

WeightAverage::WeightAverage(const torch::jit::Module& module, double decay) : decay_(decay) {
  torch::NoGradGuard no_grad;
  for (const auto& t : Tensors(module)) {
    average_.push_back(t.is_floating_point() ? t.detach().clone() : torch::Tensor());
  }
}

// Checked before any tensor is touched: a refused update or copy leaves
// both sides as they were.
Status WeightAverage::Matches(const std::vector<torch::Tensor>& now) const {
  if (now.size() != average_.size()) {
    return Status::InvalidArgument("weight average: the module has " + std::to_string(now.size()) +
                                   " tensors, the average " + std::to_string(average_.size()));
  }
  for (size_t i = 0; i < now.size(); ++i) {
    if (average_[i].defined() && !now[i].sizes().equals(average_[i].sizes())) {
      return Status::InvalidArgument("weight average: tensor " + std::to_string(i) +
                                     " changed shape");
    }
  }
  return Status::Ok();
}

Status WeightAverage::Update(const torch::jit::Module& module) {
  const std::vector<torch::Tensor> now = Tensors(module);
  RETURN_IF_ERROR(Matches(now));
  const double t = static_cast<double>(updates_);
  const double d = std::min(decay_, (1.0 + t) / (10.0 + t));
  torch::NoGradGuard no_grad;
  try {
    for (size_t i = 0; i < now.size(); ++i) {
      if (average_[i].defined()) average_[i].mul_(d).add_(now[i].detach(), 1.0 - d);
    }
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("weight average: ") + e.what_without_backtrace());
  }
  ++updates_;
  return Status::Ok();
}

Status WeightAverage::CopyTo(torch::jit::Module& module) const {
  const std::vector<torch::Tensor> now = Tensors(module);
  RETURN_IF_ERROR(Matches(now));
  torch::NoGradGuard no_grad;
  try {
    for (size_t i = 0; i < now.size(); ++i) {
      if (average_[i].defined()) now[i].copy_(average_[i]);
    }
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("weight average: ") + e.what_without_backtrace());
  }
  return Status::Ok();
}

}  // namespace distilld::learner
