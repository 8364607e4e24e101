"""Multi-fidelity schedulers: FIFO, ASHA and MO-ASHA on per-epoch accuracy.

:mod:`~fcasearch.search.schedulers.rungs` holds the rungs and the promotion rule;
:mod:`~fcasearch.search.schedulers.pruner` the local executor's Optuna pruner;
``fcasearch.search.schedulers.tune`` the Ray Tune scheduler (imported by the Ray executor only,
never from here, so that importing fcasearch does not import Ray).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fcasearch.search.schedulers.pruner import (
    RUNG_VALUES_ATTR,
    RungPruner,
    StudyScheduler,
    rung_values_from_study,
)
from fcasearch.search.schedulers.rungs import (
    SCHEDULERS,
    RungSchedule,
    RungTable,
    contributions,
    crowding_distance,
    promotable,
    promotion_order,
    rung_bounds,
    rung_objectives,
)

if TYPE_CHECKING:
    from fcasearch.search.options import SearchOptions

__all__ = [
    "RUNG_VALUES_ATTR",
    "SCHEDULERS",
    "RungPruner",
    "RungSchedule",
    "RungTable",
    "StudyScheduler",
    "contributions",
    "crowding_distance",
    "promotable",
    "promotion_order",
    "rung_bounds",
    "rung_objectives",
    "rung_values_from_study",
    "schedule_for",
]


def schedule_for(options: SearchOptions) -> RungSchedule | None:
    """The run's rungs, or None when nothing is scheduled (``fifo``, or nothing trains).

    Raises:
        ValueError: the budget has no epochs, or no rung fits below it.
    """
    if options.scheduler == "fifo" or not options.trains:
        return None
    from fcasearch.train import Budget

    budget = Budget.parse(options.budget)
    if budget.epochs is None:
        raise ValueError(
            f"scheduler {options.scheduler}: rungs are epochs, but the budget {options.budget!r} "
            "gives none; use --budget epochs=N (N > --min-epochs)"
        )
    schedule = RungSchedule(budget.epochs, options.min_epochs, options.reduction_factor)
    if not schedule.milestones:
        raise ValueError(
            f"scheduler {options.scheduler}: no rung below the budget {options.budget!r} with "
            f"--min-epochs {options.min_epochs}; raise the budget's epochs or lower --min-epochs"
        )
    return schedule
