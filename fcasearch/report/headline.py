"""The words at the top of a report: its picks (best, cheapest, knee on the front), the headline
that names them, and the sentence that says what the hypervolume measures."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from fcasearch.report.html import format_value
from fcasearch.report.info import Objective, RunData

if TYPE_CHECKING:
    from fcasearch.report.build import ReportData

__all__ = ["headline", "hv_sentence", "pick", "resolution"]


def pick(front: pd.DataFrame, quality: Objective, cost: str | None) -> dict[str, pd.Series]:
    if not len(front):
        return {}
    picks: dict[str, pd.Series] = {}
    by = [quality.name] + ([cost] if cost else [])
    asc = [not quality.maximize] + ([True] if cost else [])
    picks["best"] = front.sort_values(by, ascending=asc, kind="stable").iloc[0]
    if cost:
        cheap = front[front[cost].notna()]
        if len(cheap):
            picks["cheap"] = cheap.sort_values(
                [cost, quality.name], ascending=[True, not quality.maximize]
            ).iloc[0]
    knee = front[front["knee"]]
    if len(knee):
        picks["knee"] = knee.iloc[0]
    return picks


def headline(data: ReportData, n_trials: int) -> str:
    q, c = data.quality.name, data.cost
    best, knee = data.picks.get("best"), data.picks.get("knee")
    runs = f"{len(data.runs)} runs" if len(data.runs) > 1 else "1 run"
    text = (
        f"{n_trials} trials in {runs}; {len(data.ranked)} complete with every objective; "
        f"{len(data.pareto)} on the Pareto front."
    )
    dry = data.trials.get("budget", pd.Series(dtype=str)).astype(str).str.startswith("dry=")
    if dry.any():  # nothing was trained: say so before any pick reads like a result
        return (
            f"DRY RUN: {int(dry.sum())} of {n_trials} trials only slept (--budget dry=...); their "
            f"{q} is synthetic (fixed by seed and arch_id), so no pick here is a result. {text}"
        )
    if best is None:
        return text
    text += resolution(data)
    text += f" For the highest {q}, train {best['arch_id']} ({format_value(q, best[q])} {q}"
    text += f", {format_value(c, best[c])} {c})." if c else ")."
    if knee is not None and c and knee["arch_id"] != best["arch_id"] and best[c] > 0:
        ratio_q = knee[q] / best[q] if best[q] else float("nan")
        ratio_c = knee[c] / best[c]
        text += (
            f" For a balanced trade-off, the knee {knee['arch_id']} keeps {ratio_q:.0%} of "
            f"that {q} at {ratio_c:.0%} of its {c}."
        )
    return text


def resolution(data: ReportData) -> str:
    """How fine the accuracy is: one validation image's share, where every run records the same
    number of images (run.yaml ``data.val_images``); empty otherwise."""
    if data.quality.name != "accuracy":
        return ""
    counts = {(r.config.get("data") or {}).get("val_images") for r in data.runs}
    n = counts.pop() if len(counts) == 1 else None
    if not isinstance(n, int) or n <= 0:
        return ""
    return (
        f" Accuracy is a count of {n:,} validation images: one image is {100 / n:.2g} points, "
        "so picks that close apart are a tie."
    )


def hv_sentence(data: ReportData, runs: list[RunData]) -> str:
    hv = data.hv
    if not hv.names:
        return (
            "No hypervolume: no objective has a reference ("
            + hv.describe()
            + "). Give one with --hv-reference NAME=REF."
        )
    own = {r.hypervolume.id for r in runs if r.hypervolume is not None}
    if len(runs) == 1:
        which = f"the run's definition {hv.id}"
    elif own == {hv.id}:
        which = f"definition {hv.id}, the one every run compared has (each keeps its own value)"
    else:
        which = f"a common definition {hv.id} ({hv.note}); hv_own is each run's value under its own"
    text = (
        f"Hypervolume under {which}: {hv.describe()}. Each counted objective is scaled "
        "linearly from its best value (0) to its reference (1), so the hypervolume is the "
        "fraction of that box the front dominates (1 would be ideal); points beyond a reference "
        "count nothing there. The bounds are fixed before a run's first trial, so a run's value "
        "never falls as trials are added."
    )
    if hv.note and len(runs) == 1:
        text += f" The definition was {hv.note}."
    if len(data.pareto):
        text += f" The combined front reaches {data.combined_hv:.4f}."
    return text
