"""The in-process executor: Optuna ask/tell in this process, one trial at a time."""

from __future__ import annotations

import time

import optuna

from fcasearch.search.objective import TrialContext, evaluate, reused_result
from fcasearch.search.progress import SearchProgress
from fcasearch.search.schedulers import StudyScheduler
from fcasearch.search.study import sample_architecture, tell
from fcasearch.storage.records import TrialLog

__all__ = ["run_local"]


def run_local(
    study: optuna.Study,
    ctx: TrialContext,
    log: TrialLog,
    n_trials: int | None,
    deadline: float | None,
    progress: SearchProgress,
) -> int:
    """Run trials until ``n_trials`` more are finished or ``deadline`` (monotonic s) passes.

    Returns:
        How many trials ran.
    """
    o = ctx.options
    cache = log.completed(o.budget)
    scheduler = StudyScheduler(study, o.objectives)  # asha/mo-asha: the study's RungPruner
    ran = 0
    while (n_trials is None or ran < n_trials) and (
        deadline is None or time.monotonic() < deadline
    ):
        trial = study.ask()
        spec = sample_architecture(trial, ctx.space)
        cached = cache.get(spec.arch_id)
        if cached is not None:
            result = reused_result(cached, spec)
            trial.set_user_attr("reused_from", int(cached["trial"]))
        else:

            def report(epoch: int, metrics: dict[str, float], _trial=trial) -> bool:
                return scheduler.report(_trial, epoch, metrics)  # True: stop at this rung

            progress.start_trial(trial.number, spec)
            result = evaluate(spec, ctx, report)
        row = result.row(trial.number, log.run.name)
        log.append(row)  # durable first: a kill after this line loses nothing
        tell(study, trial, result, o.objectives, ctx.space.constraints)
        if result.status == "complete" and cached is None:
            cache.setdefault(spec.arch_id, row)
        progress.finish_trial(row)
        log.export_every(o.objective_pairs)
        ran += 1
    return ran
