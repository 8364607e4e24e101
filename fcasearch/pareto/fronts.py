"""Fronts, hypervolumes and attainment over moocore: shapes checked, directions converted.

Imported through :mod:`fcasearch.pareto`; see its docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "DIRECTIONS",
    "attainment_surfaces",
    "dominates",
    "hv_contributions",
    "hypervolume",
    "hypervolume_history",
    "knee_point",
    "non_dominated_sort",
    "normalize_front",
    "pareto_mask",
    "to_minimization",
]

DIRECTIONS = ("minimize", "maximize")
Array = np.ndarray | Sequence[Sequence[float]]


# --------------------------------------------------------------------------- directions


def _check_directions(directions: Sequence[str] | None, n_obj: int) -> list[str]:
    if directions is None:
        return ["minimize"] * n_obj
    dirs = [str(d).lower() for d in directions]
    if len(dirs) != n_obj:
        raise ValueError(
            f"got {len(dirs)} directions for {n_obj} objectives; give one per objective"
        )
    for d in dirs:
        if d not in DIRECTIONS:
            raise ValueError(f"direction {d!r} is not allowed; use one of {DIRECTIONS}")
    return dirs


def to_minimization(values: Array, directions: Sequence[str] | None = None) -> np.ndarray:
    """Return a float copy of ``values`` with maximized objectives negated.

    Args:
        values: Array of shape ``(n_points, n_objectives)``.
        directions: One of ``"minimize"``/``"maximize"`` per objective; all minimized if omitted.

    Returns:
        Array of the same shape in which smaller is better in every column.

    Raises:
        ValueError: On a shape or direction mismatch, or a NaN value (missing metrics must be
            dropped first: a NaN is never ranked).
    """
    arr = np.array(values, dtype=float)
    if arr.size == 0:
        n_obj = len(directions) if directions is not None else 0
        return arr.reshape(0, arr.shape[-1] if arr.ndim == 2 else n_obj)
    if arr.ndim != 2:
        raise ValueError(f"values must have shape (n_points, n_objectives), got {arr.shape}")
    if np.isnan(arr).any():
        rows = np.flatnonzero(np.isnan(arr).any(axis=1)).tolist()
        raise ValueError(f"values contain NaN at rows {rows[:10]}; drop missing metrics first")
    dirs = _check_directions(directions, arr.shape[1])
    flip = np.array([d == "maximize" for d in dirs])
    arr[:, flip] = -arr[:, flip]
    return arr


def dominates(
    a: Sequence[float], b: Sequence[float], directions: Sequence[str] | None = None
) -> bool:
    """Whether point ``a`` is no worse than ``b`` in every objective and better in one."""
    pa, pb = to_minimization(np.array([a, b], dtype=float), directions)
    return bool(np.all(pa <= pb) and np.any(pa < pb))


# --------------------------------------------------------------------------- fronts


def pareto_mask(values: Array, directions: Sequence[str] | None = None) -> np.ndarray:
    """Boolean mask of the non-dominated points; duplicates of a front point are all kept.

    Args:
        values: Array of shape ``(n_points, n_objectives)`` without NaN.
        directions: Per-objective direction; all minimized if omitted.

    Returns:
        Boolean array of shape ``(n_points,)``.
    """
    import moocore

    mins = to_minimization(values, directions)
    if len(mins) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(moocore.is_nondominated(mins, keep_weakly=True), dtype=bool)


def non_dominated_sort(values: Array, directions: Sequence[str] | None = None) -> np.ndarray:
    """Rank points into successive non-dominated fronts (0 is the Pareto front).

    Rank ``k`` holds the points that are non-dominated once ranks ``0..k-1`` are removed;
    duplicate points share a rank.

    Args:
        values: Array of shape ``(n_points, n_objectives)`` without NaN.
        directions: Per-objective direction; all minimized if omitted.

    Returns:
        Integer array of ranks, shape ``(n_points,)``.
    """
    import moocore

    mins = to_minimization(values, directions)
    if len(mins) == 0:
        return np.zeros(0, dtype=int)
    return np.asarray(moocore.pareto_rank(mins), dtype=int)


def _as_points(
    points: Array, reference_point: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference_point, dtype=float)
    if ref.ndim != 1 or ref.size == 0:
        raise ValueError(
            f"reference_point must be a 1-D sequence with one value per objective, got shape {ref.shape}"
        )
    if not np.all(np.isfinite(ref)):
        raise ValueError(f"reference_point must be finite, got {ref.tolist()}")
    pts = np.asarray(points, dtype=float)
    if pts.size == 0:
        return np.empty((0, ref.size)), ref
    if pts.ndim == 1 and ref.size == pts.size:
        pts = pts[None, :]  # a single point
    if pts.ndim != 2:
        raise ValueError(
            f"points must be a 2-D array of shape (n_points, n_objectives), got shape {pts.shape}"
        )
    if pts.shape[1] != ref.size:
        raise ValueError(
            f"points have {pts.shape[1]} objectives but reference_point has {ref.size}; "
            "give one reference value per objective"
        )
    if not np.all(np.isfinite(pts)):
        bad = np.flatnonzero(~np.all(np.isfinite(pts), axis=1)).tolist()
        raise ValueError(
            f"points must be finite (NaN/inf at rows {bad[:10]}); drop missing values before "
            "computing a hypervolume"
        )
    return pts, ref


def hypervolume(points: Array, reference_point: Sequence[float] | np.ndarray) -> float:
    """Exact hypervolume dominated by ``points`` and bounded by ``reference_point``.

    All objectives are minimized. Dominated points and duplicates never change the value; a
    point not strictly better than the reference in every objective contributes nothing.

    Args:
        points: Array of shape ``(n_points, n_objectives)``; may be empty. A single point may be
            given as a 1-D sequence.
        reference_point: One value per objective, the upper corner of the measured region.

    Returns:
        The hypervolume, in the product of the objectives' units.

    Raises:
        ValueError: If shapes disagree or a value is NaN or infinite.

    Example:
        >>> hypervolume([[1, 2], [2, 1]], [3, 3])
        3.0
    """
    import moocore

    pts, ref = _as_points(points, reference_point)
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    return float(moocore.hypervolume(pts, ref=ref))


def hv_contributions(points: Array, reference_point: Sequence[float] | np.ndarray) -> np.ndarray:
    """Exclusive hypervolume contribution of each point (minimization).

    The contribution of point ``i`` is ``HV(points) - HV(points without i)``, with every other
    point present. Dominated points, duplicates and points beyond the reference contribute zero,
    but they still count for the others: a point that only its dominator covers is uncovered
    when the dominator is removed, which lowers the dominator's contribution
    (``ignore_dominated=False`` in moocore; its default ignores dominated points and so inflates
    their dominators' contributions). A Pareto set over more objectives than the hypervolume
    counts (or several runs' sets together) holds such points.

    Args:
        points: Array of shape ``(n_points, n_objectives)``.
        reference_point: One value per objective.

    Returns:
        Float array of shape ``(n_points,)``.
    """
    import moocore

    pts, ref = _as_points(points, reference_point)
    out = np.zeros(len(pts))
    inside = np.all(pts < ref, axis=1)
    if inside.any() and ref.size == 1:  # moocore wants two objectives: the best point's gap
        col = pts[:, 0]
        best = int(np.argmin(np.where(inside, col, np.inf)))
        rest = np.delete(col, best)
        runner_up = min(float(rest.min()), float(ref[0])) if len(rest) else float(ref[0])
        out[best] = runner_up - col[best]
    elif inside.any():
        out[inside] = moocore.hv_contributions(pts[inside], ref=ref, ignore_dominated=False)
    return out


def hypervolume_history(points: Array, reference_point: Sequence[float] | np.ndarray) -> np.ndarray:
    """Hypervolume after each point is added, in order; rows with NaN change nothing.

    Non-decreasing by construction: the reference is fixed and points are only added. The
    value is recomputed only when a point enlarges the front.

    Args:
        points: Array of shape ``(n_points, n_objectives)``, minimized; NaN marks a missing row.
        reference_point: One value per objective.

    Returns:
        Float array of shape ``(n_points,)``.
    """
    ref = np.asarray(reference_point, dtype=float)
    pts = np.asarray(points, dtype=float).reshape(-1, ref.size)
    front = np.empty((0, ref.size))
    value, out = 0.0, np.zeros(len(pts))
    for i, p in enumerate(pts):
        if np.isfinite(p).all() and np.all(p < ref) and not np.all(front <= p, axis=1).any():
            front = np.vstack([front[~np.all(p <= front, axis=1)], p])
            value = hypervolume(front, ref)
        out[i] = value
    return out


def attainment_surfaces(
    points: Array,
    sets: Sequence[Any],
    percentiles: Sequence[float] = (25, 50, 75),
    directions: Sequence[str] | None = None,
) -> dict[float, np.ndarray]:
    """Empirical attainment surfaces of several point sets (for example one per seed).

    The ``p``-% surface bounds the region that at least ``p``% of the sets attain (weakly
    dominate): the median surface is ``p = 50``, the 25-75% band lies between ``p = 25`` and
    ``p = 75``. Computed by moocore's exact EAF algorithms.

    Args:
        points: Array of shape ``(n_points, n_objectives)`` without NaN, in original units.
        sets: The set (run) of each point, same length as ``points``.
        percentiles: Which surfaces to return.
        directions: Per-objective direction; all minimized if omitted.

    Returns:
        ``{percentile: array (k, n_objectives)}`` of each surface's corner points, in original
        units and sorted by the first objective; an empty array where no point attains it.
    """
    import moocore

    mins = to_minimization(points, directions)
    labels = np.asarray(list(sets))
    if len(mins) != len(labels):
        raise ValueError(f"{len(mins)} points but {len(labels)} set labels; give one per point")
    out: dict[float, np.ndarray] = {float(p): np.empty((0, mins.shape[1])) for p in percentiles}
    if len(mins) == 0:
        return out
    _, codes = np.unique(labels, return_inverse=True)
    eaf = np.asarray(moocore.eaf(mins, codes + 1, percentiles=list(percentiles)), dtype=float)
    signs = np.array(
        [-1.0 if d == "maximize" else 1.0 for d in _check_directions(directions, mins.shape[1])]
    )
    for p in percentiles:
        surface = eaf[np.isclose(eaf[:, -1], p), :-1] * signs
        out[float(p)] = surface[np.argsort(surface[:, 0], kind="stable")]
    return out


def normalize_front(values: Array, directions: Sequence[str] | None = None) -> np.ndarray:
    """Scale each objective of ``values`` to [0, 1] over these points, 0 the best (for the knee).

    Args:
        values: Array of shape ``(n_points, n_objectives)`` without NaN.
        directions: Per-objective direction; all minimized if omitted.

    Returns:
        Array of the same shape, minimized, in [0, 1]; a constant column maps to 0.
    """
    mins = to_minimization(values, directions)
    if len(mins) == 0:
        return mins
    lo, hi = mins.min(axis=0), mins.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return (mins - lo) / span


def knee_point(values: Array, directions: Sequence[str] | None = None) -> int:
    """Index of the knee of a front: the best trade-off between its extremes.

    The objectives are scaled to [0, 1] over the given points (0 best). With two objectives the
    knee is the point farthest from the line through the two extreme points, on the side of the
    ideal point; with three or more (or a degenerate line) the point closest to the ideal point.

    Args:
        values: Array of shape ``(n_points, n_objectives)`` without NaN, at least one row.
        directions: Per-objective direction; all minimized if omitted.

    Returns:
        Row index of the knee in ``values``.

    Raises:
        ValueError: If ``values`` is empty.
    """
    norm = normalize_front(values, directions)
    if len(norm) == 0:
        raise ValueError("knee_point needs at least one point")
    closest_to_ideal = int(np.argmin(np.linalg.norm(norm, axis=1)))
    if norm.shape[1] != 2 or len(norm) < 3:
        return closest_to_ideal
    a = norm[int(np.argmin(norm[:, 0]))]  # best in objective 0
    b = norm[int(np.argmin(norm[:, 1]))]  # best in objective 1
    direction = b - a
    length = float(np.hypot(*direction))
    if length == 0.0:
        return closest_to_ideal
    rel = norm - a  # signed distance to the line a→b, positive on the ideal point's side
    cross = (direction[0] * rel[:, 1] - direction[1] * rel[:, 0]) / length
    origin_side = np.sign(direction[0] * (-a[1]) - direction[1] * (-a[0])) or 1.0
    return int(np.argmax(cross * origin_side))
