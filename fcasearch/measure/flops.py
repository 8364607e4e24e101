"""MACs of a built model, counted by tracing: fvcore with extra handles, and torch's own counter.

Unit: one multiply-add is one MAC (fvcore's convention; torch's ``FlopCounterMode`` counts two
FLOPs per MAC, so :func:`count_macs_torch` halves it).

fvcore misses several operators that FcaFormer and the baselines use; this module adds handles:

* ``aten::scaled_dot_product_attention``: ``q @ k^T`` and ``attn @ v``, i.e.
  ``batch * heads * L * S * (E + Ev)`` MACs (the mask addition and softmax are not counted);
* ``aten::baddbmm`` and ``aten::bmm``/``aten::matmul``/``aten::mm``: output elements times the
  contracted size, which also holds for broadcast and vector operands.

fvcore also counts LayerNorm, GroupNorm and eval BatchNorm (a few MACs per element);
:attr:`FlopReport.core_macs` leaves those out and so matches the closed form of
:mod:`fcasearch.measure.counting` (convolutions, linear layers, attention matmuls). Operators that
fvcore neither counts nor ignores as zero-cost (elementwise arithmetic, activations, softmax,
pooling means) are listed in :attr:`FlopReport.uncounted`, never silently treated as zero.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "CORE_OPERATORS",
    "FlopReport",
    "count_flops_fvcore",
    "count_macs_torch",
    "extra_fvcore_handles",
]

# fvcore operator names (as they appear in ``by_operator``) that the closed form also counts
CORE_OPERATORS = frozenset(
    {
        "conv",
        "linear",
        "addmm",
        "mm",
        "matmul",
        "bmm",
        "baddbmm",
        "einsum",
        "scaled_dot_product_attention",
    }
)


@dataclass(frozen=True)
class FlopReport:
    """MACs of one forward pass of a model on the given inputs (the whole batch).

    Attributes:
        total_macs: everything fvcore counted (norm layers included).
        by_operator: MACs per operator name (``conv``, ``linear``, ``scaled_dot_product_attention``,
            ``layer_norm``, ...).
        uncounted: operator names that were executed but counted as nothing (sorted).
        uncounted_calls: how many times each uncounted operator ran.
        unit: always ``"MAC"`` (one multiply-add).
    """

    total_macs: int
    by_operator: dict[str, int]
    uncounted: list[str]
    uncounted_calls: dict[str, int] = field(default_factory=dict)
    unit: str = "MAC"

    @property
    def core_macs(self) -> int:
        """Convolutions, linear layers and matmuls (attention included): the closed form's scope."""
        return sum(v for k, v in self.by_operator.items() if k in CORE_OPERATORS)


def _shape(value: Any) -> list[int] | None:
    """Static shape of a traced ``torch._C.Value`` (None if it is not a complete tensor)."""
    if value.isCompleteTensor():
        return list(value.type().sizes())
    return None


def _sdpa_handle(inputs: list[Any], outputs: list[Any]) -> int:
    # q (..., L, E), k (..., S, E), v (..., S, Ev); batch dims come from q (grouped-query
    # attention broadcasts k and v over q's heads)
    q, k, v = (_shape(x) for x in inputs[:3])
    if q is None or k is None or v is None:
        raise ValueError("scaled_dot_product_attention: traced without static shapes")
    batch = math.prod(q[:-2])
    length, e = q[-2], q[-1]
    s, ev = k[-2], v[-1]
    return batch * length * s * (e + ev)  # q @ k^T, then attn @ v


def _matmul_handle(inputs: list[Any], outputs: list[Any]) -> int:
    # every output element is one dot product over the contracted dimension
    a, out = _shape(inputs[0]), _shape(outputs[0])
    if a is None or out is None:
        raise ValueError("matmul: traced without static shapes")
    return math.prod(out) * a[-1]


def _baddbmm_handle(inputs: list[Any], outputs: list[Any]) -> int:
    # baddbmm(input, batch1 (b, n, k), batch2 (b, k, m)): the added input is not counted
    b1, out = _shape(inputs[1]), _shape(outputs[0])
    if b1 is None or out is None:
        raise ValueError("baddbmm: traced without static shapes")
    return math.prod(out) * b1[-1]


def extra_fvcore_handles() -> dict[str, Any]:
    """Handles this module adds to fvcore's defaults (operator name -> counting function)."""
    return {
        "aten::scaled_dot_product_attention": _sdpa_handle,
        "aten::matmul": _matmul_handle,
        "aten::mm": _matmul_handle,
        "aten::bmm": _matmul_handle,
        "aten::baddbmm": _baddbmm_handle,
    }


def _as_tuple(inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)


def count_flops_fvcore(
    model: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor]
) -> FlopReport:
    """Count the MACs of ``model(*inputs)`` with fvcore (jit tracing) plus this module's handles.

    Args:
        model: the module; traced as it is (put it in eval mode first for inference counts).
        inputs: one tensor or a tuple of positional inputs (their batch size scales the count).

    Returns:
        A :class:`FlopReport` in MACs for the whole batch.
    """
    with warnings.catch_warnings():
        # fvcore's import and tracing warn about torch.jit deprecations; the counts are unaffected
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model, _as_tuple(inputs))
        analysis.set_op_handle(**extra_fvcore_handles())
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        by_op = {k: int(v) for k, v in analysis.by_operator().items()}
        skipped: Counter[str] = analysis.unsupported_ops()
    return FlopReport(
        total_macs=int(sum(by_op.values())),
        by_operator=dict(sorted(by_op.items())),
        uncounted=sorted(skipped),
        uncounted_calls={k: int(v) for k, v in sorted(skipped.items())},
    )


def count_macs_torch(
    model: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor], *, meta: bool = False
) -> int:
    """MACs of ``model(*inputs)`` by torch's ``FlopCounterMode`` (its FLOPs halved).

    Attention runs on the math backend so that its matmuls are counted whatever kernel would
    otherwise be chosen. ``FlopCounterMode`` counts convolutions and matmuls only (no norms).

    Args:
        model: the module (not modified).
        inputs: one tensor or a tuple of positional inputs.
        meta: run on copies on the ``meta`` device (no memory, no compute: any size is cheap).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    args = _as_tuple(inputs)
    if meta:
        import copy

        model = copy.deepcopy(model).to("meta")
        args = tuple(torch.empty_like(a, device="meta") for a in args)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(*args)
    flops = counter.get_total_flops()
    return int(flops) // 2
