// See int8_kernels.h.
//
// Layout of the work: each kernel (1) finds the input's quantization from
// its min/max, (2) quantizes rows into int16 values q - zero_point (in
// [-255, 255], so a product with an int8 weight fits int16 and pairs of
// products fit _mm256_madd_epi16's int32 lanes without saturation), (3)
// accumulates exact int32 sums in a path-specific loop and (4) runs one
// shared float epilogue. Only steps 2 and 3 differ between paths.
#include "learner/model/int8_kernels.h"

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "learner/model/int8_simd.h"

namespace distilld::learner {
namespace {

using int8_simd::ActQuant;
using int8_simd::ChooseActQuant;
using int8_simd::ConvSumsScalar;
using int8_simd::CpuHasAvx2;
using int8_simd::CpuHasVnni;
using int8_simd::DotRowsScalar;
using int8_simd::MinMax;
using int8_simd::QuantizeRowScalar;
#ifdef DISTILLD_X86
using int8_simd::BuildQuadsVnni;
using int8_simd::ConvSumsAvx2;
using int8_simd::ConvSumsVnni;
using int8_simd::DotRowsAvx2;
using int8_simd::DotRowsVnniAny;
using int8_simd::MinMaxAvx2;
using int8_simd::QuantizeRowAvx2;
using int8_simd::QuantizeRowU8Vnni;
#endif

std::atomic<Int8KernelPath> g_path{Int8KernelPath::kAuto};

// The AVX2 helpers (min/max, int16 quantization) also serve the VNNI path.
bool UseAvx2(Int8KernelPath p) { return p == Int8KernelPath::kAvx2 || p == Int8KernelPath::kVnni; }

ActQuant QuantOf(const torch::Tensor& x, bool avx2) {
  float mn = 0.0f, mx = 0.0f;
#ifdef DISTILLD_X86
  if (avx2) {
    MinMaxAvx2(x.data_ptr<float>(), x.numel(), &mn, &mx);
    return ChooseActQuant(mn, mx);
  }
#endif
  (void)avx2;
  MinMax(x.data_ptr<float>(), x.numel(), &mn, &mx);
  return ChooseActQuant(mn, mx);
}

void QuantizeRow(const float* x, int64_t n, const ActQuant& q, int16_t* out, bool avx2) {
#ifdef DISTILLD_X86
  if (avx2) return QuantizeRowAvx2(x, n, q, out);
#endif
  (void)avx2;
  QuantizeRowScalar(x, n, q, out);
}

void CheckWeights(const char* op, const torch::Tensor& w, const torch::Tensor& w_scale, const torch::Tensor& bias) {
  TORCH_CHECK(w.scalar_type() == torch::kChar, op, ": w_int8 must be int8, got ", w.scalar_type());
  TORCH_CHECK(w_scale.scalar_type() == torch::kFloat && bias.scalar_type() == torch::kFloat, op,
              ": w_scale and bias must be float32");
  TORCH_CHECK(w_scale.dim() == 1 && w_scale.size(0) == w.size(0), op, ": w_scale must be [", w.size(0), "], got ",
              w_scale.sizes());
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == w.size(0), op, ": bias must be [", w.size(0), "], got ",
              bias.sizes());
  TORCH_CHECK(w.device().is_cpu() && w_scale.device().is_cpu() && bias.device().is_cpu(), op,
              ": tensors must be on the CPU");
}

// Rows per parallel task: batch-1 and small batches stay on the calling
// thread (a task switch costs more than these rows).
constexpr int64_t kLinearGrain = 16;

}  // namespace

Status SetInt8KernelPath(Int8KernelPath path) {
  if (path == Int8KernelPath::kAvx2 && !CpuHasAvx2()) {
    return Status::FailedPrecondition("this CPU has no AVX2");
  }
  if (path == Int8KernelPath::kVnni && !CpuHasVnni()) {
    return Status::FailedPrecondition("this CPU has no AVX-512 VNNI with AVX512VL");
  }
  g_path.store(path);
  return Status::Ok();
}

Int8KernelPath ActiveInt8KernelPath() {
  const Int8KernelPath p = g_path.load(std::memory_order_relaxed);
  if (p != Int8KernelPath::kAuto) return p;
  if (CpuHasVnni()) return Int8KernelPath::kVnni;
  return CpuHasAvx2() ? Int8KernelPath::kAvx2 : Int8KernelPath::kScalar;
}

std::string Int8KernelPathName(Int8KernelPath path) {
  switch (path) {
    case Int8KernelPath::kAuto: return "auto";
    case Int8KernelPath::kScalar: return "scalar";
    case Int8KernelPath::kAvx2: return "avx2";
    case Int8KernelPath::kVnni: return "avx512vnni";
  }
  return "?";
}

