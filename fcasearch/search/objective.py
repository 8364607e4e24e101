"""One trial, the same whichever executor runs it.

constraint check in closed form (no model for a rejected candidate) -> cost measurement on the
search device -> measured-constraint check -> zero-cost proxies or proxy training with per-epoch
reports -> a :class:`TrialResult`. Every failure becomes a result with a reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fcasearch.measure.counting import count_macs, count_params
from fcasearch.search.dry import dry_budget, run_dry
from fcasearch.search.options import HARDWARE_METRICS, METRICS, PROXY_PREFIX, SearchOptions
from fcasearch.search.unstable import sampler_metrics
from fcasearch.spec import ArchSpec
from fcasearch.storage.records import RunDir

__all__ = [
    "TrialContext",
    "TrialResult",
    "arch_columns",
    "checkpoint_path",
    "evaluate",
    "measure_settings",
    "pruned_reason",
    "reused_result",
    "rung_reached",
    "stopped_by_scheduler",
]

# how trustworthy a latency cell is (columns beside the metrics; fcasearch.measure.stability)
LATENCY_QUALITY = ("latency_stable", "latency_attempts")

# epoch, metrics -> True to stop (pruned)
Reporter = Callable[[int, dict[str, float]], bool]
# the result a trial ends with if the scheduler stops it after the epoch just reported
IfStopped = Callable[["TrialResult"], None]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class TrialResult:
    """What one trial produced; ``row()`` gives its line in trials.parquet."""

    spec: ArchSpec
    status: str  # complete | pruned | infeasible | failed
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    budget: str = ""
    epochs: float = 0.0
    train_seconds: float = 0.0
    measure_seconds: float = 0.0
    trial_seconds: float = 0.0
    started_at: str = ""
    finished_at: str = ""
    device: str = "cpu"
    fingerprint: dict[str, Any] = field(default_factory=dict)
    fingerprint_id: str = ""
    notes: dict[str, str] = field(default_factory=dict)
    rung: int | None = None  # last rung reached under asha/mo-asha (None: no scheduler)
    runtime: str = ""  # the runtime latency was measured on ("" when not measured)
    runtime_version: str = ""

    def row(self, trial: int, run: str) -> dict[str, Any]:
        row: dict[str, Any] = {
            "trial": trial,
            "run": run,
            "status": self.status,
            "reason": self.reason,
            "arch_id": self.spec.arch_id,
            "spec": self.spec.canonical().to_json(),
            "spec_short": self.spec.short(),
            **arch_columns(self.spec),
            "accuracy": math.nan,
            **self.metrics,
            "epochs": self.epochs,
            "rung": math.nan if self.rung is None else int(self.rung),
            "budget": self.budget,
            "train_seconds": self.train_seconds,
            "measure_seconds": self.measure_seconds,
            "trial_seconds": self.trial_seconds,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "device": self.device,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "fingerprint_id": self.fingerprint_id,
            "fingerprint": json.dumps(self.fingerprint, sort_keys=True),
        }
        if self.notes:
            row["notes"] = json.dumps(self.notes, sort_keys=True)
        return row


def reused_result(cached: dict[str, Any], spec) -> TrialResult:
    """A result copied from an earlier complete trial of the same arch and budget, with the
    fingerprint its numbers were measured on (its ``threads`` at least, which label the row)."""
    metrics = {
        k: float(v)
        for k, v in cached.items()
        if (k in METRICS or k in LATENCY_QUALITY or k.startswith(PROXY_PREFIX))
        and isinstance(v, (int, float))
    }
    return TrialResult(
        spec=spec,
        status="complete",
        reason="",
        metrics=metrics,
        budget=cached.get("budget", ""),
        epochs=float(cached.get("epochs", 0.0)),
        device=cached.get("device", "cpu"),
        fingerprint_id=cached.get("fingerprint_id", ""),
        fingerprint=_measured_on(cached),
        notes={"reused_from_trial": str(cached.get("trial"))},
        rung=_int_or_none(cached.get("rung")),
        runtime=str(cached.get("runtime") or ""),
        runtime_version=str(cached.get("runtime_version") or ""),
    )


def _measured_on(cached: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint of a cached row (a JSON column in trials.jsonl; absent from the part of a
    row another driver shares), with the row's ``threads`` where the fingerprint lacks them: a
    row reused in a run resumed on another executor measured with the earlier thread count, not
    the one this process trains with."""
    fingerprint = cached.get("fingerprint") or {}
    if isinstance(fingerprint, str):
        try:
            fingerprint = json.loads(fingerprint)
        except ValueError:
            fingerprint = {}
    fingerprint = dict(fingerprint) if isinstance(fingerprint, dict) else {}
    threads = cached.get("threads")
    if fingerprint.get("threads") is None and isinstance(threads, int | float) and threads >= 1:
        fingerprint["threads"] = int(threads)
    return fingerprint


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def arch_columns(spec: ArchSpec) -> dict[str, Any]:
    """The ``arch.*`` columns: architecture choices a report can spread along the front."""
    c = spec.canonical()
    fca = [i for i, st in enumerate(c.stages) if st.kind == "fca"]
    join = lambda xs: "-".join(str(x) for x in xs)  # noqa: E731
    cross = sum(c.cross_tokens(s, b) for s in fca for b in range(c.stages[s].depth))
    return {
        "arch.img_size": "x".join(map(str, c.img_size)),
        "arch.conv_stages": c.num_conv_stages,
        "arch.depths": join(c.depths),
        "arch.widths": join(c.widths),
        "arch.heads": join(st.heads for st in c.stages),
        "arch.total_depth": sum(c.depths),
        "arch.emitting_blocks": sum(len(c.stages[s].emitters) for s in fca),
        "arch.cross_tokens": cross,
        "arch.merge_strides": join(c.stages[s].merge_stride for s in fca) or "-",
        "arch.cross_windows": join(
            "inf" if c.stages[s].cross_window is None else c.stages[s].cross_window for s in fca
        )
        or "-",
        "arch.tme": join(_tme_name(c.stages[s]) for s in fca) or "-",
    }


