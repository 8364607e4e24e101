"""The runtime interface: what a runtime is, what it returns, and how it fails.

A runtime takes a model and an example input and gives back a :class:`Prepared`: a callable that
runs the model the runtime's way, a note saying what ran and how, and the runtime's version. Two
kinds of failure are kept apart:

* :class:`RuntimeUnavailable`: the runtime cannot run here at all (a package is not installed, a
  C++ compiler is missing, the device does not suit it). The message names what to install or
  which device to use. Measurement treats it as a user error, before anything is timed.
* :class:`UnsupportedModel`: the runtime is here, but this model does not run on it (the export
  failed, or its outputs do not match eager). Measurement records ``status="unsupported"`` with
  the reason and never a number.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = [
    "Exclusive",
    "Prepared",
    "Runtime",
    "RuntimeUnavailable",
    "UnsupportedModel",
    "check_outputs",
    "eager_reference",
    "inference_form",
    "tolerance",
]


Exclusive = Callable[[], AbstractContextManager[Any]]
"""A function returning the context in which the device is the caller's alone."""


class RuntimeUnavailable(RuntimeError):
    """The runtime is not installed or does not apply to the device (the message says the fix)."""


class UnsupportedModel(RuntimeError):
    """The runtime cannot run this model faithfully (it does not export, or does not match)."""


@dataclass
class Prepared:
    """A model made ready by a runtime, for one example input's shape, dtype and device.

    Attributes:
        runtime: the runtime's name (``eager``, ``compile``, ``onnxruntime``, ``tensorrt``).
        version: the runtime's version, e.g. ``torch 2.14.1`` or ``onnxruntime 1.32.0``.
        note: what ran and how (form of the model, exporter, providers, checks).
        forward: ``inputs -> outputs`` for any batch shaped like the example (torch tensors in
            and out, on the example's device).
        run: one forward on the prepared example, its output discarded: the work a latency
            measurement times (input conversion done once, beforehand).
        example: the input it was prepared for.
        max_abs_diff: largest absolute difference from the eager folded model's output on the
            example (None for eager itself, which is the reference).
        setup_seconds: time taken to prepare (export, session creation, compilation), s.
        steps: seconds of the preparation's main steps by name (``export``, ``session``,
            ``compile``, ``build``, ``probe``), each part of ``setup_seconds``.
    """

    runtime: str
    version: str
    note: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    run: Callable[[], object]
    example: torch.Tensor
    max_abs_diff: float | None = None
    setup_seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


def inference_form(model: nn.Module) -> tuple[nn.Module, str]:
    """The folded inference form of ``model``, made in place, and a note on what was done.

    An FcaFormer (a module with an ``ArchSpec`` in ``.spec``) is folded by
    :func:`fcasearch.models.fuse_for_inference` unless it already is; any other module (the
    reference models) has no folded form and is used as built, in eval mode.
    """
    from fcasearch.spec import ArchSpec

    if isinstance(getattr(model, "spec", None), ArchSpec):
        if getattr(model, "fused", False):
            return model.eval(), "folded form (fuse_for_inference)"
        from fcasearch.models import fuse_for_inference

        return fuse_for_inference(model).eval(), (
            "folded form (fuse_for_inference: Conv-BN and layer scales folded, attention bias "
            "gathered once)"
        )
    return model.eval(), "eval, as built (no folded form)"


def _abs_rel(reference: torch.Tensor) -> tuple[float, float]:
    return (1e-4, 1e-3) if reference.dtype == torch.float32 else (2e-2, 2e-2)


def tolerance(reference: torch.Tensor) -> float:
    """The largest absolute difference accepted between a runtime's output and eager's.

    ``atol + rtol * max|reference|`` with (1e-4, 1e-3) in float32 and (2e-2, 2e-2) in 16-bit
    floats: export and runtime kernels reorder sums, so outputs differ by rounding, never more.
    """
    atol, rtol = _abs_rel(reference)
    scale = float(reference.detach().abs().max()) if reference.numel() else 0.0
    return atol + rtol * scale


