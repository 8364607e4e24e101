"""Unstable latency cells: the re-measure-with-backoff decision on synthetic times, and real
timings of a cell whose load changes on purpose (measured again, then marked unstable)."""

from __future__ import annotations

import random
import time

import pytest
import torch

from fcasearch.measure.latency import cpu_threads, summarize_times
from fcasearch.measure.stability import StabilityPolicy, measure_stable, merge_attempts

CALM = [10.0, 10.1, 9.9, 10.2, 10.0, 9.95, 10.05, 10.1]  # robust CV ~0.01
BURSTY = [10.0, 20.0, 10.5, 21.0, 9.8, 19.0, 10.2, 22.0]  # half the runs slowed: ~0.5


class FakeTimer:
    """Plays back synthetic times per name and attempt; records what it was asked."""

    def __init__(self, script: dict[str, list[list[float]]]):
        self.script = script
        self.calls: list[tuple[list[str], dict]] = []

    def __call__(self, fns, *, device, **timing):
        self.calls.append((list(fns), timing))
        out = {}
        for name in fns:
            attempt = sum(name in names for names, _ in self.calls) - 1
            out[name] = summarize_times(
                self.script[name][attempt],
                min_repeats=min(timing["min_repeats"], 3),
                cv_threshold=timing["cv_threshold"],
            )
        return out


def _run(script, policy=None, **timing):
    timer, slept = FakeTimer(script), []
    caps = {"warmup": 1, "min_repeats": 5, "max_repeats": 20, "target_cv": 0.02, "max_seconds": 1.0}
    caps.update(timing)
    got = measure_stable(
        {name: (lambda: None) for name in script},
        policy=policy or StabilityPolicy(),
        sleep=slept.append,
        timer=timer,
        **caps,
    )
    return got, timer, slept


def test_a_stable_cell_is_measured_once():
    got, timer, slept = _run({"eager": [CALM]})
    s = got["eager"]
    assert s.stable and s.attempts == 1 and len(timer.calls) == 1 and slept == []
    assert s.attempt_cvs == (pytest.approx(s.robust_cv),)


def test_an_unstable_cell_is_measured_again_with_backoff_and_longer_windows():
    got, timer, slept = _run({"eager": [BURSTY, CALM]})
    s = got["eager"]
    assert s.stable and s.attempts == 2 and s.median_ms == pytest.approx(10.025)
    assert slept == [0.25]
    first, second = timer.calls[0][1], timer.calls[1][1]
    assert (second["min_repeats"], second["max_repeats"]) == (10, 40)
    assert second["max_seconds"] == pytest.approx(2 * first["max_seconds"])
    assert s.attempt_cvs[0] > 0.1 >= s.attempt_cvs[1]


def test_a_cell_that_stays_unstable_is_recorded_as_unstable():
    worse = [10.0, 30.0, 11.0, 29.0, 9.0, 35.0, 10.0, 40.0]
    got, timer, slept = _run({"eager": [BURSTY, worse, BURSTY]})
    s = got["eager"]
    assert not s.stable and s.attempts == 3 and len(s.attempt_cvs) == 3
    assert slept == [0.25, 0.5]  # doubling backoff
    assert s.robust_cv == min(s.attempt_cvs)  # the calmest attempt is kept, still unstable
    assert timer.calls[2][1]["max_repeats"] == 80


def test_the_calmest_attempt_is_kept_wherever_it_falls():
    """Neither the first nor the last attempt: the one with the smallest spread, in the middle."""
    worse = [10.0, 30.0, 11.0, 29.0, 9.0, 35.0, 10.0, 40.0]
    got, _, _ = _run({"eager": [worse, BURSTY, worse]})
    s = got["eager"]
    assert not s.stable and s.attempts == 3
    first, middle, last = s.attempt_cvs
    assert middle < min(first, last) and middle > 0.1
    assert s.robust_cv == middle and s.median_ms == pytest.approx(14.75)  # BURSTY's median


