"""Closed-form parameter and MAC counts from an :class:`~fcasearch.spec.ArchSpec` alone.

No model is built, so a constraint can reject a candidate before anything is allocated.

Convention: one multiply-add is one MAC, counted over convolutions, linear layers and the two
attention matmuls (``q @ k^T`` and ``attn @ v``). Not counted: normalization layers, activations,
softmax, bias additions, residual additions, layer-scale and scale-factor multiplies, the mean
pool. (fvcore also counts LayerNorm at 5 per element and eval BatchNorm at 2, so its total is
0.6-0.8% higher on the paper models.)

Our model computes queries for the main tokens only. The reference also projects the cross tokens
to queries and discards them, which costs ``M * d^2`` MACs more per block; ``reference=True``
counts that way (it gives the spec's 1,374,297,280 for L1; ours is lower by the sum of
``M * d^2`` over blocks).
"""

from __future__ import annotations

from dataclasses import dataclass

from fcasearch.spec import CONV, ArchSpec

__all__ = ["CostBreakdown", "cost_breakdown", "count_macs", "count_params"]


@dataclass(frozen=True)
class CostBreakdown:
    """Params and MACs of one named piece of the network (``stem``, ``stage2.block3``, ...)."""

    name: str
    params: int
    macs: int


def _stem(spec: ArchSpec) -> CostBreakdown:
    d0 = spec.stages[0].width
    half = d0 // 2
    h, w = spec.img_size
    params = spec.in_chans * 9 * half + 2 * half + 9 * half * d0 + 2 * d0
    macs = (h // 2) * (w // 2) * half * spec.in_chans * 9 + (h // 4) * (w // 4) * d0 * half * 9
    return CostBreakdown("stem", params, macs)


def _conv_block(d: int, hidden: int, n: int) -> tuple[int, int]:
    params = 2 * d * hidden + hidden + 54 * d  # dw 7x7+bias, LN, fc1, fc2, gamma
    macs = n * (49 * d + 2 * d * hidden)
    return params, macs


def _downsample(d: int, o: int, n: int) -> tuple[int, int]:
    params = d * o + o * o + 15 * o  # three Conv-BN: 1x1, dw 3x3 stride 2, 1x1
    macs = n * d * o + (n // 4) * (9 * o + o * o)
    return params, macs


def _fca_block(spec: ArchSpec, stage: int, block: int, reference: bool) -> tuple[int, int]:
    st = spec.stages[stage]
    d, hid, heads = st.width, st.hidden, st.heads
    rh, rw = spec.grid(stage)
    n = rh * rw
    m = spec.cross_tokens(stage, block)
    t = n + m
    # norm1, qkv, proj, gamma_1/2, norm2, mlp.norm, fc2 bias | fc1, fc2 | bias table
    params = 4 * d * d + 13 * d + 2 * d * hid + hid + heads * n
    qkv_rows = t if reference else n
    macs = qkv_rows * d * d + t * 2 * d * d + 2 * n * t * d + n * d * d + 2 * n * d * hid
    if st.enhancement:
        params += 11 * d  # depthwise 3x3 conv + BN
        macs += 9 * n * d
    if block in st.emitters:
        k = 2 * st.merge_stride - 1
        params += k * k * d
        macs += spec.tokens_per_emitter(stage) * k * k * d
    if m:
        params += 2 * d  # s_norm
        params += heads * m if st.cross_bias else 0
        params += m if st.scale_factors else 0
    return params, macs


def cost_breakdown(spec: ArchSpec, reference: bool = False) -> list[CostBreakdown]:
    """Params and MACs per piece, in network order (``reference``: count as the reference does)."""
    rows = [_stem(spec)]
    for s, st in enumerate(spec.stages):
        rh, rw = spec.grid(s)
        n = rh * rw
        for b in range(st.depth):
            if st.kind == CONV:
                p, m = _conv_block(st.width, st.hidden, n)
            else:
                p, m = _fca_block(spec, s, b, reference)
            rows.append(CostBreakdown(f"stage{s}.block{b}", p, m))
        if s + 1 < len(spec.stages):
            p, m = _downsample(st.width, spec.stages[s + 1].width, n)
            rows.append(CostBreakdown(f"stage{s}.downsample", p, m))
    d3, c = spec.stages[-1].width, spec.num_classes
    rows.append(CostBreakdown("head", d3 * (c + 2) + c, d3 * c))
    return rows


def count_params(spec: ArchSpec) -> int:
    """Exact number of parameters of ``build_model(spec)`` (buffers excluded)."""
    return sum(r.params for r in cost_breakdown(spec))


def count_macs(spec: ArchSpec, reference: bool = False) -> int:
    """MACs per image (conv + linear + attention matmuls); see the module docstring."""
    return sum(r.macs for r in cost_breakdown(spec, reference))
