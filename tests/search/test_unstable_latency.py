"""An unstable latency cell is penalized for the sampler, never told as exact: its p90 stands in
for the median (fcasearch.search.unstable), and the row keeps what was measured."""

from __future__ import annotations

import json
import math

import optuna
import pandas as pd
import pytest

from fcasearch.cli import main
from fcasearch.search.objective import TrialResult
from fcasearch.search.options import parse_objectives
from fcasearch.search.study import result_from_row, tell, values_for
from fcasearch.search.unstable import sampler_metrics
from fcasearch.space import load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

UNSTABLE = {
    "latency_ms": 2.0,
    "latency_p90_ms": 5.0,
    "latency_cv": 0.6,
    "latency_stable": 0.0,
    "throughput_ips": 500.0,
}


def test_stable_cells_are_told_as_measured():
    stable = {**UNSTABLE, "latency_stable": 1.0}
    assert sampler_metrics(stable) == stable
    assert sampler_metrics({"macs": 3.0}) == {"macs": 3.0}  # not measured: nothing to change


def test_unstable_cells_are_told_their_p90():
    told = sampler_metrics(UNSTABLE)
    assert told["latency_ms"] == 5.0
    assert told["throughput_ips"] == pytest.approx(200.0)  # batch / p90
    assert UNSTABLE["latency_ms"] == 2.0  # the caller's metrics are left as they were
    objs = parse_objectives("accuracy:max latency_ms:min throughput_ips:max")
    assert values_for(objs, {**UNSTABLE, "accuracy": 0.5}) == [0.5, 5.0, pytest.approx(200.0)]


def test_a_logged_row_keeps_the_penalty(tmp_path):
    # the Ray searcher and recovery tell the study from the logged row
    space = load_space("micro")
    spec = next(iter(space.enumerate()))
    row = {"status": "complete", "accuracy": 0.4, **UNSTABLE}
    res = result_from_row(json.loads(json.dumps(row)), spec)
    assert values_for(parse_objectives("accuracy latency_ms"), res.metrics) == [0.4, 5.0]
    typed = {**row, "latency_stable": False}  # read back from trials.parquet
    res = result_from_row(typed, spec)
    assert values_for(parse_objectives("latency_ms"), res.metrics) == [5.0]


def test_tell_gives_the_study_the_penalized_value_and_says_why():
    space = load_space("micro")
    spec = next(iter(space.enumerate()))
    objs = parse_objectives("accuracy:max latency_ms:min")
    study = optuna.create_study(directions=[o.direction for o in objs])
    trial = study.ask()
    result = TrialResult(spec=spec, status="complete", metrics={"accuracy": 0.5, **UNSTABLE})
    tell(study, trial, result, objs, space.constraints)
    (t,) = study.trials
    assert t.values == [0.5, 5.0]
    assert t.user_attrs["latency_stable"] is False
    assert t.user_attrs["latency_ms_told"] == 5.0
    assert t.user_attrs["latency_ms"] == 2.0  # what was measured, for a person reading it


def test_a_search_with_unstable_cells_records_them_and_tells_p90(tiny_space, search_args, tmp_path):
    # a threshold no real timing meets: every cell is re-measured twice, then recorded unstable
    out = tmp_path / "run"
    args = search_args(
        tiny_space, out, "--n-trials", "2", "--objectives", "accuracy:max", "latency_ms:min",
        "--latency-cv-threshold", "1e-12", "--final-rounds", "3",
    )  # fmt: skip
    assert main(args) == 0
    df = pd.read_parquet(out / "trials.parquet")
    done = df[df["status"] == "complete"]
    assert len(done) >= 1
    assert (done["latency_stable"] == False).all()  # noqa: E712 (nullable boolean)
    assert (done["latency_attempts"] == 3).all()
    assert (done["latency_cv"] > 0).all() and (done["latency_p90_ms"] >= done["latency_ms"]).all()
    assert done["notes"].map(lambda n: "UNSTABLE" in json.loads(n)["measure.latency"]).all()
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    by_number = {t.number: t for t in study.trials}
    for _, row in done.iterrows():
        t = by_number[int(row["trial"])]
        if "reused_from" in t.user_attrs:
            continue
        assert t.values[1] == pytest.approx(row["latency_p90_ms"])
        assert t.values[1] >= row["latency_ms"] and t.user_attrs["latency_stable"] is False
    final = json.loads((out / "final.json").read_text())
    for m in final["models"]:
        assert m["final_latency_stable"] is False and m["attempts"] == 3
        assert math.isfinite(m["final_latency_cv"])
