"""The deployable inference form: every Conv-BN folded, layer scales folded, attention bias frozen.

:func:`fuse_for_inference` works **in place** and returns the same model object, in eval mode,
with ``model.fused = True``. What it folds (each exact up to float rounding):

* every :class:`~fcasearch.models.layers.ConvBN` becomes one ``Conv2d`` with bias (BN running
  statistics, eval semantics): stem, downsamples, local convs;
* every layer scale (``gamma``, ``gamma_1``, ``gamma_2``) is multiplied into the Linear before it
  (``pwconv2``, ``proj``, ``mlp.fc2``);
* each FcaFormer block's additive attention mask (gathered position bias and cross-token bias) is
  computed once and stored as a buffer;
* on CPU float32 without autograd, the blocks switch to the inference kernels of
  :mod:`fcasearch.models.layers` (in-place activations; oneDNN Linear+GELU, Linear+residual and
  Conv+GELU for large activations; the downsample's 1x1 convs as GEMMs on the channels-last view);
* ``gemm`` picks the library of every Linear GEMM there, in eager mode and under
  ``torch.compile``: torch's own (MKL on x86), oneDNN, or fcasearch's own Linear kernel (with
  fcasearch's kernels, below); ``"auto"`` takes fcasearch's kernel on AMD CPUs when the kernels are
  in use, else oneDNN there, where each measured faster (``layers.default_gemm_library``);
* ``kernels`` picks fcasearch's own CPU kernels (:mod:`fcasearch.models.kernels`: attention,
  depthwise convolutions and, in eager mode, LayerNorms, faster than SDPA, oneDNN and ATen at
  FcaFormer's sizes; and the Linear kernel that ``gemm`` may choose): ``"auto"`` builds
  them (once per machine) and uses them for a model on the CPU, the library operators where they
  cannot be built or on other devices; ``"off"`` never; ``"on"`` requires them. The choice, and why
  they are missing if they are, is in ``model.kernels_note``;
* with every step of a block on fcasearch's kernels (``kernels`` in use and ``gemm`` fcasearch's),
  the eager form runs each ConvNeXt block, FcaFormer block, downsample and the conv stem as one
  operator that chains the kernels in C++ (``kernels/block.cpp``; ``block_ops``): the stem, the
  downsamples, the ConvNeXt blocks and an FcaFormer block's part after attention go in bands of
  rows, each band through every step on one thread, its intermediates in that core's cache. The
  compiled form (``compile_for_inference``) calls the stem, downsample and ConvNeXt operators too
  and keeps the FcaFormer blocks per step, where Inductor fuses around the kernels. Where every
  part of an FcaFormer runs as one such operator, its eager forward runs them all from one
  operator (``kernels/network.cpp``, :mod:`fcasearch.models.network`: recorded from one forward
  of the modules, no Python between the blocks; FcaFormer-L1 at batch 1 paired 0.946).
  :func:`per_step` turns the operators off for a while (op counting, profiling); the outputs are
  bit-equal.

What it keeps: the scale factors (they act before ``s_norm``, so they change that LayerNorm's
effective epsilon and cannot be folded exactly) and the two LayerNorms in a row of the MLP path.
The fused model is for inference only: it no longer has the official state-dict layout, and
training it would not update the frozen masks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from fcasearch.models.convnext import ConvNeXtBlock, Downsample, Stem
from fcasearch.models.fca import FcaBlock
from fcasearch.models.kernels import kernel_status, load_kernels
from fcasearch.models.layers import (
    ConvBN,
    check_gemm_library,
    resolve_gemm_library,
    temporarily,
)

__all__ = ["KERNEL_CHOICES", "calibrate_batchnorm", "fuse_for_inference", "per_step"]

KERNEL_CHOICES = ("auto", "on", "off")


def _fold_scale(linear: nn.Linear, scale: torch.Tensor) -> None:
    """``scale * linear(x)`` == ``linear'(x)`` with rows of weight and bias scaled."""
    linear.weight.mul_(scale[:, None])
    if linear.bias is not None:
        linear.bias.mul_(scale)


def _choose_kernels(model: nn.Module, kernels: str) -> tuple[bool, str]:
    """Whether the model runs fcasearch's CPU kernels for ``kernels``, and a note on the choice."""
    if kernels not in KERNEL_CHOICES:
        raise ValueError(f"kernels: {kernels!r} is not one of {', '.join(KERNEL_CHOICES)}")
    if kernels == "off":
        return False, "library operators (SDPA, oneDNN)"
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if kernels == "auto" and device.type != "cpu":
        return (
            False,
            f"library operators (fcasearch's kernels are for CPU, the model is on {device})",
        )
    if load_kernels():
        return True, "fcasearch's CPU kernels (library operators off CPU float32 inference)"
    if kernels == "on":
        raise ValueError(
            f"kernels: 'on' but fcasearch's CPU kernels are {kernel_status()}; use 'auto' or 'off'"
        )
    return False, f"library operators (fcasearch's CPU kernels are {kernel_status()})"


