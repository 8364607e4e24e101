"""Latency statistics and the timing loop (no wall-clock values are asserted, except that a
20-ms sleep takes at least 20 ms and a no-op under 10 ms)."""

from __future__ import annotations

import math
import statistics
import time

import pytest
import torch
from torch import nn

from fcasearch.measure.latency import (
    cpu_threads,
    robust_cv,
    summarize_times,
    time_callable,
    time_interleaved,
)


def test_summary_statistics_of_known_times():
    times = [5.0, 1.0, 4.0, 2.0, 3.0]
    s = summarize_times(
        times, warmup=2, target_cv=0.5, min_repeats=3, cv_threshold=0.5, method="test"
    )
    assert s.median_ms == 3.0
    assert s.p90_ms == pytest.approx(4.6)  # linear interpolation between 4 and 5
    assert s.mean_ms == 3.0
    assert s.cv == pytest.approx(statistics.stdev(times) / 3.0)
    # MAD = 1 -> sigma 1.4826 -> s.e. of the median 1.2533 * 1.4826 / sqrt(5), relative to 3
    assert s.median_rel_se == pytest.approx(1.2533 * 1.4826 / math.sqrt(5) / 3.0)
    assert s.robust_cv == pytest.approx(1.4826 / 3.0) == robust_cv(times)
    assert s.converged and s.stable and s.n == 5 and s.warmup == 2 and s.times_ms == tuple(times)
    assert s.attempts == 1 and s.attempt_cvs == (s.robust_cv,)
    tight = summarize_times(times, target_cv=0.5, min_repeats=3, cv_threshold=0.1)
    assert tight.converged and not tight.stable  # spread 0.49 > 0.1: not a clean number
    assert s.throughput(8) == pytest.approx(8 / 0.003)


def test_single_run_is_never_called_stable():
    s = summarize_times([2.0], target_cv=0.02, min_repeats=5)
    assert s.median_ms == s.p90_ms == 2.0 and s.cv == 0.0 and s.robust_cv == 0.0
    assert not s.stable and not s.converged


def test_robust_cv_ignores_a_minority_of_outliers():
    calm = [10.0, 10.2, 9.9, 10.1, 10.0, 9.8, 10.3, 10.0]
    spiky = [*calm[:-2], 200.0, 150.0]  # two runs hit by a burst of load
    assert robust_cv(spiky) < 0.05 < summarize_times(spiky).cv
    bursty = [10.0, 21.0, 10.2, 19.5, 9.9, 22.0, 10.1, 20.0]  # half the runs slowed
    assert robust_cv(bursty) > 0.3


def test_time_callable_on_a_tiny_model_gives_sane_stats():
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 10)).eval()
    x = torch.randn(4, 32)
    calls = []

    def run():
        calls.append(1)
        return model(x)

    with torch.inference_mode():
        s = time_callable(
            run, warmup=2, min_repeats=4, max_repeats=12, target_cv=0.05, max_seconds=5.0
        )
    assert 4 <= s.n <= 12
    assert len(calls) == 2 + s.n  # warm-up runs are not timed
    assert len(s.times_ms) == s.n and all(t > 0 for t in s.times_ms)
    assert 0 < min(s.times_ms) <= s.median_ms <= s.p90_ms <= max(s.times_ms)
    assert s.cv >= 0 and s.median_rel_se >= 0
    assert s.converged == (s.median_rel_se <= 0.05)
    assert s.stable == (s.robust_cv <= s.cv_threshold)
    assert s.throughput(4) == pytest.approx(4000.0 / s.median_ms)
    assert "perf_counter" in s.method


def test_zero_target_runs_to_the_repeat_cap():
    s = time_callable(
        lambda: None, warmup=0, min_repeats=3, max_repeats=7, target_cv=0.0, max_seconds=60.0
    )
    assert s.n == 7


def test_time_cap_still_honours_min_repeats():
    s = time_callable(
        lambda: sum(range(1000)),
        warmup=0,
        min_repeats=3,
        max_repeats=50,
        target_cv=0.0,
        max_seconds=1e-9,
    )
    assert s.n == 3


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"warmup": -1}, "warmup"),
        ({"min_repeats": 0}, "min_repeats"),
        ({"min_repeats": 5, "max_repeats": 2}, "max_repeats"),
        ({"target_cv": -0.1}, "target_cv"),
        ({"max_seconds": 0}, "max_seconds"),
    ],
)
def test_bad_caps_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        time_callable(lambda: None, **kwargs)


