// Vectors of 16 floats for fcasearch's CPU kernels, as GCC/Clang vector extensions: the compiler
// maps them onto the building machine's SIMD (one AVX-512 register, two AVX2 ones, four NEON ones).
#pragma once

#include <cstdint>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace fcasearch_simd {

// The math below is inlined into the kernels' loops (out of line, each call spilled the caller's
// accumulators and went through the PLT).
#define FCASEARCH_INLINE inline __attribute__((always_inline))

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef int i16 __attribute__((vector_size(64), aligned(4)));

inline v16 splat(float a) { return (v16){} + a; }
inline v16 load(const float* p) {
  v16 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void store(float* p, v16 v) { __builtin_memcpy(p, &v, sizeof(v)); }
// The first n floats (0 <= n < 16) at p, the other lanes zero; reads only those n (AVX-512: one
// masked load, else through a zeroed copy).
inline v16 load_n(const float* p, int64_t n) {
#ifdef __AVX512F__
  return (v16)_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p);
#else
  float tmp[16] = {0.f};
  __builtin_memcpy(tmp, p, n * sizeof(float));
  return load(tmp);
#endif
}
// Stores the first n lanes (0 <= n < 16) of v at p; writes nothing else.
inline void store_n(float* p, v16 v, int64_t n) {
#ifdef __AVX512F__
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), (__m512)v);
#else
  for (int64_t l = 0; l < n; ++l) p[l] = v[l];
