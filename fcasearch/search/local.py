"""The in-process executor: Optuna ask/tell in this process, one trial at a time.

Several such drivers may share one study (``--storage`` on a database or a journal file):
between them they finish the study's ``n_trials`` (:func:`~fcasearch.search.study.claim_slot`)
and evaluate each architecture once per budget (:mod:`fcasearch.search.shared`).
"""

from __future__ import annotations

import time

import optuna

from fcasearch.search.objective import TrialContext, data_fault, evaluate, reused_result
from fcasearch.search.options import SearchError
from fcasearch.search.placement import placement_columns
from fcasearch.search.progress import SearchProgress
from fcasearch.search.schedulers import StudyScheduler
from fcasearch.search.shared import shared_metrics, wait_for_result
from fcasearch.search.study import claim_slot, counted_trials, sample_architecture, tell
from fcasearch.storage.records import TrialLog

__all__ = ["SHARED_WAIT_S", "run_local"]

SHARED_WAIT_S = 3600.0  # s a driver waits for another one evaluating the same architecture


def run_local(
    study: optuna.Study,
    ctx: TrialContext,
    log: TrialLog,
    n_trials: int | None,
    deadline: float | None,
    progress: SearchProgress,
    *,
    shared: bool = False,
) -> int:
    """Run trials until the study holds ``n_trials`` or ``deadline`` (monotonic s) passes.

    Args:
        n_trials: trials the study should hold in all (those of other drivers included).
        shared: the study may have other drivers: reuse their results and share ours.

    Returns:
        How many trials ran here.
    """
    o = ctx.options
    cache = log.completed(o.budget)
    scheduler = StudyScheduler(study, o.objectives)  # asha/mo-asha: the study's RungPruner
    run_dir = str(log.run.root.resolve())
    wait_s = SHARED_WAIT_S if o.trial_timeout is None else o.trial_timeout + 60.0
    ran = 0
    # alone on its study, the driver counts for itself; sharing it, it claims each trial
    left = None if n_trials is None else n_trials - counted_trials(study)
    while deadline is None or time.monotonic() < deadline:
        if left is not None and (
            left - ran <= 0 if not shared else counted_trials(study) >= n_trials
        ):
            break
        trial = study.ask()
        if shared and not claim_slot(study, trial, n_trials):
            break  # other drivers took the last trials meanwhile
        label = o.study_label() if shared else None
        spec = sample_architecture(
            trial,
            ctx.space,
            run_dir=run_dir,
            run_id=log.run.owner_id,
            budget=o.budget,
            runtime=label,
        )
        cached = cache.get(spec.arch_id)
        note = ""
        if cached is None and shared:
            cached, note = wait_for_result(
                study, trial.number, spec.arch_id, o.budget, limit_s=wait_s, runtime=label
            )
        if cached is not None:
            result = reused_result(cached, spec)
            trial.set_user_attr("reused_from", int(cached["trial"]))
        else:

            def report(epoch: int, metrics: dict[str, float], _trial=trial) -> bool:
                return scheduler.report(_trial, epoch, metrics)  # True: stop at this rung

            progress.start_trial(trial.number, spec)
            result = evaluate(spec, ctx, report)
            if note:
                result.notes["shared"] = note
        row = {**result.row(trial.number, log.run.name), **placement_columns(result.fingerprint)}
        log.append(row)  # durable first: a kill after this line loses nothing
        tell(
            study,
            trial,
            result,
            o.objectives,
            ctx.space.constraints,
            shared=shared_metrics(row) if shared and cached is None else None,
        )
        if result.status == "complete" and cached is None:
            cache.setdefault(spec.arch_id, row)
        progress.finish_trial(row)
        log.export_every(o.objective_pairs)
        ran += 1
        stop = data_fault(trial.number, result.status, result.reason, log.run.root)
        if stop:
            raise SearchError(stop)
    return ran
