"""Dry-run trials: a fixed sleep instead of measurement and training.

``--budget dry=S`` (optionally ``dry=S,epochs=N``) makes every trial of a search sleep ``S``
seconds, split into ``N`` reported epochs (1 without ``epochs``), instead of training. Everything
around the trial runs as in a real search (sampler, storage, executor, scheduler, trial log), so
dry runs measure what the framework costs (``bench/search_scaling.py``) and let fault tests kill
nodes, drivers and workers mid-trial without waiting for training.

A dry-run row is complete, with ``params`` and ``macs`` in closed form and an ``accuracy`` that is
**synthetic**: a number in [0.1, 0.9] drawn from the run's seed and the architecture's id (the same
architecture always gets the same one), reached linearly over the epochs. Its ``budget`` column
reads ``dry=...`` and its notes say ``dry_run``, with ``dry_window``: the sleep's start and end in
wall-clock seconds (to see which trials ran at once). A dry run never shares results with a
real one (results are reused only at the same budget).
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import TYPE_CHECKING

from fcasearch.train.budget import Budget

if TYPE_CHECKING:
    from fcasearch.search.objective import Reporter, TrialContext, TrialResult

__all__ = ["dry_budget", "run_dry", "synthetic_accuracy"]

DRY_NOTE = "slept {seconds:g} s instead of measuring and training; accuracy is synthetic"


def dry_budget(budget: str | Budget) -> Budget | None:
    """The budget if it is a dry run (``dry=S``), else None."""
    parsed = Budget.parse(budget)
    return parsed if parsed.dry is not None else None


def synthetic_accuracy(seed: int, arch_id: str) -> float:
    """A stand-in accuracy in [0.1, 0.9], fixed by (seed, arch_id): not a measurement."""
    digest = hashlib.sha256(f"dry:{seed}:{arch_id}".encode()).hexdigest()
    return 0.1 + 0.8 * int(digest[:12], 16) / float(16**12)


def run_dry(ctx: TrialContext, res: TrialResult, report: Reporter | None, budget: Budget) -> None:
    """Sleep the dry budget in ``res``'s trial, reporting per epoch; fill ``res`` as training
    would (``accuracy``, ``epochs``, ``rung``; pruned when ``report`` says stop; failed when the
    per-trial timeout comes first)."""
    from fcasearch.search.objective import rung_reached

    o = ctx.options
    assert budget.dry is not None
    n = max(1, math.ceil(budget.epochs or 1))  # epochs reported
    final = synthetic_accuracy(o.seed, res.spec.arch_id)
    res.notes["dry_run"] = DRY_NOTE.format(seconds=budget.dry)
    t0, wall0 = time.perf_counter(), time.time()
    limit = math.inf if o.trial_timeout is None else o.trial_timeout
    for epoch in range(1, n + 1):
        wait = min(budget.dry * epoch / n, limit) - (time.perf_counter() - t0)
        if wait > 0:
            time.sleep(wait)
        if time.perf_counter() - t0 >= limit and epoch * budget.dry / n > limit:
            res.epochs = float(epoch - 1)
            res.status = "failed"
            res.reason = f"timeout: {o.trial_timeout:g} s per trial reached (dry run)"
            break
        res.epochs = float(epoch)
        res.metrics["accuracy"] = final * epoch / n
        if report is not None and report(epoch, dict(res.metrics)) and epoch < n:
            res.status = "pruned"
            break
    res.train_seconds = time.perf_counter() - t0
    res.notes["dry_window"] = f"{wall0:.3f},{time.time():.3f}"  # s since the epoch: concurrency
    res.rung = rung_reached(o, res.epochs)
    if res.status == "pruned":
        res.reason = f"stopped by {o.scheduler} at rung {res.rung} (epoch {res.epochs:g})"
