// See train_step.h.
#include "learner/train_step.h"

#include <ATen/Parallel.h>
#include <c10/util/string_utils.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/constants.h>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include <cmath>
#include <cstring>
#include <optional>
#include <utility>

#include "learner/model/arch.h"

namespace distilld::learner {
namespace {

const std::string kOutWeight = std::string(kOutputLayerName) + "_weight";
const std::string kOutBias = std::string(kOutputLayerName) + "_bias";

// Per-step constants of one Adam update, as float like ATen's kernels use them.
struct AdamCoeffs {
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float bias_correction2_sqrt, eps, neg_step_size, weight_decay;
};

// Elements [begin, end) of one parameter, in the order of Adam's ops:
//   g += wd * p;  m = m * b1 + (1 - b1) * g;  v = v * b2 + (1 - b2) * g * g;
//   p += -step_size * m / (sqrt(v) / sqrt(bc2) + eps)
void AdamUpdate(float* p, const float* g, float* m, float* v, int64_t begin, int64_t end, const AdamCoeffs& k) {
  int64_t i = begin;
  const bool decay = k.weight_decay != 0.0f;
#if defined(__SSE2__)
  const __m128 b1 = _mm_set1_ps(k.beta1), omb1 = _mm_set1_ps(k.one_minus_beta1);
  const __m128 b2 = _mm_set1_ps(k.beta2), omb2 = _mm_set1_ps(k.one_minus_beta2);
  const __m128 bc2 = _mm_set1_ps(k.bias_correction2_sqrt), eps = _mm_set1_ps(k.eps);
  const __m128 nss = _mm_set1_ps(k.neg_step_size), wd = _mm_set1_ps(k.weight_decay);
  for (; i + 4 <= end; i += 4) {
    __m128 pv = _mm_loadu_ps(p + i);
    __m128 gv = _mm_loadu_ps(g + i);
    if (decay) gv = _mm_add_ps(gv, _mm_mul_ps(wd, pv));
    const __m128 mv = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(m + i), b1), _mm_mul_ps(omb1, gv));
    const __m128 vv = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(v + i), b2), _mm_mul_ps(_mm_mul_ps(omb2, gv), gv));
    const __m128 den = _mm_add_ps(_mm_div_ps(_mm_sqrt_ps(vv), bc2), eps);
    pv = _mm_add_ps(pv, _mm_div_ps(_mm_mul_ps(nss, mv), den));
    _mm_storeu_ps(m + i, mv);
    _mm_storeu_ps(v + i, vv);
    _mm_storeu_ps(p + i, pv);
  }
#endif
  for (; i < end; ++i) {
    float gi = g[i];
    if (decay) gi += k.weight_decay * p[i];
    const float mi = m[i] * k.beta1 + k.one_minus_beta1 * gi;
    const float vi = v[i] * k.beta2 + (k.one_minus_beta2 * gi) * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] += (k.neg_step_size * mi) / (std::sqrt(vi) / k.bias_correction2_sqrt + k.eps);
  }
}

bool FusableAdamParam(const torch::Tensor& p, const torch::Tensor& grad, const torch::Tensor& m,
                      const torch::Tensor& v) {
  for (const torch::Tensor* t : {&p, &grad, &m, &v}) {
    if (!t->device().is_cpu() || t->scalar_type() != torch::kFloat32 || t->layout() != torch::kStrided ||
        !t->is_contiguous()) {
      return false;
    }
  }
  return grad.numel() == p.numel() && m.numel() == p.numel() && v.numel() == p.numel();
}

// The non-constant nodes of `method`'s graph, or nullopt if there is none.
std::optional<std::vector<const torch::jit::Node*>> Body(const torch::jit::Module& m, const char* method,
                                                         std::shared_ptr<torch::jit::Graph>* graph) {
  c10::optional<torch::jit::Method> fn = m.find_method(method);
  if (!fn) return std::nullopt;
  *graph = torch::jit::toGraphFunction(fn->function()).graph();
  std::vector<const torch::jit::Node*> body;
  for (const torch::jit::Node* n : (*graph)->nodes()) {
    if (n->kind() != c10::prim::Constant) body.push_back(n);
  }
  return body;
}

bool IsIntConst(const torch::jit::Value* v, int64_t want) {
  c10::optional<c10::IValue> iv = torch::jit::toIValue(v);
  return iv && iv->isInt() && iv->toInt() == want;
}

bool IsFalseConst(const torch::jit::Value* v) {
  c10::optional<c10::IValue> iv = torch::jit::toIValue(v);
  return iv && iv->isBool() && !iv->toBool();
}

