// See int8_kernels.h.
//
// Layout of the work: each kernel (1) finds the input's quantization from
// its min/max, (2) quantizes rows into int16 values q - zero_point (in
// [-255, 255], so a product with an int8 weight fits int16 and pairs of
// products fit _mm256_madd_epi16's int32 lanes without saturation), (3)
// accumulates exact int32 sums in a path-specific loop and (4) runs one
// shared float epilogue. Only steps 2 and 3 differ between paths.
#include "learner/int8_kernels.h"

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DISTILLD_X86 1
#endif

namespace distilld::learner {
namespace {

// ---------------------------------------------------------------- path choice

bool CpuHasAvx2() {
#ifdef DISTILLD_X86
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return has;
#else
  return false;
#endif
}

// VNNI at 256 bits: vpdpbusd on ymm registers needs AVX512_VNNI + AVX512VL
// (EVEX encoding; also gives 32 vector registers).
bool CpuHasVnni() {
#ifdef DISTILLD_X86
  static const bool has = [] {
    __builtin_cpu_init();
    return CpuHasAvx2() && __builtin_cpu_supports("avx512vnni") != 0 && __builtin_cpu_supports("avx512vl") != 0;
  }();
  return has;
#else
  return false;
#endif
}

std::atomic<Int8KernelPath> g_path{Int8KernelPath::kAuto};

// ------------------------------------------------------------ quantization

struct ActQuant {
  float scale = 0.0f;  // 0: the input is all zeros and quantizes to 0
  float inv = 0.0f;    // 1 / scale, as fake_quantize computes it
  int32_t zp = 0;
};

// The QAT twin's _fq_a: lo, hi and the scale in double (TorchScript floats),
// the zero point rounded half to even (TorchScript's round), the scale
// passed on as float (fake_quantize_per_tensor_affine's parameter type).
ActQuant ChooseActQuant(float mn, float mx) {
  const double lo = std::min(static_cast<double>(mn), 0.0);
  const double hi = std::max(static_cast<double>(mx), 0.0);
  const double scale = (hi - lo) / 255.0;
  ActQuant q;
  if (!(scale > 0.0)) return q;
  q.zp = static_cast<int32_t>(std::nearbyint(-lo / scale));
  q.scale = static_cast<float>(scale);
  q.inv = 1.0f / q.scale;
  return q;
}

void MinMax(const float* x, int64_t n, float* mn, float* mx) {
  float lo = 0.0f, hi = 0.0f;  // the range always includes 0
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  *mn = lo;
  *mx = hi;
}

// clamp(zp + round_half_even(x * inv), 0, 255): the uint8 code of x.
inline int32_t QuantizeU8(float x, const ActQuant& q) {
  return std::clamp(static_cast<int32_t>(std::nearbyint(x * q.inv)) + q.zp, 0, 255);
}

// out[i] = QuantizeU8(x[i]) - zp.
void QuantizeRowScalar(const float* x, int64_t n, const ActQuant& q, int16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int16_t>(QuantizeU8(x[i], q) - q.zp);
}

// sums[n] = sum_k a[k] * w[n * k_len + k] for n < rows.
void DotRowsScalar(const int16_t* a, const int8_t* w, int64_t k_len, int64_t rows, int32_t* sums) {
  for (int64_t n = 0; n < rows; ++n) {
    const int8_t* wr = w + n * k_len;
    int32_t s = 0;
    for (int64_t k = 0; k < k_len; ++k) s += static_cast<int32_t>(a[k]) * wr[k];
    sums[n] = s;
  }
}

// Conv as shifted reads of one padded plane buffer: acc[n * m_stride + m] =
// sum_k p[offsets[k] + m] * w[n * k_len + k] for m < m_len.
void ConvSumsScalar(const int16_t* p, const int64_t* offsets, const int8_t* w, int64_t k_len, int64_t rows,
                    int64_t m_len, int64_t m_stride, int32_t* acc) {
  for (int64_t n = 0; n < rows; ++n) {
    int32_t* out = acc + n * m_stride;
    std::fill(out, out + m_len, 0);
    for (int64_t k = 0; k < k_len; ++k) {
      const int32_t wk = w[n * k_len + k];
      const int16_t* src = p + offsets[k];
      for (int64_t m = 0; m < m_len; ++m) out[m] += static_cast<int32_t>(src[m]) * wk;
    }
  }
}

#ifdef DISTILLD_X86

// The small fixed loops over accumulators below carry "#pragma GCC unroll":
// at -O2 GCC would otherwise keep the accumulator arrays on the stack,
// which made the SIMD paths several times slower (measured).
//
// Only "avx2", not "fma": the epilogue must not be contracted into FMAs here
// and not in the scalar path (bit-identical outputs across paths).
__attribute__((target("avx2"))) void MinMaxAvx2(const float* x, int64_t n, float* mn, float* mx) {
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    lo = _mm256_min_ps(lo, v);
    hi = _mm256_max_ps(hi, v);
  }
  alignas(32) float l[8], h[8];
  _mm256_store_ps(l, lo);
  _mm256_store_ps(h, hi);
  float a = 0.0f, b = 0.0f;
  for (int j = 0; j < 8; ++j) {
    a = std::min(a, l[j]);
    b = std::max(b, h[j]);
  }
  for (; i < n; ++i) {
    a = std::min(a, x[i]);
    b = std::max(b, x[i]);
  }
  *mn = a;
  *mx = b;
}

// QuantizeU8 of x[0..8) as int32 lanes: the same rounding as std::nearbyint
// under the default rounding mode (_mm256_cvtps_epi32 rounds half to even).
// Also inlined into the VNNI functions (their target is a superset).
__attribute__((target("avx2"))) inline __m256i QuantizeU8x8(const float* x, __m256 inv, __m256i zp) {
  const __m256i v = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), inv)), zp);
  return _mm256_min_epi32(_mm256_max_epi32(v, _mm256_setzero_si256()), _mm256_set1_epi32(255));
}

