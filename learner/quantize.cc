// See quantize.h.
//
// Both the QAT twin and the int8 module are emitted as TorchScript source
// that mirrors BuildModel's (model_builder.cc): conv stages of 3x3 conv,
// ReLU, 2x2 max-pool, then flatten, hidden linear+ReLU layers and the `out`
// layer. quantize_test checks the twin without rounding and the int8 module
// against the float module's outputs, so a drift from BuildModel shows up.
#include "learner/quantize.h"

#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/csrc/jit/frontend/sugared_value.h>
#include <torch/torch.h>

#include <algorithm>
#include <sstream>

#include "learner/compress_arch.h"
#include "learner/compress_train.h"
#include "learner/int8_kernels.h"

namespace distilld::learner {
namespace {

int QMax(int bits) { return bits == 4 ? 7 : 127; }

// Module::define's default resolver knows only `torch`; the int8 sources also
// call the `quantized::` (QNNPACK) or `distilld::` (native) operators, which
// Python spells torch.ops.quantized / torch.ops.distilld. Saved files print
// them as ops.<namespace>.*, which a loader resolves if the operators are
// registered in its process.
struct QuantizedOpsResolver : public torch::jit::Resolver {
  std::shared_ptr<torch::jit::SugaredValue> resolveValue(const std::string& name, torch::jit::GraphFunction&,
                                                         const torch::jit::SourceRange&) override {
    if (name == "torch") return std::make_shared<torch::jit::BuiltinModule>("aten");
    if (name == "quantized") return std::make_shared<torch::jit::BuiltinModule>("quantized");
    if (name == "distilld") return std::make_shared<torch::jit::BuiltinModule>("distilld");
    return nullptr;
  }
  torch::jit::TypePtr resolveType(const std::string&, const torch::jit::SourceRange&) override { return nullptr; }
};

std::string Conv(size_t i, const char* what) { return "conv" + std::to_string(i) + "_" + what; }
std::string Fc(size_t i, const char* what) { return "fc" + std::to_string(i) + "_" + what; }

// The checks every entry point shares: the module is a built-in of `spec`.
Status CheckSpec(const torch::jit::Module& m, const ArchSpec& spec) {
  ASSIGN_OR_RETURN(ArchSpec actual, InferArchSpec(m, spec.input_shape));
  if (actual.kind != spec.kind || actual.hidden != spec.hidden || actual.classes != spec.classes ||
      (spec.kind == "cnn" && actual.channels != spec.channels)) {
    return Status::InvalidArgument("module does not match the given ArchSpec");
  }
  return Status::Ok();
}

// Conv stages as in BuildModel; `fq` passes the conv input and weight
// through fake-quant (the QAT twin of native int8 convolutions).
void EmitConvs(std::ostringstream& src, const ArchSpec& spec, bool fq) {
  if (spec.kind != "cnn") return;
  for (size_t i = 0; i < spec.channels.size(); ++i) {
    std::string w = "self." + Conv(i, "weight");
    std::string in = "h";
    if (fq) {
      w = "self._fq_w(" + w + ")";
      in = "self._fq_a(h)";
    }
    src << "        h = torch.max_pool2d(torch.relu(torch.conv2d(" << in << ", " << w << ", self." << Conv(i, "bias")
        << ", [1, 1], [1, 1])), [2, 2])\n";
  }
}

std::string QatSource(const ArchSpec& spec, const QatOptions& o) {
  const int qmax = QMax(o.weight_bits);
  std::ostringstream src;
  // Symmetric per-output-channel weight rounding; scales from the detached
  // weights so the gradient is the straight-through one of the op itself.
  src << "def _fq_w(self, w: Tensor) -> Tensor:\n"
      << "        s = w.detach().abs().flatten(1).amax(1).clamp_min(1e-8) / " << qmax << ".0\n"
      << "        zp = torch.zeros_like(s).int()\n"
      << "        return torch.fake_quantize_per_channel_affine(w, s, zp, 0, " << -qmax << ", " << qmax << ")\n\n";
  // Per-tensor uint8 over [min(x,0), max(x,0)] of this batch, as the dynamic
  // int8 kernels (native and QNNPACK) quantize their input.
  src << "def _fq_a(self, x: Tensor) -> Tensor:\n";
  if (o.quantize_activations) {
    src << "        d = x.detach()\n"
        << "        lo = min(float(d.min()), 0.0)\n"
        << "        hi = max(float(d.max()), 0.0)\n"
        << "        scale = (hi - lo) / 255.0\n"
        << "        if scale <= 0.0:\n"
        << "            return x\n"
        << "        zp = int(round(-lo / scale))\n"
        << "        return torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255)\n\n";
  } else {
    src << "        return x\n\n";
  }
  src << "def features(self, x):\n"
      << "        h = x.float()\n";
  EmitConvs(src, spec, o.quantize_conv);
  src << "        h = h.flatten(1)\n";
  for (size_t i = 0; i < spec.hidden.size(); ++i) {
    src << "        h = torch.relu(torch.linear(self._fq_a(h), self._fq_w(self." << Fc(i, "weight") << "), self."
        << Fc(i, "bias") << "))\n";
  }
  src << "        return h\n\n"
      << "def forward(self, x):\n"
      << "        return torch.linear(self._fq_a(self.features(x)), self._fq_w(self.out_weight), self.out_bias)\n";
  return src.str();
}

// The native int8 module: every conv stage and linear layer is one
// distilld:: operator (conv + ReLU + pool fused, linear + ReLU fused), so a
// batch-1 forward is a handful of interpreter steps.
std::string NativeInt8Source(const ArchSpec& spec) {
  auto args = [](const std::string& p) {
    return "self." + p + "_qweight, self." + p + "_wscale, self." + p + "_bias";
  };
  std::ostringstream src;
  src << "def features(self, x):\n"
      << "        h = x.float()\n";
  if (spec.kind == "cnn") {
    for (size_t i = 0; i < spec.channels.size(); ++i) {
      src << "        h = distilld.conv3x3_relu_pool_int8(h, " << args("conv" + std::to_string(i)) << ")\n";
    }
  }
  src << "        h = h.flatten(1)\n";
  for (size_t i = 0; i < spec.hidden.size(); ++i) {
    src << "        h = distilld.linear_int8(h, " << args("fc" + std::to_string(i)) << ", True)\n";
  }
  src << "        return h\n\n"
      << "def forward(self, x):\n"
      << "        return distilld.linear_int8(self.features(x), " << args("out") << ", False)\n";
  return src.str();
}

std::string Int8Source(const ArchSpec& spec) {
  std::ostringstream src;
  src << "def features(self, x):\n"
      << "        h = x.float()\n";
  EmitConvs(src, spec, false);
  src << "        h = h.flatten(1)\n";
  for (size_t i = 0; i < spec.hidden.size(); ++i) {
    src << "        h = torch.relu(quantized.linear_dynamic(h, self." << Fc(i, "packed") << "))\n";
  }
  src << "        return h\n\n"
      << "def forward(self, x):\n"
      << "        return quantized.linear_dynamic(self.features(x), self.out_packed)\n";
  return src.str();
}

// quantized::linear_prepack(qint8 weight, float bias) -> packed params object.
c10::IValue Prepack(const torch::Tensor& qweight, const torch::Tensor& bias) {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("quantized::linear_prepack", "");
  std::vector<c10::IValue> stack{qweight, c10::optional<at::Tensor>(bias)};
  op.callBoxed(&stack);
  return stack.at(0);
}

// Symmetric per-channel rounding of a [out, in] weight to `bits`, stored as
// qint8 (the same grid QAT's _fq_w trains against).
torch::Tensor QuantizeWeight(const torch::Tensor& w, int bits) {
  const int qmax = QMax(bits);
  torch::Tensor scale = (w.abs().amax(1).clamp_min(1e-8) / static_cast<double>(qmax)).to(torch::kDouble);
  torch::Tensor zp = torch::zeros({w.size(0)}, torch::kLong);
  if (bits == 8) return torch::quantize_per_channel(w, scale, zp, 0, torch::kQInt8);
  // 4-bit: clamp the rounded values to [-7, 7] before storing.
  torch::Tensor q = torch::clamp(torch::round(w / scale.to(torch::kFloat32).unsqueeze(1)), -qmax, qmax);
  return torch::quantize_per_channel(q * scale.to(torch::kFloat32).unsqueeze(1), scale, zp, 0, torch::kQInt8);
}

}  // namespace

Result<std::string> UseQuantizedEngine() {
  try {
    RegisterNativeInt8Ops();  // cheap after the first call; see quantize.h
    const auto& supported = at::globalContext().supportedQEngines();
    for (at::QEngine e : {at::QEngine::FBGEMM, at::QEngine::QNNPACK}) {
      if (std::find(supported.begin(), supported.end(), e) != supported.end()) {
        if (at::globalContext().qEngine() != e) at::globalContext().setQEngine(e);
        return std::string(e == at::QEngine::FBGEMM ? "fbgemm" : "qnnpack");
      }
    }
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("selecting quantized engine: ") + e.what_without_backtrace());
  }
  return Status::FailedPrecondition("this LibTorch has neither the FBGEMM nor the QNNPACK quantized engine");
}

