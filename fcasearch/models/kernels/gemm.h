// The register-blocked GEMM micro-kernel that fcasearch's Linear (linear.cpp) and dense
// convolution (conv.cpp) kernels share: rows of x times one packed panel of 32 output columns,
// with the bias and the exact GELU or a residual applied as the outputs are stored.
//
// A weight W (N, K) is packed once into (ceil(N/32), K, 32): panel p holds columns 32p..32p+31,
// row k of the panel their K-th inputs, columns past N zero.
#pragma once

#include "simd.h"

#include <algorithm>
#include <cstdint>

namespace fcasearch_gemm {

using namespace fcasearch_simd;

inline constexpr int CB = 32;  // columns per panel (two vectors)
inline constexpr int64_t ROWS_PER_TASK = 56;  // a multiple of both row-block heights

struct Epilogue {
  const float* bias;      // (N) or null
  const float* residual;  // row r at residual + r * res_stride, or null
  int64_t res_stride;
  bool gelu;
};

// Rows r0..r0+rn (rn <= RB) x columns of panel nb: x rows at xr (stride K), output rows at out
// (stride N). Rows past rn read row 0 again and are not stored. pf_lines cache lines from pf are
// prefetched into L2 along the way, one per step: the callers spread the panel they take next
// over the row blocks of the current one, so that a weight streamed from memory (a forward
// reads each weight once, 25 MB for FcaFormer-L1) arrives before its panel starts; measured on a
// 2-core AMD EPYC, FcaFormer-L1 at batch 1, paired: 0.977-0.979 of the time at 224x224 and 0.923
// at 32x32, where the forward is mostly reading weights. RB is row_block's (below): no block
// computes unused rows where the row count is a multiple of 7 (49 rows: a 7x7 map) or below 8.
template <int RB>
inline void block(const float* xr, int64_t rn, const float* panel, int64_t K, int64_t N,
                  int64_t nb, const Epilogue& ep, int64_t r0, float* out,
                  const char* pf = nullptr, int64_t pf_lines = 0, const float* xn = nullptr,
                  int64_t xn_rows = 0) {
  const float* rows[RB];
  for (int r = 0; r < RB; ++r) rows[r] = xr + (r < rn ? r : 0) * K;
  v16 acc[RB][2];
  for (int r = 0; r < RB; ++r) acc[r][0] = acc[r][1] = splat(0.f);
  for (int64_t k0 = 0; k0 < K; k0 += 16) {  // a cache line of x rows at a time
    const int64_t k1 = std::min(K, k0 + 16);
    for (int64_t r = 0; r < xn_rows; ++r) {
      __builtin_prefetch(xn + r * K + k0, 0, 3);
      if (k1 == K) __builtin_prefetch(xn + r * K + K - 1, 0, 3);
    }
    for (int64_t l = k0; l < std::min(k1, pf_lines); ++l) __builtin_prefetch(pf + l * 64, 0, 2);
    for (int64_t k = k0; k < k1; ++k) {
      const v16 b0 = load(panel + k * CB), b1 = load(panel + k * CB + 16);
      for (int r = 0; r < RB; ++r) {
        const float a = rows[r][k];
        acc[r][0] += a * b0;
        acc[r][1] += a * b1;
      }
    }
  }
  for (int64_t l = K; l < pf_lines; ++l) __builtin_prefetch(pf + l * 64, 0, 2);
  const int64_t c0 = nb * CB, width = std::min<int64_t>(CB, N - c0);
  float tmp[CB];
  v16 bias0 = splat(0.f), bias1 = splat(0.f);
  if (ep.bias != nullptr) {
    if (width == CB) {
      bias0 = load(ep.bias + c0);
      bias1 = load(ep.bias + c0 + 16);
    } else {
      for (int l = 0; l < CB; ++l) tmp[l] = l < width ? ep.bias[c0 + l] : 0.f;
      bias0 = load(tmp);
      bias1 = load(tmp + 16);
    }
  }
  for (int64_t r = 0; r < rn; ++r) {
    v16 y0 = acc[r][0] + bias0, y1 = acc[r][1] + bias1;
    if (ep.gelu) {
      y0 = vgelu(y0);
      y1 = vgelu(y1);
    }
    float* o = out + (r0 + r) * N + c0;
    if (width == CB) {
      if (ep.residual != nullptr) {
        const float* res = ep.residual + (r0 + r) * ep.res_stride + c0;
        y0 += load(res);
        y1 += load(res + 16);
      }
      store(o, y0);
      store(o + 16, y1);
    } else {
      store(tmp, y0);
      store(tmp + 16, y1);
      const float* res =
          ep.residual != nullptr ? ep.residual + (r0 + r) * ep.res_stride + c0 : nullptr;
      for (int64_t l = 0; l < width; ++l) o[l] = tmp[l] + (res != nullptr ? res[l] : 0.f);
    }
  }
}

// Rows per block for M rows: 8, or 7 where M is a multiple of 7 and not of 8, or M itself below 8
// (a batch-1 classifier head: one row, not eight of which seven are thrown away).
inline int row_block(int64_t M) {
  if (M < 8) return static_cast<int>(std::max<int64_t>(M, 1));
  return (M % 8 != 0 && M % 7 == 0) ? 7 : 8;
}

// block<rb> for a row block height chosen at run time (row_block's).
inline void block_rows(int rb, const float* xr, int64_t rn, const float* panel, int64_t K,
                       int64_t N, int64_t nb, const Epilogue& ep, int64_t r0, float* out,
                       const char* pf, int64_t pf_lines, const float* xn = nullptr,
                       int64_t xn_rows = 0) {
  switch (rb) {
    case 1: return block<1>(xr, rn, panel, K, N, nb, ep, r0, out, pf, pf_lines, xn, xn_rows);
    case 2: return block<2>(xr, rn, panel, K, N, nb, ep, r0, out, pf, pf_lines, xn, xn_rows);
    case 3: return block<3>(xr, rn, panel, K, N, nb, ep, r0, out, pf, pf_lines, xn, xn_rows);
    case 4: return block<4>(xr, rn, panel, K, N, nb, ep, r0, out, pf, pf_lines, xn, xn_rows);
    case 5: return block<5>(xr, rn, panel, K, N, nb, ep, r0, out, pf, pf_lines, xn, xn_rows);
    case 6: return block<6>(xr, rn, panel, K, N, nb, ep, r0, out, pf, pf_lines, xn, xn_rows);
    case 7: return block<7>(xr, rn, panel, K, N, nb, ep, r0, out, pf, pf_lines, xn, xn_rows);
    default: return block<8>(xr, rn, panel, K, N, nb, ep, r0, out, pf, pf_lines, xn, xn_rows);
  }
}

// All of x (M, K) times the packed weight into out (M, N), on the calling thread: panel by panel,
// each over every row (the residual's rows, if any, match out's), the next panel prefetched.
inline void gemm_rows(const float* x, int64_t M, int64_t K, const float* packed, int64_t N,
                      const Epilogue& ep, float* out) {
  const int rb = row_block(M);
  const int64_t NB = (N + CB - 1) / CB, blocks = (M + rb - 1) / rb, lines = K * CB / 16;
  for (int64_t nb = 0; nb < NB; ++nb) {
    const float* panel = packed + nb * K * CB;
    const char* next = nb + 1 < NB ? reinterpret_cast<const char*>(panel + K * CB) : nullptr;
    for (int64_t r0 = 0, i = 0; r0 < M; r0 += rb, ++i) {
      const int64_t rn = std::min<int64_t>(rb, M - r0);
      const int64_t l0 = i * lines / blocks, l1 = (i + 1) * lines / blocks;  // its share
      const char* pf = next != nullptr ? next + l0 * 64 : nullptr;
      const int64_t pfn = next != nullptr ? l1 - l0 : 0;
      const int64_t nn = std::min<int64_t>(rb, std::max<int64_t>(M - r0 - rb, 0));
      block_rows(rb, x + r0 * K, rn, panel, K, N, nb, ep, r0, out, pf, pfn, x + (r0 + rb) * K, nn);
    }
  }
}

}  // namespace fcasearch_gemm
