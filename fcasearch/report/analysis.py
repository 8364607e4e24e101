"""Report tables built from loaded trials: the front, hypervolumes, budgets, statuses.

Everything here takes and returns DataFrames; nothing draws. Missing metrics (NaN) are never
treated as values: a complete trial without every objective is counted but not ranked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fcasearch.pareto import knee_point, non_dominated_sort
from fcasearch.report.hypervolumes import (
    Normalization,
    attainment_groups,
    fit_normalization,
    hv_history,
    hv_summary,
    sampler_summary,
)
from fcasearch.report.info import METRIC_COLUMNS, Objective
from fcasearch.report.stability import unstable_rows

__all__ = [
    "Normalization",
    "arch_spread",
    "attainment_groups",
    "budget_table",
    "confirm_front",
    "fit_normalization",
    "hv_history",
    "hv_summary",
    "pick_quality_and_cost",
    "rank_trials",
    "sampler_summary",
    "status_counts",
    "status_details",
]


def _objective_frame(df: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    return df[[o.name for o in objectives]].to_numpy(dtype=float)


def rank_trials(df: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """Complete trials with every objective present, ranked by non-dominated sorting.

    Args:
        df: All trials (any status).
        objectives: The objectives with directions.

    Returns:
        A copy of the rankable rows with ``rank`` (0 = front), ``on_front`` and ``knee``
        (the knee of the front, see :func:`fcasearch.report.pareto.knee_point`).
    """
    names = [o.name for o in objectives]
    ok = (df["status"] == "complete") & df[names].notna().all(axis=1)
    ok &= np.isfinite(df[names].to_numpy(dtype=float)).all(axis=1)
    ranked = df[ok].copy()
    dirs = [o.direction for o in objectives]
    ranked["rank"] = non_dominated_sort(_objective_frame(ranked, objectives), dirs)
    ranked["on_front"] = ranked["rank"] == 0
    ranked["knee"] = False
    front = ranked[ranked["on_front"]]
    if len(front):
        knee = knee_point(_objective_frame(front, objectives), dirs)
        ranked.loc[front.index[knee], "knee"] = True
    return ranked


def confirm_front(
    shown: pd.DataFrame, ranked: pd.DataFrame, objectives: Sequence[Objective]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ranked trials with the figures the report shows, the front confirmed by them.

    ``ranked`` ranks the trials on the figures every trial was measured with (in-search); the
    report shows final re-measured figures where it has them (:mod:`fcasearch.report.final`),
    which only the front's members have. So no trial joins the front on them, but a member that
    another member dominates as shown leaves it (rank 1), and the knee is taken over the members
    that stay.

    Args:
        shown: All trials with the figures shown (rows of ``ranked`` at least).
        ranked: Output of :func:`rank_trials` on the in-search figures.
        objectives: The objectives with directions.

    Returns:
        ``(ranked rows of shown with rank, on_front and knee; the members that left the front)``.
    """
    out = shown.loc[ranked.index].assign(rank=ranked["rank"], on_front=ranked["on_front"])
    out["knee"] = False
    members = out[out["on_front"]]
    if not len(members):
        return out, members
    dirs = [o.direction for o in objectives]
    stays = non_dominated_sort(_objective_frame(members, objectives), dirs) == 0
    left = members[~stays]
    out.loc[left.index, ["rank", "on_front"]] = [1, False]
    front = members[stays]
    out.loc[front.index[knee_point(_objective_frame(front, objectives), dirs)], "knee"] = True
    return out, left


def pick_quality_and_cost(
    objectives: Sequence[Objective], columns: Sequence[str]
) -> tuple[str, str | None]:
    """The objective that measures quality and the primary cost for budget questions.

    Quality is ``accuracy`` if it is an objective, else the first maximized objective, else the
    first objective. The primary cost is the first other objective, else ``macs`` or ``params``
    when present.

    Args:
        objectives: The run's objectives.
        columns: Columns of the trials table (for the fallback cost).

    Returns:
        ``(quality, cost)``; cost is None when nothing fits.
    """
    names = [o.name for o in objectives]
    if "accuracy" in names:
        quality = "accuracy"
    else:
        quality = next((o.name for o in objectives if o.maximize), names[0])
    cost = next((n for n in names if n != quality), None)
    if cost is None:
        cost = next((c for c in ("macs", "params") if c in columns), None)
    return quality, cost


