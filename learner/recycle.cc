// See recycle.h. Works from the module's parameter list, so it needs no
// knowledge of the architecture: distilld's built-ins (fc0_weight, ...,
// out_weight) and a user's Python module (fc1.weight, bn1.weight, ...) are
// read the same way.
#include "learner/recycle.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

namespace distilld::learner {
namespace {

struct Norm {  // a BatchNorm right after a layer: its affine and running stats
  torch::Tensor weight, bias, running_mean, running_var;
};

struct Layer {
  std::string name;      // parameter prefix, for messages ("fc1.", "conv0_")
  torch::Tensor weight;  // conv [out, in, kh, kw]; linear [out, in]
  torch::Tensor bias;    // may be undefined
  std::optional<Norm> norm;
  bool conv = false;
  int64_t units() const { return weight.size(0); }
};

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string Shape(const torch::Tensor& t) {
  std::string out = "[";
  for (int64_t i = 0; i < t.dim(); ++i) out += (i ? ", " : "") + std::to_string(t.size(i));
  return out + "]";
}

// The layers in parameter order (which for Sequential modules, built-ins and
// modules whose layers are declared in the order forward uses them is forward
// order), checked to chain: each layer reads the previous one's units, as
// channels or, after a conv is flattened, as equal blocks of columns.
// FailedPrecondition, naming the parameter, for anything else.
Result<std::vector<Layer>> ChainedLayers(const torch::jit::Module& m) {
  std::map<std::string, torch::Tensor> params, buffers;
  std::vector<std::string> order;
  for (const auto& p : m.named_parameters(/*recurse=*/true)) {
    params[p.name] = p.value;
    order.push_back(p.name);
  }
  for (const auto& b : m.named_buffers(/*recurse=*/true)) buffers[b.name] = b.value;
  std::vector<Layer> layers;
  for (const std::string& name : order) {
    if (!EndsWith(name, "weight")) {
      if (EndsWith(name, "bias")) continue;  // read with its weight
      return Status::FailedPrecondition("parameter '" + name + "' is not a weight or bias");
    }
    const std::string prefix = name.substr(0, name.size() - 6);
    const torch::Tensor w = params[name];
    auto bias_it = params.find(prefix + "bias");
    const torch::Tensor b = bias_it == params.end() ? torch::Tensor() : bias_it->second;
    if (w.dim() == 1) {
      // A normalisation of the previous layer's units (BatchNorm).
      const bool stats = buffers.count(prefix + "running_mean") && buffers.count(prefix + "running_var");
      if (layers.empty() || layers.back().norm || !stats || w.size(0) != layers.back().units() || !b.defined()) {
        return Status::FailedPrecondition("parameter '" + name + "' of shape " + Shape(w) +
                                          " is not a BatchNorm of the layer before it");
      }
      layers.back().norm = Norm{w, b, buffers[prefix + "running_mean"], buffers[prefix + "running_var"]};
      continue;
    }
    if (w.dim() != 2 && w.dim() != 4) {
      return Status::FailedPrecondition("parameter '" + name + "' of shape " + Shape(w) +
                                        " is neither a linear nor a 2-d convolution weight");
    }
    if (b.defined() && (b.dim() != 1 || b.size(0) != w.size(0))) {
      return Status::FailedPrecondition("parameter '" + prefix + "bias' does not match '" + name + "'");
    }
    layers.push_back({prefix, w, b, std::nullopt, w.dim() == 4});
  }
  if (layers.size() < 2) return Status::FailedPrecondition("the module has no hidden layer to recycle");
  for (size_t l = 0; l + 1 < layers.size(); ++l) {
    const Layer& x = layers[l];
    const Layer& next = layers[l + 1];
    if (!x.conv && next.conv) {
      return Status::FailedPrecondition("'" + next.name + "weight' is a convolution after the linear '" + x.name +
                                        "weight'");
    }
    const int64_t in = next.weight.size(1);
    const bool flatten = x.conv && !next.conv;
    if (flatten ? in % x.units() != 0 : in != x.units()) {
      return Status::FailedPrecondition("'" + next.name + "weight' " + Shape(next.weight) + " does not read the " +
                                        std::to_string(x.units()) + " units of '" + x.name + "weight' " +
                                        Shape(x.weight) + " (layers must be declared in forward order)");
    }
  }
  return layers;
}

// Columns of `next` fed by one unit of the layer before: 1, or H*W after a
// conv's flatten.
int64_t Block(const Layer& x, const Layer& next) { return x.conv && !next.conv ? next.weight.size(1) / x.units() : 1; }

// The tensors recycling may change, copied, so a refusal can put them back.
std::vector<std::pair<torch::Tensor, torch::Tensor>> Snapshot(const std::vector<Layer>& layers) {
  std::vector<std::pair<torch::Tensor, torch::Tensor>> out;
  auto keep = [&](const torch::Tensor& t) {
    if (t.defined()) out.push_back({t, t.detach().clone()});
  };
  for (const Layer& x : layers) {
    keep(x.weight);
    keep(x.bias);
    if (x.norm) {
      keep(x.norm->weight);
      keep(x.norm->bias);
      keep(x.norm->running_mean);
      keep(x.norm->running_var);
    }
  }
  return out;
}

void Restore(const std::vector<std::pair<torch::Tensor, torch::Tensor>>& saved) {
  torch::NoGradGuard no_grad;
  for (const auto& [live, copy] : saved) live.copy_(copy);
}

}  // namespace

Status CheckRecyclable(const torch::jit::Module& module) {
  Result<std::vector<Layer>> layers = ChainedLayers(module);
  return layers.ok() ? Status::Ok() : layers.status();
}

Result<RecycleStats> RecycleDormantUnits(torch::jit::Module& module, const torch::Tensor& inputs,
                                         const RecycleOptions& options, std::mt19937_64& rng) {
  ASSIGN_OR_RETURN(std::vector<Layer> layers, ChainedLayers(module));
  if (!inputs.defined() || inputs.dim() < 2 || inputs.size(0) == 0) {
    return Status::InvalidArgument("recycling dormant units needs a non-empty batch of inputs");
  }
  if (!(options.threshold >= 0)) return Status::InvalidArgument("dormant threshold must be >= 0");
  const size_t hidden = layers.size() - 1;
  const bool was_training = module.is_training();
  // Every tensor whose gradient is read, and whether it wanted one before.
  std::vector<torch::Tensor> watched;
  std::vector<bool> wanted;
  for (const Layer& x : layers) {
    for (const torch::Tensor& t : {x.weight, x.bias}) {
      if (!t.defined()) continue;
      watched.push_back(t);
      wanted.push_back(t.requires_grad());
    }
  }
  auto put_back = [&] {
    for (size_t i = 0; i < watched.size(); ++i) watched[i].requires_grad_(wanted[i]);
    module.train(was_training);
  };
  RecycleStats stats;
  try {
    // Measured as served (BatchNorm on its running statistics, no dropout).
    module.eval();
    for (auto& t : watched) t.requires_grad_(true);
    torch::Tensor measured = inputs;
    if (options.max_inputs > 0 && inputs.size(0) > options.max_inputs) {
      std::vector<int64_t> rows(static_cast<size_t>(inputs.size(0)));
      std::iota(rows.begin(), rows.end(), int64_t{0});
      std::shuffle(rows.begin(), rows.end(), rng);
      rows.resize(static_cast<size_t>(options.max_inputs));
      measured = inputs.index_select(0, torch::tensor(rows, torch::kInt64));
    }
    // A unit is dormant when nothing flows through it: the gradient of a
    // random projection of the outputs reaches neither its incoming weights
    // (it never fires: ReLU' = 0 on every input) nor its outgoing ones (its
    // output is always 0). Unlike reading activations, this needs no
    // knowledge of where forward applies ReLU, BatchNorm or pooling. The
    // projection's generator is fixed and separate from `rng`, so recycling
    // draws from `rng` exactly what it draws to re-initialise units.
    at::Generator projection = at::detail::createCPUGenerator(0x5eed);
    std::vector<torch::Tensor> in_score(hidden), out_score(hidden);
    const int64_t n = measured.size(0), chunk = std::max<int64_t>(1, options.chunk);
    torch::Tensor first_logits;  // of the first chunk, for the function check
    for (int64_t i = 0; i < n; i += chunk) {
      torch::AutoGradMode grad_on(true);
      torch::Tensor x = measured.narrow(0, i, std::min(chunk, n - i)).to(torch::kFloat32);
      torch::IValue out = module.forward({x});
      if (!out.isTensor() || out.toTensor().dim() != 2) {
        put_back();
        return Status::InvalidArgument("recycling dormant units: forward must return [N, classes] logits");
      }
      torch::Tensor logits = out.toTensor();
      if (i == 0) first_logits = logits.detach().clone();
      torch::Tensor r = torch::randn(logits.sizes(), projection, torch::TensorOptions().dtype(logits.dtype()));
      std::vector<torch::Tensor> grads =
          torch::autograd::grad({(logits * r).sum()}, watched, {}, /*retain_graph=*/false,
                                /*create_graph=*/false, /*allow_unused=*/true);
      size_t g = 0;
      for (size_t l = 0; l < layers.size(); ++l) {
        const Layer& layer = layers[l];
        torch::Tensor gw = grads[g++];
        torch::Tensor gb = layer.bias.defined() ? grads[g++] : torch::Tensor();
        if (!gw.defined()) gw = torch::zeros_like(layer.weight);
        // Per unit of this layer: |grad| of its incoming row (and bias) ...
        if (l < hidden) {
          torch::Tensor s = gw.abs().flatten(1).sum(1);
          if (gb.defined()) s = s + gb.abs();
          in_score[l] = in_score[l].defined() ? in_score[l] + s : s;
        }
        // ... and, read from this layer, |grad| of the previous layer's
        // units' outgoing columns.
        if (l > 0) {
          const Layer& prev = layers[l - 1];
          torch::Tensor cols = gw.abs().sum(0);  // [in] or [in, kh, kw]
          if (cols.dim() > 1) cols = cols.flatten(1).sum(1);
          cols = cols.reshape({prev.units(), Block(prev, layer)}).sum(1);
          out_score[l - 1] = out_score[l - 1].defined() ? out_score[l - 1] + cols : cols;
        }
      }
    }
    torch::NoGradGuard no_grad;
    at::Generator gen = at::detail::createCPUGenerator(rng());
    const auto saved = Snapshot(layers);
    for (size_t l = 0; l < hidden; ++l) {
      Layer& x = layers[l];
      Layer& next = layers[l + 1];
      const int64_t units = x.units();
      std::vector<float> in(in_score[l].data_ptr<float>(), in_score[l].data_ptr<float>() + units);
      std::vector<float> out(out_score[l].data_ptr<float>(), out_score[l].data_ptr<float>() + units);
      double mean = 0;
      for (float v : out) mean += v;
      mean /= static_cast<double>(units);
      const int64_t block = Block(x, next);
      const double bound = 1.0 / std::sqrt(static_cast<double>(x.weight[0].numel()));
      stats.units += units;
      for (int64_t j = 0; j < units; ++j) {
        const size_t u = static_cast<size_t>(j);
        // Threshold 0: exactly dead. Above: also units whose outgoing
        // gradient (their activations, weighted by the gradient they feed
        // on) is a small share of their layer's; they lose what they carry,
        // as in ReDo.
        const bool dormant = options.threshold > 0 ? out[u] <= options.threshold * mean : in[u] == 0 && out[u] == 0;
        if (!dormant) continue;
        ++stats.recycled;
        // PyTorch's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        x.weight[j].uniform_(-bound, bound, gen);
        if (x.bias.defined()) x.bias[j].uniform_(-bound, bound, gen);
        if (x.norm) {
          x.norm->weight[j].fill_(1.0);
          x.norm->bias[j].fill_(0.0);
          x.norm->running_mean[j].fill_(0.0);
          x.norm->running_var[j].fill_(1.0);
        }
        next.weight.narrow(1, j * block, block).zero_();
      }
    }
    // Exactly dead units were cut off from the output, so the module must
    // compute what it computed. If not, its forward does not use the layers
    // the way their order and shapes suggest: undo and refuse.
    if (options.threshold == 0 && stats.recycled > 0) {
      torch::Tensor x = measured.narrow(0, 0, std::min(chunk, n)).to(torch::kFloat32);
      torch::Tensor after = module.forward({x}).toTensor();
      if (!torch::allclose(after, first_logits, 1e-5, 1e-6)) {
        Restore(saved);
        put_back();
        return Status::FailedPrecondition(
            "recycling would change the module's outputs: its forward does not use its layers in parameter "
            "order");
      }
    }
  } catch (const c10::Error& e) {
    put_back();
    // Mostly inputs of the wrong shape for the module.
    return Status::InvalidArgument(std::string("recycling dormant units: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {  // the TorchScript interpreter's errors
    put_back();
    return Status::InvalidArgument(std::string("recycling dormant units: ") + e.what());
  }
  put_back();
  return stats;
}

}  // namespace distilld::learner
