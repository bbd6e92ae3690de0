// See int8.h.
//
// The int8 module is emitted as TorchScript source that mirrors BuildModel's
// (arch.cc): conv stages, flatten, hidden linear+ReLU layers and the `out`
// layer. compress_quantize_test checks it against the float module's
// outputs, so a drift from BuildModel shows up.
#include "learner/model/int8.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/csrc/jit/frontend/sugared_value.h>
#include <torch/torch.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "learner/model/int8_kernels.h"

namespace distilld::learner {
namespace internal {

int QMax(int bits) { return bits == 4 ? 7 : 127; }

Status CheckSpec(const torch::jit::Module& m, const ArchSpec& spec) {
  ASSIGN_OR_RETURN(ArchSpec actual, InferArchSpec(m, spec.input_shape));
  if (actual.kind != spec.kind || actual.hidden != spec.hidden || actual.classes != spec.classes ||
      (spec.kind == "cnn" && actual.channels != spec.channels)) {
    return Status::InvalidArgument("module does not match the given ArchSpec");
  }
  return Status::Ok();
}

void EmitConvs(std::ostringstream& src, const ArchSpec& spec, bool fake_quantize) {
  if (spec.kind != "cnn") return;
  for (size_t i = 0; i < spec.channels.size(); ++i) {
    const std::string conv = "self." + ConvLayerName(i);
    std::string w = conv + "_weight";
    std::string in = "h";
    if (fake_quantize) {
      w = "self._fq_w(" + w + ")";
      in = "self._fq_a(h)";
    }
    src << "        h = torch.max_pool2d(torch.relu(torch.conv2d(" << in << ", " << w << ", " << conv
        << "_bias, [1, 1], [1, 1])), [2, 2])\n";
  }
}

}  // namespace internal

namespace {

using internal::CheckSpec;
using internal::EmitConvs;
using internal::QMax;

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
      src << "        h = distilld.conv3x3_relu_pool_int8(h, " << args(ConvLayerName(i)) << ")\n";
    }
  }
  src << "        h = h.flatten(1)\n";
  for (size_t i = 0; i < spec.hidden.size(); ++i) {
    src << "        h = distilld.linear_int8(h, " << args(HiddenLayerName(i)) << ", True)\n";
  }
  src << "        return h\n\n"
      << "def forward(self, x):\n"
      << "        return distilld.linear_int8(self.features(x), " << args(kOutputLayerName) << ", False)\n";
  return src.str();
}

std::string Int8Source(const ArchSpec& spec) {
  std::ostringstream src;
  src << "def features(self, x):\n"
      << "        h = x.float()\n";
  EmitConvs(src, spec, false);
  src << "        h = h.flatten(1)\n";
  for (size_t i = 0; i < spec.hidden.size(); ++i) {
    src << "        h = torch.relu(quantized.linear_dynamic(h, self." << HiddenLayerName(i) << "_packed" << "))\n";
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
    for (const ArchLayer& layer : ArchLayers(spec)) add_layer(layer.name);
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
        const std::string conv = ConvLayerName(i);
        m.register_parameter(conv + "_weight", param(conv + "_weight").clone(), false);
        m.register_parameter(conv + "_bias", param(conv + "_bias").clone(), false);
      }
    }
    auto add_linear = [&](const std::string& prefix) {
      c10::IValue packed = Prepack(QuantizeWeight(param(prefix + "_weight"), options.weight_bits),
                                   param(prefix + "_bias").clone());
      m.register_attribute(prefix + "_packed", packed.type(), packed);
    };
    for (const ArchLayer& layer : ArchLayers(spec)) {
      if (layer.kind != LayerKind::kConv) add_linear(layer.name);
    }
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
