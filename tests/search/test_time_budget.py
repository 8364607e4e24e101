"""A time budget alone ends a search: the default trial count (20) applies only to a run given
neither --n-trials nor --time-budget, on the command line or in a config file."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

from fcasearch.cli import build_parser, main
from fcasearch.commands.search import resolve
from fcasearch.search.options import SearchError, SearchOptions

REPO = Path(__file__).resolve().parents[2]
MICRO = str(REPO / "search_spaces" / "micro.yaml")
DEFAULT_N_TRIALS = 20  # the quickstart's trials


def _resolved(*argv: str) -> SearchOptions:
    args = build_parser("search").parse_args(["search", *argv])
    return resolve(args)[0]


def _stored_run(root: Path, **options) -> Path:
    root.mkdir()
    doc = {"options": {"space": MICRO, "threads": 1, **options}, "space": {}}
    (root / "run.yaml").write_text(yaml.safe_dump(doc))
    return root


def test_the_default_trial_count_needs_no_time_budget(tmp_path):
    cases = [  # (config file, command line, n_trials, time_budget)
        (None, [], DEFAULT_N_TRIALS, None),  # the quickstart
        (None, ["--time-budget", "60"], None, 60.0),
        (None, ["--n-trials", "5", "--time-budget", "60"], 5, 60.0),  # whichever comes first
        ("time_budget: 60\n", [], None, 60.0),
        ("time_budget: 60\n", ["--n-trials", "5"], 5, 60.0),
        ("n_trials: 40\n", ["--time-budget", "60"], 40, 60.0),
        ("n_trials: 40\n", [], 40, None),
    ]
    cfg = tmp_path / "search.yaml"
    for config, argv, n_trials, time_budget in cases:
        extra = []
        if config is not None:
            cfg.write_text(config)
            extra = ["--config", str(cfg)]
        o = _resolved("--space", MICRO, *extra, *argv)
        assert (o.n_trials, o.time_budget) == (n_trials, time_budget), (config, argv)
    cfg.write_text("n_trials: null\n")  # no end at all: still refused
    with pytest.raises(SearchError, match="give --n-trials or --time-budget"):
        _resolved("--space", MICRO, "--config", str(cfg))
    # a resumed run keeps its stored end unless given
    timed = _stored_run(tmp_path / "timed", n_trials=None, time_budget=60.0)
    o = _resolved("--resume", str(timed))
    assert (o.n_trials, o.time_budget) == (None, 60.0)
    o = _resolved("--resume", str(timed), "--n-trials", "7")
    assert (o.n_trials, o.time_budget) == (7, 60.0)
    counted = _stored_run(tmp_path / "counted", n_trials=20, time_budget=None)
    o = _resolved("--resume", str(counted), "--time-budget", "30")
    assert (o.n_trials, o.time_budget) == (20, 30.0)
    o = _resolved("--resume", str(counted), "--n-trials", "25")
    assert (o.n_trials, o.time_budget) == (25, None)


def test_a_time_budget_alone_runs_until_the_time_is_up(tmp_path, capsys):
    """It stopped at 20 trials (about a second of dry trials here) and its bar said /20."""
    out = tmp_path / "run"
    budget = 3.0
    argv = [
        "search", "--space", MICRO, "--out", str(out), "--budget", "dry=0.01",
        "--objectives", "accuracy:max", "macs:min", "--time-budget", str(budget),
        "--references", "none", "--final-rounds", "0", "--no-report",
    ]  # fmt: skip
    t0 = time.monotonic()
    assert main(argv) == 0
    elapsed = time.monotonic() - t0
    captured = capsys.readouterr()
    assert elapsed >= budget, captured.out
    options = yaml.safe_load((out / "run.yaml").read_text())["options"]
    assert options["n_trials"] is None and options["time_budget"] == budget
    ran = int(re.search(r"(\d+) trials ran this time", captured.out).group(1))
    assert ran == len((out / "trials.jsonl").read_text().splitlines()) > 0
    assert f"/{DEFAULT_N_TRIALS} " not in captured.err  # the bar claims no trial cap


def test_a_finished_run_resumed_with_a_time_budget_alone_says_how_to_run_more(tmp_path, capsys):
    """It ran 0 trials and exited 0: the stored trial cap had ended the run already."""
    out = tmp_path / "run"
    argv = [
        "search", "--space", MICRO, "--out", str(out), "--budget", "dry=0.01", "--n-trials", "2",
        "--objectives", "accuracy:max", "macs:min", "--references", "none", "--final-rounds",
        "0", "--no-report", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    rows = (out / "trials.jsonl").read_text()
    capsys.readouterr()
    resume = ["search", "--resume", str(out), "--no-report", "--no-progress"]
    assert main([*resume, "--time-budget", "30"]) == 2
    err = capsys.readouterr().err
    assert "already holds 2 trials, its total n_trials 2" in err and "--n-trials 4" in err, err
    assert (out / "trials.jsonl").read_text() == rows  # nothing ran, nothing lost
    assert main([*resume, "--time-budget", "30", "--n-trials", "3"]) == 0
    assert len((out / "trials.jsonl").read_text().splitlines()) == 3
