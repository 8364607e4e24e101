"""Report tables built from loaded trials: the front, hypervolumes, budgets, statuses.

Everything here takes and returns DataFrames; nothing draws. Missing metrics (NaN) are never
treated as values: a complete trial without every objective is counted but not ranked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fcasearch.pareto import (
    HypervolumeDefinition,
    hypervolume,
    hypervolume_history,
    knee_point,
    non_dominated_sort,
)
from fcasearch.report.info import METRIC_COLUMNS, Objective

__all__ = [
    "Normalization",
    "arch_spread",
    "attainment_groups",
    "budget_table",
    "fit_normalization",
    "hv_history",
    "hv_summary",
    "pick_quality_and_cost",
    "rank_trials",
    "sampler_summary",
    "status_counts",
    "status_details",
]

DEFAULT_REFERENCE = 1.1


@dataclass(frozen=True)
class Normalization:
    """Maps objectives to [0, 1] minimization coordinates (0 best) fitted over finished trials.

    A post-hoc scale for comparing finished runs (``bench/``); reports measure hypervolumes under
    the runs' own :class:`~fcasearch.pareto.HypervolumeDefinition` instead, which does not depend
    on which trials are shown. Both offer ``names``, ``directions``, ``reference`` and
    ``transform``, which is all :func:`hv_history` and :func:`hv_summary` use.

    Attributes:
        names: Objective names, in order.
        directions: ``"minimize"``/``"maximize"`` per objective.
        lower: Smallest value of each objective over the trials compared (original units).
        upper: Largest value of each objective (original units).
        reference: Reference point in normalized coordinates.
    """

    names: tuple[str, ...]
    directions: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    reference: tuple[float, ...]

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Normalize an ``(n, n_objectives)`` array in original units."""
        values = np.asarray(values, dtype=float).reshape(-1, len(self.names))
        lo, hi = np.array(self.lower), np.array(self.upper)
        span = np.where(hi > lo, hi - lo, 1.0)
        out = (values - lo) / span
        flip = np.array([d == "maximize" for d in self.directions])
        out[:, flip] = ((hi - values) / span)[:, flip]
        return out

    def records(self) -> list[dict[str, object]]:
        """One dict per objective: name, direction, lower, upper, reference."""
        return [
            {"objective": n, "direction": d, "lower": lo, "upper": hi, "reference": r}
            for n, d, lo, hi, r in zip(
                self.names, self.directions, self.lower, self.upper, self.reference
            )
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


def fit_normalization(
    ranked: pd.DataFrame,
    objectives: Sequence[Objective],
    reference: float | Sequence[float] | None = None,
) -> Normalization:
    """Bounds of each objective over the ranked trials of all runs compared.

    Args:
        ranked: Output of :func:`rank_trials` over the union of the runs.
        objectives: The objectives with directions.
        reference: Normalized reference point: one value for all objectives or one per
            objective; 1.1 in each coordinate if omitted.

    Returns:
        The normalization (bounds NaN when there is no rankable trial).

    Raises:
        ValueError: If the reference has the wrong length or is not above 0.
    """
    n = len(objectives)
    if reference is None:
        ref = (DEFAULT_REFERENCE,) * n
    elif np.ndim(reference) == 0:
        ref = (float(reference),) * n  # type: ignore[arg-type]
    else:
        ref = tuple(float(r) for r in reference)  # type: ignore[union-attr]
        if len(ref) == 1:
            ref = ref * n
    if len(ref) != n:
        raise ValueError(
            f"reference point has {len(ref)} values for {n} objectives "
            f"({', '.join(o.name for o in objectives)}); give one value or one per objective"
        )
    if any(not np.isfinite(r) or r <= 0 for r in ref):
        raise ValueError(f"reference point {ref} must be finite and above 0 (normalized units)")
    vals = _objective_frame(ranked, objectives)
    lower = tuple(np.min(vals, axis=0).tolist()) if len(vals) else (np.nan,) * n
    upper = tuple(np.max(vals, axis=0).tolist()) if len(vals) else (np.nan,) * n
    return Normalization(
        names=tuple(o.name for o in objectives),
        directions=tuple(o.direction for o in objectives),
        lower=lower,
        upper=upper,
        reference=ref,
    )


def _elapsed_seconds(group: pd.DataFrame) -> pd.Series:
    """Seconds from the run's first trial start to each trial's end (NaN when unknown)."""
    start = pd.to_datetime(group.get("started_at"), utc=True, errors="coerce", format="ISO8601")
    end = pd.to_datetime(group.get("finished_at"), utc=True, errors="coerce", format="ISO8601")
    if start is not None and end is not None and end.notna().any():
        t0 = start.min() if start.notna().any() else end.min()
        return (end - t0).dt.total_seconds()
    if group["trial_seconds"].notna().any():  # sequential runs: cumulative time
        order = group["trial"].argsort(kind="stable")
        cum = group["trial_seconds"].fillna(0.0).iloc[order].cumsum()
        return cum.reindex(group.index)
    return pd.Series(np.nan, index=group.index)


Scale = Normalization | HypervolumeDefinition


def _scaled(group: pd.DataFrame, ranked: pd.DataFrame, scale: Scale) -> np.ndarray:
    """The group's rows in the scale's minimized coordinates; NaN for rows that are not ranked."""
    names = list(scale.names)
    vals = np.full((len(group), len(names)), np.nan)
    counted = group.index.isin(ranked.index)
    if counted.any() and names:
        vals[counted] = scale.transform(group.loc[counted, names].to_numpy(dtype=float))
    return vals


def hv_history(df: pd.DataFrame, ranked: pd.DataFrame, norm: Scale) -> pd.DataFrame:
    """Hypervolume of each run's front as trials finish, over trials and over wall-clock time.

    Args:
        df: All trials of all runs (``run_label`` column).
        ranked: Output of :func:`rank_trials` (rows that count for the front).
        norm: The hypervolume definition (or a post-hoc :class:`Normalization`).

    Returns:
        Long table with ``run_label``, ``sampler``, ``axis`` (``"trial"`` or ``"time"``), ``x``
        (trial number, or elapsed seconds) and ``hypervolume``, one row per trial and axis;
        non-decreasing within each run and axis.
    """
    rows = []
    ref = np.array(norm.reference)
    for label, group in df.groupby("run_label", sort=False):
        if not len(norm.names):
            continue
        vals = _scaled(group, ranked, norm)
        sampler = str(group["sampler"].iloc[0])
        by_trial = np.argsort(group["trial"].to_numpy(), kind="stable")
        hv = hypervolume_history(vals[by_trial], ref)
        trials = group["trial"].to_numpy()[by_trial]
        rows += [(label, sampler, "trial", float(t), h) for t, h in zip(trials, hv)]
        elapsed = _elapsed_seconds(group).to_numpy(dtype=float)
        if np.isfinite(elapsed).any():
            order = np.argsort(np.where(np.isfinite(elapsed), elapsed, np.inf), kind="stable")
            order = order[np.isfinite(elapsed[order])]
            hv = hypervolume_history(vals[order], ref)
            rows += [(label, sampler, "time", float(e), h) for e, h in zip(elapsed[order], hv)]
    return pd.DataFrame(rows, columns=["run_label", "sampler", "axis", "x", "hypervolume"])


def _run_hv(mine: pd.DataFrame, scale: Scale) -> float:
    if not len(scale.names):
        return float("nan")
    if not len(mine):
        return 0.0
    pts = scale.transform(mine[list(scale.names)].to_numpy(dtype=float))
    return hypervolume(pts, np.array(scale.reference))


def hv_summary(
    df: pd.DataFrame,
    ranked: pd.DataFrame,
    norm: Scale,
    own: dict[str, HypervolumeDefinition] | None = None,
    objectives: Sequence[Objective] | None = None,
) -> pd.DataFrame:
    """Per run: trial counts, front size and final hypervolume.

    Args:
        df: All trials of all runs.
        ranked: Output of :func:`rank_trials`.
        norm: The definition the runs are compared under.
        own: Each run's own definition by label; where one differs from ``norm`` the table adds
            ``hv_own`` (the value under the run's own definition) and ``definition`` (its id).
        objectives: All objectives (for the front size); those of ``norm`` if omitted.

    Returns:
        One row per run: ``run_label``, ``sampler``, ``seed``, ``trials``, ``complete``,
        ``front_size`` (the run's own front) and ``hypervolume``.
    """
    rows = []
    own = own or {}
    if objectives is not None:
        names, dirs = [o.name for o in objectives], [o.direction for o in objectives]
    else:
        names, dirs = list(norm.names), list(norm.directions)
    differs = any(
        isinstance(norm, HypervolumeDefinition) and not d.same_as(norm) for d in own.values()
    )
    for label, group in df.groupby("run_label", sort=False):
        mine = ranked[ranked["run_label"] == label]
        own_front = (
            int((non_dominated_sort(mine[names].to_numpy(dtype=float), dirs) == 0).sum())
            if len(mine) and names
            else 0
        )
        row = {
            "run_label": label,
            "sampler": str(group["sampler"].iloc[0]),
            "seed": group["seed"].iloc[0],
            "trials": len(group),
            "complete": int((group["status"] == "complete").sum()),
            "front_size": own_front,
            "hypervolume": _run_hv(mine, norm),
        }
        if differs and label in own:
            row["hv_own"] = _run_hv(mine, own[label])
            row["definition"] = own[label].id
        rows.append(row)
    return pd.DataFrame(rows)


def attainment_groups(runs_config: dict[str, dict], min_runs: int = 2) -> dict[str, list[str]]:
    """Runs that are seeds of one configuration: same sampler, space and options but the seed.

    Args:
        runs_config: ``run.yaml`` contents by run label.
        min_runs: Smallest group returned.

    Returns:
        ``{group label: [run labels]}`` for each configuration with at least ``min_runs`` runs;
        the group label names the sampler and the number of seeds.
    """
    ignored = {
        "seed", "out", "study_name", "storage", "progress", "address", "executor",
        "max_concurrent", "cpus_per_trial", "gpus_per_trial", "n_trials", "time_budget",
    }  # fmt: skip
    groups: dict[str, list[str]] = {}
    samplers: dict[str, str] = {}
    for label, cfg in runs_config.items():
        options = {k: v for k, v in (cfg.get("options") or {}).items() if k not in ignored}
        key = json.dumps(
            [cfg.get("sampler"), cfg.get("space"), cfg.get("objectives"), options],
            sort_keys=True,
            default=str,
        )
        groups.setdefault(key, []).append(label)
        samplers[key] = str(cfg.get("sampler") or "unknown")
    out = {}
    for key, labels in groups.items():
        if len(labels) >= min_runs:
            name = f"{samplers[key]} ({len(labels)} seeds)"
            while name in out:
                name += "'"
            out[name] = labels
    return out


def sampler_summary(per_run: pd.DataFrame) -> pd.DataFrame:
    """Hypervolume mean, standard deviation (ddof 1), min and max per sampler across runs.

    Args:
        per_run: Output of :func:`hv_summary`.

    Returns:
        One row per sampler: ``sampler``, ``runs``, ``hv_mean``, ``hv_std`` (NaN for one run),
        ``hv_min``, ``hv_max``.
    """
    grouped = per_run.groupby("sampler", sort=True)["hypervolume"]
    out = grouped.agg(runs="count", hv_mean="mean", hv_std="std", hv_min="min", hv_max="max")
    return out.reset_index().sort_values("hv_mean", ascending=False, ignore_index=True)


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
        only in numbers are grouped, the first one shown), ``count`` and ``trials`` (up to 8
        ``run#trial`` ids), failed first, then infeasible, pruned, others.
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
        rows.append({"status": st, "reason": why, "count": len(g), "trials": listed})
    out = pd.DataFrame(rows)
    out["_o"] = out["status"].map(order).fillna(3)
    out = out.sort_values(["_o", "count"], ascending=[True, False], kind="stable")
    return out.drop(columns="_o").reset_index(drop=True)


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
