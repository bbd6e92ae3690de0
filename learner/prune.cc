// See prune.h.
#include "learner/prune.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "learner/compress_train.h"
#include "learner/evaluate.h"
#include "learner/model/arch.h"
#include "learner/train_step.h"

namespace distilld::learner {
namespace {

torch::Tensor Param(const torch::jit::Module& m, const std::string& name) {
  return m.attr(name).toTensor();
}
std::string Conv(size_t i, const char* what) { return ConvLayerName(i) + "_" + what; }
std::string Fc(size_t i, const char* what) { return HiddenLayerName(i) + "_" + what; }
std::string Out(const char* what) { return std::string(kOutputLayerName) + "_" + what; }

// Activations each later layer reads, computed with the module's own
// parameters: the same arithmetic as the TorchScript built by BuildModel
// (learner/model/arch.cc); compress_prune_test checks the logits agree.
struct Activations {
  std::vector<torch::Tensor> conv;    // after relu + max-pool, [N, C, h, w]
  std::vector<torch::Tensor> hidden;  // after relu, [N, H]
};

Activations Collect(const torch::jit::Module& m, const ArchSpec& spec, const torch::Tensor& x) {
  Activations a;
  torch::Tensor h = x.to(torch::kFloat32);
  if (spec.kind == "cnn") {
    for (size_t i = 0; i < spec.channels.size(); ++i) {
      h = torch::max_pool2d(torch::relu(torch::conv2d(h, Param(m, Conv(i, "weight")), Param(m, Conv(i, "bias")),
                                                      {1, 1}, {1, 1})),
                            {2, 2});
      a.conv.push_back(h);
    }
  }
  h = h.flatten(1);
  for (size_t i = 0; i < spec.hidden.size(); ++i) {
    h = torch::relu(torch::linear(h, Param(m, Fc(i, "weight")), Param(m, Fc(i, "bias"))));
    a.hidden.push_back(h);
  }
  return a;
}

// ||W[:, j]|| for the weights that read unit j of a layer.
torch::Tensor OutgoingNorms(const torch::jit::Module& m, const ArchSpec& spec, bool conv, size_t i) {
  if (conv) {
    if (i + 1 < spec.channels.size()) {
      return Param(m, Conv(i + 1, "weight")).pow(2).sum(std::vector<int64_t>{0, 2, 3}).sqrt();
    }
    torch::Tensor w = Param(m, Fc(0, "weight"));
    return w.reshape({w.size(0), spec.channels[i], -1}).pow(2).sum(std::vector<int64_t>{0, 2}).sqrt();
  }
  const std::string next = i + 1 < spec.hidden.size() ? Fc(i + 1, "weight") : Out("weight");
  return Param(m, next).pow(2).sum(0).sqrt();
}

// Indices of the `keep` highest scores, ascending (keeps the units' order).
torch::Tensor TopIndices(const torch::Tensor& scores, int64_t keep) {
  torch::Tensor idx = std::get<1>(torch::topk(scores, keep, /*dim=*/0, /*largest=*/true, /*sorted=*/false));
  return std::get<0>(torch::sort(idx));
}

bool SameExceptWidths(const ArchSpec& a, const ArchSpec& b) {
  if (a.kind != b.kind || a.input_shape != b.input_shape || a.classes != b.classes) return false;
  if (a.hidden.size() != b.hidden.size()) return false;
  for (size_t i = 0; i < a.hidden.size(); ++i) {
    if (b.hidden[i] > a.hidden[i] || b.hidden[i] < 1) return false;
  }
  if (a.kind == "cnn") {
    if (a.channels.size() != b.channels.size()) return false;
    for (size_t i = 0; i < a.channels.size(); ++i) {
      if (b.channels[i] > a.channels[i] || b.channels[i] < 1) return false;
    }
  }
  return true;
}

ArchSpec Scaled(const ArchSpec& spec, double ratio, int64_t min_width) {
  ArchSpec s = spec;
  auto scale = [&](int64_t w) {
    return std::min(w, std::max(min_width, static_cast<int64_t>(std::llround(static_cast<double>(w) * ratio))));
  };
  for (auto& w : s.hidden) w = scale(w);
  if (s.kind == "cnn") {
    for (auto& c : s.channels) c = scale(c);
  }
  return s;
}

int64_t Cost(const ArchSpec& s, bool by_macs) { return by_macs ? ArchMacs(s) : ArchParameterCount(s); }

double HoldoutAccuracy(torch::jit::Module& m, const Dataset& holdout) {
  auto r = EvaluateTensors(m, holdout.images, holdout.labels, torch::Tensor());
  return r.ok() ? r->accuracy() : 0.0;
}

std::string Widths(const ArchSpec& s) {
  std::ostringstream os;
  if (s.kind == "cnn") {
    os << "channels";
    for (int64_t c : s.channels) os << ' ' << c;
    os << ", ";
  }
  os << "hidden";
  for (int64_t h : s.hidden) os << ' ' << h;
  return os.str();
}

}  // namespace

Result<UnitScores> ScoreUnits(const torch::jit::Module& model, const ArchSpec& spec, const torch::Tensor& inputs,
                              int64_t batch_size) {
  if (!inputs.defined() || inputs.size(0) == 0) return Status::InvalidArgument("no held-out inputs to score on");
  ASSIGN_OR_RETURN(ArchSpec actual, InferArchSpec(model, spec.input_shape));
  if (actual.kind != spec.kind || actual.hidden != spec.hidden ||
      (spec.kind == "cnn" && actual.channels != spec.channels)) {
    return Status::InvalidArgument("module does not match the given ArchSpec");
  }
  try {
    torch::NoGradGuard no_grad;
    const int64_t n = inputs.size(0);
    const int64_t bs = std::max<int64_t>(1, batch_size);
    std::vector<torch::Tensor> conv_sum(spec.kind == "cnn" ? spec.channels.size() : 0);
    std::vector<torch::Tensor> hidden_sum(spec.hidden.size());
    for (int64_t b = 0; b < n; b += bs) {
      Activations a = Collect(model, spec, inputs.slice(0, b, std::min(n, b + bs)));
      for (size_t i = 0; i < a.conv.size(); ++i) {
        // Mean over spatial positions, summed over samples.
        torch::Tensor s = a.conv[i].abs().mean(std::vector<int64_t>{2, 3}).sum(0);
        conv_sum[i] = conv_sum[i].defined() ? conv_sum[i] + s : s;
      }
      for (size_t i = 0; i < a.hidden.size(); ++i) {
        torch::Tensor s = a.hidden[i].abs().sum(0);
        hidden_sum[i] = hidden_sum[i].defined() ? hidden_sum[i] + s : s;
      }
    }
    UnitScores out;
    for (size_t i = 0; i < conv_sum.size(); ++i) {
      out.conv.push_back(conv_sum[i] / static_cast<double>(n) * OutgoingNorms(model, spec, true, i));
    }
    for (size_t i = 0; i < hidden_sum.size(); ++i) {
      out.hidden.push_back(hidden_sum[i] / static_cast<double>(n) * OutgoingNorms(model, spec, false, i));
    }
    return out;
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("scoring units: ") + e.what_without_backtrace());
  }
}

