// Int8 serving modules for built-in students, and the quantization grid
// shared with quantization-aware training (learner/quantize.h).
//
// Weight quantization: symmetric, per output channel, scale_c =
// max|W[c, :]| / qmax with qmax = 127 (8-bit) or 7 (4-bit), zero point 0.
// Activation quantization: per tensor, 8-bit unsigned over
// [min(x, 0), max(x, 0)] of the current batch, which is what the dynamic
// int8 kernels do to a layer's input at run time.
//
// Two int8 back ends (Int8Options::kernels):
// - "native" (default): distilld's own operators (learner/model/int8_kernels.h;
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
#include <sstream>
#include <string>

#include "common/status.h"
#include "learner/model/arch.h"

namespace distilld::learner {

// Registers the native operators, selects the quantized engine (see above)
// and returns its name ("fbgemm", "qnnpack"). FailedPrecondition if this
// LibTorch has neither.
Result<std::string> UseQuantizedEngine();

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

namespace internal {

// The largest weight code for `bits` (127 for 8, 7 for 4).
int QMax(int bits);

// InvalidArgument unless `module` is a built-in of `spec`.
Status CheckSpec(const torch::jit::Module& module, const ArchSpec& spec);

// TorchScript lines of the float conv stages as in BuildModel; with
// `fake_quantize` the conv input and weight pass through the QAT twin's
// _fq_a/_fq_w (the twin of native int8 convolutions).
void EmitConvs(std::ostringstream& src, const ArchSpec& spec, bool fake_quantize);

}  // namespace internal
}  // namespace distilld::learner
