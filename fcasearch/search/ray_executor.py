"""The Ray Tune executor: the same trial as the local executor, run as Tune trials.

Searcher (what next): an :class:`OptunaSearch` on the run's study (same sampler, same storage),
subclassed so that every finished trial is logged by the driver and told to Optuna with its
constraint. Scheduler (whether to continue): FIFO, or ASHA on per-epoch accuracy. Trainable (the
score): :func:`fcasearch.search.objective.evaluate` in a worker. Ray is imported here only.
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

import optuna

from fcasearch.search.objective import TrialContext, TrialResult, evaluate, reused_result
from fcasearch.search.options import METRICS, PROXY_PREFIX, SearchError, SearchOptions
from fcasearch.search.progress import SearchProgress
from fcasearch.search.study import sample_architecture, tell
from fcasearch.spec import ArchSpec
from fcasearch.storage.records import TrialLog

if TYPE_CHECKING:
    from fcasearch.space import SearchSpace

__all__ = ["check_resources", "run_ray", "trial_config"]


def _trainable(
    config: dict[str, Any],
    options: dict[str, Any],
    space: dict[str, Any],
    checkpoint_dir: str | None,
) -> None:
    """One Tune trial (runs in a Ray worker): report per epoch, then the final row."""
    from pathlib import Path

    import torch
    from ray import tune

    from fcasearch.space import load_space

    opts = SearchOptions.from_mapping(options, source="ray trial options")
    torch.set_num_threads(max(1, int(opts.cpus_per_trial)))
    spec = ArchSpec.from_json(config["spec"])
    if config.get("reuse"):
        tune.report({"final": 1, "row": json.dumps(config["reuse"]), "accuracy": math.nan})
        return
    ctx = TrialContext(
        options=opts,
        space=load_space(space, source="run.yaml (space)"),
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None,
    )

    def report(epoch: int, metrics: dict[str, float]) -> bool:
        tune.report({**{k: float(v) for k, v in metrics.items() if k in METRICS}, "epoch": epoch})
        return False  # Tune's scheduler stops a trial by not resuming it

    result = evaluate(spec, ctx, report)
    row = result.row(int(config["trial_number"]), config["run"])
    # a JSON string: Tune flattens nested dicts in results
    tune.report(
        {"final": 1, "row": json.dumps(row), "accuracy": result.metrics.get("accuracy", math.nan)}
    )


def trial_config(
    ot_trial: optuna.Trial, space: SearchSpace, cache: dict[str, dict[str, Any]], run: str
) -> dict[str, Any]:
    """The Tune config of one trial: its sampled architecture (marked in the study at once, so
    NSGA-II's next children avoid it while it runs) and, if a completed trial of this run already
    measured that architecture, the row to reuse instead of training again."""
    spec = sample_architecture(ot_trial, space)
    cfg = {"spec": spec.to_json(), "trial_number": ot_trial.number, "run": run}
    cached = cache.get(spec.arch_id)
    if cached is not None:
        cfg["reuse"] = reused_result(cached, spec).row(ot_trial.number, run)
    return cfg


def _row_for_stopped(
    spec: ArchSpec,
    trial_number: int,
    run: str,
    last: dict[str, Any] | None,
    error: bool,
    budget: str,
    schedule: Any = None,
) -> dict[str, Any]:
    from fcasearch.measure.counting import count_macs, count_params

    res = TrialResult(spec=spec, status="failed" if error else "pruned", budget=budget)
    res.reason = (
        "the Ray trial raised (see the Ray logs under ray/)"
        if error
        else "stopped by the scheduler"
    )
    res.metrics = {"params": float(count_params(spec)), "macs": float(count_macs(spec))}
    if last:  # the last per-epoch report: accuracy so far and the costs measured before training
        res.metrics.update({k: float(v) for k, v in last.items() if k in METRICS})
        res.epochs = float(last.get("epoch", 0))  # epochs completed (the trainer counts from 1)
    if schedule is not None:
        res.rung = schedule.rung_reached(res.epochs)
        if not error and res.rung is not None:
            res.reason = f"stopped by the scheduler at rung {res.rung} (epoch {res.epochs:g})"
    return res.row(trial_number, run)


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
) -> int:
    """Run trials on Ray Tune (a local Ray started for the run, or ``--address``)."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from fcasearch.search.ray_env import ray_session
    from fcasearch.search.schedulers import (
        RUNG_VALUES_ATTR,
        rung_values_from_study,
        schedule_for,
    )
    from fcasearch.search.schedulers.tune import RungTuneScheduler

    o = ctx.options
    run_root = log.run.root
    cache = log.completed(o.budget)
    space = ctx.space
    ran = 0

    def define(trial) -> dict[str, Any]:  # Tune's define-by-run hook: trial.ot_trial is Optuna's
        return trial_config(trial.ot_trial, space, cache, log.run.name)

    class _LoggedOptunaSearch(OptunaSearch):
        def on_trial_result(self, trial_id: str, result: dict) -> None:
            self._last = getattr(self, "_last", {})
            self._last[trial_id] = result

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            nonlocal ran
            if trial_id in self._completed_trials:
                return
            self._completed_trials.add(trial_id)
            ot_trial = self._ot_trials[trial_id]
            cfg = self._suggested.get(trial_id, {})
            spec = ArchSpec.from_json(cfg["spec"])
            if result and result.get("row"):
                row = json.loads(result["row"])
            else:
                last = result or getattr(self, "_last", {}).get(trial_id)
                row = _row_for_stopped(
                    spec, ot_trial.number, log.run.name, last, error, o.budget, schedule
                )
            log.append(row)
            res = TrialResult(spec=spec, status=row["status"], reason=row.get("reason") or "")
            res.metrics = {
                k: float(v)
                for k, v in row.items()
                if isinstance(v, (int, float)) and (k in METRICS or k.startswith(PROXY_PREFIX))
            }
            if schedule is not None:  # for a resumed run's scheduler
                ot_trial.set_user_attr(RUNG_VALUES_ATTR, scheduler.rung_values(trial_id))
            tell(self._ot_study, ot_trial, res, o.objectives, space.constraints)
            if row["status"] == "complete" and not cfg.get("reuse"):
                cache.setdefault(spec.arch_id, row)
            progress.finish_trial(row)
            log.export_every(o.objective_pairs)
            ran += 1

        def save(self, checkpoint_path: str) -> None:
            """No Tune-side searcher checkpoint: the study and trials.jsonl are the run's state
            (``--resume`` restarts from them)."""

        def restore(self, checkpoint_path: str) -> None:
            pass

        def suggest(self, trial_id: str):
            cfg = super().suggest(trial_id)
            if cfg is not None:
                self._suggested = getattr(self, "_suggested", {})
                self._suggested[trial_id] = cfg
            return cfg

    searcher = _LoggedOptunaSearch(
        space=define,
        metric=[ob.name for ob in o.objectives],
        mode=["max" if ob.direction == "maximize" else "min" for ob in o.objectives],
        sampler=study.sampler,  # the run's one sampler (same storage and study name)
        storage=study._storage,
        study_name=study_name,
        seed=o.seed,
    )
    schedule = schedule_for(o)
    if schedule is not None:  # asha / mo-asha, seeded with the rungs a resumed run reached
        scheduler = RungTuneScheduler(
            schedule, o.objectives, o.scheduler, rung_values_from_study(study)
        )
    else:
        scheduler = FIFOScheduler()
    trainable = tune.with_parameters(
        _trainable,
        options=o.to_dict(),
        space=space.to_dict(),  # workers rebuild the space from this plain dict
        checkpoint_dir=str(ctx.checkpoint_dir)
        if (ctx.checkpoint_dir and o.address is None)
        else None,
    )
    trainable = tune.with_resources(trainable, {"cpu": o.cpus_per_trial, "gpu": o.gpus_per_trial})
    if n_trials == 0:
        return 0
    time_budget = None if deadline is None else max(1.0, deadline - time.monotonic())
    local_cpus = None if o.address else _local_cpus(o)
    with ray_session(run_root, address=o.address, num_cpus=local_cpus) as resources:
        check_resources(resources, o)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=n_trials if n_trials is not None else -1,
                max_concurrent_trials=o.max_concurrent,
                time_budget_s=time_budget,
                reuse_actors=False,
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=str((run_root / "ray" / "results").resolve()),
                verbose=0,
                log_to_file=True,
            ),
        )
        tuner.fit()
    return ran


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
