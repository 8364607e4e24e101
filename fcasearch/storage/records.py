"""The results directory of one run: layout, the append-only trial log, and its exports.

Every finished trial is one JSON line in ``trials.jsonl``, appended and fsynced by the process
that decides the trial's fate (the search driver), so a run killed at any moment keeps every
completed trial. ``trials.parquet``, ``trials.csv`` and ``pareto.csv`` are rebuilt from that log
every 30 s while a search runs and when it ends; the column meanings are in ``results/README.md``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["TRIAL_COLUMNS", "RunDir", "TrialLog", "pareto_rows", "trial_frame"]


@dataclass(frozen=True)
class RunDir:
    """Paths of one run's results directory, and the names its ``run.yaml`` records."""

    root: Path

    @cached_property
    def recorded(self) -> dict[str, str]:
        """What the run's ``run.yaml`` records of its identity: ``name``, ``study_name`` and
        ``run_id``, those present; empty before the run writes the file (or when it cannot be
        read). Read once."""
        import yaml

        try:
            doc = yaml.safe_load(self.run_yaml.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return {}
        if not isinstance(doc, dict):
            return {}
        keys = ("name", "study_name", "run_id")
        return {k: str(doc[k]) for k in keys if isinstance(doc.get(k), str) and doc[k]}

    @property
    def name(self) -> str:
        """The run's name: the one ``run.yaml`` records, which the run keeps when its folder is
        moved, copied or renamed; the folder's name for a run that has not written it yet."""
        return self.recorded.get("name") or self.root.name

    @property
    def owner_id(self) -> str:
        """What marks this run's trials in a study other runs may share (the ``run_id`` user
        attribute): the ``run_id`` its run.yaml records, which a moved or renamed run keeps; the
        resolved folder path for a run written before that key (its trials carry only
        ``run_dir``)."""
        return self.recorded.get("run_id") or str(self.root.resolve())

    @property
    def run_yaml(self) -> Path:
        return self.root / "run.yaml"

    @property
    def study_db(self) -> Path:
        return self.root / "study.db"

    @property
    def trials_log(self) -> Path:
        return self.root / "trials.jsonl"

    @property
    def trials_parquet(self) -> Path:
        return self.root / "trials.parquet"

    @property
    def trials_csv(self) -> Path:
        return self.root / "trials.csv"

    @property
    def pareto_csv(self) -> Path:
        return self.root / "pareto.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def store_run_yaml(self, doc: dict[str, Any]) -> None:
        """Write ``run.yaml`` atomically (a temporary file, then a rename: a kill leaves the old
        file or the new one whole), and read it afresh the next time :attr:`recorded` is asked."""
        import yaml

        tmp = self.root / ".run.yaml.tmp"
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        tmp.replace(self.run_yaml)
        vars(self).pop("recorded", None)  # cached_property: its value lives in the instance dict

    def weights_file(self, arch_id: str) -> Path:
        """Where ``--save-weights`` keeps a trial's trained state_dict (``fcasearch export
        RUN_DIR:ARCH_ID`` reads it)."""
        return self.root / "weights" / f"{arch_id}.pt"

    @property
    def ray_dir(self) -> Path:
        return self.root / "ray"

    def storage_url(self) -> str:
        return f"sqlite:///{self.study_db.resolve()}"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _json_safe(value.item())
    return value


class TrialLog:
    """Append-only log of finished trials (one JSON object a line) with exports.

    Args:
        run: the run directory.
    """

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self._exported_at = time.monotonic()

    def append(self, row: dict[str, Any]) -> None:
        """Append one finished trial durably (write, flush, fsync)."""
        self.run.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps({k: _json_safe(v) for k, v in row.items()}, sort_keys=True)
        with open(self.run.trials_log, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def rows(self) -> list[dict[str, Any]]:
        """All logged rows; a torn last line (a kill mid-write) is skipped."""
        if not self.run.trials_log.exists():
            return []
        out = []
        with open(self.run.trials_log, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                for key, value in row.items():
                    if value is None:
                        row[key] = math.nan
                    elif value in ("inf", "-inf"):
                        row[key] = float(value)
                out.append(row)
        return out

    def frame(self) -> pd.DataFrame:
        """The log as a DataFrame sorted by trial number, in the one schema of every run
        (:data:`TRIAL_COLUMNS`, ``results/README.md``): every column present, NaN / NA where a
        value was not measured, counts as nullable integers."""
        return trial_frame(self.rows())

    def completed(self, budget: str) -> dict[str, dict[str, Any]]:
        """arch_id -> the first complete row trained at ``budget`` (for dedupe)."""
        out: dict[str, dict[str, Any]] = {}
        for row in self.rows():
            if row.get("status") == "complete" and row.get("budget") == budget:
                out.setdefault(row["arch_id"], row)
        return out

    def export_every(self, objectives: Sequence[tuple[str, str]], seconds: float = 30.0) -> None:
        """:meth:`export` when the last one is ``seconds`` old, so that the tables of a running
        (or killed) search stay close to its log without rewriting them after every trial."""
        if time.monotonic() - self._exported_at >= seconds:
            self.export(objectives)

    def export(self, objectives: Sequence[tuple[str, str]]) -> pd.DataFrame:
        """Rewrite trials.parquet, trials.csv and pareto.csv; returns the Pareto rows.

        pareto.csv gains ``hv_contribution``: each Pareto row's exclusive share of the run's
        hypervolume under the definition stored in run.yaml (absent for runs without one).
        """
        self._exported_at = time.monotonic()
        df = self.frame()
        tmp = self.run.root / ".trials.parquet.tmp"
        df.to_parquet(tmp, index=False)
        os.replace(tmp, self.run.trials_parquet)
        df.to_csv(self.run.trials_csv, index=False)
        front = pareto_rows(df, objectives)
        definition = _stored_hypervolume(self.run)
        if definition is not None and definition.names:
            values = front[list(definition.names)].to_numpy(dtype=float)
            front = front.assign(hv_contribution=definition.contributions(values))
        front.to_csv(self.run.pareto_csv, index=False)
        return front


def _stored_hypervolume(run: RunDir) -> Any:
    """The run's hypervolume definition from run.yaml, or None (older runs, unreadable file)."""
    import yaml

    from fcasearch.pareto import HypervolumeDefinition, HypervolumeError

    try:
        stored = (yaml.safe_load(run.run_yaml.read_text()) or {}).get("hypervolume")
        return HypervolumeDefinition.from_dict(stored) if stored else None
    except (OSError, yaml.YAMLError, AttributeError, HypervolumeError):
        return None


# The columns of trials.parquet / trials.csv, in order, with their kinds (results/README.md).
# int: nullable Int64; float: float64 (NaN when not measured); bool: nullable boolean; str: text
# ("" when absent); json: JSON text ("{}" when absent). proxy.* columns (the zero-cost proxies a
# run computed) and any column a newer writer adds follow, as logged.
TRIAL_COLUMNS: dict[str, str] = {
    "trial": "int",
    "run": "str",
    "status": "str",
    "reason": "str",
    "arch_id": "str",
    "spec": "str",
    "spec_short": "str",
    "arch.img_size": "str",
    "arch.conv_stages": "int",
    "arch.depths": "str",
    "arch.widths": "str",
    "arch.heads": "str",
    "arch.total_depth": "int",
    "arch.emitting_blocks": "int",
    "arch.cross_tokens": "int",
    "arch.merge_strides": "str",
    "arch.cross_windows": "str",
    "arch.tme": "str",
    "accuracy": "float",
    "params": "int",
    "macs": "int",
    "latency_ms": "float",
    "latency_p90_ms": "float",
    "latency_cv": "float",
    "latency_stable": "bool",
    "latency_attempts": "int",
    "throughput_ips": "float",
    "peak_mem_mb": "float",
    "train_mem_mb": "float",
    "energy_mj_per_image": "float",
    "weights_mb": "float",
    "epochs": "float",
    "rung": "int",
    "budget": "str",
    "train_seconds": "float",
    "measure_seconds": "float",
    "trial_seconds": "float",
    "started_at": "str",
    "finished_at": "str",
    "device": "str",
    "runtime": "str",
    "runtime_version": "str",
    "threads": "int",
    "ray_node": "str",
    "cuda_visible_devices": "str",
    "fingerprint_id": "str",
    "fingerprint": "json",
    "notes": "json",
}


def _typed(column: pd.Series, kind: str) -> pd.Series:
    if kind in ("str", "json"):
        text = column.astype("object").where(column.notna(), "{}" if kind == "json" else "")
        # plain Python str values: pandas' string dtype would turn a client's ``.map(json.loads)``
        # into Arrow structs
        return text.map(lambda v: v if isinstance(v, str) else str(v)).astype(object)
    if kind == "bool":

        def flag(v: Any) -> Any:
            if isinstance(v, str):
                return {"true": True, "false": False}.get(v.strip().lower(), pd.NA)
            return pd.NA if v is None or (isinstance(v, float) and math.isnan(v)) else bool(v)

        return column.astype("object").map(flag).astype("boolean")
    numbers = pd.to_numeric(column, errors="coerce").astype("float64")
    if kind == "float":
        return numbers
    whole = numbers.where(numbers.isna() | (numbers == numbers.round()))
    return whole.round().astype("Int64")  # a fractional value in an int column becomes NA


def trial_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Trial rows (``trials.jsonl`` lines) as a DataFrame in the schema of :data:`TRIAL_COLUMNS`.

    Every column of the schema is present whatever the run measured (an all-infeasible run too),
    with its kind; other columns (``proxy.*``, newer ones) follow in sorted order. Rows are
    sorted by trial number.

    Args:
        rows: Logged rows.

    Returns:
        The typed table.
    """
    raw = pd.DataFrame(list(rows))
    out = pd.DataFrame(index=raw.index)
    for col, kind in TRIAL_COLUMNS.items():
        source = (
            raw[col] if col in raw else pd.Series([None] * len(raw), index=raw.index, dtype=object)
        )
        out[col] = _typed(source, kind)
    for col in sorted(c for c in raw.columns if c not in TRIAL_COLUMNS):
        out[col] = (
            pd.to_numeric(raw[col], errors="coerce") if str(col).startswith("proxy.") else raw[col]
        )
    return out.sort_values("trial", kind="stable").reset_index(drop=True)


def pareto_rows(df: pd.DataFrame, objectives: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """Complete rows not dominated by another complete row under ``objectives``.

    Args:
        df: trial rows.
        objectives: (column, ``"maximize"`` or ``"minimize"``) pairs.
    """
    from fcasearch.pareto import pareto_mask

    objectives = list(objectives)
    if df.empty or "status" not in df:
        return df.iloc[0:0]
    names = [n for n, _ in objectives]
    done = df[(df["status"] == "complete")].dropna(subset=[n for n in names if n in df])
    if done.empty or any(n not in done for n in names):
        return done.iloc[0:0]
    signs = [-1.0 if d.startswith("max") else 1.0 for _, d in objectives]
    values = done[names].to_numpy(dtype=float) * signs
    return done[pareto_mask(values)].reset_index(drop=True)