def test_interleaved_rounds_rotate_and_each_callable_keeps_its_own_runs():
    order: list[str] = []
    fns = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    stats = time_interleaved(
        fns, warmup=1, min_repeats=4, max_repeats=4, target_cv=0.0, max_seconds=60.0
    )
    assert order[:3] == ["a", "b", "c"]  # warm-up, in order
    timed = order[3:]
    rounds = [timed[i : i + 3] for i in range(0, len(timed), 3)]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert set(stats) == {"a", "b", "c"} and all(s.n == 4 for s in stats.values())
    assert "interleaved with 2 other(s)" in stats["a"].method


def test_settle_runs_each_callable_untimed_right_before_its_timed_run():
    # a callable that is slow when another one ran just before it (its caches taken over)
    last: list[str] = []

    def make(name):
        def run():
            if last and last[-1] != name:
                time.sleep(0.02)
            last.append(name)

        return run

    fns = {name: make(name) for name in "abc"}  # rotating three: never one twice in a row
    caps = {"warmup": 0, "min_repeats": 5, "max_repeats": 5, "target_cv": 0.0}
    cold = time_interleaved(fns, **caps)
    assert all(s.median_ms >= 20 for s in cold.values())  # each timed right after another
    last.clear()
    warm = time_interleaved(fns, settle=1, **caps)
    assert all(s.median_ms < 10 for s in warm.values())  # the settle run took the hit
    assert last[:6] == ["a", "a", "b", "b", "c", "c"] and len(last) == 30  # untimed, then timed
    assert "1 untimed run(s) right before each timed one" in warm["a"].method
    last.clear()
    alone = time_interleaved({"a": fns["a"]}, settle=1, **caps)  # nothing runs in between
    assert len(last) == 5 and "untimed" not in alone["a"].method
    with pytest.raises(ValueError, match="settle"):
        time_interleaved(fns, settle=-1)


def test_interleaved_callables_stop_on_their_own():
    # a callable that reaches its time cap stops; the other runs on to max_repeats
    stats = time_interleaved(
        {"slow": lambda: sum(range(20000)), "fast": lambda: None},
        warmup=0,
        min_repeats=3,
        max_repeats=40,
        target_cv=0.0,
        max_seconds=1e-4,
    )
    assert stats["slow"].n == 3 and stats["fast"].n >= 3


def test_nothing_to_time_is_an_error():
    with pytest.raises(ValueError, match="fns"):
        time_interleaved({})


def test_cpu_threads_fixes_and_restores():
    before = torch.get_num_threads()
    with cpu_threads(1) as used:
        assert used == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cpu_threads(None) as used:
        assert used == before
    with pytest.raises(ValueError, match="threads"):
        with cpu_threads(0):
            pass


@pytest.mark.gpu
def test_cuda_timing_uses_events():
    model = nn.Linear(256, 256).cuda().eval()
    x = torch.randn(64, 256, device="cuda")
    with torch.inference_mode():
        s = time_callable(lambda: model(x), device="cuda", warmup=3, min_repeats=5, max_repeats=20)
    assert "cuda events" in s.method
    assert s.n >= 5 and s.median_ms > 0 and s.p90_ms >= s.median_ms


def test_a_tenth_of_the_runs_disturbed_is_not_stable_though_the_mad_is_calm():
    """A search recorded latency_ms 1.09 as stable with robust CV 0.084 and a p90 of 99.6 ms:
    the MAD is blind to up to half the runs disturbed, and p90 is an objective too."""
    calm = [1.0 + 0.002 * (i % 10) for i in range(85)]
    hit = calm + [60.0 + i for i in range(15)]  # 15% of the runs taken by bursts of load
    s = summarize_times(hit, cv_threshold=0.1)
    assert s.robust_cv < 0.1 and s.p90_ms > 50
    assert not s.stable and "p90" in s.why_unstable and "median" in s.why_unstable
    assert summarize_times(calm, cv_threshold=0.1).stable  # an idle machine's tail
    one_slow = [*calm, 60.0]  # one page fault or tick: its median and p90 stand
    assert summarize_times(one_slow, cv_threshold=0.1).stable
    spread = summarize_times([1.0, 1.5, 2.0, 2.5, 3.0], cv_threshold=0.1)
    assert not spread.stable and spread.why_unstable.startswith("robust CV")
