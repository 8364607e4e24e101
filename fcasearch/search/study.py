"""The Optuna side of a search: samplers, the study, and telling it what a trial gave."""

from __future__ import annotations

import dataclasses
import math
import random
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna

from fcasearch.search.objective import LATENCY_QUALITY, TrialResult
from fcasearch.search.offspring import ArchitectureNSGAII
from fcasearch.search.options import (
    HARDWARE_METRICS,
    METRICS,
    PROXY_PREFIX,
    Objective,
    SearchError,
    SearchOptions,
)
from fcasearch.search.storages import make_storage, read_error, redact
from fcasearch.search.unstable import sampler_metrics

if TYPE_CHECKING:
    from fcasearch.space import SearchSpace
    from fcasearch.spec import ArchSpec

_WAITING = optuna.trial.TrialState.WAITING

__all__ = [
    "claim_slot",
    "constraint_violation",
    "counted_trials",
    "counts",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "nsga2_population",
    "open_study",
    "recover_interrupted",
    "result_from_row",
    "sample_architecture",
    "sampler_metrics",
    "study_attrs",
    "tell",
    "values_for",
]


def nsga2_population(n_trials: int | None) -> int:
    """NSGA-II population for a search of ``n_trials``: about ``1.25 * sqrt(n)``, so that a search
    runs roughly as many generations as a generation has members (10 to 50; 25 at 400 trials).

    On the micro space (``bench/search_efficiency.py``, 400 trials, seeds 0-9, Optuna's own
    children) populations of 16, 25 and 50 reached random search's final hypervolume at 51%, 44%
    and 66% of the trials: too large a population leaves too few generations. On seeds 10-19,
    25 gave 53%: the choice is tuned on seeds 0-9 and the spread between seed sets is large.
    """
    n = n_trials or 40
    return max(10, min(50, round(1.25 * math.sqrt(n))))


