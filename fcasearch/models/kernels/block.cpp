// Whole blocks and stage parts of the eager inference form as single operators, chaining
// fcasearch's kernels (ops.h) in C++: the FcaFormer block (fca_block), the ConvNeXt block
// (convnext_block), the conv stem (stem) and the downsample between stages (downsample).
//
// Built at run time by fcasearch.models.kernels and registered as fcasearch_kernels::<name>.
//
// Why, first: in eager mode each kernel call from Python costs a few microseconds of interpreter
// and dispatcher time, and a block's Python code (module attribute lookups, the checks that
// choose a path, the views between kernels) costs more. Here a block's 10-20 steps run back to
// back; Python makes one call per block. On a 2-core AMD EPYC, FcaFormer-L1 at batch 1 (paired,
// blocks as single operators against one call per step): 0.874 of the time at 32x32, where the
// arithmetic is small, and 0.94-0.98 at 224x224.
//
// Why, second: at the early stages' resolutions each step's output is 0.4-3.2 MB, written by
// both cores (each kernel splits its work between threads) and read back by both for the next
// step; on a shared host that memory traffic, not arithmetic, sets the pace, and the more so the
// busier the host's other tenants are. The stem, the downsamples, the ConvNeXt blocks and the
// FcaFormer block's part after attention therefore run in bands of rows instead: each thread takes
// a band through all the steps (the rows an earlier step's conv reads around the band made there
// too, or kept from the thread's previous band), so a band's intermediates stay in that core's
// cache and the threads meet once per operator instead of once per step.
//
// The steps, their order and their arithmetic are those of the Python inference path (fca.py,
// convnext.py, layers.mlp_add): every output value is computed by the same kernel code in the
// same order, and the tests compare the two bit for bit.

#include "gemm.h"
#include "ops.h"
#include "parallel.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <cmath>
#include <optional>
#include <vector>

