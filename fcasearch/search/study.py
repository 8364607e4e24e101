"""The Optuna side of a search: samplers, the study, and telling it what a trial gave."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna

from fcasearch.search.objective import TrialResult
from fcasearch.search.offspring import ArchitectureNSGAII
from fcasearch.search.options import HARDWARE_METRICS, Objective, SearchOptions

if TYPE_CHECKING:
    from fcasearch.space import SearchSpace
    from fcasearch.spec import ArchSpec

__all__ = [
    "constraint_violation",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "nsga2_population",
    "open_study",
    "recover_interrupted",
    "sample_architecture",
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


def make_pruner(options: SearchOptions) -> optuna.pruners.BasePruner:
    """The study's pruner: ASHA or MO-ASHA at the run's rungs
    (:class:`~fcasearch.search.schedulers.RungPruner`, which also works for multi-objective
    studies: it reads the trials' rung values from user attributes), or none (``fifo``)."""
    from fcasearch.search.schedulers import RungPruner, schedule_for

    schedule = schedule_for(options)
    if schedule is None:
        return optuna.pruners.NopPruner()
    return RungPruner(schedule, options.objectives, options.scheduler)


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna RDB storage for any SQLAlchemy URL.

    SQLite gets write-ahead logging with ``synchronous=NORMAL``: a commit no longer waits for an
    fsync (Optuna commits once per suggested parameter, ~12 ms each on this disk otherwise), and a
    killed process still loses no committed trial (only a power cut could).
    """
    storage = optuna.storages.RDBStorage(url)
    if url.startswith("sqlite"):
        from sqlalchemy import event

        def _pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        event.listen(storage.engine, "connect", _pragmas)
        storage.engine.dispose()  # reconnect, so every pooled connection has the pragmas
    return storage


def open_study(
    options: SearchOptions,
    storage: str,
    study_name: str,
    sampler: optuna.samplers.BaseSampler | None = None,
    space: SearchSpace | None = None,
) -> optuna.Study:
    """Create or load the run's study (``load_if_exists``: resuming is loading); without a
    ``sampler``, the one :func:`make_sampler` makes for ``options`` and ``space``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=make_storage(storage),
        study_name=study_name,
        directions=[o.direction for o in options.objectives],
        sampler=sampler if sampler is not None else make_sampler(options, space),
        pruner=make_pruner(options),
        load_if_exists=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o.name for o in options.objectives])
    return study


def recover_interrupted(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a killed run as FAIL and enqueue their parameters again.

    Returns:
        How many trials were recovered.
    """
    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(
            t._trial_id, "reason", "interrupted: the run stopped while it ran; retried"
        )
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
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
    """Objective values in study order; an unknown value is the worst (+/-inf)."""
    out = []
    for o in objectives:
        v = metrics.get(o.name, math.nan)
        if v is None or math.isnan(v):
            v = math.inf if o.direction == "minimize" else -math.inf
        out.append(float(v))
    return out


def sample_architecture(trial: optuna.Trial, space: SearchSpace) -> ArchSpec:
    """The trial's architecture, asking only the parameters it uses (define-by-run), its
    ``arch_id`` recorded in the study at once, so that a trial still running counts as evaluated
    for NSGA-II's children (:class:`~fcasearch.search.offspring.ArchitectureOffspring`). Both
    executors sample through here."""
    spec = space.sample(trial)
    trial.set_user_attr("arch_id", spec.arch_id)
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
) -> None:
    """Record a finished trial in the study.

    * complete: its values, and the constraint ``space`` (0: feasible);
    * infeasible: state PRUNED (never COMPLETE, so no client reads it as a result: not Optuna's
      ``best_trials``, not optuna-dashboard, which ignores Optuna 5's constraints), with its
      constraint violation (> 0) so that TPE still ranks it below every feasible trial; reason and
      status in the user attributes;
    * pruned by a scheduler: PRUNED; failed: FAIL.

    The user attributes of :func:`study_attrs` come first (a handful of storage writes).
    """
    for key, value in study_attrs(result, objectives).items():
        trial.set_user_attr(key, value)
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