def test_only_the_unstable_runtimes_are_measured_again_side_by_side():
    got, timer, _ = _run(
        {"eager": [CALM], "onnxruntime": [BURSTY, CALM], "compile": [BURSTY, BURSTY, CALM]}
    )
    assert [names for names, _ in timer.calls] == [
        ["eager", "onnxruntime", "compile"],
        ["onnxruntime", "compile"],
        ["compile"],
    ]
    assert [got[n].attempts for n in ("eager", "onnxruntime", "compile")] == [1, 2, 3]
    assert all(s.stable for s in got.values())


def test_no_retries_means_one_attempt():
    got, _, slept = _run({"eager": [BURSTY]}, policy=StabilityPolicy(retries=0))
    assert not got["eager"].stable and got["eager"].attempts == 1 and slept == []


def test_threshold_is_a_parameter():
    got, _, _ = _run({"eager": [BURSTY]}, policy=StabilityPolicy(cv_threshold=0.8, retries=0))
    assert got["eager"].stable and got["eager"].cv_threshold == 0.8


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"cv_threshold": 0}, "cv_threshold"),
        ({"retries": -1}, "retries"),
        ({"backoff_s": -1}, "backoff_s"),
        ({"growth": 0.5}, "growth"),
    ],
)
def test_bad_policy_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        StabilityPolicy(**kwargs)


def test_merge_attempts_needs_one():
    with pytest.raises(ValueError, match="attempts"):
        merge_attempts([])


# A cell made unstable on purpose, independent of how the machine schedules processes. Real
# interfering processes (work/sleep in phases) made this cell unstable on an idle 2-core machine,
# but on CI's runner they left the median and its MAD alone (robust CV 0.027 where 0.1 was needed;
# how that runner schedules is not visible from here, and a test cannot depend on it). So the
# slowdown is part of the timed work: a seeded schedule of 30 ms phases, each doing 1x to 3.5x
# the base work, as a device shared with a tenant whose load changes from phase to phase. The
# times are real wall-clock times taken by the real measurement path (no fake timer).
_FACTORS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5)


@pytest.mark.slow
def test_a_cell_under_changing_load_is_re_measured_and_marked_unstable():
    a = torch.randn(160, 160)
    start = time.perf_counter()

    def work():  # ~3 ms of base work on an idle core; about ten runs per phase
        phase = int((time.perf_counter() - start) / 0.03)
        factor = random.Random(phase).choice(_FACTORS)
        for _ in range(round(20 * factor)):
            torch.mm(a, a)

    with cpu_threads(1):
        got = measure_stable(
            {"work": work},
            policy=StabilityPolicy(cv_threshold=0.1, retries=1, backoff_s=0.05),
            warmup=2,
            min_repeats=150,  # about fifteen phases per attempt
            max_repeats=150,
            target_cv=0.0,
            max_seconds=30.0,
        )["work"]
    # the first attempt saw the load change: above the threshold, so it was measured again; the
    # load kept changing, so the cell is recorded as unstable, with both attempts' CVs
    assert got.attempts == 2 and len(got.attempt_cvs) == 2
    assert min(got.attempt_cvs) > 0.1
    assert not got.stable and got.robust_cv == min(got.attempt_cvs)


def test_a_calm_cell_measured_for_real_is_stable_in_one_attempt():
    """The other side of the same path: a cell whose work does not change passes the threshold
    at once (a generous one, so a busy runner cannot fail it)."""
    a = torch.randn(64, 64)
    with cpu_threads(1):
        got = measure_stable(
            {"work": lambda: torch.mm(a, a)},
            policy=StabilityPolicy(cv_threshold=0.5, retries=1, backoff_s=0.0),
            warmup=5,
            min_repeats=50,
            max_repeats=50,
            target_cv=0.0,
            max_seconds=10.0,
        )["work"]
    assert got.attempts == 1 and got.stable and got.robust_cv <= 0.5
