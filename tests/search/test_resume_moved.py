"""A run keeps its study when its folder is moved, copied or renamed: ``--resume`` opens the study
the run records (``run.yaml``), not one named after the folder it now lies in; a resume that
finds no such study stops before it writes anything to the storage; and a new run whose study
name is only its folder's name never joins another run's study of that name by accident."""

from __future__ import annotations

import shutil

import optuna
import pandas as pd
import pytest
import yaml

from fcasearch.cli import main
from fcasearch.search.storages import make_storage

_DRY = ["--objectives", "accuracy", "macs", "--no-measure", "--sampler", "random",
        "--budget", "dry=0.01"]  # fmt: skip


def _start(search_args, space, out, n, *extra):
    return main(search_args(space, out, *_DRY, "--n-trials", str(n), *extra))


def _resume(out, n):
    return main(["search", "--resume", str(out), "--n-trials", str(n), "--no-progress",
                 "--no-report"])  # fmt: skip


def _studies(storage) -> dict[str, int]:
    """Study name -> its number of trials, read with Optuna's public API only."""
    backend = make_storage(storage) if isinstance(storage, str) else storage
    return {
        name: len(optuna.load_study(study_name=name, storage=backend).trials)
        for name in optuna.get_all_study_names(storage=backend)
    }


@pytest.mark.parametrize("how", ["copy", "move"])
def test_a_copied_or_moved_run_resumes_its_own_study(how, tiny_space, search_args, tmp_path):
    first = tmp_path / "run1"
    assert _start(search_args, tiny_space, first, 2) == 0
    moved = tmp_path / "res"
    (shutil.copytree if how == "copy" else shutil.move)(first, moved)

    assert _resume(moved, 4) == 0
    assert _studies(f"sqlite:///{moved / 'study.db'}") == {"run1": 4}
    df = pd.read_parquet(moved / "trials.parquet")
    assert sorted(df["trial"]) == [0, 1, 2, 3]
    assert set(df["run"]) == {"run1"}  # the run keeps its name in every row
    recorded = yaml.safe_load((moved / "run.yaml").read_text())
    assert recorded["name"] == recorded["study_name"] == "run1"
    assert len(pd.read_csv(moved / "trials.csv")) == 4 and (moved / "pareto.csv").exists()
    if how == "copy":  # the original is untouched
        assert _studies(f"sqlite:///{first / 'study.db'}") == {"run1": 2}
    # the report reads the moved run, under its name
    assert main(["report", str(moved), "--no-figures"]) == 0
    assert "run1" in (moved / "report" / "report.md").read_text()


def test_a_failed_resume_writes_nothing_to_the_study_db(tiny_space, search_args, tmp_path, capsys):
    out = tmp_path / "run"
    assert _start(search_args, tiny_space, out, 2) == 0
    db = out / "study.db"
    for path in (db, out / "study.db-wal", out / "study.db-shm"):
        path.unlink(missing_ok=True)
    optuna.create_study(study_name="another", storage=f"sqlite:///{db}")  # not this run's
    capsys.readouterr()

    assert _resume(out, 4) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "'run'" in err and "run.yaml" in err and "'another'" in err, err  # what was looked for
    assert f"--resume {out} --rebuild-study" in err, err  # and the fix
    assert _studies(f"sqlite:///{db}") == {"another": 0}  # no empty study 'run' left behind


def test_a_resumed_run_on_a_shared_storage_finds_its_study_after_a_move(
    tiny_space, search_args, tmp_path, capsys
):
    log = tmp_path / "shared.log"
    storage = f"journal://{log}"
    first = tmp_path / "a" / "alpha"
    assert _start(search_args, tiny_space, first, 2, "--storage", storage) == 0
    moved = tmp_path / "b" / "beta"
    moved.parent.mkdir()
    shutil.move(first, moved)

    assert _resume(moved, 4) == 0
    assert _studies(storage) == {"alpha": 4}
    df = pd.read_parquet(moved / "trials.parquet")
    assert sorted(df["trial"]) == [0, 1, 2, 3]

    # the study is gone from the storage: one line naming it, and the storage is left as it is
    log.unlink()
    capsys.readouterr()
    assert _resume(moved, 6) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'alpha'" in err and "run.yaml" in err, err
    assert _studies(storage) == {}


