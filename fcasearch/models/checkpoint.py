"""Released-checkpoint layout: map the official FcaFormer state dict onto our modules and back.

Our modules use the reference's leaf names; only two prefixes differ:

=========================  =====================
official key prefix        ours
=========================  =====================
``patch_embed.seq.0.``     ``stem.conv1.``
``patch_embed.seq.2.``     ``stem.conv2.``
``layer_{i}.``             ``stages.{i}.``
=========================  =====================

:func:`reference_state_dict_shapes` lists the official keys and shapes for any spec (the table of
``fcaformer-spec.md``, generalized); :func:`load_reference_checkpoint` loads such a dict strictly and
explains a mismatch (wrong model size, wrong resolution, wrong class count) in words.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fcasearch.spec import CONV, ArchSpec

__all__ = [
    "CheckpointError",
    "from_reference_key",
    "load_reference_checkpoint",
    "reference_state_dict_shapes",
    "to_reference_key",
    "to_reference_state_dict",
]

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_TO_REF = ((re.compile(r"^stem\.conv1\."), "patch_embed.seq.0."), (re.compile(r"^stem\.conv2\."), "patch_embed.seq.2."), (re.compile(r"^stages\.(\d+)\."), r"layer_\1."))  # fmt: skip
_FROM_REF = ((re.compile(r"^patch_embed\.seq\.0\."), "stem.conv1."), (re.compile(r"^patch_embed\.seq\.2\."), "stem.conv2."), (re.compile(r"^layer_(\d+)\."), r"stages.\1."))  # fmt: skip


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message says what differs and how to fix it."""


def to_reference_key(key: str) -> str:
    """Our state-dict key -> the official one (``stages.2.blocks.0.qkv.weight`` ->
    ``layer_2.blocks.0.qkv.weight``)."""
    for pattern, repl in _TO_REF:
        if pattern.match(key):
            return pattern.sub(repl, key, count=1)
    return key


def from_reference_key(key: str) -> str:
    """The official state-dict key -> ours (inverse of :func:`to_reference_key`)."""
    for pattern, repl in _FROM_REF:
        if pattern.match(key):
            return pattern.sub(repl, key, count=1)
    return key