Result<torch::jit::Module> PruneToWidths(const torch::jit::Module& model, const ArchSpec& from,
                                         const UnitScores& scores, const ArchSpec& to) {
  if (!SameExceptWidths(from, to)) {
    return Status::InvalidArgument("target spec must be the source spec with equal or smaller widths");
  }
  if (scores.hidden.size() != from.hidden.size() ||
      (from.kind == "cnn" && scores.conv.size() != from.channels.size())) {
    return Status::InvalidArgument("scores do not match the spec");
  }
  ASSIGN_OR_RETURN(torch::jit::Module out, BuildModel(to, /*seed=*/0));
  try {
    torch::NoGradGuard no_grad;
    auto set = [&](const std::string& name, const torch::Tensor& t) {
      out.setattr(name, t.contiguous().clone().set_requires_grad(true));
    };
    torch::Tensor prev;  // kept indices of the previous stage's units
    if (from.kind == "cnn") {
      for (size_t i = 0; i < from.channels.size(); ++i) {
        torch::Tensor keep = TopIndices(scores.conv[i], to.channels[i]);
        torch::Tensor w = Param(model, Conv(i, "weight")).index_select(0, keep);
        if (prev.defined()) w = w.index_select(1, prev);
        set(Conv(i, "weight"), w);
        set(Conv(i, "bias"), Param(model, Conv(i, "bias")).index_select(0, keep));
        prev = keep;
      }
    }
    for (size_t i = 0; i < from.hidden.size(); ++i) {
      torch::Tensor keep = TopIndices(scores.hidden[i], to.hidden[i]);
      torch::Tensor w = Param(model, Fc(i, "weight")).index_select(0, keep);
      if (i == 0 && from.kind == "cnn") {
        // fc0 reads the flattened [C, h, w] map: keep whole channel blocks.
        const int64_t rows = w.size(0);
        w = w.reshape({rows, from.channels.back(), -1}).index_select(1, prev).reshape({rows, -1});
      } else if (i > 0) {
        w = w.index_select(1, prev);
      }
      set(Fc(i, "weight"), w);
      set(Fc(i, "bias"), Param(model, Fc(i, "bias")).index_select(0, keep));
      prev = keep;
    }
    set(Out("weight"), Param(model, Out("weight")).index_select(1, prev));
    set(Out("bias"), Param(model, Out("bias")));
    out.eval();
    return out;
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("pruning: ") + e.what_without_backtrace());
  }
}

