"""The convolutional parts of an FcaFormer: stem, ConvNeXt blocks and stages, downsampling.

Feature maps travel as ``(B, C, H, W)`` tensors in channels-last memory (the stem converts its
input), so the ``(B, H, W, C)`` view the ConvNeXt MLP needs, and the ``(B, N, C)`` token view of
the FcaFormer stages, are free.
"""

from __future__ import annotations

import torch
from torch import nn

from fcasearch.models.layers import ConvBN, DropPath, gelu_map, in_row_chunks

__all__ = ["ConvNeXtBlock", "ConvStage", "Downsample", "Stem"]


class Stem(nn.Module):
    """Stride-4 conv stem: Conv-BN 3x3/2 (in -> d/2), GELU, Conv-BN 3x3/2 (d/2 -> d), no last act."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(in_chans, dim // 2, 3, 2, 1)
        self.conv2 = ConvBN(dim // 2, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in, H, W) -> (B, d, H/4, W/4)
        x = x.contiguous(memory_format=torch.channels_last)
        return self.conv2(gelu_map(self.conv1(x)))


class Downsample(nn.Module):
    """Between stages, d -> o at half the side: Conv-BN 1x1, GELU, depthwise Conv-BN 3x3/2, GELU,
    Conv-BN 1x1. No residual, no final activation."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, 2, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d, H, W) -> (B, o, H/2, W/2)
        return self.conv3(gelu_map(self.conv2(gelu_map(self.conv1(x)))))


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
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(hidden, dim)
        # None once fuse_for_inference has folded it into pwconv2
        self.gamma: nn.Parameter | None = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.drop_path = DropPath(drop_path)

    def mlp(self, y: torch.Tensor) -> torch.Tensor:  # (..., d), row by row
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return y if self.gamma is None else y * self.gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d, H, W), channels-last
        y = self.dwconv(x).permute(0, 2, 3, 1)  # (B, H, W, d)
        y = in_row_chunks(self.mlp, y, self.pwconv1.out_features)
        return x + self.drop_path(y.permute(0, 3, 1, 2))


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
