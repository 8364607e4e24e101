// A fused FcaFormer's whole eager forward as one operator, fcasearch_kernels::network: the
// operators of block.cpp (stem, ConvNeXt blocks, downsamples, FcaFormer blocks) and the head's
// steps, in the order one forward of the modules called them, with the modules' arguments. The
// program is recorded from such a forward by fcasearch.models.network, which also checks that the
// operator's output equals the modules' before using it.
//
// Why: between two block operators the Python of the modules ran for 130-280 us at batch 1 on a
// 2-core AMD EPYC, against 420 us for the whole forward's Python when it runs alone: each
// operator's arithmetic leaves the interpreter's code and data out of cache, and the second
// thread waits meanwhile. In all 1.7-2.0 ms of a 21 ms FcaFormer-L1 forward.
//
// Program: a list of steps, each a code and its settings; the parameters (Tensor?[]) and the
// epsilons (float[]) are taken in order as the steps need them:
//   STEM        settings 5 (as block.cpp's stem)                 parameters 4
//   CONVNEXT    settings 1 (hidden width)          epsilons 1    parameters 8
//   DOWNSAMPLE  settings 3                                       parameters 6
//   TOKENS      none: the (B, d, H, W) channels-last map as (B, H W, d) tokens; a new stage
//   FCA         settings 6 (as fca_block's), the block's index in its stage, the number of
//               emitting blocks it reads, their indices (oldest first)   epsilons 4   params 25
//   MAP         settings 2 (grid rows, columns): the tokens as a (B, d, Rh, Rw) map
//   HEAD        settings 1 (classes)               epsilons 1    parameters 4 (norm weight and
//               bias, packed Linear weight, its bias): pool_norm (mean over the map, LayerNorm),
//               Linear
// Each step computes what the module's forward computes (the same C++ functions and ATen calls).

#include "ops.h"

#include <ATen/ATen.h>
#include <torch/library.h>
#include <torch/types.h>

#include <optional>
#include <vector>

namespace {

enum Step : int64_t { STEM = 1, CONVNEXT, DOWNSAMPLE, TOKENS, FCA, MAP, HEAD };

// The operator's three lists, read in order; every read checks that enough is left.
struct Reader {
  const fcasearch_ops::Params& params;
  at::IntArrayRef program;
  at::ArrayRef<double> eps;
  size_t pi = 0, si = 0, ei = 0;

  bool done() const { return si == program.size(); }
  int64_t next() {
    TORCH_CHECK(si < program.size(), "network: the program ends inside a step");
    return program[si++];
  }
  at::IntArrayRef settings(int64_t n) {
    TORCH_CHECK(n >= 0 && si + n <= program.size(), "network: the program ends inside a step");
    si += n;
    return program.slice(si - n, n);
  }
  at::ArrayRef<double> epsilons(size_t n) {
    TORCH_CHECK(ei + n <= eps.size(), "network: fewer epsilons than the steps need");
    ei += n;
    return eps.slice(ei - n, n);
  }
  fcasearch_ops::Params take(size_t n) {
    TORCH_CHECK(pi + n <= params.size(), "network: fewer parameters than the steps need");
    pi += n;
    return fcasearch_ops::Params(params.begin() + (pi - n), params.begin() + pi);
  }
};

at::Tensor network(const at::Tensor& x, const c10::List<std::optional<at::Tensor>>& params,
                   at::IntArrayRef program, at::ArrayRef<double> eps) {
  const fcasearch_ops::Params all = fcasearch_ops::unpack(params);
  Reader r{all, program, eps};
  at::Tensor t = x;
  std::vector<at::Tensor> emitted;  // the current stage's cross tokens, by block (or undefined)
  while (!r.done()) {
    const int64_t code = r.next();
    switch (code) {
      case STEM: {
        const auto p = r.take(4);
        t = fcasearch_ops::stem(t, p, r.settings(5));
        break;
      }
      case CONVNEXT: {
        const auto p = r.take(8);
        const auto cfg = r.settings(1);
        t = fcasearch_ops::convnext_block(t, p, cfg, r.epsilons(1)[0]);
        break;
      }
      case DOWNSAMPLE: {
        const auto p = r.take(6);
        t = fcasearch_ops::downsample(t, p, r.settings(3));
        break;
      }
      case TOKENS: {  // as FcaStage.forward: a view of a channels-last map
        TORCH_CHECK(t.dim() == 4, "network: tokens need a (B, d, H, W) map, not ", t.sizes());
        t = t.permute({0, 2, 3, 1}).reshape({t.size(0), t.size(2) * t.size(3), t.size(1)});
        emitted.clear();
        break;
      }
      case FCA: {
        const auto p = r.take(25);
        const auto cfg = r.settings(6);
        const auto e = r.epsilons(4);
        const int64_t index = r.next(), n = r.next();
        const auto sources = r.settings(n);
        std::vector<at::Tensor> reads;
        for (const int64_t j : sources) {
          TORCH_CHECK(j >= 0 && j < static_cast<int64_t>(emitted.size()) && emitted[j].defined(),
                      "network: block ", index, " reads block ", j, ", which emitted nothing");
          reads.push_back(emitted[j]);
        }
        std::optional<at::Tensor> cross;
        if (reads.size() == 1) cross = reads[0];
        if (reads.size() > 1) cross = at::cat(reads, 1);  // (B, M, d), oldest first
        auto out = fcasearch_ops::fca_block(t, cross, p, cfg, e);
        t = out[0];
        if (out.size() > 1) {
          TORCH_CHECK(index >= 0, "network: a block's index is negative");
          if (static_cast<int64_t>(emitted.size()) <= index) emitted.resize(index + 1);
          emitted[index] = out[1];
        }
        break;
      }
      case MAP: {
        const auto grid = r.settings(2);
        TORCH_CHECK(t.dim() == 3 && grid[0] * grid[1] == t.size(1),
                    "network: tokens ", t.sizes(), " are not a ", grid[0], "x", grid[1], " grid");
        t = t.view({t.size(0), grid[0], grid[1], t.size(2)}).permute({0, 3, 1, 2});
        break;
      }
      case HEAD: {  // as FcaFormer.forward_head on fcasearch's GEMM
        const auto p = r.take(4);
        const int64_t classes = r.settings(1)[0];
        const double e = r.epsilons(1)[0];
        TORCH_CHECK(t.dim() == 4, "network: the head needs a (B, d, H, W) map, not ", t.sizes());
        TORCH_CHECK(p[0].has_value() && p[1].has_value() && p[2].has_value(),
                    "network: the head's norm or packed weight is missing");
        const at::Tensor xn = fcasearch_ops::pool_norm(t, *p[0], *p[1], e);  // (B, d)
        t = fcasearch_ops::linear(xn, *p[2], classes, p[3], std::nullopt, false);
        break;
      }
      default:
        TORCH_CHECK(false, "network: step code ", code, " is not one of 1..7");
    }
  }
  TORCH_CHECK(r.pi == all.size() && r.ei == eps.size(),
              "network: the program used ", r.pi, " of ", all.size(), " parameters and ", r.ei,
              " of ", eps.size(), " epsilons");
  return t;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fcasearch_kernels, m) {
  m.def("network(Tensor x, Tensor?[] params, int[] program, float[] eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(fcasearch_kernels, CPU, m) { m.impl("network", &network); }
