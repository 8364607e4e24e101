"""The deployable inference form: Conv-BN folded, layer scales folded, attention bias gathered.

:func:`fuse_for_inference` works **in place** and returns the same model object, in eval mode,
with ``model.fused = True``. Each fold is exact up to float rounding, and the result is made of
ordinary modules:

* every :class:`~fcasearch.models.layers.ConvBN` becomes one ``nn.Conv2d`` with bias (BN running
  statistics, eval semantics): stem, downsamples, local convs; the token merges become plain
  ``nn.Conv2d`` too (their training-time workaround, ``PaddedConv2d``, is not needed);
* every layer scale (``gamma``, ``gamma_1``, ``gamma_2``) is multiplied into the Linear before it
  (``pwconv2``, ``proj``, ``mlp.fc2``);
* each FcaFormer block's attention bias (position table gathered by the relative index, then the
  cross-token bias) is gathered once into the buffer ``frozen_bias``.

What it keeps: the scale factors (they act before ``s_norm``, so they change that LayerNorm's
effective epsilon and cannot be folded exactly) and the two LayerNorms in a row of the MLP path.
The fused model is for inference only: it no longer has the official state-dict layout, and its
frozen bias would not follow a training step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fcasearch.models.convnext import ConvNeXtBlock
from fcasearch.models.fca import FcaBlock
from fcasearch.models.layers import ConvBN, PaddedConv2d

__all__ = ["calibrate_batchnorm", "fuse_for_inference", "replace_modules"]


def _fold_scale(linear: nn.Linear, scale: torch.Tensor) -> None:
    """``scale * linear(x)`` == ``linear'(x)`` with rows of weight and bias scaled."""
    linear.weight.mul_(scale[:, None])
    if linear.bias is not None:
        linear.bias.mul_(scale)


def replace_modules(
    model: nn.Module, cls: type, convert: Callable[[Any], nn.Module], *, exact: bool = False
) -> int:
    """Replace every submodule of type ``cls`` in ``model`` (subclasses too, unless ``exact``) by
    ``convert(submodule)``, in place; returns how many were replaced. ``model`` itself is not."""
    found = [
        (name, m)
        for name, m in model.named_modules()
        if name and (type(m) is cls if exact else isinstance(m, cls))
    ]
    for name, m in found:
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, leaf, convert(m))
    return len(found)


@torch.no_grad()
def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fold ``model`` into its inference form, in place (see the module docstring).

    Args:
        model: an :class:`~fcasearch.models.fcaformer.FcaFormer` (any module tree works: every
            ConvBN, ConvNeXt block and FcaFormer block inside is folded).

    Returns:
        The same object, in eval mode, gradients off; calling it again changes nothing.
    """
    model.eval()
    if getattr(model, "fused", False):
        return model
    replace_modules(model, ConvBN, ConvBN.fuse)
    replace_modules(model, PaddedConv2d, PaddedConv2d.plain)
    for m in model.modules():
        if isinstance(m, ConvNeXtBlock) and m.gamma is not None:
            _fold_scale(m.pwconv2, m.gamma)
            m.gamma = None
        elif isinstance(m, FcaBlock):
            if m.gamma_1 is not None:
                _fold_scale(m.proj, m.gamma_1)
                m.gamma_1 = None
            if m.gamma_2 is not None:
                _fold_scale(m.mlp.fc2, m.gamma_2)
                m.gamma_2 = None
            m.frozen_bias = m.attention_bias().detach().contiguous()
    model.requires_grad_(False)
    model.fused = True
    return model


@torch.no_grad()
def calibrate_batchnorm(
    model: nn.Module, steps: int = 3, batch_size: int = 8, generator: torch.Generator | None = None
) -> nn.Module:
    """Set every BatchNorm's running statistics from random-normal inputs, then return to eval.

    Why: at initialization BN is the identity, and each downsample and local conv shrinks the
    activations (weights of std 0.02), so an untrained FcaFormer carries activations of 1e-12 to
    1e-25 in its last stages; on CPU the LayerNorm variances and attention logits then become
    denormal floats, which run several times slower on CPUs without a fast path for them (first
    measured with the model of 2026-11-25; with torch 2.14 on a 2-core AMD EPYC, uncalibrated
    micro members and L1 at 224 px ran as fast as calibrated ones, 2026-12-04). Latency measured
    on such a model is not the latency of a trained one. Calibrating BN (cumulative average over
    ``steps`` batches, no gradients) restores unit-scale activations. Only BN buffers change; the
    model ends in eval mode.

    Args:
        model: a model with ``.spec`` (for the input shape), unfused.
        steps: forward passes.
        batch_size: images per pass.
        generator: random source for the inputs.

    Returns:
        ``model``, in eval mode.
    """
    spec = model.spec
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return model.eval()
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
    device = next(model.parameters()).device
    model.train()
    for _ in range(steps):
        x = torch.randn(batch_size, spec.in_chans, *spec.img_size, generator=generator)
        model(x.to(device))
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    return model.eval()