def _tme_name(st) -> str:
    if not st.tme:
        return "none"
    if st.tme == tuple(range(st.depth - 1)):
        return "all"
    return "[" + ",".join(map(str, st.tme)) + "]"


@dataclass
class TrialContext:
    """What every trial of a run shares: options, the space, the data, where to checkpoint.

    Built once per process (the search driver, or each Ray worker from plain options).
    """

    options: SearchOptions
    space: Any  # fcasearch.space.SearchSpace
    checkpoint_dir: Path | None = None
    # keeps latency measurements apart from training on this device (fcasearch.search.devicelock)
    lock: Any = None
    _data: dict = field(default_factory=dict)

    def measuring(self):
        """The context of timed runs (latency, energy): the device lock held exclusively."""
        return self.lock.exclusive() if self.lock is not None else contextlib.nullcontext()

    def training(self):
        """The context of one training section: the device lock held shared."""
        return self.lock.shared() if self.lock is not None else contextlib.nullcontext()

    def data_for(self, size: tuple[int, int]):
        """The dataset at input size ``size`` (loaded once per size and process)."""
        if size not in self._data:
            from fcasearch.data import get_dataset

            o = self.options
            self._data[size] = get_dataset(
                o.data,
                img_size=size[0] if size[0] == size[1] else size,
                root=o.data_root,
                download=o.download,
                subset_classes=o.subset_classes,
                subset_fraction=o.subset_fraction,
                seed=o.seed,
            )
        return self._data[size]


def _needs_measure(options: SearchOptions, space: Any) -> bool:
    hardware = any(o.name in HARDWARE_METRICS for o in options.objectives)
    return options.measure or space.constraints.has_measured or hardware


