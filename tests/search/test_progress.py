from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from fcasearch.cli import main
from fcasearch.pareto import HypervolumeDefinition, define_hypervolume
from fcasearch.search.options import parse_objectives
from fcasearch.search.progress import SearchProgress, front_hypervolume
from fcasearch.storage.records import RunDir, TrialLog

ACC_MACS = parse_objectives("accuracy:max macs:min")


def _definition(max_macs: float = 40.0) -> HypervolumeDefinition:
    return define_hypervolume(
        [("accuracy", "maximize"), ("macs", "minimize")], constraints={"max_macs": max_macs}
    )


def test_front_hypervolume_uses_the_fixed_bounds_and_skips_incomplete_rows():
    rows = [
        {"status": "complete", "accuracy": a, "macs": m}
        for a, m in [(0.9, 10), (0.95, 20), (0.8, 5), (0.85, 30)]
    ] + [
        {"status": "failed", "accuracy": 0.99, "macs": 1},
        {"status": "complete", "accuracy": math.nan, "macs": 1},
    ]
    size, hv = front_hypervolume(rows, ACC_MACS, _definition())
    # scaled: (1 - acc, macs / 40): (.1, .25), (.05, .5), (.2, .125); reference (1, 1)
    expected = 0.8 * 0.875 + (0.9 - 0.8) * (0.75 - 0) + (0.95 - 0.9) * 0.5
    assert size == 3 and hv == pytest.approx(expected)


def test_a_new_extreme_never_lowers_it():
    rows = [{"status": "complete", "accuracy": 0.5, "macs": 10.0}]
    _, before = front_hypervolume(rows, ACC_MACS, _definition())
    # a dominated trial with a new worst MACs: rescaling over the rows used to raise the value
    rows.append({"status": "complete", "accuracy": 0.4, "macs": 39.0})
    _, dominated = front_hypervolume(rows, ACC_MACS, _definition())
    # a new best accuracy: rescaling used to lower the value
    rows.append({"status": "complete", "accuracy": 0.99, "macs": 30.0})
    _, better = front_hypervolume(rows, ACC_MACS, _definition())
    assert before == dominated < better


def test_front_hypervolume_of_nothing_and_of_an_undefined_one():
    assert front_hypervolume([], ACC_MACS, _definition()) == (0, 0.0)
    latency_only = define_hypervolume([("latency_ms", "minimize")])
    size, hv = front_hypervolume(
        [{"status": "complete", "latency_ms": 3.0}], parse_objectives("latency_ms"), latency_only
    )
    assert size == 1 and math.isnan(hv)


def test_the_bar_says_which_objectives_are_left_out(capsys):
    definition = define_hypervolume(
        [("accuracy", "maximize"), ("latency_ms", "minimize")]
    )  # latency without a reference
    bar = SearchProgress(3, parse_objectives("accuracy latency_ms"), [], False, definition)
    assert "left out latency_ms" in capsys.readouterr().err
    bar.finish_trial({"status": "complete", "accuracy": 0.25, "latency_ms": 4.0})
    assert bar.postfix().endswith("pareto 1 hv 0.2500")


@pytest.mark.slow
def test_progress_hypervolume_never_falls_over_a_real_search(tiny_space, search_args, tmp_path):
    """A small real search on the tiny space; the progress value recomputed after each trial,
    in the order the trials finished, under the definition stored before the first one."""
    out = tmp_path / "run"
    args = search_args(
        tiny_space, out, "--n-trials", "6", "--sampler", "random", "--seed", "3",
        "--objectives", "accuracy:max", "macs:min", "--no-measure", "--hv-reference",
        "macs=2e6",
    )  # fmt: skip
    assert main(args) == 0
    stored = yaml.safe_load((out / "run.yaml").read_text())["hypervolume"]
    definition = HypervolumeDefinition.from_dict(stored)
    sources = {o.name: o.source for o in definition.objectives}
    assert sources == {
        "accuracy": "accuracy is a fraction in [0, 1]",
        "macs": "hv_reference macs=2e+06",
    }
    rows = TrialLog(RunDir(out)).rows()
    assert len(rows) == 6 and any(r["status"] == "complete" for r in rows)
    objectives = parse_objectives("accuracy:max macs:min")
    values = [front_hypervolume(rows[: i + 1], objectives, definition)[1] for i in range(len(rows))]
    assert (np.diff(values) >= 0).all(), values
    assert values[-1] > 0
    # pareto.csv carries each front row's share under the same definition
    import pandas as pd

    front = pd.read_csv(out / "pareto.csv")
    assert "hv_contribution" in front and np.isfinite(front["hv_contribution"]).all()
