// Depthwise 2-D convolution for CPU float32 inference on channels-last maps, optionally followed
// by the exact GELU: FcaFormer's small depthwise convs (the token merge, the local conv, the
// downsample's strided conv, the ConvNeXt 7x7).
//
// Built at run time by fcasearch.models.kernels and registered as the operator
// fcasearch_kernels::dwconv2d.
//
// Why: at FcaFormer's late-stage sizes (a 14x14 or 7x7 map) a depthwise conv is a few thousand
// vector FMAs, and oneDNN's per-call setup costs several times that. Here output rows are split
// across threads; each sums its taps over 16 channels at a time (the weights transposed to
// tap-major once per call), 4 output pixels at a time where it can (see conv_row). Vectors:
// simd.h.
//
// Input x (B, C, H, W), channels-last contiguous; weight (C, 1, k, k); bias (C) or none; square
// stride and zero padding. Output (B, C, Ho, Wo), channels-last.

#include "ops.h"
#include "simd.h"

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <optional>
#include <vector>

namespace {

using namespace fcasearch_simd;

using fcasearch_ops::DwPlan;

// 16 channels from c of the pixel at p (FULL: all 16 exist; else C - c < 16, the rest zero).
template <bool FULL>
inline v16 pixel(const float* p, const DwPlan& g, int64_t c) {
  return FULL ? load(p) : load_n(p, g.C - c);
}

template <bool FULL>
inline void put(float* o, v16 v, const DwPlan& g, int64_t c) {
  if (g.gelu) v = vgelu(v);
  if (FULL) {
    store(o, v);
  } else {
    store_n(o, v, g.C - c);
  }
}

// Stride 1, a K x K kernel, channels c..c+15 (FULL: all exist): 8 output pixels from ow (n of them
// stored), each input row's K + 7 pixels loaded once and used by every tap that reads them. EDGE:
// some of those pixels lie in the horizontal padding (they read as zeros).
template <int K, bool EDGE, bool FULL>
inline void block8_s1(const DwPlan& g, const float* xb, const float* wt, v16 bias, float* orow,
                      int64_t ih0, int64_t i0, int64_t i1, int64_t c, int64_t ow, int64_t n) {
  const int64_t C = g.C, Cp = g.Cp, iw0 = ow - g.padding;
  v16 acc[8];
  for (int o = 0; o < 8; ++o) acc[o] = bias;
  for (int64_t i = i0; i < i1; ++i) {
    const float* xr = xb + (ih0 + i) * g.W * C + c;  // the input row, channel c
    const float* wr = wt + i * K * Cp + c;
    v16 xv[K + 7];
    for (int t = 0; t < K + 7; ++t) {
      const int64_t iw = iw0 + t;
      xv[t] = (!EDGE || (iw >= 0 && iw < g.W)) ? pixel<FULL>(xr + iw * C, g, c) : splat(0.f);
    }
    for (int j = 0; j < K; ++j) {
      const v16 w = load(wr + j * Cp);
      for (int o = 0; o < 8; ++o) acc[o] += xv[o + j] * w;
    }
  }
  for (int o = 0; o < n; ++o) put<FULL>(orow + (ow + o) * C + c, acc[o], g, c);
}

// The whole output row in blocks of 8 pixels (the last one possibly short); the blocks that
// touch the padding take the EDGE variant, so no pixel falls back to the one-at-a-time path.
template <int K, bool FULL>
void conv_row_s1(const DwPlan& g, const float* xb, const float* wt, v16 bias, float* orow,
                 int64_t ih0, int64_t i0, int64_t i1, int64_t c) {
  for (int64_t ow = 0; ow < g.Wo; ow += 8) {
    const int64_t n = std::min<int64_t>(8, g.Wo - ow), iw0 = ow - g.padding;
    if (iw0 >= 0 && iw0 + K + 7 <= g.W) {
      block8_s1<K, false, FULL>(g, xb, wt, bias, orow, ih0, i0, i1, c, ow, n);
    } else {
      block8_s1<K, true, FULL>(g, xb, wt, bias, orow, ih0, i0, i1, c, ow, n);
    }
  }
}

// One output row, channels c..c+15. Stride 1 with a 3x3, 5x5 or 7x7 kernel: conv_row_s1. Otherwise blocks of 4 output pixels whose taps all lie inside the map horizontally
// keep 4 independent accumulators (one FMA chain each) and share each weight load; the other
// pixels (borders, short rows) go one at a time with two accumulators.
// xb holds the input from row row0 on (rows above it are never read).
template <bool FULL>
void conv_row(const DwPlan& g, const float* xb, int64_t row0, float* orow, int64_t oh,
              int64_t c) {
  const float* wt = g.wt.data();
  const int64_t i0 = std::max<int64_t>(0, g.padding - oh * g.stride);
  const int64_t i1 = std::min<int64_t>(g.k, g.H + g.padding - oh * g.stride);
  const int64_t ih0 = oh * g.stride - g.padding - row0;  // tap row 0, relative to row0
  const int64_t k = g.k, s = g.stride, C = g.C, Cp = g.Cp;
  const v16 bias = load(g.bias.data() + c);
  if (s == 1 && (k == 3 || k == 5 || k == 7)) {
    if (k == 3) conv_row_s1<3, FULL>(g, xb, wt, bias, orow, ih0, i0, i1, c);
    if (k == 5) conv_row_s1<5, FULL>(g, xb, wt, bias, orow, ih0, i0, i1, c);
    if (k == 7) conv_row_s1<7, FULL>(g, xb, wt, bias, orow, ih0, i0, i1, c);
    return;
  }
  int64_t ow = 0;
  while (ow < g.Wo) {
    const int64_t iw0 = ow * s - g.padding;
    if (ow + 4 <= g.Wo && iw0 >= 0 && iw0 + 3 * s + k <= g.W) {
      v16 acc[4] = {bias, bias, bias, bias};
      for (int64_t i = i0; i < i1; ++i) {
        const float* xr = xb + ((ih0 + i) * g.W + iw0) * C + c;
        const float* wr = wt + i * k * Cp + c;
        for (int64_t j = 0; j < k; ++j) {
          const v16 w = load(wr + j * Cp);
          for (int o = 0; o < 4; ++o) acc[o] += pixel<FULL>(xr + (o * s + j) * C, g, c) * w;
        }
      }
      for (int o = 0; o < 4; ++o) put<FULL>(orow + (ow + o) * C + c, acc[o], g, c);
      ow += 4;
      continue;
    }
    const int64_t j0 = std::max<int64_t>(0, -iw0), j1 = std::min<int64_t>(k, g.W - iw0);
    v16 acc[2] = {bias, splat(0.f)};
    int n = 0;
    for (int64_t i = i0; i < i1; ++i) {
      const float* xr = xb + ((ih0 + i) * g.W + iw0) * C + c;
      const float* wr = wt + i * k * Cp + c;
      for (int64_t j = j0; j < j1; ++j, ++n) acc[n & 1] += pixel<FULL>(xr + j * C, g, c) * load(wr + j * Cp);
    }
    put<FULL>(orow + ow * C + c, acc[0] + acc[1], g, c);
    ++ow;
  }
}

}  // namespace

