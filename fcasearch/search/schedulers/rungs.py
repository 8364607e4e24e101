"""Successive-halving rungs and the promotion rule of ASHA and MO-ASHA (no Optuna, no Ray).

A trial trains for a budget of ``max_epochs``. Its **rungs** are the epochs ``r * eta**k``
(``k = 0, 1, ...``) below that budget: ``r`` is ``min_epochs`` (default 1), ``eta`` the
``reduction_factor`` (default 3). At budget ``epochs=8`` the rungs are epochs 1 and 3 (with
``eta=2``: 1, 2 and 4). When a trial finishes the epoch of rung ``k`` it is compared with every
trial that reached rung ``k`` before it (asynchronously, as ASHA does: nobody waits for a full
rung), and it goes on training only if it ranks among the best ``max(1, n // eta)`` of the ``n``
trials at that rung, itself included; otherwise it stops there (status ``pruned``, column
``rung``). The first trial at a rung always goes on.

How a rung ranks its trials:

* ``asha``: by accuracy at that rung alone (the higher first).
* ``mo-asha`` (Schmucker et al., 2021): by non-dominated sorting of the run's objectives, with
  the accuracy at that rung and the cost objectives (params, MACs, latency, ...; measured before
  training, so exact at any rung). Inside one front, by the **hypervolume contribution** of each
  point under the run's hypervolume definition (``run.yaml`` ``hypervolume``: each objective
  scaled so that its best value is 0 and its reference 1; the area only that point dominates),
  so that the trials promoted are those the run's own measure of progress values most: a
  network 2x cheaper at 1 point less accuracy outranks the accurate one, which accuracy-first
  ASHA would keep. Equal contributions (a point beyond the reference, or a run whose definition
  counts fewer than two of the ranked objectives) are broken by **crowding distance** (NSGA-II's:
  per objective, the gap between a point's neighbours along the front, over the range of that
  objective among all points at the rung; the ends of a front first), then by accuracy at the
  rung (the higher first), then by arrival (the earlier first: a newcomer never displaces a trial
  that ranks the same).

A missing or non-finite value ranks as worse than any finite one.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fcasearch.metrics import Objective
from fcasearch.pareto import hv_contributions, non_dominated_sort

__all__ = [
    "SCHEDULERS",
    "RungSchedule",
    "RungTable",
    "accuracy_column",
    "contributions",
    "crowding_distance",
    "promotable",
    "promotion_order",
    "rung_bounds",
    "rung_objectives",
]

SCHEDULERS = ("fifo", "asha", "mo-asha")


@dataclass(frozen=True)
class RungSchedule:
    """The rungs of a run: epochs ``min_epochs * reduction_factor**k`` below ``max_epochs``.

    Attributes:
        max_epochs: the training budget of a trial that is never stopped, in epochs.
        min_epochs: the first rung, ``r`` (a whole number of epochs: trials report per epoch).
        reduction_factor: ``eta``; about one trial in ``eta`` goes on past each rung.
    """

    max_epochs: float
    min_epochs: int = 1
    reduction_factor: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.min_epochs, bool) or int(self.min_epochs) != self.min_epochs:
            raise ValueError(f"min_epochs: {self.min_epochs!r} must be a whole number of epochs")
        if self.min_epochs < 1:
            raise ValueError(f"min_epochs: {self.min_epochs!r} must be at least 1 epoch")
        if isinstance(self.reduction_factor, bool) or int(self.reduction_factor) != (
            self.reduction_factor
        ):
            raise ValueError(f"reduction_factor: {self.reduction_factor!r} must be an integer")
        if self.reduction_factor < 2:
            raise ValueError(f"reduction_factor: {self.reduction_factor!r} must be at least 2")
        if not self.max_epochs > 0 or not math.isfinite(self.max_epochs):
            raise ValueError(f"max_epochs: {self.max_epochs!r} must be a positive number")
        object.__setattr__(self, "min_epochs", int(self.min_epochs))
        object.__setattr__(self, "reduction_factor", int(self.reduction_factor))

    @property
    def milestones(self) -> tuple[int, ...]:
        """The epochs of the rungs, rung 0 first (the full budget is not a rung)."""
        out, e = [], self.min_epochs
        while e < self.max_epochs:
            out.append(e)
            e *= self.reduction_factor
        return tuple(out)

    def rung_at(self, epoch: int) -> int | None:
        """The rung whose epoch ``epoch`` is (epochs count from 1), or None."""
        try:
            return self.milestones.index(int(epoch)) if float(epoch).is_integer() else None
        except ValueError:
            return None

    def rung_reached(self, epochs: float) -> int | None:
        """The last rung a trial that trained ``epochs`` reached: ``len(milestones)`` at the full
        budget, None below the first rung."""
        if epochs >= self.max_epochs - 1e-9:
            return len(self.milestones)
        done = [k for k, m in enumerate(self.milestones) if m <= epochs + 1e-9]
        return done[-1] if done else None

    def describe(self) -> str:
        """``rungs at epochs 1, 3 (r=1, eta=3) of 8``."""
        epochs = ", ".join(map(str, self.milestones)) or "none"
        return (
            f"rungs at epochs {epochs} (r={self.min_epochs}, eta={self.reduction_factor}) "
            f"of {self.max_epochs:g}"
        )


def rung_objectives(scheduler: str, objectives: Sequence[Objective]) -> tuple[Objective, ...]:
    """What a rung ranks by: accuracy alone (``asha``), or every objective (``mo-asha``).

    Raises:
        ValueError: an unknown scheduler, or no ``accuracy`` objective to rank by.
    """
    if scheduler not in ("asha", "mo-asha"):
        raise ValueError(f"scheduler: {scheduler!r} has no rungs (asha or mo-asha do)")
    acc = [o for o in objectives if o.name == "accuracy"]
    if not acc:
        raise ValueError(
            f"scheduler {scheduler}: needs the objective accuracy (rungs compare accuracy at "
            "an epoch), the run has " + ", ".join(o.name for o in objectives)
        )
    return tuple(acc) if scheduler == "asha" else tuple(objectives)


def rung_bounds(definition: Any, objectives: Sequence[Objective]) -> tuple | None:
    """Per objective, ``(best, reference)`` from a run's hypervolume definition
    (:class:`fcasearch.pareto.HypervolumeDefinition`; None for an objective it leaves out), or
    None without a definition."""
    if definition is None:
        return None
    known = {o.name: (float(o.best), float(o.reference)) for o in definition.included}
    return tuple(known.get(o.name) for o in objectives)


def accuracy_column(objectives: Sequence[Objective]) -> int | None:
    """Where ``accuracy`` is among ``objectives`` (it breaks equal crowding), or None."""
    return next((j for j, o in enumerate(objectives) if o.name == "accuracy"), None)


def _minimized(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Every column minimized; a non-finite value becomes worse than every finite one of its
    column."""
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    x = np.array(points, dtype=float).reshape(len(points), len(directions)) * signs
    for j in range(x.shape[1]):
        bad = ~np.isfinite(x[:, j])
        if bad.any():
            finite = x[~bad, j]
            worst = finite.max() + np.ptp(finite) + 1.0 if finite.size else 0.0
            x[bad, j] = worst
    return x


