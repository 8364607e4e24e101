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

#include "gemm.h"
#include "ops.h"
#include "parallel.h"
#include "simd.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <optional>

namespace {

using namespace fcasearch_gemm;
using namespace fcasearch_simd;

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
  const int rb = row_block(M);
  const int64_t row_tasks = (M + ROWS_PER_TASK - 1) / ROWS_PER_TASK;
  // tasks: panel-major, so a thread's consecutive tasks reuse one panel from cache (each thread
  // starts on its own share of them, parallel.h); each row block prefetches its share of the
  // next panel (gemm.h)
  const int64_t blocks = (M + rb - 1) / rb, lines = K * CB / 16;  // a panel's cache lines
  // task t: panel t / row_tasks, row task t % row_tasks
  auto run = [&](int64_t t, const char* next) {
    const int64_t nb = t / row_tasks, rt = t % row_tasks;
    const float* panel = wp + nb * K * CB;
    const int64_t r_end = std::min(M, (rt + 1) * ROWS_PER_TASK);
    for (int64_t r0 = rt * ROWS_PER_TASK; r0 < r_end; r0 += rb) {
      const int64_t rn = std::min<int64_t>(rb, r_end - r0), i = r0 / rb;
      const int64_t l0 = i * lines / blocks, l1 = (i + 1) * lines / blocks;
      const char* pf = next != nullptr ? next + l0 * 64 : nullptr;
      const int64_t pfn = next != nullptr ? l1 - l0 : 0;
      const int64_t nn = std::min<int64_t>(rb, std::max<int64_t>(r_end - r0 - rb, 0));
      block_rows(rb, xp + r0 * K, rn, panel, K, N, nb, ep, r0, op, pf, pfn, xp + (r0 + rb) * K,
                 nn);
    }
  };
  fcasearch_par::parallel_tasks(NB * row_tasks, [&](fcasearch_par::Tasks& tasks) {
    for (int64_t t; (t = tasks.next()) >= 0;) {
      const int64_t nb = t / row_tasks;
      run(t, nb + 1 < NB ? reinterpret_cast<const char*>(wp + (nb + 1) * K * CB) : nullptr);
    }
  });
}

}  // namespace

namespace fcasearch_ops {

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

}  // namespace fcasearch_ops

TORCH_LIBRARY_FRAGMENT(fcasearch_kernels, m) {
  m.def("pack_linear(Tensor weight) -> Tensor");
  m.def("linear(Tensor x, Tensor packed, int out_features, Tensor? bias, Tensor? residual, "
        "bool gelu) -> Tensor");
  m.def("linear_out(Tensor x, Tensor packed, int out_features, Tensor? bias, Tensor? residual, "
        "bool gelu, Tensor(a!) out) -> Tensor(a!)");
}

TORCH_LIBRARY_IMPL(fcasearch_kernels, CPU, m) {
  m.impl("pack_linear", &pack_linear);
  m.impl("linear", &fcasearch_ops::linear);
  m.impl("linear_out", &fcasearch_ops::linear_out);
}
