"""MO-ASHA on the Ray executor: the Tune scheduler stops trials at rungs; rows and study agree."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from searchkit import search_args

from fcasearch.cli import main
from fcasearch.search.objective import TrialContext, evaluate
from fcasearch.search.options import SearchOptions
from fcasearch.space import load_space


@pytest.mark.slow
def test_ray_mo_asha_stops_trials_at_rungs(tmp_path):
    import ray

    out = tmp_path / "run"
    args = search_args(
        "micro", out, "--subset-fraction", "0.1", "--objectives", "accuracy:max", "macs:min",
        "--no-measure", "--budget", "epochs=3", "--scheduler", "mo-asha",
        "--reduction-factor", "2", "--n-trials", "6", "--sampler", "random",
        "--executor", "ray", "--max-concurrent", "2", "--cpus-per-trial", "1",
    )  # fmt: skip
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        code = main(args)
    assert code == 0, text.getvalue()[-3000:]
    assert not ray.is_initialized()
    df = pd.read_parquet(out / "trials.parquet")
    assert len(df) == 6 and set(df["status"]) <= {"complete", "pruned"}
    pruned, done = df[df["status"] == "pruned"], df[df["status"] == "complete"]
    assert len(pruned) >= 1 and len(done) >= 1
    assert set(pruned["rung"]) <= {0, 1} and (done["rung"] == 2).all()
    assert (pruned["epochs"] == pruned["rung"] + 1).all()  # rungs at epochs 1 and 2
    assert pruned["accuracy"].between(0, 1).all()
    assert pruned["reason"].str.contains("stopped by mo-asha at rung").all()
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    by_number = {t.number: t for t in study.trials}
    for _, row in df.iterrows():
        t = by_number[int(row["trial"])]
        assert t.user_attrs["rung"] == row["rung"]
        assert "0" in t.user_attrs["rung_values"]  # for a resumed run's scheduler
        want = "PRUNED" if row["status"] == "pruned" else "COMPLETE"
        assert t.state.name == want


@pytest.mark.slow
def test_ray_trial_stopped_at_a_rung_keeps_its_measured_latency(tmp_path):
    # a threshold no timing meets: every latency cell ends unstable after 3 attempts. The
    # scheduler ranks its p90 (what the sampler is told); the row of a trial it stops keeps the
    # median, the stability columns and the notes, as the local executor's row does
    out = tmp_path / "run"
    args = search_args(
        "micro", out, "--subset-fraction", "0.1", "--objectives", "accuracy:max",
        "latency_ms:min", "--latency-cv-threshold", "1e-12", "--budget", "epochs=3",
        "--scheduler", "mo-asha", "--reduction-factor", "2", "--n-trials", "6",
        "--sampler", "random", "--executor", "ray", "--max-concurrent", "1",
        "--cpus-per-trial", "1", "--save-weights",
    )  # fmt: skip
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        code = main(args)
    assert code == 0, text.getvalue()[-3000:]
    assert re.search(r"Number of trials\s+6\s", text.getvalue())  # Tune's banner, not maxsize
    df = pd.read_parquet(out / "trials.parquet")
    pruned = df[df["status"] == "pruned"]
    assert len(pruned) >= 1
    assert pruned["latency_stable"].tolist() == [False] * len(pruned)  # not missing either
    assert pruned["latency_attempts"].tolist() == [3] * len(pruned)
    assert (pruned["weights_mb"] > 0).all()
    assert (pruned["latency_ms"] < pruned["latency_p90_ms"]).all()  # the median, not the p90
    assert pruned["notes"].map(lambda n: "UNSTABLE" in json.loads(n)["measure.latency"]).all()
    for _, row in pruned.iterrows():
        want = f"stopped by mo-asha at rung {row['rung']} (epoch {row['epochs']:g})"
        assert row["reason"] == want and row["train_seconds"] > 0
    # Tune ended them between epochs: no retry needs their checkpoints (the local executor
    # deletes a stopped trial's too)
    assert not list((out / "checkpoints").glob("*.pt"))
    # --save-weights: a stopped trial keeps the weights of its rung epoch, as a complete one
    # keeps its own, where its row's notes say (fcasearch export RUN:ARCH_ID reads them)
    import torch

    from fcasearch.models import build_model
    from fcasearch.spec import ArchSpec

    for _, row in df[df["status"].isin(["pruned", "complete"])].iterrows():
        where = Path(json.loads(row["notes"])["weights"])
        assert where.resolve() == (out / "weights" / f"{row['arch_id']}.pt").resolve()
        model = build_model(ArchSpec.from_json(row["spec"]))
        model.load_state_dict(torch.load(where, weights_only=True))  # every tensor, no other
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    by_number = {t.number: t for t in study.trials}
    for _, row in pruned.iterrows():
        t = by_number[int(row["trial"])]
        assert t.user_attrs["latency_ms"] == pytest.approx(row["latency_ms"])
        assert t.user_attrs["latency_stable"] is False
        assert t.user_attrs["latency_ms_told"] == pytest.approx(row["latency_p90_ms"])
        # what the scheduler ranked at the rung it stopped the trial: the penalized value
        ranked = t.user_attrs["rung_values"][str(row["rung"])]
        assert ranked[1] == pytest.approx(row["latency_p90_ms"])


def test_the_row_a_trial_ends_with_if_stopped_is_the_local_executors(tiny_space, tmp_path):
    # what the Ray trainable sends at each rung (evaluate's if_stopped) is the row the local
    # executor logs when its scheduler stops the trial there: measured values, not penalized ones
    options = SearchOptions(
        space=str(tiny_space), objectives="accuracy:max latency_ms:min", budget="epochs=3",
        scheduler="mo-asha", reduction_factor=2, batch_size=32, out=str(tmp_path / "run"),
        progress=False, threads=1, latency_cv_threshold=1e-12,
    )  # fmt: skip
    space = load_space(str(tiny_space))
    spec = space.sample_feasible(np.random.default_rng(0))
    reported, told = [], []

    def report(epoch, metrics):
        reported.append(dict(metrics))
        return epoch == 2  # the scheduler stops it at rung 1 (epoch 2)

    res = evaluate(spec, TrialContext(options, space), report, if_stopped=told.append)
    assert res.status == "pruned" and res.reason == "stopped by mo-asha at rung 1 (epoch 2)"
    assert [t.epochs for t in told] == [1.0, 2.0] and [t.rung for t in told] == [0, 1]
    assert told[0].reason == "stopped by mo-asha at rung 0 (epoch 1)"
    local, ray = res.row(3, "run"), told[-1].row(3, "run")
    assert local.keys() == ray.keys()
    differ = {k for k in local if local[k] != ray[k] and not (_nan(local[k]) and _nan(ray[k]))}
    assert differ <= {"train_seconds", "trial_seconds", "finished_at"}  # a moment apart
    assert ray["latency_stable"] == 0.0 and ray["latency_attempts"] == 3.0
    assert ray["latency_ms"] < ray["latency_p90_ms"] and ray["weights_mb"] > 0
    assert "UNSTABLE" in json.loads(ray["notes"])["measure.latency"]
    assert 0 < ray["train_seconds"] <= ray["trial_seconds"]
    assert reported[-1]["latency_ms"] == ray["latency_p90_ms"]  # the scheduler's view: the p90
    assert told[0].metrics["accuracy"] == reported[0]["accuracy"]  # each epoch's own


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def test_a_trial_told_at_a_rung_saves_the_weights_of_that_epoch(tiny_space, tmp_path):
    # --save-weights: the result told at a rung (what the Ray trainable sends; Tune stops a trial
    # by not resuming it, so it never saves them after) has its weights saved then, as a trial
    # the local executor's scheduler stops there has; between rungs nothing is written
    import torch

    run = tmp_path / "run"
    options = SearchOptions(
        space=str(tiny_space), objectives="accuracy:max macs:min", budget="epochs=5",
        scheduler="mo-asha", reduction_factor=2, batch_size=32, out=str(run), progress=False,
        threads=1, measure=False, save_weights=True,
    )  # fmt: skip
    space = load_space(str(tiny_space))
    spec = space.sample_feasible(np.random.default_rng(0))
    path = run / "weights" / f"{spec.arch_id}.pt"
    told, saved = [], {}

    def if_stopped(res):
        told.append(res)
        if path.exists():
            saved[res.epochs] = (path.stat().st_mtime_ns, torch.load(path, weights_only=True))

    ctx = TrialContext(options, space, checkpoint_dir=run / "checkpoints")
    res = evaluate(spec, ctx, lambda e, m: e == 4, if_stopped=if_stopped)  # stopped at rung 2
    assert res.status == "pruned" and res.rung == 2 and res.notes["weights"] == str(path)
    assert [t.epochs for t in told] == [1.0, 2.0, 3.0, 4.0]
    at_rung = {t.epochs: t.notes.get("weights") for t in told}
    assert at_rung == {1.0: str(path), 2.0: str(path), 3.0: None, 4.0: str(path)}
    assert saved[2.0][0] == saved[3.0][0]  # epoch 3 is no rung: the file was not written
    local = torch.load(path, weights_only=True)  # the local executor's, after epoch 4
    assert all(torch.equal(local[k], v) for k, v in saved[4.0][1].items())  # that epoch's
    assert not all(torch.equal(local[k], v) for k, v in saved[2.0][1].items())
    # no run directory (a worker of a cluster joined by --address): the local executor's note
    told.clear()
    res = evaluate(spec, TrialContext(options, space), lambda e, m: e == 1, if_stopped=told.append)
    assert told[0].notes["weights"] == res.notes["weights"]
    assert res.notes["weights"] == "not saved: this worker has no run directory"