namespace {

using fcasearch_ops::dwconv2d;
using fcasearch_ops::fca_attention;
using fcasearch_ops::layer_norm;
using fcasearch_ops::linear;
using fcasearch_ops::linear_out;

using fcasearch_ops::Params;

const at::Tensor& need(const Params& p, size_t i, const char* what) {
  TORCH_CHECK(p[i].has_value() && p[i]->defined(), "block: parameter ", i, " (", what,
              ") is missing");
  return *p[i];
}

std::optional<at::Tensor> maybe(const Params& p, size_t i) {
  return p[i].has_value() && p[i]->defined() ? p[i] : std::nullopt;
}

// residual + fc2(gelu(fc1(xn))) over the rows of xn (..., d), as layers.mlp_add: in row chunks
// whose hidden activations hold at most chunk_elements floats, written into xn.
at::Tensor mlp_add(at::Tensor xn, const at::Tensor& residual, const at::Tensor& p1,
                   const at::Tensor& b1, int64_t hidden, const at::Tensor& p2, const at::Tensor& b2,
                   int64_t chunk_elements) {
  const int64_t d = xn.size(-1), rows = xn.numel() / d;
  const int64_t chunks = (rows * hidden + chunk_elements - 1) / chunk_elements;
  if (chunks <= 1) {
    const at::Tensor h = linear(xn, p1, hidden, b1, std::nullopt, true);
    return linear(h, p2, d, b2, residual, false);
  }
  const int64_t step = (rows + chunks - 1) / chunks;
  at::Tensor out = xn.view({rows, d});
  const at::Tensor res = residual.reshape({rows, d});
  at::Tensor buffer = at::empty({step, hidden}, xn.options());
  for (int64_t i = 0; i < rows; i += step) {
    const int64_t n = std::min(step, rows - i);
    at::Tensor x_i = out.narrow(0, i, n), h = buffer.narrow(0, 0, n);
    linear_out(x_i, p1, hidden, b1, std::nullopt, true, h);
    linear_out(h, p2, d, b2, res.narrow(0, i, n), false, x_i);
  }
  return xn;
}

// A buffer of at least n floats that belongs to the calling thread (slot: which of its buffers),
// kept between calls: the thread pool's threads live as long as the process.
float* scratch(int slot, int64_t n) {
  thread_local std::vector<float> buffers[2];
  std::vector<float>& b = buffers[slot];
  if (static_cast<int64_t>(b.size()) < n) b.resize(n);
  return b.data();
}

// Rows per band when B images of H rows of W pixels are cut into bands of whole rows for nt
// threads: at most max_px pixels a band (one row at least), and of those the height whose
// busiest thread gets the fewest rows (the tallest such).
int64_t band_rows(int64_t B, int64_t H, int64_t W, int64_t max_px, int64_t nt) {
  int64_t best = 1, best_span = -1;
  for (int64_t R = 1; R <= H && (R == 1 || R * W <= max_px); ++R) {
    const int64_t tasks = B * ((H + R - 1) / R), span = (tasks + nt - 1) / nt * R;
    if (best_span < 0 || span <= best_span) {
      best = R;
      best_span = span;
    }
  }
  return best;
}

// Rows [a, b) of an intermediate map (row_len floats a row) at buf, made by make(r0, r1, dst). The
// buffer held rows [held.first, held.second) of the same image from the calling thread's previous
// band (or nothing: first < 0): the rows both bands need are moved to the front, not made again.
template <typename F>
void window_rows(float* buf, int64_t row_len, int64_t a, int64_t b,
                 std::pair<int64_t, int64_t>& held, const F& make) {
  int64_t from = a;
  if (held.first >= 0 && held.first <= a && a < held.second) {
    from = std::min(held.second, b);
    std::memmove(buf, buf + (a - held.first) * row_len, (from - a) * row_len * sizeof(float));
  }
  if (from < b) make(from, b, buf + (from - a) * row_len);
  held = {a, b};
}

// The bands that tasks hands out (of B images, `bands` each, R output rows a band) of a stage whose
// second step is a k x k, stride-s conv, zero padding pad, over a map of Hin rows (row_len floats
// a row) that its first step makes: per band, make(b, r0, r1, dst) makes the rows of that map
// the band reads (window_rows: rows of the thread's previous band of the same image are kept),
// then use(b, o0, o1, i0) runs the rest on output rows o0..o1, the map's rows from i0 on at buf.
template <typename Make, typename Use>
void strided_bands(fcasearch_par::Tasks& tasks, int64_t bands, int64_t R, int64_t Ho, int64_t Hin,
                   int64_t s, int64_t k, int64_t pad, float* buf, int64_t row_len,
                   const Make& make, const Use& use) {
  std::pair<int64_t, int64_t> held{-1, -1};
  int64_t image = -1;
  for (int64_t t; (t = tasks.next()) >= 0;) {
    const int64_t b = t / bands, o0 = t % bands * R, o1 = std::min(Ho, o0 + R);
    if (b != image) held = {-1, -1};  // a new image
    image = b;
    const int64_t i0 = std::max<int64_t>(0, o0 * s - pad);
    const int64_t i1 = std::min<int64_t>(Hin, (o1 - 1) * s - pad + k);
    window_rows(buf, row_len, i0, i1, held,
                [&](int64_t r0, int64_t r1, float* dst) { make(b, r0, r1, dst); });
    use(b, o0, o1, i0);
  }
}

// Output rows per band of a stride-s, k x k conv stage: its input rows must fit in max_floats
// (row_floats each), the bands then split as band_rows does.
int64_t strided_band_rows(int64_t B, int64_t Ho, int64_t Wo, int64_t s, int64_t k,
                          int64_t row_floats, int64_t max_floats) {
  const int64_t in_rows = max_floats / std::max<int64_t>(row_floats, 1);
  const int64_t rows = std::max<int64_t>(1, (in_rows - k) / s + 1);
  return band_rows(B, Ho, Wo, rows * Wo, at::get_num_threads());
}

const float* data_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->data_ptr<float>() : nullptr;
}

void check_packed(const at::Tensor& packed, int64_t K, int64_t N, const char* what) {
  using fcasearch_gemm::CB;
  TORCH_CHECK(packed.is_contiguous() && packed.scalar_type() == at::kFloat && packed.dim() == 3 &&
                  packed.size(0) == (N + CB - 1) / CB && packed.size(1) == K &&
                  packed.size(2) == CB,
              what, ": packed ", packed.sizes(), " is not pack_linear's for ", K, " -> ", N);
}

void check_vector(const std::optional<at::Tensor>& t, int64_t n, const char* what) {
  TORCH_CHECK(!t.has_value() || !t->defined() ||
                  (t->scalar_type() == at::kFloat && t->is_contiguous() && t->numel() == n),
              what, " must be a contiguous float32 vector of ", n);
}

