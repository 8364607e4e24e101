"""Exact hypervolume of a set of points under minimization.

The hypervolume of a point set ``P`` with respect to a reference point ``r`` is the Lebesgue
measure of the region that is dominated by at least one point of ``P`` and dominates ``r``:
the union of the boxes ``[p, r]`` for every ``p`` in ``P``. Every objective is minimized; flip
maximized objectives (or normalize them, as the report does) before calling.

Algorithms (all exact):

- one objective: ``r - min(p)``;
- two objectives: a sweep over the points sorted by the first objective, ``O(n log n)``;
- three or more: slicing along the last objective (hypervolume by slicing objectives), down to the
  two-objective sweep. For ``d = 3`` that costs ``O(n² log n)``; it is exponential in ``d`` and
  meant for the small fronts a report draws, not for thousands of points in many dimensions.

Points that do not strictly beat the reference point in every objective contribute nothing and
are dropped, as are duplicates and dominated points (they never change the value).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["hypervolume"]


def _as_arrays(
    points: np.ndarray | Sequence[Sequence[float]], reference_point: np.ndarray | Sequence[float]
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


def _minimal(points: np.ndarray) -> np.ndarray:
    """Unique non-dominated rows of ``points`` (minimization)."""
    pts = np.unique(points, axis=0)  # sorted lexicographically, duplicates removed
    keep = np.ones(len(pts), dtype=bool)
    for i in range(len(pts)):
        if not keep[i]:
            continue
        # rows dominated by pts[i]: no better anywhere, strictly worse somewhere
        dominated = np.all(pts[i] <= pts, axis=1) & np.any(pts[i] < pts, axis=1)
        keep &= ~dominated
    return pts[keep]


def _hv2(points: np.ndarray, ref: np.ndarray) -> float:
    """Two objectives: sweep in increasing first objective over a non-dominated staircase."""
    order = np.lexsort((points[:, 1], points[:, 0]))
    volume = 0.0
    best_y = ref[1]
    for x, y in points[order]:
        if y < best_y:  # a new step of the staircase
            volume += (ref[0] - x) * (best_y - y)
            best_y = y
    return float(volume)


def _hv_recursive(points: np.ndarray, ref: np.ndarray) -> float:
    """Any number of objectives >= 1, by slicing along the last one."""
    d = points.shape[1]
    if len(points) == 0:
        return 0.0
    if d == 1:
        return float(ref[0] - points[:, 0].min())
    if d == 2:
        return _hv2(points, ref)
    order = np.argsort(points[:, -1], kind="stable")
    pts = points[order]
    volume = 0.0
    for i in range(len(pts)):
        top = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        depth = top - pts[i, -1]
        if depth <= 0:
            continue  # same last coordinate as the next point: that slice is counted there
        # every point at or below this slice spans it in the last objective
        slice_pts = _minimal(pts[: i + 1, :-1])
        volume += depth * _hv_recursive(slice_pts, ref[:-1])
    return float(volume)


def hypervolume(
    points: np.ndarray | Sequence[Sequence[float]], reference_point: np.ndarray | Sequence[float]
) -> float:
    """Exact hypervolume dominated by ``points`` and bounded by ``reference_point``.

    All objectives are minimized. The value does not change when dominated points or
    duplicates are added; it is zero when no point is strictly better than the reference point
    in every objective.

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
    pts, ref = _as_arrays(points, reference_point)
    if len(pts) == 0:
        return 0.0
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    return _hv_recursive(_minimal(pts), ref)
