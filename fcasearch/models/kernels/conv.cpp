// Dense 2-D convolution for CPU float32 inference, optionally followed by the exact GELU, as an
// implicit GEMM on the packed Linear micro-kernel (gemm.h): FcaFormer's conv stem.
//
// Built at run time by fcasearch.models.kernels and registered as the operator
// fcasearch_kernels::conv2d.
//
// Why: the stem's first convolution has 3 input channels, where oneDNN reaches a fraction of its
// GEMM rate (a 3x3 stride-2 conv from a 224x224 image to 32 channels, 10.8M MACs: 200-270 us on a
// 2-core AMD EPYC, about 2.5x its compute floor), and it needs the image in channels-last memory
// first (a transpose of its own). Here every output pixel is a row of a GEMM whose K = k*k*Cin
// inputs are its receptive field: a task gathers the fields of 8 pixels into a small buffer (zeros
// in the padding; any input strides, so NCHW images are read where they lie) and runs the 8-row
// micro-kernel on each 32-channel panel of the weight, applying the bias and GELU as it stores.
//
// Inputs: x (B, Cin, H, W), any strides; packed (ceil(Cout/32), k*k*Cin, 32) from pack_linear of
// the weight ordered (Cout, ky, kx, Cin); bias (Cout) or none; square kernel, stride and zero
// padding. Output (B, Cout, Ho, Wo), channels-last.

#include "gemm.h"
#include "ops.h"

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <optional>
#include <vector>

namespace {

using namespace fcasearch_gemm;
using fcasearch_ops::ConvPlan;

// The receptive field of output pixel (oh, ow) into row (K floats, (ky, kx, c)). xb: the image
// from input row g.row0 on (rows above it are never read). off: the K input offsets of a field
// from its top-left corner (the interior case: one load each).
inline void gather(const ConvPlan& g, const float* xb, const int64_t* off, int64_t oh,
                   int64_t ow, float* row) {
  const int64_t ih0 = oh * g.stride - g.padding, iw0 = ow * g.stride - g.padding;
  const int64_t K = g.k * g.k * g.Cin;
  if (ih0 >= 0 && iw0 >= 0 && ih0 + g.k <= g.H && iw0 + g.k <= g.W) {
    const float* src = xb + (ih0 - g.row0) * g.sh + iw0 * g.sw;
    if (g.sc != 1) {
      for (int64_t j = 0; j < K; ++j) row[j] = src[off[j]];
      return;
    }
    for (int64_t j = 0; j < K; j += g.Cin) {  // channels-last: a run of Cin floats per tap
      const float* s = src + off[j];
      int64_t c = 0;
      for (; c + 16 <= g.Cin; c += 16) store(row + j + c, load(s + c));
      for (; c < g.Cin; ++c) row[j + c] = s[c];
    }
    return;
  }
  for (int64_t ky = 0; ky < g.k; ++ky) {
    const int64_t ih = ih0 + ky;
    for (int64_t kx = 0; kx < g.k; ++kx, row += g.Cin) {
      const int64_t iw = iw0 + kx;
      const bool inside = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
      const float* src = xb + (ih - g.row0) * g.sh + iw * g.sw;
      for (int64_t c = 0; c < g.Cin; ++c) row[c] = inside ? src[c * g.sc] : 0.f;
    }
  }
}

}  // namespace

