"""Dominance, non-dominated sorting and the knee point, over any number of objectives.

Objectives come with directions (``"minimize"`` or ``"maximize"``). Internally every maximized
objective is negated so that all comparisons are minimizations. ``a`` dominates ``b`` when ``a``
is no worse than ``b`` in every objective and strictly better in at least one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "DIRECTIONS",
    "dominates",
    "knee_point",
    "non_dominated_sort",
    "normalize_front",
    "pareto_mask",
    "to_minimization",
]

DIRECTIONS = ("minimize", "maximize")


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


def to_minimization(
    values: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str] | None = None
) -> np.ndarray:
    """Return a float copy of ``values`` with maximized objectives negated.

    Args:
        values: Array of shape ``(n_points, n_objectives)``.
        directions: One of ``"minimize"``/``"maximize"`` per objective; all minimized if omitted.

    Returns:
        Array of the same shape in which smaller is better in every column.

    Raises:
        ValueError: On a shape or direction mismatch, or a NaN value (missing metrics must be
            dropped first: a report never ranks a missing value).
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
    for j, d in enumerate(dirs):
        if d == "maximize":
            arr[:, j] = -arr[:, j]
    return arr


def dominates(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    directions: Sequence[str] | None = None,
) -> bool:
    """Whether point ``a`` Pareto-dominates point ``b``.

    Args:
        a: Objective values of the first point.
        b: Objective values of the second point.
        directions: Per-objective direction; all minimized if omitted.

    Returns:
        True if ``a`` is no worse than ``b`` everywhere and strictly better somewhere.
    """
    pa, pb = to_minimization(np.array([a, b], dtype=float), directions)
    return bool(np.all(pa <= pb) and np.any(pa < pb))


def _domination_matrix(mins: np.ndarray) -> np.ndarray:
    """``D[i, j]`` is True when point ``i`` dominates point ``j`` (minimization)."""
    n = len(mins)
    no_worse = np.ones((n, n), dtype=bool)
    better = np.zeros((n, n), dtype=bool)
    for k in range(mins.shape[1]):  # one objective at a time keeps memory at O(n²)
        col = mins[:, k]
        no_worse &= col[:, None] <= col[None, :]
        better |= col[:, None] < col[None, :]
    return no_worse & better


def non_dominated_sort(
    values: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str] | None = None
) -> np.ndarray:
    """Rank points into successive non-dominated fronts.

    Rank 0 is the Pareto front; rank ``k`` holds the points that are non-dominated once ranks
    ``0..k-1`` are removed. Within a rank no point dominates another, and every point of rank
    ``k > 0`` is dominated by some point of rank ``k - 1``. Duplicate points share a rank.

    Args:
        values: Array of shape ``(n_points, n_objectives)`` without NaN.
        directions: Per-objective ``"minimize"``/``"maximize"``; all minimized if omitted.

    Returns:
        Integer array of ranks, shape ``(n_points,)``.
    """
    mins = to_minimization(values, directions)
    n = len(mins)
    ranks = np.full(n, -1, dtype=int)
    if n == 0:
        return ranks
    dom = _domination_matrix(mins)
    n_dominators = dom.sum(axis=0)  # how many points dominate each point
    current = np.flatnonzero(n_dominators == 0)
    rank = 0
    while current.size:
        ranks[current] = rank
        # removing this front releases the points it dominated
        n_dominators = n_dominators - dom[current].sum(axis=0)
        n_dominators[ranks >= 0] = -1
        current = np.flatnonzero(n_dominators == 0)
        rank += 1
    assert (ranks >= 0).all(), "every point gets a rank"
    return ranks


def pareto_mask(
    values: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str] | None = None
) -> np.ndarray:
    """Boolean mask of the non-dominated points (rank 0 of :func:`non_dominated_sort`).

    Args:
        values: Array of shape ``(n_points, n_objectives)`` without NaN.
        directions: Per-objective direction; all minimized if omitted.

    Returns:
        Boolean array of shape ``(n_points,)``.
    """
    mins = to_minimization(values, directions)
    if len(mins) == 0:
        return np.zeros(0, dtype=bool)
    return ~_domination_matrix(mins).any(axis=0)


def normalize_front(
    values: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str] | None = None
) -> np.ndarray:
    """Scale each objective of ``values`` to [0, 1] with 0 the best value among them.

    A column with a single distinct value maps to 0.

    Args:
        values: Array of shape ``(n_points, n_objectives)`` without NaN.
        directions: Per-objective direction; all minimized if omitted.

    Returns:
        Array of the same shape, minimized, in [0, 1].
    """
    mins = to_minimization(values, directions)
    if len(mins) == 0:
        return mins
    lo, hi = mins.min(axis=0), mins.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return (mins - lo) / span


def knee_point(
    values: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str] | None = None
) -> int:
    """Index of the knee of a front: the best trade-off between its extremes.

    The objectives are first scaled to [0, 1] over the given points (0 best). With two
    objectives the knee is the point farthest from the straight line through the two extreme
    points, on the side of the ideal point (the point of the sharpest bend). With three or more
    objectives it is the point closest (Euclidean) to the ideal point ``(0, ..., 0)``. With one
    objective, or when the line is degenerate, the point closest to the ideal point is returned.
    Pass the front only (non-dominated points); other points are allowed but rarely meaningful.

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
    # signed distance to the line a→b; positive on the side of the ideal point (origin)
    rel = norm - a
    cross = (direction[0] * rel[:, 1] - direction[1] * rel[:, 0]) / length
    origin_side = np.sign(direction[0] * (-a[1]) - direction[1] * (-a[0])) or 1.0
    dist = cross * origin_side
    return int(np.argmax(dist))
