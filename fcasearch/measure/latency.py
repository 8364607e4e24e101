"""Latency of callables: warm-up, then timed repeats until the median is stable or a cap is hit.

CPU runs are timed with ``time.perf_counter_ns``; CUDA runs with a pair of CUDA events per run
(the end event is synchronised before it is read, and the device is synchronised before timing
starts), so queued asynchronous work never leaks into or out of a measurement.

Several callables (the same model on several runtimes, or several models) are timed side by
side by :func:`time_interleaved`: one run of each per round, the order rotating every round, so
that a burst of load on the machine hits all of them alike.

Stopping rule, per callable: ``min_repeats`` timed runs always happen; after them, stop as soon
as the median's relative standard error, estimated robustly as ``1.2533 * 1.4826 * MAD /
sqrt(n) / median``, is at most ``target_cv`` (``converged``), or once ``max_seconds`` of its own
runs have passed; never more than ``max_repeats``.

Spread: ``cv`` is the plain coefficient of variation (standard deviation / mean), which one
outlier run can inflate; ``robust_cv`` is the robust per-run spread ``1.4826 * MAD / median``
(equal to the CV for normally distributed times). ``stable`` says whether ``robust_cv`` is at
most ``cv_threshold`` and the p90 within :func:`tail_limit` of the median (the MAD stays blind to
up to half the runs disturbed: load that took a tenth of the runs to 4-90x the median left a
robust CV under 0.1, with a p90 that was no measurement, and p90 is an objective too);
:mod:`fcasearch.measure.stability` re-measures cells that are not.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "DEFAULT_CV_THRESHOLD",
    "LatencyStats",
    "cpu_threads",
    "robust_cv",
    "summarize_times",
    "time_callable",
    "time_interleaved",
]

_MAD_TO_SIGMA = 1.4826  # MAD -> standard deviation for normal data
_MEDIAN_SE = 1.2533  # sqrt(pi / 2): standard error of the median over that of the mean
DEFAULT_CV_THRESHOLD = 0.1  # robust per-run spread above which a cell is not a clean number
# the p90 of a stable cell is at most (1 + TAIL_FACTOR * cv_threshold) times its median: 2x at
# the default threshold. On an idle 2-core AMD EPYC the p90 of micro members and FcaFormer-L1
# stayed within 1.02-1.4x the median; runs beside bursts of load gave 2.5-91x with robust CVs
# of 0.01-0.1.
TAIL_FACTOR = 10.0


@dataclass(frozen=True)
class LatencyStats:
    """Summary of timed runs of one batch (all times in ms).

    Attributes:
        median_ms: median latency of one run.
        p90_ms: 90th percentile (linear interpolation).
        mean_ms: mean latency.
        cv: coefficient of variation of the runs (standard deviation / mean).
        robust_cv: robust per-run spread, ``1.4826 * MAD / median``.
        median_rel_se: estimated relative standard error of the median (the stopping criterion).
        n: timed runs.
        warmup: untimed runs before them.
        converged: whether ``median_rel_se`` reached the target before a cap.
        stable: whether ``robust_cv`` is at most the CV threshold and ``p90_ms`` within
            :func:`tail_limit` (with at least ``min_repeats`` runs).
        cv_threshold: that threshold.
        method: how the runs were timed.
        times_ms: every timed run, in order.
        attempts: measurements made of this cell (1 + re-measurements after an unstable one).
        attempt_cvs: ``robust_cv`` of each attempt, in order.
    """

    median_ms: float
    p90_ms: float
    mean_ms: float
    cv: float
    robust_cv: float
    median_rel_se: float
    n: int
    warmup: int
    converged: bool
    stable: bool
    cv_threshold: float
    method: str
    times_ms: tuple[float, ...]
    attempts: int = 1
    attempt_cvs: tuple[float, ...] = ()

    @property
    def why_unstable(self) -> str:
        """What made the cell unstable (empty when it is stable): the spread, the tail, or too
        few runs."""
        if self.stable:
            return ""
        if self.robust_cv > self.cv_threshold:
            return f"robust CV {self.robust_cv:.3f} above the threshold {self.cv_threshold:g}"
        limit = tail_limit(self.median_ms, self.cv_threshold)
        if self.p90_ms > limit:
            return (
                f"p90 {self.p90_ms:.4g} ms over {limit / self.median_ms:.2g}x the median "
                f"{self.median_ms:.4g} ms (a tenth of the runs or more disturbed)"
            )
        return f"{self.n} timed run(s), too few to tell"

    def throughput(self, batch_size: int) -> float:
        """Images per second at this batch size (from the median)."""
        return batch_size / (self.median_ms / 1000.0) if self.median_ms > 0 else math.inf


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def tail_limit(median_ms: float, cv_threshold: float) -> float:
    """The largest p90 of a stable cell: ``median * (1 + TAIL_FACTOR * cv_threshold)``."""
    return median_ms * (1.0 + TAIL_FACTOR * cv_threshold)


def robust_cv(times: Sequence[float]) -> float:
    """``1.4826 * MAD / median`` of ``times``: the runs' spread, blind to a minority of
    outliers (inf for a non-positive median)."""
    med = statistics.median(times)
    if med <= 0:
        return math.inf
    mad = statistics.median(abs(t - med) for t in times)
    return _MAD_TO_SIGMA * mad / med


def _median_rel_se(times: Sequence[float]) -> float:
    return _MEDIAN_SE * robust_cv(times) / math.sqrt(len(times))


def summarize_times(
    times_ms: Sequence[float],
    *,
    warmup: int = 0,
    target_cv: float = 0.0,
    min_repeats: int = 1,
    cv_threshold: float = DEFAULT_CV_THRESHOLD,
    method: str = "",
) -> LatencyStats:
    """Median, p90, mean, CV, robust CV and the median's relative standard error of timed runs.

    ``converged`` is True when the median's relative standard error is at most ``target_cv``;
    ``stable`` when the robust CV is at most ``cv_threshold`` and the p90 within
    :func:`tail_limit`; both need ``min_repeats`` runs.
    """
    if not times_ms:
        raise ValueError("times_ms: no timed runs; give at least one time")
    ordered = sorted(times_ms)
    mean = statistics.fmean(ordered)
    std = statistics.stdev(ordered) if len(ordered) > 1 else 0.0
    rcv = robust_cv(ordered)
    enough = len(ordered) >= min_repeats
    median, p90 = statistics.median(ordered), _percentile(ordered, 0.9)
    return LatencyStats(
        median_ms=median,
        p90_ms=p90,
        mean_ms=mean,
        cv=std / mean if mean > 0 else 0.0,
        robust_cv=rcv,
        median_rel_se=_median_rel_se(ordered),
        n=len(ordered),
        warmup=warmup,
        converged=enough and _median_rel_se(ordered) <= target_cv,
        stable=enough and rcv <= cv_threshold and p90 <= tail_limit(median, cv_threshold),
        cv_threshold=cv_threshold,
        method=method,
        times_ms=tuple(times_ms),
        attempts=1,
        attempt_cvs=(rcv,),
    )


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[int]:
    """Fix torch's intra-op CPU threads for the block (restored after); yields the count used."""
    before = torch.get_num_threads()
    if threads is None:
        yield before
        return
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(
            f"threads: {threads!r} must be a positive integer (or None for torch's current)"
        )
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