std::pair<torch::Tensor, torch::Tensor> QuantizeWeightSymmetric(const torch::Tensor& w, int bits) {
  TORCH_CHECK(bits == 8 || bits == 4, "weight bits must be 8 or 4, got ", bits);
  TORCH_CHECK(w.dim() >= 2, "weight must have an output-channel dimension and at least one more");
  const int qmax = bits == 4 ? 7 : 127;
  torch::NoGradGuard no_grad;
  torch::Tensor wf = w.detach().to(torch::kFloat).contiguous();
  torch::Tensor scale = wf.flatten(1).abs().amax(1).clamp_min(1e-8) / static_cast<double>(qmax);
  std::vector<int64_t> view(wf.dim(), 1);
  view[0] = wf.size(0);
  torch::Tensor q = torch::round(wf * scale.reciprocal().view(view)).clamp(-qmax, qmax).to(torch::kChar);
  return {q.contiguous(), scale.contiguous()};
}

torch::Tensor LinearInt8(const torch::Tensor& x_in, const torch::Tensor& w_in, const torch::Tensor& w_scale_in,
                         const torch::Tensor& bias_in, bool relu) {
  constexpr const char* kOp = "distilld::linear_int8";
  TORCH_CHECK(x_in.dim() == 2, kOp, ": x must be [batch, features], got ", x_in.sizes());
  TORCH_CHECK(x_in.scalar_type() == torch::kFloat && x_in.device().is_cpu(), kOp, ": x must be a float32 CPU tensor");
  TORCH_CHECK(w_in.dim() == 2, kOp, ": w_int8 must be [out, in], got ", w_in.sizes());
  CheckWeights(kOp, w_in, w_scale_in, bias_in);
  TORCH_CHECK(w_in.size(1) == x_in.size(1), kOp, ": x has ", x_in.size(1), " features, w_int8 expects ",
              w_in.size(1));
  const torch::Tensor x = x_in.contiguous(), w = w_in.contiguous(), ws = w_scale_in.contiguous(),
                      bias = bias_in.contiguous();
  const int64_t batch = x.size(0), k_len = x.size(1), n_out = w.size(0);
  torch::Tensor y = torch::empty({batch, n_out}, x.options());
  if (batch == 0 || n_out == 0) return y;
  const Int8KernelPath path = ActiveInt8KernelPath();
  const bool avx2 = UseAvx2(path);
  const ActQuant q = QuantOf(x, avx2);
  const float* xp = x.data_ptr<float>();
  const int8_t* wp = w.data_ptr<int8_t>();
  const float* sp = ws.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  auto epilogue = [&](int64_t b, const int32_t* sums) {
    float* out = yp + b * n_out;
    for (int64_t n = 0; n < n_out; ++n) {
      const float v = static_cast<float>(sums[n]) * (q.scale * sp[n]) + bp[n];
      out[n] = relu && !(v > 0.0f) ? 0.0f : v;
    }
  };
  at::parallel_for(0, batch, kLinearGrain, [&](int64_t begin, int64_t end) {
#ifdef DISTILLD_X86
    if (path == Int8KernelPath::kVnni) {
      // Up to four rows at a time share each weight load.
      thread_local std::vector<uint8_t> a8;
      thread_local std::vector<int32_t> sums4, wsum;
      thread_local std::vector<int8_t> zero_row;
      a8.resize(4 * k_len);
      sums4.resize(4 * n_out);
      wsum.resize(n_out);
      zero_row.assign(k_len, 0);
      bool have_wsum = false;
      for (int64_t b0 = begin; b0 < end; b0 += 4) {
        const int mb = static_cast<int>(std::min<int64_t>(4, end - b0));
        const uint8_t* rows[4];
        int32_t* outs[4];
        for (int j = 0; j < mb; ++j) {
          QuantizeRowU8Vnni(xp + (b0 + j) * k_len, k_len, q, a8.data() + j * k_len);
          rows[j] = a8.data() + j * k_len;
          outs[j] = sums4.data() + j * n_out;
        }
        DotRowsVnniAny(mb, !have_wsum, rows, q.zp, wp, zero_row.data(), k_len, n_out, wsum.data(), outs);
        have_wsum = true;
        for (int j = 0; j < mb; ++j) epilogue(b0 + j, outs[j]);
      }
      return;
    }
#endif
    thread_local std::vector<int16_t> a;
    thread_local std::vector<int32_t> sums;
    a.resize(k_len);
    sums.resize(n_out);
    for (int64_t b = begin; b < end; ++b) {
      QuantizeRow(xp + b * k_len, k_len, q, a.data(), avx2);
#ifdef DISTILLD_X86
      if (avx2) {
        DotRowsAvx2(a.data(), wp, k_len, n_out, sums.data());
      } else {
        DotRowsScalar(a.data(), wp, k_len, n_out, sums.data());
      }
#else
      DotRowsScalar(a.data(), wp, k_len, n_out, sums.data());
#endif
      epilogue(b, sums.data());
    }
  });
  return y;
}

