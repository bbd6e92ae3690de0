// Built-in student (and demo teacher) architectures: one typed description
// of their layers (ArchSpec, ArchLayers), the builder, and the inverse that
// recovers a spec from a module's parameters.
//
// Every built-in module takes float input [N, C, H, W] in [0, 1] and returns
// logits [N, classes] from forward(). It also has a method `features` that
// returns the last hidden activation [N, width], for feature distillation.
// Its parameters are named after ArchLayers(): <layer>_weight and
// <layer>_bias for layers conv<i>, fc<i> and out. Code that reads or
// rewrites a built-in's parameters (pruning, int8, recycling, the training
// step) takes the names from here, not from its own string literals.
//
// Free functions, no shared state: thread-safe.
#pragma once

#include <torch/script.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace distilld::learner {

struct ArchSpec {
  std::string kind = "mlp";                        // "mlp" or "cnn"
  std::vector<int64_t> input_shape = {1, 28, 28};  // per sample (C, H, W)
  int64_t classes = 10;
  std::vector<int64_t> hidden = {64};              // mlp: hidden widths; cnn: widths after convs
  std::vector<int64_t> channels = {16, 32};        // cnn: 3x3 conv + ReLU + 2x2 max-pool each
};

enum class LayerKind {
  kConv,    // 3x3 same conv + ReLU + 2x2 max-pool (cnn only)
  kHidden,  // linear + ReLU
  kOutput,  // linear producing the logits
};

// One weighted layer of a built-in, in forward order.
struct ArchLayer {
  LayerKind kind = LayerKind::kHidden;
  size_t index = 0;     // position among the layers of its kind
  std::string name;     // "conv<i>", "fc<i>" or "out"
  int64_t inputs = 0;   // conv: input channels; linear: input features
  int64_t outputs = 0;  // conv: output channels; linear: output features

  std::string weight() const { return name + "_weight"; }
  std::string bias() const { return name + "_bias"; }
};

std::string ConvLayerName(size_t i);    // "conv<i>"
std::string HiddenLayerName(size_t i);  // "fc<i>"
inline constexpr const char kOutputLayerName[] = "out";

// The layers of a built-in of `spec`: convs, hidden linears, output. The
// spec must be valid (BuildModel would accept it).
std::vector<ArchLayer> ArchLayers(const ArchSpec& spec);

// Feature width entering the first hidden linear layer (after flattening).
int64_t FlatWidth(const ArchSpec& spec);

// InvalidArgument for an unknown kind or a non-positive size. Weights are
// initialised from `seed` (deterministic) like PyTorch's nn.Linear/Conv2d.
Result<torch::jit::Module> BuildModel(const ArchSpec& spec, uint64_t seed);

// Reads the layer parameters of a module built by BuildModel (any widths)
// and returns its spec; input_shape (C, H, W) cannot be recovered from a
// flattening MLP alone, so the caller passes it. InvalidArgument if the
// module is not a built-in (missing or inconsistent parameters).
Result<ArchSpec> InferArchSpec(const torch::jit::Module& module, const std::vector<int64_t>& input_shape);

// Elements of all weights and biases a built-in of `spec` holds (what
// CountParameters reports for the float module; also the count behind an
// int8 module, whose packed weights are not parameters).
int64_t ArchParameterCount(const ArchSpec& spec);

// Multiply-accumulates of one forward pass of one sample.
int64_t ArchMacs(const ArchSpec& spec);

}  // namespace distilld::learner
