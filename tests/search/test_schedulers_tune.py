"""The Ray Tune side of ASHA / MO-ASHA: a TrialScheduler driven by per-epoch results."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest

pytest.importorskip("ray.tune")

from ray.tune.schedulers import TrialScheduler

from fcasearch.metrics import Objective
from fcasearch.search.schedulers import RungSchedule
from fcasearch.search.schedulers.tune import RungTuneScheduler

ACC_MACS = (Objective("accuracy", "maximize"), Objective("macs", "minimize"))


def _result(epoch, acc, macs):
    return {"epoch": epoch, "accuracy": acc, "macs": macs, "training_iteration": epoch}


def test_tune_scheduler_stops_trials_at_rungs_by_non_dominated_sorting():
    sched = RungTuneScheduler(RungSchedule(4, 1, 2), ACC_MACS, "mo-asha")
    a, b, c = (SimpleNamespace(trial_id=x) for x in "abc")
    assert not sched.supports_buffered_results
    assert sched.on_trial_result(None, a, _result(1, 0.5, 100.0)) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, b, _result(1, 0.4, 200.0)) == TrialScheduler.STOP
    assert sched.stopped == {"b": 0}
    # the final row (no epoch) and epochs off a rung pass
    assert sched.on_trial_result(None, a, {"final": 1, "row": "{}"}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, a, _result(3, 0.1, 100.0)) == TrialScheduler.CONTINUE
    # c dominates both at rung 0
    assert sched.on_trial_result(None, c, _result(1, 0.6, 10.0)) == TrialScheduler.CONTINUE
    assert sched.rung_values("a") == {"0": [0.5, 100.0]}
    assert "mo-asha" in sched.debug_string() and "1, 2" in sched.debug_string()
    pickle.loads(pickle.dumps(sched))  # Tune pickles its scheduler with the tuner


def test_tune_scheduler_is_seeded_by_a_resumed_runs_rungs():
    seeds = [("study:0", 0, [0.9]), ("study:1", 0, [0.95, 1.0])]  # the second: another run
    sched = RungTuneScheduler(RungSchedule(4, 1, 2), ACC_MACS, "asha", seed_values=seeds)
    worse = SimpleNamespace(trial_id="x")
    assert sched.on_trial_result(None, worse, _result(1, 0.5, 1.0)) == TrialScheduler.STOP
