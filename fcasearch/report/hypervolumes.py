"""Hypervolume tables of a report: each run's history and final value, per-sampler summaries,
and which runs are seeds of one configuration.

Values are measured under a :class:`~fcasearch.pareto.HypervolumeDefinition` (fixed per run);
:class:`Normalization` is a post-hoc scale fitted over finished trials, kept for benches that
compare finished runs. Both offer ``names``, ``directions``, ``reference`` and ``transform``.
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
    non_dominated_sort,
)
from fcasearch.report.info import Objective

__all__ = [
    "Normalization",
    "attainment_groups",
    "fit_normalization",
    "hv_history",
    "hv_summary",
    "sampler_summary",
]

DEFAULT_REFERENCE = 1.1


def _objective_frame(df: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    return df[[o.name for o in objectives]].to_numpy(dtype=float)


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
        ``front_size_in_search`` (the run's own front: non-dominated among its own trials on the
        figures given, the in-search ones in a report, which its hypervolume measures; a
        report's Pareto set may differ, see :func:`fcasearch.report.caveats.front_size_note`)
        and ``hypervolume``.
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
            "front_size_in_search": own_front,
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