// The FcaFormer block after its attention, in bands of grid rows, each band wholly on one thread:
// the local conv's rows, the two LayerNorms, the MLP and its residual (the merge conv, whose
// tokens leave the block, runs before). Against the step-by-step path, whose GEMMs split the
// output columns between threads, every thread reads all of the MLP's weights, and in exchange
// the hidden activations stay in its cache and the threads meet once. Measured on a 2-core AMD
// EPYC, per block, banded against step by step: 0.94-0.96 of the time at L1's 196 tokens of
// width 192, 1.00 at L2's 196 of 320, 1.08-1.11 at L1's 49 of 320 and 1.03-1.05 at L2's 49 of 480
// (batch 1), 0.99-1.01 at L1 batch 8. So a block runs banded where its rows (B * N) are at least
// its width d. Each value as in the step-by-step path.
at::Tensor tail_banded(const at::Tensor& t, const std::optional<at::Tensor>& local_w,
                       const std::optional<at::Tensor>& local_b, const Params& p,
                       at::ArrayRef<double> eps, int64_t B, int64_t rh, int64_t rw, int64_t d,
                       int64_t hidden) {
  for (const size_t i : {15, 16, 17, 18, 22}) {
    check_vector(need(p, i, "norm or fc2 bias"), d, "fca_block: norm weights and biases, fc2 bias");
  }
  check_vector(need(p, 20, "fc1 bias"), hidden, "fca_block: fc1's bias");
  check_packed(need(p, 19, "packed fc1"), d, hidden, "fca_block fc1");
  check_packed(need(p, 21, "packed fc2"), hidden, d, "fca_block fc2");
  TORCH_CHECK(!local_w || (local_w->dim() == 4 && local_w->size(0) == d && local_w->size(1) == 1 &&
                           local_w->size(2) == local_w->size(3) && local_w->size(2) % 2 == 1),
              "fca_block: the local conv's weight is not (", d, ", 1, k, k), k odd");
  check_vector(local_b, d, "fca_block: the local conv's bias");
  at::Tensor out = at::empty_like(t);
  std::optional<fcasearch_ops::DwPlan> plan;
  if (local_w) {
    plan = fcasearch_ops::dw_plan(*local_w, local_b, rh, rw, 1, local_w->size(-1) / 2, false);
  }
  // bands whose hidden activations fit in 512 KiB
  const int64_t max_px = std::max<int64_t>(1, 131072 / std::max<int64_t>(hidden, 1));
  const int64_t R = band_rows(B, rh, rw, max_px, at::get_num_threads());
  const int64_t bands = (rh + R - 1) / R;
  const float* tp = t.data_ptr<float>();
  const float *w1 = p[15]->data_ptr<float>(), *b1 = p[16]->data_ptr<float>();  // norm2
  const float *w2 = p[17]->data_ptr<float>(), *b2 = p[18]->data_ptr<float>();  // the MLP's norm
  const float e1 = static_cast<float>(eps[2]), e2 = static_cast<float>(eps[3]);
  const float *p1 = p[19]->data_ptr<float>(), *p2 = p[21]->data_ptr<float>();
  const fcasearch_gemm::Epilogue ep1{p[20]->data_ptr<float>(), nullptr, 0, true};
  const float* fc2_bias = p[22]->data_ptr<float>();
  float* op = out.data_ptr<float>();
  fcasearch_par::parallel_tasks(B * bands, [&](fcasearch_par::Tasks& tasks) {
    float* y = scratch(0, 2 * R * rw * d);  // the local conv's rows, then the normalized rows
    float* h = scratch(1, R * rw * hidden);
    for (int64_t tk; (tk = tasks.next()) >= 0;) {
      const int64_t b = tk / bands, r0 = tk % bands * R, r1 = std::min(rh, r0 + R);
      const int64_t px = (r1 - r0) * rw, offset = (b * rh + r0) * rw * d;
      const float* res = tp + offset;
      if (plan) {
        fcasearch_ops::dw_rows(*plan, tp + b * rh * rw * d, 0, r0, r1, y);
        res = y;
      }
      float* xm = y + R * rw * d;
      for (int64_t i = 0; i < px; ++i) {
        fcasearch_ops::layer_norm_row(res + i * d, xm + i * d, w1, b1, d, e1);
        fcasearch_ops::layer_norm_row(xm + i * d, xm + i * d, w2, b2, d, e2);
      }
      fcasearch_gemm::gemm_rows(xm, px, d, p1, hidden, ep1, h);
      const fcasearch_gemm::Epilogue ep2{fc2_bias, res, d, false};  // + the residual rows
      fcasearch_gemm::gemm_rows(h, px, hidden, p2, d, ep2, op + offset);
    }
  });
  return out;
}

