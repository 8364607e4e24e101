"""Loading results directories into DataFrames.

A results directory (``results/<run>/``, see ``results/README.md``) holds ``run.yaml`` (the
objectives and the run's options) and ``trials.parquet`` / ``trials.csv`` (one row per trial).
This module reads them, types the columns, and combines several runs into one table. It never
drops a trial: statuses other than ``complete`` are kept for the report to count and list.
The hardware-fingerprint check lives in :mod:`fcasearch.report.hardware` (its names are
re-exported here).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fcasearch.metrics import HARDWARE_METRICS, METRICS, Objective
from fcasearch.pareto import (
    HypervolumeDefinition,
    HypervolumeError,
    ObjectiveBound,
    define_hypervolume,
)
from fcasearch.report.hardware import MixedHardwareError, check_hardware, describe_fingerprint
from fcasearch.report.stability import unstable_rows

__all__ = [
    "HARDWARE_METRICS",
    "METRIC_COLUMNS",
    "MixedHardwareError",
    "NoTrialsError",
    "Objective",
    "RunData",
    "check_hardware",
    "combine_runs",
    "describe_fingerprint",
    "load_run",
    "load_runs",
    "run_definition",
]

# every numeric metric a trial may carry, in the order tables show them
METRIC_COLUMNS = (*METRICS, "epochs")
_NUMERIC_EXTRA = ("trial", "train_seconds", "measure_seconds", "trial_seconds")
_MAXIMIZED_BY_DEFAULT = ("accuracy", "throughput_ips")


@dataclass
class RunData:
    """One results directory, loaded.

    Attributes:
        path: The results directory.
        name: The run's name (``run.yaml`` ``name``, else the directory name).
        label: A name unique among the runs being compared (used in tables and legends).
        config: ``run.yaml`` as loaded.
        trials: One row per trial, typed (numeric metrics, lower-case status, str reason).
        objectives: The objectives in Optuna's order.
        sampler: ``run.yaml`` ``sampler`` (``"unknown"`` if absent).
        seed: ``run.yaml`` ``seed`` if given.
        fingerprint_id: ``run.yaml`` ``fingerprint_id`` if given.
        fingerprint: ``run.yaml`` ``fingerprint`` if given.
        notes: Things the report should mention about this run.
        hypervolume: The run's hypervolume definition (stored in ``run.yaml``, or derived for
            an older run: its ``note`` says so).
        warnings: One-line problems met while loading (a corrupt ``trials.parquet``, ...), also
            among ``notes``.
        final: The run's final re-measurement (``final.json``) once the report applied it.
    """

    path: Path
    name: str
    label: str
    config: dict[str, Any]
    trials: pd.DataFrame
    objectives: tuple[Objective, ...]
    sampler: str = "unknown"
    seed: int | None = None
    fingerprint_id: str | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    hypervolume: HypervolumeDefinition | None = None
    warnings: list[str] = field(default_factory=list)
    final: dict[str, Any] | None = None  # final.json, once applied (fcasearch.report.final)

    @property
    def device(self) -> str:
        dev = self.config.get("device")
        if not dev and "device" in self.trials and self.trials["device"].notna().any():
            dev = str(self.trials["device"].dropna().iloc[0])
        return str(dev or "cpu")


def _parse_objectives(raw: Any, source: Path) -> tuple[Objective, ...]:
    if not raw:
        raise ValueError(f"{source}: key 'objectives' is missing or empty; a run needs objectives")
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            name, _, direction = item.partition(":")
            direction = direction or ("maximize" if name in _MAXIMIZED_BY_DEFAULT else "minimize")
        elif isinstance(item, dict) and "name" in item:
            name = str(item["name"])
            direction = str(item.get("direction", "minimize"))
        else:
            raise ValueError(
                f"{source}: objectives[{i}] = {item!r}; expected {{name: ..., direction: ...}}"
            )
        direction = direction.strip().lower()
        if direction not in ("minimize", "maximize"):
            raise ValueError(
                f"{source}: objectives[{i}].direction = {direction!r}; use minimize or maximize"
            )
        out.append(Objective(name.strip(), direction))
    names = [o.name for o in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{source}: objectives repeat a name: {names}")
    return tuple(out)


def _read_trials(path: Path) -> tuple[pd.DataFrame, str]:
    """The run's trials and, when ``trials.parquet`` could not be read, one line saying so.

    ``trials.jsonl`` (the fsynced journal every export is rebuilt from) stands in for an
    unreadable ``trials.parquet``; ``trials.csv`` for a run that has neither.
    """
    parquet, csv = path / "trials.parquet", path / "trials.csv"
    journal = path / "trials.jsonl"
    if parquet.exists():
        try:
            return pd.read_parquet(parquet), ""
        except Exception as exc:  # pyarrow raises several types for a damaged file
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if journal.exists():
                from fcasearch.storage.records import RunDir, TrialLog

                return TrialLog(RunDir(path)).frame(), (
                    f"{parquet} is unreadable ({why}); the report was built from "
                    f"{journal.name}, the run's journal"
                )
            if csv.exists():
                return pd.read_csv(csv, keep_default_na=True), (
                    f"{parquet} is unreadable ({why}) and there is no {journal.name}; the report "
                    f"was built from {csv.name}"
                )
            raise ValueError(
                f"{parquet} is unreadable ({why}) and the run has no {journal.name} or "
                f"{csv.name} to build the report from"
            ) from None
    if csv.exists():
        return pd.read_csv(csv, keep_default_na=True), ""
    if journal.exists():
        from fcasearch.storage.records import RunDir, TrialLog

        return TrialLog(RunDir(path)).frame(), ""
    raise NoTrialsError(path)


class NoTrialsError(FileNotFoundError):
    """A run (``run.yaml`` written) with no finished trial yet: killed or stopped before its
    first trial ended, or still running its first one."""

    def __init__(self, path: Path, warning: str = "") -> None:
        self.path = path
        present = [n for n in ("run.yaml", "study.db") if (path / n).exists()]
        journal = path / "trials.jsonl"
        if journal.exists():
            empty = journal.stat().st_size == 0
            present.append(f"{journal.name} ({'empty' if empty else 'no complete line'})")
        for name in ("trials.parquet", "trials.csv"):
            if (path / name).exists():
                present.append(name if warning else f"{name} (no rows)")
        super().__init__(
            f"{path}: the run has no finished trial yet ({', '.join(present)}): it stopped, or "
            "is still running, before its first trial ended. `python search.py --resume "
            f"{path}` continues it; report it once a trial has finished"
            + (f" ({warning})" if warning else "")
        )


_DERIVED = (
    "derived when reporting: run.yaml stores no hypervolume definition (a run from before "
    "definitions were stored)"
)


def run_definition(
    config: dict[str, Any], objectives: Sequence[Objective], trials: pd.DataFrame, source: str
) -> HypervolumeDefinition:
    """The run's hypervolume definition: ``run.yaml``'s ``hypervolume``, or derived.

    A run written before definitions were stored gets one by the same rules a new run gets
    (:func:`fcasearch.pareto.define_hypervolume`: its options' ``hv_reference``, accuracy in
    [0, 1], its space's constraints and closed-form maxima); an objective still without a
    reference then takes the worst value any of the run's trials recorded (the run is finished,
    so that too is fixed; unstable latency values are not counted). The definition's ``note`` says it was derived.

    Args:
        config: ``run.yaml`` as loaded.
        objectives: The run's objectives.
        trials: The run's trials (for the last rule).
        source: ``run.yaml``'s path, for messages.

    Raises:
        HypervolumeError: A stored definition that cannot be read.
    """
    stored = config.get("hypervolume")
    if stored:
        definition = HypervolumeDefinition.from_dict(stored, source=f"{source}: hypervolume")
        if [o.name for o in definition.objectives] != [o.name for o in objectives]:
            raise HypervolumeError(
                f"{source}: hypervolume names objectives "
                f"{[o.name for o in definition.objectives]}, the run has {[o.name for o in objectives]}"
            )
        return definition
    pairs = [(o.name, o.direction) for o in objectives]
    given = (config.get("options") or {}).get("hv_reference") or None
    try:
        from fcasearch.space import load_space
        from fcasearch.space.bounds import space_hypervolume

        space = load_space(config["space"], source=f"{source} (space)")
        derived = space_hypervolume(
            space, pairs, given, given_source="run.yaml options.hv_reference", note=_DERIVED
        )
    except (KeyError, TypeError, ValueError):  # no space, or one that no longer loads
        derived = define_hypervolume(pairs, note=_DERIVED + "; its space could not be loaded")
    bounds = []
    for b in derived.objectives:
        col = pd.Series(dtype=float)
        if b.name in trials:  # an unstable latency value sets nothing
            col = trials.loc[~unstable_rows(trials, b.name), b.name]
        seen = pd.to_numeric(col, errors="coerce").astype(float)
        seen = seen[np.isfinite(seen)]
        if b.included or b.best is None or not len(seen):
            bounds.append(b)
            continue
        worst = float(seen.max() if b.direction == "minimize" else seen.min())
        if (worst > b.best) if b.direction == "minimize" else (worst < b.best):
            b = ObjectiveBound(
                b.name, b.direction, b.best, worst, "worst value in the run's trials"
            )
        bounds.append(b)
    return HypervolumeDefinition(tuple(bounds), note=derived.note)


def _type_trials(df: pd.DataFrame, objectives: Iterable[Objective], run_name: str) -> pd.DataFrame:
    df = df.copy()
    if "status" not in df:
        raise ValueError(f"run {run_name!r}: trials have no 'status' column")
    df["status"] = df["status"].astype("string").fillna("unknown").str.strip().str.lower()
    df["reason"] = (
        df["reason"].astype("string").fillna("")
        if "reason" in df
        else pd.Series("", index=df.index)
    )
    if "trial" not in df:
        df["trial"] = np.arange(len(df))
    numeric = [*METRIC_COLUMNS, *_NUMERIC_EXTRA, *(o.name for o in objectives)]
    numeric += [c for c in df.columns if str(c).startswith("proxy.")]
    for col in dict.fromkeys(numeric):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
        else:
            df[col] = np.nan
    for col in ("arch_id", "spec", "spec_short", "fingerprint_id", "fingerprint"):
        if col not in df:
            df[col] = pd.NA
        df[col] = df[col].astype("string")
    df["latency_stable"] = _stable_flags(df)
    return df


def _stable_flags(df: pd.DataFrame) -> pd.Series:
    """``latency_stable`` as plain bools: only an explicit False (or "false") is unstable; a
    missing column or value counts as stable (nothing says otherwise)."""
    if "latency_stable" not in df:
        return pd.Series(True, index=df.index, dtype=bool)

    def unstable(v: Any) -> bool:
        if isinstance(v, str):
            return v.strip().lower() in ("false", "0", "no")
        return (
            v is not None
            and v is not pd.NA
            and not (isinstance(v, float) and np.isnan(v))
            and not bool(v)
        )

    return ~df["latency_stable"].astype("object").map(unstable).astype(bool)


def _unique_labels(names: list[str], paths: list[Path]) -> list[str]:
    labels = list(names)
    for i, name in enumerate(names):
        if names.count(name) > 1:
            labels[i] = f"{name} [{paths[i].name}]"
    for i, label in enumerate(labels):  # still equal (same dir names): number them
        if labels.count(label) > 1:
            labels[i] = f"{label} #{i + 1}"
    return labels


def load_run(path: str | Path, label: str | None = None) -> RunData:
    """Load one results directory.

    Args:
        path: A directory holding ``run.yaml`` and ``trials.parquet`` or ``trials.csv``.
        label: Display name; the run's name if omitted.

    Returns:
        The run, with typed trials.

    Raises:
        FileNotFoundError: If the directory or ``run.yaml`` is missing;
            :class:`NoTrialsError` if the run has no finished trial yet.
        ValueError: If ``run.yaml`` has no valid objectives.
    """
    import yaml  # light, but only needed here

    from fcasearch.targets import path_is

    path = Path(path)
    if not path_is(path, "is_dir"):  # also a name no path can have (too long, ...)
        if path_is(path, "exists"):
            raise FileNotFoundError(
                f"{path} is not a directory: give a results directory (results/<run>, holding "
                "run.yaml and trials.parquet or trials.csv)"
            )
        raise FileNotFoundError(f"results directory {path} does not exist")
    run_yaml = path / "run.yaml"
    if not run_yaml.exists():
        raise FileNotFoundError(f"{path}: no run.yaml; is this a results directory?")
    config = yaml.safe_load(run_yaml.read_text()) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{run_yaml}: expected a mapping at the top level")
    objectives = _parse_objectives(config.get("objectives"), run_yaml)
    name = str(config.get("name") or path.name)
    run = RunData(
        path=path,
        name=name,
        label=label or name,
        config=config,
        trials=pd.DataFrame(),
        objectives=objectives,
        sampler=str(config.get("sampler") or "unknown"),
        seed=config.get("seed"),
        fingerprint_id=str(config["fingerprint_id"]) if config.get("fingerprint_id") else None,
        fingerprint=config.get("fingerprint") or {},
    )
    raw, warning = _read_trials(path)
    if not len(raw):  # an empty journal, a torn first line, or tables exported before a trial
        raise NoTrialsError(path, warning)
    if warning:
        run.warnings.append(warning)
        run.notes.append(warning)
    missing = [o.name for o in objectives if o.name not in raw.columns]
    if missing and len(raw):
        run.notes.append(
            f"run {name!r}: objective column(s) {missing} absent from the trials table"
        )
    run.trials = _type_trials(raw, objectives, name)
    run.hypervolume = run_definition(config, objectives, run.trials, str(run_yaml))
    if run.hypervolume.note:
        run.notes.append(f"run {name!r}: hypervolume definition {run.hypervolume.note}.")
    return run


def load_runs(paths: Sequence[str | Path]) -> list[RunData]:
    """Load several results directories and give them unique labels.

    Args:
        paths: Results directories, at least one.

    Returns:
        The runs, in the given order.

    Raises:
        ValueError: If no path is given or the runs do not share their objectives.
    """
    if not paths:
        raise ValueError("give at least one results directory")
    runs = [load_run(p) for p in paths]
    for run, label in zip(runs, _unique_labels([r.name for r in runs], [r.path for r in runs])):
        run.label = label
    first = runs[0]
    for run in runs[1:]:
        if {(o.name, o.direction) for o in run.objectives} != {
            (o.name, o.direction) for o in first.objectives
        }:
            raise ValueError(
                f"runs {first.label!r} and {run.label!r} have different objectives "
                f"({_fmt_obj(first.objectives)} vs {_fmt_obj(run.objectives)}); only runs that "
                "optimize the same objectives can share a Pareto front"
            )
    return runs


def _fmt_obj(objectives: Sequence[Objective]) -> str:
    return ", ".join(f"{o.direction} {o.name}" for o in objectives)


def combine_runs(runs: Sequence[RunData]) -> pd.DataFrame:
    """One table of all trials of all runs, with ``run_label``, ``sampler`` and ``seed`` columns.

    Args:
        runs: Loaded runs.

    Returns:
        The concatenated trials; ``uid`` is unique per row (``<run_label>#<trial>``).
    """
    frames = []
    for run in runs:
        df = run.trials.copy()
        df["run_label"] = run.label
        df["sampler"] = run.sampler
        df["seed"] = run.seed if run.seed is not None else np.nan
        if run.fingerprint_id:
            df["fingerprint_id"] = df["fingerprint_id"].fillna(run.fingerprint_id)
        frames.append(df)
    nonempty = [f for f in frames if len(f)]
    out = pd.concat(nonempty, ignore_index=True) if nonempty else frames[0].iloc[0:0].copy()
    out["uid"] = out["run_label"].astype(str) + "#" + out["trial"].map(_fmt_trial).astype(str)
    return out


def _fmt_trial(v: Any) -> str:
    return str(int(v)) if pd.notna(v) and float(v).is_integer() else str(v)