torch::Tensor Conv3x3ReluPoolInt8(const torch::Tensor& x_in, const torch::Tensor& w_in,
                                  const torch::Tensor& w_scale_in, const torch::Tensor& bias_in) {
  constexpr const char* kOp = "distilld::conv3x3_relu_pool_int8";
  TORCH_CHECK(x_in.dim() == 4, kOp, ": x must be [batch, channels, height, width], got ", x_in.sizes());
  TORCH_CHECK(x_in.scalar_type() == torch::kFloat && x_in.device().is_cpu(), kOp, ": x must be a float32 CPU tensor");
  TORCH_CHECK(w_in.dim() == 4 && w_in.size(2) == 3 && w_in.size(3) == 3, kOp, ": w_int8 must be [out, in, 3, 3], got ",
              w_in.sizes());
  CheckWeights(kOp, w_in, w_scale_in, bias_in);
  TORCH_CHECK(w_in.size(1) == x_in.size(1), kOp, ": x has ", x_in.size(1), " channels, w_int8 expects ",
              w_in.size(1));
  const torch::Tensor x = x_in.contiguous(), w = w_in.contiguous(), ws = w_scale_in.contiguous(),
                      bias = bias_in.contiguous();
  const int64_t batch = x.size(0), chans = x.size(1), height = x.size(2), width = x.size(3), n_out = w.size(0);
  const int64_t out_h = height / 2, out_w = width / 2;
  torch::Tensor y = torch::empty({batch, n_out, out_h, out_w}, x.options());
  if (y.numel() == 0) return y;
  const Int8KernelPath path = ActiveInt8KernelPath();
  const bool avx2 = UseAvx2(path);
  const ActQuant q = QuantOf(x, avx2);

  // Padded planes of (height + 2) x (width + 2); output position m = r *
  // pw + c (c < width valid, the 2 columns past it are computed and
  // dropped) reads tap (ci, dy, dx) at offsets[k] + m.
  const int64_t pw = width + 2, plane = (height + 2) * pw;
  const int64_t k_len = chans * 9, m_len = height * pw;
  const int64_t m_stride = (m_len + 15) / 16 * 16;
  const int64_t buf_len = chans * plane + 2 * pw + 2 + m_stride + 16;  // last tap's reads stay inside
  std::vector<int64_t> offsets(k_len);
  for (int64_t ci = 0; ci < chans; ++ci) {
    for (int64_t t = 0; t < 9; ++t) offsets[ci * 9 + t] = ci * plane + (t / 3) * pw + t % 3;
  }
  const int8_t* wp = w.data_ptr<int8_t>();
  // AVX2 takes the weights as broadcastable (w, 0) / (0, w) int16 pairs,
  // channels padded to a multiple of 4 with zeros.
  const int64_t rows4 = (n_out + 3) / 4 * 4;
  std::vector<int32_t> w_even, w_odd;
  // VNNI takes four taps' weights packed in an int32 per (channel, quad),
  // zeros past the last tap and channel, and each channel's weight sum.
  const int64_t quads = (k_len + 3) / 4;
  std::vector<int32_t> w_quad, wsum;
  std::vector<int64_t> offsets4;
  if (path == Int8KernelPath::kVnni) {
    w_quad.assign(rows4 * quads, 0);
    wsum.assign(rows4, 0);
    offsets4.assign(quads * 4, 0);  // padding taps read offset 0 (valid) times weight 0
    std::copy(offsets.begin(), offsets.end(), offsets4.begin());
    for (int64_t n = 0; n < n_out; ++n) {
      for (int64_t k = 0; k < k_len; ++k) {
        const int8_t v = wp[n * k_len + k];
        wsum[n] += v;
        uint32_t& word = reinterpret_cast<uint32_t&>(w_quad[n * quads + k / 4]);
        word |= static_cast<uint32_t>(static_cast<uint8_t>(v)) << (8 * (k % 4));
      }
    }
  } else if (avx2) {
    w_even.assign(rows4 * k_len, 0);
    w_odd.assign(rows4 * k_len, 0);
    for (int64_t i = 0; i < n_out * k_len; ++i) {
      const uint32_t v = static_cast<uint16_t>(static_cast<int16_t>(wp[i]));
      w_even[i] = static_cast<int32_t>(v);
      w_odd[i] = static_cast<int32_t>(v << 16);
    }
  }
  const float* xp = x.data_ptr<float>();
  const float* sp = ws.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  // The epilogue pools the int32 sums before dequantizing, which is exact
  // only for positive scales (QuantizeWeightSymmetric's always are).
  for (int64_t n = 0; n < n_out; ++n) {
    TORCH_CHECK(sp[n] > 0.0f && std::isfinite(sp[n]), kOp, ": w_scale must be positive and finite, got ", sp[n],
                " for channel ", n);
  }
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<int16_t> p;
    thread_local std::vector<uint8_t> p8;
    thread_local std::vector<uint32_t> quad_buf;
    thread_local std::vector<int32_t> acc;
    const bool vnni = path == Int8KernelPath::kVnni;
    if (vnni) {
      p8.assign(buf_len, static_cast<uint8_t>(q.zp));  // borders: the quantized zero
      quad_buf.resize(quads * m_stride);
    } else {
      p.assign(buf_len, 0);  // borders and slack are quantized zeros (q - zp = 0)
    }
    acc.resize(rows4 * m_stride);
    for (int64_t b = begin; b < end; ++b) {
#ifdef DISTILLD_X86
      if (vnni) {
        for (int64_t ci = 0; ci < chans; ++ci) {
          for (int64_t r = 0; r < height; ++r) {
            QuantizeRowU8Vnni(xp + ((b * chans + ci) * height + r) * width, width, q,
                              p8.data() + ci * plane + (r + 1) * pw + 1);
          }
        }
        BuildQuadsVnni(p8.data(), offsets4.data(), quads, m_stride, quad_buf.data());
        ConvSumsVnni(quad_buf.data(), w_quad.data(), wsum.data(), q.zp, quads, rows4, m_stride, acc.data());
      } else {
#endif
        for (int64_t ci = 0; ci < chans; ++ci) {
          for (int64_t r = 0; r < height; ++r) {
            QuantizeRow(xp + ((b * chans + ci) * height + r) * width, width, q,
                        p.data() + ci * plane + (r + 1) * pw + 1, avx2);
          }
        }
#ifdef DISTILLD_X86
        if (avx2) {
          ConvSumsAvx2(p.data(), offsets.data(), w_even.data(), w_odd.data(), k_len, rows4, m_stride, acc.data());
        } else {
          ConvSumsScalar(p.data(), offsets.data(), wp, k_len, n_out, m_len, m_stride, acc.data());
        }
      }
#else
      ConvSumsScalar(p.data(), offsets.data(), wp, k_len, n_out, m_len, m_stride, acc.data());
#endif
      // Dequantization is monotonic (scale >= 0), so pooling the int32
      // sums first and dequantizing the maximum gives exactly
      // max_pool(relu(dequantized)).
      for (int64_t n = 0; n < n_out; ++n) {
        const int32_t* an = acc.data() + n * m_stride;
        const float s = q.scale * sp[n], bn = bp[n];
        float* out = yp + (b * n_out + n) * out_h * out_w;
        for (int64_t r = 0; r < out_h; ++r) {
          for (int64_t c = 0; c < out_w; ++c) {
            const int32_t* a0 = an + 2 * r * pw + 2 * c;
            const int32_t mx = std::max(std::max(a0[0], a0[1]), std::max(a0[pw], a0[pw + 1]));
            const float v = static_cast<float>(mx) * s + bn;
            out[r * out_w + c] = v > 0.0f ? v : 0.0f;
          }
        }
      }
    }
  });
  return y;
}

void RegisterNativeInt8Ops() {
  // Leaked on purpose: the registration must outlive every module that uses
  // it, including static destructors that may still run forwards.
  static const torch::Library* lib = [] {
    auto* l = new torch::Library(torch::Library::DEF, "distilld", c10::nullopt, __FILE__, __LINE__);
    l->def("linear_int8(Tensor x, Tensor w_int8, Tensor w_scale, Tensor bias, bool relu) -> Tensor", &LinearInt8);
    l->def("conv3x3_relu_pool_int8(Tensor x, Tensor w_int8, Tensor w_scale, Tensor bias) -> Tensor",
           &Conv3x3ReluPoolInt8);
    return l;
  }();
  (void)lib;
}

}  // namespace distilld::learner
