"""--address joins a Ray cluster that is already running (here: a head started by the test)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from netwatch import PeerWatch
from ports import free_port
from raycluster import kill, pids_with

from fcasearch.cli import main
from fcasearch.search.ray_env import local_ray_env


@pytest.mark.slow
def test_search_joins_an_existing_cluster_by_address(tiny_space, search_args, tmp_path, capsys):
    head = tmp_path / "head"
    env = {**os.environ, **local_ray_env(head)}  # the head, too, stays on loopback
    temp_dir = env["RAY_TMPDIR"]
    port = free_port()
    ray_cli = Path(sys.executable).with_name("ray")  # the ray script of this environment
    start = [str(ray_cli) if ray_cli.exists() else "ray", "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
             f"--temp-dir={temp_dir}", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]  # fmt: skip
    try:
        with PeerWatch(markers=[temp_dir]) as watch:
            subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
            out = tmp_path / "run"
            args = search_args(tiny_space, out, "--n-trials", "2", "--objectives", "accuracy", "macs",
                               "--no-measure", "--executor", "ray", "--address", f"127.0.0.1:{port}")  # fmt: skip
            assert main(args) == 0
            # GPU trials on a cluster without GPUs: a clear error, not a search that waits forever
            # (the driver itself needs no GPU: on a cluster the workers train)
            gpu = search_args(tiny_space, tmp_path / "gpu", "--n-trials", "1", "--objectives", "macs",
                              "--no-measure", "--executor", "ray", "--address", f"127.0.0.1:{port}",
                              "--device", "cuda", "--gpus-per-trial", "1")  # fmt: skip
            assert main(gpu) == 2
            assert "gpus_per_trial: 1, but the Ray cluster at" in capsys.readouterr().err
        df = pd.read_parquet(out / "trials.parquet")
        assert len(df) == 2 and set(df["status"]) == {"complete"}
        assert pids_with(temp_dir), "the cluster must outlive the search that joined it"
        assert not watch.outside(), f"connections beyond loopback: {watch.outside()}"
    finally:  # stop only the Ray this test started (never `ray stop`: it stops every Ray here)
        for pid in pids_with(temp_dir):
            kill(pid)
        time.sleep(0.5)
    assert not pids_with(temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)
