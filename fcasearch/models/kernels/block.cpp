// Whole FcaFormer and ConvNeXt blocks of the eager inference form as single operators, chaining
// fcasearch's kernels (ops.h) in C++.
//
// Built at run time by fcasearch.models.kernels and registered as the operators
// fcasearch_kernels::fca_block and fcasearch_kernels::convnext_block.
//
// Why: in eager mode each kernel call from Python costs a few microseconds of interpreter and
// dispatcher time, and a block's Python code (module attribute lookups, the checks that choose a
// path, the views between kernels) costs more. Here the block's 10-20 steps run back to back;
// Python makes one call per block. On a 2-core AMD EPYC, FcaFormer-L1 at batch 1 (paired, blocks
// as single operators against one call per step): 0.874 of the time at 32x32, where the
// arithmetic is small, and 0.94-0.98 at 224x224. The steps, their order and their arithmetic are
// those of the Python inference path (fca.py, convnext.py, layers.mlp_add), which the tests
// compare against.

#include "ops.h"

#include <ATen/ATen.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

namespace {

using fcasearch_ops::dwconv2d;
using fcasearch_ops::fca_attention;
using fcasearch_ops::layer_norm;
using fcasearch_ops::linear;
using fcasearch_ops::linear_out;

using Params = std::vector<std::optional<at::Tensor>>;

Params unpack(const c10::List<std::optional<at::Tensor>>& list) {
  Params out;
  out.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) out.push_back(list.get(i));
  return out;
}

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

// p: norm1 w, b | scale factors (1, M, 1) | s_norm w, b | packed qkv | packed q | packed kv |
//    qkv bias | mask (1, h, N, N + M) | packed proj, proj bias | merge conv weight |
//    local conv weight, bias | norm2 w, b | the MLP's norm w, b | packed fc1, fc1 bias |
//    packed fc2, fc2 bias
// cfg: heads, grid rows, grid cols, merge stride (0: no merge), MLP hidden width, chunk elements
// eps: norm1, s_norm, norm2, the MLP's norm
std::vector<at::Tensor> fca_block(const at::Tensor& x, const std::optional<at::Tensor>& cross,
                                  const c10::List<std::optional<at::Tensor>>& params,
                                  at::IntArrayRef cfg, at::ArrayRef<double> eps) {
  const Params p = unpack(params);
  TORCH_CHECK(p.size() == 23 && cfg.size() == 6 && eps.size() == 4,
              "fca_block: 23 parameters, 6 settings and 4 epsilons expected");
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous(), "fca_block: x must be a contiguous (B, N, d)");
  const int64_t B = x.size(0), N = x.size(1), d = x.size(2);
  const int64_t h = cfg[0], rh = cfg[1], rw = cfg[2], stride = cfg[3], hidden = cfg[4];
  TORCH_CHECK(h > 0 && d % h == 0 && rh * rw == N, "fca_block: settings do not fit x ", x.sizes());
  const int64_t hd = d / h;
  const at::Tensor xn = layer_norm(x, need(p, 0, "norm1 weight"), need(p, 1, "norm1 bias"), eps[0]);
  const at::Tensor& bias = need(p, 8, "qkv bias");
  at::Tensor q, k, v;
  if (cross.has_value() && cross->defined()) {
    at::Tensor c = *cross;
    if (const auto s = maybe(p, 2)) c = c * *s;
    c = layer_norm(c.contiguous(), need(p, 3, "s_norm weight"), need(p, 4, "s_norm bias"), eps[1]);
    q = linear(xn, need(p, 6, "packed q"), d, bias.narrow(0, 0, d), std::nullopt, false)
            .view({B, N, h, hd})
            .transpose(1, 2);
    const at::Tensor xc = at::cat({xn, c}, 1);  // (B, N + M, d)
    const at::Tensor kv = linear(xc, need(p, 7, "packed kv"), 2 * d, bias.narrow(0, d, 2 * d),
                                 std::nullopt, false)
                              .view({B, -1, 2, h, hd})
                              .permute({2, 0, 3, 1, 4});
    k = kv[0];
    v = kv[1];
  } else {
    const at::Tensor qkv = linear(xn, need(p, 5, "packed qkv"), 3 * d, bias, std::nullopt, false)
                               .view({B, N, 3, h, hd})
                               .permute({2, 0, 3, 1, 4});
    q = qkv[0];
    k = qkv[1];
    v = qkv[2];
  }
  const at::Tensor o = fca_attention(q, k, v, need(p, 9, "mask"), 1.0 / std::sqrt(double(hd)))
                           .view({B, N, d});
  at::Tensor t = linear(o, need(p, 10, "packed proj"), d, need(p, 11, "proj bias"), x, false);
  std::vector<at::Tensor> result;
  const auto merge_w = maybe(p, 12);
  const auto local_w = maybe(p, 13);
  if (merge_w || local_w) {
    const at::Tensor map = t.view({B, rh, rw, d}).permute({0, 3, 1, 2});  // channels-last
    if (merge_w) {
      TORCH_CHECK(stride > 0, "fca_block: a merge conv needs its stride");
      const at::Tensor merged = dwconv2d(map, *merge_w, std::nullopt, stride, stride - 1, false);
      result.push_back(merged.flatten(2).transpose(1, 2));  // (B, S, d), a view
    }
    if (local_w) {
      const int64_t pad = local_w->size(-1) / 2;
      t = dwconv2d(map, *local_w, maybe(p, 14), 1, pad, false).permute({0, 2, 3, 1}).reshape({B, N, d});
    }
  }
  const at::Tensor xm = fcasearch_ops::layer_norm2(t, need(p, 15, "norm2 weight"),
                                                   need(p, 16, "norm2 bias"), eps[2],
                                                   need(p, 17, "MLP norm weight"),
                                                   need(p, 18, "MLP norm bias"), eps[3]);
  at::Tensor out = mlp_add(xm, t, need(p, 19, "packed fc1"), need(p, 20, "fc1 bias"), hidden,
                           need(p, 21, "packed fc2"), need(p, 22, "fc2 bias"), cfg[5]);
  result.insert(result.begin(), out);
  return result;
}

