"""A forward pass in the official FcaFormer model's manner, reading the official state dict.

The benchmarks' yardstick: what the reference implementation computes, and how. Feature maps are
NCHW; Conv-BN runs as a convolution then BatchNorm from its running statistics (unfused);
queries are computed for the cross tokens too and discarded; the position bias table is gathered
on every call; attention is an explicit ``softmax(q k^T * scale + bias) v``. Its outputs equal
fcasearch's model loaded with the same weights (``tests/bench`` checks it).

Use::

    forward = reference_forward(spec, to_reference_state_dict(model))
    with torch.inference_mode():
        logits = forward(images)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from fcasearch.spec import CONV, ArchSpec

__all__ = ["reference_forward"]


def _relative_index(rows: int, cols: int) -> torch.Tensor:
    """``(N, N)``: ``|drow| * cols + |dcol|`` between every pair of row-major grid cells."""
    r, c = torch.arange(rows).repeat_interleave(cols), torch.arange(cols).repeat(rows)
    return (r[:, None] - r[None, :]).abs() * cols + (c[:, None] - c[None, :]).abs()


def reference_forward(
    spec: ArchSpec, state_dict: Mapping[str, torch.Tensor]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable ``images (B, in, H, W) -> logits (B, classes)`` computing ``spec``'s network from
    ``state_dict`` (official key names, as :func:`fcasearch.models.to_reference_state_dict` gives)
    in the reference's manner (see the module docstring).

    Args:
        spec: the architecture the state dict belongs to.
        state_dict: its weights, under the official keys; read on every call, not copied.
    """
    sd = state_dict
    idx = {s: _relative_index(*spec.grid(s)) for s, st in enumerate(spec.stages) if st.kind != CONV}

    def conv_bn(x, p, stride=1, pad=0, groups=1):
        x = F.conv2d(x, sd[f"{p}.c.weight"], None, stride, pad, 1, groups)
        bn = [sd[f"{p}.bn.{n}"] for n in ("running_mean", "running_var", "weight", "bias")]
        return F.batch_norm(x, *bn, False, 0.0, 1e-5)

    def ln(x, p, eps=1e-5):
        return F.layer_norm(x, x.shape[-1:], sd[f"{p}.weight"], sd[f"{p}.bias"], eps)

    def lin(x, p):
        return F.linear(x, sd[f"{p}.weight"], sd[f"{p}.bias"])

    def convnext_block(x, p):  # (B, C, H, W)
        c = x.shape[1]
        y = F.conv2d(x, sd[f"{p}.dwconv.weight"], sd[f"{p}.dwconv.bias"], 1, 3, 1, c)
        y = ln(y.permute(0, 2, 3, 1), f"{p}.norm", 1e-6)  # (B, H, W, C)
        y = lin(F.gelu(lin(y, f"{p}.pwconv1")), f"{p}.pwconv2")
        return x + (sd[f"{p}.gamma"] * y).permute(0, 3, 1, 2)

    def fca_block(t, cross, p, s, grid):  # t (B, N, C), cross (B, M, C) or None
        b, n, c = t.shape
        h = spec.stages[s].heads
        xs = ln(t, f"{p}.norm1")
        if cross is not None:
            if f"{p}.s_scale_factors" in sd:
                cross = cross * sd[f"{p}.s_scale_factors"]
            xs = torch.cat([xs, ln(cross, f"{p}.s_norm")], 1)
        qkv = lin(xs, f"{p}.qkv").reshape(b, xs.shape[1], 3, h, c // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0][:, :, :n], qkv[1], qkv[2]  # queries of the cross tokens dropped
        bias = sd[f"{p}.attention_biases"][:, idx[s]]  # gathered on every call
        if cross is not None:
            stb = sd.get(f"{p}.s_token_bias", bias.new_zeros(1, h, 1, cross.shape[1]))
            bias = torch.cat([bias.unsqueeze(0), stb.expand(1, h, n, stb.shape[-1])], -1)
        attn = ((q * (c // h) ** -0.5) @ k.transpose(-2, -1) + bias).softmax(-1)
        t = t + sd[f"{p}.gamma_1"] * lin((attn @ v).transpose(1, 2).reshape(b, n, c), f"{p}.proj")
        x = t.transpose(1, 2).reshape(b, c, *grid)  # (B, C, Rh, Rw)
        emitted = None
        if f"{p}.dw_conv.weight" in sd:
            w = sd[f"{p}.dw_conv.weight"]
            stride = (w.shape[-1] + 1) // 2
            emitted = F.conv2d(x, w, None, stride, stride - 1, 1, c).flatten(2).transpose(1, 2)
        if f"{p}.local_conv.c.weight" in sd:  # the enhancement replaces the token stream
            t = conv_bn(x, f"{p}.local_conv", 1, 1, c).flatten(2).transpose(1, 2)
        y = lin(
            F.gelu(lin(ln(ln(t, f"{p}.norm2"), f"{p}.mlp.norm"), f"{p}.mlp.fc1")), f"{p}.mlp.fc2"
        )
        return t + sd[f"{p}.gamma_2"] * y, emitted

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = conv_bn(F.gelu(conv_bn(x, "patch_embed.seq.0", 2, 1)), "patch_embed.seq.2", 2, 1)
        for s, st in enumerate(spec.stages):
            p = f"layer_{s}"
            if st.kind == CONV:
                for j in range(st.depth):
                    x = convnext_block(x, f"{p}.blocks.{j}")
            else:
                b, c, rh, rw = x.shape
                t, emitted = x.flatten(2).transpose(1, 2), {}
                for j in range(st.depth):
                    src = st.sources(j)
                    cross = torch.cat([emitted[i] for i in src], dim=1) if src else None
                    t, emitted[j] = fca_block(t, cross, f"{p}.blocks.{j}", s, (rh, rw))
                x = t.transpose(1, 2).reshape(b, c, rh, rw)
            if s + 1 < len(spec.stages):
                o = spec.stages[s + 1].width
                y = F.gelu(conv_bn(x, f"{p}.downsample.conv1"))
                y = F.gelu(conv_bn(y, f"{p}.downsample.conv2", 2, 1, o))
                x = conv_bn(y, f"{p}.downsample.conv3")
        return lin(ln(x.flatten(2).mean(-1), "norm_head"), "head")

    return forward