// (B, N + M, d): norm1 of x's rows, then per image s_norm of the cross tokens' rows times their
// scale factors (p[2], (1, M, 1), or none), in one pass over the rows; each value as norm1(x),
// cross * scale, s_norm(...) and their concatenation compute it.
at::Tensor norm_with_cross(const at::Tensor& x, const at::Tensor& cross, const Params& p,
                           at::ArrayRef<double> eps) {
  const int64_t B = x.size(0), N = x.size(1), d = x.size(2);
  TORCH_CHECK(cross.dim() == 3 && cross.size(0) == B && cross.size(2) == d &&
                  cross.scalar_type() == at::kFloat,
              "fca_block: cross tokens ", cross.sizes(), " do not fit x ", x.sizes());
  const at::Tensor c = cross.contiguous();
  const int64_t M = c.size(1);
  const auto scale = maybe(p, 2);
  TORCH_CHECK(!scale || (scale->numel() == M && scale->is_contiguous()),
              "fca_block: scale factors must hold one value per cross token (", M, ")");
  for (const size_t i : {0, 1, 3, 4}) {
    check_vector(need(p, i, "norm1 or s_norm weight or bias"), d,
                 "fca_block: norm1's and s_norm's weights and biases");
  }
  at::Tensor out = at::empty({B, N + M, d}, x.options());
  const float *xp = x.data_ptr<float>(), *cp = c.data_ptr<float>();
  const float* sp = scale ? scale->data_ptr<float>() : nullptr;
  const float *w1 = p[0]->data_ptr<float>(), *b1 = p[1]->data_ptr<float>();
  const float *w2 = p[3]->data_ptr<float>(), *b2 = p[4]->data_ptr<float>();
  const float e1 = static_cast<float>(eps[0]), e2 = static_cast<float>(eps[1]);
  float* op = out.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(d, 1));
  at::parallel_for(0, B * (N + M), grain, [&](int64_t begin, int64_t end) {
    float* row = scratch(0, d);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / (N + M), i = r % (N + M);
      if (i < N) {
        fcasearch_ops::layer_norm_row(xp + (b * N + i) * d, op + r * d, w1, b1, d, e1);
        continue;
      }
      const float* src = cp + (b * M + i - N) * d;
      if (sp != nullptr) {
        for (int64_t j = 0; j < d; ++j) row[j] = src[j] * sp[i - N];
        src = row;
      }
      fcasearch_ops::layer_norm_row(src, op + r * d, w2, b2, d, e2);
    }
  });
  return out;
}

}  // namespace

namespace fcasearch_ops {

Params unpack(const c10::List<std::optional<at::Tensor>>& list) {
  Params out;
  out.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) out.push_back(list.get(i));
  return out;
}

