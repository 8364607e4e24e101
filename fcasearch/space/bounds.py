"""The largest params / MACs count of a space, from the closed-form counts alone (no model built).

A run's hypervolume needs a reference for ``params`` and ``macs`` when the space sets no
constraint on them (:func:`fcasearch.pareto.define_hypervolume`). Small spaces are enumerated
(exact). Larger ones get an upper bound that is cheap and sound: the counts are sums over named
pieces (stem, each stage's blocks, downsamplings, head; ``fcasearch.measure.counting``), every
piece grows with depth, width, MLP ratio, heads and input size, so

* the stem, the downsamplings and the head are taken at the largest widths and input size;
* each stage's blocks are maximized on their own, at the stage's largest depth, width and MLP
  ratio, over every value of the settings that do not simply grow (the hybrid split, heads or
  head dim, token-mixer placement, enhancement, merge stride, cross window, scale factors, cross
  bias),

and the bound is the sum of those maxima. Only settings that pull in the same direction across
stages (shared keys) make it larger than the true maximum.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fcasearch.pareto import HypervolumeDefinition, define_hypervolume, parse_hv_reference
from fcasearch.space.space import SearchSpace

__all__ = ["EXACT_LIMIT", "closed_form_maximum", "space_hypervolume"]

EXACT_LIMIT = 2_000  # spaces up to this many architectures are enumerated
_GROWS = ("depth", "width", "mlp_ratio")  # per-stage settings every piece grows with
_BLOCK = re.compile(r"^stage(\d+)\.block\d+$")


def _counter(metric: str) -> Callable[[Any], int]:
    from fcasearch.measure.counting import count_macs, count_params

    if metric == "params":
        return count_params
    if metric == "macs":
        return count_macs
    raise ValueError(f"closed_form_maximum: {metric!r} has no closed form; use params or macs")


def _largest(name: str, values: tuple[Any, ...]) -> Any:
    numeric = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numeric) != len(values):
        return values[0]
    return min(values) if name.endswith("head_dim") else max(values)


def closed_form_maximum(space: SearchSpace, metric: str) -> tuple[int, str]:
    """The largest ``metric`` (``"params"`` or ``"macs"``) of any member of ``space``.

    Args:
        space: The search space (constraints are ignored: this bounds the space itself).
        metric: ``"params"`` or ``"macs"`` (MACs as :func:`fcasearch.measure.count_macs`).

    Returns:
        ``(value, how)``: ``how`` says whether the value is exact (enumerated) or an upper bound.
    """
    from fcasearch.measure.counting import cost_breakdown

    count = _counter(metric)
    n = space.cardinality()
    if n <= EXACT_LIMIT:
        return max(count(s) for s in space.enumerate()), f"exact, over its {n} architectures"
    params = {name: tuple(choice.values) for name, choice in space.parameters().items()}
    top = {name: _largest(name, values) for name, values in params.items()}

    def pieces(values: dict[str, Any]) -> list[tuple[str, int]]:
        rows = cost_breakdown(space.from_params(values))
        return [(r.name, r.params if metric == "params" else r.macs) for r in rows]

    # stem, downsamplings and head at the largest widths and input size
    bound = sum(v for name, v in pieces(top) if not _BLOCK.match(name))
    n_stages = len(space.definition.stages)
    for s in range(n_stages):
        varied = [
            name
            for name in params
            if name == "conv_stages"
            or (name.startswith(f"s{s}.") and name.split(".", 1)[1] not in _GROWS)
            or (name in space.definition.share)
        ]
        best = 0
        for combo in itertools.product(*(params[name] for name in varied)):
            values = {**top, **dict(zip(varied, combo))}
            stage = sum(
                v for name, v in pieces(values) if (m := _BLOCK.match(name)) and int(m[1]) == s
            )
            best = max(best, stage)
        bound += best
    return bound, (
        f"upper bound (the space has {n:,} architectures: each stage's blocks maximized "
        "separately at its largest depth, width and MLP ratio)"
    )


def space_hypervolume(
    space: SearchSpace,
    objectives: Sequence[tuple[str, str]],
    given: Mapping[str, Any] | Sequence[str] | None = None,
    *,
    given_source: str = "--hv-reference",
    note: str = "",
) -> HypervolumeDefinition:
    """The hypervolume definition of a run over ``space`` (rules: :func:`define_hypervolume`).

    Args:
        space: The run's space; its constraints and closed-form maxima give the bounds.
        objectives: ``(name, direction)`` pairs in the run's order.
        given: User references (``{"latency_ms": "50"}`` or ``["latency_ms=50"]``).
        given_source: How the user gave them, for the definition's source texts.
        note: Stored with the definition.

    Raises:
        HypervolumeError: A malformed or contradictory user reference.
    """
    c = space.constraints
    limits = {
        "max_params": c.max_params,
        "max_macs": c.max_macs,
        "max_latency_ms": c.max_latency_ms,
        "max_memory_mb": c.max_memory_mb,
    }
    return define_hypervolume(
        objectives,
        constraints=limits,
        space_maximum=lambda metric: closed_form_maximum(space, metric),
        given=parse_hv_reference(given, source=given_source),
        given_source=given_source,
        note=note,
    )
