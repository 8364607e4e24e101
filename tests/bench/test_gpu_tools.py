"""bench/gpu_check.sh and bench/measure_isolation.py: the parts that run without a GPU."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_parses_and_refuses_an_unknown_part(tmp_path):
    script = str(BENCH / "gpu_check.sh")
    assert subprocess.run(["bash", "-n", script], capture_output=True).returncode == 0
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", script, str(out), "tests", "rays"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "unknown part 'rays'" in done.stderr and "isolation" in done.stderr
    assert not out.exists()  # refused before anything ran or was written


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_measure_isolation_on_cuda_without_a_gpu_says_so():
    done = subprocess.run(
        [sys.executable, str(BENCH / "measure_isolation.py"), "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "--device cuda: torch sees no CUDA device here" in done.stderr


@pytest.mark.slow
def test_measure_isolation_prints_the_three_modes():
    done = subprocess.run(
        [sys.executable, str(BENCH / "measure_isolation.py"), "--cells", "1", "--trainers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "batch 1, cpu, 1 thread(s); 1 trainer process(es) of 1 thread(s), batch 64" in lines[0]
    for mode in ("idle (no training)", "training, no lock", "training, with lock"):
        (line,) = [ln for ln in lines if ln.startswith(mode)]
        assert "robust CV median" in line and "above 0.1:" in line and "latency median" in line


def _isolation_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "measure_isolation", BENCH / "measure_isolation.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_probe_line_counts_verdicts_unlike_the_idle_majority():
    line = _isolation_module()._probe_line
    a, b = (196, 192, 768), (49, 384, 1536)
    idle = [{a: 1.5, b: 1.2}, {a: 1.6, b: 1.0}, {a: 1.4, b: 1.3}]  # majority: both convolution
    busy = [{a: 0.5, b: 1.2}, {a: 1.5, b: 0.9}]  # two verdicts flipped
    text = line("training, no lock", busy, idle, "CPU")
    assert text.startswith("training, no lock") and text.endswith("| CPU")
    assert "verdicts unlike idle's: 2/4" in text
    assert "lowest speed-up per cell 0.50-0.90x" in text
    assert "verdicts unlike idle's: 1/6" in line("idle", idle, idle, "CPU")  # the 1.0x one


def test_measure_isolation_refuses_the_probe_on_a_gpu():
    done = subprocess.run(
        [sys.executable, str(BENCH / "measure_isolation.py"), "--probe", "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "the Linear probe runs on a CPU only" in done.stderr
