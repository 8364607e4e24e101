"""A run's final latency figures, its own reference models, and one runtime per report.

* ``final.json`` (written at the end of a search, :mod:`fcasearch.search.final`): the Pareto set
  and the reference models re-measured together in interleaved rounds. The report shows these
  figures for the trials they cover (``latency_ms`` and its p90, CV and stability become the
  final ones; ``latency_ms_search`` keeps the in-search median, and each replaced column keeps
  its in-search value in ``<column>_search``; ``latency_source`` says which is shown) and states
  how much the ranking moved: the Kendall tau between in-search and final latencies. Which
  trials form the front, and the hypervolumes, come from the in-search figures
  (:func:`search_figures`): only the Pareto set was measured again, so ranking its final figures
  against the other trials' in-search ones would let a slower final round put trials the search
  had dominated back on the front (the report's front then disagreed with the run's own
  ``pareto.csv``: 7 models against 3 in a quickstart run).
* ``references.csv``: the run's reference models, measured on the run's runtime and settings;
  their latency markers take the final figure where there is one.
* Latency measured on different runtimes is never compared silently:
  :func:`check_runtimes` raises :class:`MixedRuntimeError` when the runs (or the trials of one
  run) name more than one runtime and an objective depends on it. A runtime at another batch
  size, dtype, thread count or with CUDA graphs counts as another runtime.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from fcasearch.metrics import latency_label, settings_text
from fcasearch.report.info import RunData

__all__ = [
    "RUNTIME_METRICS",
    "MixedRuntimeError",
    "apply_final",
    "check_runtimes",
    "final_sentence",
    "measured_threads",
    "run_references",
    "runtime_label",
    "search_figures",
]

# objectives whose values depend on the runtime that ran the model
RUNTIME_METRICS = ("latency_ms", "latency_p90_ms", "latency_cv", "throughput_ips", "peak_mem_mb")
# the columns a final re-measurement replaces; each keeps its in-search value in <column>_search
FINAL_COLUMNS = ("latency_ms", "latency_p90_ms", "latency_cv", "latency_stable", "throughput_ips")


class MixedRuntimeError(ValueError):
    """Runtime-dependent objectives were measured on more than one runtime."""

    def __init__(self, runtimes: dict[str, list[str]], objectives: Sequence[str]) -> None:
        self.runtimes = dict(runtimes)
        listed = "; ".join(f"{rt} ({', '.join(labels)})" for rt, labels in sorted(runtimes.items()))
        super().__init__(
            f"the runs mix {len(runtimes)} runtimes: {listed}. Objectives "
            f"{', '.join(objectives)} depend on the runtime (eager, onnxruntime, ... time the "
            "same model differently) and on its settings (batch size, dtype, threads), so their "
            "values are not comparable. Report each runtime's runs separately, re-run the search "
            "with one --runtime and the same --latency-batch-size, --latency-dtype and "
            "--threads, or pass --allow-mixed-runtimes to compare them anyway"
        )


def runtime_label(runtime: str, options: str = "") -> str:
    """A runtime as reports tell runtimes apart: its name, and its options where a run set any
    (``eager (pointwise_conv=False)``); the text of :func:`fcasearch.runtime.runtime_label`,
    built here from ``run.yaml``'s already formatted options without importing torch."""
    return f"{runtime} ({options})" if options else runtime


def _measured(df: pd.DataFrame) -> pd.Series:
    """The trial rows with a latency (all rows of a run that records none)."""
    return df["latency_ms"].notna() if "latency_ms" in df else pd.Series(True, df.index)


def measured_threads(run: RunData) -> list[int]:
    """The CPU thread counts of a run's measured trial rows, sorted (none recorded: ``[]``)."""
    df = run.trials
    if "threads" not in df:
        return []
    values = pd.to_numeric(df.loc[_measured(df), "threads"], errors="coerce").dropna()
    return sorted({int(t) for t in values})


