// Vectors of 16 floats for fcasearch's CPU kernels, as GCC/Clang vector extensions: the compiler
// maps them onto the building machine's SIMD (one AVX-512 register, two AVX2 ones, four NEON ones).
#pragma once

#include <cstdint>

namespace fcasearch_simd {

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef int i16 __attribute__((vector_size(64), aligned(4)));

inline v16 splat(float a) { return (v16){} + a; }
inline v16 load(const float* p) {
  v16 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void store(float* p, v16 v) { __builtin_memcpy(p, &v, sizeof(v)); }
inline v16 vmax(v16 a, v16 b) { return a > b ? a : b; }
inline float hmax(v16 a) {
  float m = a[0];
  for (int l = 1; l < 16; ++l) m = a[l] > m ? a[l] : m;
  return m;
}
inline float hsum(v16 a) {
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
  // a tree of in-register shuffles (4 adds) instead of 15 lane extractions
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

// e^x for x <= 0 (logits minus their row maximum), x clamped at -87 (e^-87 ~ 1.6e-38 is 0 next to
// a row sum of at least 1). Cody-Waite range reduction x = n ln2 + r with n rounded by the 1.5 * 2^23
// trick (whose float bits then hold n as an integer), a degree-7 polynomial for e^r on
// |r| <= ln2/2, and 2^n put into the exponent bits: within about 1 ulp of expf.
inline v16 vexp(v16 x) {
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

// Exact (erf) GELU: x/2 (1 + erf(x / sqrt 2)), erf by Abramowitz-Stegun 7.1.26 (absolute error
// below 1.5e-7) with vexp for its e^(-z^2).
inline v16 vgelu(v16 x) {
  const v16 z = (x < splat(0.f) ? -x : x) * 0.70710678118654752f;
  const v16 t = splat(1.f) / (z * 0.3275911f + 1.f);
  v16 p = splat(1.061405429f);
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const v16 erf_abs = splat(1.f) - p * t * vexp(-(z * z));
  const v16 erf = x < splat(0.f) ? -erf_abs : erf_abs;
  return x * 0.5f * (erf + 1.f);
}

}  // namespace fcasearch_simd
