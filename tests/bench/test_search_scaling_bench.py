"""bench/search_scaling.py runs in a minimal configuration (no time is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_scaling_bench_runs_minimal():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "search_scaling.py"), "--widths", "1",
         "--waves", "2", "--seconds", "0.5", "--no-cluster"],
        capture_output=True, text=True, timeout=900, cwd=REPO, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert any(line.startswith("local       width 1:") for line in lines), out.stdout
    assert any(line.startswith("ray local   width 1:") for line in lines), out.stdout
    assert any("Ray adds" in line and "per trial" in line for line in lines), out.stdout


def test_the_cluster_part_loads_its_cluster_helper_outside_pytest():
    # the test helper imports its neighbour `ports`, which only pytest put on the path: the
    # bench's cluster part failed with ModuleNotFoundError after the local lines
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('b', {str(REPO / 'bench' / 'search_scaling.py')!r})\n"
        "b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)\n"
        "print(b._cluster_module().LoopbackCluster.__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/", env=env
    )
    assert out.returncode == 0 and out.stdout.strip() == "LoopbackCluster", out.stderr[-2000:]