def evaluate(
    spec: ArchSpec,
    ctx: TrialContext,
    report: Reporter | None = None,
    *,
    if_stopped: IfStopped | None = None,
) -> TrialResult:
    """Run one trial for ``spec``; never raises for a bad candidate (the result says why).

    ``report(epoch, metrics)`` is called after each epoch (the costs as the schedulers see them:
    :func:`~fcasearch.search.unstable.sampler_metrics`); True stops the trial there (pruned).
    ``if_stopped``, with ``report``: called just before each report with the result the trial
    ends with if the scheduler stops it after that epoch (a copy: :func:`stopped_by_scheduler`,
    with what was measured, not the penalized costs). The Ray trainable sends it with its rung
    reports, since Tune stops a trial by not resuming it: the trial never returns its result.
    With ``--save-weights``, the result told at a rung epoch has its weights saved as a stopped
    trial's are (:func:`_save_weights`: ``<run>/weights/<arch_id>.pt``, or a note that this
    worker has no run directory), so the file holds the weights of the epoch it was stopped at.
    """
    o = ctx.options
    t0 = time.perf_counter()
    res = TrialResult(
        spec=spec, status="complete", budget=o.budget, started_at=_now(), device=o.device
    )
    res.metrics = {"params": float(count_params(spec)), "macs": float(count_macs(spec))}
    live = _Live(train_start=t0)  # what the trial has so far, for if_stopped
    if report is not None and if_stopped is not None:
        report = _telling_if_stopped(report, res, ctx, t0, live, if_stopped)
    try:
        violations = ctx.space.constraints.check_closed_form(spec)
        if violations:
            res.status, res.reason = "infeasible", "; ".join(violations)
            return res
        dry = dry_budget(o.budget)
        if dry is not None:  # a dry run: a fixed sleep instead of measuring and training
            live.train_start = time.perf_counter()
            run_dry(ctx, res, report, dry)
            return res
        if _needs_measure(o, ctx.space):
            _measure(spec, ctx, res)  # holds the device exclusively for the timed runs only
            if res.status != "complete":
                return res
        proxies = [
            ob.name[len(PROXY_PREFIX) :] for ob in o.objectives if ob.name.startswith(PROXY_PREFIX)
        ]
        if proxies or o.trains:
            model = _build_seeded(spec, o.seed)
            if proxies:
                with ctx.training():
                    _proxies(model, proxies, ctx, res)
            if o.trains:
                live.train_start, live.model = time.perf_counter(), model
                _train(model, spec, ctx, res, report)
    except Exception as exc:  # a trial that raises is a result, never the end of the search
        res.status = "failed"
        res.reason = f"{type(exc).__name__}: {exc}"
        res.notes["traceback"] = traceback.format_exc(limit=8)
    finally:
        res.trial_seconds = time.perf_counter() - t0
        res.finished_at = _now()
    return res


def data_fault(number: int, status: str, reason: str, run_root: Path) -> str | None:
    """The message that stops a search whose trial failed on the data, not its architecture
    (a ``DataError``: a file that cannot be read, which every later trial would meet too);
    None for any other result."""
    if status != "failed" or not reason.startswith("DataError:"):
        return None
    first = reason.splitlines()[0]
    return (
        f"trial {number} failed on the data, not its architecture ({first}); every trial would, "
        f"so the search stops (the trials before it are kept). Fix the data, then continue with "
        f"--resume {run_root}"
    )


def rung_reached(options: SearchOptions, epochs: float) -> int | None:
    """The last rung a trial that trained ``epochs`` reached (None without a scheduler)."""
    from fcasearch.search.schedulers import schedule_for

    schedule = schedule_for(options)
    return None if schedule is None else schedule.rung_reached(epochs)


def checkpoint_path(folder: Path, arch_id: str, options: SearchOptions) -> Path:
    """Where a trial of ``arch_id`` keeps its per-epoch training checkpoint in ``folder`` (one
    per architecture, budget and seed: a retry or a resumed run finds it there)."""
    return folder / f"{arch_id}-{options.budget.replace('=', '')}-s{options.seed}.pt"


def pruned_reason(scheduler: str, rung: int | None, epochs: float) -> str:
    """The reason of a trial that ``scheduler`` (asha, mo-asha) stopped after ``epochs`` epochs,
    at ``rung`` (rung k is the k-th rung epoch, from 0; epochs count from 1), whichever executor
    ran it."""
    return f"stopped by {scheduler} at rung {rung} (epoch {epochs:g})"


def stopped_by_scheduler(res: TrialResult, options: SearchOptions, epochs: float) -> None:
    """Make ``res`` the result of a trial the run's scheduler stopped after ``epochs`` epochs:
    status pruned, the last rung it reached and the reason (:func:`pruned_reason`). Both
    executors' rows of such a trial come from here: the local executor's once training stopped,
    the Ray trainable's at each rung (:func:`evaluate`'s ``if_stopped``)."""
    res.status = "pruned"
    res.epochs = float(epochs)
    res.rung = rung_reached(options, res.epochs)
    if res.rung is not None:
        res.reason = pruned_reason(options.scheduler, res.rung, res.epochs)


