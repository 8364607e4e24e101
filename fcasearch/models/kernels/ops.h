// The kernels' entry points as C++ functions (each defined in its own source file and also
// registered as a torch operator there), so that block.cpp can chain them without a round trip
// through Python and the dispatcher.
#pragma once

#include <torch/types.h>

#include <optional>

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

// fca_attention.cpp: softmax(q k^T * scale + bias) v, output (B, N, h, D).
at::Tensor fca_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& bias, double scale);

// dwconv.cpp: depthwise conv of a channels-last map, then GELU if asked; channels-last out.
at::Tensor dwconv2d(const at::Tensor& x, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, int64_t stride, int64_t padding,
                    bool gelu);

}  // namespace fcasearch_ops