def test_a_new_run_does_not_join_another_runs_study_of_the_same_folder_name(
    tiny_space, search_args, tmp_path, capsys
):
    storage = f"journal://{tmp_path / 'shared.log'}"
    mine, theirs = tmp_path / "a" / "run", tmp_path / "b" / "run"
    assert _start(search_args, tiny_space, theirs, 2, "--storage", storage) == 0
    capsys.readouterr()

    assert _start(search_args, tiny_space, mine, 2, "--storage", storage) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'run'" in err and "--study-name" in err, err
    assert _studies(storage) == {"run": 2} and not (mine / "run.yaml").exists()

    # named on purpose, it joins the study (several drivers of one study)
    assert _start(search_args, tiny_space, mine, 4, "--storage", storage, "--study-name",
                  "run") == 0  # fmt: skip
    assert _studies(storage) == {"run": 4}
    assert yaml.safe_load((mine / "run.yaml").read_text())["study_name"] == "run"


@pytest.mark.slow
def test_runs_of_one_folder_name_on_postgresql_keep_their_own_studies(
    postgres, tiny_space, search_args, tmp_path, capsys
):
    storage = postgres.create_database("moved")
    first = tmp_path / "a" / "run1"
    assert _start(search_args, tiny_space, first, 2, "--storage", storage) == 0
    other = tmp_path / "b" / "res"
    assert _start(search_args, tiny_space, other, 2, "--storage", storage) == 0
    copy = tmp_path / "c" / "res"  # run1, copied under the other run's folder name
    shutil.copytree(first, copy)
    shutil.rmtree(first)

    assert _resume(copy, 3) == 0
    assert _studies(storage) == {"run1": 3, "res": 2}  # not a trial added to the other run's
    capsys.readouterr()
    assert _start(search_args, tiny_space, tmp_path / "d" / "res", 2, "--storage", storage) == 2
    assert "--study-name" in capsys.readouterr().err
    assert _studies(storage) == {"run1": 3, "res": 2}


def test_a_study_created_between_the_check_and_the_start_is_not_joined(
    tiny_space, search_args, tmp_path, capsys, monkeypatch
):
    """Two runs of one folder name starting at the same moment: both passed the read-only check
    and both ran in one study. The study is now created, never loaded, by such a run: the
    storage gives a name once."""
    from fcasearch.search import runner

    storage = f"journal://{tmp_path / 'shared.log'}"
    theirs, mine = tmp_path / "b" / "run", tmp_path / "a" / "run"
    assert _start(search_args, tiny_space, theirs, 2, "--storage", storage) == 0
    capsys.readouterr()
    monkeypatch.setattr(runner, "_stored_trials", lambda *a: None)  # checked before it existed
    assert _start(search_args, tiny_space, mine, 2, "--storage", storage) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds a study 'run'" in err, err
    assert _studies(storage) == {"run": 2} and not (mine / "run.yaml").exists()


def test_a_run_moved_with_an_interrupted_trial_on_a_shared_storage_settles_it(
    tiny_space, search_args, tmp_path, capsys
):
    """Its trials were known by the folder path, so after a move the trial its killed driver
    left RUNNING stayed RUNNING, never retried. They are known by the run_id run.yaml keeps."""
    storage = f"journal://{tmp_path / 'shared.log'}"
    first = tmp_path / "a" / "alpha"
    assert _start(search_args, tiny_space, first, 2, "--storage", storage) == 0
    run_id = yaml.safe_load((first / "run.yaml").read_text())["run_id"]
    study = optuna.load_study(study_name="alpha", storage=make_storage(storage))
    done = study.trials[0]
    assert done.user_attrs["run_id"] == run_id
    killed = study.ask(fixed_distributions=done.distributions)  # as a killed driver left it
    killed.set_user_attr("run_id", run_id)
    killed.set_user_attr("run_dir", str(first.resolve()))
    other = study.ask(fixed_distributions=done.distributions)  # another run's, still running
    other.set_user_attr("run_id", "0" * 32)
    moved = tmp_path / "b" / "beta"
    moved.parent.mkdir()
    shutil.move(first, moved)
    capsys.readouterr()

    assert _resume(moved, 5) == 0
    assert "1 interrupted trial(s) marked failed and retried" in capsys.readouterr().out
    states = {t.number: t.state for t in optuna.load_study(
        study_name="alpha", storage=make_storage(storage)).trials}  # fmt: skip
    assert states[killed.number] == optuna.trial.TrialState.FAIL
    assert states[other.number] == optuna.trial.TrialState.RUNNING