def crowding_distance(points: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """NSGA-II crowding distance of minimized points forming one front.

    Args:
        points: shape ``(n, m)``.
        scale: per objective, the range to divide gaps by (default: the front's own range).

    Returns:
        Shape ``(n,)``: ``inf`` at the ends of the front along any objective, else the sum over
        objectives of the gap between the two neighbours divided by ``scale``.
    """
    x = np.asarray(points, dtype=float)
    n, m = x.shape
    out = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    if scale is None:
        scale = x.max(axis=0) - x.min(axis=0)
    for j in range(m):
        order = np.argsort(x[:, j], kind="stable")
        out[order[0]] = out[order[-1]] = np.inf
        if scale[j] <= 0 or not np.isfinite(scale[j]):
            continue
        gaps = (x[order[2:], j] - x[order[:-2], j]) / scale[j]
        out[order[1:-1]] += np.where(np.isfinite(gaps), gaps, 0.0)
    return out


Bounds = Sequence[tuple[float, float] | None]


def contributions(points: np.ndarray, bounds: Bounds) -> np.ndarray:
    """Each point's exclusive hypervolume contribution among ``points`` (one front), with each
    column scaled so that ``best`` is 0 and ``reference`` 1 (``bounds[j] = (best, reference)``,
    None: the column does not count); zeros when fewer than two columns count.

    Args:
        points: shape ``(n, m)`` in the objectives' own units.
        bounds: per column, ``(best, reference)`` or None.
    """
    cols = [j for j, b in enumerate(bounds) if b is not None]
    n = len(points)
    if len(cols) < 2 or n == 0:
        return np.zeros(n)
    best = np.array([bounds[j][0] for j in cols], dtype=float)
    ref = np.array([bounds[j][1] for j in cols], dtype=float)
    z = (np.asarray(points, dtype=float)[:, cols] - best) / (ref - best)
    z = np.where(np.isfinite(z), z, 1.0)
    z = np.clip(z, 0.0, 1.0)  # beyond the reference: on it (no contribution)
    return np.asarray(hv_contributions(z, np.ones(len(cols))), dtype=float)


def promotion_order(
    points: Sequence[Sequence[float]],
    directions: Sequence[str],
    tie_column: int | None = None,
    bounds: Bounds | None = None,
) -> np.ndarray:
    """Indices of ``points`` from the first to promote to the last (module docstring's rule).

    Args:
        points: one row per trial at the rung, in arrival order, columns as ``directions``.
        directions: ``"maximize"`` or ``"minimize"`` per column.
        tie_column: the column (accuracy) that breaks equal crowding; then arrival order.
        bounds: per column ``(best, reference)`` of the run's hypervolume definition, or None
            (no hypervolume contributions: crowding first).
    """
    n = len(points)
    if n == 0:
        return np.zeros(0, dtype=int)
    x = _minimized(np.asarray(points, dtype=float), directions)
    arrival = np.arange(n)
    if x.shape[1] == 1:
        return np.lexsort((arrival, x[:, 0]))
    fronts = non_dominated_sort(x)  # moocore's, all columns minimized
    scale = x.max(axis=0) - x.min(axis=0)
    crowd, contrib = np.zeros(n), np.zeros(n)
    raw = np.asarray(points, dtype=float)
    for level in np.unique(fronts):
        idx = np.nonzero(fronts == level)[0]
        crowd[idx] = crowding_distance(x[idx], scale)
        if bounds is not None:
            contrib[idx] = contributions(raw[idx], bounds)
    tie = x[:, tie_column] if tie_column is not None else np.zeros(n)
    # np.lexsort sorts by the last key first: front, contribution and crowding (larger first),
    # the tie column, arrival
    return np.lexsort((arrival, tie, -crowd, -contrib, fronts))


def promotable(
    point: Sequence[float],
    peers: Sequence[Sequence[float]],
    directions: Sequence[str],
    reduction_factor: int,
    tie_column: int | None = None,
    bounds: Bounds | None = None,
) -> bool:
    """Whether a trial reaching a rung with ``point`` goes on, given the ``peers`` that reached
    that rung before it: it must be among the first ``max(1, n // eta)`` of the ``n`` trials in
    :func:`promotion_order` (the newcomer is last in arrival order)."""
    rows = [list(p) for p in peers] + [list(point)]
    order = promotion_order(rows, directions, tie_column, bounds)
    keep = max(1, len(rows) // reduction_factor)
    return bool(len(rows) - 1 in set(order[:keep].tolist()))


class RungTable:
    """Values each trial had at each rung, and the decision for a trial that reaches one.

    Keys are whatever identifies a trial to the executor (a Tune trial id; ``study:<number>`` for
    trials loaded from a study). Used by the Ray scheduler, which keeps it in the driver.

    Args:
        schedule: the run's rungs.
        objectives: what a rung ranks by (:func:`rung_objectives`).
        bounds: per ranked objective ``(best, reference)`` of the run's hypervolume definition
            (:func:`rung_bounds`), or None.
    """

    def __init__(
        self,
        schedule: RungSchedule,
        objectives: Sequence[Objective],
        bounds: Bounds | None = None,
    ) -> None:
        self.schedule = schedule
        self.bounds = None if bounds is None else tuple(bounds)
        self.objectives = tuple(objectives)
        self.directions = [o.direction for o in self.objectives]
        self.tie_column = accuracy_column(self.objectives)
        self.values: dict[int, dict[Hashable, tuple[float, ...]]] = {}

    def vector(self, metrics: Mapping[str, float]) -> tuple[float, ...]:
        """The ranked values from one report (NaN where missing)."""
        out = []
        for o in self.objectives:
            v = metrics.get(o.name)
            out.append(float(v) if isinstance(v, (int, float)) else math.nan)
        return tuple(out)

    def record(self, key: Hashable, rung: int, vector: Sequence[float]) -> None:
        """Note ``key``'s values at ``rung`` (a trial loaded from a study, say); values of
        another length (ranked by other objectives) are ignored."""
        if len(vector) != len(self.objectives):
            return
        self.values.setdefault(rung, {})[key] = tuple(float(v) for v in vector)

    def decide(self, key: Hashable, epoch: int, metrics: Mapping[str, float]) -> bool:
        """True when the trial ``key`` that just finished ``epoch`` goes on training.

        Off a rung, always True. At a rung, the promotion rule against the trials recorded there
        before; the trial is then recorded too (a repeated report of the same epoch is judged
        against the others only).
        """
        rung = self.schedule.rung_at(epoch)
        if rung is None:
            return True
        here = self.values.setdefault(rung, {})
        vec = self.vector(metrics)
        peers = [v for k, v in here.items() if k != key]
        go_on = promotable(
            vec,
            peers,
            self.directions,
            self.schedule.reduction_factor,
            self.tie_column,
            self.bounds,
        )
        here[key] = vec
        return go_on

    def __len__(self) -> int:
        return sum(len(v) for v in self.values.values())
