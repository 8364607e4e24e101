"""Calibration on the micro space with tiny budgets, its correlation table and the CLI."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from fcasearch.cli import main
from fcasearch.data import get_dataset
from fcasearch.space import load_space
from fcasearch.train import Budget, TrainConfig
from fcasearch.train.calibrate import CalibrationError, calibrate, rank_correlations, spearman_p


@pytest.fixture(scope="module")
def small():
    return get_dataset("digits", img_size=32, subset_fraction=0.1)


@pytest.fixture(scope="module")
def three():
    """Data the micro space does not fit (3 classes): a calibration that gets past its up-front
    checks stops at the first architecture, before anything trains."""
    return get_dataset("digits", img_size=32, subset_classes=3)


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


def test_calibrate_refuses_data_that_does_not_fit(three):
    space = load_space("micro")
    with pytest.raises(CalibrationError, match="3 classes but the space builds 1 and 10"):
        calibrate(space, 3, "steps=1", "steps=2", data=three, progress=False)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_calibrate_refuses_fewer_than_three_architectures(three, n):
    # before sampling or loading data: the data (which does not fit) is never reached
    with pytest.raises(CalibrationError, match=r"n: .*need n >= 3"):
        calibrate(load_space("micro"), n, "steps=1", "steps=2", data=three, progress=False)


@pytest.mark.parametrize(
    "short, long",
    [
        ("epochs=3", "epochs=1"),
        ("epochs=1", "epochs=1"),
        ("steps=4", "steps=2"),
        ("seconds=5", "seconds=5"),
        ("epochs=1", "epochs=1,seconds=60"),  # the long one stops at one epoch or sooner
        ("epochs=2,steps=12", "epochs=1,steps=10"),  # each limit of short >= the long one's
    ],
)
def test_calibrate_refuses_a_short_budget_that_does_not_stop_first(three, short, long):
    with pytest.raises(CalibrationError, match=r"^short: .* is not shorter than long"):
        calibrate(load_space("micro"), 3, short, long, data=three, progress=False)


@pytest.mark.parametrize(
    "short, long",
    [
        ("epochs=1", "epochs=2"),
        ("steps=2", "epochs=1"),  # other units: not comparable before the data is known
        ("epochs=3", "steps=100"),
        ("epochs=1,steps=5", "epochs=1"),  # steps=5 may stop before one epoch
        ("seconds=30", "epochs=1"),
        ("epochs=2,steps=9", "epochs=1,steps=10"),  # 9 steps may come before 1 epoch ends
    ],
)
def test_calibrate_allows_budgets_it_cannot_compare_or_that_are_ordered(three, short, long):
    # past the budget check: it stops at the data that does not fit, before training
    with pytest.raises(CalibrationError, match="3 classes"):
        calibrate(load_space("micro"), 3, short, long, data=three, progress=False)


def test_calibrate_refuses_a_dry_run_budget(three):
    with pytest.raises(CalibrationError, match=r"^long: dry=1 is a dry run"):
        calibrate(load_space("micro"), 3, "steps=1", "dry=1", data=three, progress=False)


def test_calibrate_refuses_a_device_torch_does_not_see(three, monkeypatch):
    space = load_space("micro")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0"):
        with pytest.raises(CalibrationError, match="torch sees no CUDA device here"):
            calibrate(space, 3, "steps=1", "steps=2", data=three, device=device, progress=False)
    with pytest.raises(CalibrationError, match="'gpu' is not a torch device"):
        calibrate(space, 3, "steps=1", "steps=2", data=three, device="gpu", progress=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(CalibrationError, match="cuda:1 was asked but torch sees 1 CUDA device"):
        calibrate(space, 3, "steps=1", "steps=2", data=three, device="cuda:1", progress=False)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--n", "2"], "n: 2: rank correlations need n >= 3"),
        (["--n", "0"], "n: 0: rank correlations need n >= 3"),
        (["--short", "epochs=3", "--long", "epochs=1"], "short: epochs=3 is not shorter than long"),
        (["--short", "epochs=1", "--long", "epochs=1"], "short: epochs=1 is not shorter than long"),
        (["--device", "cuda"], "device: cuda was asked but torch sees no CUDA device here"),
    ],
)
def test_cli_refuses_in_one_line_before_anything_runs(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a GPU machine
    out = tmp_path / "calib"
    code = main(
        ["calibrate", "--space", "micro", "--n", "3", "--short", "steps=1", "--long", "steps=2",
         "--subset-fraction", "0.1", "--batch-size", "32", "--out", str(out), "--quiet", "--no-plot",
         *argv]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"fcasearch calibrate: {message}") and err.count("\n") == 1, err
    assert not out.exists()


def test_significance_note_says_which_correlations_are_not_significant():
    from fcasearch.commands.calibrate import significance_note

    def corr(n, ps):
        return pd.DataFrame(
            {"predictor": ["acc_short", "synflow", "params"][: len(ps)], "n": n, "spearman_p": ps}
        )

    assert "no rank correlation can be significant" in significance_note(corr(3, [0.33, 1.0]))
    assert "2/4! = 0.0833 > 0.05" in significance_note(corr(4, [0.083, 0.5]))
    note = significance_note(corr(6, [0.01, 0.2, math.nan]))
    assert "not significant at n=6" in note and note.endswith(": synflow, params")
    assert significance_note(corr(6, [0.01, 0.03])) is None
    assert "no correlation computed" in significance_note(corr(2, [math.nan]))


def test_cli_writes_csv_plot_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "calib"
    code = main(
        ["calibrate", "--space", "micro", "--n", "3", "--short", "steps=1", "--long", "steps=2",
         "--subset-fraction", "0.1", "--batch-size", "32", "--proxies", "grad_norm,snip", "--out", str(out), "--quiet"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "spearman" in printed and "grad_norm" in printed and "acc_short" in printed
    # 3 architectures: the smallest Spearman p is 2/3! = 1/3, and the output says so
    assert "note: with 3 architectures no rank correlation can be significant" in printed
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