def budget_table(ranked: pd.DataFrame, quality: Objective, cost: str) -> pd.DataFrame:
    """Best quality within each cost budget: the 2-D front of (quality, cost), cheapest first.

    Row ``i`` answers "with at most ``cost_i`` to spend, train this one": no trial costs that
    much or less and scores better.

    Args:
        ranked: Output of :func:`rank_trials`.
        quality: The quality objective.
        cost: A column minimized as cost (need not be an objective).

    Returns:
        The 2-D front rows sorted by ascending cost (copies of ``ranked`` rows).
    """
    sub = ranked[ranked[cost].notna()]
    if not len(sub):
        return sub.copy()
    vals = sub[[quality.name, cost]].to_numpy(dtype=float)
    ranks = non_dominated_sort(vals, [quality.direction, "minimize"])
    front = sub[ranks == 0].sort_values(
        [cost, quality.name], ascending=[True, not quality.maximize]
    )
    # equal points from several trials: keep the first only
    return front.drop_duplicates(subset=[cost, quality.name]).copy()


def status_counts(df: pd.DataFrame, ranked: pd.DataFrame) -> pd.DataFrame:
    """Trials per run and status, with complete trials missing an objective counted apart.

    Args:
        df: All trials.
        ranked: Output of :func:`rank_trials`.

    Returns:
        One row per run with a column per status (``complete``, ``pruned``, ``infeasible``,
        ``failed``, others as found), ``missing_objective``, ``on_front`` and ``total``.
    """
    status = df["status"].astype(str)
    counts = pd.crosstab(df["run_label"], status)
    for col in ("complete", "pruned", "infeasible", "failed"):
        if col not in counts:
            counts[col] = 0
    ordered = ["complete", "pruned", "infeasible", "failed"]
    counts = counts[ordered + sorted(c for c in counts.columns if c not in ordered)]
    complete = df[df["status"] == "complete"]
    missing = complete[~complete.index.isin(ranked.index)].groupby("run_label").size()
    counts["missing_objective"] = missing.reindex(counts.index).fillna(0).astype(int)
    counts["on_front"] = ranked[ranked["on_front"]].groupby("run_label").size()
    counts["on_front"] = counts["on_front"].reindex(counts.index).fillna(0).astype(int)
    counts["total"] = df.groupby("run_label").size().reindex(counts.index)
    order = list(dict.fromkeys(df["run_label"]))
    counts = counts.reindex(order)
    counts.columns.name = None
    return counts.reset_index().rename(columns={"index": "run_label"})


def status_details(df: pd.DataFrame, ranked: pd.DataFrame) -> pd.DataFrame:
    """Trials that are not on the chart, grouped by status and reason.

    Args:
        df: All trials.
        ranked: Output of :func:`rank_trials`.

    Returns:
        Rows ``status``, ``reason`` (first line, at most 200 characters; reasons that differ
        only in numbers are grouped, the first one shown; ``⚠ unstable latency: run#trial (CV
        ...)`` added where a row's latency stayed unstable, as tables mark unstable cells),
        ``count`` and ``trials`` (up to 8 ``run#trial`` ids), failed first, then infeasible,
        pruned, others.
    """
    rest = df[~df.index.isin(ranked.index)].copy()
    if not len(rest):
        return pd.DataFrame(columns=["status", "reason", "count", "trials"])
    missing = rest["status"] == "complete"
    rest.loc[missing, "status"] = "complete, missing objective"
    rest.loc[missing & (rest["reason"] == ""), "reason"] = "an objective is NaN (not measured)"
    reason = rest["reason"].astype(str).str.strip().str.split("\n").str[0].str.slice(0, 200)
    rest["reason"] = reason.where(reason != "", "(no reason recorded)")
    # reasons that differ only in their numbers ("macs 61.2M > 50M") form one group
    rest["_template"] = rest["reason"].str.replace(r"\d+(?:\.\d+)?", "#", regex=True)
    order = {"failed": 0, "infeasible": 1, "pruned": 2}
    rows = []
    for (st, _), g in rest.groupby(["status", "_template"], sort=False):
        ids = g["uid"].tolist()
        listed = ", ".join(ids[:8]) + (f", … ({len(ids) - 8} more)" if len(ids) > 8 else "")
        why = g["reason"].iloc[0]
        if g["reason"].nunique() > 1:
            why += f" (and {g['reason'].nunique() - 1} similar)"
        why += _unstable_mark(g)
        rows.append({"status": st, "reason": why, "count": len(g), "trials": listed})
    out = pd.DataFrame(rows)
    out["_o"] = out["status"].map(order).fillna(3)
    out = out.sort_values(["_o", "count"], ascending=[True, False], kind="stable")
    return out.drop(columns="_o").reset_index(drop=True)


