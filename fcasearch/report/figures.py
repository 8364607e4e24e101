"""The report's figures, drawn from a :class:`~fcasearch.report.build.ReportData`, with captions.

seaborn and matplotlib load inside :func:`draw_figures` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fcasearch.report import analysis as an
from fcasearch.report.final import FINAL_COLUMNS
from fcasearch.report.info import HARDWARE_METRICS
from fcasearch.report.stability import unstable_rows

if TYPE_CHECKING:
    import pandas as pd

    from fcasearch.report.build import ReportData

__all__ = ["FIGURE_COSTS", "draw_figures"]

FIGURE_COSTS = ("macs", "params", "latency_ms", "peak_mem_mb")


def draw_figures(data: ReportData, out: Path) -> dict[str, tuple[Path, str]]:
    from fcasearch.report import plot, plot_pairs  # seaborn and matplotlib load here only

    """Draw the report's PNGs into ``out``: ``{key: (path, caption)}``."""
    figs: dict[str, tuple[Path, str]] = {}
    # trials at the figures every trial has; the Pareto set's final re-measured latency beside
    # them (fcasearch.report.final)
    shown, ranked, q = data.ranked, data.ranked_in_search, data.quality.name
    again = shown["latency_source"] == "final" if "latency_source" in shown else None
    names = [o.name for o in data.objectives]
    dirs = {o.name: o.direction for o in data.objectives}
    costs = [o for o in names if o != q]
    costs += [c for c in FIGURE_COSTS if c not in costs]
    costs = [c for c in costs if c in ranked and ranked[c].notna().any()]
    infeasible = data.trials[data.trials["status"] == "infeasible"]
    multi_fp = ranked["fingerprint_id"].nunique() > 1
    for cost in costs:
        split = (
            "fingerprint_id"
            if cost in HARDWARE_METRICS and multi_fp
            else ("run_label" if len(data.runs) > 1 else None)
        )
        stair = an.budget_table(ranked, data.quality, cost)
        surfaces = _surfaces(data, [q, cost]) if cost in names else {}
        path = plot.quality_vs_cost_figure(
            ranked,
            stair,
            q,
            cost,
            out / f"{q}_vs_{cost}.png",
            data.references,
            infeasible,
            split,
            surfaces,
            (data.quality.direction, dirs.get(cost, "minimize")),
            shown.loc[again, cost] if again is not None and cost in FINAL_COLUMNS else None,
        )
        kind = "objective" if cost in names else "metric"
        figs[f"cost_{cost}"] = (
            path,
            f"{q} against {cost} ({kind}). Large dots: the Pareto set "
            "over all objectives; line: best within each budget; star: knee; "
            + (
                "open dots: the Pareto set's final re-measurement (the other points are "
                "in-search figures); "
                if again is not None and again.any() and cost in FINAL_COLUMNS
                else ""
            )
            + "dashed: reference models (cost only); red ticks: infeasible"
            + (
                "; open triangles at the edge: unstable latency, off the axis"
                if "latency" in cost
                else ""
            )
            + (
                "; orange ticks: infeasible, unstable latency"
                if unstable_rows(infeasible, cost).any()
                else ""
            )
            + (_EAF_CAPTION if surfaces else "")
            + ".",
        )
    pair_cols = names + [c for c in ("params", "macs") if c not in names]
    pair_surfaces = {
        (a, b): _surfaces(data, [a, b])
        for i, a in enumerate(pair_cols)
        for b in pair_cols[i + 1 :]
        if a in names and b in names
    }
    path = plot_pairs.objective_pairs_figure(
        ranked, pair_cols, out / "objective_pairs.png", pair_surfaces, dirs
    )
    if path:
        figs["pairs"] = (
            path,
            "Objectives (and params/MACs) in pairs; blue: the Pareto set; open markers: unstable "
            "latency" + (_EAF_CAPTION if any(pair_surfaces.values()) else "") + ".",
        )
    history = _drawable_history(data.history, ranked)
    path = plot.hv_history_figure(history, out / "hypervolume_history.png")
    if not path:  # nothing to draw: no earlier report's figure stays beside this one
        (out / "hypervolume_history.png").unlink(missing_ok=True)
    else:
        figs["hv_history"] = (
            path,
            f"Hypervolume of each run's front under definition {data.hv.id} (fraction of the "
            "box between the best values and the reference) after each trial and over "
            "wall-clock time; it never falls.",
        )
    path = plot.hv_by_sampler_figure(data.per_run, out / "hypervolume_by_sampler.png")
    if path:
        caption = "Final hypervolume per sampler across runs (seeds)."
        figs["hv_sampler"] = (path, f"{caption} {data.sampler_note}".strip())
    numeric, categorical = an.arch_spread(ranked, data.cost)
    path = plot.arch_spread_figure(
        numeric, categorical, data.cost or "rank", out / "arch_spread.png"
    )
    if path:
        figs["arch_spread"] = (
            path,
            "Architecture choices: numeric ones against the primary "
            "cost (blue: Pareto set), string ones as shares of the front vs "
            "all ranked trials.",
        )
    return figs


def _drawable_history(history: pd.DataFrame, ranked: pd.DataFrame) -> pd.DataFrame:
    """The hypervolume history worth a figure: the runs with a ranked trial (complete, every
    objective measured: a run without one has no front, its hypervolume never leaves 0), on the
    axes (trial, time) with at least two distinct positions (one position draws an axis around
    nothing, -0.04 to 0.04 s); empty when none is left."""
    if not len(history):
        return history
    sub = history[history["run_label"].isin(set(ranked["run_label"]))]
    spread = sub.groupby("axis")["x"].nunique()
    return sub[sub["axis"].isin(spread.index[spread > 1])]


_EAF_CAPTION = (
    "; lines and bands: for several seeds of one configuration, the median attainment surface "
    "(half of the seeds reach it) and the 25-75% band"
)


def _surfaces(data: ReportData, pair: list[str]) -> dict[str, dict[float, np.ndarray]]:
    """Attainment surfaces of ``pair`` per group of seeds (empty without such a group)."""
    from fcasearch.pareto import attainment_surfaces

    out = {}
    dirs = {o.name: o.direction for o in data.objectives}
    for group, labels in data.attainment.items():
        ranked = data.ranked_in_search  # the figures every trial has
        sub = ranked[ranked["run_label"].isin(labels)].dropna(subset=pair)
        if sub["run_label"].nunique() < 2:
            continue
        out[group] = attainment_surfaces(
            sub[pair].to_numpy(dtype=float),
            sub["run_label"].to_numpy(),
            (25, 50, 75),
            [dirs[c] for c in pair],
        )
    return out
