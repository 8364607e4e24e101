// Linear layers for CPU float32 inference: y = x W^T + b, then optionally the exact GELU or a
// residual add, in one pass over the output: FcaFormer's Linear GEMMs in the inference form.
//
// Built at run time by fcasearch.models.kernels and registered as the operators
// fcasearch_kernels::pack_linear (W into panels, once), fcasearch_kernels::linear and
// fcasearch_kernels::linear_out (the same into a given buffer).
//
// Why: at FcaFormer's batch-1 shapes (49-3136 rows, 64-1280 columns and inner size) oneDNN and
// MKL reach their full rate only when a GEMM runs alone; inside a forward they spend 1.2-2x the
// compute floor per GEMM, more on the narrow ones, and the GELU and residual epilogues cost
// another pass. Here the weight is packed once into panels of 32 columns (K x 32, contiguous);
// a task takes one panel and a run of rows, and for each block of 8 rows accumulates the 8 x 32
// outputs in 16 vector registers over the whole inner dimension (one broadcast of x per row and
// two panel loads per step), then adds the bias, applies GELU or adds the residual, and stores.
// Vectors: simd.h.
//
// Inputs: x (..., K) contiguous; packed (ceil(N/32), K, 32) from pack_linear; bias (N) or none;
// residual (..., N) with unit stride along N, or none. Output (..., N), contiguous.

#include "simd.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <optional>

