// LayerNorm over the last dimension for CPU float32 inference: FcaFormer's norms in the eager
// inference form.
//
// Built at run time by fcasearch.models.kernels and registered as the operator
// fcasearch_kernels::layer_norm.
//
// Why: ATen's CPU LayerNorm takes 0.35-0.5 ns an element at FcaFormer's sizes (98-111 us for a
// 56x56x64 map on a 2-core AMD EPYC), several times what reading and writing the row costs. Here
// each row is read twice, 16 floats at a time (its sum and sum of squares, then the output), and
// rows are split across threads: 43 us for that map, 7.5 against 13 us for 196x192.
//
// Input x (..., C) contiguous; weight and bias (C); population variance; output like x.
// layer_norm2 (C++ only, for block.cpp) applies two norms in a row, one row at a time.
// pool_norm: the classifier head's mean over a channels-last (B, C, H, W) map, then its
// LayerNorm, (B, C) out (ATen's mean over the map's two dimensions took 117 us a call there,
// through a sum, a division and a copy; this takes a few).

#include "ops.h"
#include "simd.h"

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

using namespace fcasearch_simd;

void norm_row(const float* x, float* y, const float* w, const float* b, int64_t C, float eps) {
  // one pass for the sum and the sum of squares of x - x[0]: shifted by a value of the row, the
  // variance E[d^2] - E[d]^2 keeps its digits however far the row's mean lies from 0
  const float shift = x[0];
  const v16 sh = splat(shift);
  v16 acc = splat(0.f), acc2 = splat(0.f);
  int64_t c = 0;
  for (; c + 16 <= C; c += 16) {
    const v16 d = load(x + c) - sh;
    acc += d;
    acc2 += d * d;
  }
  float sum = hsum(acc), sq = hsum(acc2);
  for (; c < C; ++c) {
    const float d = x[c] - shift;
    sum += d;
    sq += d * d;
  }
  const float inv_c = 1.f / static_cast<float>(C);
  const float mean_d = sum * inv_c;
  const float var = std::max(sq * inv_c - mean_d * mean_d, 0.f);
  const float mean = shift + mean_d;
  const float rstd = 1.f / std::sqrt(var + eps);
  const v16 m = splat(mean), r = splat(rstd);
  for (c = 0; c + 16 <= C; c += 16) {
    store(y + c, (load(x + c) - m) * r * load(w + c) + load(b + c));
  }
  for (; c < C; ++c) y[c] = (x[c] - mean) * rstd * w[c] + b[c];
}

void check_affine(const torch::Tensor& weight, const torch::Tensor& bias, int64_t C) {
  for (const auto* t : {&weight, &bias}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == torch::kFloat32 && t->dim() == 1 &&
                    t->size(0) == C && t->is_contiguous(),
                "layer_norm: weight and bias must be contiguous float32 CPU vectors of size ", C);
  }
}

void check_inputs(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat32,
              "layer_norm: x must be float32 on CPU, got ", x.scalar_type(), " on ", x.device());
  TORCH_CHECK(x.dim() >= 1 && x.is_contiguous(), "layer_norm: x must be contiguous");
  check_affine(weight, bias, x.size(-1));
}

// f(row of x, row of y) for every row, rows split across threads (about 16K elements per task:
// small inputs stay on one thread).
template <typename F>
torch::Tensor by_rows(const torch::Tensor& x, const F& f) {
  auto y = torch::empty_like(x, at::MemoryFormat::Contiguous);
  const int64_t C = x.size(-1), rows = C > 0 ? x.numel() / C : 0;
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) f(xp + r * C, yp + r * C);
  });
  return y;
}

}  // namespace

namespace fcasearch_ops {

void layer_norm_row(const float* x, float* y, const float* weight, const float* bias, int64_t C,
                    float eps) {
  norm_row(x, y, weight, bias, C, eps);
}

torch::Tensor layer_norm(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, double eps) {
  check_inputs(x, weight, bias);
  const int64_t C = x.size(-1);
  const float* wp = weight.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  const float e = static_cast<float>(eps);
  return by_rows(x, [&](const float* xr, float* yr) { norm_row(xr, yr, wp, bp, C, e); });
}

torch::Tensor layer_norm2(const torch::Tensor& x, const torch::Tensor& weight1,
                          const torch::Tensor& bias1, double eps1, const torch::Tensor& weight2,
                          const torch::Tensor& bias2, double eps2) {
  check_inputs(x, weight1, bias1);
  check_inputs(x, weight2, bias2);
  const int64_t C = x.size(-1);
  const float *w1 = weight1.data_ptr<float>(), *b1 = bias1.data_ptr<float>();
  const float *w2 = weight2.data_ptr<float>(), *b2 = bias2.data_ptr<float>();
  const float e1 = static_cast<float>(eps1), e2 = static_cast<float>(eps2);
  return by_rows(x, [&](const float* xr, float* yr) {
    norm_row(xr, yr, w1, b1, C, e1);  // the first norm's row, still in L1 for the second
    norm_row(yr, yr, w2, b2, C, e2);
  });
}

torch::Tensor pool_norm(const torch::Tensor& x, const torch::Tensor& weight,
                        const torch::Tensor& bias, double eps) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.dim() == 4 &&
                  x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "pool_norm: x must be a channels-last float32 CPU (B, C, H, W)");
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2) * x.size(3);
  check_affine(weight, bias, C);
  TORCH_CHECK(N > 0, "pool_norm: an empty map");
  auto y = torch::empty({B, C}, x.options().memory_format(at::MemoryFormat::Contiguous));
  std::vector<float> mean(C);
  const float *xp = x.data_ptr<float>(), *wp = weight.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  const float inv_n = 1.f / static_cast<float>(N);
  for (int64_t b = 0; b < B; ++b) {
    const float* xb = xp + b * N * C;  // (N, C): channels-last
    int64_t c = 0;
    for (; c + 16 <= C; c += 16) {
      v16 acc = splat(0.f);
      for (int64_t n = 0; n < N; ++n) acc += load(xb + n * C + c);
      store(mean.data() + c, acc * inv_n);
    }
    for (; c < C; ++c) {
      float acc = 0.f;
      for (int64_t n = 0; n < N; ++n) acc += xb[n * C + c];
      mean[c] = acc * inv_n;
    }
    norm_row(mean.data(), y.data_ptr<float>() + b * C, wp, bp, C, static_cast<float>(eps));
  }
  return y;
}

}  // namespace fcasearch_ops

TORCH_LIBRARY_FRAGMENT(fcasearch_kernels, m) {
  m.def("layer_norm(Tensor x, Tensor weight, Tensor bias, float eps) -> Tensor");
  m.def("pool_norm(Tensor x, Tensor weight, Tensor bias, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(fcasearch_kernels, CPU, m) {
  m.impl("layer_norm", &fcasearch_ops::layer_norm);
  m.impl("pool_norm", &fcasearch_ops::pool_norm);
}
