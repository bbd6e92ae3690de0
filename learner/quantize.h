// Quantization of built-in students: quantization-aware training (QAT) with
// LibTorch's fake-quantize ops, and conversion to an int8 serving module.
//
// Weight quantization (both paths, identical arithmetic): symmetric, per
// output channel, scale_c = max|W[c, :]| / qmax with qmax = 127 (8-bit) or 7
// (4-bit), zero point 0. Activation quantization: per tensor, 8-bit unsigned
// over [min(x, 0), max(x, 0)] of the current batch, which is what the
// dynamic int8 kernels do to a layer's input at run time. QAT therefore
// trains against the same rounding the int8 module applies.
//
// Two int8 back ends (Int8Options::kernels):
// - "native" (default): distilld's own operators (learner/int8_kernels.h;
//   AVX2 with a scalar fallback). Every layer runs in int8: linear layers
//   and the CNN's conv stages (3x3 conv + ReLU + 2x2 max-pool, one fused
//   operator each). Weights are int8 tensor buffers, scales and biases float
//   buffers. Faster than float at batch 1 on x86 (docs/benchmarks-compress.md).
//   A saved native module calls distilld::* operators, so only a process
//   that registered them can load it: LoadModel does (RegisterNativeInt8Ops);
//   Python's torch.jit.load cannot without loading this library.
// - "qnnpack": LibTorch's quantized::linear_dynamic with prepacked weights,
//   linear layers only (convolutions stay float: a LibTorch int8 conv needs
//   static, calibrated activation scales). Debian's x86 LibTorch has no
//   FBGEMM, and QNNPACK (written for ARM) is slower than float on x86; use it
//   on ARM boxes (re-measure there) or when the file must load in Python.
// 4-bit weights are stored in int8 containers (values in [-7, 7]) on both
// back ends, so they save accuracy headroom, not bytes.
//
// QNNPACK kernels use LibTorch's process-wide quantized engine.
// UseQuantizedEngine() selects one (FBGEMM if this LibTorch has it, else
// QNNPACK, which Debian's LibTorch provides) and registers the native
// operators; call it once at start-up before creating or loading an int8
// module (the packed weights are re-packed for the current engine when a
// file is loaded). Everything else here is a free function without shared
// state: thread-compatible.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <string>

#include "common/status.h"
#include "learner/idx_dataset.h"
#include "learner/kd_loss.h"
#include "learner/model_builder.h"
#include "learner/offline.h"

namespace distilld::learner {

// Registers the native operators, selects the quantized engine (see above)
// and returns its name ("fbgemm", "qnnpack"). FailedPrecondition if this
// LibTorch has neither.
Result<std::string> UseQuantizedEngine();

struct QatOptions {
  // Weight bits: 8, or 4 for the smallest students. Default 8.
  int weight_bits = 8;
  // Fake-quantize the 8-bit input of every linear layer. Default true; turn
  // off only to study weight rounding alone.
  bool quantize_activations = true;
  // Also fake-quantize conv weights and conv inputs (the latter only with
  // quantize_activations). Default true because the native int8 module (the
  // default) runs convolutions in int8; turn off for a student served with
  // kernels = "qnnpack", which keeps convolutions in float (training against
  // rounding that serving does not apply only costs accuracy).
  bool quantize_conv = true;
};

// A training twin of `student` (a built-in of `spec`) whose forward and
// features run the fake-quantized arithmetic above. It holds the very same
// parameter tensors as `student` (registered, not copied), so optimizing the
// twin trains the student; the student itself stays an ordinary float
// module. Gradients pass the rounding straight through (LibTorch's
// fake-quantize backward). InvalidArgument for bad bits or a spec mismatch.
Result<torch::jit::Module> MakeQatModule(const torch::jit::Module& student, const ArchSpec& spec,
                                         const QatOptions& options = {});

struct QatTrainOptions {
  QatOptions qat;
  // Teacher for the KD term; not owned, may be nullptr (labels only).
  torch::jit::Module* teacher = nullptr;
  Dataset train;          // required
  int64_t steps = 300;    // optimizer steps: "the last part of training"
  int batch_size = 64;
  double learning_rate = 3e-4;  // Adam; lower than from-scratch training because
                                // QAT fine-tunes a trained student
  KdLossOptions loss;
  int threads = 2;
  uint64_t seed = 42;
  ProgressCallback progress;  // stage "qat"; optional
};

// Fine-tunes `student` in place by KD through its QAT twin (blocking, in the
// caller's thread; sets at::set_num_threads(options.threads)). Afterwards the
// student is a float module whose weights quantize well; convert it with
// QuantizeDynamicInt8 (same weight_bits) to serve it.
Status QatFineTune(torch::jit::Module& student, const ArchSpec& spec, const QatTrainOptions& options);

struct Int8Options {
  // 8, or 4 to store weights rounded to the 4-bit grid (see above). Use the
  // bits the student was QAT-trained with.
  int weight_bits = 8;
  // "native" (default; the faster one on x86, measured in
  // docs/benchmarks-compress.md) or "qnnpack" (see above for when).
  std::string kernels = "native";
};

// A new TorchScript module computing `model` (a built-in of `spec`) with
// int8 layers on the chosen back end (forward and features). It saves with
// SaveModelAtomic and loads with LoadModel; a "qnnpack" module also loads in
// Python's torch.jit.load (with the same quantized engine selected), a
// "native" one only where the distilld operators are registered. Returns
// InvalidArgument for bad options or a spec mismatch, Internal if LibTorch
// fails; never throws. "qnnpack" calls UseQuantizedEngine().
Result<torch::jit::Module> QuantizeDynamicInt8(const torch::jit::Module& model, const ArchSpec& spec,
                                               const Int8Options& options = {});

// Elements of the weights and biases held by a float or int8 built-in
// (packed or native int8 weights count one per element; scales do not).
int64_t CountModelWeights(const torch::jit::Module& module);

}  // namespace distilld::learner