bool IsNoneConst(const torch::jit::Value* v) {
  c10::optional<c10::IValue> iv = torch::jit::toIValue(v);
  return iv && iv->isNone();
}

// `n` is self.<name>.
bool IsSelfAttr(const torch::jit::Node* n, const torch::jit::Value* self, const std::string& name) {
  return n->kind() == c10::prim::GetAttr && n->inputs().size() == 1 && n->input(0) == self &&
         n->s(c10::attr::name) == name;
}

// n is aten::<kind>(inputs...) with exactly these inputs (constants checked by the caller).
bool IsOp(const torch::jit::Node* n, c10::Symbol kind, size_t inputs) {
  return n->kind() == kind && n->inputs().size() == inputs && n->outputs().size() == 1;
}

// Layers (weight, bias) of a module whose code is exactly what BuildModel
// emits for kind "mlp":
//   features(x): h = x.float(); h = h.flatten(1); h = relu(linear(h, fc<i>_weight, fc<i>_bias)) ...
//   forward(x):  linear(features(x), out_weight, out_bias)
// The last entry is the output layer. Empty for any other module (other code,
// extra nodes, hooks), which then runs through the interpreter.
std::vector<std::pair<torch::Tensor, torch::Tensor>> BuiltinMlpLayers(const torch::jit::Module& m) {
  std::vector<std::pair<torch::Tensor, torch::Tensor>> none, layers;
  if (!m.type()->getForwardHooks().empty() || !m.type()->getForwardPreHooks().empty()) return none;
  std::shared_ptr<torch::jit::Graph> g;
  auto body = Body(m, "features", &g);
  if (!body || g->inputs().size() != 2 || g->outputs().size() != 1) return none;
  const torch::jit::Value* self = g->inputs()[0];
  const auto& f = *body;
  if (f.size() < 2 || (f.size() - 2) % 4 != 0) return none;
  // h = x.float()  (aten::to(x, 6 = float32, False, False, None))
  if (!IsOp(f[0], c10::aten::to, 5) || f[0]->input(0) != g->inputs()[1] ||
      !IsIntConst(f[0]->input(1), static_cast<int64_t>(c10::ScalarType::Float)) ||
      !IsFalseConst(f[0]->input(2)) || !IsFalseConst(f[0]->input(3)) || !IsNoneConst(f[0]->input(4))) {
    return none;
  }
  // h = h.flatten(1)  (aten::flatten(h, 1, -1))
  if (!IsOp(f[1], c10::aten::flatten, 3) || f[1]->input(0) != f[0]->output() || !IsIntConst(f[1]->input(1), 1) ||
      !IsIntConst(f[1]->input(2), -1)) {
    return none;
  }
  const torch::jit::Value* h = f[1]->output();
  for (size_t i = 0; 2 + 4 * i < f.size(); ++i) {
    const torch::jit::Node* const* n = &f[2 + 4 * i];
    const std::string w = HiddenLayerName(i) + "_weight", b = HiddenLayerName(i) + "_bias";
    if (!IsSelfAttr(n[0], self, w) || !IsSelfAttr(n[1], self, b) || !IsOp(n[2], c10::aten::linear, 3) ||
        n[2]->input(0) != h || n[2]->input(1) != n[0]->output() || n[2]->input(2) != n[1]->output() ||
        !IsOp(n[3], c10::aten::relu, 1) || n[3]->input(0) != n[2]->output()) {
      return none;
    }
    layers.emplace_back(m.attr(w).toTensor(), m.attr(b).toTensor());
    h = n[3]->output();
  }
  if (g->outputs()[0] != h) return none;
  auto fwd = Body(m, "forward", &g);
  if (!fwd || fwd->size() != 4 || g->inputs().size() != 2 || g->outputs().size() != 1) return none;
  const auto& o = *fwd;
  self = g->inputs()[0];
  if (o[0]->kind() != c10::prim::CallMethod || o[0]->s(c10::attr::name) != "features" || o[0]->inputs().size() != 2 ||
      o[0]->input(0) != self || o[0]->input(1) != g->inputs()[1] || o[0]->outputs().size() != 1 ||
      !IsSelfAttr(o[1], self, kOutWeight) || !IsSelfAttr(o[2], self, kOutBias) ||
      !IsOp(o[3], c10::aten::linear, 3) || o[3]->input(0) != o[0]->output() || o[3]->input(1) != o[1]->output() ||
      o[3]->input(2) != o[2]->output() || g->outputs()[0] != o[3]->output()) {
    return none;
  }
  layers.emplace_back(m.attr(kOutWeight).toTensor(), m.attr(kOutBias).toTensor());
  return layers;
}