__attribute__((target("avx2"))) void QuantizeRowAvx2(const float* x, int64_t n, const ActQuant& q, int16_t* out) {
  const __m256 inv = _mm256_set1_ps(q.inv);
  const __m256i zp = _mm256_set1_epi32(q.zp);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_sub_epi32(QuantizeU8x8(x + i, inv, zp), zp);
    const __m128i packed = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), packed);
  }
  QuantizeRowScalar(x + i, n - i, q, out + i);
}

__attribute__((target("avx2"))) inline int32_t HorizontalSum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// 16 k per step: int8 weights widened to int16, _mm256_madd_epi16 sums
// adjacent products into int32 (exact: |product| <= 255 * 127). Four rows
// at a time share each load of `a`; the k tail (< 16) is scalar.
__attribute__((target("avx2"))) void DotRowsAvx2(const int16_t* a, const int8_t* w, int64_t k_len, int64_t rows,
                                                 int32_t* sums) {
  const int64_t k16 = k_len / 16 * 16;
  int64_t n = 0;
  for (; n + 4 <= rows; n += 4) {
    const int8_t* w0 = w + n * k_len;
    const int8_t* w1 = w0 + k_len;
    const int8_t* w2 = w1 + k_len;
    const int8_t* w3 = w2 + k_len;
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t k = 0; k < k16; k += 16) {
      const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + k));
      s0 = _mm256_add_epi32(
          s0, _mm256_madd_epi16(av, _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w0 + k)))));
      s1 = _mm256_add_epi32(
          s1, _mm256_madd_epi16(av, _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w1 + k)))));
      s2 = _mm256_add_epi32(
          s2, _mm256_madd_epi16(av, _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w2 + k)))));
      s3 = _mm256_add_epi32(
          s3, _mm256_madd_epi16(av, _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w3 + k)))));
    }
    int32_t r[4] = {HorizontalSum(s0), HorizontalSum(s1), HorizontalSum(s2), HorizontalSum(s3)};
    for (int64_t k = k16; k < k_len; ++k) {
      r[0] += static_cast<int32_t>(a[k]) * w0[k];
      r[1] += static_cast<int32_t>(a[k]) * w1[k];
      r[2] += static_cast<int32_t>(a[k]) * w2[k];
      r[3] += static_cast<int32_t>(a[k]) * w3[k];
    }
    std::memcpy(sums + n, r, sizeof(r));
  }
  for (; n < rows; ++n) {
    const int8_t* wr = w + n * k_len;
    __m256i s = _mm256_setzero_si256();
    for (int64_t k = 0; k < k16; k += 16) {
      const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + k));
      s = _mm256_add_epi32(
          s, _mm256_madd_epi16(av, _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + k)))));
    }
    int32_t r = HorizontalSum(s);
    for (int64_t k = k16; k < k_len; ++k) r += static_cast<int32_t>(a[k]) * wr[k];
    sums[n] = r;
  }
}

