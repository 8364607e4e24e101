"""``eager``: PyTorch eager mode on the folded model, under ``torch.inference_mode``.

Large Linear layers as 1x1 convolutions on CPU
----------------------------------------------

``nn.Linear`` on a CPU calls the BLAS sgemm torch was built with (MKL in the PyPI wheels). A 1x1
convolution of a channels-last view of the same input computes the same products through oneDNN,
the library torch already uses for every convolution. On a 2-core AMD EPYC (torch 2.14.1, MKL
2024.2, oneDNN 3.12) the two ran at the same speed on one thread (97-102 GFLOP/s) but not on two:
MKL reached 188-201 GFLOP/s, oneDNN 319-398 (196x192 by 192x768, 3136x64 by 64x256, 2048^3).
Small products go the other way (one row by 320x1000: 0.78x), so the eager runtime runs a Linear
as a convolution only in float32 CPU inference (no autograd or autocast, no tracing, compiling or
exporting) on more than one thread, with at least :data:`CONV_MIN_ROWS` rows and
:data:`CONV_MIN_MACS` multiply-adds: on a grid of 70 shapes (16-4096 rows, widths 16-1280), every
shape this rule picks ran 1.17-2.33x as fast as a convolution there, the shapes it leaves out
0.30-1.18x (all but one at most 1.04x). The outputs were bit-identical to ``F.linear`` on the
shapes of FcaFormer-L1; in general they may differ by rounding.

That rule was found on one AMD CPU, and the gain comes from how MKL and oneDNN use a second
thread there, which another CPU need not share (MKL picks its code paths by CPU). So the
rule only proposes: when it prepares a model, the runtime runs one forward of the example to see
which Linear shapes the rule would convert, times each of them both ways on this CPU
(:func:`probe_linears`: interleaved, the median of :data:`PROBE_RUNS` calls each) and keeps the
convolution only where it was at least :data:`PROBE_MARGIN` times as fast; the other shapes stay
on the sgemm. The runtime's note says how many shapes went which way and their speed-ups. On the
AMD EPYC the probe took 0.05 s for L1 at batch 1 (9 shapes, 1.37-1.94x over three runs: all
converted) and 0.17 s at batch 8 (16 or 17 of 18 converted; those kept on the sgemm ran at
0.90-1.02x, among them 128 rows by 128x512); a ``micro`` member at 32 px has no such shape, and
its probe (the one forward) took 3.4 ms. The probe's timing runs inside the ``exclusive``
context that :meth:`Runtime.prepare` is given: a search passes its device lock held exclusively,
so no trial trains on the CPU while shapes are timed (trainers wait for the timing alone, not for
the forward that finds the shapes).

Every model the runtime prepares gets it, the reference models included, so that they stay on
one footing with the candidates. Only the execution of ``nn.Linear`` modules changes: their
parameters are shared, the model's own ``forward`` still runs (an edit to it is what gets
timed), and ``F.linear`` called directly in a forward is left as written. ``pointwise_conv=False``
(``get_runtime("eager", pointwise_conv=False)``) keeps every Linear on the sgemm;
``bench/model_speed.py`` times both side by side on the CPU it runs on.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fcasearch.runtime.base import Exclusive, Prepared, Runtime, RuntimeUnavailable

__all__ = [
    "CONV_MIN_MACS",
    "CONV_MIN_ROWS",
    "PROBE_MARGIN",
    "PROBE_RUNS",
    "ConvLinear",
    "EagerRuntime",
    "ShapeProbe",
    "convert_linears",
    "linear",
    "probe_linears",
    "use_conv",
]

CONV_MIN_ROWS = 128  # fewer rows: oneDNN split the work worse than the sgemm (49 rows: 0.97x)
CONV_MIN_MACS = 1 << 23  # smaller products: 0.8-1.0x (196x192 by 192x192, 7.2M: 0.98x)
PROBE_RUNS = 7  # timed calls of each form per shape, after 2 warm-up calls of each
PROBE_MARGIN = 1.05  # a shape runs as a convolution only if the probe timed it this much faster


def use_conv(x: torch.Tensor, out_features: int) -> bool:
    """Whether :func:`linear` runs ``x`` (``(..., in)``) as a convolution (module docstring)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or _is_exporting():
        return False  # first: a traced size is a tensor, a comparison with it a warning
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.ndim < 2 or x.shape[-1] == 0:
        return False
    if torch.is_grad_enabled() or torch.is_autocast_enabled("cpu") or torch.get_num_threads() < 2:
        return False
    rows = x.numel() // x.shape[-1]
    return rows >= CONV_MIN_ROWS and rows * x.shape[-1] * out_features >= CONV_MIN_MACS