def _unstable_mark(group: pd.DataFrame) -> str:
    """`` ⚠ unstable latency: c#0 (CV 0.271)`` for the rows of ``group`` whose latency was measured
    but stayed unstable (a reason that quotes such a latency quotes no exact value); empty when
    there is none."""
    shaky = group[unstable_rows(group, "latency_ms")]
    if not len(shaky):
        return ""
    cv = shaky["latency_cv"] if "latency_cv" in shaky else pd.Series(np.nan, index=shaky.index)
    listed = [
        f"{uid} (CV {c:.3g})" if pd.notna(c) else str(uid)
        for uid, c in zip(shaky["uid"].astype(str), cv)
    ]
    more = f", … ({len(listed) - 4} more)" if len(listed) > 4 else ""
    return f" ⚠ unstable latency: {', '.join(listed[:4])}{more}"


def arch_spread(
    ranked: pd.DataFrame, cost: str | None, max_categories: int = 8
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How each architecture choice (``arch.*`` column) is spread over the front.

    Numeric choices become points (value vs the primary cost, front or not); string choices
    become shares of each category among front trials and among all ranked trials.

    Args:
        ranked: Output of :func:`rank_trials`.
        cost: Primary cost column for the numeric x axis (front position if None).
        max_categories: Categories kept per string choice (by front count); the rest are
            ``"other"``.

    Returns:
        ``(numeric, categorical)``: numeric has ``choice``, ``value``, ``x``, ``group``;
        categorical has ``choice``, ``category``, ``group``, ``share``.
    """
    cols = [c for c in ranked.columns if str(c).startswith("arch.") and ranked[c].notna().any()]
    if cost is not None and cost in ranked and ranked[cost].notna().any():
        x = ranked[cost].astype(float)
    else:
        x = ranked["rank"].astype(float)
    group = np.where(ranked["on_front"], "front", "dominated")
    num_rows, cat_rows = [], []
    for col in cols:
        series = ranked[col]
        choice = col.removeprefix("arch.")
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            if series.nunique(dropna=True) < 2:
                continue  # a constant choice says nothing
            num_rows.append(
                pd.DataFrame(
                    {"choice": choice, "value": series.astype(float), "x": x, "group": group}
                )
            )
            continue
        cats = series.astype(str)
        if cats.nunique() < 2:
            continue
        front_counts = cats[ranked["on_front"]].value_counts()
        top = list(front_counts.index[:max_categories])
        if len(top) < max_categories:
            top += [c for c in cats.value_counts().index if c not in top][
                : max_categories - len(top)
            ]
        cats = cats.where(cats.isin(top), "other")
        for name, mask in (("front", ranked["on_front"].to_numpy()), ("all ranked", None)):
            sel = cats if mask is None else cats[mask]
            if not len(sel):
                continue
            shares = sel.value_counts(normalize=True)
            for cat, share in shares.items():
                cat_rows.append({"choice": choice, "category": cat, "group": name, "share": share})
    numeric = (
        pd.concat(num_rows, ignore_index=True)
        if num_rows
        else pd.DataFrame(columns=["choice", "value", "x", "group"])
    )
    categorical = pd.DataFrame(cat_rows, columns=["choice", "category", "group", "share"])
    return numeric, categorical


def metric_columns(df: pd.DataFrame, objectives: Sequence[Objective]) -> list[str]:
    """Objectives first, then every other metric column with at least one value."""
    names = [o.name for o in objectives]
    extra = [c for c in METRIC_COLUMNS if c not in names and c in df and df[c].notna().any()]
    proxies = [c for c in df.columns if str(c).startswith("proxy.") and df[c].notna().any()]
    return names + extra + sorted(proxies)
