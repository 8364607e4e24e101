"""Searches on a real multi-node Ray cluster on this machine, and faults on it with nothing
completed lost: a worker node dies mid-trial, the driver is killed mid-search, a trial's process
is killed from outside. Trials are dry runs (a fixed sleep), so a fault always lands mid-trial
without training anything. Each test starts one cluster and runs two searches on it in turn (a
cluster takes 10-15 s to start here)."""

from __future__ import annotations

import json
import time

import optuna
import pandas as pd
import pytest
from raycluster import LoopbackCluster, kill, rows, wait_for
from searchkit import search_args

pytestmark = pytest.mark.slow


def _args(cluster, out, *extra):
    return search_args("micro", out, "--objectives", "accuracy", "macs", "--sampler", "random",
                       "--executor", "ray", "--address", cluster.address, *extra)  # fmt: skip


def _finish(proc, log):
    code = proc.wait(timeout=600)
    assert code == 0, log.read_text()[-4000:]


def _no_trial_workers(cluster, *nodes):
    """Whether the trial actors of a finished search have gone from every node named."""
    return all(not cluster.trial_workers(name) for name in nodes)


def test_trials_spread_over_the_workers_then_a_dead_nodes_trial_runs_again_elsewhere(tmp_path):
    """One cluster (a head that runs no trials and two 1-CPU workers), two searches in turn: the
    first lands trials on both workers; in the second, a worker dies under a trial."""
    with LoopbackCluster(tmp_path / "cluster") as cluster:
        cluster.add_node("head", cpus=0)  # the head runs the driver's side only
        cluster.add_node("w1", cpus=1)
        cluster.add_node("w2", cpus=1)
        lost, kept = cluster.node_id("w1"), cluster.node_id("w2")

        spread, log = tmp_path / "spread", tmp_path / "spread.log"
        proc = cluster.search(*_args(cluster, spread, "--budget", "dry=2", "--n-trials", "4",
                                     "--max-concurrent", "2"), log=log)  # fmt: skip
        _finish(proc, log)
        df = pd.read_parquet(spread / "trials.parquet")
        assert len(df) == 4 and set(df["status"]) == {"complete"}
        assert set(df["ray_node"]) == {lost, kept}  # both workers ran trials, the head none
        assert (df["failures"] == 0).all()
        # the results land in the driver's --out, as for a local search
        for name in ("trials.parquet", "trials.csv", "pareto.csv", "study.db", "run.yaml"):
            assert (spread / name).exists()
        assert cluster.raylet_pid("w1") and cluster.raylet_pid("w2")  # the cluster outlives it
        # the first search's trial actors end with its job: wait, so that the next trial seen on
        # w1 is the second search's
        wait_for(lambda: _no_trial_workers(cluster, "w1", "w2"), 60, "the first search's actors")

        out, log = tmp_path / "run", tmp_path / "search.log"
        proc = cluster.search(*_args(cluster, out, "--budget", "dry=8", "--n-trials", "4",
                                     "--max-concurrent", "2"), log=log)  # fmt: skip
        wait_for(lambda: cluster.trial_workers("w1"), 240, "a trial on node w1", proc)
        time.sleep(2.0)  # the trial sleeps 8 s: w1 dies under it
        cluster.kill_node("w1")
        _finish(proc, log)
    df = pd.read_parquet(out / "trials.parquet")
    assert len(df) == 4 and set(df["status"]) == {"complete"}, df[["status", "reason"]]
    retried = df[df["failures"] > 0]
    assert len(retried) == 1  # the trial w1 was running
    assert set(retried["ray_node"]) == {kept}  # ran again, to completion, on the node left
    note = json.loads(retried["notes"].iloc[0])["failures"]
    # the error as the driver saw it (ActorDiedError, or ActorUnavailableError when the
    # connection to the dead node's worker broke first)
    assert note.startswith("Actor") and "Error: " in note, note
    assert lost not in set(df["ray_node"])  # nothing completed on the dead node
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4