@dataclass
class _Live:
    """What a trial in progress has, for :func:`_telling_if_stopped`: when its training began
    and the model it trains (None until training starts, and in a dry run)."""

    train_start: float
    model: Any = None


def _telling_if_stopped(
    report: Reporter,
    res: TrialResult,
    ctx: TrialContext,
    t0: float,
    live: _Live,
    if_stopped: IfStopped,
) -> Reporter:
    """``report``, first telling ``if_stopped`` the result the trial ends with if stopped after
    this epoch: ``res`` as it stands (what was measured: the median latency, its stability,
    attempts, notes), with the epoch's accuracy, the time so far, and the pruned status; at a
    rung epoch (where a scheduler may stop it), with ``--save-weights``, the model's weights
    saved now (a stopped trial never returns to save them) and the note saying where."""
    from fcasearch.search.schedulers import schedule_for

    options = ctx.options
    schedule = schedule_for(options) if options.save_weights else None

    def told(epoch: int, metrics: dict[str, float]) -> bool:
        now = time.perf_counter()
        snap = dataclasses.replace(
            res,
            metrics={**res.metrics, "accuracy": float(metrics.get("accuracy", math.nan))},
            notes=dict(res.notes),
            fingerprint=dict(res.fingerprint),
        )
        snap.train_seconds = now - live.train_start
        snap.trial_seconds = now - t0
        snap.finished_at = _now()
        stopped_by_scheduler(snap, options, float(metrics.get("epoch", epoch)))
        if schedule is not None and live.model is not None and schedule.rung_at(epoch) is not None:
            _save_weights(live.model, res.spec, ctx, snap)
        if_stopped(snap)
        return report(epoch, metrics)

    return told


def _build_seeded(spec: ArchSpec, seed: int):
    """The model with weights drawn from a seed of (run seed, arch_id) alone: the same
    architecture starts from the same weights in any trial, process or resumed run, and the
    caller's random state is left as it was."""
    import torch

    from fcasearch.models import build_model

    digest = hashlib.sha256(f"{seed}:{spec.arch_id}".encode()).hexdigest()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(digest[:15], 16))
        return build_model(spec)


def measure_settings(options: SearchOptions) -> dict[str, Any]:
    """The keyword arguments of ``measure_cost`` for a run: the same for every candidate and
    every reference model (runtime, device, batch size, dtype, threads, stability threshold)."""
    return {
        "runtime": options.runtime,
        "runtime_options": options.runtime_kwargs or None,
        "device": options.device,
        "batch_size": options.latency_batch_size,
        "dtype": options.latency_dtype,
        "threads": options.threads,
        "cuda_graph": options.latency_cuda_graph,
        "cv_threshold": options.latency_cv_threshold,
    }


def _measure(spec: ArchSpec, ctx: TrialContext, res: TrialResult) -> None:
    from fcasearch.measure import measure_cost

    o = ctx.options
    t = time.perf_counter()
    # the spec, not the model: measurement builds its own copy (it folds BN in place)
    cost = measure_cost(spec, **measure_settings(o), exclusive=ctx.measuring)
    res.measure_seconds = time.perf_counter() - t
    res.runtime, res.runtime_version = cost.runtime, cost.runtime_version
    if cost.latency is not None:
        res.metrics["latency_attempts"] = float(cost.latency.attempts)
    res.fingerprint = dict(cost.fingerprint)
    from fcasearch.measure import fingerprint_id

    res.fingerprint_id = fingerprint_id(res.fingerprint)
    res.notes.update({f"measure.{k}": str(v) for k, v in cost.notes.items()})
    for key, value in cost.metrics.items():
        if key not in ("params", "macs"):
            res.metrics[key] = float(value)
    if getattr(cost, "status", "ok") not in ("ok", "complete"):
        # never a number: a model the runtime cannot run, or out of memory, fails the trial
        for key in ("latency_ms", "latency_p90_ms", "latency_cv", "throughput_ips"):
            res.metrics[key] = math.nan
        res.metrics.pop("latency_stable", None)
        res.notes["measure.status"] = cost.status
        what = f"{cost.runtime} cannot run this model" if cost.status == "unsupported" else ""
        res.status, res.reason = (
            "failed",
            f"measurement: {cost.status}"
            + (f" ({what})" if what else "")
            + f": {getattr(cost, 'reason', '')}",
        )
        return
    violations = ctx.space.constraints.check_measured(res.metrics)
    if violations:
        res.status, res.reason = "infeasible", "; ".join(violations)