Result<torch::jit::Module> MakeQatModule(const torch::jit::Module& student, const ArchSpec& spec,
                                         const QatOptions& options) {
  if (options.weight_bits != 8 && options.weight_bits != 4) {
    return Status::InvalidArgument("weight_bits must be 8 or 4");
  }
  RETURN_IF_ERROR(CheckSpec(student, spec));
  try {
    torch::jit::Module twin(spec.kind == "mlp" ? "DistilldMlpQat" : "DistilldCnnQat");
    for (const auto& p : student.named_parameters(/*recurse=*/false)) {
      torch::Tensor t = p.value;
      if (!t.requires_grad()) t.requires_grad_(true);
      twin.register_parameter(p.name, t, /*is_buffer=*/false);
    }
    twin.define(QatSource(spec, options));
    twin.train();
    return twin;
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("building QAT module: ") + e.what_without_backtrace());
  }
}

Status QatFineTune(torch::jit::Module& student, const ArchSpec& spec, const QatTrainOptions& o) {
  if (o.train.size() == 0) return Status::InvalidArgument("QAT needs training data");
  at::set_num_threads(std::max(1, o.threads));
  // The optimizer needs leaf tensors; a deepcopy()'d or computed module may
  // hold non-leaves, so re-seat those as detached leaves first.
  for (const auto& p : student.named_parameters(/*recurse=*/false)) {
    if (!p.value.is_leaf()) student.setattr(p.name, p.value.detach().clone().set_requires_grad(true));
  }
  ASSIGN_OR_RETURN(torch::jit::Module twin, MakeQatModule(student, spec, o.qat));
  torch::Tensor teacher_logits;
  if (o.teacher != nullptr) {
    try {
      torch::NoGradGuard no_grad;
      o.teacher->eval();
      std::vector<torch::Tensor> parts;
      for (int64_t b = 0; b < o.train.size(); b += 256) {
        parts.push_back(o.teacher->forward({o.train.images.slice(0, b, b + 256)}).toTensor());
      }
      teacher_logits = torch::cat(parts);
    } catch (const c10::Error& e) {
      return Status::InvalidArgument(std::string("teacher forward: ") + e.what_without_backtrace());
    }
  }
  internal::KdRunOptions run;
  run.steps = o.steps;
  run.batch_size = o.batch_size;
  run.learning_rate = o.learning_rate;
  run.loss = o.loss;
  run.seed = o.seed;
  run.stage = "qat";
  run.progress = o.progress;
  RETURN_IF_ERROR(internal::RunKdSteps(twin, o.train, teacher_logits, run));
  student.eval();
  return Status::Ok();
}

