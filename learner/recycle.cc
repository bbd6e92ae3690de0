// See recycle.h. Knows the built-in layouts of model_builder.cc: conv<i>
// (3x3, pad 1, then ReLU and 2x2 max-pool), fc<i> (linear, then ReLU), out.
#include "learner/recycle.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

namespace distilld::learner {
namespace {

struct Layer {
  torch::Tensor weight;  // conv [out, in, 3, 3]; fc and out [out, in]
  torch::Tensor bias;
  bool conv = false;
};

bool HasParam(const torch::jit::Module& m, const std::string& name) {
  return m.hasattr(name) && m.attr(name).isTensor();
}

// The hidden layers in forward order, then the output layer; FailedPrecondition
// when `m` is not a built-in module or its parameters do not chain.
Result<std::vector<Layer>> BuiltInLayers(const torch::jit::Module& m) {
  const auto type_name = m.type()->name();
  const std::string kind = type_name ? type_name->name() : "";
  if (kind != "DistilldMlp" && kind != "DistilldCnn") {
    return Status::FailedPrecondition(
        "recycling dormant units needs a built-in architecture (mlp or cnn), not '" + kind + "'");
  }
  std::vector<Layer> layers;
  for (const char* prefix : {"conv", "fc"}) {
    for (int i = 0; HasParam(m, prefix + std::to_string(i) + "_weight"); ++i) {
      const std::string p = prefix + std::to_string(i);
      if (!HasParam(m, p + "_bias")) return Status::FailedPrecondition(p + " has no bias");
      layers.push_back(
          {m.attr(p + "_weight").toTensor(), m.attr(p + "_bias").toTensor(), prefix[0] == 'c'});
    }
  }
  if (!HasParam(m, "out_weight"))
    return Status::FailedPrecondition("built-in module without out_weight");
  layers.push_back({m.attr("out_weight").toTensor(), m.attr("out_bias").toTensor(), false});
  for (size_t l = 0; l < layers.size(); ++l) {
    const Layer& x = layers[l];
    const bool ok = x.weight.dim() == (x.conv ? 4 : 2) && x.bias.dim() == 1 &&
                    x.bias.size(0) == x.weight.size(0);
    if (!ok) return Status::FailedPrecondition("built-in module with unexpected parameter shapes");
    if (l + 1 < layers.size()) {
      // The next layer reads this one's units: as channels, or (after the
      // last conv's flatten) as equal blocks of columns.
      const Layer& next = layers[l + 1];
      const bool flatten = x.conv && !next.conv;
      const int64_t in = next.weight.size(1), units = x.weight.size(0);
      if (flatten ? in % units != 0 : in != units) {
        return Status::FailedPrecondition("built-in module whose layers do not chain");
      }
    }
  }
  return layers;
}

}  // namespace

Result<RecycleStats> RecycleDormantUnits(torch::jit::Module& module, const torch::Tensor& inputs,
                                         const RecycleOptions& options, std::mt19937_64& rng) {
  ASSIGN_OR_RETURN(std::vector<Layer> layers, BuiltInLayers(module));
  if (!inputs.defined() || inputs.dim() < 2 || inputs.size(0) == 0) {
    return Status::InvalidArgument("recycling dormant units needs a non-empty batch of inputs");
  }
  if (!(options.threshold >= 0)) return Status::InvalidArgument("dormant threshold must be >= 0");
  const size_t hidden = layers.size() - 1;
  RecycleStats stats;
  try {
    torch::NoGradGuard no_grad;
    // Per-unit activation sums over every input (and position, for convs).
    std::vector<torch::Tensor> sums(hidden);
    torch::Tensor measured = inputs;
    if (options.max_inputs > 0 && inputs.size(0) > options.max_inputs) {
      std::vector<int64_t> rows(static_cast<size_t>(inputs.size(0)));
      std::iota(rows.begin(), rows.end(), int64_t{0});
      std::shuffle(rows.begin(), rows.end(), rng);
      rows.resize(static_cast<size_t>(options.max_inputs));
      measured = inputs.index_select(0, torch::tensor(rows, torch::kInt64));
    }
    const int64_t n = measured.size(0), chunk = std::max<int64_t>(1, options.chunk);
    for (int64_t i = 0; i < n; i += chunk) {
      torch::Tensor h = measured.narrow(0, i, std::min(chunk, n - i)).to(torch::kFloat32);
      bool flat = false;
      for (size_t l = 0; l < hidden; ++l) {
        const Layer& x = layers[l];
        if (x.conv) {
          h = torch::max_pool2d(torch::relu(torch::conv2d(h, x.weight, x.bias, 1, 1)), 2);
        } else {
          if (!flat) h = h.flatten(1);
          flat = true;
          h = torch::relu(torch::linear(h, x.weight, x.bias));
        }
        torch::Tensor s = x.conv ? h.sum({0, 2, 3}) : h.sum(0);
        sums[l] = sums[l].defined() ? sums[l] + s : s;
      }
    }
    at::Generator gen = at::detail::createCPUGenerator(rng());
    for (size_t l = 0; l < hidden; ++l) {
      Layer& x = layers[l];
      Layer& next = layers[l + 1];
      const int64_t units = x.weight.size(0);
      // A unit with mean activation <= threshold * the layer's mean; with
      // threshold 0 exactly the units that never fired (a fully dead layer
      // has mean 0 and every unit qualifies).
      std::vector<float> s(sums[l].data_ptr<float>(), sums[l].data_ptr<float>() + units);
      double mean = 0;
      for (float v : s) mean += v;
      mean /= static_cast<double>(units);
      // Columns of `next` fed by one unit: 1, or H*W after a conv's flatten.
      const int64_t block = next.conv ? 1 : next.weight.size(1) / units;
      const double bound = 1.0 / std::sqrt(static_cast<double>(x.weight[0].numel()));
      stats.units += units;
      for (int64_t j = 0; j < units; ++j) {
        if (s[static_cast<size_t>(j)] > options.threshold * mean) continue;
        ++stats.recycled;
        x.weight[j].uniform_(-bound, bound, gen);
        x.bias[j].uniform_(-bound, bound, gen);
        next.weight.narrow(1, j * block, block).zero_();
      }
    }
  } catch (const c10::Error& e) {
    // Mostly inputs of the wrong shape for the module.
    return Status::InvalidArgument(std::string("recycling dormant units: ") +
                                   e.what_without_backtrace());
  }
  return stats;
}

}  // namespace distilld::learner
