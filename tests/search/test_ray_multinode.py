"""GPU packing on a real Ray node started with `ray start` on this machine, searched by a separate
search process with --address, as on a cluster: --gpus-per-trial 0.5 on a node Ray is told has
one GPU. (Trials spread over two worker nodes: test_ray_faults.py, before one of them dies.)"""

from __future__ import annotations

import json
import socket

import pandas as pd
import pytest
from raycluster import LoopbackCluster
from searchkit import search_args

pytestmark = pytest.mark.slow


def _search(cluster, out, *extra, log):
    args = search_args("micro", out, "--objectives", "accuracy", "macs", "--sampler", "random",
                       "--executor", "ray", "--address", cluster.address, *extra)  # fmt: skip
    proc = cluster.search(*args, log=log)
    code = proc.wait(timeout=600)
    assert code == 0, log.read_text()[-4000:]
    return pd.read_parquet(out / "trials.parquet")


def _windows(df):
    """(start, end) wall-clock seconds of each dry-run trial's sleep."""
    out = []
    for notes in df["notes"]:
        window = json.loads(notes).get("dry_window")  # absent on a reused row
        if window:
            t0, t1 = (float(x) for x in window.split(","))
            out.append((t0, t1))
    return out


def _most_at_once(windows) -> int:
    events = sorted([(t0, 1) for t0, _ in windows] + [(t1, -1) for _, t1 in windows])
    now = most = 0
    for _, step in events:  # an end sorts before a start at the same instant
        now += step
        most = max(most, now)
    return most


def test_half_a_gpu_per_trial_packs_two_trials_per_gpu(tmp_path):
    with LoopbackCluster(tmp_path / "cluster") as cluster:
        # the harness's retry: a server takes the head's port after it was picked; the failed
        # start is cleaned up and the head comes up on another port
        taken = cluster.port
        with socket.create_server(("127.0.0.1", taken)):
            cluster.add_node("head", cpus=4, gpus=1)  # Ray is told of one GPU; trials use the CPU
        assert cluster.port != taken
        out = tmp_path / "run"
        df = _search(cluster, out, "--budget", "dry=3", "--n-trials", "6", "--max-concurrent", "4",
                     "--gpus-per-trial", "0.5", "--device", "cpu",
                     log=tmp_path / "search.log")  # fmt: skip
    assert len(df) == 6 and set(df["status"]) == {"complete"}
    assert set(df["device"]) == {"cpu"}  # the device the options name
    assert set(df["cuda_visible_devices"]) == {"0"}  # each trial saw the one GPU Ray gave it
    # 4 CPUs would run 4 trials at once: the GPU allows 2 (half each), and 2 ran together
    assert _most_at_once(_windows(df)) == 2
