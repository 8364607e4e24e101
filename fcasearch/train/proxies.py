"""Zero-cost proxies: scores of an untrained network from one batch, meant to rank architectures.

Every proxy runs on its own deep copy of the model (the caller's model is never changed), inside
``torch.random.fork_rng`` seeded by ``seed`` (so dropout and stochastic depth, if any, draw the
same numbers every time and the caller's RNG is untouched). Choices made here:

* ``synflow`` (Tanaka et al. 2020, as a NAS proxy in Abdelfattah et al. 2021): float64 copy,
  every parameter replaced by its absolute value, eval mode, an all-ones input of one image,
  ``R = sum(logits)``, score ``sum(theta * dR/dtheta)`` over all parameters. Normalization would
  erase the layer-size signal synflow measures (and a LayerNorm of a constant vector is zero), so
  every ``layer_norm`` and ``batch_norm`` call keeps only its affine part, ``x * |w| + |b|``
  (the analogue of running synflow "without BatchNorm"). float64 keeps the product of many
  small weights away from underflow. Layer scales (1e-6 at init) make residual branches weigh
  little: that is the network as built, and it is scored as such.
* ``naswot`` (Mellor et al. 2021): train mode, no gradients; for every GELU or ReLU call (module
  or functional) the batch's pre-activations are binarized (``> 0``); the kernel
  ``K[i, j] = #units where images i and j agree`` (units minus Hamming distance) is summed over
  all calls, and the score is ``log|det K|`` (``slogdet``). Two identical images in the batch
  make ``K`` singular (score ``-inf``).
* ``grad_norm``: train mode, cross-entropy of the batch, sum over parameter tensors of the
  Euclidean norm of their gradient.
* ``snip`` (Lee et al. 2019, as a NAS proxy): train mode, cross-entropy of the batch,
  ``sum |theta * dL/dtheta|`` over weight tensors (parameters with two or more dimensions).
* ``params``: trainable parameters, the baseline every proxy should beat.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.data import Dataset

__all__ = [
    "PROXIES",
    "PROXY_NAMES",
    "ProxyError",
    "compute_proxies",
    "fixed_batch",
    "grad_norm",
    "naswot",
    "params",
    "snip",
    "synflow",
]

PROXY_NAMES = ("synflow", "naswot", "grad_norm", "snip", "params")
_ACTIVATIONS = (F.gelu, F.relu, torch.relu)
_CHUNK = 1 << 16  # activation units binarized at a time by naswot (bounds its memory)


class ProxyError(ValueError):
    """An unknown proxy name or an unusable batch."""


class _AffineOnlyNorms(TorchFunctionMode):
    """Within this mode, ``layer_norm`` and ``batch_norm`` apply only their affine part."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.layer_norm:
            x = args[0]  # args[1] is the normalized shape: the affine part does not need it
            weight = kwargs.get("weight", args[2] if len(args) > 2 else None)
            bias = kwargs.get("bias", args[3] if len(args) > 3 else None)
            return _affine(x, weight, bias, channel_dim=None)
        if func is F.batch_norm:
            x = args[0]
            weight = kwargs.get("weight", args[3] if len(args) > 3 else None)
            bias = kwargs.get("bias", args[4] if len(args) > 4 else None)
            return _affine(x, weight, bias, channel_dim=1)
        return func(*args, **kwargs)


def _affine(x: torch.Tensor, weight, bias, channel_dim: int | None) -> torch.Tensor:
    if channel_dim is not None and x.ndim > 2:
        view = [1, -1] + [1] * (x.ndim - 2)  # per-channel over (B, C, ...)
        weight = weight.view(view) if weight is not None else None
        bias = bias.view(view) if bias is not None else None
    if weight is not None:
        x = x * weight
    if bias is not None:
        x = x + bias
    return x


class _ActivationCodes(TorchFunctionMode):
    """Accumulates NASWOT's agreement kernel over every GELU/ReLU input seen in this mode."""

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.kernel = torch.zeros(batch, batch, dtype=torch.float64)  # (B, B)
        self.units = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _ACTIVATIONS and args and isinstance(args[0], torch.Tensor):
            codes = (args[0].detach() > 0).flatten(1)  # (B, units)
            for start in range(0, codes.shape[1], _CHUNK):
                c = codes[:, start : start + _CHUNK].float()
                agree_on = c @ c.T  # (B, B) units active in both
                active = c.sum(1)  # (B,)
                # agree = both on + both off = on_on + (units - a_i - a_j + on_on)
                k = 2 * agree_on - active[:, None] - active[None, :] + c.shape[1]
                self.kernel += k.double().cpu()
            self.units += codes.shape[1]
        return func(*args, **kwargs)


def synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """SynFlow of ``model`` (modified in place: pass a copy); only ``x``'s shape is used."""
    model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad(set_to_none=True)
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)  # (1, C, H, W)
    with _AffineOnlyNorms():
        total = model(ones).sum()
    total.backward()
    with torch.no_grad():
        return float(sum((p * p.grad).sum() for p in model.parameters() if p.grad is not None))


def naswot(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """NASWOT ``log|det K|`` of the activation-pattern kernel over the batch ``x``."""
    if len(x) < 2:
        raise ProxyError(f"naswot needs a batch of at least 2 images, got {len(x)}")
    model.train()
    codes = _ActivationCodes(len(x))
    with torch.no_grad(), codes:
        model(x)
    if not codes.units:
        raise ProxyError("naswot found no GELU or ReLU call in the model's forward pass")
    sign, logdet = torch.linalg.slogdet(codes.kernel)
    return float(logdet) if float(sign) != 0 else -math.inf


def _loss_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum over parameter tensors of ``||dL/dtheta||_2`` for the batch's cross-entropy."""
    _loss_grads(model, x, y)
    with torch.no_grad():
        return float(sum(p.grad.norm() for p in model.parameters() if p.grad is not None))


def snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """``sum |theta * dL/dtheta|`` over weight tensors (ndim >= 2) for the batch's cross-entropy."""
    _loss_grads(model, x, y)
    with torch.no_grad():
        return float(
            sum(
                (p * p.grad).abs().sum()
                for p in model.parameters()
                if p.grad is not None and p.ndim >= 2
            )
        )


def params(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Number of trainable parameters."""
    return float(sum(p.numel() for p in model.parameters() if p.requires_grad))


ProxyFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], float]
PROXIES: MappingProxyType[str, ProxyFn] = MappingProxyType(
    {"synflow": synflow, "naswot": naswot, "grad_norm": grad_norm, "snip": snip, "params": params}
)


def fixed_batch(
    dataset: Dataset, size: int = 64, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` images of ``dataset`` chosen by ``seed`` (the same batch for every architecture)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[: min(size, len(dataset))]
    images, labels = zip(*(dataset[int(i)] for i in idx))
    return torch.stack(images), torch.as_tensor(labels, dtype=torch.long)


def compute_proxies(
    model_or_factory: nn.Module | Callable[[], nn.Module],
    batch: tuple[torch.Tensor, torch.Tensor],
    names: Sequence[str] = PROXY_NAMES,
    device: str | torch.device = "cpu",
    *,
    seed: int = 0,
) -> dict[str, float]:
    """Zero-cost proxy scores of an (untrained) model from one batch.

    Args:
        model_or_factory: the model (left unchanged: each proxy works on a deep copy) or a
            function building one (called once, with the torch RNG seeded by ``seed``).
        batch: ``(images (B, C, H, W), labels (B,))``; synflow uses only the image shape.
        names: proxies to compute, among :data:`PROXY_NAMES`.
        device: where to compute.
        seed: seeds the factory and any randomness in the forward passes.

    Returns:
        ``{name: score}`` in the order of ``names``.

    Raises:
        ProxyError: an unknown name, or a batch that is not ``(images, labels)``.
    """
    names = (names,) if isinstance(names, str) else tuple(names)
    unknown = [n for n in names if n not in PROXIES]
    if unknown:
        raise ProxyError(f"names: unknown proxy {unknown}; choose among {', '.join(PROXY_NAMES)}")
    if len(batch) != 2 or batch[0].ndim != 4:
        raise ProxyError("batch: expected (images (B, C, H, W), labels (B,))")
    device = torch.device(device)
    x, y = batch[0].to(device), batch[1].to(device).long()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        base = model_or_factory if isinstance(model_or_factory, nn.Module) else model_or_factory()
    scores: dict[str, float] = {}
    for name in names:
        model = copy.deepcopy(base).to(device)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            scores[name] = PROXIES[name](model, x, y)
        del model
    return scores