def _settings(run: RunData) -> list[str]:
    """The measurement settings latency also depends on, as one text per thread count found
    (``batch 1, fp32, 2 threads``): batch size, dtype and CUDA graph from ``run.yaml``'s options,
    threads from the measured trial rows. A run from before they were recorded gives ``[""]``."""
    opts = run.config.get("options") or {}
    batch = opts.get("latency_batch_size")
    dtype = str(opts["latency_dtype"]) if opts.get("latency_dtype") else None
    graph = bool(opts.get("latency_cuda_graph"))
    return [settings_text(batch, dtype, t, graph) for t in measured_threads(run) or [None]]


def _run_runtimes(run: RunData) -> set[str]:
    """The runtimes of a run's latency, each with the settings it was measured at: the same
    runtime at another batch size, dtype or thread count is another runtime here."""
    options = str(run.config.get("runtime_options") or "")  # one set for all of a run's trials
    df = run.trials
    names = set()
    if run.config.get("runtime"):
        names.add(str(run.config["runtime"]))
    if "runtime" in df:
        names |= {v for v in df.loc[_measured(df), "runtime"].dropna().astype(str) if v}
    settings = _settings(run)
    return {latency_label(runtime_label(name, options), at) for name in names for at in settings}


def check_runtimes(
    runs: Sequence[RunData], allow_mixed: bool = False
) -> tuple[dict[str, list[str]], list[str]]:
    """Refuse to compare runtime-dependent objectives measured on different runtimes.

    Runtimes are read from each run's ``run.yaml`` (``runtime``, with ``runtime_options`` where
    the run set any: the same runtime with other options is another runtime here) and its
    measured trial rows (``runtime``); a run from before runtimes were recorded names none.

    Returns:
        runtime -> labels of the runs that used it, and notes for the report.

    Raises:
        MixedRuntimeError: more than one runtime, a runtime-dependent objective, and
            ``allow_mixed`` False.
    """
    where: dict[str, list[str]] = {}
    for run in runs:
        for rt in sorted(_run_runtimes(run)):
            where.setdefault(rt, []).append(run.label)
    notes: list[str] = []
    if len(where) <= 1:
        return where, notes
    dependent = [o.name for o in runs[0].objectives if o.name in RUNTIME_METRICS]
    listed = ", ".join(f"{rt} ({', '.join(labels)})" for rt, labels in sorted(where.items()))
    if dependent and not allow_mixed:
        raise MixedRuntimeError(where, dependent)
    if dependent:
        notes.append(
            f"Mixed runtimes allowed by the user: objectives {', '.join(dependent)} were measured "
            f"on {listed}; the front compares values from different runtimes."
        )
    else:
        notes.append(
            f"Trials were measured on {len(where)} runtimes ({listed}); no objective depends on "
            "it, but latency columns do: compare them within one runtime only."
        )
    return where, notes


def _load_final(run: RunData) -> dict[str, Any] | None:
    path = run.path / "final.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        run.notes.append(f"run {run.label!r}: {path} is unreadable ({exc}); in-search figures used")
        return None
    return data if isinstance(data, dict) and isinstance(data.get("models"), list) else None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def apply_final(run: RunData) -> dict[str, Any] | None:
    """Put the final figures of ``final.json`` into ``run.trials`` (module docstring); the
    file's content, or None when the run has none."""
    final = _load_final(run)
    df = run.trials
    df["latency_ms_search"] = df.get("latency_ms", np.nan)
    for col in FINAL_COLUMNS[1:]:
        if col in df:
            df[f"{col}_search"] = df[col]
    df["latency_source"] = "search"
    run.final = final
    if final is None:
        return None
    by_trial = {
        int(t): m
        for m in final["models"]
        if m.get("kind") == "candidate" and m.get("status") == "ok" and m.get("trial") is not None
        for t in m.get("trials") or [m["trial"]]  # every trial of a repeated architecture
    }
    for idx, trial in df["trial"].items():
        m = by_trial.get(int(trial)) if pd.notna(trial) else None
        if m is None or not _finite(m.get("final_latency_ms")):
            continue
        before = df.at[idx, "latency_ms"]
        df.at[idx, "latency_ms"] = float(m["final_latency_ms"])
        for col in ("latency_p90_ms", "latency_cv"):
            if _finite(m.get(f"final_{col}")) and col in df:
                df.at[idx, col] = float(m[f"final_{col}"])
        if "latency_stable" in df and m.get("final_latency_stable") is not None:
            df.at[idx, "latency_stable"] = bool(m["final_latency_stable"])
        if "throughput_ips" in df and _finite(before) and before > 0:
            df.at[idx, "throughput_ips"] = (
                df.at[idx, "throughput_ips"] * before / m["final_latency_ms"]
            )
        df.at[idx, "latency_source"] = "final"
    return final


