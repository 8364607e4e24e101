"""FcaFormer attention block and stage (forward cross attention), as in ``fcaformer-spec.md``.

Same function as the reference, with two differences in the work done:

* queries are computed for the main tokens only (the reference projects the cross tokens to
  queries too and discards them);
* token maps are channels-last, so the map/token views around the convolutions are free.

``attn_impl`` picks how ``softmax(q k^T * scale + bias) v`` is computed: ``"sdpa"``
(``F.scaled_dot_product_attention``, the default) or ``"explicit"`` (the formula as written).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from fcasearch.models.layers import ConvBN, DropPath, Mlp, PaddedConv2d, in_row_chunks

__all__ = ["ATTENTION_IMPLS", "FcaBlock", "FcaStage", "attention_impl", "relative_index"]

ATTENTION_IMPLS = ("sdpa", "explicit")


def relative_index(rows: int, cols: int) -> torch.Tensor:
    """``(N, N)`` index into the bias table: ``|drow| * cols + |dcol|`` for every query/key pair.

    Computed once per grid on the CPU, then moved to the default device (the one a
    ``with torch.device(...)`` block sets): on the meta device each of these ops would go through
    Python reference implementations, and building a model for counting took 20x longer. Never an
    inference tensor, even when first asked for under ``torch.inference_mode``: the cached index is
    shared by every model of that grid, and one made by a model built for measuring would make a
    later model's training fail ("Inference tensors cannot be saved for backward")."""
    with torch.inference_mode(False):
        return _relative_index_cpu(rows, cols).to(torch.get_default_device())


@functools.lru_cache(maxsize=8)
def _relative_index_cpu(rows: int, cols: int) -> torch.Tensor:
    r = torch.arange(rows, device="cpu").repeat_interleave(cols)  # (N,) row of each token
    c = torch.arange(cols, device="cpu").repeat(rows)  # (N,)
    return (r[:, None] - r[None, :]).abs() * cols + (c[:, None] - c[None, :]).abs()