namespace {

using namespace fcasearch_simd;

constexpr int CB = 32;  // columns per panel (two vectors)
constexpr int64_t ROWS_PER_TASK = 56;  // a multiple of both row-block heights

// W (N, K) -> (ceil(N/32), K, 32), columns past N zero.
torch::Tensor pack_linear(const torch::Tensor& weight) {
  TORCH_CHECK(weight.device().is_cpu() && weight.scalar_type() == torch::kFloat32 &&
                  weight.dim() == 2,
              "pack_linear: weight must be a 2-D float32 CPU tensor (out, in)");
  const auto w = weight.contiguous();
  const int64_t N = w.size(0), K = w.size(1), NB = (N + CB - 1) / CB;
  auto packed = torch::zeros({NB, K, CB}, w.options());
  const float* src = w.data_ptr<float>();
  float* dst = packed.data_ptr<float>();
  for (int64_t n = 0; n < N; ++n) {
    float* col = dst + (n / CB) * K * CB + n % CB;
    for (int64_t k = 0; k < K; ++k) col[k * CB] = src[n * K + k];
  }
  return packed;
}

struct Epilogue {
  const float* bias;      // (N) or null
  const float* residual;  // row r at residual + r * res_stride, or null
  int64_t res_stride;
  bool gelu;
};

// Rows r0..r0+rn (rn <= RB) x columns of panel nb: x rows at xr (stride K), output rows at out
// (stride N). Rows past rn read row 0 again and are not stored. RB is 8, or 7 where the row
// count is a multiple of 7 and not of 8 (49 rows: a 7x7 map), so no block computes unused rows.
template <int RB>
inline void block(const float* xr, int64_t rn, const float* panel, int64_t K, int64_t N,
                  int64_t nb, const Epilogue& ep, int64_t r0, float* out) {
  const float* rows[RB];
  for (int r = 0; r < RB; ++r) rows[r] = xr + (r < rn ? r : 0) * K;
  v16 acc[RB][2];
  for (int r = 0; r < RB; ++r) acc[r][0] = acc[r][1] = splat(0.f);
  for (int64_t k = 0; k < K; ++k) {
    const v16 b0 = load(panel + k * CB), b1 = load(panel + k * CB + 16);
    for (int r = 0; r < RB; ++r) {
      const float a = rows[r][k];
      acc[r][0] += a * b0;
      acc[r][1] += a * b1;
    }
  }
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

// Checks the inputs and computes into out, which has x's leading dims and N columns.
void linear_into(const torch::Tensor& x, const torch::Tensor& packed, int64_t out_features,
                 const std::optional<torch::Tensor>& bias,
                 const std::optional<torch::Tensor>& residual, bool gelu, torch::Tensor& out) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.dim() >= 1 &&
                  x.is_contiguous(),
              "linear: x must be a contiguous float32 CPU tensor");
  const int64_t K = x.size(-1), N = out_features, NB = (N + CB - 1) / CB;
  TORCH_CHECK(packed.device().is_cpu() && packed.scalar_type() == torch::kFloat32 &&
                  packed.is_contiguous() && packed.dim() == 3 && packed.size(0) == NB &&
                  packed.size(1) == K && packed.size(2) == CB,
              "linear: packed ", packed.sizes(), " is not pack_linear's (", NB, ", ", K, ", ", CB,
              ") for ", N, " outputs from x ", x.sizes());
  Epilogue ep{nullptr, nullptr, 0, gelu};
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == torch::kFloat32 && bias->is_contiguous() &&
                    bias->numel() == N,
                "linear: bias must be a contiguous float32 vector of ", N);
    ep.bias = bias->data_ptr<float>();
  }
  auto out_sizes = x.sizes().vec();
  out_sizes.back() = N;
  TORCH_CHECK(out.scalar_type() == torch::kFloat32 && out.device().is_cpu() &&
                  out.is_contiguous() && out.sizes().vec() == out_sizes,
              "linear: out ", out.sizes(), " must be a contiguous float32 CPU tensor of ",
              out_sizes);
  // every task reads whole rows of x while others write out: they must not share memory (a
  // residual may be out itself: each element is read just before the same thread writes it)
  at::assert_no_overlap(out, x);
  const int64_t M = K > 0 ? x.numel() / K : 0;
  torch::Tensor res2;
  if (residual.has_value() && residual->defined()) {
    TORCH_CHECK(!gelu, "linear: GELU and a residual are not applied together");
    TORCH_CHECK(residual->scalar_type() == torch::kFloat32 && residual->sizes().vec() == out_sizes,
                "linear: residual ", residual->sizes(), " does not match the output ", out_sizes);
    res2 = residual->reshape({M, N});  // a view for the layouts the models pass
    TORCH_CHECK(res2.stride(1) == 1, "linear: residual must have unit stride along its last dim");
    ep.residual = res2.data_ptr<float>();
    ep.res_stride = res2.stride(0);
  }
  if (M == 0 || N == 0) return;
  float* op = out.data_ptr<float>();
  if (K == 0) {
    out.zero_();
    if (ep.bias != nullptr) out.add_(*bias);
    if (ep.residual != nullptr) out.add_(res2.view(out_sizes));
    if (gelu) out.copy_(at::gelu(out));
    return;
  }
  const float* xp = x.data_ptr<float>();
  const float* wp = packed.data_ptr<float>();
  const int rb = (M % 8 != 0 && M % 7 == 0) ? 7 : 8;
  const int64_t row_tasks = (M + ROWS_PER_TASK - 1) / ROWS_PER_TASK;
  // tasks: panel-major, so a thread's consecutive tasks reuse one panel from cache
  at::parallel_for(0, NB * row_tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t nb = t / row_tasks, rt = t % row_tasks;
      const float* panel = wp + nb * K * CB;
      const int64_t r_end = std::min(M, (rt + 1) * ROWS_PER_TASK);
      for (int64_t r0 = rt * ROWS_PER_TASK; r0 < r_end; r0 += rb) {
        const int64_t rn = std::min<int64_t>(rb, r_end - r0);
        if (rb == 8) {
          block<8>(xp + r0 * K, rn, panel, K, N, nb, ep, r0, op);
        } else {
          block<7>(xp + r0 * K, rn, panel, K, N, nb, ep, r0, op);
        }
      }
    }
  });
}

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& packed, int64_t out_features,
                     const std::optional<torch::Tensor>& bias,
                     const std::optional<torch::Tensor>& residual, bool gelu) {
  TORCH_CHECK(x.dim() >= 1, "linear: x must have at least one dimension");
  auto out_sizes = x.sizes().vec();
  out_sizes.back() = out_features;
  auto out = torch::empty(out_sizes, x.options());
  linear_into(x, packed, out_features, bias, residual, gelu, out);
  return out;
}

// The same into a caller's buffer (eager only: the inference form's MLP chunks reuse one).
torch::Tensor& linear_out(const torch::Tensor& x, const torch::Tensor& packed,
                          int64_t out_features, const std::optional<torch::Tensor>& bias,
                          const std::optional<torch::Tensor>& residual, bool gelu,
                          torch::Tensor& out) {
  linear_into(x, packed, out_features, bias, residual, gelu, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fcasearch_kernels, m) {
  m.def("pack_linear(Tensor weight) -> Tensor");
  m.def("linear(Tensor x, Tensor packed, int out_features, Tensor? bias, Tensor? residual, "
        "bool gelu) -> Tensor");
  m.def("linear_out(Tensor x, Tensor packed, int out_features, Tensor? bias, Tensor? residual, "
        "bool gelu, Tensor(a!) out) -> Tensor(a!)");
}

TORCH_LIBRARY_IMPL(fcasearch_kernels, CPU, m) {
  m.impl("pack_linear", &pack_linear);
  m.impl("linear", &linear);
  m.impl("linear_out", &linear_out);
}
