// Built-in architectures as TorchScript source plus registered parameters.
// See model_builder.h.
//
// The module is assembled with register_parameter() and define(), so it is a
// plain scripted module: torch.jit.load in Python gets the same code and
// weights, and the C++ optimizer trains its parameters directly.
#include "learner/model_builder.h"

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
    src << "        h = torch.relu(torch.linear(h, self.fc" << i << "_weight, self.fc" << i
        << "_bias))\n";
  }
}

}  // namespace

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
        AddParam(m, "conv" + std::to_string(i) + "_weight", Uniform({out, c, 3, 3}, c * 9, gen));
        AddParam(m, "conv" + std::to_string(i) + "_bias", Uniform({out}, c * 9, gen));
        src << "        h = torch.max_pool2d(torch.relu(torch.conv2d(h, self.conv" << i
            << "_weight, self.conv" << i << "_bias, [1, 1], [1, 1])), [2, 2])\n";
        c = out;
        h /= 2;
        w /= 2;
      }
      width = c * h * w;
      src << "        h = h.flatten(1)\n";
    }
    for (size_t i = 0; i < spec.hidden.size(); ++i) {
      AddParam(m, "fc" + std::to_string(i) + "_weight", Uniform({spec.hidden[i], width}, width, gen));
      AddParam(m, "fc" + std::to_string(i) + "_bias", Uniform({spec.hidden[i]}, width, gen));
      width = spec.hidden[i];
    }
    EmitHidden(src, spec.hidden.size());
    src << "        return h\n\n";
    AddParam(m, "out_weight", Uniform({spec.classes, width}, width, gen));
    AddParam(m, "out_bias", Uniform({spec.classes}, width, gen));
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

}  // namespace distilld::learner
