"""The device lock: a measurement never overlaps a training section, trainers run side by side,
and a waiting measurement is not starved (writer preference). Real processes, one shared log;
nothing here asserts a duration."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from fcasearch.search.devicelock import DeviceLock, device_key, lock_for

# role folder log sections hold_s: appends "<role> <pid> start|end" inside each section
WORKER = """
import os, sys, time
from fcasearch.search.devicelock import DeviceLock

role, folder, log, sections, hold = sys.argv[1:6]
lock = DeviceLock("test-cpu", folder)

def note(what):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{role} {os.getpid()} {what}\\n".encode())
    os.close(fd)

for _ in range(int(sections)):
    if role == "measure":
        note("request")
        section = lock.exclusive()
    elif role == "unlocked":
        note("request")
        section = None
    else:
        section = lock.shared()
    if section is None:
        note("start"); time.sleep(float(hold)); note("end")
    else:
        with section:
            note("start"); time.sleep(float(hold)); note("end")
    if role != "train":
        time.sleep(0.02)
"""


def _start(tmp_path: Path, role: str, sections: int, hold: float) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    args = [sys.executable, str(script), role, str(tmp_path / "locks"), str(tmp_path / "log")]
    return subprocess.Popen([*args, str(sections), str(hold)])


def _wait_for(log: Path, text: str) -> None:
    while not (log.exists() and text in log.read_text()):
        time.sleep(0.01)


def _events(log: Path) -> list[tuple[str, str, str]]:
    return [tuple(line.split()) for line in log.read_text().splitlines()]


def _overlaps(events) -> int:
    """Measurement sections that overlapped a training section, counted from the log order."""
    training: set[str] = set()
    measuring = False
    bad = 0
    for role, pid, what in events:
        if role == "train":
            if what == "start":
                bad += measuring
                training.add(pid)
            else:
                training.discard(pid)
        elif what == "start":
            bad += bool(training)
            measuring = True
        elif what == "end":
            measuring = False
    return bad


def _run(tmp_path: Path, measurer: str) -> list:
    trainers = [_start(tmp_path, "train", 60, 0.01) for _ in range(2)]
    _wait_for(tmp_path / "log", "train")
    m = _start(tmp_path, measurer, 8, 0.02)
    for p in [*trainers, m]:
        assert p.wait(timeout=120) == 0
    return _events(tmp_path / "log")


def test_a_measurement_never_overlaps_training(tmp_path):
    events = _run(tmp_path, "measure")
    assert sum(1 for r, _, w in events if r == "measure" and w == "end") == 8
    assert _overlaps(events) == 0
    # the two trainers did run side by side (shared sections)
    open_sections, most = set(), 0
    for role, pid, what in events:
        if role == "train":
            (open_sections.add if what == "start" else open_sections.discard)(pid)
            most = max(most, len(open_sections))
    assert most == 2


def test_the_log_sees_an_overlap_when_nothing_locks(tmp_path):
    # the same run with a measurer that ignores the lock: the check above would have caught it
    assert _overlaps(_run(tmp_path, "unlocked")) > 0


def test_a_waiting_measurement_is_not_starved_by_overlapping_trainers(tmp_path):
    # two trainers whose sections overlap keep the shared lock held without a gap; a waiting
    # measurement still gets in after at most the sections already under way
    events = _run(tmp_path, "measure")
    requested = None
    started_meanwhile: dict[str, int] = {}
    for role, pid, what in events:
        if role == "measure" and what == "request":
            requested, started_meanwhile = True, {}
        elif role == "measure" and what == "start":
            assert all(n <= 1 for n in started_meanwhile.values()), started_meanwhile
            requested = None
        elif role == "train" and what == "start" and requested:
            started_meanwhile[pid] = started_meanwhile.get(pid, 0) + 1


def test_keys_name_the_node_and_the_physical_gpu(monkeypatch, tmp_path):
    assert device_key("cpu").endswith("-cpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert device_key("cuda").endswith("-gpu-3") and device_key("cuda:1").endswith("-gpu-5")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1a2b/x")
    assert device_key("cuda:0").endswith("-gpu-GPU-1a2b_x")
    monkeypatch.setenv("FCASEARCH_LOCK_DIR", str(tmp_path / "here"))
    assert lock_for("cpu").folder == tmp_path / "here"


def test_sections_are_reentrant_per_call_and_leave_no_lock_held(tmp_path):
    lock = DeviceLock("k", tmp_path)
    with lock.shared(), DeviceLock("k", tmp_path).shared():
        pass  # two shared sections at once
    with lock.exclusive():
        pass
    with lock.shared():  # nothing left held by the exclusive section
        pass
    with pytest.raises(RuntimeError):
        with lock.exclusive():
            raise RuntimeError("a failing measurement releases the lock")
    with lock.exclusive():
        pass
