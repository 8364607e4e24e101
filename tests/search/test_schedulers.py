"""Rungs and the promotion rule of ASHA / MO-ASHA, and the Optuna pruner that applies it."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from fcasearch.metrics import Objective
from fcasearch.search.options import SearchError, SearchOptions
from fcasearch.search.schedulers import (
    RUNG_VALUES_ATTR,
    RungPruner,
    RungSchedule,
    RungTable,
    StudyScheduler,
    contributions,
    crowding_distance,
    promotable,
    promotion_order,
    rung_bounds,
    rung_objectives,
    rung_values_from_study,
    schedule_for,
)
from fcasearch.search.study import make_pruner

optuna.logging.set_verbosity(optuna.logging.WARNING)

ACC_MACS = (Objective("accuracy", "maximize"), Objective("macs", "minimize"))
MAX_MIN = ["maximize", "minimize"]


def test_rungs_are_r_times_eta_to_the_k_below_the_budget():
    assert RungSchedule(8, 1, 2).milestones == (1, 2, 4)
    assert RungSchedule(8).milestones == (1, 3)  # defaults r=1, eta=3
    assert RungSchedule(27, 1, 3).milestones == (1, 3, 9)
    assert RungSchedule(10, 2, 2).milestones == (2, 4, 8)
    assert RungSchedule(1, 1, 2).milestones == ()
    s = RungSchedule(8, 1, 2)
    assert [s.rung_at(e) for e in range(1, 9)] == [0, 1, None, 2, None, None, None, None]
    # the last rung reached by a trial that trained so many epochs; the full budget is the top
    assert [s.rung_reached(e) for e in (0.5, 1, 3, 4, 7.5, 8)] == [None, 0, 1, 2, 2, 3]
    assert "1, 2, 4" in s.describe() and "eta=2" in s.describe()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(max_epochs=8, min_epochs=0), "min_epochs"),
        (dict(max_epochs=8, min_epochs=1.5), "min_epochs"),
        (dict(max_epochs=8, reduction_factor=1), "reduction_factor"),
        (dict(max_epochs=0), "max_epochs"),
    ],
)
def test_bad_schedules_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RungSchedule(**kwargs)


def test_single_objective_promotion_keeps_the_top_1_over_eta():
    # the first trial at a rung always goes on; then the best max(1, n // eta) of n
    assert promotable([0.1], [], ["maximize"], 3)
    assert not promotable([0.5], [[0.6]], ["maximize"], 3)
    assert promotable([0.7], [[0.6]], ["maximize"], 3)
    peers = [[0.1], [0.2], [0.3], [0.4], [0.5]]  # n = 6 with the newcomer: 2 go on
    assert promotable([0.45], peers, ["maximize"], 3)
    assert not promotable([0.35], peers, ["maximize"], 3)
    assert not promotable([0.4], peers, ["maximize"], 3)  # a tie goes to the earlier trial
    assert promotable([0.1], [[0.3]], ["minimize"], 2)


def test_mo_promotion_is_non_dominated_sorting_then_crowding():
    pts = [
        [0.90, 100.0],  # 0: front 0, an end
        [0.50, 10.0],  # 1: front 0, the other end
        [0.70, 50.0],  # 2: front 0, inside
        [0.60, 60.0],  # 3: dominated by 2 only (front 1)
        [0.40, 200.0],  # 4: dominated by 3 (front 2)
    ]
    assert promotion_order(pts, MAX_MIN, tie_column=0).tolist() == [0, 1, 2, 3, 4]
    # a cheap newcomer that dominates nothing but is on the front is promoted before a
    # dominated, more accurate one: accuracy alone would rank it last
    peers = [[0.9, 100.0], [0.8, 120.0], [0.7, 130.0], [0.6, 140.0], [0.55, 150.0]]
    assert promotable([0.3, 5.0], peers, MAX_MIN, 3, tie_column=0)
    assert not promotable([0.3], [[p[0]] for p in peers], ["maximize"], 3)
    # inside one front, the less crowded point goes first: of the close pair 2, 3, one is last
    front = [[0.9, 100.0], [0.1, 0.0], [0.5, 45.0], [0.52, 50.0], [0.2, 5.0]]
    order = promotion_order(front, MAX_MIN, tie_column=0).tolist()
    assert order[:2] == [0, 1]  # the ends
    assert order[-1] in (2, 3) and order[2] in (3, 4)


def test_mo_asha_ranks_a_front_by_hypervolume_contribution_under_the_runs_definition():
    """Without bounds the two ends of a front tie (crowding) and accuracy decides: the large
    network goes on. Under the run's definition (accuracy in [0, 1], MACs up to 1.2M) the
    network 2.2x cheaper at 1.6 points less accuracy dominates far more of the box, and goes on."""
    accurate, cheap = [0.977, 638_688.0], [0.961, 286_880.0]
    bounds = [(1.0, 0.0), (0.0, 1_200_000.0)]
    assert not promotable(cheap, [accurate], MAX_MIN, 3, tie_column=0)
    assert promotable(cheap, [accurate], MAX_MIN, 3, tie_column=0, bounds=bounds)
    z = contributions(np.array([accurate, cheap]), bounds)
    assert z[1] > 10 * z[0] > 0
    # a point beyond the reference contributes nothing; one counted column: no contributions
    assert contributions(np.array([[0.5, 2e6], [0.4, 1e5]]), bounds)[0] == 0
    assert not contributions(np.array([accurate, cheap]), [(1.0, 0.0), None]).any()


def test_rung_bounds_come_from_the_runs_hypervolume_definition(tiny_space):
    from fcasearch.space import load_space
    from fcasearch.space.bounds import space_hypervolume

    space = load_space(tiny_space)
    pairs = [("accuracy", "maximize"), ("macs", "minimize"), ("latency_ms", "minimize")]
    definition = space_hypervolume(space, pairs)
    objs = tuple(Objective(n, d) for n, d in pairs)
    bounds = rung_bounds(definition, objs)
    assert bounds[0] == (1.0, 0.0) and bounds[1][0] == 0.0 and bounds[1][1] > 0
    assert bounds[2] is None  # latency has no reference without a constraint or --hv-reference
    o = SearchOptions(
        space=str(tiny_space), objectives="accuracy macs", budget="epochs=4", scheduler="mo-asha"
    )
    assert make_pruner(o).bounds == bounds[:2]  # derived from the space when not given
    given = space_hypervolume(space, pairs[:2], {"macs": "1000"})
    assert make_pruner(o, definition=given).bounds == ((1.0, 0.0), (0.0, 1000.0))
    asha = SearchOptions(
        space=str(tiny_space), objectives="accuracy macs", budget="epochs=4", scheduler="asha"
    )
    assert make_pruner(asha).bounds is None  # accuracy alone: no fronts to rank


def test_crowding_distance_of_a_front():
    d = crowding_distance(np.array([[0.0, 4.0], [1.0, 2.0], [3.0, 1.0], [4.0, 0.0]]))
    assert math.isinf(d[0]) and math.isinf(d[3])
    assert d[1] == pytest.approx(3 / 4 + 3 / 4) and d[2] == pytest.approx(3 / 4 + 2 / 4)
    assert np.isinf(crowding_distance(np.array([[1.0, 2.0], [2.0, 1.0]]))).all()


def test_missing_values_rank_last():
    order = promotion_order([[math.nan, 10.0], [0.2, 10.0], [0.1, math.inf]], MAX_MIN, 0)
    assert order.tolist()[0] == 1
    assert promotion_order([[math.nan], [0.1]], ["maximize"]).tolist() == [1, 0]


def test_rung_objectives_need_accuracy():
    assert rung_objectives("asha", ACC_MACS) == (ACC_MACS[0],)
    assert rung_objectives("mo-asha", ACC_MACS) == ACC_MACS
    with pytest.raises(ValueError, match="accuracy"):
        rung_objectives("mo-asha", (Objective("macs", "minimize"),))


def test_rung_table_decides_asynchronously_and_remembers():
    table = RungTable(RungSchedule(8, 1, 2), ACC_MACS)
    assert table.decide("a", 1, {"accuracy": 0.5, "macs": 100.0})  # first at rung 0
    assert table.decide("a", 3, {"accuracy": 0.1, "macs": 100.0})  # epoch 3 is no rung
    assert not table.decide("b", 1, {"accuracy": 0.4, "macs": 100.0})  # dominated by a
    assert table.decide("c", 1, {"accuracy": 0.6, "macs": 100.0})  # n=3, keep 1: c is best
    assert len(table) == 3 and set(table.values[0]) == {"a", "b", "c"}


def test_options_choose_the_scheduler_and_check_it(tmp_path):
    space = "micro"
    o = SearchOptions(space=space, objectives="accuracy macs", budget="epochs=8")
    assert o.scheduler == "fifo" and schedule_for(o) is None
    assert isinstance(make_pruner(o), optuna.pruners.NopPruner)
    o = SearchOptions(
        space=space,
        objectives="accuracy macs",
        budget="epochs=8",
        scheduler="mo-asha",
        reduction_factor=2,
    )
    assert schedule_for(o).milestones == (1, 2, 4)
    pruner = make_pruner(o)
    assert isinstance(pruner, RungPruner) and pruner.ranked == ACC_MACS
    with pytest.raises(SearchError, match="epochs"):
        SearchOptions(space=space, objectives="accuracy", budget="steps=10", scheduler="asha")
    with pytest.raises(SearchError, match="no rung"):
        SearchOptions(space=space, objectives="accuracy", budget="epochs=1", scheduler="asha")
    with pytest.raises(SearchError, match="accuracy"):
        SearchOptions(space=space, objectives="proxy.naswot macs", scheduler="mo-asha")
    with pytest.raises(SearchError, match="scheduler"):
        SearchOptions(space=space, scheduler="hyperband")
    # options of earlier versions still load: asha -> scheduler asha, the median pruner is gone
    legacy = {"space": space, "objectives": "accuracy", "budget": "epochs=4"}
    old = SearchOptions.from_mapping({**legacy, "asha": True, "pruner": "median"})
    assert old.scheduler == "asha"


def _trial_at(study, scheduler, epochs_acc, macs):
    """Ask a trial and report its accuracy per epoch until the scheduler stops it."""
    trial = study.ask()
    for epoch, acc in enumerate(epochs_acc, start=1):
        if scheduler.report(trial, epoch, {"accuracy": acc, "macs": macs, "params": 1.0}):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return trial, epoch
    values = [epochs_acc[-1], macs][: len(study.directions)]
    study.tell(trial, values)
    return trial, len(epochs_acc)


def test_study_scheduler_prunes_a_multi_objective_study_from_user_attrs():
    """Optuna refuses trial.report in multi-objective studies: the rung values live in user
    attributes, and a study (or a resumed run's study) is enough to decide."""
    schedule = RungSchedule(4, 1, 2)  # rungs at epochs 1, 2
    study = optuna.create_study(
        directions=["maximize", "minimize"], pruner=RungPruner(schedule, ACC_MACS, "mo-asha")
    )
    sched = StudyScheduler(study, ACC_MACS)
    _, stopped = _trial_at(study, sched, [0.5, 0.6, 0.7, 0.8], 100.0)
    assert stopped == 4  # first at every rung
    _, stopped = _trial_at(study, sched, [0.4, 0.5, 0.6, 0.7], 100.0)  # dominated at rung 0
    assert stopped == 1
    # cheaper: on the front with trial 0, but rung 0 now keeps 3 // 2 = 1 trial, the two front
    # members tie on crowding (both extremes) and accuracy breaks the tie for trial 0
    _, stopped = _trial_at(study, sched, [0.3, 0.4, 0.5, 0.6], 10.0)
    assert stopped == 1
    t0, t1 = study.trials[:2]
    assert t0.user_attrs[RUNG_VALUES_ATTR] == {"0": [0.5, 100.0], "1": [0.6, 100.0]}
    assert t1.user_attrs[RUNG_VALUES_ATTR] == {"0": [0.4, 100.0]}
    assert t1.state == optuna.trial.TrialState.PRUNED and t0.state.name == "COMPLETE"
    # a fresh scheduler on the same study (a resumed run) sees the same rungs
    again = StudyScheduler(study, ACC_MACS)
    trial = study.ask()
    assert again.report(trial, 1, {"accuracy": 0.45, "macs": 100.0})  # dominated by trial 0
    seeds = rung_values_from_study(study)
    assert ("study:0", 1, [0.6, 100.0]) in seeds and ("study:1", 0, [0.4, 100.0]) in seeds


def test_asha_on_a_single_objective_study_reports_learning_curves():
    schedule = RungSchedule(4, 1, 2)
    acc = (Objective("accuracy", "maximize"),)
    study = optuna.create_study(direction="maximize", pruner=RungPruner(schedule, acc, "asha"))
    sched = StudyScheduler(study, acc)
    _trial_at(study, sched, [0.5, 0.6, 0.7, 0.8], 0.0)
    _, stopped = _trial_at(study, sched, [0.4, 0.5, 0.6, 0.7], 0.0)
    assert stopped == 1
    first, second = study.trials
    assert first.intermediate_values == {1: 0.5, 2: 0.6, 3: 0.7, 4: 0.8}
    assert second.intermediate_values == {1: 0.4} and second.value == 0.4


def test_fifo_never_stops_and_writes_no_rungs():
    study = optuna.create_study(directions=["maximize", "minimize"])
    sched = StudyScheduler(study, ACC_MACS)
    _, stopped = _trial_at(study, sched, [0.5, 0.1, 0.1], 100.0)
    _, stopped = _trial_at(study, sched, [0.1, 0.1, 0.1], 1000.0)
    assert stopped == 3 and RUNG_VALUES_ATTR not in study.trials[1].user_attrs
