"""Calibration on the micro space with tiny budgets, its correlation table and the CLI."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fcasearch.cli import main
from fcasearch.data import get_dataset
from fcasearch.space import load_space
from fcasearch.train import Budget, TrainConfig
from fcasearch.train.calibrate import CalibrationError, calibrate, rank_correlations, spearman_p


@pytest.fixture(scope="module")
def small():
    return get_dataset("digits", img_size=32, subset_fraction=0.1)


def test_rank_correlations_match_known_values():
    table = pd.DataFrame(
        {
            "y": [1, 2, 3, 4, 5],
            "up": [10, 20, 30, 40, 50],
            "down": [5, 4, 3, 2, 1],
            "gap": [1, np.nan, 3, np.inf, 4],
            "flat": [1] * 5,
        }
    )
    corr = rank_correlations(table, "y", ["up", "down", "gap", "flat"]).set_index("predictor")
    assert corr.loc["up", "spearman"] == pytest.approx(1) and corr.loc[
        "up", "kendall"
    ] == pytest.approx(1)
    assert corr.loc["down", "spearman"] == pytest.approx(-1)
    assert corr.loc["gap", "n"] == 3 and corr.loc["gap", "spearman"] == pytest.approx(1)
    assert math.isnan(corr.loc["flat", "spearman"])
    assert 0 <= corr.loc["up", "spearman_p"] < 0.05


def test_calibrate_micro_space(small, tmp_path):
    space = load_space("micro")
    cfg = TrainConfig(batch_size=32, bn_recalibration=2)
    result = calibrate(
        space,
        3,
        "steps=2",
        Budget(steps=4),
        data=small,
        out_dir=tmp_path,
        config=cfg,
        proxies=("synflow", "naswot"),
        progress=False,
    )
    table = result.table
    assert len(table) == 3 and table["arch_id"].is_unique
    assert {"acc_short", "acc_long", "synflow", "naswot", "params", "macs", "spec"} <= set(
        table.columns
    )
    assert table[["acc_short", "acc_long", "synflow", "naswot"]].map(math.isfinite).all().all()
    assert list(result.correlations["predictor"]) == [
        "acc_short",
        "synflow",
        "naswot",
        "params",
        "macs",
    ]
    assert (result.correlations["n"] == 3).all()
    saved = pd.read_csv(tmp_path / "calibration.csv")
    assert (
        list(saved["arch_id"]) == list(table["arch_id"])
        and (tmp_path / "correlations.csv").is_file()
    )


def test_calibrate_refuses_data_that_does_not_fit(small):
    space = load_space("micro")
    three = get_dataset("digits", img_size=32, subset_classes=3)
    with pytest.raises(CalibrationError, match="3 classes but the space builds 1 and 10"):
        calibrate(space, 1, "steps=1", "steps=2", data=three, progress=False)
    with pytest.raises(CalibrationError, match="n:"):
        calibrate(space, 0, "steps=1", "steps=2", data=small, progress=False)


def test_cli_writes_csv_plot_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "calib"
    code = main(
        ["calibrate", "--space", "micro", "--n", "3", "--short", "steps=1", "--long", "steps=2",
         "--subset-fraction", "0.1", "--batch-size", "32", "--proxies", "grad_norm,snip", "--out", str(out), "--quiet"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "spearman" in printed and "grad_norm" in printed and "acc_short" in printed
    assert {p.name for p in out.iterdir()} == {
        "calibration.csv",
        "correlations.csv",
        "calibration.png",
    }
    assert (out / "calibration.png").stat().st_size > 1000


def test_cli_bad_budget_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["calibrate", "--space", "micro", "--short", "epoch=1"])
    assert "epochs=N" in capsys.readouterr().err


def test_spearman_p_is_exact_for_few_points():
    # 4 points in the same order: 2 of the 24 pairings of the ranks are as extreme (scipy's t
    # approximation said 0)
    table = pd.DataFrame({"long": [0.1, 0.2, 0.3, 0.4], "short": [1.0, 2.0, 3.0, 4.0]})
    row = rank_correlations(table, "long", ["short"]).iloc[0]
    assert row["spearman"] == pytest.approx(1.0) and row["spearman_p"] == pytest.approx(1 / 12)
    # the same as scipy's exact permutation test, ties included
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=7), rng.normal(size=7).round(0)
    exact = stats.permutation_test(
        (x,), lambda a: stats.spearmanr(a, y)[0], permutation_type="pairings", n_resamples=np.inf
    )
    assert spearman_p(x, y) == pytest.approx(exact.pvalue)
