"""The Ray Tune executor: the same trial as the local executor, run as Tune trials.

Searcher (what next): :class:`~fcasearch.search.ray_searcher.StudySearcher`, the run's Optuna
study driven through its ask/tell API (same sampler, same storage); it logs every finished trial
in the driver and tells the study. Scheduler (whether to continue): FIFO, or ASHA / MO-ASHA on
per-epoch results (:class:`~fcasearch.search.schedulers.tune.RungTuneScheduler`). Trainable (the score): :func:`fcasearch.search.objective.evaluate` in a worker, whose
final report carries every metric as a column (``ResultGrid.get_dataframe()``) and the whole row.
Its per-epoch reports carry the costs as the schedulers see them (an unstable latency as its p90,
:mod:`fcasearch.search.unstable`), and, at a rung, the whole row the trial ends with if the
scheduler stops it there (``row_if_stopped``: what was measured, as the local executor's row of
a stopped trial has it, with its weights saved under ``--save-weights``): Tune stops a trial by
not resuming it, so no later report comes. At other epochs they carry that row as it stands
(``row_so_far``): a trial whose worker dies later gets its failed row from the measured values,
not the penalized ones (a few KB per epoch in Tune's result files).
Ray is imported here (and in ray_searcher / ray_env) only.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import optuna

from fcasearch.search.objective import TrialContext, TrialResult, evaluate
from fcasearch.search.options import METRICS, PROXY_PREFIX, SearchError, SearchOptions
from fcasearch.search.placement import placement_columns
from fcasearch.search.progress import SearchProgress
from fcasearch.search.ray_searcher import FailureRecorder, StudySearcher, trial_config
from fcasearch.spec import ArchSpec
from fcasearch.storage.records import TrialLog

__all__ = ["check_resources", "make_trainable", "reused_report", "run_ray", "trial_config"]


def _final_report(row: dict[str, Any]) -> dict[str, Any]:
    """Tune's last result of a trial: the numeric metrics as columns, a few labels, and the whole
    row as JSON (Tune flattens nested dicts in results)."""
    out: dict[str, Any] = {
        k: float(v)
        for k, v in row.items()
        if (k in METRICS or k.startswith(PROXY_PREFIX) or k in ("epochs", "trial_seconds"))
        and isinstance(v, (int, float))
    }
    for key in ("status", "arch_id", "ray_node", "cuda_visible_devices", "threads", "trial"):
        out[key] = row.get(key)
    out.update(final=1, row=json.dumps(row))
    return out


def reused_report(reuse: dict[str, Any], node: str) -> dict[str, Any]:
    """Tune's last result of a trial that copies an earlier row (``reuse``, from
    :func:`trial_config`): that row, placed on ``node``, with the threads of the measurement it
    copies (its fingerprint's), not this worker's count."""
    measured_on = json.loads(reuse.get("fingerprint") or "{}")
    return _final_report({**reuse, **placement_columns(measured_on, ray_node=node)})


def _trainable(
    config: dict[str, Any],
    options: dict[str, Any],
    space: dict[str, Any],
    checkpoint_dir: str | None,
) -> None:
    """One Tune trial (runs in a Ray worker): report per epoch, then the final row."""
    from pathlib import Path

    import ray
    import torch
    from ray import tune

    from fcasearch.search.schedulers import schedule_for
    from fcasearch.space import load_space

    opts = SearchOptions.from_mapping(options, source="ray trial options")
    torch.set_num_threads(max(1, int(opts.cpus_per_trial)))
    node = ray.get_runtime_context().get_node_id() or ""
    spec = ArchSpec.from_json(config["spec"])
    if config.get("reuse"):
        tune.report(reused_report(config["reuse"], node))
        return
    from fcasearch.search.devicelock import lock_for

    ctx = TrialContext(
        options=opts,
        space=load_space(space, source="run.yaml (space)"),
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None,
        lock=lock_for(opts.device),  # this node's device: measurements never overlap training
    )
    where = placement_columns(ray_node=node)
    number, run = int(config["trial_number"]), config["run"]
    schedule = schedule_for(opts)  # a scheduler stops trials at its rungs only
    stopped: dict[str, TrialResult] = {}  # the result this trial ends with if stopped now
    # a trial the scheduler stops at a rung ends on row_if_stopped; one whose worker dies ends
    # on the last of either (ray_searcher: failed, with what was measured)

    def if_stopped(res: TrialResult) -> None:
        stopped["now"] = res

    def report(epoch: int, metrics: dict[str, float]) -> bool:
        numbers = {k: float(v) for k, v in metrics.items() if k in METRICS}
        out = {**numbers, **where, "epoch": epoch}
        res = stopped.pop("now", None)
        if res is not None:
            row = {**res.row(number, run), **placement_columns(res.fingerprint, ray_node=node)}
            rung = schedule is not None and schedule.rung_at(epoch) is not None
            out["row_if_stopped" if rung else "row_so_far"] = json.dumps(row)
        tune.report(out)
        return False  # Tune's scheduler stops a trial by not resuming it

    result = evaluate(spec, ctx, report, if_stopped=if_stopped)
    row = {**result.row(number, run), **placement_columns(result.fingerprint, ray_node=node)}
    tune.report(_final_report(row))


def _trial_dirname(trial) -> str:
    """A Tune trial's folder: its id (Tune's default spells the whole config into the name)."""
    return f"trial_{trial.trial_id}"


def make_trainable(options: SearchOptions, space: Any, checkpoint_dir: str | None = None):
    """The run's Tune trainable, with its resources (also what ``tune.Tuner.restore`` needs)."""
    from ray import tune

    trainable = tune.with_parameters(
        _trainable,
        options=options.to_dict(),
        space=space.to_dict(),  # workers rebuild the space from this plain dict
        checkpoint_dir=checkpoint_dir,
    )
    return tune.with_resources(
        trainable, {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    )


def run_ray(
    study: optuna.Study,
    ctx: TrialContext,
    log: TrialLog,
    n_trials: int | None,
    deadline: float | None,
    progress: SearchProgress,
    *,
    storage: str,
    study_name: str,
    measurements: Any = None,
) -> int:
    """Run trials on Ray Tune (a local Ray started for the run, or ``--address``) until the study
    holds ``n_trials`` or ``deadline`` (monotonic s) passes; how many trials ran here.

    ``measurements`` (:class:`~fcasearch.search.final.SearchMeasurements`): the reference models
    are measured before the trials and the final re-measurement made after them, as Ray tasks
    with a trial's resources (:mod:`fcasearch.search.ray_measure`)."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from fcasearch.search.ray_env import ray_session
    from fcasearch.search.schedulers import rung_values_from_study, schedule_for
    from fcasearch.search.schedulers.tune import RungTuneScheduler
    from fcasearch.search.study import counted_trials

    o = ctx.options
    run_root = log.run.root
    left = None if n_trials is None else n_trials - counted_trials(study)
    if left is not None and left <= 0:
        return 0
    searcher = StudySearcher(
        storage=storage,
        study_name=study_name,
        options=o.to_dict(),
        space=ctx.space.to_dict(),
        run_root=str(run_root),
        n_trials=n_trials,
        shared=o.storage is not None,
        study=study,
        progress=progress,
    )
    schedule = schedule_for(o)
    if schedule is not None:  # asha / mo-asha, seeded with the rungs the study holds (resume)
        scheduler = RungTuneScheduler(
            schedule,
            o.objectives,
            o.scheduler,
            rung_values_from_study(study),
            getattr(study.pruner, "bounds", None),  # the study's RungPruner (make_pruner)
        )
    else:
        scheduler = FIFOScheduler()
    checkpoints = ctx.checkpoint_dir if (ctx.checkpoint_dir and o.address is None) else None
    trainable = make_trainable(o, ctx.space, str(checkpoints) if checkpoints else None)
    time_budget = None if deadline is None else max(1.0, deadline - time.monotonic())
    local_cpus = None if o.address else _local_cpus(o)
    with ray_session(run_root, address=o.address, num_cpus=local_cpus) as resources:
        check_resources(resources, o)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                # at most the trials the study lacks (each Tune trial is one of them; with
                # drivers sharing the study, the searcher says FINISHED before that); with a
                # time budget only, until the searcher or time_budget_s ends it
                num_samples=-1 if left is None else left,
                max_concurrent_trials=o.max_concurrent,
                time_budget_s=time_budget,
                reuse_actors=True,  # a slot keeps its worker process (torch imported once)
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=str((run_root / "ray" / "results").resolve()),
                verbose=0,
                log_to_file=True,
                # a trial whose worker or node dies is started again (elsewhere, if its node
                # is gone), up to max_failures times; each lost attempt is noted on its row
                failure_config=tune.FailureConfig(max_failures=o.max_failures),
                callbacks=[FailureRecorder(searcher)],
            ),
        )
        if measurements is not None:
            from fcasearch.search.ray_measure import worker_runner

            on_worker = worker_runner(o, ctx.space)
            measurements.before(on_worker)
        try:
            tuner.fit()
        finally:
            searcher.flush_failed()
        if searcher.data_fault:
            raise SearchError(searcher.data_fault)
        if measurements is not None:
            measurements.after(on_worker, log.export(o.objective_pairs))
    return searcher.ran


def check_resources(resources: dict[str, float], o: SearchOptions) -> None:
    """SearchError if one trial's reservation exceeds what the Ray cluster has: Tune would wait
    for it forever."""
    where = f"the Ray cluster at {o.address}" if o.address else "the local Ray"
    for kind, need, flag in (("GPU", o.gpus_per_trial, "gpus"), ("CPU", o.cpus_per_trial, "cpus")):
        have = float(resources.get(kind, 0.0))
        if need > have:
            raise SearchError(
                f"{flag}_per_trial: {need:g}, but {where} has {have:g} {kind}(s), so no trial "
                f"could start; lower --{flag}-per-trial, or join a cluster with {kind}s (one that "
                "adds nodes on demand must have started one)"
            )


def _local_cpus(o: SearchOptions) -> int:
    import os

    return max(math.ceil(o.cpus_per_trial * o.max_concurrent), min(os.cpu_count() or 1, 2))
