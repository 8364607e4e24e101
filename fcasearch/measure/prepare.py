"""Getting a model ready to measure: the deployable form, dtype, memory format, inputs, a train step.

Also classifies the failures a measurement reports rather than raises: out of memory, and a dtype
the device's kernels do not implement.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fcasearch.spec import ArchSpec

__all__ = [
    "DTYPES",
    "build_for_spec",
    "cast_for_inference",
    "check_device",
    "copy_module",
    "deployable",
    "dtype_unsupported",
    "is_oom",
    "is_unsupported",
    "make_input",
    "parse_dtype",
    "train_step_fn",
    "trained_like_values",
]

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def parse_dtype(name: str) -> torch.dtype:
    """``"fp32"``, ``"bf16"`` or ``"fp16"`` to a torch dtype."""
    try:
        return DTYPES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"dtype: {name!r} is not supported; use one of {', '.join(DTYPES)}"
        ) from None


def dtype_unsupported(device: torch.device, dtype: torch.dtype) -> str:
    """Why ``dtype`` cannot run on ``device`` (known before running anything), or ``""``."""
    cuda_bf16 = device.type == "cuda" and dtype == torch.bfloat16
    if cuda_bf16 and not torch.cuda.is_bf16_supported(including_emulation=False):
        name = torch.cuda.get_device_name(device)
        return f"bf16 on cuda: {name} has no native bfloat16 support (compute capability < 8.0)"
    return ""


def check_device(device: str | torch.device) -> torch.device:
    """Parse a device string; a CUDA device that is not there is an error that says why."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device: {device!r} is not a device ({exc}); use 'cpu' or 'cuda[:N]'"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                f"this torch ({torch.__version__}) was built without CUDA"
                if torch.version.cuda is None
                else f"torch (CUDA {torch.version.cuda}) finds no usable GPU or driver"
            )
            raise ValueError(f"device: {str(device)!r} asked for, but {why}; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device: {str(device)!r}: only {torch.cuda.device_count()} GPU(s) visible "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
    elif dev.type != "cpu":
        raise ValueError(f"device: {str(device)!r} is not supported; use 'cpu' or 'cuda[:N]'")
    return dev


def trained_like_values(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give an untrained model's constant-initialised parameters values of the kind training
    leaves, in place: layer scales (1e-6 at init) and norm weights (1) drawn from U(0.5, 1.5),
    biases and attention bias tables (0) from N(0, 0.1). Other parameters keep their values.

    Why: a runtime's outputs are checked against eager's (:mod:`fcasearch.runtime`). At init the
    layer scales make every block add about 1e-6 of itself to its input, so a build that got an
    attention, its bias table or an MLP wrong still matched: with every block removed,
    FcaFormer-L1's logits moved by 1.8e-6 against a tolerance of 1.2e-3 (now by 0.8). With these values each block shapes the
    output. Latency does not depend on the values (BN is calibrated after, so no activation
    becomes a tiny float either).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            flat = p.detach().reshape(-1)
            if flat.numel() < 2 or not bool((flat == flat[0]).all()):
                continue  # drawn at init (or a single value): left as it is
            if float(flat[0]) == 0.0:
                drawn = torch.randn(p.shape, generator=gen) * 0.1
            else:
                drawn = torch.empty(p.shape).uniform_(0.5, 1.5, generator=gen)
            p.copy_(drawn.to(device=p.device, dtype=p.dtype))
    return model


def build_for_spec(spec: ArchSpec) -> nn.Module:
    """``build_model(spec)`` from :mod:`fcasearch.models` with :func:`trained_like_values`: the
    model every measurement of a spec times and checks."""
    from fcasearch.models import build_model

    return trained_like_values(build_model(spec))


def deployable(model: nn.Module) -> tuple[nn.Module, str]:
    """The inference form of ``model`` (in place): Conv-BN folded for FcaFormer models, eval mode.

    Returns:
        The model and a note saying what was done.
    """
    if isinstance(getattr(model, "spec", None), ArchSpec):
        from fcasearch.models import calibrate_batchnorm, fuse_for_inference

        if getattr(model, "fused", False):
            return model.eval(), "eval, already fused for inference"
        # An untrained model's late activations are denormal floats on CPU (slow); BN statistics
        # from random inputs give trained-like scales (see calibrate_batchnorm). One pass is
        # enough: in train mode each BN normalizes by its batch's statistics within that pass, so
        # every later layer already sees unit-scale inputs (L1's last features: std 1.03 after
        # one pass, 1.01 after three); three passes took 3.4x as long (L1 at 224 px: 1.07 s
        # against 0.32 s on one core; a micro member 16 against 3 ms).
        model = fuse_for_inference(
            calibrate_batchnorm(model, steps=1, generator=torch.Generator().manual_seed(0))
        )
        return model.eval(), (
            "eval, BN statistics calibrated on random inputs, fuse_for_inference (Conv-BN and "
            "layer scales folded, attention bias gathered once)"
        )
    return model.eval(), "eval (not an FcaFormer: used as built, nothing folded)"


def cast_for_inference(
    model: nn.Module, dtype: torch.dtype, device: torch.device, channels_last: bool
) -> nn.Module:
    """Move and cast the whole model (weights in ``dtype``: pure low-precision inference)."""
    model = model.to(device=device, dtype=dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def make_input(
    batch_size: int,
    in_chans: int,
    img_size: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype,
    channels_last: bool,
) -> torch.Tensor:
    """A random ``(B, C, H, W)`` batch."""
    x = torch.randn(batch_size, in_chans, *img_size, device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def train_step_fn(
    model: nn.Module, x: torch.Tensor, dtype: torch.dtype
) -> tuple[Callable[[], None], Callable[[], list[torch.Tensor]]]:
    """One training step (forward, cross-entropy, backward, AdamW step) on a float32 model.

    Mixed precision (``dtype`` bf16/fp16) runs the forward under autocast, as training does.
    The optimizer is created here; its state appears after the first step.

    Returns:
        ``step()`` running one step, and ``resident()`` listing the tensors that live across
        steps (weights, buffers, optimizer state, the batch and its targets).
    """
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    state: dict[str, Any] = {"target": None}
    device_type = x.device.type

    def step() -> None:
        with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
            out = model(x)
        if state["target"] is None:
            gen = torch.Generator(device="cpu").manual_seed(0)
            state["target"] = torch.randint(0, out.shape[-1], (x.shape[0],), generator=gen).to(
                x.device
            )
        loss = F.cross_entropy(out.float(), state["target"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def resident() -> list[torch.Tensor]:
        tensors = [*model.parameters(), *model.buffers(), x]
        if state["target"] is not None:
            tensors.append(state["target"])
        for per_param in opt.state.values():
            tensors.extend(v for v in per_param.values() if isinstance(v, torch.Tensor))
        return tensors

    return step, resident


def copy_module(model: nn.Module) -> nn.Module:
    """A deep copy, so measuring never changes the caller's module."""
    return copy.deepcopy(model)


def is_oom(exc: BaseException) -> bool:
    """Whether an exception is an out-of-memory failure (CUDA or host)."""
    if isinstance(exc, MemoryError):
        return True
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "failed to allocate" in text
    )


def is_unsupported(exc: BaseException) -> bool:
    """Whether an exception says a kernel is not implemented for a dtype/device."""
    text = str(exc)
    return isinstance(exc, (RuntimeError, NotImplementedError)) and (
        "not implemented for" in text
        or '"_vec" not implemented' in text
        or "not supported" in text.lower()
    )
