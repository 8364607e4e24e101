"""bench/hypervolume.py runs in its tiny mode (no time is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_runs_tiny():
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "hypervolume.py"), "--tiny", "--repeats", "1"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "hypervolume 50 points x 4 objectives" in out.stdout
    assert "report of a 40-trial 3-objective run" in out.stdout