def reference_state_dict_shapes(spec: ArchSpec) -> dict[str, tuple[int, ...]]:
    """Every key of the official state dict for ``spec``, with its shape, in network order.

    Built from the spec's key table alone (no model is constructed); BatchNorm entries include
    ``num_batches_tracked`` (shape ``()``); the bias-table index buffer is not saved.
    """
    out: dict[str, tuple[int, ...]] = {}

    def conv_bn(prefix: str, o: int, i: int, k: int) -> None:
        out[f"{prefix}.c.weight"] = (o, i, k, k)
        for name in _BN:
            out[f"{prefix}.bn.{name}"] = () if name == "num_batches_tracked" else (o,)

    d0 = spec.stages[0].width
    conv_bn("patch_embed.seq.0", d0 // 2, spec.in_chans, 3)
    conv_bn("patch_embed.seq.2", d0, d0 // 2, 3)
    for s, st in enumerate(spec.stages):
        d, hid = st.width, st.hidden
        for j in range(st.depth):
            p = f"layer_{s}.blocks.{j}"
            if st.kind == CONV:
                out.update({f"{p}.dwconv.weight": (d, 1, 7, 7), f"{p}.dwconv.bias": (d,)})
                out.update({f"{p}.norm.weight": (d,), f"{p}.norm.bias": (d,)})
                out.update({f"{p}.pwconv1.weight": (hid, d), f"{p}.pwconv1.bias": (hid,)})
                out.update(
                    {f"{p}.pwconv2.weight": (d, hid), f"{p}.pwconv2.bias": (d,), f"{p}.gamma": (d,)}
                )
                continue
            rh, rw = spec.grid(s)
            m = spec.cross_tokens(s, j)
            out.update({f"{p}.norm1.weight": (d,), f"{p}.norm1.bias": (d,)})
            out.update({f"{p}.qkv.weight": (3 * d, d), f"{p}.qkv.bias": (3 * d,)})
            out.update({f"{p}.proj.weight": (d, d), f"{p}.proj.bias": (d,)})
            out[f"{p}.attention_biases"] = (st.heads, rh * rw)
            out.update({f"{p}.gamma_1": (d,), f"{p}.gamma_2": (d,)})
            if j in st.emitters:
                k = 2 * st.merge_stride - 1
                out[f"{p}.dw_conv.weight"] = (d, 1, k, k)
            if st.enhancement:
                conv_bn(f"{p}.local_conv", d, 1, 3)
            out.update({f"{p}.norm2.weight": (d,), f"{p}.norm2.bias": (d,)})
            out.update({f"{p}.mlp.norm.weight": (d,), f"{p}.mlp.norm.bias": (d,)})
            out.update({f"{p}.mlp.fc1.weight": (hid, d), f"{p}.mlp.fc1.bias": (hid,)})
            out.update({f"{p}.mlp.fc2.weight": (d, hid), f"{p}.mlp.fc2.bias": (d,)})
            if m:
                out.update({f"{p}.s_norm.weight": (d,), f"{p}.s_norm.bias": (d,)})
                if st.cross_bias:
                    out[f"{p}.s_token_bias"] = (1, st.heads, 1, m)
                if st.scale_factors:
                    out[f"{p}.s_scale_factors"] = (1, m, 1)
        if s + 1 < len(spec.stages):
            o = spec.stages[s + 1].width
            conv_bn(f"layer_{s}.downsample.conv1", o, d, 1)
            conv_bn(f"layer_{s}.downsample.conv2", o, 1, 3)
            conv_bn(f"layer_{s}.downsample.conv3", o, o, 1)
    dl, c = spec.stages[-1].width, spec.num_classes
    out.update({"norm_head.weight": (dl,), "norm_head.bias": (dl,)})
    out.update({"head.weight": (c, dl), "head.bias": (c,)})
    return out


def _check_unfused(model: nn.Module) -> None:
    if getattr(model, "fused", False):
        raise CheckpointError(
            "model: it has been through fuse_for_inference (Conv-BN and layer scales folded), so it "
            "no longer has the official layout; load the checkpoint first, then fuse"
        )


def to_reference_state_dict(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """The model's weights under the official key names (the inverse of loading)."""
    _check_unfused(model)
    return OrderedDict((to_reference_key(k), v) for k, v in model.state_dict().items())


def _unwrap(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(
            f"state_dict: expected a mapping of tensors, got {type(state_dict).__name__}"
        )
    for wrapper in ("model", "state_dict", "model_ema"):
        inner = state_dict.get(wrapper)
        if isinstance(inner, Mapping) and not isinstance(inner, torch.Tensor):
            state_dict = inner
            break
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):  # saved from DistributedDataParallel
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"state_dict: entries {bad[:5]} are not tensors; pass the weights dict"
        )
    return sd


def _describe(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What the official-layout dict says about the architecture it came from."""
    info: dict[str, Any] = {"widths": [], "depths": [], "heads": [], "cells": []}
    if "patch_embed.seq.0.c.weight" in sd:
        info["in_chans"] = sd["patch_embed.seq.0.c.weight"].shape[1]
    if "head.weight" in sd:
        info["num_classes"] = sd["head.weight"].shape[0]
    s = 0
    while any(k.startswith(f"layer_{s}.") for k in sd):
        blocks = {int(m.group(1)) for k in sd if (m := re.match(rf"layer_{s}\.blocks\.(\d+)\.", k))}
        info["depths"].append(max(blocks) + 1 if blocks else 0)
        p = f"layer_{s}.blocks.0"
        width = next(
            (sd[f"{p}.{n}"].shape[0] for n in ("dwconv.bias", "norm1.weight") if f"{p}.{n}" in sd),
            None,
        )
        info["widths"].append(width)
        table = sd.get(f"{p}.attention_biases")
        info["heads"].append(None if table is None else table.shape[0])
        info["cells"].append(None if table is None else table.shape[1])
        s += 1
    return info


def _lookalike(info: Mapping[str, Any]) -> str | None:
    from fcasearch.models.registry import get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        heads = [st.heads if st.kind != CONV else None for st in spec.stages]
        if (
            list(spec.depths) == info["depths"]
            and list(spec.widths) == info["widths"]
            and heads == info["heads"]
        ):
            return name
    return None


def _diagnose(sd: Mapping[str, torch.Tensor], spec: ArchSpec) -> list[str]:
    """Sentences naming what differs between the checkpoint and ``spec``."""
    info, notes = _describe(sd), []
    ours_heads = [st.heads if st.kind != CONV else None for st in spec.stages]
    size_differs = (info["depths"], info["widths"], info["heads"]) != (list(spec.depths), list(spec.widths), ours_heads)  # fmt: skip
    if size_differs:
        like = _lookalike(info)
        notes.append(
            f"the checkpoint is a different model size: depths {info['depths']}, widths "
            f"{info['widths']}, heads {info['heads']}; the model has depths {list(spec.depths)}, "
            f"widths {list(spec.widths)}, heads {ours_heads}"
            + (
                f"; the checkpoint looks like {like} (build get_spec({like!r}, ...))"
                if like
                else ""
            )
        )
    else:
        for s, cells in enumerate(info["cells"]):
            rh, rw = spec.grid(s)
            if cells is None or cells == rh * rw:
                continue
            side = math.isqrt(cells)
            f = 4 * 2**s
            grid = f"a {side}×{side} grid" if side * side == cells else f"{cells} grid cells"
            fix = (
                f"build with img_size={side * f}"
                if side * side == cells
                else "build with the checkpoint's input size"
            )
            notes.append(
                f"checkpoint has attention_biases {(info['heads'][s], cells)} for layer_{s}.blocks.0: "
                f"that is {grid}, the model was built for img {_img(spec)} → {rh}×{rw}; {fix}"
            )
            break
    if "num_classes" in info and info["num_classes"] != spec.num_classes:
        notes.append(
            f"head.weight has {info['num_classes']} classes, the model {spec.num_classes}; build with "
            f"num_classes={info['num_classes']} (or drop head.* and load the rest yourself)"
        )
    if "in_chans" in info and info["in_chans"] != spec.in_chans:
        notes.append(f"the stem takes {info['in_chans']} input channels, the model {spec.in_chans}")
    return notes


def _img(spec: ArchSpec) -> str:
    h, w = spec.img_size
    return f"{h}" if h == w else f"{h}x{w}"


def _listing(keys: list[str], limit: int = 12) -> str:
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_reference_checkpoint(model: nn.Module, state_dict: Mapping[str, Any]) -> nn.Module:
    """Load weights saved in the official layout into ``model``, strictly.

    Args:
        model: an unfused :class:`~fcasearch.models.fcaformer.FcaFormer`.
        state_dict: the official state dict, or a dict wrapping it under ``"model"`` or
            ``"state_dict"``; keys prefixed ``module.`` (DDP) are accepted.

    Returns:
        ``model``, with the weights loaded (any cached attention bias is invalidated).

    Raises:
        CheckpointError: keys missing or unexpected, or shapes that differ; the message lists them
            and says what the checkpoint looks like (model size, resolution, classes).
    """
    _check_unfused(model)
    ref = _unwrap(state_dict)
    mine = {from_reference_key(k): v for k, v in ref.items()}
    expected = model.state_dict()
    missing = [k for k in expected if k not in mine and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in mine if k not in expected]
    spec: ArchSpec = model.spec
    if missing or unexpected:
        parts = [f"checkpoint does not fit the model {spec.short()}", *_diagnose(ref, spec)]
        if missing:
            keys = [to_reference_key(k) for k in missing]
            parts.append(f"{len(missing)} missing key(s): {_listing(keys)}")
        if unexpected:
            keys = [to_reference_key(k) for k in unexpected]
            parts.append(f"{len(unexpected)} unexpected key(s): {_listing(keys)}")
        raise CheckpointError("; ".join(parts))
    wrong = [
        f"{to_reference_key(k)}: checkpoint {tuple(v.shape)}, model {tuple(expected[k].shape)}"
        for k, v in mine.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if wrong:
        parts = [f"checkpoint shapes do not fit the model {spec.short()}", *_diagnose(ref, spec)]
        parts.append(f"{len(wrong)} shape mismatch(es): {_listing(wrong, 6)}")
        raise CheckpointError("; ".join(parts))
    for k in expected:
        if k not in mine:  # num_batches_tracked only: not part of the function
            mine[k] = expected[k]
    model.load_state_dict(mine, strict=True)
    return model