namespace {

Result<torch::jit::Module> NativeInt8(const torch::jit::Module& model, const ArchSpec& spec,
                                      const Int8Options& options) {
  RegisterNativeInt8Ops();
  try {
    torch::NoGradGuard no_grad;
    torch::jit::Module m(spec.kind == "mlp" ? "DistilldMlpInt8Native" : "DistilldCnnInt8Native");
    auto add_layer = [&](const std::string& prefix) {
      auto [q, scale] = QuantizeWeightSymmetric(model.attr(prefix + "_weight").toTensor(), options.weight_bits);
      m.register_buffer(prefix + "_qweight", q);
      m.register_buffer(prefix + "_wscale", scale);
      m.register_buffer(prefix + "_bias",
                        model.attr(prefix + "_bias").toTensor().detach().to(torch::kFloat).contiguous().clone());
    };
    if (spec.kind == "cnn") {
      for (size_t i = 0; i < spec.channels.size(); ++i) add_layer("conv" + std::to_string(i));
    }
    for (size_t i = 0; i < spec.hidden.size(); ++i) add_layer("fc" + std::to_string(i));
    add_layer("out");
    m.define(NativeInt8Source(spec), std::make_shared<QuantizedOpsResolver>());
    m.eval();
    return m;
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("int8 conversion (native): ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("int8 conversion (native): ") + e.what());
  }
}

Result<torch::jit::Module> QnnpackInt8(const torch::jit::Module& model, const ArchSpec& spec,
                                       const Int8Options& options) {
  ASSIGN_OR_RETURN(std::string engine, UseQuantizedEngine());
  try {
    torch::NoGradGuard no_grad;
    torch::jit::Module m(spec.kind == "mlp" ? "DistilldMlpInt8" : "DistilldCnnInt8");
    auto param = [&](const std::string& name) { return model.attr(name).toTensor().detach().contiguous(); };
    if (spec.kind == "cnn") {
      for (size_t i = 0; i < spec.channels.size(); ++i) {
        m.register_parameter(Conv(i, "weight"), param(Conv(i, "weight")).clone(), false);
        m.register_parameter(Conv(i, "bias"), param(Conv(i, "bias")).clone(), false);
      }
    }
    auto add_linear = [&](const std::string& prefix) {
      c10::IValue packed = Prepack(QuantizeWeight(param(prefix + "_weight"), options.weight_bits),
                                   param(prefix + "_bias").clone());
      m.register_attribute(prefix + "_packed", packed.type(), packed);
    };
    for (size_t i = 0; i < spec.hidden.size(); ++i) add_linear("fc" + std::to_string(i));
    add_linear("out");
    m.define(Int8Source(spec), std::make_shared<QuantizedOpsResolver>());
    m.eval();
    return m;
  } catch (const c10::Error& e) {
    return Status::Internal("int8 conversion (" + engine + "): " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::Internal("int8 conversion (" + engine + "): " + e.what());
  }
}

}  // namespace

Result<torch::jit::Module> QuantizeDynamicInt8(const torch::jit::Module& model, const ArchSpec& spec,
                                               const Int8Options& options) {
  if (options.weight_bits != 8 && options.weight_bits != 4) {
    return Status::InvalidArgument("weight_bits must be 8 or 4");
  }
  if (options.kernels != "native" && options.kernels != "qnnpack") {
    return Status::InvalidArgument("int8 kernels must be \"native\" or \"qnnpack\", got \"" + options.kernels + "\"");
  }
  RETURN_IF_ERROR(CheckSpec(model, spec));
  if (options.kernels == "native") return NativeInt8(model, spec, options);
  return QnnpackInt8(model, spec, options);
}

int64_t CountModelWeights(const torch::jit::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  // Native int8 modules hold weights and biases as buffers (scales are not
  // weights).
  for (const auto& b : module.named_buffers(/*recurse=*/false)) {
    const std::string& name = b.name;
    auto ends_with = [&](const std::string& suffix) {
      return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (ends_with("_qweight") || ends_with("_bias")) n += b.value.numel();
  }
  static const c10::OperatorHandle unpack =
      c10::Dispatcher::singleton().findSchemaOrThrow("quantized::linear_unpack", "");
  for (const auto& a : module.named_attributes(/*recurse=*/false)) {
    if (!a.value.isObject() || a.name.size() < 7 || a.name.substr(a.name.size() - 7) != "_packed") continue;
    std::vector<c10::IValue> stack{a.value};
    unpack.callBoxed(&stack);
    n += stack.at(0).toTensor().numel();
    if (stack.size() > 1 && stack.at(1).isTensor()) n += stack.at(1).toTensor().numel();
  }
  return n;
}

}  // namespace distilld::learner