def make_sampler(
    options: SearchOptions, space: SearchSpace | None = None
) -> optuna.samplers.BaseSampler:
    """The sampler named by the options (``grid`` is random sampling over an enqueued grid).

    NSGA-II is :class:`~fcasearch.search.offspring.ArchitectureNSGAII`: children over every
    parameter of the space, conditional ones included, made by
    :class:`~fcasearch.search.offspring.ArchitectureOffspring` (Optuna's recipe: tournament,
    uniform crossover, per-parameter redraw; drawn again while the child is an architecture the
    study already evaluated). TPE is multivariate with ``group=True``, which models each set of
    parameters that occur together (trials ask only the parameters their architecture uses).
    ``space`` is the space the trials sample (read from ``options.space`` when not given).
    """
    name, seed = options.sampler_name, options.seed
    if name == "nsga2" and space is None:
        from fcasearch.space import load_space

        space = load_space(options.space)
    # Optuna marks child_generation_strategy (3.3) and TPE's multivariate/group (2.2) experimental
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "nsga2":
            return ArchitectureNSGAII(
                space, seed=seed, population_size=nsga2_population(options.n_trials)
            )
        if name == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed,
                multivariate=True,
                group=True,  # conditional parameters: one group per set that co-occurs
                n_startup_trials=min(10, max(3, (options.n_trials or 40) // 5)),
            )
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(
    options: SearchOptions, space: SearchSpace | None = None, definition: Any = None
) -> optuna.pruners.BasePruner:
    """The study's pruner: ASHA or MO-ASHA at the run's rungs
    (:class:`~fcasearch.search.schedulers.RungPruner`, which also works for multi-objective
    studies: it reads the trials' rung values from user attributes), or none (``fifo``).
    MO-ASHA ranks a front by hypervolume contribution under the run's hypervolume
    ``definition``; without one it is derived from ``space`` (read from ``options.space`` when
    not given) as the run defines it (``fcasearch.space.bounds.space_hypervolume``: it may
    enumerate the space, seconds on micro)."""
    from fcasearch.search.schedulers import RungPruner, schedule_for

    schedule = schedule_for(options)
    if schedule is None:
        return optuna.pruners.NopPruner()
    if options.scheduler == "mo-asha" and definition is None:
        from fcasearch.space import load_space
        from fcasearch.space.bounds import space_hypervolume

        space = space if space is not None else load_space(options.space)
        definition = space_hypervolume(
            space, options.objective_pairs, dict(options.hv_reference), given_source="hv_reference"
        )
    return RungPruner(schedule, options.objectives, options.scheduler, definition)


def open_study(
    options: SearchOptions,
    storage: str,
    study_name: str,
    sampler: optuna.samplers.BaseSampler | None = None,
    space: SearchSpace | None = None,
    hypervolume: Any = None,
    create_only: bool = False,
) -> optuna.Study:
    """Create or load the run's study (``load_if_exists``: resuming is loading); without a
    ``sampler``, the one :func:`make_sampler` makes for ``options`` and ``space``; the pruner
    :func:`make_pruner`'s for the run's ``hypervolume`` definition.

    Several drivers may open one study at the same moment (a SLURM array on one PostgreSQL
    database): a collision while creating the study or its metric names is retried. With
    ``create_only`` the study must be new: the storage creates a name once (a unique key), so of
    two runs that create one name at the same moment exactly one gets it.

    Raises:
        StorageError: the storage cannot be opened (one line naming the URL).
        SearchError: the stored study optimizes other objectives than ``options``.
        optuna.exceptions.DuplicatedStudyError: ``create_only``, and the study exists.
    """
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    backend = make_storage(storage)
    given = sampler is not None
    sampler = sampler if given else make_sampler(options, space)
    directions = [o.direction for o in options.objectives]
    for attempt in range(6):
        try:
            study = optuna.create_study(
                storage=backend,
                study_name=study_name,
                directions=directions,
                sampler=sampler,
                pruner=make_pruner(options, space, hypervolume),
                load_if_exists=not create_only,
            )
            if [d.name.lower() for d in study.directions] != directions:
                raise SearchError(
                    f"study {study_name!r} in {redact(storage)} optimizes "
                    f"{[d.name.lower() for d in study.directions]}, not {directions}; choose "
                    "another --study-name"
                )
            if not given:
                study.sampler = continuing_sampler(study, options, space, sampler)
            names = [o.name for o in options.objectives]
            if study.metric_names != names:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names(names)
            return study
        except (sqlalchemy.exc.IntegrityError, optuna.exceptions.DuplicatedStudyError):
            if create_only:
                raise optuna.exceptions.DuplicatedStudyError(study_name) from None
            if attempt == 5:
                raise
            time.sleep(0.2 + random.random() * 0.8)  # another driver created it just now
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            raise read_error(storage, study_name, exc) from None
    raise AssertionError("unreachable")


def continuing_sampler(
    study: optuna.Study,
    options: SearchOptions,
    space: SearchSpace | None,
    sampler: optuna.samplers.BaseSampler,
) -> optuna.samplers.BaseSampler:
    """``sampler``, or, when the study already has trials (a ``--resume``, or another driver of
    a shared study), one seeded from ``--seed`` and that number of trials: the run's seed alone
    would replay the first proposals of the study, which are evaluated already. Deterministic
    for a given seed and study state; without a seed, unchanged."""
    if options.seed is None:
        return sampler
    n = len(study.get_trials(deepcopy=False))
    if n == 0:
        return sampler
    seed = (int(options.seed) * 1_000_003 + n) % 2**32
    return make_sampler(dataclasses.replace(options, seed=seed), space)


def counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial stands for a row of the search on its own: every trial but the FAIL ones
    that no driver logged (left RUNNING by a killed driver and retried, or asked after the study
    had its trials: those carry no ``status``). :func:`row_trials` also drops superseded ones."""
    return not (trial.state == optuna.trial.TrialState.FAIL and "status" not in trial.user_attrs)


def row_trials(
    trials: Sequence[optuna.trial.FrozenTrial],
) -> list[optuna.trial.FrozenTrial]:
    """The trials that stand for a row of the search, in order: those that :func:`counts`, less
    the superseded ones, trials a killed driver left RUNNING after their row was logged and that
    :func:`recover_interrupted` recorded again from that row as a new trial (its ``logged_as``)."""
    superseded = {int(t.user_attrs["logged_as"]) for t in trials if "logged_as" in t.user_attrs}
    return [t for t in trials if t.number not in superseded and counts(t)]


def counted_trials(study: optuna.Study) -> int:
    """Trials of the study that are rows or will be (finished or running; enqueued ones, not yet
    started, are not counted until a driver takes them)."""
    return sum(t.state != _WAITING for t in row_trials(study.get_trials(deepcopy=False)))


def claim_slot(study: optuna.Study, trial: optuna.Trial, n_trials: int | None) -> bool:
    """Whether ``trial``, just asked, is within the study's ``n_trials``; if not it is told FAIL
    (without a row) and the caller stops.

    Trials are numbered in the order they are created (storages create them one at a time), so
    every driver sharing the study agrees which trials are the first ``n_trials``: N drivers
    finish exactly ``n_trials`` between them.
    """
    if n_trials is None:
        return True
    before = sum(t.number < trial.number for t in row_trials(study.get_trials(deepcopy=False)))
    if before < n_trials:
        return True
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return False


def recover_interrupted(
    study: optuna.Study,
    owner: str | None = None,
    rows: dict[int, dict[str, Any]] | None = None,
    objectives: Sequence[Objective] = (),
    constraints: Any = None,
) -> int:
    """Settle the trials a killed run left RUNNING: a trial whose row reached ``trials.jsonl``
    (the kill came between the log and the study) is recorded from that row; any other is marked
    FAIL and its parameters are enqueued again.

    Args:
        study: the run's study.
        owner: settle only trials of this run (:attr:`RunDir.owner_id
            <fcasearch.storage.records.RunDir.owner_id>`: its ``run_id``, which the trials
            record, or for a run older than that its folder path, their ``run_dir``), so that a
            study shared with other drivers keeps their running trials, even those so new that
            they carry no attribute yet, and a run moved since keeps its own; ``None``: every
            RUNNING trial (the run's own study).
        rows: the run's logged rows by trial number.
        objectives: the study's objectives (to record a logged row's values).
        constraints: the space's constraints (to record a logged row's constraint).

    Returns:
        How many trials were settled.
    """
    from fcasearch.spec import ArchSpec

    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if owner is not None and t.user_attrs.get("run_id", t.user_attrs.get("run_dir")) != owner:
            continue
        study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        row = (rows or {}).get(t.number)
        if row is not None and row.get("spec") and constraints is not None and t.params:
            res = result_from_row(row, ArchSpec.from_json(row["spec"]))
            # as tell() records it: an infeasible trial is PRUNED (never COMPLETE) with its
            # constraint violation; a pruned one PRUNED, a failed one FAIL, without constraint
            state = {
                "failed": optuna.trial.TrialState.FAIL,
                "pruned": optuna.trial.TrialState.PRUNED,
                "infeasible": optuna.trial.TrialState.PRUNED,
            }.get(res.status, optuna.trial.TrialState.COMPLETE)
            done = state == optuna.trial.TrialState.COMPLETE
            constrained = done or res.status == "infeasible"
            attrs = {**t.user_attrs, "status": res.status, "logged_as": t.number}
            if res.reason:
                attrs["reason"] = res.reason[:2000]
            study.add_trial(
                optuna.trial.create_trial(
                    state=state,
                    values=values_for(objectives, res.metrics) if done else None,
                    params=t.params,
                    distributions=t.distributions,
                    user_attrs=attrs,
                    constraints=(
                        {"space": constraint_violation(res, constraints)} if constrained else None
                    ),
                )
            )
        elif t.params:
            study.enqueue_trial(
                t.params,
                user_attrs={
                    "retry_of": t.number,
                    "retry_reason": "interrupted: the run stopped while it ran",
                },
                skip_if_exists=False,
            )
        n += 1
    return n


def constraint_violation(result: TrialResult, constraints: Any) -> float:
    """One constraint value for Optuna: the summed relative excess over the space's limits
    (``value / limit - 1`` where positive); 0 when within all; 1 for an infeasible trial whose
    violated limit has no ratio (a measurement that could not be made)."""
    excess = constraints.excess(result.spec, result.metrics)
    total = sum(v for v in excess.values() if v > 0)
    if result.status == "infeasible" and total <= 0:
        return 1.0
    return total


def values_for(objectives: Sequence[Objective], metrics: dict[str, float]) -> list[float]:
    """Objective values in study order, as the sampler is told them (:func:`sampler_metrics`:
    an unstable latency is its p90); an unknown value is the worst (+/-inf)."""
    metrics = sampler_metrics(metrics)
    out = []
    for o in objectives:
        v = metrics.get(o.name, math.nan)
        if v is None or math.isnan(v):
            v = math.inf if o.direction == "minimize" else -math.inf
        out.append(float(v))
    return out


def sample_architecture(
    trial: optuna.Trial,
    space: SearchSpace,
    *,
    run_dir: str | None = None,
    run_id: str | None = None,
    budget: str | None = None,
    runtime: str | None = None,
) -> ArchSpec:
    """The trial's architecture, asking only the parameters it uses (define-by-run), its
    ``arch_id`` recorded in the study at once, so that a trial still running counts as evaluated
    for NSGA-II's children (:class:`~fcasearch.search.offspring.ArchitectureOffspring`). Both
    executors sample through here.

    ``run_id``, ``run_dir``, ``budget`` and ``runtime``, when given, are recorded too: which run
    owns the trial (a study shared by several drivers: :attr:`RunDir.owner_id
    <fcasearch.storage.records.RunDir.owner_id>`) and where it was, what it trains for and what
    its latency is measured on (dedupe across drivers reuses only a result of the same budget
    and runtime).
    """
    if run_id is not None:  # first: from now on no other driver's recovery touches it
        trial.set_user_attr("run_id", run_id)
    if run_dir is not None:
        trial.set_user_attr("run_dir", run_dir)
    spec = space.sample(trial)
    trial.set_user_attr("arch_id", spec.arch_id)
    if budget is not None:
        trial.set_user_attr("budget", budget)
    if runtime is not None:
        trial.set_user_attr("runtime", runtime)
    return spec


# user attributes for a person reading the study (optuna-dashboard): each is one storage write
_SHOWN = ("params", "macs", "latency_ms")


def study_attrs(result: TrialResult, objectives: Sequence[Objective]) -> dict[str, Any]:
    """What a trial shows beside its values in optuna-dashboard: ``status``, the short ``spec``,
    ``params`` and ``macs`` (``latency_ms`` when measured; any hardware objective measured), the
    ``reason`` of a trial that is not complete, the ``rung`` reached under a scheduler, and the
    accuracy of a pruned trial (at its last rung: a pruned trial has no objective values)."""
    attrs: dict[str, Any] = {"status": result.status, "spec": result.spec.short()}
    m = result.metrics
    shown = list(_SHOWN) + [o.name for o in objectives if o.name in HARDWARE_METRICS]
    for name in dict.fromkeys(shown):
        v = m.get(name)
        if isinstance(v, (int, float)) and math.isfinite(v):
            attrs[name] = int(v) if name in ("params", "macs") else round(float(v), 6)
    if result.reason:
        attrs["reason"] = result.reason[:2000]
    if m.get("latency_stable") == 0.0:
        attrs["latency_stable"] = False
        told = sampler_metrics(m).get("latency_ms")
        if isinstance(told, float) and math.isfinite(told):
            attrs["latency_ms_told"] = round(told, 6)  # the penalized value the sampler got
    rung = getattr(result, "rung", None)
    if rung is not None:
        attrs["rung"] = int(rung)
    acc = m.get("accuracy")
    if result.status == "pruned" and isinstance(acc, (int, float)) and math.isfinite(acc):
        attrs["accuracy"] = round(float(acc), 6)
    return attrs


def tell(
    study: optuna.Study,
    trial: optuna.Trial,
    result: TrialResult,
    objectives: Sequence[Objective],
    constraints: Any,
    *,
    shared: dict[str, Any] | None = None,
) -> None:
    """Record a finished trial in the study.

    * complete: its values, and the constraint ``space`` (0: feasible);
    * infeasible: state PRUNED (never COMPLETE, so no client reads it as a result: not Optuna's
      ``best_trials``, not optuna-dashboard, which ignores Optuna 5's constraints), with its
      constraint violation (> 0) so that TPE still ranks it below every feasible trial; reason and
      status in the user attributes;
    * pruned by a scheduler: PRUNED; failed: FAIL.

    The user attributes of :func:`study_attrs` come first (a handful of storage writes).
    ``shared``: what other drivers of a shared study need to reuse this trial instead of
    training the same architecture again (:func:`fcasearch.search.shared.shared_metrics`),
    stored as the ``metrics`` user attribute.
    """
    for key, value in study_attrs(result, objectives).items():
        trial.set_user_attr(key, value)
    if shared is not None and result.status == "complete":
        trial.set_user_attr("metrics", shared)
    if result.status == "failed":
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    if result.status == "pruned":
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return
    trial.set_constraint("space", constraint_violation(result, constraints))
    if result.status == "infeasible":
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return
    study.tell(trial, values_for(objectives, result.metrics))


def result_from_row(row: dict[str, Any], spec: ArchSpec) -> TrialResult:
    """A finished row (``trials.jsonl``) as the result :func:`tell` records: its status, reason
    and metrics."""
    res = TrialResult(spec=spec, status=str(row["status"]), reason=str(row.get("reason") or ""))
    res.metrics = {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, (int, float))
        and not isinstance(v, bool)
        and (k in METRICS or k in LATENCY_QUALITY or k.startswith(PROXY_PREFIX))
    }
    if isinstance(row.get("latency_stable"), bool):  # a row read back from a typed table
        res.metrics["latency_stable"] = 1.0 if row["latency_stable"] else 0.0
    rung = row.get("rung")
    if isinstance(rung, (int, float)) and not isinstance(rung, bool) and math.isfinite(rung):
        res.rung = int(rung)
    return res
