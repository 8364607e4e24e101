"""What the study holds for each trial: infeasible ones never read as results, attributes a
person needs in optuna-dashboard, and samplers that still learn from the constraints."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from fcasearch.measure.counting import count_macs, count_params
from fcasearch.search.objective import TrialResult
from fcasearch.search.options import SearchOptions, parse_objectives
from fcasearch.search.study import (
    constraint_violation,
    make_sampler,
    recover_interrupted,
    study_attrs,
    tell,
)
from fcasearch.space import load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _space(max_params: int):
    raw = load_space("micro").to_dict()
    raw["constraints"] = {"max_params": max_params}
    return load_space(raw, source="micro with a tighter limit")


def _result(space, spec, **metrics) -> TrialResult:
    m = {"params": float(count_params(spec)), "macs": float(count_macs(spec)), **metrics}
    why = space.constraints.check_closed_form(spec)
    status = "infeasible" if why else "complete"
    return TrialResult(spec=spec, status=status, reason="; ".join(why), metrics=m)


def _run(space, objectives: str, sampler: str, seed: int, n: int, told=tell):
    """A search told the way the executors tell it, with a closed-form objective; returns the
    study and which trials were infeasible."""
    objs = parse_objectives(objectives)
    opts = SearchOptions(
        space="micro", objectives=objectives, sampler=sampler, n_trials=n, seed=seed
    )
    study = optuna.create_study(
        sampler=make_sampler(opts, space), directions=[o.direction for o in objs]
    )
    infeasible = []
    for _ in range(n):
        trial = study.ask()
        spec = space.sample(trial)
        trial.set_user_attr("arch_id", spec.arch_id)
        result = _result(space, spec, accuracy=0.5)
        told(study, trial, result, objs, space.constraints)
        infeasible.append(result.status == "infeasible")
    return study, np.array(infeasible)


def test_infeasible_trials_are_never_results():
    space = _space(60_000)
    study, infeasible = _run(space, "params:max macs:min", "nsga2", seed=0, n=40)
    assert infeasible.any() and not infeasible.all()
    for t, bad in zip(study.trials, infeasible):
        if bad:
            # PRUNED, not COMPLETE: no values any client could rank; why, in the attributes
            assert t.state == optuna.trial.TrialState.PRUNED and t.values is None
            assert t.constraints["space"] > 0
            assert t.user_attrs["status"] == "infeasible"
            assert "max_params" in t.user_attrs["reason"]
        else:
            assert t.state == optuna.trial.TrialState.COMPLETE and t.constraints["space"] == 0
    best = {t.number for t in study.best_trials}
    assert best and not best & {t.number for t, bad in zip(study.trials, infeasible) if bad}
    # a run where nothing is feasible has no best trials at all
    none_fit, infeasible = _run(_space(1_000), "params:max macs:min", "random", seed=0, n=6)
    assert infeasible.all() and none_fit.best_trials == []


def _told_as_failed(study, trial, result, objectives, constraints):
    """The alternative: infeasible trials as FAIL, which samplers ignore altogether."""
    if result.status == "infeasible":
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    else:
        tell(study, trial, result, objectives, constraints)


def test_tpe_still_learns_from_infeasible_trials():
    """The best networks (most parameters) lie just past the limit: TPE, told the infeasible
    trials' constraints, proposes fewer of them than TPE told nothing (FAIL)."""
    space = _space(60_000)
    informed = np.mean([_run(space, "params:max", "tpe", seed, 50)[1][-25:] for seed in range(3)])
    blind = np.mean(
        [_run(space, "params:max", "tpe", seed, 50, _told_as_failed)[1][-25:] for seed in range(3)]
    )
    assert informed < blind - 0.15


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_nsga2_never_proposes_an_infeasible_architecture_again():
    space = _space(60_000)
    study, infeasible = _run(space, "params:max macs:min", "nsga2", seed=1, n=60)
    ids = [t.user_attrs["arch_id"] for t in study.trials]
    assert len(set(ids)) == len(ids)
    assert infeasible[30:].mean() < 0.5  # children come from feasible parents