// 16 output positions per step. madd with the weight in the even int16 lane
// only (w, 0) gives the products of the even positions, (0, w) those of the
// odd ones; both stay int32-exact. Unpack + permute restores the order.
// Four output channels at a time share each load. Reads up to 15 int16
// past m_len (the caller pads the buffer) and writes acc rows padded to
// m_stride (a multiple of 16 >= m_len).
__attribute__((target("avx2"))) void ConvSumsAvx2(const int16_t* p, const int64_t* offsets, const int32_t* w_even,
                                                  const int32_t* w_odd, int64_t k_len, int64_t rows4, int64_t m_stride,
                                                  int32_t* acc) {
  for (int64_t n = 0; n < rows4; n += 4) {
    const int32_t* we = w_even + n * k_len;
    const int32_t* wo = w_odd + n * k_len;
    for (int64_t m = 0; m < m_stride; m += 16) {
      __m256i e[4], o[4];
      #pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) e[j] = o[j] = _mm256_setzero_si256();
      for (int64_t k = 0; k < k_len; ++k) {
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + offsets[k] + m));
        #pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
          e[j] = _mm256_add_epi32(e[j], _mm256_madd_epi16(av, _mm256_set1_epi32(we[j * k_len + k])));
          o[j] = _mm256_add_epi32(o[j], _mm256_madd_epi16(av, _mm256_set1_epi32(wo[j * k_len + k])));
        }
      }
      #pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m256i lo = _mm256_unpacklo_epi32(e[j], o[j]);  // m 0-3 | 8-11
        const __m256i hi = _mm256_unpackhi_epi32(e[j], o[j]);  // m 4-7 | 12-15
        int32_t* out = acc + (n + j) * m_stride + m;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
      }
    }
  }
}


// ------------------------------------------------------------------- VNNI
//
// vpdpbusd multiplies unsigned bytes by signed bytes and adds groups of
// four products into int32 lanes without intermediate saturation (unlike
// AVX2's maddubs), so it takes the activations as q in [0, 255] and the
// zero point comes out as a correction: sum (q - zp) * w = sum q * w -
// zp * sum w, still exact in int32.

#define DISTILLD_VNNI_TARGET __attribute__((target("avx2,avx512f,avx512vl,avx512bw,avx512vnni")))

// out[i] = QuantizeU8(x[i]) as bytes.
DISTILLD_VNNI_TARGET void QuantizeRowU8Vnni(const float* x, int64_t n, const ActQuant& q, uint8_t* out) {
  const __m256 inv = _mm256_set1_ps(q.inv);
  const __m256i zp = _mm256_set1_epi32(q.zp);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v = QuantizeU8x8(x + i, inv, zp);
    // Values are in [0, 255], so the saturating packs are exact. (Not
    // vpmovdb: GCC 12's intrinsic trips -Wmaybe-uninitialized.)
    const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i), _mm_packus_epi16(w16, w16));
  }
  for (; i < n; ++i) out[i] = static_cast<uint8_t>(QuantizeU8(x[i], q));
}

// sums[j][n] = sum_k (a[j][k] - zp) * w[n][k] for MB rows of activations
// (bytes) against all weight rows, four weight rows at a time, 32 k per
// step. The last partial step uses AVX512BW masked loads (zeros past the
// end, no fault), so there is no scalar tail (with K = 784 a scalar tail of
// 16 cost more than the whole vector loop at batch 64, measured). wsum[n]
// (the sum of w[n][:]) is computed on the first call of a chunk
// (kComputeWsum) and reused.
template <int MB, bool kComputeWsum>
DISTILLD_VNNI_TARGET void DotRowsVnni(const uint8_t* const* a, int32_t zp, const int8_t* w, const int8_t* zero_row,
                                      int64_t k_len, int64_t rows, int32_t* wsum, int32_t* const* sums) {
  const int64_t k32 = k_len / 32 * 32;
  const __mmask32 tail = static_cast<__mmask32>((uint64_t{1} << (k_len - k32)) - 1);
  const __m256i ones = _mm256_set1_epi8(1);
  for (int64_t n = 0; n < rows; n += 4) {
    const int8_t* wr[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) wr[i] = n + i < rows ? w + (n + i) * k_len : zero_row;
    __m256i acc[MB][4];
    __m256i ws[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      ws[i] = _mm256_setzero_si256();
#pragma GCC unroll 4
      for (int j = 0; j < MB; ++j) acc[j][i] = _mm256_setzero_si256();
    }
    for (int64_t k = 0; k < k_len; k += 32) {
      const __mmask32 mask = k < k32 ? ~__mmask32{0} : tail;
      __m256i wv[4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        wv[i] = _mm256_maskz_loadu_epi8(mask, wr[i] + k);
        if (kComputeWsum) ws[i] = _mm256_dpbusd_epi32(ws[i], ones, wv[i]);
      }
#pragma GCC unroll 4
      for (int j = 0; j < MB; ++j) {
        const __m256i av = _mm256_maskz_loadu_epi8(mask, a[j] + k);
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) acc[j][i] = _mm256_dpbusd_epi32(acc[j][i], av, wv[i]);
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      if (n + i >= rows) break;
      if (kComputeWsum) wsum[n + i] = HorizontalSum(ws[i]);
#pragma GCC unroll 4
      for (int j = 0; j < MB; ++j) sums[j][n + i] = HorizontalSum(acc[j][i]) - zp * wsum[n + i];
    }
  }
}

