"""MO-ASHA on the Ray executor: the Tune scheduler stops trials at rungs; rows and study agree."""

from __future__ import annotations

import contextlib
import io

import optuna
import pandas as pd
import pytest
from searchkit import search_args

from fcasearch.cli import main


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
    assert pruned["reason"].str.contains("stopped by the scheduler at rung").all()
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    by_number = {t.number: t for t in study.trials}
    for _, row in df.iterrows():
        t = by_number[int(row["trial"])]
        assert t.user_attrs["rung"] == row["rung"]
        assert "0" in t.user_attrs["rung_values"]  # for a resumed run's scheduler
        want = "PRUNED" if row["status"] == "pruned" else "COMPLETE"
        assert t.state.name == want
