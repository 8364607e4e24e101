"""The convolutional parts of an FcaFormer: stem, ConvNeXt blocks and stages, downsampling.

Feature maps travel as ``(B, C, H, W)`` tensors; the model keeps them in channels-last memory, so
that the ``(B, H, W, C)`` view the ConvNeXt MLP needs (and the ``(B, N, C)`` token view of the
FcaFormer stages) is free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fcasearch.models.kernels import square_conv_applies
from fcasearch.models.layers import (
    ConvBN,
    DropPath,
    conv_gelu,
    conv_kernel_applies,
    depthwise_conv,
    fast_path,
    gemm_library,
    inference_input,
    layer_norm,
    linear,
    linear_gelu,
    mlp_add,
    own_conv,
    packed_weight,
)
from fcasearch.models.network import CONVNEXT, DOWNSAMPLE, STEM, recording

__all__ = ["ConvNeXtBlock", "ConvStage", "Downsample", "Stem"]


class Stem(nn.Module):
    """Stride-4 conv stem: Conv-BN 3x3/2 (in -> d/2), GELU, Conv-BN 3x3/2 (d/2 -> d), no last act.
    Any input layout; the output is channels-last."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(in_chans, dim // 2, 3, 2, 1)
        self.conv2 = ConvBN(dim // 2, dim, 3, 2, 1)
        self.fast = False  # fused kernels; set by fuse_for_inference
        self.gemm = "torch"  # "fcasearch": the folded convs on its kernel; fuse_for_inference
        self.block_kernel = False  # both convs as one kernel op; set by fuse_for_inference

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in, H, W) -> (B, d, H/4, W/4)
        if self.fast and not self.training and gemm_library(self.gemm, x) == "fcasearch":
            if self.block_kernel and self._one_op(x):
                # both convs in bands of rows (kernels/block.cpp), the first's output in cache
                c1, c2 = self.conv1, self.conv2
                p1 = packed_weight(self, "conv1", c1.weight, "fcasearch")
                p2 = packed_weight(self, "conv2", c2.weight, "fcasearch")
                if p1 is not None and p2 is not None:  # None: compiled with none packed yet
                    cfg = [c1.out_channels, c2.out_channels, *c1.kernel_size[:1],
                           *c1.stride[:1], *c1.padding[:1]]  # fmt: skip
                    params = [p1, c1.bias, p2, c2.bias]
                    if (rec := recording()) is not None:
                        rec.step(STEM, params, cfg, sources=(c1.weight, c2.weight))
                    return torch.ops.fcasearch_kernels.stem(x, params, cfg)
            # fcasearch's dense-conv kernel (eager or compiled) reads the image where it lies
            y = own_conv(self, "conv1", self.conv1, x, gelu=True)
            if y is not None:
                z = own_conv(self, "conv2", self.conv2, y, gelu=False)
                return z if z is not None else self.conv2(y)
        x = x.contiguous(memory_format=torch.channels_last)
        if fast_path(self.fast, x):
            return self.conv2(conv_gelu(x, self.conv1, True))
        return self.conv2(F.gelu(self.conv1(x)))

    def _one_op(self, x: torch.Tensor) -> bool:
        """Whether the folded stem runs as ``fcasearch_kernels.stem`` (eager or compiled): both
        convs on fcasearch's dense-conv kernel, with the same kernel size, stride and padding."""
        c1, c2 = self.conv1, self.conv2
        return (
            isinstance(c1, nn.Conv2d)
            and isinstance(c2, nn.Conv2d)
            and conv_kernel_applies(c1, x)
            and c2.groups == 1
            and (c1.kernel_size, c1.stride, c1.padding) == (c2.kernel_size, c2.stride, c2.padding)
            and tuple(c2.dilation) == (1, 1)
            and c2.padding_mode == "zeros"
        )