#endif
}
inline v16 vmax(v16 a, v16 b) { return a > b ? a : b; }
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define FCASEARCH_SIMD_SHUFFLE 1
#endif
inline float hmax(v16 a) {
#ifdef FCASEARCH_SIMD_SHUFFLE
  a = vmax(a, __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
  a = vmax(a, __builtin_shufflevector(a, a, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11));
  a = vmax(a, __builtin_shufflevector(a, a, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
  a = vmax(a, __builtin_shufflevector(a, a, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
  return a[0];
#else
  float m = a[0];
  for (int l = 1; l < 16; ++l) m = a[l] > m ? a[l] : m;
  return m;
#endif
}
// Lane reductions by a tree of in-register shuffles (4 steps) instead of 15 lane extractions.
inline float hsum(v16 a) {
#ifdef FCASEARCH_SIMD_SHUFFLE
  a += __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  a += __builtin_shufflevector(a, a, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
  a += __builtin_shufflevector(a, a, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  a += __builtin_shufflevector(a, a, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
  return a[0];
#else
  float s = 0.f;
  for (int l = 0; l < 16; ++l) s += a[l];
  return s;
#endif
}

// Transposes the 16 x 16 block in r (r[i] lane l becomes r[l] lane i) in place, by four rounds
// of two-register shuffles: round b swaps, within every 2b x 2b block, the two off-diagonal b x b
// blocks (row bit b exchanged with lane bit b).
inline void transpose16(v16 r[16]) {
#ifdef FCASEARCH_SIMD_SHUFFLE
#define FCASEARCH_T16_ROUND(b, ...)                                    \
  for (int i = 0; i < 16; ++i) {                                       \
    if (i & b) continue;                                               \
    const v16 a = r[i], c = r[i + b];                                  \
    r[i] = __builtin_shufflevector(a, c, __VA_ARGS__);                 \
    r[i + b] = __builtin_shufflevector(a, c, FCASEARCH_T16_HI_##b);    \
  }
#define FCASEARCH_T16_HI_8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define FCASEARCH_T16_HI_4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define FCASEARCH_T16_HI_2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define FCASEARCH_T16_HI_1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
  FCASEARCH_T16_ROUND(8, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
  FCASEARCH_T16_ROUND(4, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27)
  FCASEARCH_T16_ROUND(2, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29)
  FCASEARCH_T16_ROUND(1, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30)
#undef FCASEARCH_T16_ROUND
#undef FCASEARCH_T16_HI_8
#undef FCASEARCH_T16_HI_4
#undef FCASEARCH_T16_HI_2
#undef FCASEARCH_T16_HI_1
#else
  for (int i = 0; i < 16; ++i) {
    for (int l = i + 1; l < 16; ++l) {
      const float t = r[i][l];
      r[i][l] = r[l][i];
      r[l][i] = t;
    }
  }
#endif
}

// The rows x cols block at src (rows <= 16 rows src_stride floats apart, cols <= 16 floats each)
// transposed into dst: cols rows of 16 floats, dst_stride apart, the lanes past rows zero.
inline void transpose_tile(const float* src, int64_t src_stride, int64_t rows, int64_t cols,
                           float* dst, int64_t dst_stride) {
  v16 r[16];
  for (int64_t i = 0; i < 16; ++i) {
    const float* row = src + i * src_stride;
    r[i] = i >= rows ? splat(0.f) : cols == 16 ? load(row) : load_n(row, cols);
  }
  transpose16(r);
  for (int64_t i = 0; i < cols; ++i) store(dst + i * dst_stride, r[i]);
}

// e^x for x <= 0 (logits minus their row maximum), x clamped at -87 (e^-87 ~ 1.6e-38 is 0 next to
// a row sum of at least 1). Cody-Waite range reduction x = n ln2 + r with n rounded by the 1.5 * 2^23
// trick (whose float bits then hold n as an integer), a degree-7 polynomial for e^r on
// |r| <= ln2/2, and 2^n put into the exponent bits: within about 1 ulp of expf.
FCASEARCH_INLINE v16 vexp_poly(v16 x) {
  const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  const float magic = 12582912.0f;  // 1.5 * 2^23
  const v16 lo = splat(-87.0f);
  const v16 xc = x < lo ? lo : x;
  const v16 t = xc * log2e + magic;
  const v16 n = t - magic;
  i16 tbits, mbits;
  __builtin_memcpy(&tbits, &t, sizeof(t));
  const v16 m = splat(magic);
  __builtin_memcpy(&mbits, &m, sizeof(m));
  const v16 r = xc - n * ln2_hi - n * ln2_lo;
  v16 p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const i16 bits = (tbits - mbits + 127) << 23;
  v16 two_n;
  __builtin_memcpy(&two_n, &bits, sizeof(two_n));
  return p * two_n;
}

#ifdef __AVX512F__
// e^x for x <= 0 as above, with fewer multiply-adds: x = (16 n + j) ln2/16 + r, |r| <= ln2/32, so
// e^x = 2^n 2^(j/16) e^r, 2^(j/16) from a 16-entry table (one in-register permute) and e^r by a
// degree-4 polynomial for e^r - 1 (truncation error below 4e-11), the scale applied by one
// multiply-add: relative error at most 1.05e-7 against exp in double on [-87, 0] (sampled every
// 1000th float; the polynomial form 8.0e-8).
FCASEARCH_INLINE v16 vexp_table(v16 x) {
  const float k16 = 23.0831206542234f;  // 16 / ln 2
  const float ln2_hi = 0.693359375f / 16, ln2_lo = -2.12194440e-4f / 16;
  const float magic = 12582912.0f;  // 1.5 * 2^23
  const v16 xc = vmax(x, splat(-87.0f));
  const v16 t = xc * k16 + magic;  // the low bits of t hold k = round(16 x / ln 2)
  const v16 kf = t - magic;
  const v16 r = xc - kf * ln2_hi - kf * ln2_lo;
  v16 p = splat(4.16666667e-2f);
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r;  // e^r - 1
  const __m512i k = _mm512_sub_epi32(_mm512_castps_si512((__m512)t),
                                     _mm512_castps_si512(_mm512_set1_ps(magic)));
  const __m512 table = _mm512_setr_ps(
      1.0f, 1.04427378242741384f, 1.09050773266525766f, 1.13878863475669165f,
      1.18920711500272107f, 1.24185781207348405f, 1.29683955465100967f, 1.35425554693689273f,
      1.41421356237309505f, 1.47682614593949931f, 1.54221082540794082f, 1.61049033194925431f,
      1.68179283050742909f, 1.75625216037329948f, 1.83400808640934246f, 1.91520656139714729f);
  const __m512 frac = _mm512_permutexvar_ps(k, table);  // 2^(j/16), j = k mod 16 (low 4 bits)
  const __m512i scaled = _mm512_add_epi32(_mm512_castps_si512(frac),
                                          _mm512_slli_epi32(_mm512_srai_epi32(k, 4), 23));
  const v16 sc = (v16)_mm512_castsi512_ps(scaled);
  return sc + sc * p;  // one rounding for 2^(n + j/16) e^r
}
#endif

// e^x for x <= 0: the table form where AVX-512 has the permute (the attention kernel 0.972 of
// the time of the polynomial form, paired, at L1's stage 2), else the polynomial form.
FCASEARCH_INLINE v16 vexp(v16 x) {
#ifdef __AVX512F__
  return vexp_table(x);
#else
  return vexp_poly(x);
#endif
}

// 1 / d for normal d of either sign: AVX-512's 14-bit reciprocal estimate refined by one Newton
// step (relative error about 2^-27, a few cycles instead of a division), else a division.
FCASEARCH_INLINE v16 vrecip(v16 d) {
#ifdef __AVX512F__
  const v16 r = (v16)_mm512_rcp14_ps((__m512)d);
  return r * (splat(2.f) - d * r);
#else
  return splat(1.f) / d;
#endif
}

// erf(x) for float32: a rational minimax form x P(x^2) / Q(x^2) on [-4, 4] (beyond, erf rounds to
// +-1 in float32), the coefficients of the single-precision erf in Eigen and XLA; absolute error
// below 5e-7 (checked against the double-precision erf on a dense grid by the tests). No exp,
// and the division as vrecip.
FCASEARCH_INLINE v16 verf(v16 x) {
  const v16 hi = splat(4.f), lo = splat(-4.f);
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  const v16 x2 = x * x;
  v16 p = splat(-2.72614225801306e-10f);
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 - 2.10102402082508e-06f;
  p = p * x2 - 5.69250639462346e-05f;
  p = p * x2 - 7.34990630326855e-04f;
  p = p * x2 - 2.95459980854025e-03f;
  p = p * x2 - 1.60960333262415e-02f;
  v16 q = splat(-1.45660718464996e-05f);
  q = q * x2 - 2.13374055278905e-04f;
  q = q * x2 - 1.68282697438203e-03f;
  q = q * x2 - 7.37332916720468e-03f;
  q = q * x2 - 1.42647390514189e-02f;
  // q <= -0.0142 on [-4, 4]: far from 0, so its reciprocal estimate is as good as for 1/-q
  return (x * p) * vrecip(q);
}

// Exact (erf) GELU: x/2 (1 + erf(x / sqrt 2)), as h + h erf with h = x/2 (one FMA).
FCASEARCH_INLINE v16 vgelu(v16 x) {
  const v16 h = x * 0.5f;
  return h + h * verf(x * 0.70710678118654752f);
}

}  // namespace fcasearch_simd