def check_attention_impl(impl: str) -> None:
    """Raise ValueError unless ``impl`` is one of :data:`ATTENTION_IMPLS`."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attn_impl: {impl!r} is not one of {', '.join(ATTENTION_IMPLS)}")


class FcaBlock(nn.Module):
    """One FcaFormer block: attention over main and cross tokens, token merge, local conv, MLP.

    Args:
        dim: channels ``d``.
        heads: attention heads ``h``.
        hidden: MLP hidden width.
        grid: token grid ``(Rh, Rw)`` of the stage.
        cross_in: ``M``, how many cross tokens this block reads (0: none).
        merge_stride: stride ``s`` of the token merge (kernel ``2s-1``) if the block emits, else
            ``None``.
        enhancement: add the local depthwise 3x3 Conv-BN that replaces the token stream.
        scale_factors: learnable per-cross-token scale factors (only if ``cross_in``).
        cross_bias: learnable per-head per-cross-token attention bias (only if ``cross_in``).
        drop_path: stochastic-depth rate for both residuals.
        layer_scale_init: initial ``gamma_1`` and ``gamma_2``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        hidden: int,
        grid: tuple[int, int],
        cross_in: int,
        merge_stride: int | None,
        enhancement: bool,
        scale_factors: bool,
        cross_bias: bool,
        drop_path: float,
        layer_scale_init: float,
    ) -> None:
        super().__init__()
        self.dim, self.num_heads, self.grid, self.cross_in = dim, heads, tuple(grid), cross_in
        self.attn_impl = "sdpa"
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, grid[0] * grid[1]))  # (h, N)
        self.register_buffer("attention_bias_idxs", relative_index(*grid), persistent=False)
        self.s_norm = nn.LayerNorm(dim, eps=1e-5) if cross_in else None
        self.s_token_bias = None
        if cross_in and cross_bias:
            self.s_token_bias = nn.Parameter(torch.zeros(1, heads, 1, cross_in))  # (1, h, 1, M)
        self.s_scale_factors = None
        if cross_in and scale_factors:
            self.s_scale_factors = nn.Parameter(torch.ones(1, cross_in, 1))  # (1, M, 1)
        # the gathered bias of every logit, (1, h, N, N + M): set once by fuse_for_inference
        self.register_buffer("frozen_bias", None)
        # gamma_* become None once fuse_for_inference has folded them into proj / mlp.fc2
        self.gamma_1: nn.Parameter | None = nn.Parameter(
            torch.full((dim,), float(layer_scale_init))
        )
        self.gamma_2: nn.Parameter | None = nn.Parameter(
            torch.full((dim,), float(layer_scale_init))
        )
        self.dw_conv = None  # the token merge: cross tokens out
        if merge_stride is not None:
            s = merge_stride
            self.dw_conv = PaddedConv2d(dim, dim, 2 * s - 1, s, s - 1, groups=dim, bias=False)
        self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim) if enhancement else None
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, hidden)
        self.drop_path = DropPath(drop_path)

    def attention_bias(self) -> torch.Tensor:
        """The additive logit bias ``(1, h, N, N + M)``: the position table gathered by
        :func:`relative_index` for main keys, the per-head cross-token bias for cross keys."""
        if self.frozen_bias is not None:
            return self.frozen_bias
        n, m, h = self.attention_bias_idxs.shape[0], self.cross_in, self.num_heads
        main = self.attention_biases[:, self.attention_bias_idxs]  # (h, N, N)
        if not m:
            return main.unsqueeze(0)
        if self.s_token_bias is not None:
            cross = self.s_token_bias[0].expand(h, n, m)  # (h, N, M)
        else:
            cross = main.new_zeros(h, n, m)
        return torch.cat([main, cross], dim=-1).unsqueeze(0)

    def attention(self, x: torch.Tensor, cross: torch.Tensor | None) -> torch.Tensor:
        """Multi-head attention of the main tokens over main and cross tokens, then ``proj``.

        Args:
            x: ``(B, N, d)`` main tokens after ``norm1``.
            cross: ``(B, M, d)`` cross tokens as emitted (before scale factors and ``s_norm``),
                or None.
        """
        # sizes from the block, not from x.shape, and -1 for the batch: a traced ONNX export then
        # records constants instead of shape arithmetic (a micro member exported in 0.8x the time)
        n, d, h = self.grid[0] * self.grid[1], self.dim, self.num_heads
        hd = d // h
        q, k, v = self.qkv(x).view(-1, n, 3, h, hd).permute(2, 0, 3, 1, 4)  # (B, h, N, hd) each
        if cross is not None:  # keys and values only: queries come from the main tokens
            if self.s_scale_factors is not None:
                cross = cross * self.s_scale_factors
            kv = F.linear(self.s_norm(cross), self.qkv.weight[d:], self.qkv.bias[d:])
            kc, vc = kv.view(-1, self.cross_in, 2, h, hd).permute(2, 0, 3, 1, 4)  # (B, h, M, hd)
            k, v = torch.cat([k, kc], dim=2), torch.cat([v, vc], dim=2)  # (B, h, N + M, hd)
        bias = self.attention_bias().to(q.dtype)
        if self.attn_impl == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        elif self.attn_impl == "explicit":
            logits = (q * hd**-0.5) @ k.transpose(-2, -1) + bias  # (B, h, N, N + M)
            out = logits.softmax(dim=-1) @ v
        else:
            check_attention_impl(self.attn_impl)
        return self.proj(out.transpose(1, 2).reshape(-1, n, d))  # heads merged

    def forward(
        self, x: torch.Tensor, cross: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One block.

        Args:
            x: ``(B, N, d)`` main tokens, row-major over the grid.
            cross: ``(B, M, d)`` cross tokens read by this block (oldest emitter first) or None.

        Returns:
            The new ``(B, N, d)`` tokens and the ``(B, S, d)`` cross tokens emitted (or None).
        """
        n, d = self.grid[0] * self.grid[1], self.dim
        y = self.attention(self.norm1(x), cross)
        x = x + self.drop_path(y if self.gamma_1 is None else y * self.gamma_1)
        xmap = x.view(-1, *self.grid, d).permute(0, 3, 1, 2)  # (B, d, Rh, Rw), channels-last
        emitted = None
        if self.dw_conv is not None:  # token merge, taken before the local conv
            emitted = self.dw_conv(xmap).flatten(2).transpose(1, 2)  # (B, S, d)
        if self.local_conv is not None:  # replaces the token stream: no residual
            x = self.local_conv(xmap).permute(0, 2, 3, 1).reshape(-1, n, d)
        y = in_row_chunks(lambda t: self.mlp(self.norm2(t)), x, self.mlp.fc1.out_features)
        x = x + self.drop_path(y if self.gamma_2 is None else y * self.gamma_2)
        return x, emitted


class FcaStage(nn.Module):
    """A stage of FcaFormer blocks with forward cross attention, then the optional downsample.

    Args:
        blocks: the stage's blocks, in order.
        sources: for each block, the indices of the emitting blocks it reads, oldest first.
        downsample: module applied to the ``(B, d, Rh, Rw)`` map after the last block, or None.
    """

    def __init__(
        self,
        blocks: list[FcaBlock],
        sources: list[tuple[int, ...]],
        downsample: nn.Module | None,
    ) -> None:
        super().__init__()
        if len(blocks) != len(sources):
            raise ValueError(f"sources: {len(sources)} entries for {len(blocks)} blocks")
        self.blocks = nn.ModuleList(blocks)
        self.sources = [tuple(s) for s in sources]
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d, Rh, Rw) -> next map
        (rh, rw), d = self.blocks[0].grid, self.blocks[0].dim  # the stage's grid and width
        t = x.permute(0, 2, 3, 1).reshape(-1, rh * rw, d)  # (B, N, d); a view if channels-last
        emitted: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks):
            src = self.sources[i]
            cross = torch.cat([emitted[j] for j in src], dim=1) if src else None  # (B, M, d)
            t, new = blk(t, cross)
            if new is not None:
                emitted[i] = new
        x = t.view(-1, rh, rw, d).permute(0, 3, 1, 2)  # (B, d, Rh, Rw), channels-last
        if self.downsample is not None:
            x = self.downsample(x)
        return x


@contextlib.contextmanager
def attention_impl(model: nn.Module, impl: str) -> Iterator[nn.Module]:
    """Temporarily run every :class:`FcaBlock` of ``model`` with ``impl`` (one of
    :data:`ATTENTION_IMPLS`); the previous choice of each block is restored on exit."""
    check_attention_impl(impl)
    blocks = [m for m in model.modules() if isinstance(m, FcaBlock)]
    before = [blk.attn_impl for blk in blocks]
    for blk in blocks:
        blk.attn_impl = impl
    try:
        yield model
    finally:
        for blk, old in zip(blocks, before):
            blk.attn_impl = old
