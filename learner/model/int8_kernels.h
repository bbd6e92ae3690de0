// Native int8 inference kernels for the built-in students, registered as
// TorchScript operators in the `distilld` namespace:
//
//   distilld::linear_int8(Tensor x, Tensor w_int8, Tensor w_scale,
//                         Tensor bias, bool relu) -> Tensor
//     x [B, K] float, w_int8 [N, K] int8, w_scale [N] float, bias [N] float;
//     returns [B, N] float (ReLU applied if `relu`).
//   distilld::conv3x3_relu_pool_int8(Tensor x, Tensor w_int8, Tensor w_scale,
//                                    Tensor bias) -> Tensor
//     x [B, C, H, W] float, w_int8 [N, C, 3, 3] int8; computes
//     max_pool2d(relu(conv2d(x, w, bias, stride 1, pad 1)), 2) and returns
//     [B, N, H/2, W/2] float.
//
// Arithmetic (identical to the QAT twin in quantize.cc, so QAT trains against
// what these kernels compute): the input is quantized per tensor, over the
// whole batch, to uint8 over [min(x, 0), max(x, 0)] (scale = range / 255,
// zero point round(-lo / scale), rounding half to even); weights are
// symmetric per output channel (zero point 0, values in [-qmax, qmax]).
// Products are summed exactly in int32, then dequantized:
// y = float(acc) * (x_scale * w_scale[n]) + bias[n]. An all-zero input gives
// bias exactly. Every code path (scalar, AVX2) computes the same int32 sums
// and runs the same float epilogue, so their outputs are bit-identical.
// (VNNI multiplies the uint8 q by the weight and subtracts zp * sum(w)
// afterwards; AVX2 and scalar multiply q - zp; both sums are exact.)
//
// Why not LibTorch's quantized ops: Debian's x86 LibTorch has no FBGEMM, and
// QNNPACK's dynamic linear is slower than float on x86 at the batch sizes the
// daemon serves. Why no im2col: a 3x3 pad-1 conv reads, for every tap, the
// zero-padded input plane shifted by a constant offset, so the kernel walks
// shifted rows of one padded buffer instead of copying 9x the input.
//
// SIMD: AVX2 and AVX-512 VNNI code is compiled per function with
// __attribute__((target)) and chosen at run time (__builtin_cpu_supports),
// so the library itself needs only baseline x86-64 and runs on any x86-64
// (and, scalar only, elsewhere). No FMA is enabled anywhere, so the float
// epilogue is never contracted differently on one path.
//
// Thread-safety: the kernels are reentrant (scratch is thread_local) and use
// at::parallel_for across batch rows/images; RegisterNativeInt8Ops and the
// path setters are thread-safe.
#pragma once

#include <torch/script.h>

#include <string>
#include <utility>

#include "common/status.h"

namespace distilld::learner {

// Registers the operators above with the dispatcher (once per process;
// later calls do nothing). Must run before a module that calls them is
// defined or loaded: LoadModel, UseQuantizedEngine and QuantizeDynamicInt8
// call it, so only code that bypasses them (torch::jit::load directly) must
// call it itself. Explicit rather than a static initializer because a
// static library's unreferenced object files, with their initializers, are
// dropped by the linker.
void RegisterNativeInt8Ops();

enum class Int8KernelPath {
  kAuto,    // the fastest this CPU supports (the default)
  kScalar,  // portable C++ loops
  kAvx2,    // AVX2 (x86-64 with AVX2 only)
  kVnni,    // AVX-512 VNNI on 256-bit vectors (needs AVX512_VNNI + AVX512VL)
};

// Process-wide choice of code path for later kernel calls (tests compare the
// paths; benchmarks may pin one). FailedPrecondition for a path this CPU
// cannot run. Thread-safe; calls already running keep their path.
Status SetInt8KernelPath(Int8KernelPath path);
// The path kernels use now (kAuto resolved: VNNI, else AVX2, else scalar).
Int8KernelPath ActiveInt8KernelPath();
std::string Int8KernelPathName(Int8KernelPath path);

// Symmetric per-output-channel quantization of a float weight ([N, ...]) to
// `bits` (8: qmax 127, 4: qmax 7): scale[n] = max|w[n]| / qmax (at least
// 1e-8 / qmax), q = clamp(round_half_even(w * (1 / scale)), -qmax, qmax).
// Returns {int8 weight of w's shape, float scale [N]}. The QAT twin's
// fake-quantize uses the same grid.
std::pair<torch::Tensor, torch::Tensor> QuantizeWeightSymmetric(const torch::Tensor& w, int bits);

// The operators' implementations, callable directly from C++. They throw
// c10::Error (TORCH_CHECK) with a message naming the bad argument.
torch::Tensor LinearInt8(const torch::Tensor& x, const torch::Tensor& w_int8, const torch::Tensor& w_scale,
                         const torch::Tensor& bias, bool relu);
torch::Tensor Conv3x3ReluPoolInt8(const torch::Tensor& x, const torch::Tensor& w_int8, const torch::Tensor& w_scale,
                                  const torch::Tensor& bias);

}  // namespace distilld::learner