ArchSpec WidthsForBudget(const ArchSpec& spec, int64_t max_cost, bool by_macs, int64_t min_width) {
  // Cost grows monotonically with the ratio; bisect on it.
  double lo = 0.0, hi = 1.0;
  if (Cost(Scaled(spec, hi, min_width), by_macs) <= max_cost) return spec;
  for (int it = 0; it < 40; ++it) {
    const double mid = 0.5 * (lo + hi);
    if (Cost(Scaled(spec, mid, min_width), by_macs) <= max_cost) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return Scaled(spec, lo, min_width);
}

std::string PruneReport::ToText() const {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(4);
  os << "before: " << params_before << " params, " << macs_before << " MACs, accuracy " << accuracy_before << "\n";
  for (size_t k = 0; k < steps.size(); ++k) {
    const PruneStepReport& s = steps[k];
    os << "step " << (k + 1) << ": " << Widths(s.spec) << "; " << s.params << " params, " << s.macs
       << " MACs; accuracy " << s.accuracy_pruned << " pruned -> " << s.accuracy_recovered << " recovered\n";
  }
  os << "after: " << params_after << " params (" << (params_before > 0 ? 100.0 * params_after / params_before : 0)
     << "%), " << macs_after << " MACs\n";
  return os.str();
}

Result<PruneReport> PruneWithRecovery(const PruneOptions& o) {
  if (!(o.target_fraction >= 0.0 && o.target_fraction < 1.0)) {
    return Status::InvalidArgument("target_fraction must be in [0, 1)");
  }
  if (o.steps < 1) return Status::InvalidArgument("steps must be >= 1");
  if (o.holdout.size() == 0) return Status::InvalidArgument("a held-out set is required");
  if (o.recovery_steps > 0 && o.train.size() == 0) return Status::InvalidArgument("recovery needs training data");
  if (o.min_width < 1) return Status::InvalidArgument("min_width must be >= 1");
  at::set_num_threads(std::max(1, o.threads));

  PruneReport report;
  report.spec = o.spec;
  report.params_before = ArchParameterCount(o.spec);
  report.macs_before = ArchMacs(o.spec);
  torch::jit::Module current = o.student.clone();
  current.eval();
  report.accuracy_before = HoldoutAccuracy(current, o.holdout);

  torch::Tensor teacher_logits;
  if (o.teacher != nullptr && o.recovery_steps > 0) {
    o.teacher->eval();
    ASSIGN_OR_RETURN(teacher_logits, ForwardInBatches(*o.teacher, o.train.images, 256));
  }
  const int64_t original = Cost(o.spec, o.by_macs);
  ArchSpec spec = o.spec;
  for (int k = 1; k <= o.steps; ++k) {
    const auto budget = static_cast<int64_t>(static_cast<double>(original) *
                                             (1.0 - o.target_fraction * static_cast<double>(k) / o.steps));
    ArchSpec next = WidthsForBudget(o.spec, budget, o.by_macs, o.min_width);
    // Never grow back a layer an earlier step narrowed further (rounding).
    for (size_t i = 0; i < next.hidden.size(); ++i) next.hidden[i] = std::min(next.hidden[i], spec.hidden[i]);
    for (size_t i = 0; next.kind == "cnn" && i < next.channels.size(); ++i) {
      next.channels[i] = std::min(next.channels[i], spec.channels[i]);
    }
    ASSIGN_OR_RETURN(UnitScores scores, ScoreUnits(current, spec, o.holdout.images));
    ASSIGN_OR_RETURN(torch::jit::Module pruned, PruneToWidths(current, spec, scores, next));
    PruneStepReport step;
    step.spec = next;
    step.params = ArchParameterCount(next);
    step.macs = ArchMacs(next);
    step.accuracy_pruned = HoldoutAccuracy(pruned, o.holdout);

    internal::KdRunOptions run;
    run.steps = o.recovery_steps;
    run.batch_size = o.batch_size;
    run.learning_rate = o.learning_rate;
    run.loss = o.loss;
    run.seed = o.seed + static_cast<uint64_t>(k);
    run.stage = "prune" + std::to_string(k);
    run.progress = o.progress;
    RETURN_IF_ERROR(internal::RunKdSteps(pruned, o.train, teacher_logits, run));
    step.accuracy_recovered = HoldoutAccuracy(pruned, o.holdout);
    report.steps.push_back(step);
    current = pruned;
    spec = next;
  }
  current.eval();
  report.module = current;
  report.spec = spec;
  report.params_after = ArchParameterCount(spec);
  report.macs_after = ArchMacs(spec);
  return report;
}

}  // namespace distilld::learner
