"""Latency of a callable: warm-up, then timed repeats until the median is stable or a cap is hit.

CPU runs are timed with ``time.perf_counter_ns``; CUDA runs with a pair of CUDA events per run
(the end event is synchronised before it is read, and the device is synchronised before timing
starts), so queued asynchronous work never leaks into or out of a measurement.

Stopping rule: ``min_repeats`` timed runs always happen; after them, stop as soon as the
median's relative standard error, estimated robustly as ``1.2533 * 1.4826 * MAD / sqrt(n) /
median``, is at most ``target_cv``, or once ``max_seconds`` of timing have passed; never run more
than ``max_repeats`` (``stable`` says whether the target was reached).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

__all__ = ["LatencyStats", "cpu_threads", "summarize_times", "time_callable"]

_MAD_TO_SIGMA = 1.4826  # MAD -> standard deviation for normal data
_MEDIAN_SE = 1.2533  # sqrt(pi / 2): standard error of the median over that of the mean


@dataclass(frozen=True)
class LatencyStats:
    """Summary of timed runs of one batch (all times in ms).

    Attributes:
        median_ms: median latency of one run.
        p90_ms: 90th percentile (linear interpolation).
        mean_ms: mean latency.
        cv: coefficient of variation of the runs (standard deviation / mean).
        median_rel_se: estimated relative standard error of the median (the stopping criterion).
        n: timed runs.
        warmup: untimed runs before them.
        stable: whether ``median_rel_se`` reached the target before a cap.
        method: how the runs were timed.
        times_ms: every timed run, in order.
    """

    median_ms: float
    p90_ms: float
    mean_ms: float
    cv: float
    median_rel_se: float
    n: int
    warmup: int
    stable: bool
    method: str
    times_ms: tuple[float, ...]

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


def _median_rel_se(times: Sequence[float]) -> float:
    med = statistics.median(times)
    if med <= 0:
        return math.inf
    mad = statistics.median(abs(t - med) for t in times)
    return _MEDIAN_SE * _MAD_TO_SIGMA * mad / math.sqrt(len(times)) / med


def summarize_times(
    times_ms: Sequence[float],
    *,
    warmup: int = 0,
    target_cv: float = 0.0,
    min_repeats: int = 1,
    method: str = "",
) -> LatencyStats:
    """Median, p90, mean, CV and the median's relative standard error of timed runs (ms).

    ``stable`` is True when there are at least ``min_repeats`` runs and the median's relative
    standard error is at most ``target_cv``.
    """
    if not times_ms:
        raise ValueError("times_ms: no timed runs; give at least one time")
    ordered = sorted(times_ms)
    mean = statistics.fmean(ordered)
    std = statistics.stdev(ordered) if len(ordered) > 1 else 0.0
    rel_se = _median_rel_se(ordered)
    return LatencyStats(
        median_ms=statistics.median(ordered),
        p90_ms=_percentile(ordered, 0.9),
        mean_ms=mean,
        cv=std / mean if mean > 0 else 0.0,
        median_rel_se=rel_se,
        n=len(ordered),
        warmup=warmup,
        stable=len(ordered) >= min_repeats and rel_se <= target_cv,
        method=method,
        times_ms=tuple(times_ms),
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


def time_callable(
    fn: Callable[[], object],
    *,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    min_repeats: int = 5,
    max_repeats: int = 50,
    target_cv: float = 0.02,
    max_seconds: float = 2.0,
) -> LatencyStats:
    """Time ``fn()``: ``warmup`` untimed runs, then repeats until stable or a cap (module doc).

    Args:
        fn: the work of one run (e.g. one forward pass of a batch); its result is discarded.
        device: where ``fn`` computes; ``cuda`` uses CUDA events and synchronisation.
        warmup: untimed runs first (allocator, kernel selection, compilation).
        min_repeats: timed runs before the stopping rule is consulted.
        max_repeats: most timed runs.
        target_cv: stop once the median's relative standard error is at most this (0.02 = 2%).
        max_seconds: stop timing after this long once ``min_repeats`` runs are done (the
            warm-up is not counted), s.

    Returns:
        The :class:`LatencyStats` of the timed runs.
    """
    _check_caps(warmup, min_repeats, max_repeats, target_cv, max_seconds)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(dev)
    times: list[float] = []
    started = time.perf_counter()
    while True:
        if cuda:
            with torch.cuda.device(dev):
                start, end = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(float(start.elapsed_time(end)))  # ms
        else:
            t0 = time.perf_counter_ns()
            fn()
            times.append((time.perf_counter_ns() - t0) / 1e6)  # ms
        n = len(times)
        if n >= max_repeats:
            break
        if n >= min_repeats and (
            _median_rel_se(times) <= target_cv or time.perf_counter() - started >= max_seconds
        ):
            break
    method = "cuda events per run, synchronised" if cuda else "perf_counter_ns per run"
    return summarize_times(
        times, warmup=warmup, target_cv=target_cv, min_repeats=min_repeats, method=method
    )
