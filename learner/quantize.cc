// See quantize.h.
//
// The QAT twin is emitted as TorchScript source that mirrors BuildModel's
// (learner/model/arch.cc). compress_quantize_test checks the twin without
// rounding against the float module, so a drift from BuildModel shows up.
#include "learner/quantize.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <sstream>

#include "learner/compress_train.h"

namespace distilld::learner {
namespace {

using internal::CheckSpec;
using internal::EmitConvs;
using internal::QMax;

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
    const std::string fc = "self." + HiddenLayerName(i);
    src << "        h = torch.relu(torch.linear(self._fq_a(h), self._fq_w(" << fc << "_weight), " << fc << "_bias))\n";
  }
  src << "        return h\n\n"
      << "def forward(self, x):\n"
      << "        return torch.linear(self._fq_a(self.features(x)), self._fq_w(self.out_weight), self.out_bias)\n";
  return src.str();
}

}  // namespace

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

}  // namespace distilld::learner
