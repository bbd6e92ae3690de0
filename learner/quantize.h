// Quantization of built-in students: quantization-aware training (QAT) with
// LibTorch's fake-quantize ops, and conversion to an int8 serving module with
// dynamically quantized linear layers.
//
// Weight quantization (both paths, identical arithmetic): symmetric, per
// output channel, scale_c = max|W[c, :]| / qmax with qmax = 127 (8-bit) or 7
// (4-bit), zero point 0. Activation quantization: per tensor, 8-bit unsigned
// over [min(x, 0), max(x, 0)] of the current batch, which is what the
// dynamic int8 kernel does to a linear layer's input at run time. QAT
// therefore trains against the same rounding the int8 module applies.
//
// What runs in int8: every linear layer (fc<i> and out) through
// quantized::linear_dynamic with prepacked weights. Convolutions stay float:
// an int8 conv needs static activation quantization (calibrated scales),
// which is not implemented; for the small built-in CNNs most bytes are in
// the linear layers anyway. 4-bit weights are stored in int8 containers
// (values in [-7, 7]), so they save accuracy headroom, not bytes.
//
// Quantized kernels use LibTorch's process-wide quantized engine.
// UseQuantizedEngine() selects one (FBGEMM if this LibTorch has it, else
// QNNPACK, which Debian's LibTorch provides); call it once at start-up
// before creating or loading an int8 module (the packed weights are
// re-packed for the current engine when a file is loaded). Everything else
// here is a free function without shared state: thread-compatible.
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

// Selects the quantized engine (see above) and returns its name ("fbgemm",
// "qnnpack"). FailedPrecondition if this LibTorch has neither.
Result<std::string> UseQuantizedEngine();

struct QatOptions {
  // Weight bits: 8, or 4 for the smallest students. Default 8.
  int weight_bits = 8;
  // Fake-quantize the 8-bit input of every linear layer. Default true; turn
  // off only to study weight rounding alone.
  bool quantize_activations = true;
  // Also fake-quantize conv weights. Default false because the int8 module
  // keeps convolutions in float (training against rounding that serving does
  // not apply only costs accuracy).
  bool quantize_conv = false;
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
};

// A new TorchScript module computing `model` (a built-in of `spec`) with
// int8 dynamically quantized linear layers (forward and features). It saves
// with SaveModelAtomic and loads with LoadModel or Python's torch.jit.load
// (with the same quantized engine selected). Calls UseQuantizedEngine().
Result<torch::jit::Module> QuantizeDynamicInt8(const torch::jit::Module& model, const ArchSpec& spec,
                                               const Int8Options& options = {});

// Elements of the weights and biases held by a float or int8 built-in
// (packed int8 weights count one per element).
int64_t CountModelWeights(const torch::jit::Module& module);

}  // namespace distilld::learner
