// The kernels' entry points as C++ functions (each defined in its own source file and also
// registered as a torch operator there), so that block.cpp can chain them without a round trip
// through Python and the dispatcher.
#pragma once

#include "gemm.h"

#include <torch/types.h>

#include <optional>
#include <vector>

namespace fcasearch_ops {

// layernorm.cpp: LayerNorm over the last dimension of a contiguous x.
torch::Tensor layer_norm(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, double eps);
// Two in a row (the FcaFormer block's norm2, then its MLP's norm), each row once through memory;
// the same arithmetic as two layer_norm calls.
torch::Tensor layer_norm2(const torch::Tensor& x, const torch::Tensor& weight1,
                          const torch::Tensor& bias1, double eps1, const torch::Tensor& weight2,
                          const torch::Tensor& bias2, double eps2);

// linear.cpp: x W^T + bias, then GELU or + residual, W packed by pack_linear.
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& packed, int64_t out_features,
                     const std::optional<torch::Tensor>& bias,
                     const std::optional<torch::Tensor>& residual, bool gelu);
torch::Tensor& linear_out(const torch::Tensor& x, const torch::Tensor& packed,
                          int64_t out_features, const std::optional<torch::Tensor>& bias,
                          const std::optional<torch::Tensor>& residual, bool gelu,
                          torch::Tensor& out);

// The mean over a channels-last (B, C, H, W) map's pixels, then LayerNorm: (B, C).
torch::Tensor pool_norm(const torch::Tensor& x, const torch::Tensor& weight,
                        const torch::Tensor& bias, double eps);

// fca_attention.cpp: softmax(q k^T * scale + bias) v, output (B, N, h, D).
at::Tensor fca_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& bias, double scale);
// The same with the bias made as it is read, from the block's relative-position segments
// (h, Rh, Rw, Rw): segments[h][|dr|][qc][kc] is the bias between a query in column qc and a key
// in column kc |dr| rows away) and its cross-token biases (h, M) (none: zeros), M = T - N: the
// values of the (1, h, N, T) mask without reading one (a few KB a head instead of N * T floats).
at::Tensor fca_attention_relative(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& segments,
                                  const std::optional<at::Tensor>& cross_bias, double scale);

// dwconv.cpp: depthwise conv of a channels-last map, then GELU if asked; channels-last out.
at::Tensor dwconv2d(const at::Tensor& x, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, int64_t stride, int64_t padding,
                    bool gelu);

// Row-level pieces for operators that run several steps on a band of rows within one thread
// (block.cpp): no threads, no checks, raw pointers into contiguous memory.

// layernorm.cpp: one row of C values, x to y (they may be the same).
void layer_norm_row(const float* x, float* y, const float* weight, const float* bias, int64_t C,
                    float eps);

// dwconv.cpp: a depthwise conv's geometry and its weights tap-major, made once per call.
struct DwPlan {
  int64_t H, W, C, Cp, k, stride, padding, Ho, Wo;  // Cp: C rounded up to 16
  bool gelu;
  std::vector<float> wt, bias;  // (k * k, Cp) tap-major and (Cp), zero past C
};
DwPlan dw_plan(const at::Tensor& weight, const std::optional<at::Tensor>& bias, int64_t H,
               int64_t W, int64_t stride, int64_t padding, bool gelu);
// Output rows oh0..oh1 of one image into out (oh1 - oh0, Wo, C); x holds its (H, W, C) input
// from row row0 on, as far as those rows read.
void dw_rows(const DwPlan& plan, const float* x, int64_t row0, int64_t oh0, int64_t oh1,
             float* out);

// conv.cpp: a dense conv's geometry, input strides (elements) and receptive-field offsets.
struct ConvPlan {
  int64_t Cin, H, W, k, stride, padding, Ho, Wo;
  int64_t sc, sh, sw;  // input strides of a channel, a row, a column
  int64_t row0;  // the first input row held where the image's data is passed (0: all of it)
  std::vector<int64_t> off;  // (k * k * Cin) offsets of a field from its top-left corner
};
ConvPlan conv_plan(int64_t Cin, int64_t H, int64_t W, int64_t k, int64_t stride, int64_t padding,
                   int64_t sc, int64_t sh, int64_t sw);
// Output rows oh0..oh1 of one image (its input at xb, from row plan.row0 on) into out
// (oh1 - oh0, Wo, N), N outputs from a pack_linear panel set; fields: 8 * k * k * Cin floats.
void conv_rows(const ConvPlan& plan, const float* xb, const float* packed, int64_t N,
               const fcasearch_gemm::Epilogue& ep, int64_t oh0, int64_t oh1, float* out,
               float* fields);

// block.cpp: whole blocks and stage parts as single operators (the parameters, settings and
// epsilons of each are listed there, in order); network.cpp chains them.
using Params = std::vector<std::optional<at::Tensor>>;
Params unpack(const c10::List<std::optional<at::Tensor>>& list);
std::vector<at::Tensor> fca_block(const at::Tensor& x, const std::optional<at::Tensor>& cross,
                                  const Params& p, at::IntArrayRef cfg, at::ArrayRef<double> eps);
at::Tensor convnext_block(const at::Tensor& x, const Params& p, at::IntArrayRef cfg, double eps);
at::Tensor downsample(const at::Tensor& x, const Params& p, at::IntArrayRef cfg);
at::Tensor stem(const at::Tensor& x, const Params& p, at::IntArrayRef cfg);

}  // namespace fcasearch_ops
