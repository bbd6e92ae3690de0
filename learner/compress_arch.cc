// See compress_arch.h.
#include "learner/compress_arch.h"

#include <string>

namespace distilld::learner {
namespace {

// Feature width entering the first fully connected layer and, per conv
// stage, its output spatial size (3x3 same conv, then 2x2 max-pool).
int64_t FlatWidth(const ArchSpec& spec) {
  if (spec.kind == "mlp") return spec.input_shape[0] * spec.input_shape[1] * spec.input_shape[2];
  int64_t h = spec.input_shape[1], w = spec.input_shape[2];
  for (size_t i = 0; i < spec.channels.size(); ++i) {
    h /= 2;
    w /= 2;
  }
  return spec.channels.back() * h * w;
}

}  // namespace

Result<ArchSpec> InferArchSpec(const torch::jit::Module& module, const std::vector<int64_t>& input_shape) {
  if (input_shape.size() != 3) return Status::InvalidArgument("input_shape must be (C, H, W)");
  ArchSpec spec;
  spec.input_shape = input_shape;
  spec.channels.clear();
  spec.hidden.clear();
  try {
    for (int i = 0;; ++i) {
      const std::string name = "conv" + std::to_string(i) + "_weight";
      if (!module.hasattr(name)) break;
      spec.channels.push_back(module.attr(name).toTensor().size(0));
    }
    for (int i = 0;; ++i) {
      const std::string name = "fc" + std::to_string(i) + "_weight";
      if (!module.hasattr(name)) break;
      spec.hidden.push_back(module.attr(name).toTensor().size(0));
    }
    if (!module.hasattr("out_weight") || spec.hidden.empty()) {
      return Status::InvalidArgument("not a built-in model (no fc0_weight/out_weight)");
    }
    spec.kind = spec.channels.empty() ? "mlp" : "cnn";
    spec.classes = module.attr("out_weight").toTensor().size(0);
    // Cross-check every shape against what BuildModel would create.
    int64_t c = input_shape[0];
    if (spec.kind == "cnn") {
      for (size_t i = 0; i < spec.channels.size(); ++i) {
        torch::Tensor w = module.attr("conv" + std::to_string(i) + "_weight").toTensor();
        if (w.dim() != 4 || w.size(1) != c || w.size(2) != 3 || w.size(3) != 3) {
          return Status::InvalidArgument("conv" + std::to_string(i) + "_weight has an unexpected shape");
        }
        c = spec.channels[i];
      }
    }
    int64_t width = FlatWidth(spec);
    for (size_t i = 0; i < spec.hidden.size(); ++i) {
      torch::Tensor w = module.attr("fc" + std::to_string(i) + "_weight").toTensor();
      if (w.dim() != 2 || w.size(1) != width) {
        return Status::InvalidArgument("fc" + std::to_string(i) + "_weight has " +
                                       std::to_string(w.dim() == 2 ? w.size(1) : -1) + " inputs, expected " +
                                       std::to_string(width) + " for input shape and channels");
      }
      width = spec.hidden[i];
    }
    torch::Tensor ow = module.attr("out_weight").toTensor();
    if (ow.dim() != 2 || ow.size(1) != width) return Status::InvalidArgument("out_weight has an unexpected shape");
    return spec;
  } catch (const c10::Error& e) {
    return Status::InvalidArgument(std::string("not a built-in model: ") + e.what_without_backtrace());
  }
}

int64_t ArchParameterCount(const ArchSpec& spec) {
  int64_t n = 0;
  if (spec.kind == "cnn") {
    int64_t c = spec.input_shape[0];
    for (int64_t out : spec.channels) {
      n += out * c * 9 + out;
      c = out;
    }
  }
  int64_t width = FlatWidth(spec);
  for (int64_t h : spec.hidden) {
    n += h * width + h;
    width = h;
  }
  return n + spec.classes * width + spec.classes;
}

int64_t ArchMacs(const ArchSpec& spec) {
  int64_t n = 0;
  if (spec.kind == "cnn") {
    int64_t c = spec.input_shape[0], h = spec.input_shape[1], w = spec.input_shape[2];
    for (int64_t out : spec.channels) {
      n += h * w * out * c * 9;
      c = out;
      h /= 2;
      w /= 2;
    }
  }
  int64_t width = FlatWidth(spec);
  for (int64_t h : spec.hidden) {
    n += h * width;
    width = h;
  }
  return n + spec.classes * width;
}

}  // namespace distilld::learner