// x (B, d, H, W) channels-last. p: dwconv weight, bias | norm w, b | packed fc1, fc1 bias |
// packed fc2, fc2 bias. cfg: MLP hidden width, chunk elements. Output channels-last.
at::Tensor convnext_block(const at::Tensor& x, const c10::List<std::optional<at::Tensor>>& params,
                          at::IntArrayRef cfg, double eps) {
  const Params p = unpack(params);
  TORCH_CHECK(p.size() == 8 && cfg.size() == 2, "convnext_block: 8 parameters, 2 settings");
  const at::Tensor& w = need(p, 0, "dwconv weight");
  const at::Tensor y = dwconv2d(x, w, maybe(p, 1), 1, w.size(-1) / 2, false).permute({0, 2, 3, 1});
  const at::Tensor xn = layer_norm(y, need(p, 2, "norm weight"), need(p, 3, "norm bias"), eps);
  return mlp_add(xn, x.permute({0, 2, 3, 1}), need(p, 4, "packed fc1"), need(p, 5, "fc1 bias"),
                 cfg[0], need(p, 6, "packed fc2"), need(p, 7, "fc2 bias"), cfg[1])
      .permute({0, 3, 1, 2});
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fcasearch_kernels, m) {
  m.def("fca_block(Tensor x, Tensor? cross, Tensor?[] params, int[] cfg, float[] eps) -> Tensor[]");
  m.def("convnext_block(Tensor x, Tensor?[] params, int[] cfg, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(fcasearch_kernels, CPU, m) {
  m.impl("fca_block", &fca_block);
  m.impl("convnext_block", &convnext_block);
}