// p: norm1 w, b | scale factors (1, M, 1) | s_norm w, b | packed qkv | packed q | packed kv |
//    qkv bias | mask (1, h, N, N + M) | packed proj, proj bias | merge conv weight |
//    local conv weight, bias | norm2 w, b | the MLP's norm w, b | packed fc1, fc1 bias |
//    packed fc2, fc2 bias | relative-position segments (h, Rh, Rw, Rw), cross-token biases (h, M)
//    (with the segments, attention makes the mask's values as it reads them; else it reads mask)
// cfg: heads, grid rows, grid cols, merge stride (0: no merge), MLP hidden width, chunk elements
// eps: norm1, s_norm, norm2, the MLP's norm
std::vector<at::Tensor> fca_block(const at::Tensor& x, const std::optional<at::Tensor>& cross,
                                  const Params& p, at::IntArrayRef cfg, at::ArrayRef<double> eps) {
  TORCH_CHECK(p.size() == 25 && cfg.size() == 6 && eps.size() == 4,
              "fca_block: 25 parameters, 6 settings and 4 epsilons expected");
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous(), "fca_block: x must be a contiguous (B, N, d)");
  const int64_t B = x.size(0), N = x.size(1), d = x.size(2);
  const int64_t h = cfg[0], rh = cfg[1], rw = cfg[2], stride = cfg[3], hidden = cfg[4];
  TORCH_CHECK(h > 0 && d % h == 0 && rh * rw == N, "fca_block: settings do not fit x ", x.sizes());
  const int64_t hd = d / h;
  const bool has_cross = cross.has_value() && cross->defined();
  const at::Tensor &norm1_w = need(p, 0, "norm1 weight"), &norm1_b = need(p, 1, "norm1 bias");
  const at::Tensor& bias = need(p, 8, "qkv bias");
  at::Tensor q, k, v;
  if (has_cross) {
    // the keys' and values' input: the normalized tokens, then the cross tokens times their
    // scale factors, normalized by s_norm
    const at::Tensor xc = norm_with_cross(x, *cross, p, eps);  // (B, N + M, d)
    const at::Tensor xn = xc.narrow(1, 0, N).contiguous();  // a view for B = 1
    q = linear(xn, need(p, 6, "packed q"), d, bias.narrow(0, 0, d), std::nullopt, false)
            .view({B, N, h, hd})
            .transpose(1, 2);
    const at::Tensor kv = linear(xc, need(p, 7, "packed kv"), 2 * d, bias.narrow(0, d, 2 * d),
                                 std::nullopt, false)
                              .view({B, -1, 2, h, hd})
                              .permute({2, 0, 3, 1, 4});
    k = kv[0];
    v = kv[1];
  } else {
    const at::Tensor xn = layer_norm(x, norm1_w, norm1_b, eps[0]);
    const at::Tensor qkv = linear(xn, need(p, 5, "packed qkv"), 3 * d, bias, std::nullopt, false)
                               .view({B, N, 3, h, hd})
                               .permute({2, 0, 3, 1, 4});
    q = qkv[0];
    k = qkv[1];
    v = qkv[2];
  }
  const double scale = 1.0 / std::sqrt(double(hd));
  const auto segments = maybe(p, 23);
  const at::Tensor o =
      (segments ? fcasearch_ops::fca_attention_relative(q, k, v, *segments, maybe(p, 24), scale)
                : fca_attention(q, k, v, need(p, 9, "mask"), scale))
          .view({B, N, d});
  at::Tensor t = linear(o, need(p, 10, "packed proj"), d, need(p, 11, "proj bias"), x, false);
  std::vector<at::Tensor> result;
  const auto merge_w = maybe(p, 12);
  const auto local_w = maybe(p, 13);
  if (merge_w) {
    TORCH_CHECK(stride > 0, "fca_block: a merge conv needs its stride");
    const at::Tensor map = t.view({B, rh, rw, d}).permute({0, 3, 1, 2});  // channels-last
    const at::Tensor merged = dwconv2d(map, *merge_w, std::nullopt, stride, stride - 1, false);
    result.push_back(merged.flatten(2).transpose(1, 2));  // (B, S, d), a view
  }
  at::Tensor out;
  if (B * N >= d) {  // see tail_banded
    out = tail_banded(t, local_w, maybe(p, 14), p, eps, B, rh, rw, d, hidden);
  } else {
    if (local_w) {
      const at::Tensor map = t.view({B, rh, rw, d}).permute({0, 3, 1, 2});  // channels-last
      const int64_t pad = local_w->size(-1) / 2;
      t = dwconv2d(map, *local_w, maybe(p, 14), 1, pad, false)
              .permute({0, 2, 3, 1})
              .reshape({B, N, d});
    }
    const at::Tensor xm = fcasearch_ops::layer_norm2(t, need(p, 15, "norm2 weight"),
                                                     need(p, 16, "norm2 bias"), eps[2],
                                                     need(p, 17, "MLP norm weight"),
                                                     need(p, 18, "MLP norm bias"), eps[3]);
    out = mlp_add(xm, t, need(p, 19, "packed fc1"), need(p, 20, "fc1 bias"), hidden,
                  need(p, 21, "packed fc2"), need(p, 22, "fc2 bias"), cfg[5]);
  }
  result.insert(result.begin(), out);
  return result;
}

