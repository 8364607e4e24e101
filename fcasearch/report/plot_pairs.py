"""The objective-pairs figure: every pair of objectives (and params / MACs) in a corner grid.

Imports matplotlib and seaborn: import it lazily, as :mod:`fcasearch.report.plot` is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from fcasearch.report.plot import (
    _UNITS,
    DOMINATED,
    FRONT,
    _format_axis,
    _label,
    _save,
    _theme,
    _use_log,
)
from fcasearch.report.plot_marks import (
    UNSTABLE,
    axis_limits,
    draw_attainment,
    mark_unstable,
    unstable_mask,
)

__all__ = ["objective_pairs_figure"]


def objective_pairs_figure(
    ranked: pd.DataFrame,
    columns: Sequence[str],
    path: Path,
    surfaces: dict[tuple[str, str], dict[str, dict[float, np.ndarray]]] | None = None,
    directions: dict[str, str] | None = None,
) -> Path | None:
    """Objectives (and headline costs) in pairs, the Pareto set against dominated trials.

    A corner grid: histograms on the diagonal, scatter plots below it. Unstable latency values
    are open markers and do not set a latency axis's range; attainment surfaces of seed groups
    are drawn where ``surfaces`` has them.

    Args:
        ranked: Ranked complete trials with ``on_front``.
        columns: Numeric columns to pair (2 to 5).
        path: PNG to write.
        surfaces: ``{(a, b): {group: {percentile: points}}}`` for objective pairs ``(a, b)``.
        directions: Direction per column (for the surfaces); minimized when absent.

    Returns:
        ``path``, or None when fewer than two columns have values.
    """
    cols = [c for c in columns if c in ranked and ranked[c].notna().sum() > 1][:5]
    if len(cols) < 2 or len(ranked) < 2:
        return None
    _theme()
    surfaces, directions = surfaces or {}, directions or {}
    k = len(cols)
    fig, axes = plt.subplots(k, k, figsize=(2.6 * k, 2.4 * k), squeeze=False)
    on_front = ranked["on_front"].to_numpy(dtype=bool)
    shaky = {c: unstable_mask(ranked, c) for c in cols}
    logs = {c: _use_log(ranked[c].to_numpy(dtype=float)[~shaky[c]]) for c in cols}
    for i, yc in enumerate(cols):
        for j, xc in enumerate(cols):
            ax = axes[i][j]
            if j > i:
                ax.set_visible(False)
                continue
            x = ranked[xc].to_numpy(dtype=float)
            stable_x = ~shaky[xc]
            if i == j:
                bins = np.histogram_bin_edges(x[stable_x & np.isfinite(x)], bins=12)
                for mask, colour in ((~on_front, DOMINATED), (on_front, FRONT)):
                    sel = x[mask & stable_x & np.isfinite(x)]
                    ax.hist(sel, bins=bins, color=colour, histtype="step", lw=1.4)
                ax.set_yticks([])
            else:
                y = ranked[yc].to_numpy(dtype=float)
                ok = ~shaky[xc] & ~shaky[yc]
                for mask, colour, size in ((~on_front, DOMINATED, 14), (on_front, FRONT, 22)):
                    ax.scatter(x[mask & ok], y[mask & ok], s=size, color=colour, linewidths=0)
                for col, axis, log in ((xc, "x", logs[xc]), (yc, "y", logs[yc])):
                    if log:
                        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
                    values = ranked[col].to_numpy(dtype=float)[~shaky[col]]
                    lim = axis_limits(values, log) if shaky[col].any() else None
                    if lim is not None:
                        (ax.set_xlim if axis == "x" else ax.set_ylim)(lim)
                for col, axis in ((xc, "x"), (yc, "y")):
                    if shaky[col].any():
                        m = shaky[col]
                        mark_unstable(ax, x[m], y[m], axis, _UNITS.get(col, ""))
                pair = surfaces.get((yc, xc)) or surfaces.get((xc, yc))
                if pair:
                    first = (yc, xc) if (yc, xc) in surfaces else (xc, yc)
                    dirs = (
                        directions.get(first[0], "minimize"),
                        directions.get(first[1], "minimize"),
                    )
                    draw_attainment(ax, pair, first[0] == xc, dirs)
                _format_axis(ax.yaxis, yc)
            _format_axis(ax.xaxis, xc)
            ax.tick_params(labelsize=7.5)
            ax.set_xlabel(_label(xc) if i == k - 1 else "", fontsize=8.5)
            ax.set_ylabel(_label(yc) if j == 0 and i > 0 else "", fontsize=8.5)
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=FRONT, label="Pareto set"),
        plt.Line2D([], [], marker="o", ls="", color=DOMINATED, label="dominated"),
    ]
    if any(m.any() for m in shaky.values()):
        handles.append(
            plt.Line2D(
                [], [], marker="^", ls="", mfc="none", mec=UNSTABLE, label="unstable latency"
            )
        )
    groups = list(dict.fromkeys(g for pair in surfaces.values() for g in pair))
    for group, colour in zip(groups, sns.color_palette("dark", max(1, len(groups)))):
        handles.append(plt.Line2D([], [], color=colour, lw=1.6, label=f"{group}: median, 25-75%"))
    fig.legend(handles=handles, loc="upper right", fontsize=8.5, frameon=False)
    fig.tight_layout()
    return _save(fig, path)
