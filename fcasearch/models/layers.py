"""Small building blocks shared by the FcaFormer stem, ConvNeXt stages and FcaFormer stages.

Everything here follows ``fcaformer-spec.md``: Conv-BN is a bias-free ``Conv2d`` followed by
``BatchNorm2d`` (eps 1e-5), GELU is the exact (erf) form, and weights are initialized with a normal
of std 0.02 truncated at +-2 (which truncates nothing in practice).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ConvBN",
    "DropPath",
    "Mlp",
    "PaddedConv2d",
    "drop_path_rates",
    "gelu_map",
    "in_row_chunks",
    "init_weights",
]


class PaddedConv2d(nn.Conv2d):
    """``nn.Conv2d``, working around a CPU bfloat16 convolution backward bug.

    On CPU, the low-precision (bf16/fp16, autocast or weights) Conv2d backward computes a garbage
    weight gradient when the output is one column wide and a window reaches into the implicit zero
    padding (it reads memory it never wrote). FcaFormer's token merge (kernel 2s-1, stride s) hits
    it whenever a stage grid is narrower than s, e.g. ``fcaformer_nano`` at 32 px. There only, the
    input is zero-padded explicitly and convolved without padding: the same values.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _hits_cpu_low_precision_bug(self, x):
            return super().forward(x)
        ph, pw = self.padding
        xp = F.pad(x, (pw, pw, ph, ph))  # (B, C, H + 2ph, W + 2pw)
        return F.conv2d(xp, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    @torch.no_grad()
    def plain(
        self, scale: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` computing ``conv(x) * scale + bias`` per output channel (its
        weights copied; ``scale`` and ``bias`` of shape ``(out_chans,)``)."""
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
            dilation=self.dilation, groups=self.groups, bias=self.bias is not None or bias is not None,
        ).to(device=self.weight.device, dtype=self.weight.dtype)  # fmt: skip
        w = self.weight if scale is None else self.weight * scale.view(-1, 1, 1, 1)
        conv.weight.copy_(w)
        if conv.bias is not None:
            b = self.bias if self.bias is not None else torch.zeros_like(conv.bias)
            conv.bias.copy_(b if scale is None else b * scale)
            if bias is not None:
                conv.bias.add_(bias)
        return conv


def _hits_cpu_low_precision_bug(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether ``conv(x)`` would take the faulty backward described in :class:`PaddedConv2d`."""
    if x.device.type != "cpu" or not torch.is_grad_enabled() or not any(conv.padding):
        return False
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    if dtype not in (torch.bfloat16, torch.float16):
        return False
    width, k, s = x.shape[-1], conv.kernel_size[1], conv.stride[1]
    return (width + 2 * conv.padding[1] - conv.dilation[1] * (k - 1) - 1) // s + 1 == 1


class ConvBN(nn.Module):
    """A bias-free ``Conv2d`` (``c``) followed by ``BatchNorm2d`` (``bn``), as in the reference.

    Args:
        in_chans: input channels.
        out_chans: output channels.
        kernel_size: square kernel side.
        stride: convolution stride.
        padding: zero padding on each side.
        groups: convolution groups (``in_chans`` for depthwise).
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.c = PaddedConv2d(
            in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_chans, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.c(x))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """The equivalent ``Conv2d`` with bias, using the BN running statistics (eval semantics)."""
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (O,)
        return self.c.plain(scale, bn.bias - bn.running_mean * scale)


class DropPath(nn.Module):
    """Stochastic depth per sample: zero a residual branch with probability ``p`` (training only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


class Mlp(nn.Module):
    """The FcaFormer MLP: its own LayerNorm (eps 1e-5), Linear d->hidden, exact GELU, Linear back."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, d)
        return self.fc2(self.act(self.fc1(self.norm(x))))


def gelu_map(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU of a ``(B, C, H, W)`` map, computed on its ``(B, H, W, C)`` view: for a
    channels-last map that view is contiguous, and ATen's GELU runs about 1.5x faster on it than on
    the 4-D channels-last tensor (measured on a 2-core AMD EPYC, torch 2.14)."""
    return F.gelu(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


# The MLP branches (LayerNorm, Linear d -> 4d, GELU, Linear 4d -> d) treat every token or pixel on
# its own, so CPU inference can run them on chunks of rows: each chunk's 4d-wide hidden activations
# (the largest tensors of a forward) then stay in a core's cache between the ops, and no large
# buffer is allocated afresh (and page-faulted) on every call. The chunks hold up to this many
# hidden values (2 MiB of float32: half of it per core on two threads). Measured on a 2-core AMD
# EPYC, one thread, CPU time: FcaFormer-L1 at batch 8 in 0.89 of the unchunked time, batch 1
# unchanged. Nowhere else: on a GPU every chunk is more kernel launches (L1 at batch 64 on an H200
# launched 17x the GEMMs and took 53 ms against 18 ms for a CUDA graph of the same forward), and in
# training autograd keeps every chunk's activations anyway (micro members' CPU training steps took
# 1.00-1.05x the unchunked time).
HIDDEN_CHUNK = 1 << 19


def in_row_chunks(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, hidden: int
) -> torch.Tensor:
    """``fn(x)`` for a row-wise ``fn`` over ``x`` of shape ``(..., d)``; in CPU inference (no
    autograd) computed on chunks of at most ``HIDDEN_CHUNK // hidden`` rows (``hidden``: the width
    of ``fn``'s largest intermediate) and concatenated, elsewhere in one call. Never while the
    model is traced or exported (ONNX): the chunks are a way to run on this CPU, not part of the
    model, and their number depends on the batch, which a free batch dimension cannot have."""
    if (
        x.device.type != "cpu"
        or torch.is_grad_enabled()
        or torch.jit.is_tracing()
        or torch.compiler.is_exporting()
    ):
        return fn(x)
    rows = max(1, HIDDEN_CHUNK // hidden)
    flat = x.reshape(-1, x.shape[-1])  # (rows, d)
    if flat.shape[0] <= rows:
        return fn(x)
    return torch.cat([fn(chunk) for chunk in flat.split(rows)]).view(*x.shape[:-1], -1)


def drop_path_rates(rate: float, total_blocks: int) -> list[float]:
    """``linspace(0, rate, total_blocks)`` over all blocks of the network, in order."""
    return torch.linspace(0.0, float(rate), total_blocks, device="cpu").tolist()


def init_weights(module: nn.Module) -> None:
    """Reference init for one module: Conv2d/Linear weights N(0, 0.02) truncated at +-2, bias 0.

    LayerNorm and BatchNorm keep PyTorch's defaults (weight 1, bias 0); the FcaFormer-specific
    parameters (bias tables, scale factors, layer scales) are initialized by their own modules.
    """
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-2.0, b=2.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