// The downsample between stages in bands of output rows, each band on one thread: the 1x1 conv
// (+GELU) of the input rows its strided depthwise conv reads, that conv (+GELU), the second 1x1
// conv; the band's intermediates stay in cache (at L1's first downsample the 1x1 conv's output is
// 1.6 MB), the threads meet once. Each value as in the step-by-step path (layers, convnext.py).
// x (B, d, H, W) channels-last. p: packed conv1, bias | dw weight (o, 1, k, k), bias | packed
// conv3, bias. cfg: out channels, stride, padding. Output (B, o, Ho, Wo) channels-last.
at::Tensor downsample(const at::Tensor& x, const Params& p, at::IntArrayRef cfg) {
  TORCH_CHECK(p.size() == 6 && cfg.size() == 3, "downsample: 6 parameters, 3 settings");
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.is_cpu() &&
                  x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "downsample: x must be a channels-last float32 CPU (B, d, H, W)");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = cfg[0], stride = cfg[1], pad = cfg[2];
  const at::Tensor &p1 = need(p, 0, "packed conv1"), &w2 = need(p, 2, "dw weight");
  const at::Tensor& p3 = need(p, 4, "packed conv3");
  check_packed(p1, C, O, "downsample conv1");
  check_packed(p3, O, O, "downsample conv3");
  check_vector(p[1], O, "downsample: conv1 bias");
  check_vector(p[3], O, "downsample: dw bias");
  check_vector(p[5], O, "downsample: conv3 bias");
  TORCH_CHECK(w2.dim() == 4 && w2.size(0) == O && w2.size(1) == 1 && w2.size(2) == w2.size(3) &&
                  stride >= 1 && pad >= 0 && H + 2 * pad >= w2.size(2) && W + 2 * pad >= w2.size(2),
              "downsample: dw weight ", w2.sizes(), " with stride ", stride, " and padding ", pad,
              " does not fit ", O, " channels of a ", H, "x", W, " map");
  const int64_t k = w2.size(2);
  const fcasearch_ops::DwPlan plan = fcasearch_ops::dw_plan(w2, p[3], H, W, stride, pad, true);
  const int64_t Ho = plan.Ho, Wo = plan.Wo;
  const auto channels_last = x.options().memory_format(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty({B, O, Ho, Wo}, channels_last);
  if (out.numel() == 0) return out;
  const int64_t R = strided_band_rows(B, Ho, Wo, stride, k, W * O, 65536);
  const int64_t bands = (Ho + R - 1) / R, in_rows = (R - 1) * stride + k;
  const float *xp = x.data_ptr<float>(), *p1p = p1.data_ptr<float>(), *p3p = p3.data_ptr<float>();
  const fcasearch_gemm::Epilogue ep1{data_or_null(p[1]), nullptr, 0, true};
  const fcasearch_gemm::Epilogue ep3{data_or_null(p[5]), nullptr, 0, false};
  float* op = out.data_ptr<float>();
  fcasearch_par::parallel_tasks(B * bands, [&](fcasearch_par::Tasks& tasks) {
    float* y = scratch(0, in_rows * W * O);
    float* z = scratch(1, R * Wo * O);
    strided_bands(
        tasks, bands, R, Ho, H, stride, k, pad, y, W * O,
        [&](int64_t b, int64_t r0, int64_t r1, float* dst) {
          const float* xb = xp + b * H * W * C;
          fcasearch_gemm::gemm_rows(xb + r0 * W * C, (r1 - r0) * W, C, p1p, O, ep1, dst);
        },
        [&](int64_t b, int64_t o0, int64_t o1, int64_t i0) {
          fcasearch_ops::dw_rows(plan, y, i0, o0, o1, z);
          float* rows = op + (b * Ho + o0) * Wo * O;
          fcasearch_gemm::gemm_rows(z, (o1 - o0) * Wo, O, p3p, O, ep3, rows);
        });
  });
  return out;
}

