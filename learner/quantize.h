// Quantization-aware training (QAT) of built-in students with LibTorch's
// fake-quantize ops. The twin rounds weights and activations on the grid
// learner/model/int8.h describes, so it trains against the same rounding
// the int8 serving module applies; convert the fine-tuned student with
// QuantizeDynamicInt8 (same weight_bits) to serve it.
//
// Free functions without shared state: thread-compatible.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <string>

#include "common/status.h"
#include "learner/idx_dataset.h"
#include "learner/kd_loss.h"
#include "learner/model/arch.h"
#include "learner/model/int8.h"
#include "learner/offline.h"

namespace distilld::learner {

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

}  // namespace distilld::learner
