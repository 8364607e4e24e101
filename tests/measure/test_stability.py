"""Unstable latency cells: the re-measure-with-backoff decision on synthetic times, and a real
interfering process that makes a cell unstable or re-measured."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
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


# Interfering processes that alternate work and sleep in 30 ms phases, in step (all count phases
# from the same start time, argv[1], until the deadline argv[2], epoch seconds). In each phase copy
# i of n works or sleeps by a coin flip seeded with (phase, i), so the number of busy copies, and
# with it the timed thread's share of the cores, changes from phase to phase over a wide range.
# (One shared on/off pattern would make a two-valued mix of run times, whose MAD collapses to
# almost nothing whenever one of the two values takes more than half of the runs.)
_INTERFERER = textwrap.dedent(
    """
    import random, sys, time

    start, stop_at, me = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    while time.time() < stop_at:
        phase = int((time.time() - start) / 0.03)
        phase_end = start + (phase + 1) * 0.03
        if random.Random(phase * 1000 + me).random() < 0.5:
            while time.time() < phase_end:
                pass
        else:
            time.sleep(max(0.0, phase_end - time.time()))
    """
)


@pytest.mark.slow
def test_a_cell_under_bursty_load_is_re_measured_or_marked_unstable(tmp_path):
    a = torch.randn(160, 160)

    def work():  # ~3 ms on an idle core: about ten runs per phase
        for _ in range(20):
            torch.mm(a, a)

    script = tmp_path / "interfere.py"
    script.write_text(_INTERFERER)
    # three interferers per core: in a phase with k of them busy the timed thread gets about
    # cores / (k + 1) of a core, so its run time varies over ~1x-3.5x from phase to phase
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    start = time.time()
    procs = [
        subprocess.Popen([sys.executable, str(script), str(start), str(start + 20), str(i)])
        for i in range(3 * (cores or 1))
    ]
    try:
        time.sleep(0.3)  # all interferers running
        with cpu_threads(1):  # one thread: no barrier between threads to amplify the load
            got = measure_stable(
                {"work": work},
                policy=StabilityPolicy(cv_threshold=0.1, retries=1, backoff_s=0.05),
                warmup=2,
                min_repeats=150,  # about fifteen phases
                max_repeats=150,
                target_cv=0.0,
                max_seconds=30.0,
            )["work"]
    finally:
        for p in procs:  # only the processes this test started
            p.kill()
            p.wait()
    # the first attempt saw the load change: above the threshold, so it was measured again
    assert got.attempt_cvs[0] > 0.1
    assert got.attempts == 2
    assert got.stable == (got.robust_cv <= 0.1)