// The conv stem (two k x k stride-s convs, GELU after the first) in bands of output rows, each
// band on one thread: the first conv's rows that the band's second-conv rows read, then those;
// the first conv's output (1.6 MB at 224x224) stays in cache. Each value as in two conv2d calls.
// x (B, Cin, H, W), any strides. p: packed conv1, bias | packed conv2, bias (pack_conv's layout).
// cfg: conv1 out channels, conv2 out channels, kernel size, stride, padding.
at::Tensor stem(const at::Tensor& x, const Params& p, at::IntArrayRef cfg) {
  TORCH_CHECK(p.size() == 4 && cfg.size() == 5, "stem: 4 parameters, 5 settings");
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.is_cpu(),
              "stem: x must be a float32 CPU (B, Cin, H, W)");
  const int64_t B = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t C1 = cfg[0], C2 = cfg[1], k = cfg[2], s = cfg[3], pad = cfg[4];
  TORCH_CHECK(k >= 1 && s >= 1 && pad >= 0 && H + 2 * pad >= k && W + 2 * pad >= k,
              "stem: a ", k, "x", k, " stride-", s, " conv padded by ", pad, " does not fit a ", H,
              "x", W, " image");
  const at::Tensor &p1 = need(p, 0, "packed conv1"), &p2 = need(p, 2, "packed conv2");
  check_packed(p1, k * k * Cin, C1, "stem conv1");
  check_packed(p2, k * k * C1, C2, "stem conv2");
  check_vector(p[1], C1, "stem: conv1 bias");
  check_vector(p[3], C2, "stem: conv2 bias");
  const fcasearch_ops::ConvPlan g1 =
      fcasearch_ops::conv_plan(Cin, H, W, k, s, pad, x.stride(1), x.stride(2), x.stride(3));
  const int64_t H1 = g1.Ho, W1 = g1.Wo;
  TORCH_CHECK(H1 + 2 * pad >= k && W1 + 2 * pad >= k, "stem: the first conv's ", H1, "x", W1,
              " output is too small for the second");
  const fcasearch_ops::ConvPlan g2 =
      fcasearch_ops::conv_plan(C1, H1, W1, k, s, pad, 1, W1 * C1, C1);
  const int64_t H2 = g2.Ho, W2 = g2.Wo;
  const auto channels_last = x.options().memory_format(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty({B, C2, H2, W2}, channels_last);
  if (out.numel() == 0) return out;
  const int64_t R = strided_band_rows(B, H2, W2, s, k, W1 * C1, 32768);
  const int64_t bands = (H2 + R - 1) / R, in_rows = (R - 1) * s + k;
  const float *xp = x.data_ptr<float>(), *p1p = p1.data_ptr<float>(), *p2p = p2.data_ptr<float>();
  const fcasearch_gemm::Epilogue ep1{data_or_null(p[1]), nullptr, 0, true};
  const fcasearch_gemm::Epilogue ep2{data_or_null(p[3]), nullptr, 0, false};
  float* op = out.data_ptr<float>();
  fcasearch_par::parallel_tasks(B * bands, [&](fcasearch_par::Tasks& tasks) {
    float* y = scratch(0, in_rows * W1 * C1);
    float* fields = scratch(1, 8 * k * k * std::max(Cin, C1));
    fcasearch_ops::ConvPlan band2 = g2;  // its row0 follows the band
    strided_bands(
        tasks, bands, R, H2, H1, s, k, pad, y, W1 * C1,
        [&](int64_t b, int64_t r0, int64_t r1, float* dst) {
          fcasearch_ops::conv_rows(g1, xp + b * x.stride(0), p1p, C1, ep1, r0, r1, dst, fields);
        },
        [&](int64_t b, int64_t o0, int64_t o1, int64_t i0) {
          band2.row0 = i0;
          float* rows = op + (b * H2 + o0) * W2 * C2;
          fcasearch_ops::conv_rows(band2, y, p2p, C2, ep2, o0, o1, rows, fields);
        });
  });
  return out;
}

