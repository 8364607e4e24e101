"""ASHA and MO-ASHA as a Ray Tune ``TrialScheduler`` (imported by the Ray executor only).

The scheduler lives in the Tune driver and keeps a :class:`RungTable` of every trial's values at
each rung; on each per-epoch result it answers ``CONTINUE`` or ``STOP`` by the same rule as the
local executor's :class:`~fcasearch.search.schedulers.pruner.RungPruner`
(:mod:`fcasearch.search.schedulers.rungs`). A resumed run seeds the table with the rung values its
study holds (:func:`rung_values_from_study`), as plain data: the scheduler holds no study, so Tune
can pickle it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from fcasearch.metrics import Objective
from fcasearch.search.schedulers.rungs import RungSchedule, RungTable, rung_objectives

__all__ = ["RungTuneScheduler"]


class RungTuneScheduler(FIFOScheduler):
    """Stops a Tune trial at a rung where it does not rank among the best ``1/eta``.

    Results without an ``epoch`` (the trainable's final row) pass through; so do trials reused
    from the store (they report no epochs).

    Args:
        schedule: the run's rungs.
        objectives: the run's objectives.
        scheduler: ``asha`` or ``mo-asha``.
        seed_values: ``(key, rung, values)`` of trials that reached rungs before (a resumed run).
        bounds: per ranked objective ``(best, reference)`` of the run's hypervolume definition
            (``RungPruner.bounds``), or None.
    """

    def __init__(
        self,
        schedule: RungSchedule,
        objectives: Sequence[Objective],
        scheduler: str = "mo-asha",
        seed_values: Iterable[tuple[Hashable, int, Sequence[float]]] = (),
        bounds: Sequence[tuple[float, float] | None] | None = None,
    ) -> None:
        super().__init__()
        self.scheduler = scheduler
        self.table = RungTable(schedule, rung_objectives(scheduler, objectives), bounds)
        for key, rung, values in seed_values:
            self.table.record(key, rung, values)
        self.stopped: dict[str, int] = {}  # Tune trial id -> rung it was stopped at

    @property
    def supports_buffered_results(self) -> bool:
        """Every per-epoch result must reach the scheduler on its own (a rung is one epoch)."""
        return False

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        epoch = result.get("epoch")
        if epoch is None:
            return TrialScheduler.CONTINUE
        if self.table.decide(trial.trial_id, int(epoch), result):
            return TrialScheduler.CONTINUE
        rung = self.table.schedule.rung_at(int(epoch))
        self.stopped[trial.trial_id] = int(rung) if rung is not None else -1
        return TrialScheduler.STOP

    def rung_values(self, trial_id: str) -> dict[str, list[float]]:
        """What ``trial_id`` had at each rung it reached (for the study's ``rung_values``)."""
        return {
            str(rung): list(by_key[trial_id])
            for rung, by_key in sorted(self.table.values.items())
            if trial_id in by_key
        }

    def debug_string(self) -> str:
        sizes = {k: len(v) for k, v in sorted(self.table.values.items())}
        return f"{self.scheduler}: {self.table.schedule.describe()}; trials per rung {sizes}"
