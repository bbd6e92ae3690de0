// The int8 kernels' inner loops, one per instruction set (scalar, AVX2,
// AVX512-VNNI at 256 bits), behind the operators of int8_kernels.h.
//
// Internal to learner/model: int8_kernels.cc picks a path and calls these.
// Every function is pure over the buffers it is given (thread-safe); the
// SIMD ones may only be called when CpuHasAvx2() / CpuHasVnni() is true.
#pragma once

#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#define DISTILLD_X86 1
#endif

#define DISTILLD_AVX2_TARGET __attribute__((target("avx2")))
#define DISTILLD_VNNI_TARGET __attribute__((target("avx2,avx512f,avx512vl,avx512bw,avx512vnni")))

namespace distilld::learner::int8_simd {

// CPU features, probed once.
bool CpuHasAvx2();
bool CpuHasVnni();  // AVX512_VNNI + AVX512VL (vpdpbusd on ymm registers)

// Per-tensor uint8 quantization of an activation.
struct ActQuant {
  float scale = 0.0f;  // 0: the input is all zeros and quantizes to 0
  float inv = 0.0f;    // 1 / scale, as fake_quantize computes it
  int32_t zp = 0;
};

// The QAT twin's _fq_a over [min(mn, 0), max(mx, 0)].
ActQuant ChooseActQuant(float mn, float mx);

// ---- scalar (the reference every path matches)
void MinMax(const float* x, int64_t n, float* mn, float* mx);  // the range always includes 0
// out[i] = uint8 code of x[i] - zp.
void QuantizeRowScalar(const float* x, int64_t n, const ActQuant& q, int16_t* out);
// sums[n] = sum_k a[k] * w[n * k_len + k] for n < rows.
void DotRowsScalar(const int16_t* a, const int8_t* w, int64_t k_len, int64_t rows, int32_t* sums);
// Conv as shifted reads of one padded plane buffer: acc[n * m_stride + m] =
// sum_k p[offsets[k] + m] * w[n * k_len + k] for m < m_len.
void ConvSumsScalar(const int16_t* p, const int64_t* offsets, const int8_t* w, int64_t k_len, int64_t rows,
                    int64_t m_len, int64_t m_stride, int32_t* acc);

#ifdef DISTILLD_X86
// ---- AVX2 (same results as the scalar functions of the same name)
DISTILLD_AVX2_TARGET void MinMaxAvx2(const float* x, int64_t n, float* mn, float* mx);
DISTILLD_AVX2_TARGET void QuantizeRowAvx2(const float* x, int64_t n, const ActQuant& q, int16_t* out);
DISTILLD_AVX2_TARGET void DotRowsAvx2(const int16_t* a, const int8_t* w, int64_t k_len, int64_t rows,
                                      int32_t* sums);
// Four output channels per step; w_even/w_odd are the weights in the even
// and odd int16 lanes; reads up to 15 int16 past m_len (pad the buffer);
// acc rows are padded to m_stride (a multiple of 16).
DISTILLD_AVX2_TARGET void ConvSumsAvx2(const int16_t* p, const int64_t* offsets, const int32_t* w_even,
                                       const int32_t* w_odd, int64_t k_len, int64_t rows4, int64_t m_stride,
                                       int32_t* acc);

// ---- AVX512-VNNI (activations as unsigned bytes, zero point corrected)
DISTILLD_VNNI_TARGET void QuantizeRowU8Vnni(const float* x, int64_t n, const ActQuant& q, uint8_t* out);
// Byte quads of the padded plane for vpdpbusd, per 4 k.
DISTILLD_VNNI_TARGET void BuildQuadsVnni(const uint8_t* p, const int64_t* offsets4, int64_t quads, int64_t m_stride,
                                         uint32_t* q);
DISTILLD_VNNI_TARGET void ConvSumsVnni(const uint32_t* q, const int32_t* w_quad, const int32_t* wsum, int32_t zp,
                                       int64_t quads, int64_t rows4, int64_t m_stride, int32_t* acc);
// sums[j][n] = sum_k (a[j][k] - zp) * w[n][k] for mb (1..4) activation rows;
// wsum[n] (sum of w[n][:]) is computed when compute_wsum.
void DotRowsVnniAny(int mb, bool compute_wsum, const uint8_t* const* a, int32_t zp, const int8_t* w,
                    const int8_t* zero_row, int64_t k_len, int64_t rows, int32_t* wsum, int32_t* const* sums);
#endif  // DISTILLD_X86

}  // namespace distilld::learner::int8_simd