def _is_exporting() -> bool:
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.5
    return bool(is_exporting and is_exporting())


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    sgemm_rows: frozenset[int] = frozenset(),
) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, as a 1x1 convolution where :func:`use_conv` says so and
    the number of rows of ``x`` is not in ``sgemm_rows`` (those a probe kept on the sgemm)."""
    if not use_conv(x, weight.shape[0]):
        return F.linear(x, weight, bias)
    out, width = weight.shape
    rows = x.numel() // width
    if rows in sgemm_rows:
        return F.linear(x, weight, bias)
    image = x.reshape(1, rows, 1, width).permute(0, 3, 1, 2)  # (1, in, rows, 1), channels-last
    y = F.conv2d(image, weight.reshape(out, width, 1, 1), bias)  # (1, out, rows, 1), channels-last
    return y.permute(0, 2, 3, 1).reshape(*x.shape[:-1], out)


class ConvLinear(nn.Linear):
    """An ``nn.Linear`` whose forward is :func:`linear`; made by :meth:`sharing` an existing
    layer's parameters (its state dict is the same).

    Attributes:
        sgemm_rows: row counts this layer keeps on the sgemm although the rule would convert
            them (set by :func:`probe_linears`).
    """

    sgemm_rows: frozenset[int] = frozenset()

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # input: nn.Linear's own name
        return linear(input, self.weight, self.bias, self.sgemm_rows)

    @classmethod
    def sharing(cls, layer: nn.Linear) -> ConvLinear:
        new = cls(layer.in_features, layer.out_features, bias=False, device="meta")
        new.weight, new.bias = layer.weight, layer.bias
        new.train(layer.training)
        return new


def convert_linears(model: nn.Module) -> int:
    """Replace every plain ``nn.Linear`` in ``model`` (not its subclasses) by a
    :class:`ConvLinear` sharing its parameters, in place; returns how many were replaced."""
    from fcasearch.models.fuse import replace_modules

    return replace_modules(model, nn.Linear, ConvLinear.sharing, exact=True)


@dataclass(frozen=True)
class ShapeProbe:
    """One Linear shape timed both ways by :func:`probe_linears`.

    Attributes:
        rows: rows of the input (all dimensions but the last, multiplied).
        in_features: width of the input.
        out_features: width of the output.
        sgemm_ms: median time of ``F.linear``, ms.
        conv_ms: median time of the 1x1 convolution, ms.
        layers: how many layers of the model run this shape.
    """

    rows: int
    in_features: int
    out_features: int
    sgemm_ms: float
    conv_ms: float
    layers: int

    @property
    def speedup(self) -> float:
        """sgemm time / convolution time: above 1, the convolution was faster."""
        return self.sgemm_ms / self.conv_ms

    @property
    def conv(self) -> bool:
        """Whether the shape runs as a convolution (:data:`PROBE_MARGIN`)."""
        return self.speedup >= PROBE_MARGIN


def probe_linears(
    model: nn.Module,
    example: torch.Tensor,
    *,
    runs: int = PROBE_RUNS,
    exclusive: Exclusive = contextlib.nullcontext,
) -> list[ShapeProbe]:
    """Time, on this CPU, each shape that :func:`use_conv` would run as a convolution in one
    forward of ``example``, as ``F.linear`` and as the convolution (interleaved, 2 warm-up calls
    then ``runs`` timed calls each, medians), and keep on the sgemm, in the layers' ``sgemm_rows``,
    every shape where the convolution was not :data:`PROBE_MARGIN` times as fast.

    Args:
        model: a model whose Linear layers :func:`convert_linears` replaced (in eval mode).
        example: the input the model will be timed on.
        runs: timed calls of each form per shape.
        exclusive: the context to time in (:meth:`Runtime.prepare`); entered only when there is
            a shape to time, once for all of them.

    Returns:
        One :class:`ShapeProbe` per distinct shape, in the order the forward met them (empty on
        one thread, outside float32 or without a shape the rule converts).
    """
    if _not_probed(example):
        return []  # use_conv says no to every shape: spare the forward
    seen: dict[tuple[int, int, int], list[ConvLinear]] = {}

    def record(layer: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = args[0] if args else kwargs.get("input")
        if (
            isinstance(layer, ConvLinear)
            and isinstance(x, torch.Tensor)
            and use_conv(x, layer.out_features)
        ):
            key = (x.numel() // x.shape[-1], layer.in_features, layer.out_features)
            seen.setdefault(key, []).append(layer)

    hooks = [m.register_forward_pre_hook(record, with_kwargs=True) for m in model.modules()]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    probes = []
    if not seen:
        return probes
    with exclusive(), torch.inference_mode():
        for (rows, width, out), layers in seen.items():
            weight, bias = layers[0].weight, layers[0].bias
            x = torch.randn(rows, width, generator=torch.Generator().manual_seed(0))
            times: dict[str, list[float]] = {"sgemm": [], "conv": []}
            forms = [("sgemm", F.linear), ("conv", linear)]
            for i in range(runs + 2):
                for form, fn in forms if i % 2 else forms[::-1]:  # neither always goes first
                    started = time.perf_counter()
                    fn(x, weight, bias)
                    if i >= 2:
                        times[form].append(time.perf_counter() - started)
            probe = ShapeProbe(
                rows=rows,
                in_features=width,
                out_features=out,
                sgemm_ms=statistics.median(times["sgemm"]) * 1e3,
                conv_ms=statistics.median(times["conv"]) * 1e3,
                layers=len(set(map(id, layers))),
            )
            for layer in layers:  # this probe's verdict replaces any earlier one for the shape
                keep = layer.sgemm_rows - {rows}
                layer.sgemm_rows = keep if probe.conv else keep | {rows}
            probes.append(probe)
    return probes


def _probe_note(probes: list[ShapeProbe]) -> str:
    conv = [p for p in probes if p.conv]
    kept = [p for p in probes if not p.conv]

    def span(ps: list[ShapeProbe]) -> str:
        lo, hi = min(p.speedup for p in ps), max(p.speedup for p in ps)
        return f"{lo:.2f}x" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}-{hi:.2f}x"

    text = f"{len(conv)} of {len(probes)} shapes" + (f" ({span(conv)})" if conv else "")
    if kept:
        text += f"; {len(kept)} kept on the sgemm ({span(kept)})"
    return text


def _not_probed(example: torch.Tensor) -> str:
    """Why no shape of ``example``'s forward can run as a convolution, or ``""``."""
    if example.device.type != "cpu":
        return f"not on a CPU ({example.device})"
    if example.dtype != torch.float32:
        return f"{example.dtype} is not float32"
    return "one thread" if torch.get_num_threads() < 2 else ""


