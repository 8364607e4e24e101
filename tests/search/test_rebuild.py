"""A lost or corrupt study.db: --resume says so in one line; --rebuild-study rebuilds the study
from trials.jsonl (the run's fsynced journal) and keeps every completed trial."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest

from fcasearch.cli import main
from fcasearch.search.study import row_trials


@pytest.fixture
def finished_run(tiny_space, search_args, tmp_path):
    out = tmp_path / "run"
    args = search_args(tiny_space, out, "--n-trials", "4", "--objectives", "accuracy:max",
                       "macs:min", "--no-measure", "--sampler", "random")  # fmt: skip
    assert main(args) == 0
    return out


def _resume(out, *extra):
    return main(["search", "--resume", str(out), "--no-progress", "--no-report", *extra])


@pytest.mark.parametrize("damage", ["lost", "garbage", "other database"])
def test_resume_on_a_broken_study_db_rebuilds_it_from_the_journal(
    damage, finished_run, capsys, tmp_path
):
    out = finished_run
    before = pd.read_parquet(out / "trials.parquet")
    db = out / "study.db"
    if damage == "lost":
        db.unlink()
    elif damage == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    else:  # an Optuna database, but without this run's study
        db.unlink()
        optuna.create_study(study_name="another", storage=f"sqlite:///{db}")
    for side in ("study.db-wal", "study.db-shm"):
        (out / side).unlink(missing_ok=True)
    assert _resume(out, "--n-trials", "6") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--rebuild-study" in err and "study.db" in err, err

    assert _resume(out, "--n-trials", "6", "--rebuild-study") == 0
    after = pd.read_parquet(out / "trials.parquet")
    assert len(after) == 6
    kept = after.set_index("trial").loc[before["trial"]]
    assert list(kept["arch_id"]) == list(before["arch_id"])
    assert kept["accuracy"].tolist() == before["accuracy"].tolist()
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{db}")
    trials = row_trials(study.trials)
    assert len(trials) == 6
    for t in trials[:4]:  # the rebuilt trials: same numbers, architectures and values
        row = before.set_index("trial").loc[t.number]
        assert t.user_attrs["arch_id"] == row["arch_id"]
        assert t.values == [row["accuracy"], row["macs"]] and t.constraints == {"space": 0.0}
    if damage != "lost":
        assert list(out.glob("study.db.broken-*"))  # the damaged file is kept aside


def test_rebuild_study_needs_resume(tiny_space, search_args, tmp_path, capsys):
    assert main(search_args(tiny_space, tmp_path / "run", "--rebuild-study")) == 2
    assert "--rebuild-study rebuilds a run's own study.db" in capsys.readouterr().err