def _proxies(model, names: list[str], ctx: TrialContext, res: TrialResult) -> None:
    from fcasearch.train import compute_proxies, fixed_batch

    batch = fixed_batch(ctx.data_for(res.spec.img_size).train, size=64, seed=ctx.options.seed)
    values = compute_proxies(model, batch, names=tuple(names), device=ctx.options.device)
    for name, value in values.items():
        res.metrics[f"{PROXY_PREFIX}{name}"] = float(value)


def _train(
    model, spec: ArchSpec, ctx: TrialContext, res: TrialResult, report: Reporter | None
) -> None:
    from fcasearch.train import Budget, TrainConfig, train_model

    o = ctx.options
    budget = Budget.parse(o.budget)
    if o.trial_timeout is not None:
        limit = o.trial_timeout if budget.seconds is None else min(budget.seconds, o.trial_timeout)
        budget = Budget(epochs=budget.epochs, steps=budget.steps, seconds=limit)
    ckpt = None
    if ctx.checkpoint_dir is not None:
        ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt = checkpoint_path(ctx.checkpoint_dir, spec.arch_id, o)
    t = time.perf_counter()
    out = train_model(
        model,
        ctx.data_for(spec.img_size),
        budget,
        TrainConfig(lr=o.lr, batch_size=o.batch_size, seed=o.seed),
        device=o.device,
        # per-epoch reports carry the trial's costs too, so a trial stopped early keeps them
        # the schedulers see an unstable latency as the sampler does (fcasearch.search.unstable)
        callback=None
        if report is None
        else (lambda e, m: report(e, {**sampler_metrics(res.metrics), **m})),
        checkpoint_path=ckpt,
        progress=False,
        guard=ctx.training,  # no latency measurement on this device overlaps a training step
    )
    res.train_seconds = time.perf_counter() - t
    if out.resumed_from is not None:  # the part before the checkpoint counts too
        earlier = max(0.0, out.seconds - res.train_seconds)
        res.train_seconds += earlier
        res.notes["resumed"] = (
            f"training resumed from its checkpoint at epoch {out.resumed_from:g}; train_seconds "
            f"includes the {earlier:.2f} s trained before it"
        )
    res.epochs = float(out.epochs)
    res.rung = rung_reached(o, res.epochs)
    res.metrics["accuracy"] = float(out.accuracy) if out.accuracy is not None else math.nan
    if out.status != "complete":
        res.status = "pruned" if out.status == "pruned" else "failed"
        res.reason = out.reason or out.status
        if out.status == "pruned":
            stopped_by_scheduler(res, o, out.epochs)
    elif (
        o.trial_timeout is not None
        and out.stopped_by == "seconds"
        and Budget.parse(o.budget).seconds != budget.seconds
    ):
        res.status = "failed"
        res.reason = (
            f"timeout: {o.trial_timeout:g} s per trial reached after {out.epochs:.2f} epochs"
        )
    if ckpt is not None and res.status in ("complete", "pruned"):
        ckpt.unlink(missing_ok=True)  # kept otherwise, so that a retry resumes it
    if o.save_weights and res.status in ("complete", "pruned"):
        _save_weights(model, spec, ctx, res)


def _save_weights(model, spec: ArchSpec, ctx: TrialContext, res: TrialResult) -> None:
    """The trained state_dict to ``<run>/weights/<arch_id>.pt`` (``fcasearch export`` reads it)."""
    if ctx.checkpoint_dir is None:
        res.notes["weights"] = "not saved: this worker has no run directory"
        return
    from fcasearch.train.checkpoint import save_checkpoint

    path = RunDir(ctx.checkpoint_dir.parent).weights_file(spec.arch_id)
    save_checkpoint(path, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    res.notes["weights"] = str(path)