def check_outputs(got: torch.Tensor, reference: torch.Tensor, what: str) -> float:
    """The max abs difference of ``got`` from ``reference``; :class:`UnsupportedModel` if it
    exceeds :func:`tolerance` or the shapes differ, or if eager's outputs are so small that no
    output could fail the check (all below the absolute tolerance: an FcaFormer with fresh BN
    statistics gives logits of about 1e-19, a zero-initialised head zeros)."""
    if tuple(got.shape) != tuple(reference.shape):
        raise UnsupportedModel(
            f"{what}: output shape {tuple(got.shape)} differs from eager's {tuple(reference.shape)}"
        )
    scale = float(reference.detach().abs().max()) if reference.numel() else 0.0
    atol, _ = _abs_rel(reference)
    if reference.numel() and scale < atol:  # (a NaN scale is caught below)
        raise UnsupportedModel(
            f"{what}: cannot be checked: eager's outputs are at most {scale:.2g}, below the "
            f"check's absolute tolerance {atol:g}, so any output would pass; give the model "
            "weights or BN statistics that make its outputs larger (e.g. "
            "fcasearch.models.calibrate_batchnorm for an untrained FcaFormer)"
        )
    diff = float((got.float() - reference.float()).abs().max()) if got.numel() else 0.0
    limit = tolerance(reference)
    if not diff <= limit:  # also catches NaN
        raise UnsupportedModel(
            f"{what}: outputs differ from eager by up to {diff:.3g} (tolerance {limit:.3g})"
        )
    return diff


def eager_reference(model: nn.Module, example: torch.Tensor) -> torch.Tensor:
    """Eager output of ``model`` on ``example`` (inference mode), the yardstick of every check."""
    with torch.inference_mode():
        return model(example).clone()


class Runtime(ABC):
    """A way of running a model for timing and deployment.

    Subclasses set :attr:`name` and :attr:`install_hint`, and implement :meth:`version`,
    :meth:`check` and :meth:`_prepare`. Options given to :func:`~fcasearch.runtime.get_runtime`
    arrive as keyword arguments of the constructor, which keeps each in an attribute of the same
    name (:attr:`options` reads them back).
    """

    name: ClassVar[str] = ""
    install_hint: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        if options:
            raise ValueError(f"runtime {self.name!r} has no option(s) {sorted(options)}")

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """The constructor's named options and their defaults."""
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return {
            n: p.default
            for n, p in inspect.signature(cls.__init__).parameters.items()
            if n != "self" and p.kind in named
        }

    @property
    def options(self) -> dict[str, Any]:
        """The options this runtime was given that differ from its defaults, normalized (lists
        as tuples): what rows and run files record, ``{}`` for the defaults."""
        out = {}
        for name, default in self.option_defaults().items():
            value = getattr(self, name)
            value = tuple(value) if isinstance(value, list) else value
            if value != default:
                out[name] = value
        return out

    @property
    @abstractmethod
    def version(self) -> str:
        """The runtime's version string, e.g. ``onnxruntime 1.32.0``."""

    @abstractmethod
    def check(self, device: str | torch.device = "cpu") -> None:
        """Raise :class:`RuntimeUnavailable` (naming what to install) unless this runtime can run
        on ``device`` here."""

    @abstractmethod
    def _prepare(
        self, model: nn.Module, example: torch.Tensor, note: str, exclusive: Exclusive
    ) -> Prepared:
        """Prepare the already folded ``model`` (``note`` says how it was folded); a part that
        times kernels to choose among them runs inside ``exclusive()`` (:meth:`prepare`)."""

    def prepare(
        self, model: nn.Module, example: torch.Tensor, *, exclusive: Exclusive | None = None
    ) -> Prepared:
        """Make ``model`` ready to run on inputs shaped like ``example``.

        The model is turned into its inference form in place (:func:`inference_form`); pass a
        copy to keep the original. ``example`` fixes the shape, dtype, device and memory format.
        ``exclusive`` returns the context in which the device is this process's alone (a search's
        device lock held exclusively): a preparation that times kernels to choose among them
        (eager's Linear probe, TensorRT's tactic timing) does that timing inside it, so that no
        training beside it sways the choice. The rest (exports, compilation, checks) runs
        outside, so trainers on the device wait only for the timing.

        Raises:
            RuntimeUnavailable: the runtime cannot run on the example's device here.
            UnsupportedModel: the model does not run faithfully on this runtime.
        """
        self.check(example.device)
        started = time.perf_counter()
        model, note = inference_form(model)
        prepared = self._prepare(model, example, note, exclusive or contextlib.nullcontext)
        prepared.setup_seconds = time.perf_counter() - started
        return prepared

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