namespace fcasearch_ops {

DwPlan dw_plan(const at::Tensor& weight, const std::optional<at::Tensor>& bias, int64_t H,
               int64_t W, int64_t stride, int64_t padding, bool gelu) {
  const int64_t C = weight.size(0), k = weight.size(2), Cp = (C + 15) / 16 * 16;
  DwPlan g{H, W, C, Cp, k, stride, padding, (H + 2 * padding - k) / stride + 1,
           (W + 2 * padding - k) / stride + 1, gelu, std::vector<float>(k * k * Cp, 0.f),
           std::vector<float>(Cp, 0.f)};
  const at::Tensor w = weight.contiguous();
  const float* wp = w.data_ptr<float>();
  const int64_t kk = k * k;
  // (C, k*k) to (k*k, Cp), 16 channels by 16 taps at a time, transposed in registers (one float
  // at a time, the merge conv's 7x7 x 192 took about 10 us of every call)
  for (int64_t c0 = 0; c0 < C; c0 += 16) {
    for (int64_t t0 = 0; t0 < kk; t0 += 16) {
      const int64_t cn = std::min<int64_t>(16, C - c0), tn = std::min<int64_t>(16, kk - t0);
      transpose_tile(wp + c0 * kk + t0, kk, cn, tn, g.wt.data() + t0 * Cp + c0, Cp);
    }
  }
  if (bias.has_value() && bias->defined()) {
    const at::Tensor b = bias->contiguous();
    std::copy(b.data_ptr<float>(), b.data_ptr<float>() + C, g.bias.begin());
  }
  return g;
}

void dw_rows(const DwPlan& g, const float* x, int64_t row0, int64_t oh0, int64_t oh1,
             float* out) {
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    float* orow = out + (oh - oh0) * g.Wo * g.C;
    for (int64_t c = 0; c < g.Cp; c += 16) {
      if (c + 16 <= g.C) {
        conv_row<true>(g, x, row0, orow, oh, c);
      } else {
        conv_row<false>(g, x, row0, orow, oh, c);
      }
    }
  }
}

at::Tensor dwconv2d(const at::Tensor& x, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, int64_t stride, int64_t padding,
                    bool gelu) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4,
              "dwconv2d: x must be a 4-D float32 CPU tensor");
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "dwconv2d: x must be channels-last contiguous");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(weight.device().is_cpu() && weight.scalar_type() == at::kFloat &&
                  weight.dim() == 4 && weight.size(0) == C && weight.size(1) == 1 &&
                  weight.size(2) == weight.size(3),
              "dwconv2d: weight ", weight.sizes(), " is not a (C, 1, k, k) float32 CPU tensor for ",
              C, " channels");
  TORCH_CHECK(!bias.has_value() || (bias->scalar_type() == at::kFloat && bias->numel() == C),
              "dwconv2d: bias must hold C float32 values");
  TORCH_CHECK(stride >= 1 && padding >= 0, "dwconv2d: stride must be >= 1 and padding >= 0");
  const int64_t k = weight.size(2);
  const int64_t Ho = (H + 2 * padding - k) / stride + 1, Wo = (W + 2 * padding - k) / stride + 1;
  TORCH_CHECK(Ho >= 1 && Wo >= 1, "dwconv2d: a ", H, "x", W, " map is smaller than the kernel");
  at::Tensor out = at::empty({B, C, Ho, Wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (B * C == 0) return out;

  const DwPlan plan = dw_plan(weight, bias, H, W, stride, padding, gelu);
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, B * Ho, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / Ho, oh = row % Ho;
      dw_rows(plan, xp + b * H * W * C, 0, oh, oh + 1, op + (b * Ho + oh) * Wo * C);
    }
  });
  return out;
}

}  // namespace fcasearch_ops

TORCH_LIBRARY_FRAGMENT(fcasearch_kernels, m) {
  m.def("dwconv2d(Tensor x, Tensor weight, Tensor? bias, int stride, int padding, bool gelu) "
        "-> Tensor");
}

TORCH_LIBRARY_IMPL(fcasearch_kernels, CPU, m) {
  m.impl("dwconv2d", &fcasearch_ops::dwconv2d);
}