def search_figures(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (trials after :func:`apply_final`) with the in-search values back in every column
    a final re-measurement replaced: the figures every trial was measured with, which rank the
    trials and give the hypervolumes (module docstring). ``df`` itself is not changed."""
    out = df.copy()
    for col in FINAL_COLUMNS:
        if col in out and f"{col}_search" in out:
            out[col] = out[f"{col}_search"]
    return out


def final_sentence(run: RunData, final: dict[str, Any]) -> str:
    """What the final re-measurement did and how much the ranking moved, in one sentence."""
    models = final.get("models", [])
    cands = sum(1 for m in models if m.get("kind") == "candidate")
    refs = len(models) - cands
    unstable = sum(1 for m in models if m.get("final_latency_stable") is False)
    tau = final.get("kendall_tau")
    moved = (
        f"Kendall τ between in-search and final latencies {tau:.2f} over "
        f"{final.get('kendall_pairs', 0)} models (1: the ranking did not move)"
        if _finite(tau)
        else "Kendall τ undefined (fewer than two models measured both times)"
    )
    front_tau = final.get("kendall_tau_pareto")
    if _finite(front_tau):
        moved += f", {front_tau:.2f} over the {final.get('kendall_pairs_pareto', 0)} Pareto models"
    return (
        f"Latency of the Pareto set{' and the reference models' if refs else ''} "
        f"({cands} + {refs} models) is the final re-measurement of run {run.label!r}: "
        f"{final.get('rounds', '?')} interleaved rounds on {final.get('runtime', '?')}"
        f"{f', {unstable} still unstable' if unstable else ''}; {moved}. The front and the "
        "hypervolumes come from the in-search figures, which every trial has."
    )


def run_references(
    run: RunData, final: dict[str, Any] | None, name_run: bool = False
) -> pd.DataFrame:
    """The run's own reference models (``references.csv``), with the final latency where the
    final re-measurement has one; columns of :data:`fcasearch.report.references.REFERENCE_COLUMNS`.
    ``name_run``: the labels name the run (a report of several runs draws one run's markers)."""
    from fcasearch.report.references import REFERENCE_COLUMNS

    path = run.path / "references.csv"
    if not path.exists():
        return pd.DataFrame(columns=REFERENCE_COLUMNS)
    try:
        refs = pd.read_csv(path)
    except pd.errors.EmptyDataError:  # an empty file: the run measured no reference model
        return pd.DataFrame(columns=REFERENCE_COLUMNS)
    if "model" not in refs:
        return pd.DataFrame(columns=REFERENCE_COLUMNS)
    finals = {
        m.get("model"): m for m in (final or {}).get("models", []) if m.get("kind") == "reference"
    }
    rows = []
    runtime = run.config.get("runtime", "")
    which = f"measured with run {run.label}" if name_run else "measured with the run"
    for _, r in refs.iterrows():
        name = str(r["model"])
        ok = r.get("status", "ok") == "ok"  # a failed or unsupported model has no figure
        latency = r.get("latency_ms", np.nan) if ok else np.nan
        m = finals.get(name)
        if m is not None and _finite(m.get("final_latency_ms")):
            latency = float(m["final_latency_ms"])
        rows.append(
            {
                "model": name,
                "kind": "paper" if name.startswith("fcaformer") else "baseline",
                "label": f"{name} ({runtime}, {which})" if runtime else name,
                "params": r.get("params", np.nan),
                "macs": r.get("macs", np.nan),
                "latency_ms": latency,
                "peak_mem_mb": r.get("peak_mem_mb", np.nan) if ok else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=REFERENCE_COLUMNS)
