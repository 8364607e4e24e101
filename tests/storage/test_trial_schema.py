"""trials.parquet has one schema for every run: every column, typed, documented."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from fcasearch.storage.records import TRIAL_COLUMNS, RunDir, TrialLog, trial_frame

REPO = Path(__file__).resolve().parents[2]


def _infeasible(trial: int) -> dict:
    return {
        "trial": trial,
        "run": "allbad",
        "status": "infeasible",
        "reason": "params 250,000 > max_params 200,000",
        "arch_id": f"{trial:012x}",
        "spec": "{}",
        "spec_short": "32 C1x8",
        "arch.conv_stages": 2,
        "accuracy": math.nan,
        "params": 250000.0,
        "macs": 1234567.0,
        "epochs": 0.0,
        "budget": "steps=3",
        "trial_seconds": 0.01,
        "device": "cpu",
    }


def test_an_all_infeasible_run_has_every_column(tmp_path):
    log = TrialLog(RunDir(tmp_path / "run"))
    for i in range(3):
        log.append(_infeasible(i))
    log.export([("accuracy", "maximize"), ("macs", "minimize")])
    df = pd.read_parquet(tmp_path / "run" / "trials.parquet")
    assert list(df.columns) == list(TRIAL_COLUMNS)
    for col in ("latency_ms", "peak_mem_mb", "weights_mb", "latency_cv"):
        assert df[col].dtype == "float64" and df[col].isna().all()
    assert df["notes"].tolist() == ["{}"] * 3 and df["ray_node"].tolist() == [""] * 3
    assert df["notes"].map(json.loads).tolist() == [{}] * 3  # plain dicts, as clients expect
    assert str(df["params"].dtype) == "Int64" and df["params"].tolist() == [250000] * 3
    assert str(df["rung"].dtype) == "Int64" and df["rung"].isna().all()
    assert str(df["latency_stable"].dtype) == "boolean"


def test_columns_keep_their_kinds_and_extra_columns_follow():
    rows = [
        {**_infeasible(1), "status": "complete", "latency_ms": 1.5, "latency_stable": True,
         "threads": 4, "proxy.synflow": 3.5, "rung": 2},
        {**_infeasible(0), "latency_stable": "false", "macs": None, "new_thing": "x"},
    ]  # fmt: skip
    df = trial_frame(rows)
    assert df["trial"].tolist() == [0, 1]  # sorted by trial
    assert list(df.columns) == [*TRIAL_COLUMNS, "new_thing", "proxy.synflow"]
    assert df["latency_stable"].tolist() == [False, True]
    assert df["macs"].isna().tolist() == [True, False] and str(df["macs"].dtype) == "Int64"
    assert df["threads"].tolist()[1] == 4 and df["rung"].tolist()[1] == 2
    assert trial_frame([]).columns.tolist() == list(TRIAL_COLUMNS)


def test_every_column_is_documented():
    readme = (REPO / "results" / "README.md").read_text()
    section = readme.split("## `trials.parquet` columns", 1)[1]
    documented = set(re.findall(r"`([a-z_.0-9]+)`", section))
    missing = [c for c in TRIAL_COLUMNS if c not in documented and not c.startswith("arch.")]
    assert not missing, f"columns missing from results/README.md: {missing}"
    assert all(c in section for c in TRIAL_COLUMNS if c.startswith("arch."))
