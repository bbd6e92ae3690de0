// Built-in architectures as TorchScript source plus registered parameters.
// See arch.h.
//
// The module is assembled with register_parameter() and define(), so it is a
// plain scripted module: torch.jit.load in Python gets the same code and
// weights, and the C++ optimizer trains its parameters directly.
#include "learner/model/arch.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <sstream>

namespace distilld::learner {
namespace {

// PyTorch's default nn.Linear/nn.Conv2d initialisation (kaiming_uniform with
// a=sqrt(5) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and
// biases), so built-ins train like their Python twins.
torch::Tensor Uniform(at::IntArrayRef shape, int64_t fan_in, at::Generator& gen) {
  double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  torch::Tensor t = torch::empty(shape, torch::kFloat32);
  t.uniform_(-bound, bound, gen);
  return t.set_requires_grad(true);
}

void AddParam(torch::jit::Module& m, const std::string& name, torch::Tensor t) {
  m.register_parameter(name, std::move(t), /*is_buffer=*/false);
}

Status CheckPositive(const std::vector<int64_t>& v, const char* what) {
  for (int64_t x : v) {
    if (x <= 0) return Status::InvalidArgument(std::string(what) + " must be positive");
  }
  return Status::Ok();
}

// Emits the hidden linear layers shared by both kinds: h -> relu(linear(h)).
void EmitHidden(std::ostringstream& src, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    const std::string fc = HiddenLayerName(i);
    src << "        h = torch.relu(torch.linear(h, self." << fc << "_weight, self." << fc << "_bias))\n";
  }
}

}  // namespace

std::string ConvLayerName(size_t i) { return "conv" + std::to_string(i); }
std::string HiddenLayerName(size_t i) { return "fc" + std::to_string(i); }

int64_t FlatWidth(const ArchSpec& spec) {
  if (spec.kind == "mlp") return spec.input_shape[0] * spec.input_shape[1] * spec.input_shape[2];
  int64_t h = spec.input_shape[1], w = spec.input_shape[2];
  for (size_t i = 0; i < spec.channels.size(); ++i) {
    h /= 2;
    w /= 2;
  }
  return spec.channels.back() * h * w;
}

std::vector<ArchLayer> ArchLayers(const ArchSpec& spec) {
  std::vector<ArchLayer> layers;
  if (spec.kind == "cnn") {
    int64_t c = spec.input_shape[0];
    for (size_t i = 0; i < spec.channels.size(); ++i) {
      layers.push_back({LayerKind::kConv, i, ConvLayerName(i), c, spec.channels[i]});
      c = spec.channels[i];
    }
  }
  int64_t width = FlatWidth(spec);
  for (size_t i = 0; i < spec.hidden.size(); ++i) {
    layers.push_back({LayerKind::kHidden, i, HiddenLayerName(i), width, spec.hidden[i]});
    width = spec.hidden[i];
  }
  layers.push_back({LayerKind::kOutput, 0, kOutputLayerName, width, spec.classes});
  return layers;
}

Result<torch::jit::Module> BuildModel(const ArchSpec& spec, uint64_t seed) {
  if (spec.kind != "mlp" && spec.kind != "cnn") {
    return Status::InvalidArgument("unknown architecture kind '" + spec.kind + "' (want mlp or cnn)");
  }
  if (spec.input_shape.size() != 3) {
    return Status::InvalidArgument("input_shape must be (C, H, W)");
  }
  RETURN_IF_ERROR(CheckPositive(spec.input_shape, "input_shape"));
  RETURN_IF_ERROR(CheckPositive(spec.hidden, "hidden widths"));
  RETURN_IF_ERROR(CheckPositive(spec.channels, "channels"));
  if (spec.classes <= 1) return Status::InvalidArgument("classes must be at least 2");

  try {
    at::Generator gen = at::detail::createCPUGenerator(seed);
    torch::NoGradGuard no_grad;
    torch::jit::Module m(spec.kind == "mlp" ? "DistilldMlp" : "DistilldCnn");
    std::ostringstream src;
    src << "def features(self, x):\n";
    src << "        h = x.float()\n";
    int64_t width = 0;
    if (spec.kind == "mlp") {
      width = spec.input_shape[0] * spec.input_shape[1] * spec.input_shape[2];
      src << "        h = h.flatten(1)\n";
    } else {
      int64_t c = spec.input_shape[0], h = spec.input_shape[1], w = spec.input_shape[2];
      for (size_t i = 0; i < spec.channels.size(); ++i) {
        int64_t out = spec.channels[i];
        if (h < 2 || w < 2) {
          return Status::InvalidArgument("too many conv stages for input " + std::to_string(h) + "x" +
                                         std::to_string(w));
        }
        const std::string conv = ConvLayerName(i);
        AddParam(m, conv + "_weight", Uniform({out, c, 3, 3}, c * 9, gen));
        AddParam(m, conv + "_bias", Uniform({out}, c * 9, gen));
        src << "        h = torch.max_pool2d(torch.relu(torch.conv2d(h, self." << conv << "_weight, self." << conv
            << "_bias, [1, 1], [1, 1])), [2, 2])\n";
        c = out;
        h /= 2;
        w /= 2;
      }
      width = c * h * w;
      src << "        h = h.flatten(1)\n";
    }
    for (size_t i = 0; i < spec.hidden.size(); ++i) {
      AddParam(m, HiddenLayerName(i) + "_weight", Uniform({spec.hidden[i], width}, width, gen));
      AddParam(m, HiddenLayerName(i) + "_bias", Uniform({spec.hidden[i]}, width, gen));
      width = spec.hidden[i];
    }
    EmitHidden(src, spec.hidden.size());
    src << "        return h\n\n";
    AddParam(m, std::string(kOutputLayerName) + "_weight", Uniform({spec.classes, width}, width, gen));
    AddParam(m, std::string(kOutputLayerName) + "_bias", Uniform({spec.classes}, width, gen));
    src << "def forward(self, x):\n";
    src << "        return torch.linear(self.features(x), self.out_weight, self.out_bias)\n";
    m.define(src.str());
    m.eval();
    return m;
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("building ") + spec.kind + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("building ") + spec.kind + ": " + e.what());
  }
}