// The ConvNeXt block in bands of rows, each band wholly on one thread: its 7x7 conv rows (from
// the input rows around them), their LayerNorm, the MLP, the residual; the band's intermediates
// stay in that core's cache (a 56x56x64 map's are 0.8-3.2 MB a step when each step runs over the
// whole map), and the threads meet once per block instead of once per step. Each value is
// computed as in the step-by-step path (same kernels, same order of operations).
// x (B, d, H, W) channels-last. p: dwconv weight, bias | norm w, b | packed fc1, fc1 bias |
// packed fc2, fc2 bias. cfg: MLP hidden width. Output channels-last.
at::Tensor convnext_block(const at::Tensor& x, const Params& p, at::IntArrayRef cfg, double eps) {
  TORCH_CHECK(p.size() == 8 && cfg.size() == 1, "convnext_block: 8 parameters, 1 setting");
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.is_cpu() &&
                  x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "convnext_block: x must be a channels-last float32 CPU (B, d, H, W)");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), hidden = cfg[0];
  const at::Tensor& w = need(p, 0, "dwconv weight");
  const at::Tensor &nw = need(p, 2, "norm weight"), &nb = need(p, 3, "norm bias");
  const at::Tensor &p1 = need(p, 4, "packed fc1"), &b1 = need(p, 5, "fc1 bias");
  const at::Tensor &p2 = need(p, 6, "packed fc2"), &b2 = need(p, 7, "fc2 bias");
  using fcasearch_gemm::CB;
  TORCH_CHECK(w.dim() == 4 && w.size(0) == C && w.size(1) == 1 && w.size(2) == w.size(3) &&
                  w.size(2) % 2 == 1,
              "convnext_block: dwconv weight ", w.sizes(), " is not (", C, ", 1, k, k), k odd");
  TORCH_CHECK(nw.numel() == C && nb.numel() == C && b1.numel() == hidden && b2.numel() == C &&
                  nw.is_contiguous() && nb.is_contiguous() && b1.is_contiguous() &&
                  b2.is_contiguous(),
              "convnext_block: norm and bias sizes do not fit ", C, " channels, hidden ", hidden);
  TORCH_CHECK(p1.is_contiguous() && p1.dim() == 3 && p1.size(0) == (hidden + CB - 1) / CB &&
                  p1.size(1) == C && p2.is_contiguous() && p2.dim() == 3 &&
                  p2.size(0) == (C + CB - 1) / CB && p2.size(1) == hidden,
              "convnext_block: packed fc1 ", p1.sizes(), " or fc2 ", p2.sizes(),
              " is not pack_linear's for ", C, " -> ", hidden, " -> ", C);
  at::Tensor out = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  if (out.numel() == 0) return out;
  const fcasearch_ops::DwPlan plan =
      fcasearch_ops::dw_plan(w, maybe(p, 1), H, W, 1, w.size(2) / 2, false);
  // bands whose hidden activations fit in 256 KiB (128-256 pixels at FcaFormer's widths)
  const int64_t R = band_rows(B, H, W, std::max<int64_t>(1, 65536 / std::max<int64_t>(hidden, 1)),
                              at::get_num_threads());
  const int64_t bands = (H + R - 1) / R;
  const float *xp = x.data_ptr<float>(), *nwp = nw.data_ptr<float>(), *nbp = nb.data_ptr<float>();
  const float *p1p = p1.data_ptr<float>(), *p2p = p2.data_ptr<float>();
  const float e = static_cast<float>(eps);
  const fcasearch_gemm::Epilogue ep1{b1.data_ptr<float>(), nullptr, 0, true};
  float* op = out.data_ptr<float>();
  fcasearch_par::parallel_tasks(B * bands, [&](fcasearch_par::Tasks& tasks) {
    float* y = scratch(0, R * W * C);
    float* h = scratch(1, R * W * hidden);
    for (int64_t t; (t = tasks.next()) >= 0;) {
      const int64_t b = t / bands, r0 = t % bands * R, r1 = std::min(H, r0 + R);
      const int64_t px = (r1 - r0) * W, offset = (b * H + r0) * W * C;
      fcasearch_ops::dw_rows(plan, xp + b * H * W * C, 0, r0, r1, y);
      for (int64_t i = 0; i < px; ++i) {
        fcasearch_ops::layer_norm_row(y + i * C, y + i * C, nwp, nbp, C, e);
      }
      fcasearch_gemm::gemm_rows(y, px, C, p1p, hidden, ep1, h);
      const fcasearch_gemm::Epilogue ep2{b2.data_ptr<float>(), xp + offset, C, false};
      fcasearch_gemm::gemm_rows(h, px, hidden, p2p, C, ep2, op + offset);
    }
  });
  return out;
}

}  // namespace fcasearch_ops

namespace {

using List = c10::List<std::optional<at::Tensor>>;

// The registered operators take their parameters as a list (Tensor?[]).
std::vector<at::Tensor> fca_block_op(const at::Tensor& x, const std::optional<at::Tensor>& cross,
                                     const List& params, at::IntArrayRef cfg,
                                     at::ArrayRef<double> eps) {
  return fcasearch_ops::fca_block(x, cross, fcasearch_ops::unpack(params), cfg, eps);
}
at::Tensor convnext_block_op(const at::Tensor& x, const List& params, at::IntArrayRef cfg,
                             double eps) {
  return fcasearch_ops::convnext_block(x, fcasearch_ops::unpack(params), cfg, eps);
}
at::Tensor downsample_op(const at::Tensor& x, const List& params, at::IntArrayRef cfg) {
  return fcasearch_ops::downsample(x, fcasearch_ops::unpack(params), cfg);
}
at::Tensor stem_op(const at::Tensor& x, const List& params, at::IntArrayRef cfg) {
  return fcasearch_ops::stem(x, fcasearch_ops::unpack(params), cfg);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fcasearch_kernels, m) {
  m.def("fca_block(Tensor x, Tensor? cross, Tensor?[] params, int[] cfg, float[] eps) -> Tensor[]");
  m.def("convnext_block(Tensor x, Tensor?[] params, int[] cfg, float eps) -> Tensor");
  m.def("downsample(Tensor x, Tensor?[] params, int[] cfg) -> Tensor");
  m.def("stem(Tensor x, Tensor?[] params, int[] cfg) -> Tensor");
}

TORCH_LIBRARY_IMPL(fcasearch_kernels, CPU, m) {
  m.impl("fca_block", &fca_block_op);
  m.impl("convnext_block", &convnext_block_op);
  m.impl("downsample", &downsample_op);
  m.impl("stem", &stem_op);
}
