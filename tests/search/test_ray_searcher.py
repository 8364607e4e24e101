"""The Ray searcher pickles as plain data (Tune pickles it) and works again once unpickled.

No Ray is started: Tune calls these hooks in the driver, and so do the tests."""

from __future__ import annotations

import json
import pickle

import optuna

from fcasearch.search.objective import TrialResult
from fcasearch.search.options import SearchOptions
from fcasearch.search.progress import SearchProgress
from fcasearch.search.ray_searcher import StudySearcher
from fcasearch.search.study import open_study
from fcasearch.space import load_space
from fcasearch.spec import ArchSpec
from fcasearch.storage import RunDir, TrialLog


def _row(cfg: dict, accuracy: float) -> str:
    spec = ArchSpec.from_json(cfg["spec"])
    res = TrialResult(spec=spec, status="complete", budget="steps=3")
    res.metrics = {"accuracy": accuracy, "macs": 1000.0 + accuracy, "params": 10.0}
    return json.dumps(res.row(cfg["trial_number"], cfg["run"]))


def test_the_searcher_pickles_without_its_study_bar_or_trials(tiny_space, tmp_path):
    import cloudpickle

    run = tmp_path / "run"
    options = SearchOptions(space=str(tiny_space), objectives="accuracy:max macs:min",
                            measure=False, budget="steps=3", n_trials=3, out=str(run))  # fmt: skip
    space = load_space(str(tiny_space))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(options, storage, "s", space=space)
    bar = SearchProgress(3, options.objectives, [], enabled=True)  # a live tqdm bar
    searcher = StudySearcher(storage=storage, study_name="s", options=options.to_dict(),
                             space=space.to_dict(), run_root=str(run), n_trials=3, study=study,
                             progress=bar)  # fmt: skip
    first = searcher.suggest("t1")  # an Optuna trial in flight
    blob = cloudpickle.dumps(searcher)  # what tune.Tuner does (it failed on a lock before)
    assert b"tqdm" not in blob and b"_thread" not in blob
    clone = pickle.loads(blob)
    bar.close()

    # the original finishes its trial; the clone, reopening the study by URL, asks the next
    searcher.on_trial_complete("t1", {"row": _row(first, 0.5)})
    second = clone.suggest("t2")
    assert second["trial_number"] == first["trial_number"] + 1
    clone.on_trial_complete("t2", {"row": _row(second, 0.25)})
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert [t.values[0] for t in trials] == [0.5, 0.25]
    assert [r["trial"] for r in TrialLog(RunDir(run)).rows()] == [0, 1]

    # Tune's own checkpoint of the searcher: plain state, restored into a fresh one
    searcher.save(str(tmp_path / "searcher.pkl"))
    fresh = pickle.loads(blob)
    fresh.restore(str(tmp_path / "searcher.pkl"))
    assert fresh.ran == 1 and fresh.finished == {"t1"}


def test_the_searcher_stops_at_the_studys_total(tiny_space, tmp_path):
    from ray.tune.search import Searcher

    options = SearchOptions(space=str(tiny_space), objectives="macs:min", measure=False,
                            n_trials=2, out=str(tmp_path / "run"))  # fmt: skip
    space = load_space(str(tiny_space))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    searcher = StudySearcher(storage=storage, study_name="s", options=options.to_dict(),
                             space=space.to_dict(), run_root=str(tmp_path / "run"), n_trials=2)  # fmt: skip
    assert searcher.suggest("a") and searcher.suggest("b")
    assert searcher.suggest("c") == Searcher.FINISHED  # two running already make the total


def test_a_trial_failed_after_a_rung_keeps_no_weights(tiny_space, tmp_path):
    """Its worker died after the rung where --save-weights saved its weights: the file stayed, and
    the failed row named it, where the local executor keeps none for a failed trial."""
    run = tmp_path / "run"
    options = SearchOptions(space=str(tiny_space), objectives="accuracy:max macs:min",
                            measure=False, budget="epochs=9", n_trials=2, out=str(run),
                            scheduler="asha", min_epochs=1, save_weights=True)  # fmt: skip
    space = load_space(str(tiny_space))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    searcher = StudySearcher(storage=storage, study_name="s", options=options.to_dict(),
                             space=space.to_dict(), run_root=str(run), n_trials=2,
                             study=open_study(options, storage, "s", space=space))  # fmt: skip
    cfg = searcher.suggest("t1")
    spec = ArchSpec.from_json(cfg["spec"])
    weights = RunDir(run).weights_file(spec.arch_id)
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"state_dict at the rung")  # what the worker saved at epoch 1
    at_rung = json.loads(_row(cfg, 0.5))
    at_rung.update(epochs=1.0, train_seconds=2.0, notes=json.dumps({"weights": str(weights)}))
    searcher.on_trial_result("t1", {"epoch": 1, "accuracy": 0.5,
                                    "row_so_far": json.dumps(at_rung)})  # fmt: skip
    searcher.trial_failed("t1", "ActorDiedError: the worker died")
    (row,) = TrialLog(RunDir(run)).rows()
    notes = json.loads(row["notes"])
    assert row["status"] == "failed" and row["reason"].startswith("ActorDiedError")
    assert not weights.exists() and notes["weights"].startswith("removed")
    assert "last epoch report (epoch 1.0)" in notes["seconds"] and row["train_seconds"] == 2.0


def test_a_trial_failed_on_the_data_starts_no_other(tiny_space, tmp_path):
    """The searcher stops suggesting (run_ray then stops the search with the message) once a
    trial fails on the data: every other trial would."""
    from ray.tune.search import Searcher

    run = tmp_path / "run"
    options = SearchOptions(space=str(tiny_space), objectives="macs:min", measure=False,
                            n_trials=5, out=str(run))  # fmt: skip
    space = load_space(str(tiny_space))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    searcher = StudySearcher(storage=storage, study_name="s", options=options.to_dict(),
                             space=space.to_dict(), run_root=str(run), n_trials=5)  # fmt: skip
    cfg = searcher.suggest("t1")
    row = json.loads(_row(cfg, 0.5))
    row.update(status="failed", reason="DataError: root: '/x/bad.png' cannot be opened")
    searcher.on_trial_complete("t1", {"row": json.dumps(row)})
    assert "failed on the data" in searcher.data_fault and "bad.png" in searcher.data_fault
    assert searcher.suggest("t2") == Searcher.FINISHED