Result<ArchSpec> InferArchSpec(const torch::jit::Module& module, const std::vector<int64_t>& input_shape) {
  if (input_shape.size() != 3) return Status::InvalidArgument("input_shape must be (C, H, W)");
  ArchSpec spec;
  spec.input_shape = input_shape;
  spec.channels.clear();
  spec.hidden.clear();
  try {
    for (size_t i = 0; module.hasattr(ConvLayerName(i) + "_weight"); ++i) {
      spec.channels.push_back(module.attr(ConvLayerName(i) + "_weight").toTensor().size(0));
    }
    for (size_t i = 0; module.hasattr(HiddenLayerName(i) + "_weight"); ++i) {
      spec.hidden.push_back(module.attr(HiddenLayerName(i) + "_weight").toTensor().size(0));
    }
    const std::string out_weight = std::string(kOutputLayerName) + "_weight";
    if (!module.hasattr(out_weight) || spec.hidden.empty()) {
      return Status::InvalidArgument("not a built-in model (no fc0_weight/out_weight)");
    }
    spec.kind = spec.channels.empty() ? "mlp" : "cnn";
    spec.classes = module.attr(out_weight).toTensor().size(0);
    // Cross-check every shape against what BuildModel would create.
    for (const ArchLayer& layer : ArchLayers(spec)) {
      const torch::Tensor w = module.attr(layer.weight()).toTensor();
      if (layer.kind == LayerKind::kConv) {
        if (w.dim() != 4 || w.size(1) != layer.inputs || w.size(2) != 3 || w.size(3) != 3) {
          return Status::InvalidArgument(layer.weight() + " has an unexpected shape");
        }
      } else if (w.dim() != 2 || w.size(1) != layer.inputs) {
        return Status::InvalidArgument(layer.weight() + " has " + std::to_string(w.dim() == 2 ? w.size(1) : -1) +
                                       " inputs, expected " + std::to_string(layer.inputs) +
                                       " for input shape and channels");
      }
    }
    return spec;
  } catch (const c10::Error& e) {
    return Status::InvalidArgument(std::string("not a built-in model: ") + e.what_without_backtrace());
  }
}

int64_t ArchParameterCount(const ArchSpec& spec) {
  int64_t n = 0;
  for (const ArchLayer& layer : ArchLayers(spec)) {
    const int64_t fan_in = layer.kind == LayerKind::kConv ? layer.inputs * 9 : layer.inputs;
    n += layer.outputs * fan_in + layer.outputs;
  }
  return n;
}

int64_t ArchMacs(const ArchSpec& spec) {
  int64_t n = 0;
  int64_t h = spec.input_shape[1], w = spec.input_shape[2];
  for (const ArchLayer& layer : ArchLayers(spec)) {
    if (layer.kind == LayerKind::kConv) {
      n += h * w * layer.outputs * layer.inputs * 9;
      h /= 2;
      w /= 2;
    } else {
      n += layer.outputs * layer.inputs;
    }
  }
  return n;
}

}  // namespace distilld::learner
