"""ASHA / MO-ASHA in a real local search: trials stopped at a rung keep their row."""

from __future__ import annotations

import optuna
import pandas as pd
import yaml

from fcasearch.cli import main


def test_mo_asha_stops_trials_at_rungs_and_keeps_their_rows(search_args, tmp_path):
    out = tmp_path / "run"
    args = search_args(
        "micro", out, "--subset-fraction", "0.1",
        "--objectives", "accuracy:max", "macs:min", "--no-measure",
        "--budget", "epochs=4", "--scheduler", "mo-asha", "--reduction-factor", "2",
        "--n-trials", "8", "--sampler", "random",
    )  # fmt: skip
    assert main(args) == 0
    df = pd.read_parquet(out / "trials.parquet")
    assert len(df) == 8 and set(df["status"]) <= {"complete", "pruned"}
    pruned, done = df[df["status"] == "pruned"], df[df["status"] == "complete"]
    assert len(pruned) >= 1 and len(done) >= 1  # the first trial at every rung goes on
    # rungs at epochs 1 and 2 of 4: a pruned trial stopped at one, with its accuracy there
    assert set(pruned["rung"]) <= {0, 1}
    assert (pruned["epochs"] == pruned["rung"].map({0: 1.0, 1: 2.0})).all()
    assert pruned["accuracy"].between(0, 1).all() and (pruned["macs"] > 0).all()
    assert pruned["reason"].str.contains("stopped by mo-asha at rung").all()
    assert (done["rung"] == 2).all() and (done["epochs"] == 4).all()
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    for t in study.trials:
        row = df[df["trial"] == t.number].iloc[0]
        assert t.user_attrs["rung"] == row["rung"] and "0" in t.user_attrs["rung_values"]
        if row["status"] == "pruned":
            assert t.state == optuna.trial.TrialState.PRUNED
            assert t.user_attrs["accuracy"] == round(row["accuracy"], 6)
    run = yaml.safe_load((out / "run.yaml").read_text())
    assert run["options"]["scheduler"] == "mo-asha" and run["options"]["reduction_factor"] == 2
    # a resumed run decides from the rungs its study holds
    assert (
        main(["search", "--resume", str(out), "--n-trials", "10", "--no-progress", "--no-report"])
        == 0
    )
    assert len(pd.read_parquet(out / "trials.parquet")) == 10


def test_fifo_rows_have_no_rung_and_asha_is_a_deprecated_alias(
    search_args, tiny_space, tmp_path, capsys
):
    out = tmp_path / "fifo"
    assert (
        main(
            search_args(
                tiny_space,
                out,
                "--n-trials",
                "2",
                "--no-measure",
                "--objectives",
                "accuracy",
                "macs",
            )
        )
        == 0
    )
    df = pd.read_parquet(out / "trials.parquet")
    assert "rung" in df.columns and df["rung"].isna().all()
    out = tmp_path / "asha"
    args = search_args(
        tiny_space, out, "--n-trials", "1", "--no-measure", "--budget", "epochs=2", "--asha",
        "--objectives", "accuracy", "macs",
        "--subset-fraction", "0.1",
    )  # fmt: skip
    assert main(args) == 0
    assert "--asha is deprecated" in capsys.readouterr().err
    assert yaml.safe_load((out / "run.yaml").read_text())["options"]["scheduler"] == "asha"
