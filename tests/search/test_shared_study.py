"""Many drivers on one study (Optuna's distributed mode, e.g. a SLURM array): a real PostgreSQL
server and a journal file. The study gets exactly --n-trials trials between the drivers, none is
lost, and no architecture is evaluated twice at the same budget."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch

from fcasearch.cli import main
from fcasearch.search.options import SearchError, SearchOptions
from fcasearch.search.study import open_study, row_trials
from fcasearch.storage import RunDir, TrialLog

REPO = Path(__file__).resolve().parents[2]


def _drivers(space: Path, root: Path, storage: str, n: int, n_trials: int) -> list[Path]:
    """Start ``n`` search.py processes together on one study; wait for all; their run folders."""
    outs = [root / f"task-{i}" for i in range(n)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(REPO / "search.py"),
                "--space",
                str(space),
                "--out",
                str(out),
                "--storage",
                storage,
                "--study-name",
                "shared",
                "--n-trials",
                str(n_trials),
                "--sampler",
                "random",
                "--seed",
                str(i),
                "--objectives",
                "accuracy:max",
                "macs:min",
                "--no-measure",
                "--budget",
                "steps=3",
                "--batch-size",
                "32",
                "--threads",
                "1",
                "--no-progress",
                "--no-report",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i, out in enumerate(outs)
    ]
    for p in procs:
        text, _ = p.communicate(timeout=400)
        assert p.returncode == 0, text[-3000:]
    return outs


def _check_shared_run(outs: list[Path], storage: str, n_trials: int) -> pd.DataFrame:
    rows = pd.DataFrame([r for out in outs for r in TrialLog(RunDir(out)).rows()])
    study = optuna.load_study(study_name="shared", storage=storage)
    counted = row_trials(study.trials)
    # the right total between the drivers, each trial logged by exactly one of them
    assert len(rows) == n_trials == len(counted)
    assert sorted(rows["trial"]) == sorted(t.number for t in counted)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in counted)
    # no architecture trained twice at one budget: repeats copy the first result
    trained = rows[~rows["notes"].fillna("").str.contains("reused_from")]
    assert trained["arch_id"].is_unique, trained[["trial", "arch_id"]]
    reused = rows[rows["notes"].fillna("").str.contains("reused_from")]
    for _, r in reused.iterrows():
        source = int(json.loads(r["notes"])["reused_from_trial"])
        first = rows.set_index("trial").loc[source]
        assert first["arch_id"] == r["arch_id"] and first["accuracy"] == r["accuracy"]
    return rows


@pytest.mark.slow
def test_drivers_on_postgresql_share_one_study(postgres, tiny_space, tmp_path, capsys):
    storage = postgres.create_database("drivers")
    outs = _drivers(tiny_space, tmp_path, storage, n=3, n_trials=7)
    _check_shared_run(outs, storage.replace("postgresql://", "postgresql+psycopg://"), 7)
    # report.py reads the shared study's runs together
    assert main(["report", *map(str, outs), "--no-figures"]) == 0
    md = (outs[0] / "report" / "report.md").read_text()
    assert "7 trials in 3 runs" in md  # one front over the drivers' trials


@pytest.mark.slow
def test_drivers_on_a_journal_file_share_one_study(tiny_space, tmp_path):
    log = tmp_path / "shared" / "study.log"
    log.parent.mkdir()
    outs = _drivers(tiny_space, tmp_path, f"journal://{log}", n=2, n_trials=5)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    _check_shared_run(outs, JournalStorage(JournalFileBackend(str(log))), 5)


def test_drivers_creating_one_study_at_once_all_get_it(postgres, tiny_space):
    """Table and study creation collide on a fresh database (pg_type's unique index): retried."""
    storage = postgres.create_database("race")
    options = SearchOptions(space=str(tiny_space), objectives="accuracy:max macs:min")
    gate, studies, errors = threading.Barrier(4), [], []

    def driver() -> None:
        try:
            gate.wait()
            studies.append(open_study(options, storage, "race"))
        except Exception as exc:  # recorded, so the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=driver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(studies) == 4
    from fcasearch.search.storages import make_storage

    assert optuna.get_all_study_names(storage=make_storage(storage)) == ["race"]


@pytest.mark.parametrize(
    ("storage", "says"),
    [
        ("postgresql://nobody@127.0.0.1:{port}/nothing", "check that the server is running"),
        ("postgress://nobody@127.0.0.1/db", "not a usable database URL"),
        ("sqlite:///{tmp}/no/such/folder/study.db", "does not exist"),
        ("journal:///{tmp}/no/such/folder/study.log", "does not exist"),
        ("study.sqlite", "not a URL"),
    ],
)
def test_a_storage_that_cannot_be_opened_is_one_line_at_the_start(
    storage, says, tiny_space, search_args, tmp_path, capsys
):
    import socket

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = storage.format(port=port, tmp=tmp_path)
    out = tmp_path / "run"
    assert main(search_args(tiny_space, out, "--storage", url, "--n-trials", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err
    assert "storage" in err and not (out / "run.yaml").exists()  # nothing to --resume


def test_a_driver_settles_only_its_own_interrupted_trials(tmp_path):
    """A driver starting late must not fail another driver's trial, not even one so new that it
    carries no attribute yet (the journal file storage here, as on a shared file system)."""
    from fcasearch.search.study import recover_interrupted

    study = optuna.create_study(storage=_journal(tmp_path), directions=["minimize"])
    fresh = study.ask()  # another driver's, just asked
    theirs = study.ask()
    theirs.set_user_attr("run_dir", "/runs/a")
    ours = study.ask()
    ours.set_user_attr("run_dir", "/runs/b")
    ours.suggest_int("x", 0, 3)
    assert recover_interrupted(study, "/runs/b") == 1
    states = {t.number: t.state for t in study.trials}
    assert states[fresh.number] == states[theirs.number] == optuna.trial.TrialState.RUNNING
    assert states[ours.number] == optuna.trial.TrialState.FAIL
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == ours.number]
    assert retry.state == optuna.trial.TrialState.WAITING
    again = study.ask()  # the next trial asked is the retry, with the same parameters
    assert again.number == retry.number and again.suggest_int("x", 0, 3) == ours.params["x"]


def _journal(tmp_path):
    from fcasearch.search.storages import make_storage

    return make_storage(f"journal://{tmp_path / 'study.log'}")


def test_a_driver_on_another_runtime_cannot_join_the_study(
    tiny_space, search_args, tmp_path, capsys
):
    log = tmp_path / "study.log"
    shared = ["--storage", f"journal://{log}", "--study-name", "shared", "--n-trials", "1"]
    first = tmp_path / "a"
    assert main([*search_args(tiny_space, first, *shared)]) == 0
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(log)))
    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    at = f"batch 1, fp32, {torch.get_num_threads()} thread"
    (recorded,) = [t.user_attrs["runtime"] for t in trials]
    assert recorded.startswith(f"eager at {at}"), recorded
    capsys.readouterr()
    other = ["--runtime-option", "pointwise_conv=false", "--n-trials", "2"]
    assert main([*search_args(tiny_space, tmp_path / "b", *shared, *other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"measure latency on {recorded}, this driver on " in err
    assert "eager (pointwise_conv=False) at batch 1" in err
    # the same runtime at another batch size or thread count: its latencies would mix too (only
    # the runtime and its options were compared, so both joined the study)
    threads = torch.get_num_threads()
    try:
        for setting in (["--latency-batch-size", "4"], ["--threads", str(threads + 1)]):
            capsys.readouterr()
            argv = [*search_args(tiny_space, tmp_path / "c", *shared, *setting), "--n-trials", "2"]
            assert main(argv) == 2, setting
            assert "--latency-batch-size" in capsys.readouterr().err
            assert len(optuna.load_study(study_name="shared", storage=storage).get_trials()) == 1
    finally:
        torch.set_num_threads(threads)  # --threads sets this process's count


def test_trials_that_recorded_the_runtime_alone_are_compared_by_the_runtime():
    """A study whose trials a version before the settings labels wrote (``eager``): a driver on
    eager joins it, one on another runtime does not."""
    from fcasearch.search.runner import _check_study_runtime

    study = optuna.create_study()
    study.ask().set_user_attr("runtime", "eager")
    _check_study_runtime(study, "s", "eager at batch 1, fp32, 2 threads")
    with pytest.raises(SearchError, match="measure latency on eager, this driver on onnx"):
        _check_study_runtime(study, "s", "onnxruntime at batch 1, fp32, 2 threads")


def test_an_owner_on_another_runtime_is_not_reused(tmp_path):
    from fcasearch.search.shared import find_owner

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    for number, runtime in enumerate(("eager (pointwise_conv=False)", "eager")):
        trial = study.ask()
        attrs = {"arch_id": "a1", "budget": "epochs=2", "runtime": runtime}
        for key, value in {**attrs, "metrics": {"trial": number}}.items():
            trial.set_user_attr(key, value)
        study.tell(trial, 1.0)
    assert find_owner(study, 2, "a1", "epochs=2", runtime="eager").number == 1
    assert find_owner(study, 2, "a1", "epochs=2").number == 0  # no runtime asked: the first
    assert find_owner(study, 2, "a1", "epochs=2", runtime="onnxruntime") is None