namespace fcasearch_ops {

ConvPlan conv_plan(int64_t Cin, int64_t H, int64_t W, int64_t k, int64_t stride, int64_t padding,
                   int64_t sc, int64_t sh, int64_t sw) {
  ConvPlan g{Cin, H, W, k, stride, padding, (H + 2 * padding - k) / stride + 1,
             (W + 2 * padding - k) / stride + 1, sc, sh, sw, 0, std::vector<int64_t>(k * k * Cin)};
  for (int64_t ky = 0, j = 0; ky < k; ++ky)
    for (int64_t kx = 0; kx < k; ++kx)
      for (int64_t c = 0; c < Cin; ++c, ++j) g.off[j] = ky * sh + kx * sw + c * sc;
  return g;
}

void conv_rows(const ConvPlan& g, const float* xb, const float* packed, int64_t N,
               const Epilogue& ep, int64_t oh0, int64_t oh1, float* out, float* fields) {
  const int64_t K = g.k * g.k * g.Cin, NB = (N + CB - 1) / CB, M = (oh1 - oh0) * g.Wo;
  for (int64_t r0 = 0; r0 < M; r0 += 8) {  // 8 fields gathered once for every panel
    const int64_t rn = std::min<int64_t>(8, M - r0);
    for (int64_t r = 0; r < rn; ++r) {
      const int64_t p = r0 + r;
      gather(g, xb, g.off.data(), oh0 + p / g.Wo, p % g.Wo, fields + r * K);
    }
    for (int64_t nb = 0; nb < NB; ++nb) {
      block<8>(fields, rn, packed + nb * K * CB, K, N, nb, ep, r0, out);
    }
  }
}


at::Tensor conv2d(const at::Tensor& x, const at::Tensor& packed, int64_t out_channels,
                  const std::optional<at::Tensor>& bias, int64_t kernel_size, int64_t stride,
                  int64_t padding, bool gelu) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4,
              "conv2d: x must be a 4-D float32 CPU tensor (B, Cin, H, W)");
  TORCH_CHECK(kernel_size >= 1 && stride >= 1 && padding >= 0,
              "conv2d: kernel_size and stride must be >= 1 and padding >= 0");
  const int64_t B = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t k = kernel_size, N = out_channels, K = k * k * Cin, NB = (N + CB - 1) / CB;
  TORCH_CHECK(N >= 1 && packed.device().is_cpu() && packed.scalar_type() == at::kFloat &&
                  packed.is_contiguous() && packed.dim() == 3 && packed.size(0) == NB &&
                  packed.size(1) == K && packed.size(2) == CB,
              "conv2d: packed ", packed.sizes(), " is not pack_linear's (", NB, ", ", K, ", ", CB,
              ") for ", N, " outputs of a ", k, "x", k, " kernel over ", Cin, " channels");
  TORCH_CHECK(!bias.has_value() || (bias->scalar_type() == at::kFloat && bias->is_contiguous() &&
                                    bias->numel() == N),
              "conv2d: bias must be a contiguous float32 vector of ", N);
  const int64_t Ho = (H + 2 * padding - k) / stride + 1, Wo = (W + 2 * padding - k) / stride + 1;
  TORCH_CHECK(H + 2 * padding >= k && W + 2 * padding >= k,
              "conv2d: a ", H, "x", W, " map padded by ", padding, " is smaller than the kernel");
  at::Tensor out =
      at::empty({B, N, Ho, Wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (B * Ho * Wo == 0) return out;
  const ConvPlan g =
      conv_plan(Cin, H, W, k, stride, padding, x.stride(1), x.stride(2), x.stride(3));
  const Epilogue ep{bias.has_value() ? bias->data_ptr<float>() : nullptr, nullptr, 0, gelu};
  const float* xp = x.data_ptr<float>();
  const float* wp = packed.data_ptr<float>();
  float* op = out.data_ptr<float>();  // (B, Ho, Wo, N): channels-last
  // a task: one output row, all panels
  at::parallel_for(0, B * Ho, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> fields(8 * K);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / Ho, oh = t % Ho;
      conv_rows(g, xp + b * x.stride(0), wp, N, ep, oh, oh + 1, op + t * Wo * N, fields.data());
    }
  });
  return out;
}

}  // namespace fcasearch_ops

TORCH_LIBRARY_FRAGMENT(fcasearch_kernels, m) {
  m.def("conv2d(Tensor x, Tensor packed, int out_channels, Tensor? bias, int kernel_size, "
        "int stride, int padding, bool gelu) -> Tensor");
}

TORCH_LIBRARY_IMPL(fcasearch_kernels, CPU, m) {
  m.impl("conv2d", &fcasearch_ops::conv2d);
}
