"""A noisy latency cell is not a number: re-measure with backoff, then call it unstable.

The decision is made on the robust per-run spread, ``robust_cv = 1.4826 * MAD / median`` of the
timed runs of one cell (:func:`fcasearch.measure.latency.robust_cv`), against ``cv_threshold``
(default 0.1), and on the tail: a p90 beyond ``(1 + 10 * cv_threshold)`` times the median (2x at
the default; :func:`fcasearch.measure.latency.tail_limit`) means a tenth of the runs or more were
disturbed, which the MAD does not see:

* Why the robust spread: a few slow runs (a page fault, one scheduler tick) inflate the plain
  CV (the README's quickstart saw CV 2.7 on a 1.8 ms median) without moving the median; only
  when a large share of the runs is disturbed (load that comes and goes during the cell) does the
  MAD grow, and then the median itself cannot be trusted.
* Why 0.1: on an idle machine the robust spread of a CPU forward is a few percent (timer and
  cache noise; FcaFormer-L1 batch 1 on 2 cores about 1-3%, a 50k-parameter model at 32 px 2-6%);
  a process competing for the cores in bursts puts it at 0.2-1. The threshold sits between.

Backoff: an unstable cell is measured again up to ``retries`` times (default 2). Before retry
``k`` (1, 2, ...) the measurement sleeps ``backoff_s * 2**(k-1)`` seconds (default 0.25 s, then
0.5 s: a burst of load may pass; kept short because a search pays it per unstable trial), and the
repeats and the time cap grow by ``growth**k`` (default 2: a longer window averages over shorter
bursts). The first attempt whose spread is under the
threshold is the result. If none is, the attempt with the smallest spread is kept and marked
``stable=False``: it is recorded as unstable, never as an exact objective value. Several cells
measured side by side are re-measured side by side, only those still unstable.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fcasearch.measure.latency import DEFAULT_CV_THRESHOLD, LatencyStats, time_interleaved

__all__ = ["StabilityPolicy", "measure_stable", "merge_attempts"]


@dataclass(frozen=True)
class StabilityPolicy:
    """When a latency cell counts as stable, and how it is re-measured (module docstring).

    Attributes:
        cv_threshold: largest robust per-run spread of a stable cell.
        retries: re-measurements of an unstable cell (0: none).
        backoff_s: sleep before the first re-measurement, s; doubles for each one after.
        growth: factor on repeats and the time cap, per re-measurement.
    """

    cv_threshold: float = DEFAULT_CV_THRESHOLD
    retries: int = 2
    backoff_s: float = 0.25
    growth: float = 2.0

    def __post_init__(self) -> None:
        if not self.cv_threshold > 0:
            raise ValueError(f"cv_threshold: {self.cv_threshold!r} must be > 0 (e.g. 0.1)")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries: {self.retries!r} must be an integer >= 0")
        if self.backoff_s < 0:
            raise ValueError(f"backoff_s: {self.backoff_s!r} must be >= 0")
        if self.growth < 1:
            raise ValueError(f"growth: {self.growth!r} must be >= 1")

    def sleep_before(self, retry: int) -> float:
        """Seconds to wait before re-measurement ``retry`` (1-based)."""
        return self.backoff_s * 2 ** (retry - 1)

    def timing_for(self, retry: int, timing: Mapping[str, Any]) -> dict[str, Any]:
        """The timing caps of re-measurement ``retry`` (0: the first attempt, as given)."""
        scale = self.growth**retry
        out = dict(timing)
        for key in ("min_repeats", "max_repeats"):
            if key in out:
                out[key] = max(1, round(out[key] * scale))
        if "max_seconds" in out:
            out["max_seconds"] = out["max_seconds"] * scale
        out["cv_threshold"] = self.cv_threshold
        return out


def merge_attempts(attempts: list[LatencyStats]) -> LatencyStats:
    """The result of a cell measured ``len(attempts)`` times: the first stable attempt, or else
    the one with the smallest robust spread (``stable`` False); ``attempts`` and
    ``attempt_cvs`` record them all."""
    if not attempts:
        raise ValueError("attempts: no measurement to choose from")
    chosen = next((a for a in attempts if a.stable), None)
    if chosen is None:
        chosen = min(attempts, key=lambda a: a.robust_cv)
    return dataclasses.replace(
        chosen, attempts=len(attempts), attempt_cvs=tuple(a.robust_cv for a in attempts)
    )


def measure_stable(
    fns: Mapping[str, Callable[[], object]],
    *,
    device: str | torch.device = "cpu",
    policy: StabilityPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    timer: Callable[..., dict[str, LatencyStats]] = time_interleaved,
    **timing: Any,
) -> dict[str, LatencyStats]:
    """Time ``fns`` side by side; re-measure the unstable ones with backoff (module docstring).

    Args:
        fns: name -> one run's work.
        device: ``cpu`` or ``cuda[:N]``.
        policy: threshold and backoff (default :class:`StabilityPolicy`).
        sleep: waits between attempts (tests pass a recorder).
        timer: the timing function (default :func:`time_interleaved`; tests pass a fake).
        **timing: ``warmup``, ``min_repeats``, ``max_repeats``, ``target_cv``, ``max_seconds``
            of the first attempt.

    Returns:
        name -> its :class:`LatencyStats` (``stable``, ``attempts`` and ``attempt_cvs`` set).
    """
    policy = policy or StabilityPolicy()
    history: dict[str, list[LatencyStats]] = {name: [] for name in fns}
    todo = list(fns)
    for retry in range(policy.retries + 1):
        if retry:
            sleep(policy.sleep_before(retry))
        got = timer(
            {name: fns[name] for name in todo}, device=device, **policy.timing_for(retry, timing)
        )
        for name in todo:
            history[name].append(got[name])
        todo = [name for name in todo if not got[name].stable]
        if not todo:
            break
    return {name: merge_attempts(history[name]) for name in fns}
