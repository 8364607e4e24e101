"""A search killed with SIGKILL loses no completed trial, and --resume finishes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from fcasearch.cli import main
from fcasearch.storage import RunDir, TrialLog

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_resume_after_sigkill_keeps_every_completed_trial(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable, str(REPO / "search.py"),
        "--space", str(REPO / "search_spaces" / "micro.yaml"),
        "--out", str(out), "--n-trials", "40", "--budget", "steps=40", "--batch-size", "32", "--threads", "1",
        "--objectives", "accuracy:max", "macs:min", "--no-measure", "--no-progress", "--no-report",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    log = TrialLog(RunDir(out))
    try:
        deadline = time.monotonic() + 240
        while len(log.rows()) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the search finished no trial in time"
            time.sleep(0.2)
        time.sleep(0.5)  # the next trial (2 s of training) is running now
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = pd.DataFrame(log.rows())
    storage = f"sqlite:///{out / 'study.db'}"
    states_before = {
        t.number: t.state for t in optuna.load_study(study_name="run", storage=storage).trials
    }
    running = [n for n, s in states_before.items() if s == optuna.trial.TrialState.RUNNING]
    assert running, "the kill should have caught a trial mid-training"

    target = len(before) + 2
    assert (
        main(
            [
                "search",
                "--resume",
                str(out),
                "--n-trials",
                str(target),
                "--no-progress",
                "--no-report",
            ]
        )
        == 0
    )
    after = pd.read_parquet(out / "trials.parquet")
    assert len(after) == target
    kept = after.set_index("trial").loc[before["trial"]]
    assert list(kept["arch_id"]) == list(before["arch_id"])
    assert kept["accuracy"].fillna(-1).tolist() == before["accuracy"].fillna(-1).tolist()
    study = optuna.load_study(study_name="run", storage=storage)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    logged = set(before["trial"])
    for n in running:  # interrupted trials are marked failed and their parameters retried,
        assert study.trials[n].state == optuna.trial.TrialState.FAIL
        if n in logged:  # or, when the kill came after the row was logged, recorded from it
            (copy,) = [t for t in study.trials if t.user_attrs.get("logged_as") == n]
            assert copy.params == study.trials[n].params and copy.user_attrs["status"]
            continue
        retries = [t for t in study.trials if t.user_attrs.get("retry_of") == n]
        assert retries and retries[0].params == study.trials[n].params
        assert "interrupted" in retries[0].user_attrs["retry_reason"]


def test_a_resumed_seeded_search_proposes_new_architectures(tmp_path):
    """The run's seed alone would replay the study's first proposals after --resume (all of
    them evaluated already, so the resumed trials would only copy earlier rows)."""
    from searchkit import search_args

    out = tmp_path / "run"
    args = search_args("micro", out, "--objectives", "accuracy", "macs", "--sampler", "random",
                       "--budget", "dry=0.01", "--n-trials", "4", "--seed", "0")  # fmt: skip
    assert main(args) == 0
    assert main(["search", "--resume", str(out), "--n-trials", "8", "--no-progress",
                 "--no-report"]) == 0  # fmt: skip
    df = pd.read_parquet(out / "trials.parquet").sort_values("trial")
    assert len(df) == 8
    first, resumed = df.iloc[:4], df.iloc[4:]
    assert not resumed["notes"].str.contains("reused_from_trial").any(), resumed["notes"]
    assert set(resumed["arch_id"]).isdisjoint(first["arch_id"])


def test_a_trial_killed_after_its_row_was_logged_counts_once(tmp_path):
    """The kill came between the row and the study: the trial stays RUNNING with its row in
    trials.jsonl. --resume records it from the row as a new trial; the total counts it once."""
    import json

    from searchkit import search_args

    out = tmp_path / "run"
    args = search_args("micro", out, "--objectives", "accuracy", "macs", "--sampler", "random",
                       "--budget", "dry=0.01", "--n-trials", "2")  # fmt: skip
    assert main(args) == 0
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    done = study.trials[1]
    study.enqueue_trial(done.params)
    trial = study.ask(fixed_distributions=done.distributions)  # left RUNNING, as by a kill
    for key, value in done.user_attrs.items():
        trial.set_user_attr(key, value)
    journal = out / "trials.jsonl"
    rows = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    with journal.open("a") as fh:
        fh.write(json.dumps({**rows[-1], "trial": trial.number}) + "\n")
    assert main(["search", "--resume", str(out), "--n-trials", "4", "--no-progress",
                 "--no-report"]) == 0  # fmt: skip
    df = pd.read_parquet(out / "trials.parquet")
    assert len(df) == 4 and df["trial"].is_unique, df[["trial", "status"]]
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    assert study.trials[trial.number].state == optuna.trial.TrialState.FAIL
    (copy,) = [t for t in study.trials if t.user_attrs.get("logged_as") == trial.number]
    assert copy.state == optuna.trial.TrialState.COMPLETE