// Conv on VNNI: taps grouped in fours; q[kq][m] holds the four tap bytes of
// output position m as one uint32 (built from the padded byte plane, whose
// border holds zp, the quantized zero). acc[n][m] = sum_t (q_t - zp) w_t.
// w_quad[n][kq] packs four tap weights (zero past the last tap); rows4
// channels (a multiple of 4, zero weights past n_out); m_stride a multiple
// of 16.
DISTILLD_VNNI_TARGET void BuildQuadsVnni(const uint8_t* p, const int64_t* offsets4, int64_t quads, int64_t m_stride,
                                         uint32_t* q) {
  for (int64_t kq = 0; kq < quads; ++kq) {
    const uint8_t* r0 = p + offsets4[4 * kq];
    const uint8_t* r1 = p + offsets4[4 * kq + 1];
    const uint8_t* r2 = p + offsets4[4 * kq + 2];
    const uint8_t* r3 = p + offsets4[4 * kq + 3];
    uint32_t* out = q + kq * m_stride;
    for (int64_t m = 0; m < m_stride; m += 16) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r0 + m));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r1 + m));
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r2 + m));
      const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r3 + m));
      const __m128i ab_lo = _mm_unpacklo_epi8(a, b), ab_hi = _mm_unpackhi_epi8(a, b);
      const __m128i cd_lo = _mm_unpacklo_epi8(c, d), cd_hi = _mm_unpackhi_epi8(c, d);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + m), _mm_unpacklo_epi16(ab_lo, cd_lo));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + m + 4), _mm_unpackhi_epi16(ab_lo, cd_lo));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + m + 8), _mm_unpacklo_epi16(ab_hi, cd_hi));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + m + 12), _mm_unpackhi_epi16(ab_hi, cd_hi));
    }
  }
}

DISTILLD_VNNI_TARGET void ConvSumsVnni(const uint32_t* q, const int32_t* w_quad, const int32_t* wsum, int32_t zp,
                                       int64_t quads, int64_t rows4, int64_t m_stride, int32_t* acc) {
  for (int64_t n = 0; n < rows4; n += 4) {
    const int32_t* wq = w_quad + n * quads;
    for (int64_t m = 0; m < m_stride; m += 16) {
      __m256i lo[4], hi[4];
      #pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) lo[j] = hi[j] = _mm256_setzero_si256();
      for (int64_t kq = 0; kq < quads; ++kq) {
        const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + kq * m_stride + m));
        const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + kq * m_stride + m + 8));
        #pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
          const __m256i wv = _mm256_set1_epi32(wq[j * quads + kq]);
          lo[j] = _mm256_dpbusd_epi32(lo[j], a0, wv);
          hi[j] = _mm256_dpbusd_epi32(hi[j], a1, wv);
        }
      }
      #pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m256i corr = _mm256_set1_epi32(zp * wsum[n + j]);
        int32_t* out = acc + (n + j) * m_stride + m;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_sub_epi32(lo[j], corr));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8), _mm256_sub_epi32(hi[j], corr));
      }
    }
  }
}

template <int MB>
void DotRowsVnniWsum(bool compute_wsum, const uint8_t* const* a, int32_t zp, const int8_t* w, const int8_t* zero_row,
                     int64_t k_len, int64_t rows, int32_t* wsum, int32_t* const* sums) {
  if (compute_wsum) {
    DotRowsVnni<MB, true>(a, zp, w, zero_row, k_len, rows, wsum, sums);
  } else {
    DotRowsVnni<MB, false>(a, zp, w, zero_row, k_len, rows, wsum, sums);
  }
}

// Fixed row counts let the compiler keep every accumulator in a register.
void DotRowsVnniAny(int mb, bool compute_wsum, const uint8_t* const* a, int32_t zp, const int8_t* w,
                    const int8_t* zero_row, int64_t k_len, int64_t rows, int32_t* wsum, int32_t* const* sums) {
  switch (mb) {
    case 1: return DotRowsVnniWsum<1>(compute_wsum, a, zp, w, zero_row, k_len, rows, wsum, sums);
    case 2: return DotRowsVnniWsum<2>(compute_wsum, a, zp, w, zero_row, k_len, rows, wsum, sums);
    case 3: return DotRowsVnniWsum<3>(compute_wsum, a, zp, w, zero_row, k_len, rows, wsum, sums);
    default: return DotRowsVnniWsum<4>(compute_wsum, a, zp, w, zero_row, k_len, rows, wsum, sums);
  }
}

#endif  // DISTILLD_X86

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
