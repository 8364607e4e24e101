"""Dry runs (``--budget dry=S``): trials sleep instead of measuring and training; rows complete."""

from __future__ import annotations

import json

import optuna
import pandas as pd
import pytest

from fcasearch.cli import main
from fcasearch.search.dry import synthetic_accuracy
from fcasearch.train import Budget, BudgetError, TrainError, train_model


def test_dry_budget_text_round_trips_and_refuses_training_limits():
    for text in ("dry=2", "epochs=3,dry=0.5"):
        assert str(Budget.parse(text)) == text
    assert str(Budget.parse("dry=0.5,epochs=3")) == "epochs=3,dry=0.5"
    for text, needle in (("dry=1,steps=3", "not steps or seconds"), ("dry=0", "positive")):
        with pytest.raises(BudgetError, match=needle):
            Budget.parse(text)
    with pytest.raises(TrainError, match="dry run trains nothing"):
        train_model(None, None, "dry=1")


def test_dry_run_rows_are_complete_and_marked(tiny_space, search_args, tmp_path):
    out = tmp_path / "run"
    args = search_args(tiny_space, out, "--n-trials", "3", "--objectives", "accuracy", "macs",
                       "--budget", "dry=0.2,epochs=2", "--sampler", "random")  # fmt: skip
    assert main(args) == 0
    df = pd.read_parquet(out / "trials.parquet")
    assert len(df) == 3 and set(df["status"]) == {"complete"}
    assert set(df["budget"]) == {"dry=0.2,epochs=2"}  # as given
    ran = df[~df["notes"].str.contains("reused_from_trial")]
    assert len(ran) >= 1
    for _, row in ran.iterrows():
        assert "dry_run" in json.loads(row["notes"])
        assert row["epochs"] == 2
        assert row["accuracy"] == pytest.approx(synthetic_accuracy(0, row["arch_id"]))
        assert 0.1 <= row["accuracy"] <= 0.9 and row["macs"] > 0
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    # the report says it first: its picks are not results
    from fcasearch.report import build_report

    headline = build_report(out, figures=False).markdown.read_text()
    assert "DRY RUN: 3 of 3 trials only slept" in headline and "synthetic" in headline


def test_dry_run_accepts_only_objectives_it_can_give(tiny_space, search_args, tmp_path, capsys):
    args = search_args(tiny_space, tmp_path / "run", "--objectives", "accuracy", "latency_ms",
                       "--budget", "dry=1")  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "latency_ms" in err and "dry run" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_dry_run_under_asha_stops_trials_at_rungs(search_args, tmp_path):
    out = tmp_path / "run"
    args = search_args("micro", out, "--n-trials", "8", "--objectives", "accuracy:max",
                       "--budget", "dry=0.06,epochs=3", "--scheduler", "asha",
                       "--reduction-factor", "2", "--sampler", "random")  # fmt: skip
    assert main(args) == 0
    df = pd.read_parquet(out / "trials.parquet")
    pruned = df[df["status"] == "pruned"]
    assert len(pruned) >= 1 and pruned["reason"].str.contains("stopped by asha at rung").all()
    assert (pruned["epochs"] < 3).all()
