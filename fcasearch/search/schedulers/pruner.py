"""ASHA and MO-ASHA for the local executor: an Optuna pruner that reads rung values from the study.

Optuna's ``trial.report`` / ``trial.should_prune`` refuse multi-objective studies, so the values
a trial had at each rung live in the trial's user attribute ``rung_values`` (``{"0": [values of
the ranked objectives], "1": [...]}``, one storage write per rung reached) instead of its
intermediate values. :class:`RungPruner` is an ``optuna.pruners.BasePruner`` that decides from
those attributes; :class:`StudyScheduler` is what the local executor's per-epoch report calls.
Reading the rungs from the study (every trial that is running, complete or pruned; failed ones
are left out, so that a retried trial is not counted twice) makes the decision the same after a
``--resume`` and with several processes feeding one study.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from fcasearch.metrics import Objective
from fcasearch.search.schedulers.rungs import (
    RungSchedule,
    accuracy_column,
    promotable,
    rung_bounds,
    rung_objectives,
)

__all__ = ["RUNG_VALUES_ATTR", "RungPruner", "StudyScheduler", "rung_values_from_study"]

RUNG_VALUES_ATTR = "rung_values"
_COUNTED = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)


def _latest(values: Mapping[str, Any]) -> int | None:
    rungs = [int(k) for k in values]
    return max(rungs) if rungs else None


class RungPruner(optuna.pruners.BasePruner):
    """ASHA (``scheduler="asha"``) or MO-ASHA (``"mo-asha"``) over trials' ``rung_values``.

    ``prune(study, trial)`` judges the latest rung recorded in ``trial``'s ``rung_values`` against
    every other counted trial's value at that rung (rules:
    :mod:`fcasearch.search.schedulers.rungs`); a trial with no rung recorded is never pruned.

    Args:
        schedule: the run's rungs.
        objectives: the run's objectives.
        scheduler: ``asha`` (rank by accuracy) or ``mo-asha`` (non-dominated sorting of all).
        definition: the run's hypervolume definition (``fcasearch.pareto``): MO-ASHA ranks a
            front by hypervolume contribution under it (without one: by crowding distance).
    """

    def __init__(
        self,
        schedule: RungSchedule,
        objectives: Sequence[Objective],
        scheduler: str = "mo-asha",
        definition: Any = None,
    ) -> None:
        self.schedule = schedule
        self.scheduler = scheduler
        self.objectives = tuple(objectives)
        self.ranked = rung_objectives(scheduler, objectives)
        self.bounds = rung_bounds(definition, self.ranked)
        self.directions = [o.direction for o in self.ranked]
        self.tie_column = accuracy_column(self.ranked)

    def vector(self, metrics: Mapping[str, float]) -> list[float]:
        """The ranked objectives' values in one per-epoch report (NaN where missing)."""
        out = []
        for o in self.ranked:
            v = metrics.get(o.name)
            out.append(float(v) if isinstance(v, (int, float)) else math.nan)
        return out

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        mine = trial.user_attrs.get(RUNG_VALUES_ATTR) or {}
        rung = _latest(mine)
        if rung is None:
            return False
        key = str(rung)
        peers = []
        for t in study.get_trials(deepcopy=False, states=_COUNTED):
            if t.number == trial.number:
                continue
            value = (t.user_attrs.get(RUNG_VALUES_ATTR) or {}).get(key)
            if value is not None and len(value) == len(self.ranked):
                peers.append(value)
        return not promotable(
            mine[key],
            peers,
            self.directions,
            self.schedule.reduction_factor,
            self.tie_column,
            self.bounds,
        )


class StudyScheduler:
    """The local executor's per-epoch report: ``report(trial, epoch, metrics) -> stop?``.

    A single-objective study also gets ``trial.report(accuracy, epoch)`` every epoch (learning
    curves in optuna-dashboard; TPE ranks pruned trials by them). With a :class:`RungPruner` as
    the study's pruner, a trial at a rung records its values (``rung_values``) and the pruner
    decides; with any other pruner nothing is ever stopped (FIFO).
    """

    def __init__(self, study: optuna.Study, objectives: Sequence[Objective]) -> None:
        self.study = study
        self.objectives = tuple(objectives)
        self.pruner = study.pruner if isinstance(study.pruner, RungPruner) else None

    def report(self, trial: optuna.Trial, epoch: int, metrics: Mapping[str, float]) -> bool:
        """Record one epoch of ``trial``; True when it should stop here."""
        acc = metrics.get("accuracy")
        if (
            len(self.objectives) == 1
            and self.objectives[0].name == "accuracy"
            and isinstance(acc, (int, float))
            and math.isfinite(acc)
        ):
            trial.report(float(acc), int(epoch))
        if self.pruner is None:
            return False
        rung = self.pruner.schedule.rung_at(epoch)
        if rung is None:
            return False
        values = dict(trial.user_attrs.get(RUNG_VALUES_ATTR) or {})
        values[str(rung)] = self.pruner.vector(metrics)
        trial.set_user_attr(RUNG_VALUES_ATTR, values)
        (frozen,) = [
            t
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.number == trial.number
        ]
        return self.pruner.prune(self.study, frozen)


def rung_values_from_study(study: optuna.Study) -> list[tuple[str, int, list[float]]]:
    """``(f"study:{number}", rung, values)`` for every counted trial's recorded rungs (to seed
    the Ray scheduler of a resumed run)."""
    out = []
    for t in study.get_trials(deepcopy=False, states=_COUNTED):
        for rung, values in (t.user_attrs.get(RUNG_VALUES_ATTR) or {}).items():
            out.append((f"study:{t.number}", int(rung), list(values)))
    return out