def _check_caps(
    warmup: int, min_repeats: int, max_repeats: int, target_cv: float, max_seconds: float
) -> None:
    if warmup < 0:
        raise ValueError(f"warmup: {warmup!r} must be >= 0")
    if min_repeats < 1:
        raise ValueError(f"min_repeats: {min_repeats!r} must be >= 1")
    if max_repeats < min_repeats:
        raise ValueError(f"max_repeats: {max_repeats!r} must be >= min_repeats ({min_repeats})")
    if target_cv < 0:
        raise ValueError(f"target_cv: {target_cv!r} must be >= 0 (0 always runs to a cap)")
    if max_seconds <= 0:
        raise ValueError(f"max_seconds: {max_seconds!r} must be > 0")


def _timer(dev: torch.device) -> Callable[[Callable[[], object]], float]:
    """A function timing one call of its argument, ms."""
    if dev.type != "cuda":

        def cpu(fn: Callable[[], object]) -> float:
            t0 = time.perf_counter_ns()
            fn()
            return (time.perf_counter_ns() - t0) / 1e6

        return cpu

    def cuda(fn: Callable[[], object]) -> float:
        with torch.cuda.device(dev):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))

    return cuda


def time_interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    min_repeats: int = 5,
    max_repeats: int = 50,
    target_cv: float = 0.02,
    max_seconds: float = 2.0,
    cv_threshold: float = DEFAULT_CV_THRESHOLD,
    settle: int = 0,
) -> dict[str, LatencyStats]:
    """Time several callables side by side: one run of each per round, rotating the order.

    Each callable stops on its own (module docstring); the caps apply to each one: its own
    ``max_seconds`` counts only its own runs.

    Args:
        fns: name -> the work of one run (e.g. one forward of a batch; its result is discarded).
        device: where they compute; ``cuda`` uses CUDA events and synchronisation.
        warmup: untimed runs of each first (allocator, kernel selection, compilation).
        min_repeats: timed runs before the stopping rule is consulted.
        max_repeats: most timed runs.
        target_cv: stop once the median's relative standard error is at most this (0.02 = 2%).
        max_seconds: stop timing a callable after this long once ``min_repeats`` runs are done
            (the warm-up is not counted), s.
        cv_threshold: robust CV above which the result is marked not ``stable``.
        settle: untimed runs of a callable right before each of its timed runs. Callables that
            evict each other from the caches (a reference model with 100 MB of weights next to
            a 1-ms candidate) otherwise time each other's leftovers: the timed run then starts
            from its own weights and code, as a model deployed alone does. A single callable
            gets none: nothing else runs between its runs.

    Returns:
        name -> its :class:`LatencyStats`.
    """
    _check_caps(warmup, min_repeats, max_repeats, target_cv, max_seconds)
    if settle < 0:
        raise ValueError(f"settle: {settle!r} must be >= 0")
    if not fns:
        raise ValueError("fns: nothing to time")
    dev = torch.device(device)
    timed = _timer(dev)
    names = list(fns)
    if len(names) == 1:
        settle = 0  # each run already follows one of its own
    for _ in range(warmup):
        for name in names:
            fns[name]()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    times: dict[str, list[float]] = {name: [] for name in names}
    spent = dict.fromkeys(names, 0.0)  # s of each one's own runs
    active = list(names)
    rnd = 0
    while active:
        shift = rnd % len(active)
        for name in active[shift:] + active[:shift]:
            for _ in range(settle):
                fns[name]()
            t0 = time.perf_counter()
            times[name].append(timed(fns[name]))
            spent[name] += time.perf_counter() - t0
        rnd += 1
        for name in list(active):
            n = len(times[name])
            if n >= max_repeats or (
                n >= min_repeats
                and (
                    (target_cv > 0 and _median_rel_se(times[name]) <= target_cv)
                    or spent[name] >= max_seconds
                )
            ):
                active.remove(name)
    method = (
        "cuda events per run, synchronised" if dev.type == "cuda" else "perf_counter_ns per run"
    )
    if len(names) > 1:
        method += f", interleaved with {len(names) - 1} other(s) round by round"
    if settle:
        method += f", {settle} untimed run(s) right before each timed one"
    return {
        name: summarize_times(
            times[name],
            warmup=warmup,
            target_cv=target_cv,
            min_repeats=min_repeats,
            cv_threshold=cv_threshold,
            method=method,
        )
        for name in names
    }


def time_callable(
    fn: Callable[[], object],
    *,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    min_repeats: int = 5,
    max_repeats: int = 50,
    target_cv: float = 0.02,
    max_seconds: float = 2.0,
    cv_threshold: float = DEFAULT_CV_THRESHOLD,
) -> LatencyStats:
    """Time ``fn()`` alone: :func:`time_interleaved` with one callable (same arguments)."""
    return time_interleaved(
        {"": fn},
        device=device,
        warmup=warmup,
        min_repeats=min_repeats,
        max_repeats=max_repeats,
        target_cv=target_cv,
        max_seconds=max_seconds,
        cv_threshold=cv_threshold,
    )[""]
