// See int8_simd.h. All paths produce bit-identical sums and quantization;
// compress_int8_native_test runs every path on the same inputs.
#include "learner/model/int8_simd.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef DISTILLD_X86
#include <immintrin.h>
#endif

namespace distilld::learner::int8_simd {

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


// ------------------------------------------------------------ quantization


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

}  // namespace distilld::learner::int8_simd