// forward() of a module with these BuiltinMlpLayers, as ATen ops.
torch::Tensor MlpForward(const std::vector<std::pair<torch::Tensor, torch::Tensor>>& layers, const torch::Tensor& x) {
  torch::Tensor h = x.to(torch::kFloat32).flatten(1);
  for (size_t i = 0; i + 1 < layers.size(); ++i) h = torch::relu(torch::linear(h, layers[i].first, layers[i].second));
  return torch::linear(h, layers.back().first, layers.back().second);
}

}  // namespace

torch::Tensor FusedAdam::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    auto& o = static_cast<torch::optim::AdamOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      torch::Tensor grad = p.grad();
      TORCH_CHECK(!grad.is_sparse(), "Adam does not support sparse gradients");
      // The same state key and layout as torch::optim::Adam, so save/load work.
      const std::string key = c10::guts::to_string(p.unsafeGetTensorImpl());
      auto it = state_.find(key);
      if (it == state_.end()) {
        auto st = std::make_unique<torch::optim::AdamParamState>();
        st->step(0);
        st->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        st->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        if (o.amsgrad()) st->max_exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        it = state_.emplace(key, std::move(st)).first;
      }
      auto& state = static_cast<torch::optim::AdamParamState&>(*it->second);
      state.step(state.step() + 1);
      torch::Tensor& m = state.exp_avg();
      torch::Tensor& v = state.exp_avg_sq();
      const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
      const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(state.step()));
      const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(state.step()));
      const double step_size = o.lr() / bias_correction1;
      if (!o.amsgrad() && FusableAdamParam(p, grad, m, v)) {
        const AdamCoeffs k{static_cast<float>(beta1),
                           static_cast<float>(1 - beta1),
                           static_cast<float>(beta2),
                           static_cast<float>(1 - beta2),
                           static_cast<float>(std::sqrt(bias_correction2)),
                           static_cast<float>(o.eps()),
                           static_cast<float>(-step_size),
                           static_cast<float>(o.weight_decay())};
        float* pp = p.data_ptr<float>();
        const float* gp = grad.data_ptr<float>();
        float* mp = m.data_ptr<float>();
        float* vp = v.data_ptr<float>();
        at::parallel_for(0, p.numel(), at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
          AdamUpdate(pp, gp, mp, vp, begin, end, k);
        });
        continue;
      }
      // Op by op, exactly as torch::optim::Adam.
      if (o.weight_decay() != 0) grad = grad.add(p, o.weight_decay());
      m.mul_(beta1).add_(grad, 1 - beta1);
      v.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
      torch::Tensor denom;
      if (o.amsgrad()) {
        torch::Tensor& max_v = state.max_exp_avg_sq();
        torch::max_out(max_v, max_v, v);
        denom = (max_v.sqrt() / std::sqrt(bias_correction2)).add_(o.eps());
      } else {
        denom = (v.sqrt() / std::sqrt(bias_correction2)).add_(o.eps());
      }
      p.addcdiv_(m, denom, -step_size);
    }
  }
  return loss;
}

Result<StepStats> TrainStep(torch::jit::Module& student, torch::optim::Optimizer& optimizer,
                            const Batch& batch, const StepOptions& options) {
  if (batch.size() == 0) return Status::InvalidArgument("empty batch");
  try {
    student.train();
    // zero_grad with set_to_none: backward then hands its gradient buffers
    // to the parameters instead of zeroing and adding into the old ones.
    for (auto& group : optimizer.param_groups()) {
      for (auto& p : group.params()) {
        if (p.grad().defined()) p.mutable_grad().reset();
      }
    }
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
      std::vector<std::pair<torch::Tensor, torch::Tensor>> layers;
      if (options.direct_builtin_mlp) layers = BuiltinMlpLayers(student);
      logits = layers.empty() ? student.forward({batch.inputs}).toTensor() : MlpForward(layers, batch.inputs);
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

Result<std::unique_ptr<torch::optim::Optimizer>> MakeOptimizer(config::Optimizer kind, double lr,
                                                               std::vector<torch::Tensor> params) {
  if (!(lr > 0)) return Status::InvalidArgument("learning rate must be > 0");
  switch (kind) {
    case config::Optimizer::kAdam:
      return std::unique_ptr<torch::optim::Optimizer>(new FusedAdam(std::move(params), torch::optim::AdamOptions(lr)));
    case config::Optimizer::kSgd:
      return std::unique_ptr<torch::optim::Optimizer>(
          new torch::optim::SGD(std::move(params), torch::optim::SGDOptions(lr).momentum(0.9)));
  }
  return Status::InvalidArgument("unknown optimizer");
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