class Downsample(nn.Module):
    """Between stages, d -> o at half the side: Conv-BN 1x1, GELU, depthwise Conv-BN 3x3/2, GELU,
    Conv-BN 1x1. No residual, no final activation."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, 2, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)
        self.fast = False  # fused kernels; set by fuse_for_inference
        self.gemm = "torch"  # library of the fused 1x1 convs as GEMMs; set by fuse_for_inference
        self.dw_kernel = False  # depthwise conv on fcasearch's kernel; set by fuse_for_inference
        self.block_kernel = False  # the three convs as one kernel op; set by fuse_for_inference

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d, H, W) -> (B, o, H/2, W/2)
        if self.fast and not self.training and inference_input(x):
            if self._one_op(x):
                # the three convs in bands of rows (kernels/block.cpp), intermediates in cache
                c1, c2, c3, lib = self.conv1, self.conv2, self.conv3, "fcasearch"
                p1 = packed_weight(self, "conv1", c1.weight.flatten(1), lib)
                p3 = packed_weight(self, "conv3", c3.weight.flatten(1), lib)
                if p1 is not None and p3 is not None:  # None: compiled with none packed yet
                    params = [p1, c1.bias, c2.weight, c2.bias, p3, c3.bias]
                    cfg = [c1.out_channels, c2.stride[0], c2.padding[0]]
                    if (rec := recording()) is not None:
                        rec.step(DOWNSAMPLE, params, cfg, sources=(c1.weight, c3.weight))
                    return torch.ops.fcasearch_kernels.downsample(x, params, cfg)
            # Folded, CPU float32 inference (eager or compiled): the 1x1 convs as GEMMs over the
            # (B, H, W, C) view (faster than oneDNN's 1x1 convolution at these sizes), the
            # depthwise conv with its GELU on fcasearch's kernel where it serves.
            c1, c3 = self.conv1, self.conv3
            w1, w3 = c1.weight.flatten(1), c3.weight.flatten(1)  # (o, d), (o, o)
            od = gemm_library(self.gemm, x)
            fast = not torch.compiler.is_compiling()  # eager: in-place, oneDNN fused epilogues
            p1, p3 = packed_weight(self, "conv1", w1, od), packed_weight(self, "conv3", w3, od)
            y = linear_gelu(x.permute(0, 2, 3, 1), w1, c1.bias, fast, od, p1).permute(0, 3, 1, 2)
            y = depthwise_conv(self.conv2, y, self.dw_kernel, gelu=True, fast=fast)
            return linear(y.permute(0, 2, 3, 1), w3, c3.bias, od, p3).permute(0, 3, 1, 2)
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))

    def _one_op(self, x: torch.Tensor) -> bool:
        """Whether the folded downsample runs as ``fcasearch_kernels.downsample`` (eager or
        compiled): every step on fcasearch's kernels (``block_kernel``, its GEMMs included), a
        channels-last ``x``, the depthwise conv square with zero padding."""
        c2 = self.conv2
        return (
            self.block_kernel
            and self.dw_kernel
            and gemm_library(self.gemm, x) == "fcasearch"
            and isinstance(c2, nn.Conv2d)
            and isinstance(self.conv1, nn.Conv2d)
            and isinstance(self.conv3, nn.Conv2d)
            and square_conv_applies(c2, x)  # its input is conv1's output, not x
            and c2.groups == c2.in_channels == c2.out_channels == self.conv1.out_channels
            and x.shape[1] == self.conv1.in_channels
            and x.is_contiguous(memory_format=torch.channels_last)
        )


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 (bias) -> LayerNorm (eps 1e-6) -> Linear d->hidden -> GELU ->
    Linear hidden->d -> layer scale ``gamma``; output ``x + DropPath(branch)``.

    Args:
        dim: channels ``d``.
        hidden: MLP hidden width (``4d`` in the paper).
        drop_path: stochastic-depth rate of this block.
        layer_scale_init: initial value of ``gamma``.
    """

    def __init__(self, dim: int, hidden: int, drop_path: float, layer_scale_init: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.pwconv2 = nn.Linear(hidden, dim)
        # None once fuse_for_inference folded it into pwconv2.
        self.gamma: nn.Parameter | None = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.drop_path = DropPath(drop_path)
        self.fast = False  # fused kernels (layer scale folded); set by fuse_for_inference
        self.gemm = "torch"  # library of the Linear GEMMs once fused; set by fuse_for_inference
        self.dw_kernel = False  # depthwise conv on fcasearch's kernel; set by fuse_for_inference
        self.ln_kernel = False  # LayerNorm on fcasearch's kernel; set by fuse_for_inference
        self.block_kernel = False  # the whole block as one kernel op; set by fuse_for_inference

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d, H, W) channels-last
        folded = self.fast and not self.training and self.gamma is None
        if folded and inference_input(x) and self._one_op(x):  # eager or compiled
            # the block as one operator (kernels/block.cpp): the steps of the path below
            fc1, fc2, lib = self.pwconv1, self.pwconv2, "fcasearch"
            p1 = packed_weight(self, "fc1", fc1.weight, lib)
            p2 = packed_weight(self, "fc2", fc2.weight, lib)
            if p1 is not None and p2 is not None:  # None: compiled with none packed yet
                params = [self.dwconv.weight, self.dwconv.bias, self.norm.weight, self.norm.bias,
                          p1, fc1.bias, p2, fc2.bias]  # fmt: skip
                cfg, eps = [fc1.out_features], self.norm.eps
                if (rec := recording()) is not None:
                    rec.step(CONVNEXT, params, cfg, [eps], sources=(fc1.weight, fc2.weight))
                return torch.ops.fcasearch_kernels.convnext_block(x, params, cfg, eps)
        y = depthwise_conv(self.dwconv, x, self.dw_kernel)  # (B, d, H, W)
        y = y.permute(0, 2, 3, 1)  # (B, H, W, d), a view for channels-last input
        od = gemm_library(self.gemm, x)
        fc1, fc2 = self.pwconv1, self.pwconv2
        if folded and fast_path(self.fast, x):
            res = x.permute(0, 2, 3, 1)  # (B, H, W, d)
            xn = layer_norm(self.norm, y, self.ln_kernel)
            return mlp_add(self, xn, fc1, fc2, res, od).permute(0, 3, 1, 2)
        p1, p2 = (
            packed_weight(self, "fc1", fc1.weight, od),
            packed_weight(self, "fc2", fc2.weight, od),
        )
        h = linear_gelu(self.norm(y), fc1.weight, fc1.bias, False, od, p1)
        y = linear(h, fc2.weight, fc2.bias, od, p2)
        if self.gamma is not None:
            y = y * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))

    def _one_op(self, x: torch.Tensor) -> bool:
        """Whether the fused block runs as ``fcasearch_kernels.convnext_block``: all of
        fcasearch's kernels in use (``block_kernel``), its GEMMs included, on a channels-last
        ``x``."""
        return (
            self.block_kernel
            and gemm_library(self.gemm, x) == "fcasearch"
            and self.dw_kernel
            and self.ln_kernel
            and self.dwconv.kernel_size[0] % 2 == 1
            and self.dwconv.padding[0] == self.dwconv.kernel_size[0] // 2
            and x.is_contiguous(memory_format=torch.channels_last)
        )


class ConvStage(nn.Module):
    """A stage of ConvNeXt blocks, optionally followed by the downsample to the next stage.

    Args:
        dim: channels of the stage.
        depth: number of blocks.
        hidden: MLP hidden width.
        drop_paths: one stochastic-depth rate per block.
        layer_scale_init: initial layer scale.
        out_dim: width of the next stage (a :class:`Downsample` is added), or ``None`` if last.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        hidden: int,
        drop_paths: list[float],
        layer_scale_init: float,
        out_dim: int | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(dim, hidden, drop_paths[j], layer_scale_init) for j in range(depth)
        )
        self.downsample = Downsample(dim, out_dim) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d, H, W) -> next stage's map
        for blk in self.blocks:
            x = blk(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x