def test_study_attrs_say_what_a_person_needs():
    space = load_space("micro")
    spec = space.sample(np.random.default_rng(0))
    objs = parse_objectives("accuracy macs latency_ms")
    done = _result(space, spec, accuracy=0.9, latency_ms=1.25, peak_mem_mb=3.0)
    attrs = study_attrs(done, objs)
    assert attrs["status"] == "complete" and attrs["spec"] == spec.short()
    assert attrs["params"] == count_params(spec) and isinstance(attrs["params"], int)
    assert attrs["macs"] == count_macs(spec) and attrs["latency_ms"] == 1.25
    assert "reason" not in attrs and "rung" not in attrs and "accuracy" not in attrs
    pruned = _result(space, spec, accuracy=0.4)
    pruned.status, pruned.reason, pruned.rung = "pruned", "stopped by mo-asha at rung 0", 0
    attrs = study_attrs(pruned, objs)
    assert attrs["accuracy"] == 0.4 and attrs["rung"] == 0 and "latency_ms" not in attrs
    assert len(attrs) <= 7  # a handful: each is one storage write


def _space_with(**limits):
    raw = load_space("micro").to_dict()
    raw["constraints"] = limits
    return load_space(raw, source=f"micro with {limits}")


def test_an_infeasible_trial_whose_limit_has_no_ratio_still_violates():
    # the latency could not be measured (NaN) but the space limits it: the trial is infeasible,
    # and its violation must be > 0, so that no sampler reads it as feasible
    space = _space_with(max_latency_ms=5.0)
    spec = space.sample(np.random.default_rng(0))
    unmeasured = TrialResult(
        spec=spec,
        status="infeasible",
        reason="latency not measured",
        metrics={"latency_ms": np.nan},
    )
    assert constraint_violation(unmeasured, space.constraints) == 1.0
    # with a ratio, the relative excess; within the limit, 0
    slow = TrialResult(spec=spec, status="infeasible", metrics={"latency_ms": 7.5})
    assert constraint_violation(slow, space.constraints) == pytest.approx(0.5)
    fast = TrialResult(spec=spec, status="complete", metrics={"latency_ms": 2.5})
    assert constraint_violation(fast, space.constraints) == 0.0


_PRUNED, _COMPLETE, _FAIL = (
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.FAIL,
)


@pytest.mark.parametrize(
    "status, state",
    [("infeasible", _PRUNED), ("pruned", _PRUNED), ("complete", _COMPLETE), ("failed", _FAIL)],
)
def test_a_logged_row_is_recovered_as_tell_records_it(status, state):
    """A killed driver left the trial RUNNING after its row was logged: the trial recorded again
    from that row has the state, values and constraint tell() gives the same result; an
    infeasible or pruned row is PRUNED, never COMPLETE with made-up values."""
    space = _space_with(max_params=1_000 if status == "infeasible" else 10**9)
    objs = parse_objectives("accuracy:max latency_ms:min")
    studies = [
        optuna.create_study(
            directions=[o.direction for o in objs], sampler=optuna.samplers.RandomSampler(seed=0)
        )
        for _ in range(2)
    ]
    told, killed = (study.ask() for study in studies)
    for trial in (told, killed):
        spec = space.sample(trial)
        trial.set_user_attr("arch_id", spec.arch_id)
    result = _result(space, spec, accuracy=0.4, latency_ms=3.0)
    assert (result.status == "infeasible") == (status == "infeasible")
    if status == "infeasible":
        assert "max_params" in result.reason
    elif status != "complete":
        result.status, result.reason = status, f"{status}: by the test"
    tell(studies[0], told, result, objs, space.constraints)
    row = {"status": result.status, "reason": result.reason, "spec": spec.to_json()}
    row.update(result.metrics)
    rows = {killed.number: row}
    assert recover_interrupted(studies[1], None, rows, objs, space.constraints) == 1
    want = studies[0].trials[0]
    dropped, got = studies[1].trials
    assert dropped.state == _FAIL
    assert got.state == want.state == state
    assert got.values == want.values and got.params == want.params
    assert got.constraints == want.constraints
    if status == "infeasible":
        assert got.constraints["space"] == constraint_violation(result, space.constraints) > 0
    assert got.user_attrs["status"] == status
    assert got.user_attrs.get("reason") == want.user_attrs.get("reason")
    assert got.user_attrs["logged_as"] == killed.number
    assert got.user_attrs["arch_id"] == want.user_attrs["arch_id"]
    assert [t.number for t in studies[1].best_trials] == ([1] if status == "complete" else [])
