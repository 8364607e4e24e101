"""Marks the report's figures share: unstable latency values, attainment surfaces of seeds, and
percent tick labels.

Imports matplotlib and seaborn: import it lazily, as :mod:`fcasearch.report.plot` is.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns

from fcasearch.report.stability import LATENCY_COLUMNS, unstable_rows

__all__ = [
    "LATENCY_AXES",
    "UNSTABLE",
    "PercentTicks",
    "axis_limits",
    "draw_attainment",
    "mark_unstable",
    "percent_decimals",
    "unstable_mask",
    "unstable_rug",
]


# ---- unstable latency: marked, and kept from setting the axis range ---------------------------

LATENCY_AXES = LATENCY_COLUMNS
UNSTABLE = "#b7791f"


def unstable_mask(df: pd.DataFrame, col: str) -> np.ndarray:
    """:func:`fcasearch.report.stability.unstable_rows` as an array, for indexing values."""
    return unstable_rows(df, col).to_numpy(dtype=bool)


def axis_limits(values: np.ndarray, log: bool) -> tuple[float, float] | None:
    """Axis limits around ``values`` with a 5% margin (in log space on a log axis)."""
    v = values[np.isfinite(values) & ((values > 0) if log else True)]
    if not len(v):
        return None
    lo, hi = float(v.min()), float(v.max())
    if log:
        a, b = np.log10(lo), np.log10(hi)
        pad = max((b - a) * 0.05, 0.02)
        return 10 ** (a - pad), 10 ** (b + pad)
    pad = max((hi - lo) * 0.05, abs(hi) * 0.02, 1e-12)
    return lo - pad, hi + pad


def mark_unstable(
    ax: plt.Axes, x: np.ndarray, y: np.ndarray, axis: str, unit: str = "", in_legend: bool = False
) -> None:
    """Unstable points: open triangles where they fall inside the (already set) axis range,
    open arrows at its edge where they fall outside, with their values in the legend label
    (``in_legend``) or in a note in the corner."""
    if not len(x):
        return
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    v = x if axis == "x" else y
    inside = (v >= lo) & (v <= hi)
    style = {"s": 60, "facecolors": "none", "edgecolors": UNSTABLE, "linewidths": 1.3, "zorder": 5}
    if inside.any():
        ax.scatter(x[inside], y[inside], marker="^", label="unstable latency", **style)
    out = ~inside
    if not out.any():
        return
    edge = np.where(v[out] > hi, hi, lo)
    px, py = (edge, y[out]) if axis == "x" else (x[out], edge)
    marker = (">" if axis == "x" else "^") if (v[out] > hi).all() else "D"
    shown = ", ".join(f"{val:.3g}{unit}" for val in sorted(v[out])[:3])
    more = f" (+{out.sum() - 3})" if out.sum() > 3 else ""
    text = f"unstable, off the axis: {shown}{more}"
    ax.scatter(px, py, marker=marker, clip_on=False, label=text if in_legend else None, **style)
    if not in_legend:
        ax.text(
            0.99,
            0.02,
            text,
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=7.5,
            color=UNSTABLE,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1},
        )


def unstable_rug(ax: plt.Axes, x: np.ndarray) -> None:
    """Infeasible trials whose latency stayed unstable: ticks like the infeasible rug's, in the
    unstable colour, at their value inside the (already set) x range and at its edge outside it
    (they do not set the range), counted in the legend."""
    lo, hi = sorted(ax.get_xlim())
    ax.vlines(
        np.clip(x, lo, hi),
        0,
        0.04,
        transform=ax.get_xaxis_transform(),
        colors=UNSTABLE,
        lw=1.5,
        clip_on=False,
        zorder=2,
    )
    ax.plot([], [], "|", color=UNSTABLE, label=f"infeasible, unstable latency ({len(x)})")


# ---- percent tick labels ----------------------------------------------------------------------


class PercentTicks(mticker.PercentFormatter):
    """Fractions as percent tick labels with the fewest decimals that write every tick exactly
    (ticks 0.5 points apart read ``90.5%``, never ``90%`` and ``91%`` for 90.5 and 91.0)."""

    def __init__(self) -> None:
        super().__init__(1.0, decimals=0)

    def set_locs(self, locs) -> None:  # called with the ticks before they are formatted
        super().set_locs(locs)
        self.decimals = percent_decimals(locs)


def percent_decimals(locs, most: int = 4) -> int:
    """Decimals that write every fraction in ``locs`` exactly as a percentage (else the fewest
    that tell them apart, at most ``most``)."""
    pct = np.asarray(locs, dtype=float) * 100
    pct = pct[np.isfinite(pct)]
    for decimals in range(most + 1):
        if np.allclose(np.round(pct, decimals), pct, rtol=0, atol=1e-6):
            return decimals
    for decimals in range(most + 1):
        if len(np.unique(np.round(pct, decimals))) == len(np.unique(pct)):
            return decimals
    return most


# ---- attainment surfaces (several seeds of one configuration) --------------------------------


def _staircase(points: np.ndarray, far: tuple[float, float]) -> np.ndarray:
    """The boundary of the region a minimized 2-D point set attains, from the far edge of the
    second axis to the far edge of the first."""
    p = points[np.lexsort((-points[:, 1], points[:, 0]))]
    path = [(p[0, 0], far[1])]
    for i, (x, y) in enumerate(p):
        if i:
            path.append((x, p[i - 1, 1]))
        path.append((x, y))
    path.append((far[0], p[-1, 1]))
    return np.array(path, dtype=float)


def draw_attainment(
    ax: plt.Axes,
    surfaces: dict[str, dict[float, np.ndarray]],
    x_first: bool,
    directions: tuple[str, str],
) -> None:
    """Median attainment surface and 25-75% band of each seed group, on fixed axis limits.

    Args:
        ax: Axes whose limits are already set.
        surfaces: ``{group: {percentile: (k, 2) points}}`` in the pair's units and order.
        x_first: The pair's first column is on the x axis (else its second).
        directions: The pair's directions, in the pair's order.
    """
    if not surfaces:
        return
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    dx, dy = directions if x_first else directions[::-1]
    sx = -1.0 if dx == "maximize" else 1.0
    sy = -1.0 if dy == "maximize" else 1.0
    far = (max(sx * xlim[0], sx * xlim[1]), max(sy * ylim[0], sy * ylim[1]))
    colours = sns.color_palette("dark", len(surfaces))
    for (group, by_pct), colour in zip(surfaces.items(), colours):
        paths = {}
        for pct, pts in by_pct.items():
            if len(pts):
                xy = pts if x_first else pts[:, ::-1]
                paths[pct] = _staircase(xy * (sx, sy), far) * (sx, sy)
        if 25.0 in paths and 75.0 in paths:
            ring = np.vstack([paths[25.0], paths[75.0][::-1]])
            ax.fill(
                ring[:, 0],
                ring[:, 1],
                color=colour,
                alpha=0.15,
                lw=0,
                zorder=1.5,
                label=f"{group}: 25-75% attained",
            )
        if 50.0 in paths:
            ax.plot(
                paths[50.0][:, 0],
                paths[50.0][:, 1],
                color=colour,
                lw=1.6,
                zorder=3.2,
                label=f"{group}: median attainment",
            )
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
