"""A run's hypervolume definition: bounds per objective in its own units, fixed before the
run's first trial (``run.yaml`` key ``hypervolume``), and the rules that choose them.

Imported through :mod:`fcasearch.pareto`; see its docstring.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fcasearch.pareto.fronts import (
    DIRECTIONS,
    Array,
    hv_contributions,
    hypervolume,
    hypervolume_history,
)

__all__ = [
    "CONSTRAINT_OF",
    "HypervolumeDefinition",
    "HypervolumeError",
    "ObjectiveBound",
    "common_definition",
    "define_hypervolume",
    "parse_hv_reference",
]


class HypervolumeError(ValueError):
    """A hypervolume definition that cannot be built as asked; the message says what to give."""


# metrics whose best value is known without the user: accuracy is a fraction, costs are >= 0
_NATURAL_BEST = {"accuracy": 1.0}
_COST_FLOOR = 0.0
# constraint of the space that bounds a metric (a feasible trial never exceeds it)
CONSTRAINT_OF = {
    "params": "max_params",
    "macs": "max_macs",
    "latency_ms": "max_latency_ms",
    "peak_mem_mb": "max_memory_mb",
}


@dataclass(frozen=True)
class ObjectiveBound:
    """One objective's part of a hypervolume definition, in the objective's own units.

    Attributes:
        name: The metric.
        direction: ``"minimize"`` or ``"maximize"``.
        best: The ideal end (scaled to 0): 1 for maximized accuracy, 0 for costs.
        reference: The reference (worst) end, scaled to 1; None leaves the objective out.
        source: Where the values come from, in words.
    """

    name: str
    direction: str
    best: float | None
    reference: float | None
    source: str

    @property
    def included(self) -> bool:
        return self.reference is not None and self.best is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "direction": self.direction,
            "best": self.best,
            "reference": self.reference,
            "source": self.source,
        }


@dataclass(frozen=True)
class HypervolumeDefinition:
    """How a run's hypervolume is measured: bounds per objective, fixed before any trial.

    Attributes:
        objectives: One bound per objective of the run, in the run's order.
        note: How the definition came about when it was not stored with the run (derived for an
            older run, or a common definition for several runs); empty for a stored one.
    """

    objectives: tuple[ObjectiveBound, ...]
    note: str = ""

    @property
    def included(self) -> tuple[ObjectiveBound, ...]:
        return tuple(o for o in self.objectives if o.included)

    @property
    def names(self) -> tuple[str, ...]:
        """The objectives that count (those with a reference), in order."""
        return tuple(o.name for o in self.included)

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(o.direction for o in self.included)

    @property
    def excluded(self) -> tuple[ObjectiveBound, ...]:
        return tuple(o for o in self.objectives if not o.included)

    @property
    def reference(self) -> tuple[float, ...]:
        """The reference point in scaled coordinates: 1 for every counted objective."""
        return (1.0,) * len(self.names)

    @property
    def id(self) -> str:
        """8 hex characters identifying the bounds (the source texts and note aside)."""
        key = [(o.name, o.direction, o.best, o.reference) for o in self.objectives]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:8]

    def same_as(self, other: HypervolumeDefinition) -> bool:
        return self.id == other.id

    def transform(self, values: Array) -> np.ndarray:
        """Scale values of the counted objectives (columns in :attr:`names` order) so that
        each objective's best is 0 and its reference 1 (smaller is better)."""
        names = self.names
        arr = np.asarray(values, dtype=float).reshape(-1, len(names))
        best = np.array([o.best for o in self.included], dtype=float)
        ref = np.array([o.reference for o in self.included], dtype=float)
        return (arr - best) / (ref - best)

    def value(self, values: Array) -> float:
        """Hypervolume of points in original units (rows with NaN are skipped); NaN when no
        objective counts."""
        if not self.names:
            return math.nan
        z = self.transform(values)
        return hypervolume(z[np.isfinite(z).all(axis=1)], self.reference)

    def history(self, values: Array) -> np.ndarray:
        """Hypervolume after each row is added, in order (original units; NaN rows skipped)."""
        if not self.names:
            return np.full(len(np.asarray(values)), math.nan)
        return hypervolume_history(self.transform(values), self.reference)

    def contributions(self, values: Array) -> np.ndarray:
        """Exclusive contribution of each row (original units; NaN rows contribute 0)."""
        z = self.transform(values) if self.names else np.empty((len(np.asarray(values)), 0))
        out = np.zeros(len(z))
        ok = np.isfinite(z).all(axis=1) if self.names else np.zeros(len(z), dtype=bool)
        if ok.any():
            out[ok] = hv_contributions(z[ok], self.reference)
        return out

    def with_references(
        self, given: Mapping[str, tuple[float, float | None]], source: str
    ) -> HypervolumeDefinition:
        """A copy with the given objectives' references (and best values, where given) set.

        Args:
            given: ``{name: (reference, best or None)}`` (:func:`parse_hv_reference`).
            source: How they were given, for the source texts and the note.

        Raises:
            HypervolumeError: A name that is no objective, or a bound on the wrong side.
        """
        names = [o.name for o in self.objectives]
        unknown = [n for n in given if n not in names]
        if unknown:
            raise HypervolumeError(
                f"{source}: {', '.join(unknown)} is not an objective ({', '.join(names)})"
            )
        bounds = []
        for o in self.objectives:
            if o.name in given:
                ref, best = given[o.name]
                best = best if best is not None else o.best
                if best is None:
                    best = _NATURAL_BEST.get(
                        o.name, _COST_FLOOR if o.direction == "minimize" else None
                    )
                if best is None:
                    raise HypervolumeError(
                        f"{source}: {o.name} is maximized and has no natural best value; give "
                        f"{o.name}=REF:BEST"
                    )
                o = ObjectiveBound(o.name, o.direction, best, ref, f"{source} {o.name}={ref:g}")
                _check_bound(o, source)
            bounds.append(o)
        note = "; ".join(n for n in (self.note, f"references set by {source}") if n)
        return HypervolumeDefinition(tuple(bounds), note=note)

    def describe(self) -> str:
        """One sentence per objective: its bounds and where they come from."""
        parts = []
        for o in self.objectives:
            if o.included:
                parts.append(f"{o.name} from {o.best:g} (best) to {o.reference:g} ({o.source})")
            else:
                parts.append(f"{o.name} left out ({o.source})")
        return "; ".join(parts)

    def records(self) -> list[dict[str, Any]]:
        """One dict per objective (for tables): objective, direction, best, reference, source."""
        return [
            {
                "objective": o.name,
                "direction": o.direction,
                "best": o.best,
                "reference": o.reference,
                "source": o.source,
            }
            for o in self.objectives
        ]

    def to_dict(self) -> dict[str, Any]:
        """The form stored in ``run.yaml`` under ``hypervolume``."""
        out: dict[str, Any] = {
            "id": self.id,
            "scaling": "each objective linearly from best (0) to reference (1), minimized; "
            "reference point 1 in every counted objective",
            "objectives": [o.to_dict() for o in self.objectives],
        }
        if self.note:
            out["note"] = self.note
        return out

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], source: str = "hypervolume"
    ) -> HypervolumeDefinition:
        """Read :meth:`to_dict`'s form.

        Raises:
            HypervolumeError: A missing key or a bound on the wrong side.
        """
        try:
            bounds = tuple(
                ObjectiveBound(
                    name=str(o["name"]),
                    direction=str(o["direction"]),
                    best=None if o.get("best") is None else float(o["best"]),
                    reference=None if o.get("reference") is None else float(o["reference"]),
                    source=str(o.get("source", "")),
                )
                for o in data["objectives"]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise HypervolumeError(f"{source}: not a hypervolume definition ({exc!r})") from None
        for b in bounds:
            _check_bound(b, source)
        return cls(bounds, note=str(data.get("note", "")))


def _check_bound(b: ObjectiveBound, where: str) -> None:
    if b.direction not in DIRECTIONS:
        raise HypervolumeError(
            f"{where}: {b.name}: direction {b.direction!r} is not one of {DIRECTIONS}"
        )
    if not b.included:
        return
    assert b.best is not None and b.reference is not None
    if not (math.isfinite(b.best) and math.isfinite(b.reference)):
        raise HypervolumeError(
            f"{where}: {b.name}: bounds must be finite, got {b.best}, {b.reference}"
        )
    worse = b.reference > b.best if b.direction == "minimize" else b.reference < b.best
    if not worse:
        side = "above" if b.direction == "minimize" else "below"
        raise HypervolumeError(
            f"{where}: {b.name} ({b.direction}): the reference {b.reference:g} must lie {side} "
            f"the best value {b.best:g}"
        )


def parse_hv_reference(
    items: Any, source: str = "--hv-reference"
) -> dict[str, tuple[float, float | None]]:
    """Parse user hypervolume references: ``["latency_ms=50", "throughput_ips=0:5000"]``, one
    string of those, or a mapping ``{latency_ms: 50, throughput_ips: "0:5000"}``.

    ``NAME=REF`` sets the reference (worst) value in the metric's units; ``NAME=REF:BEST`` also
    sets the best (ideal) value, needed for maximized metrics other than accuracy.

    Returns:
        ``{name: (reference, best or None)}``.

    Raises:
        HypervolumeError: A malformed item, naming it and the expected form.
    """
    if items is None:
        return {}
    if isinstance(items, str):
        items = items.replace(",", " ").split()
    pairs: list[tuple[str, Any]] = []
    if isinstance(items, Mapping):
        pairs = [(str(k), v) for k, v in items.items()]
    else:
        for item in items:
            name, eq, value = str(item).partition("=")
            if not eq or not name.strip():
                raise HypervolumeError(
                    f"{source}: {item!r} is not NAME=VALUE; e.g. latency_ms=50 peak_mem_mb=200"
                )
            pairs.append((name.strip(), value))
    out: dict[str, tuple[float, float | None]] = {}
    for name, value in pairs:
        text = str(value).strip()
        ref_text, colon, best_text = text.partition(":")
        try:
            ref = float(ref_text.replace("_", ""))
            best = float(best_text.replace("_", "")) if colon else None
        except ValueError:
            raise HypervolumeError(
                f"{source}: {name}={text!r}: give a number (the reference) or REF:BEST, "
                "e.g. latency_ms=50 or throughput_ips=0:5000"
            ) from None
        if not math.isfinite(ref) or (best is not None and not math.isfinite(best)):
            raise HypervolumeError(f"{source}: {name}={text!r} must be finite")
        out[name] = (ref, best)
    return out


def define_hypervolume(
    objectives: Sequence[tuple[str, str]],
    *,
    constraints: Mapping[str, float | None] | None = None,
    space_maximum: Callable[[str], tuple[float, str]] | None = None,
    given: Mapping[str, tuple[float, float | None]] | None = None,
    given_source: str = "--hv-reference",
    note: str = "",
) -> HypervolumeDefinition:
    """The hypervolume definition of a run, from what is known before its first trial.

    Rules, per objective (the first that applies):

    1. a value the user gave (``given``: ``NAME=REF`` or ``NAME=REF:BEST``);
    2. ``accuracy``: [0, 1] (best 1 when maximized, reference 0);
    3. a constraint of the space bounds it: ``params`` ≤ ``max_params``, ``macs`` ≤
       ``max_macs``, ``latency_ms`` ≤ ``max_latency_ms``, ``peak_mem_mb`` ≤ ``max_memory_mb``;
    4. ``params`` and ``macs``: the space's closed-form maximum (``space_maximum``);
    5. otherwise (latency, memory, energy, throughput, proxies without a constraint or a given
       value) the objective is left out of the hypervolume, and the definition says so and how to
       include it.

    Minimized metrics have best value 0 unless given; a maximized metric other than accuracy
    needs ``NAME=REF:BEST``.

    Args:
        objectives: ``(name, direction)`` pairs in the run's order.
        constraints: The space's limits (``max_params``, ``max_macs``, ``max_latency_ms``,
            ``max_memory_mb``), None where unset.
        space_maximum: ``metric -> (value, how)`` for ``params`` and ``macs``.
        given: User values from :func:`parse_hv_reference`.
        given_source: How the user gave them (for the source text).
        note: Stored with the definition.

    Returns:
        The definition.

    Raises:
        HypervolumeError: A given value names no objective, or puts the reference on the wrong
            side of the best value.
    """
    constraints = dict(constraints or {})
    given = dict(given or {})
    names = [n for n, _ in objectives]
    unknown = [n for n in given if n not in names]
    if unknown:
        raise HypervolumeError(
            f"{given_source}: {', '.join(unknown)} is not an objective of this run "
            f"({', '.join(names)})"
        )
    bounds = []
    for name, direction in objectives:
        direction = direction.lower()
        maximize = direction == "maximize"
        natural_best = _NATURAL_BEST.get(name, None if maximize else _COST_FLOOR)
        if name == "accuracy" and not maximize:
            natural_best = 0.0
        best: float | None = natural_best
        reference: float | None = None
        source = ""
        limit = constraints.get(CONSTRAINT_OF.get(name, ""))
        if name in given:
            reference, given_best = given[name]
            best = given_best if given_best is not None else natural_best
            source = f"{given_source} {name}={reference:g}" + (
                f":{given_best:g}" if given_best is not None else ""
            )
            if best is None:
                raise HypervolumeError(
                    f"{given_source}: {name} is maximized and has no natural best value; give "
                    f"{name}=REF:BEST (e.g. {name}=0:5000)"
                )
        elif name == "accuracy":
            reference = 0.0 if maximize else 1.0
            source = "accuracy is a fraction in [0, 1]"
        elif limit is not None and not maximize:
            reference = float(limit)
            source = f"constraint {CONSTRAINT_OF[name]}"
        elif name in ("params", "macs") and space_maximum is not None and not maximize:
            value, how = space_maximum(name)
            reference, source = float(value), f"space maximum: {how}"
        else:
            best = natural_best
            hint = f"--hv-reference {name}=" + ("REF:BEST" if maximize else "REF")
            why = (
                f"no constraint {CONSTRAINT_OF[name]} and no {hint}"
                if name in CONSTRAINT_OF
                else f"no {hint}"
            )
            source = f"no reference: {why}; give one to include it"
        bound = ObjectiveBound(name, direction, best, reference, source)
        _check_bound(bound, given_source if name in given else "hypervolume")
        bounds.append(bound)
    return HypervolumeDefinition(tuple(bounds), note=note)


def common_definition(definitions: Sequence[HypervolumeDefinition]) -> HypervolumeDefinition:
    """One definition under which several runs (same objectives) can be compared.

    Equal definitions give that definition itself, so each run keeps its own value. Otherwise,
    per objective, the widest box: the best of the best values and the worst of the
    references; an objective counts when any run counts it.

    Args:
        definitions: At least one definition, all over the same objectives in the same order.

    Returns:
        The common definition; its ``note`` says how it was formed when it is new.
    """
    first = definitions[0]
    if all(d.same_as(first) for d in definitions[1:]):
        return first
    merged = []
    for i, o in enumerate(first.objectives):
        column = [d.objectives[i] for d in definitions]
        counted = [b for b in column if b.included]
        if not counted:
            merged.append(o)
            continue
        pick_worst = max if o.direction == "minimize" else min
        pick_best = min if o.direction == "minimize" else max
        ref = pick_worst(b.reference for b in counted)  # type: ignore[type-var]
        best = pick_best(b.best for b in counted)  # type: ignore[type-var]
        sources = sorted({b.source for b in counted})
        merged.append(
            ObjectiveBound(
                o.name, o.direction, best, ref, "widest of the runs': " + " | ".join(sources)
            )
        )
    ids = ", ".join(dict.fromkeys(d.id for d in definitions))
    return HypervolumeDefinition(
        tuple(merged),
        note=f"the runs' definitions differ ({ids}); compared under the widest box of all of them",
    )