def test_a_killed_trial_process_fails_with_a_reason_then_a_killed_driver_resumes(tmp_path):
    """One 2-CPU head, two searches in turn. First, a trial's process is killed from outside (as
    the OOM killer does) with no retry allowed: a failed row with the reason, and the search goes
    on. Then the driver itself is killed mid-search, and --resume keeps every trial completed
    before the kill."""
    with LoopbackCluster(tmp_path / "cluster") as cluster:
        cluster.add_node("head", cpus=2)

        out, log = tmp_path / "oom", tmp_path / "oom.log"
        proc = cluster.search(*_args(cluster, out, "--budget", "dry=4", "--n-trials", "2",
                                     "--max-concurrent", "1", "--max-failures", "0"),
                              log=log)  # fmt: skip
        workers = wait_for(lambda: cluster.trial_workers("head"), 240, "a trial's process", proc)
        time.sleep(1.5)
        kill(workers[0])  # as the kernel's OOM killer does: SIGKILL, no warning
        _finish(proc, log)
        df = pd.read_parquet(out / "trials.parquet").sort_values("trial")
        assert len(df) == 2
        failed = df[df["status"] == "failed"]
        assert len(failed) == 1 and failed["trial"].iloc[0] == 0
        reason = failed["reason"].iloc[0]
        assert "ActorDiedError" in reason or "died" in reason, reason
        assert (df[df["status"] != "failed"]["status"] == "complete").all()  # the search went on
        study = optuna.load_study(study_name="oom", storage=f"sqlite:///{out / 'study.db'}")
        assert study.trials[0].state.name == "FAIL"
        wait_for(lambda: _no_trial_workers(cluster, "head"), 60, "the first search's actors")

        out, log = tmp_path / "run", tmp_path / "search.log"
        n = 8
        proc = cluster.search(*_args(cluster, out, "--budget", "dry=2", "--n-trials", str(n),
                                     "--max-concurrent", "2"), log=log)  # fmt: skip
        wait_for(lambda: len(rows(out)) >= 3, 300, "3 finished trials", proc)
        kill(proc.pid)  # SIGKILL: no cleanup of any kind in the driver
        proc.wait(timeout=60)
        before = {r["trial"]: r for r in rows(out)}
        # finished rows: trained, or a sample over the micro space's max_params, recorded as
        # infeasible (the resumed sampler's seed depends on how many trials the kill left, so
        # the samples after it vary from run to run)
        finished = {"complete", "infeasible"}
        assert before and all(r["status"] in finished for r in before.values())
        resumed = cluster.search("search", "--resume", str(out), "--no-progress", "--no-report",
                                 log=log)  # fmt: skip
        _finish(resumed, log)
    text = log.read_text()
    df = pd.read_parquet(out / "trials.parquet")
    print(f"driver kill: {len(before)} complete before the kill, {len(df)} after the resume")
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    states = [(t.number, t.state.name, t.user_attrs.get("logged_as")) for t in study.trials]
    why = f"rows:\n{df[['trial', 'status', 'reason']]}\nstudy: {states}\nlog:\n{text[-3000:]}"
    assert len(df) == n and set(df["status"]) <= finished, why
    assert df["trial"].is_unique, why
    by_trial = df.set_index("trial")
    for number, row in before.items():  # every trial finished before the kill, unchanged
        kept = by_trial.loc[number]
        assert kept["arch_id"] == row["arch_id"] and kept["status"] == row["status"], why
        assert kept["accuracy"] == row["accuracy"] or row["status"] == "infeasible", why
    # an infeasible sample is PRUNED in the study: settled, as a COMPLETE trial is
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == n, why
    # trials the kill interrupted are marked failed in the study and run again after resume
    interrupted = [t for t in study.trials if t.state.name == "FAIL"]
    assert "interrupted trial(s) marked failed and retried" in text or not interrupted, why
    # each trial finished before the kill is settled in the study, or, when the kill came
    # between its row and the study, recorded again from its row (logged_as) by the resume
    settled = {t.number for t in done} | {t.user_attrs.get("logged_as") for t in done}
    assert settled >= set(before), why


def test_a_trial_killed_after_an_epoch_fails_with_what_it_measured(tmp_path):
    """A trial's process killed after its first epoch, no retry: its failed row has what was
    measured (the median latency, the stability columns, the notes), as the local executor's
    row does, not the costs its epoch reports carry for the schedulers (an unstable latency as
    its p90)."""
    with LoopbackCluster(tmp_path / "cluster") as cluster:
        cluster.add_node("head", cpus=2)
        out, log = tmp_path / "run", tmp_path / "search.log"
        # a threshold no timing meets: the latency ends unstable after 3 attempts
        args = search_args(
            "micro", out, "--objectives", "accuracy:max", "latency_ms:min",
            "--latency-cv-threshold", "1e-12", "--budget", "epochs=1000", "--sampler", "random",
            "--executor", "ray", "--address", cluster.address, "--n-trials", "1",
            "--max-concurrent", "1", "--max-failures", "0", "--subset-fraction", "0.1",
        )  # fmt: skip
        proc = cluster.search(*args, log=log)
        # the driver writes each result it takes in to the trial's result.json (an epoch takes
        # a fraction of a second here: the budget only keeps the trial running until the kill)
        results = out / "ray" / "results" / "tune"
        wait_for(lambda: _reported(results), 300, "an epoch's report", proc)
        kill(cluster.trial_workers("head")[0])
        _finish(proc, log)
    df = pd.read_parquet(out / "trials.parquet")
    assert len(df) == 1 and df["status"].iloc[0] == "failed", df[["status", "reason"]]
    row = df.iloc[0]
    assert "ActorDiedError" in row["reason"] or "died" in row["reason"], row["reason"]
    assert 1 <= row["epochs"] < 1000 and 0 <= row["accuracy"] <= 1
    assert row["latency_stable"] == 0 and row["latency_attempts"] == 3
    assert row["latency_ms"] < row["latency_p90_ms"]  # the median, not the p90
    assert "UNSTABLE" in json.loads(row["notes"])["measure.latency"]
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    assert study.trials[0].state.name == "FAIL"


def _reported(results) -> bool:
    """Whether a trial under ``results`` (Tune's folder of a run) has reported an epoch."""
    return any(f.read_text().strip() for f in results.glob("trial_*/result.json"))
