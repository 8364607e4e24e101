"""Seaborn figures of a report. Each function draws given DataFrames into one PNG and returns
its path; none computes anything the tables do not already hold.

This module imports matplotlib (Agg backend) and seaborn at import time: import it lazily.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.transforms import blended_transform_factory

from fcasearch.report.plot_marks import (
    PercentTicks,
    axis_limits,
    draw_attainment,
    mark_unstable,
    unstable_mask,
    unstable_rug,
)

__all__ = [
    "LABELS",
    "arch_spread_figure",
    "hv_by_sampler_figure",
    "hv_history_figure",
    "quality_vs_cost_figure",
]

FRONT = "#3b6fb6"
DOMINATED = "#c3c3c3"
KNEE = "#f2b134"
INFEASIBLE = "#c44e52"
REF_COLORS = {"paper": "#7b4fa0", "baseline": "#6b6b6b"}
DPI = 110

LABELS = {
    "accuracy": "proxy accuracy (top-1)",
    "params": "parameters",
    "macs": "MACs per image",
    "latency_ms": "latency (ms)",
    "latency_p90_ms": "p90 latency (ms)",
    "throughput_ips": "throughput (images/s)",
    "peak_mem_mb": "peak inference memory (MiB)",
    "train_mem_mb": "training-step memory (MiB)",
    "energy_mj_per_image": "energy (mJ/image)",
}
_ENG = ("params", "macs")
_UNITS = {
    "latency_ms": " ms",
    "latency_p90_ms": " ms",
    "peak_mem_mb": " MiB",
    "train_mem_mb": " MiB",
}


def _theme() -> None:
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.95)


def _label(col: str) -> str:
    return LABELS.get(col, col)


def _format_axis(axis: matplotlib.axis.Axis, col: str) -> None:
    if col == "accuracy":
        axis.set_major_formatter(PercentTicks())
    elif col in _ENG:
        axis.set_major_formatter(mticker.EngFormatter(sep=" "))


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _use_log(values: np.ndarray) -> bool:
    v = values[np.isfinite(values) & (values > 0)]
    return len(v) > 1 and v.max() / v.min() > 20


def quality_vs_cost_figure(
    ranked: pd.DataFrame,
    staircase: pd.DataFrame,
    quality: str,
    cost: str,
    path: Path,
    references: pd.DataFrame | None = None,
    infeasible: pd.DataFrame | None = None,
    split_by: str | None = None,
    surfaces: dict[str, dict[float, np.ndarray]] | None = None,
    directions: tuple[str, str] = ("maximize", "minimize"),
    final: pd.Series | None = None,
) -> Path:
    """Quality against one cost: dominated trials, the Pareto set, the knee, the budget front.

    Trials whose latency was measured unstably (``latency_stable`` False) are drawn as open
    markers on a latency axis and do not set its range; those beyond it sit at its edge (an
    infeasible one is a tick of the infeasible rug in the unstable colour, counted apart in the
    legend). Where ``final`` gives a Pareto trial's final re-measured cost, an open marker shows
    it, joined to the trial's in-search point.

    Args:
        ranked: Ranked complete trials (``on_front``, ``knee``, ``arch_id`` columns).
        staircase: Best quality within each budget of ``cost`` (rows sorted by cost).
        quality: Quality column (y).
        cost: Cost column (x).
        path: PNG to write.
        references: Reference models (``label``, ``kind`` and a ``cost`` column): vertical lines.
        infeasible: Trials rejected by a constraint, drawn as a rug where ``cost`` is known.
        split_by: Column that colours the Pareto set (run, or hardware fingerprint).
        surfaces: Attainment surfaces of (quality, cost) per seed group
            (:func:`fcasearch.pareto.attainment_surfaces`).
        directions: Directions of (quality, cost).
        final: Final re-measured ``cost`` by row label of ``ranked`` (NaN or absent: none).

    Returns:
        ``path``.
    """
    _theme()
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    everything = ranked[ranked[cost].notna()]
    shaky = unstable_mask(everything, cost)
    unstable, data = everything[shaky], everything[~shaky]
    dominated, front = data[~data["on_front"]], data[data["on_front"]]
    if len(dominated):
        ax.scatter(
            dominated[cost],
            dominated[quality],
            s=22,
            color=DOMINATED,
            label="dominated",
            zorder=2,
            linewidths=0,
        )
    if len(staircase) > 1:
        ax.step(
            staircase[cost],
            staircase[quality],
            where="post",
            color=FRONT,
            lw=1.4,
            alpha=0.8,
            label="best within budget",
            zorder=3,
        )
    if len(front):
        groups = [("Pareto set", front)]
        if split_by and front[split_by].nunique() > 1:
            groups = [(f"Pareto set: {k}", g) for k, g in front.groupby(split_by, sort=True)]
        colours = [FRONT] if len(groups) == 1 else sns.color_palette("deep", len(groups))
        for (name, g), colour in zip(groups, colours):
            ax.scatter(
                g[cost],
                g[quality],
                s=55,
                color=colour,
                edgecolor="white",
                linewidths=0.6,
                zorder=4,
                label=name,
            )
        knee = front[front["knee"]]
        if len(knee):
            ax.scatter(
                knee[cost],
                knee[quality],
                marker="*",
                s=420,
                color=KNEE,
                edgecolor="black",
                linewidths=0.7,
                zorder=3.5,
                label="knee",
            )
            ax.annotate(
                str(knee["arch_id"].iloc[0])[:8],
                (knee[cost].iloc[0], knee[quality].iloc[0]),
                xytext=(8, -14),
                textcoords="offset points",
                fontsize=8,
            )
    xs = [data[cost].to_numpy(dtype=float)]
    again = final.reindex(front.index).dropna() if final is not None else pd.Series(dtype=float)
    if len(again):
        ys = front.loc[again.index, quality]
        for x0, x1, y in zip(front.loc[again.index, cost], again, ys):
            ax.plot([x0, x1], [y, y], color=FRONT, ls=":", lw=1.0, alpha=0.7, zorder=3.8)
        ax.scatter(
            again,
            ys,
            s=40,
            facecolors="white",
            edgecolors=FRONT,
            linewidths=1.2,
            zorder=4.2,
            label="Pareto set: final re-measurement",
        )
        xs.append(again.to_numpy(dtype=float))
    shaky_rug = np.zeros(0)  # infeasible trials whose latency stayed unstable
    if infeasible is not None and cost in infeasible and infeasible[cost].notna().any():
        rug_rows = infeasible[infeasible[cost].notna()]
        rug_shaky = unstable_mask(rug_rows, cost)
        rug = rug_rows[cost].to_numpy(dtype=float)[~rug_shaky]
        shaky_rug = rug_rows[cost].to_numpy(dtype=float)[rug_shaky]
        xs.append(rug)
        sns.rugplot(x=rug, ax=ax, color=INFEASIBLE, height=0.04, lw=1.5, alpha=0.8)
        stable = ", stable latency" if len(shaky_rug) else ""
        ax.plot([], [], "|", color=INFEASIBLE, label=f"infeasible{stable} ({len(rug)})")
    refs = pd.DataFrame()
    if references is not None and cost in references:
        refs = references[references[cost].notna() & (references[cost] > 0)]
    data_x = np.concatenate(xs)
    log = _use_log(
        np.concatenate([data_x, refs[cost].to_numpy(dtype=float)]) if len(refs) else data_x
    )
    if log:
        ax.set_xscale("log")
    limits = axis_limits(data_x, log) if len(unstable) or len(shaky_rug) else None
    if limits is not None:
        ax.set_xlim(limits)
    _draw_references(ax, refs, cost, data_x, log)
    if len(shaky_rug):
        ax.autoscale(enable=False, axis="x")
        unstable_rug(ax, shaky_rug)
    if len(unstable):
        ax.autoscale(enable=False, axis="x")
        mark_unstable(
            ax,
            unstable[cost].to_numpy(dtype=float),
            unstable[quality].to_numpy(dtype=float),
            "x",
            _UNITS.get(cost, ""),
            in_legend=True,
        )
    draw_attainment(ax, surfaces or {}, False, directions)
    _format_axis(ax.xaxis, cost)
    _format_axis(ax.yaxis, quality)
    ax.set_xlabel(_label(cost) + (" (log scale)" if log else ""))
    ax.set_ylabel(_label(quality))
    ax.set_title(f"{_label(quality)} vs {_label(cost)}", fontsize=11, loc="left")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8, frameon=True, framealpha=0.9)
    return _save(fig, path)


def _draw_references(
    ax: plt.Axes, refs: pd.DataFrame, cost: str, data_x: np.ndarray, log: bool
) -> None:
    """Vertical labelled lines; on a linear axis, references far outside the data are listed at
    the right edge instead of squeezing the data into a corner."""
    finite = data_x[np.isfinite(data_x)]
    if not len(refs) or not len(finite):
        return
    lo, hi = float(finite.min()), float(finite.max())
    span = max(hi - lo, abs(hi) * 0.05, 1e-12)
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    off_axis = []
    for _, ref in refs.iterrows():
        x = float(ref[cost])
        colour = REF_COLORS.get(str(ref["kind"]), "#6b6b6b")
        if not log and not (lo - 0.6 * span <= x <= hi + 0.6 * span):
            off_axis.append((x, ref, colour))
            continue
        ax.axvline(x, color=colour, ls="--", lw=1.1, zorder=1)
        ax.text(
            x,
            0.97,
            f" {ref['label']}",
            transform=trans,
            rotation=90,
            va="top",
            ha="right",
            fontsize=7.5,
            color=colour,
        )
    for i, (x, ref, colour) in enumerate(sorted(off_axis, key=lambda item: item[0])):
        arrow = "→" if x > hi else "←"
        value = (
            mticker.EngFormatter(sep=" ")(x) if cost in _ENG else f"{x:.3g}{_UNITS.get(cost, '')}"
        )
        ax.text(
            0.99 if x > hi else 0.01,
            0.97 - 0.06 * i,
            f"{ref['label']}: {value} {arrow}",
            transform=ax.transAxes,
            ha="right" if x > hi else "left",
            va="top",
            fontsize=7.5,
            color=colour,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
        )


def hv_history_figure(history: pd.DataFrame, path: Path) -> Path | None:
    """Hypervolume of each run's front over trials and over wall-clock time.

    Args:
        history: Output of :func:`fcasearch.report.analysis.hv_history`.
        path: PNG to write.

    Returns:
        ``path``, or None when the history is empty.
    """
    if not len(history):
        return None
    _theme()
    axes_kinds = [k for k in ("trial", "time") if (history["axis"] == k).any()]
    fig, axes = plt.subplots(
        1, len(axes_kinds), figsize=(5.2 * len(axes_kinds), 3.8), squeeze=False
    )
    multi = history["run_label"].nunique() > 1
    for ax, kind in zip(axes[0], axes_kinds):
        sub = history[history["axis"] == kind].copy()
        xlabel = "trial"
        if kind == "time":
            minutes = sub["x"].max() > 180
            sub["x"] = sub["x"] / 60 if minutes else sub["x"]
            xlabel = "wall-clock time (min)" if minutes else "wall-clock time (s)"
        sns.lineplot(
            data=sub,
            x="x",
            y="hypervolume",
            hue="run_label" if multi else None,
            style="sampler" if multi and sub["sampler"].nunique() > 1 else None,
            drawstyle="steps-post",
            estimator=None,
            ax=ax,
            color=None if multi else FRONT,
            legend=kind == axes_kinds[-1] and multi,
        )
        ax.set_xlabel(xlabel)
        if kind == "trial":
            ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
        ax.set_ylabel("hypervolume (fraction of box)")
        ax.set_title(
            f"hypervolume over {'trials' if kind == 'trial' else 'time'}", fontsize=11, loc="left"
        )
        ax.set_ylim(bottom=0)
    if multi:
        axes[0][-1].legend(fontsize=7.5, loc="lower right", framealpha=0.9)
    fig.tight_layout()
    return _save(fig, path)


def hv_by_sampler_figure(per_run: pd.DataFrame, path: Path) -> Path | None:
    """Final hypervolume per sampler: mean ± sd bars with each run (seed) as a dot.

    Args:
        per_run: Output of :func:`fcasearch.report.analysis.hv_summary`.
        path: PNG to write.

    Returns:
        ``path``, or None for a single run.
    """
    if len(per_run) < 2:
        return None
    _theme()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * per_run["sampler"].nunique() + 2), 3.2))
    order = per_run.groupby("sampler")["hypervolume"].mean().sort_values(ascending=False).index
    sns.barplot(
        data=per_run,
        x="sampler",
        y="hypervolume",
        order=order,
        errorbar="sd",
        color=FRONT,
        alpha=0.45,
        capsize=0.15,
        ax=ax,
    )
    sns.stripplot(
        data=per_run,
        x="sampler",
        y="hypervolume",
        order=order,
        color="black",
        size=5,
        jitter=0.12,
        ax=ax,
    )
    ax.set_ylabel("final hypervolume (fraction of box)")
    ax.set_title("hypervolume per sampler (mean ± sd, dots: runs)", fontsize=11, loc="left")
    return _save(fig, path)


def arch_spread_figure(
    numeric: pd.DataFrame, categorical: pd.DataFrame, x_label: str, path: Path
) -> Path | None:
    """How architecture choices spread over the front.

    Numeric choices: value against the primary cost, Pareto set coloured (values jittered a
    little, since most choices are small integers). String choices: share of each category in
    the Pareto set and among all ranked trials.

    Args:
        numeric: ``choice``, ``value``, ``x``, ``group`` rows (see ``arch_spread``).
        categorical: ``choice``, ``category``, ``group``, ``share`` rows.
        x_label: Column name of the x axis of numeric panels.
        path: PNG to write.

    Returns:
        ``path``, or None when there is nothing to draw.
    """
    num_choices = list(dict.fromkeys(numeric["choice"])) if len(numeric) else []
    cat_choices = list(dict.fromkeys(categorical["choice"])) if len(categorical) else []
    panels = [("num", c) for c in num_choices] + [("cat", c) for c in cat_choices]
    if not panels:
        return None
    _theme()
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.3 * nrows), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (kind, choice) in zip(axes.flat, panels):
        if kind == "num":
            sub = numeric[numeric["choice"] == choice]
            levels = np.unique(sub["value"].to_numpy(dtype=float))
            step = np.min(np.diff(levels)) if len(levels) > 1 else 1.0
            y = sub["value"].to_numpy(dtype=float) + rng.uniform(-0.12, 0.12, len(sub)) * step
            for group, colour, size in (("dominated", DOMINATED, 16), ("front", FRONT, 34)):
                m = (sub["group"] == group).to_numpy()
                ax.scatter(
                    sub["x"].to_numpy(dtype=float)[m],
                    y[m],
                    s=size,
                    color=colour,
                    label="Pareto set" if group == "front" else group,
                    linewidths=0,
                )
            if _use_log(sub["x"].to_numpy(dtype=float)):
                ax.set_xscale("log")
            _format_axis(ax.xaxis, x_label)
            ax.set_xlabel(_label(x_label), fontsize=9)
            ax.set_ylabel(choice)
        else:
            sub = categorical[categorical["choice"] == choice]
            sns.barplot(
                data=sub,
                y="category",
                x="share",
                hue="group",
                hue_order=["front", "all ranked"],
                palette=[FRONT, DOMINATED],
                orient="h",
                ax=ax,
            )
            ax.xaxis.set_major_formatter(mticker.PercentFormatter(1.0, decimals=0))
            ax.set_xlabel("share of trials", fontsize=9)
            ax.set_ylabel("")
            ax.tick_params(axis="y", labelsize=8)
        ax.set_title(choice, fontsize=10, loc="left")
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=FRONT, label="Pareto set / front"),
        plt.Line2D([], [], marker="o", ls="", color=DOMINATED, label="dominated / all ranked"),
    ]
    fig.legend(handles=handles, loc="upper right", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("architecture choices along the front", x=0.01, ha="left", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)
