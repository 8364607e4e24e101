"""FcaFormer attention, block and stage (forward cross attention), as in ``fcaformer-spec.md``.

Same function as the reference, computed with less work:

* queries are computed for the main tokens only (the reference projects the cross tokens to
  queries too and discards them);
* the attention logits' additive bias (position table gathered by the ``|drow|*Rw + |dcol|`` index,
  then the per-head cross-token bias) is one ``(1, h, N, N + M)`` float mask, passed to
  ``scaled_dot_product_attention``; in eval mode without autograd it is gathered once and cached
  (the cache is keyed on the parameters' version counters, so an in-place update or a
  ``load_state_dict`` invalidates it);
* token maps are channels-last, so the map/token views around the convolutions are free.

``attn_impl`` selects how the logits, softmax and weighted values are computed: ``"sdpa"``
(``scaled_dot_product_attention``, the default), ``"explicit"`` (a plain ``softmax(q k^T * scale +
bias) v``, for tests) or ``"kernel"`` (fcasearch's own CPU kernel, see
:mod:`fcasearch.models.kernels`, where it applies: float32 inference on CPU, head dim up to 128;
SDPA elsewhere). :func:`~fcasearch.models.fuse.fuse_for_inference` picks the kernel
where it can be built.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from fcasearch.models import layers
from fcasearch.models.kernels import attention_kernel_applies
from fcasearch.models.layers import (
    ConvBN,
    DropPath,
    Mlp,
    args_cache,
    depthwise_conv,
    fast_path,
    gemm_library,
    layer_norm,
    linear,
    linear_add,
    packed_weight,
    temporarily,
)
from fcasearch.models.network import FCA, MAP, TOKENS, recording

__all__ = ["ATTENTION_IMPLS", "FcaBlock", "FcaStage", "attention_impl", "relative_index"]

ATTENTION_IMPLS = ("sdpa", "explicit", "kernel")


def relative_index(rows: int, cols: int) -> torch.Tensor:
    """``(N, N)`` index into the bias table: ``|drow| * cols + |dcol|`` for every query/key pair."""
    r = torch.arange(rows).repeat_interleave(cols)  # (N,) row of each token, row-major
    c = torch.arange(cols).repeat(rows)  # (N,)
    return (r[:, None] - r[None, :]).abs() * cols + (c[:, None] - c[None, :]).abs()


class FcaBlock(nn.Module):
    """One FcaFormer block (attention with cross tokens, token merge, local conv, MLP).

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
        n = grid[0] * grid[1]
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, n))  # (h, Rh*Rw)
        self.register_buffer("attention_bias_idxs", relative_index(*grid), persistent=False)
        # gamma_* become None once fuse_for_inference folded them into proj / mlp.fc2.
        self.gamma_1: nn.Parameter | None = nn.Parameter(
            torch.full((dim,), float(layer_scale_init))
        )
        self.gamma_2: nn.Parameter | None = nn.Parameter(
            torch.full((dim,), float(layer_scale_init))
        )
        self.dw_conv = None
        if merge_stride is not None:
            s = merge_stride
            self.dw_conv = nn.Conv2d(dim, dim, 2 * s - 1, s, s - 1, groups=dim, bias=False)
        self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim) if enhancement else None
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, hidden)
        self.s_norm = nn.LayerNorm(dim, eps=1e-5) if cross_in else None
        self.s_token_bias = None
        self.s_scale_factors = None
        if cross_in and cross_bias:
            self.s_token_bias = nn.Parameter(torch.zeros(1, heads, 1, cross_in))  # (1, h, 1, M)
        if cross_in and scale_factors:
            self.s_scale_factors = nn.Parameter(torch.ones(1, cross_in, 1))  # (1, M, 1)
        self.drop_path = DropPath(drop_path)
        self.register_buffer("frozen_mask", None, persistent=False)  # set by freeze_mask()
        # the same bias compactly, for the block operator (set by freeze_mask): per head the
        # position bias between a query column and every key column |dr| rows away,
        # (h, Rh, Rw, Rw), and the cross-token biases (h, M) or None
        self.register_buffer("frozen_segments", None, persistent=False)
        self.register_buffer("frozen_cross_bias", None, persistent=False)
        self._mask_cache: tuple[tuple, torch.Tensor] | None = None
        self.fast = False  # fused kernels (layer scales folded); set by fuse_for_inference
        self.gemm = "torch"  # library of the Linear GEMMs once fused; set by fuse_for_inference
        self.dw_kernel = False  # depthwise convs on fcasearch's kernel; set by fuse_for_inference
        self.ln_kernel = False  # LayerNorms on fcasearch's kernel; set by fuse_for_inference
        self.block_kernel = False  # the whole block as one kernel op; set by fuse_for_inference

    # ---- the additive attention bias --------------------------------------------------------
    def attention_mask(self) -> torch.Tensor:
        """The ``(1, h, N, N + M)`` additive logit bias: gathered position bias, then cross bias.

        Gathered afresh when autograd may need it (training, or grad enabled on the tables) or
        when the tables are inference tensors (a model built under ``inference_mode``: they keep
        no version counter); otherwise cached until the tables change (version counter, storage,
        device or dtype).
        After :func:`~fcasearch.models.fuse.fuse_for_inference` it is a frozen buffer.
        """
        if self.frozen_mask is not None:
            return self.frozen_mask
        params = [p for p in (self.attention_biases, self.s_token_bias) if p is not None]
        need_grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        if self.training or need_grad or any(p.is_inference() for p in params):
            self._mask_cache = None
            return self._build_mask()
        # An inference-mode tensor must not leak into autograd outside inference mode: keyed too.
        key = (torch.is_inference_mode_enabled(), *((p.data_ptr(), p._version, p.device, p.dtype) for p in params))  # fmt: skip
        if self._mask_cache is None or self._mask_cache[0] != key:
            with torch.no_grad():
                self._mask_cache = (key, self._build_mask())
        return self._mask_cache[1]

    def _build_mask(self) -> torch.Tensor:
        n, m, h = self.attention_bias_idxs.shape[0], self.cross_in, self.num_heads
        main = self.attention_biases[:, self.attention_bias_idxs]  # (h, N, N)
        if not m:
            return main.unsqueeze(0)
        if self.s_token_bias is not None:
            cross = self.s_token_bias[0].expand(h, n, m)  # (h, N, M)
        else:
            cross = main.new_zeros(h, n, m)
        return torch.cat([main, cross], dim=-1).unsqueeze(0)  # (1, h, N, N+M)

    def freeze_mask(self) -> None:
        """Store the current mask as a buffer (inference only: later table edits are ignored)."""
        with torch.inference_mode(False), torch.no_grad():
            mask = self._build_mask().contiguous()
            rh, rw = self.grid
            dr = torch.arange(rh, device=mask.device)[:, None, None]
            cols = torch.arange(rw, device=mask.device)
            seg_idx = dr * rw + (cols[None, :, None] - cols[None, None, :]).abs()  # (Rh, Rw, Rw)
            segments = self.attention_biases[:, seg_idx].contiguous()  # (h, Rh, Rw, Rw)
            cross = None
            if self.s_token_bias is not None:
                cross = self.s_token_bias[0, :, 0, :].contiguous()  # (h, M)
        self.frozen_mask = mask
        self.frozen_segments = segments
        self.frozen_cross_bias = cross
        self._mask_cache = None

    def _apply(self, fn, recurse=True):  # device/dtype moves invalidate the cache
        self._mask_cache = None
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> FcaBlock:
        self._mask_cache = None
        return super().train(mode)

    # ---- forward ----------------------------------------------------------------------------
    def attention(
        self, xn: torch.Tensor, cross: torch.Tensor | None, lib: str = "torch"
    ) -> torch.Tensor:
        """Multi-head attention of the normalized main tokens over main + cross tokens.

        Args:
            xn: ``(B, N, d)`` main tokens after ``norm1``.
            cross: ``(B, M, d)`` raw cross tokens (before scale factors and ``s_norm``) or None.
            lib: the library of the query/key/value GEMMs (see ``layers.gemm_library``).

        Returns:
            ``(B, N, d)`` heads merged, before ``proj``.
        """
        b, n, d = xn.shape
        h = self.num_heads
        hd = d // h
        w, bias = self.qkv.weight, self.qkv.bias
        if cross is None:
            pw = packed_weight(self, "qkv", w, lib)
            qkv = linear(xn, w, bias, lib, pw).view(b, n, 3, h, hd).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)  # (B, h, N, hd) each
        else:
            if self.s_scale_factors is not None:
                cross = cross * self.s_scale_factors  # (B, M, d)
            cross = layer_norm(self.s_norm, cross, self.ln_kernel)
            wq, wkv = w[:d], w[d:]
            q = linear(xn, wq, bias[:d], lib, packed_weight(self, "q", wq, lib))  # (B, N, d)
            q = q.view(b, n, h, hd).transpose(1, 2)  # (B, h, N, hd)
            xc = torch.cat([xn, cross], dim=1)  # (B, N+M, d)
            kv = linear(xc, wkv, bias[d:], lib, packed_weight(self, "kv", wkv, lib))
            kv = kv.view(b, -1, 2, h, hd).permute(2, 0, 3, 1, 4)  # (2, B, h, N+M, hd)
            k, v = kv.unbind(0)
        mask = self.attention_mask()
        if mask.dtype != q.dtype:
            mask = mask.to(q.dtype)
        if self.attn_impl == "kernel" and attention_kernel_applies(q):
            out = torch.ops.fcasearch_kernels.fca_attention(q, k, v, mask, hd**-0.5)  # (B,N,h,hd)
            return out.view(b, n, d)
        if self.attn_impl in ("sdpa", "kernel"):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, N, hd)
        elif self.attn_impl == "explicit":
            logits = (q * hd**-0.5) @ k.transpose(-2, -1) + mask  # (B, h, N, N+M)
            out = logits.softmax(dim=-1) @ v
        else:
            raise ValueError(f"attn_impl: {self.attn_impl!r} is not one of {ATTENTION_IMPLS}")
        return out.transpose(1, 2).reshape(b, n, d)

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
        b, n, d = x.shape
        # The inference kernels need the layer scales folded (fuse_for_inference does both).
        fast = fast_path(self.fast, x) and not self.training and self.gamma_1 is None
        od = gemm_library(self.gemm, x)
        # eager only: under torch.compile the per-step path measured faster (Inductor fuses the
        # norms, the scale factors and the concatenation around the kernels; L1 b1, paired,
        # compiled with the block operator against without: 1.065)
        if fast and self._one_op(x, od):
            return self._forward_one_op(x, cross)
        o = self.attention(layer_norm(self.norm1, x, self.ln_kernel), cross, od)  # (B, N, d)
        wp, bp = self.proj.weight, self.proj.bias
        pp = packed_weight(self, "proj", wp, od)
        if fast:
            x = linear_add(o, wp, bp, x, True, od, pp)
        else:
            y = linear(o, wp, bp, od, pp)
            x = x + self.drop_path(y if self.gamma_1 is None else y * self.gamma_1)
        emitted = None
        if self.dw_conv is not None or self.local_conv is not None:
            xmap = x.view(b, self.grid[0], self.grid[1], d).permute(0, 3, 1, 2)  # (B, d, Rh, Rw)
            if self.dw_conv is not None:  # token merge, taken before the local conv
                merged = depthwise_conv(self.dw_conv, xmap, self.dw_kernel)  # (B, d, Sh, Sw)
                emitted = merged.flatten(2).transpose(1, 2)  # (B, S, d)
            if self.local_conv is not None:  # replaces the stream: no residual
                if isinstance(self.local_conv, nn.Conv2d):  # folded by fuse_for_inference
                    x = depthwise_conv(self.local_conv, xmap, self.dw_kernel)
                else:
                    x = self.local_conv(xmap)
                x = x.permute(0, 2, 3, 1).reshape(b, n, d)
        if fast:
            xn = layer_norm(self.norm2, x, self.ln_kernel)
            return self.mlp.forward_add(xn, x, od, self.ln_kernel), emitted
        y = self.mlp(self.norm2(x), od)
        return x + self.drop_path(y if self.gamma_2 is None else y * self.gamma_2), emitted

    def _one_op(self, x: torch.Tensor, lib: str) -> bool:
        """Whether the fused block runs as the one operator ``fcasearch_kernels.fca_block``: all
        of fcasearch's kernels in use (``block_kernel``), its GEMMs included, on a contiguous
        ``x`` (the caller has checked for eager float32 inference with layer scales folded)."""
        return (
            self.block_kernel
            and lib == "fcasearch"
            and self.attn_impl == "kernel"
            and self.dw_kernel
            and self.ln_kernel
            and self.frozen_mask is not None
            and self.frozen_mask.dtype == x.dtype
            and (self.local_conv is None or isinstance(self.local_conv, nn.Conv2d))
            and 0 < self.dim // self.num_heads <= 128
            and x.is_contiguous()
        )

    def _forward_one_op(
        self, x: torch.Tensor, cross: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fused block as ``fcasearch_kernels.fca_block`` (kernels/block.cpp): the same steps
        as the Python inference path below, without the interpreter between them. Its argument
        list is kept between calls while the block's modules and weights stay the same."""
        mods = self._modules
        mlp = mods["mlp"]._modules
        sources = tuple(
            m._parameters["weight"] for m in (mods["qkv"], mods["proj"], mlp["fc1"], mlp["fc2"])
        )
        params, cfg, eps = args_cache(self).get(
            self, (cross is None, layers.MLP_CHUNK_ELEMENTS), sources,
            lambda: self._one_op_args(cross is None),
        )  # fmt: skip
        if (rec := recording()) is not None:
            rec.step(FCA, params, cfg, eps, sources)  # FcaStage adds what the block reads
        out = torch.ops.fcasearch_kernels.fca_block(x, cross, params, cfg, eps)
        return out[0], (out[1] if len(out) > 1 else None)

    def _one_op_args(self, no_cross: bool) -> tuple[list, list[int], list[float]]:
        """The parameters, settings and epsilons of ``fcasearch_kernels.fca_block``."""
        d, lib, mlp = self.dim, "fcasearch", self.mlp
        w = self.qkv.weight
        if no_cross:
            packed = [packed_weight(self, "qkv", w, lib), None, None]
        else:
            packed = [None, packed_weight(self, "q", w[:d], lib), packed_weight(self, "kv", w[d:], lib)]  # fmt: skip
        sn, lc, mn = self.s_norm, self.local_conv, mlp.norm
        params = [
            self.norm1.weight, self.norm1.bias, self.s_scale_factors,
            sn.weight if sn is not None else None, sn.bias if sn is not None else None,
            *packed, self.qkv.bias, self.frozen_mask,
            packed_weight(self, "proj", self.proj.weight, lib), self.proj.bias,
            self.dw_conv.weight if self.dw_conv is not None else None,
            lc.weight if lc is not None else None, lc.bias if lc is not None else None,
            self.norm2.weight, self.norm2.bias, mn.weight, mn.bias,
            packed_weight(mlp, "fc1", mlp.fc1.weight, lib), mlp.fc1.bias,
            packed_weight(mlp, "fc2", mlp.fc2.weight, lib), mlp.fc2.bias,
            self.frozen_segments, self.frozen_cross_bias,
        ]  # fmt: skip
        stride = self.dw_conv.stride[0] if self.dw_conv is not None else 0
        cfg = [self.num_heads, *self.grid, stride, mlp.fc1.out_features, layers.MLP_CHUNK_ELEMENTS]
        eps = [self.norm1.eps, sn.eps if sn is not None else 0.0, self.norm2.eps, mn.eps]
        return params, cfg, eps


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
        b, d, rh, rw = x.shape
        t = x.permute(0, 2, 3, 1).reshape(b, rh * rw, d)  # (B, N, d); a view if channels-last
        rec = recording()
        if rec is not None:
            rec.step(TOKENS)
        emitted: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks):
            src = self.sources[i]
            cross = None
            if len(src) == 1:
                cross = emitted[src[0]]
            elif src:
                cross = torch.cat([emitted[j] for j in src], dim=1)  # (B, M, d)
            steps = len(rec.steps) if rec is not None else 0
            t, new = blk(t, cross)
            if rec is not None and len(rec.steps) == steps + 1 and rec.steps[-1].code == FCA:
                rec.steps[-1].settings += [i, len(src), *src]  # the block's step: what it reads
            if new is not None:
                emitted[i] = new
        x = t.view(b, rh, rw, d).permute(0, 3, 1, 2)  # (B, d, Rh, Rw), channels-last
        if rec is not None:
            rec.step(MAP, settings=(rh, rw))
        if self.downsample is not None:
            x = self.downsample(x)
        return x


@contextlib.contextmanager
def attention_impl(model: nn.Module, impl: str) -> Iterator[nn.Module]:
    """Temporarily run every :class:`FcaBlock` of ``model`` with ``impl`` (one of
    :data:`ATTENTION_IMPLS`); the previous choice of each block is restored on exit."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(
            f"impl: {impl!r} is not an attention implementation; use one of {ATTENTION_IMPLS}"
        )
    with temporarily([m for m in model.modules() if isinstance(m, FcaBlock)], "attn_impl", impl):
        yield model