def _none_note(example: torch.Tensor) -> str:
    why = _not_probed(example)
    return f"none converted ({why})" if why else "no such layer here"


class EagerRuntime(Runtime):
    """The model's own ``forward``, module by module, as the researcher wrote it.

    This is the default runtime and the reference every other runtime is checked against: an edit
    to a model's Python code is what gets timed.

    Args:
        pointwise_conv: run large float32 Linear layers as 1x1 convolutions in CPU inference
            (module docstring); False keeps them on the BLAS sgemm.
    """

    name = "eager"
    install_hint = "torch"

    def __init__(self, pointwise_conv: bool = True, **options: Any) -> None:
        super().__init__(**options)
        if not isinstance(pointwise_conv, bool):
            raise ValueError(f"pointwise_conv: {pointwise_conv!r} is not True or False")
        self.pointwise_conv = pointwise_conv

    @property
    def version(self) -> str:
        return f"torch {torch.__version__}"

    def check(self, device: str | torch.device = "cpu") -> None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeUnavailable(
                f"eager on {dev}: this torch ({torch.__version__}) sees no CUDA device; install "
                "a CUDA build of torch or use --device cpu"
            )

    def _prepare(
        self, model: nn.Module, example: torch.Tensor, note: str, exclusive: Exclusive
    ) -> Prepared:
        steps = {}
        if self.pointwise_conv and example.device.type == "cpu":
            convert_linears(model)  # none left to convert if this model was prepared before
            if any(isinstance(m, ConvLinear) for m in model.modules()):
                started = time.perf_counter()
                probes = probe_linears(model, example, exclusive=exclusive)
                if not _not_probed(example):  # it ran the forward that finds the shapes
                    steps["probe"] = time.perf_counter() - started
                note += (
                    f"; Linear layers of >= {CONV_MIN_ROWS} rows and >= "
                    f"2^{CONV_MIN_MACS.bit_length() - 1} multiply-adds run as 1x1 convolutions "
                    "(oneDNN) in float32 inference on 2+ threads where a probe on this CPU timed "
                    f"them >= {PROBE_MARGIN:g}x as fast as the sgemm: "
                    + (_probe_note(probes) if probes else _none_note(example))
                )

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return model(x)

        return Prepared(
            runtime=self.name,
            version=self.version,
            note=f"PyTorch eager, torch.inference_mode, {note}",
            forward=forward,
            run=lambda: forward(example),
            example=example,
            steps=steps,
        )

    def __repr__(self) -> str:
        return f"EagerRuntime(pointwise_conv={self.pointwise_conv!r})"
