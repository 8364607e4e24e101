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
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["RunDir", "TrialLog", "pareto_rows"]


@dataclass(frozen=True)
class RunDir:
    """Paths of one run's results directory."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

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
        """The log as a DataFrame sorted by trial number (columns of ``results/README.md``)."""
        df = pd.DataFrame(self.rows())
        if df.empty:
            return df
        first = ["trial", "run", "status", "reason", "arch_id", "spec_short"]
        cols = [c for c in first if c in df] + sorted(c for c in df if c not in first)
        return df[cols].sort_values("trial", kind="stable").reset_index(drop=True)

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
        """Rewrite trials.parquet, trials.csv and pareto.csv; returns the Pareto rows."""
        self._exported_at = time.monotonic()
        df = self.frame()
        tmp = self.run.root / ".trials.parquet.tmp"
        df.to_parquet(tmp, index=False)
        os.replace(tmp, self.run.trials_parquet)
        df.to_csv(self.run.trials_csv, index=False)
        front = pareto_rows(df, objectives)
        front.to_csv(self.run.pareto_csv, index=False)
        return front


def pareto_rows(df: pd.DataFrame, objectives: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """Complete rows not dominated by another complete row under ``objectives``.

    Args:
        df: trial rows.
        objectives: (column, ``"maximize"`` or ``"minimize"``) pairs.
    """
    from fcasearch.report import pareto_mask

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
