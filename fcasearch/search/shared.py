"""Several drivers on one study: no architecture is evaluated twice at the same budget.

Each trial records its ``arch_id`` and ``budget`` as user attributes as soon as it is sampled,
and a complete trial of a shared study records the metrics another driver needs to reuse it
(``metrics``). Trials are numbered in the order they are created, so the drivers agree on who
evaluates an architecture: the lowest-numbered trial of that architecture and budget that is
complete or still running. Any later trial of it waits for that one and copies its result, as
the single-driver search copies a completed row.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

import optuna

from fcasearch.search.options import METRICS, PROXY_PREFIX

__all__ = ["SETTLE_S", "find_owner", "shared_metrics", "wait_for_result"]

SETTLE_S = 30.0  # s a trial may stay without an arch_id before it is ignored (its driver died)
_KEPT = ("budget", "epochs", "device", "fingerprint_id", "trial", "status", "run", "threads")
_RUNNING = optuna.trial.TrialState.RUNNING
_COMPLETE = optuna.trial.TrialState.COMPLETE


def shared_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """The part of a complete row another driver needs to reuse it (JSON-safe)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in METRICS or key.startswith(PROXY_PREFIX):
            if isinstance(value, (int, float)) and math.isfinite(float(value)):
                out[key] = float(value)
        elif key in _KEPT and value is not None:
            out[key] = value
    return out


def _age_s(trial: optuna.trial.FrozenTrial) -> float:
    start = trial.datetime_start
    return math.inf if start is None else (datetime.now() - start).total_seconds()


def find_owner(
    study: optuna.Study,
    number: int,
    arch_id: str,
    budget: str,
    *,
    runtime: str | None = None,
    poll_s: float = 0.2,
) -> optuna.trial.FrozenTrial | None:
    """The trial that evaluates ``arch_id`` at ``budget`` for trial ``number``, if not itself:
    the lowest-numbered earlier trial of it that is complete (with shared metrics) or running.

    Earlier trials still being sampled (running, no ``arch_id`` yet) are waited for, up to
    :data:`SETTLE_S` after they started, so that two drivers sampling one architecture at the
    same moment agree. With ``runtime``, a trial recorded as measured on another runtime (or
    the same one with other options) is not an owner.
    """
    while True:
        earlier = [t for t in study.get_trials(deepcopy=False) if t.number < number]
        if any(
            t.state == _RUNNING and "arch_id" not in t.user_attrs and _age_s(t) < SETTLE_S
            for t in earlier
        ):
            time.sleep(poll_s)
            continue
        for t in sorted(earlier, key=lambda t: t.number):
            attrs = t.user_attrs
            if attrs.get("arch_id") != arch_id or attrs.get("budget") != budget:
                continue
            if runtime is not None and attrs.get("runtime", runtime) != runtime:
                continue  # latency measured on another runtime: not this trial's result
            if t.state == _RUNNING or (t.state == _COMPLETE and "metrics" in attrs):
                return t
        return None


def wait_for_result(
    study: optuna.Study,
    number: int,
    arch_id: str,
    budget: str,
    *,
    limit_s: float,
    runtime: str | None = None,
    poll_s: float = 1.0,
) -> tuple[dict[str, Any] | None, str]:
    """A complete result of ``arch_id`` at ``budget`` from another trial, waiting while its owner
    runs (at most ``limit_s`` seconds in all).

    Returns:
        (the owner's shared metrics, or ``None`` when this trial must evaluate it itself, and a
        note saying why: ``""``, or that the wait ran out).
    """
    deadline = time.monotonic() + limit_s
    while True:
        owner = find_owner(study, number, arch_id, budget, runtime=runtime)
        if owner is None:
            return None, ""
        if owner.state == _COMPLETE:
            return dict(owner.user_attrs["metrics"]), ""
        if time.monotonic() >= deadline:
            return None, (
                f"trial {owner.number} of the shared study, which evaluates the same "
                f"architecture, still ran after {limit_s:g} s; evaluated here as well"
            )
        time.sleep(poll_s)
