// See train_step.h.
#include "learner/train_step.h"

#include <cmath>
#include <cstring>

namespace distilld::learner {

Result<StepStats> TrainStep(torch::jit::Module& student, torch::optim::Optimizer& optimizer,
                            const Batch& batch, const StepOptions& options) {
  if (batch.size() == 0) return Status::InvalidArgument("empty batch");
  try {
    student.train();
    optimizer.zero_grad();
    const bool use_features =
        !options.feature_method.empty() && options.feature_weight > 0 && options.projector != nullptr;
    torch::Tensor logits;
    torch::Tensor student_features;
    if (use_features) {
      student_features = student.get_method(options.feature_method)({batch.inputs}).toTensor();
      // Logits from the feature path would need knowledge of the head; run
      // forward separately (cheap for the small students distilld trains).
      logits = student.forward({batch.inputs}).toTensor();
    } else {
      logits = student.forward({batch.inputs}).toTensor();
    }
    ASSIGN_OR_RETURN(KdLossTerms terms, KdLoss(logits, batch.teacher_logits, batch.labels, options.loss));
    torch::Tensor total = terms.total;
    if (use_features) {
      torch::Tensor tf = batch.teacher_features;
      if (!tf.defined()) {
        if (options.teacher == nullptr) return Status::InvalidArgument("feature loss needs a teacher");
        torch::NoGradGuard no_grad;
        tf = options.teacher->get_method(options.feature_method)({batch.inputs}).toTensor();
      }
      ASSIGN_OR_RETURN(torch::Tensor fl,
                       FeatureLoss(*options.projector, student_features, tf, options.feature_weight));
      terms.feature = fl.item<double>();
      total = total + fl;
    }
    StepStats stats;
    stats.loss = total.item<double>();
    stats.ce = terms.ce;
    stats.kd = terms.kd;
    stats.feature = terms.feature;
    stats.samples = batch.size();
    if (!std::isfinite(stats.loss)) {
      return Status::Aborted("non-finite loss " + std::to_string(stats.loss));
    }
    total.backward();
    if (options.before_update) RETURN_IF_ERROR(options.before_update());
    optimizer.step();
    return stats;
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("training step: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("training step: ") + e.what());
  }
}

Result<std::unique_ptr<torch::optim::Optimizer>> MakeOptimizer(const std::string& name, double lr,
                                                               std::vector<torch::Tensor> params) {
  if (!(lr > 0)) return Status::InvalidArgument("learning rate must be > 0");
  if (name == "adam") {
    return std::unique_ptr<torch::optim::Optimizer>(
        new torch::optim::Adam(std::move(params), torch::optim::AdamOptions(lr)));
  }
  if (name == "sgd") {
    return std::unique_ptr<torch::optim::Optimizer>(
        new torch::optim::SGD(std::move(params), torch::optim::SGDOptions(lr).momentum(0.9)));
  }
  return Status::InvalidArgument("unknown optimizer '" + name + "' (want adam or sgd)");
}

Result<torch::jit::Module> CloneForTraining(const torch::jit::Module& module) {
  try {
    torch::jit::Module copy = module.deepcopy();
    for (const auto& p : copy.named_parameters(/*recurse=*/false)) {
      copy.setattr(p.name, p.value.detach().clone().set_requires_grad(true));
    }
    // Submodules (user-provided students) get the same treatment.
    for (const auto& sub : copy.named_modules()) {
      if (sub.name.empty()) continue;
      torch::jit::Module m = sub.value;
      for (const auto& p : m.named_parameters(/*recurse=*/false)) {
        m.setattr(p.name, p.value.detach().clone().set_requires_grad(true));
      }
    }
    copy.train();
    return copy;
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("cloning model: ") + e.what_without_backtrace());
  }
}

Result<int64_t> FeatureWidth(torch::jit::Module& module, const std::string& method,
                             const std::vector<int64_t>& input_shape) {
  try {
    if (!module.find_method(method)) return Status::InvalidArgument("model has no method '" + method + "'");
    std::vector<int64_t> shape = {1};
    shape.insert(shape.end(), input_shape.begin(), input_shape.end());
    torch::NoGradGuard no_grad;
    torch::Tensor f = module.get_method(method)({torch::zeros(shape)}).toTensor();
    if (f.dim() != 2) return Status::InvalidArgument("method '" + method + "' must return [N, width]");
    return f.size(1);
  } catch (const c10::Error& e) {
    return Status::InvalidArgument("probing '" + method + "': " + e.what_without_backtrace());
  }
}

Result<torch::Tensor> ForwardInBatches(torch::jit::Module& module, const torch::Tensor& inputs,
                                       int64_t batch_size, const std::string& method) {
  if (batch_size <= 0) return Status::InvalidArgument("batch_size must be > 0");
  try {
    torch::NoGradGuard no_grad;
    module.eval();
    std::vector<torch::Tensor> outs;
    const int64_t n = inputs.size(0);
    auto fn = module.get_method(method);
    for (int64_t i = 0; i < n; i += batch_size) {
      torch::Tensor chunk = inputs.slice(0, i, std::min(n, i + batch_size));
      outs.push_back(fn({chunk}).toTensor().to(torch::kFloat32));
    }
    if (outs.empty()) return torch::empty({0, 0});
    return torch::cat(outs, 0);
  } catch (const c10::Error& e) {
    return Status::InvalidArgument("model " + method + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::InvalidArgument("model " + method + ": " + e.what());
  }
}

namespace {

Result<torch::ScalarType> TorchType(storage::DType d) {
  switch (d) {
    case storage::DType::kFloat32: return torch::kFloat32;
    case storage::DType::kFloat64: return torch::kFloat64;
    case storage::DType::kFloat16: return torch::kFloat16;
    case storage::DType::kUInt8: return torch::kUInt8;
    case storage::DType::kInt8: return torch::kInt8;
    case storage::DType::kInt64: return torch::kInt64;
    case storage::DType::kInt32: return torch::kInt32;
  }
  return Status::InvalidArgument("unknown dtype");
}

}  // namespace

Result<torch::Tensor> SamplesToInputs(std::span<const storage::Sample> samples) {
  if (samples.empty()) return Status::InvalidArgument("no samples");
  const auto& shape = samples[0].shape;
  std::vector<int64_t> full = {static_cast<int64_t>(samples.size())};
  full.insert(full.end(), shape.begin(), shape.end());
  torch::Tensor out = torch::empty(full, torch::kFloat32);
  for (size_t i = 0; i < samples.size(); ++i) {
    const storage::Sample& s = samples[i];
    if (s.shape != shape) return Status::InvalidArgument("sample " + std::to_string(i) + " has a different shape");
    if (s.data.size() != storage::DTypeSize(s.dtype) * static_cast<size_t>(s.NumElements())) {
      return Status::InvalidArgument("sample " + std::to_string(i) + " data size mismatch");
    }
    ASSIGN_OR_RETURN(torch::ScalarType st, TorchType(s.dtype));
    torch::Tensor view = torch::from_blob(const_cast<char*>(s.data.data()), shape,
                                          torch::TensorOptions().dtype(st));
    out[static_cast<int64_t>(i)].copy_(view.to(torch::kFloat32));
  }
  return out;
}

Result<Batch> SamplesToBatch(std::span<const storage::Sample> samples) {
  Batch b;
  ASSIGN_OR_RETURN(b.inputs, SamplesToInputs(samples));
  const int64_t n = static_cast<int64_t>(samples.size());
  b.labels = torch::full({n}, -1, torch::kInt64);
  auto lab = b.labels.accessor<int64_t, 1>();
  size_t with_logits = 0;
  const size_t width = samples[0].teacher_logits.size();
  for (int64_t i = 0; i < n; ++i) {
    const auto& s = samples[static_cast<size_t>(i)];
    if (s.label.has_value()) lab[i] = *s.label;
    if (!s.teacher_logits.empty()) {
      if (s.teacher_logits.size() != width) return Status::InvalidArgument("teacher logit widths differ");
      ++with_logits;
    }
  }
  if (with_logits != 0 && with_logits != samples.size()) {
    return Status::InvalidArgument("only some samples carry teacher logits");
  }
  if (with_logits > 0) {
    b.teacher_logits = torch::empty({n, static_cast<int64_t>(width)}, torch::kFloat32);
    float* dst = b.teacher_logits.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(dst + i * static_cast<int64_t>(width), samples[static_cast<size_t>(i)].teacher_logits.data(),
                  width * sizeof(float));
    }
  }
  return b;
}

storage::Sample TensorToSample(const torch::Tensor& input, std::optional<int64_t> label) {
  torch::Tensor t = input.detach().to(torch::kFloat32).contiguous();
  storage::Sample s;
  s.dtype = storage::DType::kFloat32;
  s.shape.assign(t.sizes().begin(), t.sizes().end());
  s.data.assign(reinterpret_cast<const char*>(t.data_ptr<float>()), static_cast<size_t>(t.numel()) * sizeof(float));
  s.label = label;
  return s;
}

}  // namespace distilld::learner