@torch.no_grad()
def fuse_for_inference(
    model: nn.Module, gemm: str = "auto", kernels: str = "auto", block_ops: bool = True
) -> nn.Module:
    """Fold ``model`` into its inference form, in place (see the module docstring).

    Args:
        model: an :class:`~fcasearch.models.fcaformer.FcaFormer` (any module tree works: every
            ConvBN, ConvNeXt block and FcaFormer block inside is folded).
        gemm: library of the Linear GEMMs on CPU float32: ``"auto"`` (on AMD CPUs fcasearch's
            kernel with the kernels in use, else oneDNN; torch's elsewhere), ``"torch"``,
            ``"onednn"`` or ``"fcasearch"`` (needs the kernels).
        kernels: fcasearch's CPU kernels for attention, depthwise convs and LayerNorms:
            ``"auto"`` (for a model on the CPU, where they can be built), ``"on"`` (an error if
            they cannot be built) or ``"off"`` (SDPA, oneDNN and ATen).
        block_ops: where a block runs every step on fcasearch's kernels (its GEMMs included),
            run it in eager mode as one operator (``fcasearch_kernels.fca_block``,
            ``convnext_block``, ``downsample``, ``stem``: the same steps chained in C++, without
            the interpreter between them, the early stages in bands of rows), and the whole
            forward as one (``fcasearch_kernels.network``) where every part is one; False keeps
            one Python call per step (to see each kernel in a profiler).

    Returns:
        The same object, in eval mode, with ``model.kernels_note``; calling it again only
        applies ``gemm``, ``kernels`` and ``block_ops``.

    Raises:
        ValueError: an unknown ``gemm`` or ``kernels``, ``"onednn"`` without oneDNN in this
            torch build, ``"fcasearch"`` without the kernels, or ``"on"`` where the kernels
            cannot be built.
    """
    check_gemm_library(gemm)  # before any build, so a typo costs nothing
    use, note = _choose_kernels(model, kernels)
    library = resolve_gemm_library(gemm, kernels=use)
    for m in model.modules():
        if hasattr(m, "gemm"):
            m.gemm = library
        if isinstance(m, FcaBlock):
            m.attn_impl = "kernel" if use else "sdpa"
        if hasattr(m, "dw_kernel"):
            m.dw_kernel = use
        if hasattr(m, "ln_kernel"):
            m.ln_kernel = use
        if hasattr(m, "block_kernel"):
            m.block_kernel = use and bool(block_ops)
    model.kernels_note = note
    model.eval()
    if getattr(model, "fused", False):
        return model
    convbns = [(name, m) for name, m in model.named_modules() if isinstance(m, ConvBN)]
    for name, m in convbns:
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, leaf, m.fuse())
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
            m.freeze_mask()
    for m in model.modules():
        if isinstance(m, (Stem, Downsample, ConvNeXtBlock, FcaBlock)):
            m.fast = True
    model.requires_grad_(False)
    model.fused = True
    return model.eval()


@contextlib.contextmanager
def per_step(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model``'s fused blocks one Python call per step while inside (no block operators,
    see ``fuse_for_inference(block_ops=...)``), so that a dispatch mode or a profiler sees every
    kernel; the previous choice of each block is restored on exit."""
    blocks = [m for m in model.modules() if hasattr(m, "block_kernel")]
    with temporarily(blocks, "block_kernel", False):
        yield model


@torch.no_grad()
def calibrate_batchnorm(
    model: nn.Module, steps: int = 3, batch_size: int = 8, generator: torch.Generator | None = None
) -> nn.Module:
    """Set every BatchNorm's running statistics from random-normal inputs, then return to eval.

    Why: at initialization BN is the identity, and each downsample and local conv shrinks the
    activations (weights of std 0.02), so an untrained FcaFormer carries activations of 1e-12 to
    1e-25 in its last stages; on CPU the LayerNorm variances and attention logits then become
    denormal floats and run several times slower. Latency measured on such a model is not the
    latency of a trained one. Calibrating BN (cumulative average over ``steps`` batches, no
    gradients) restores unit-scale activations. Only BN buffers change; the model ends in eval mode.

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
