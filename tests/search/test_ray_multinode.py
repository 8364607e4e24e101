"""Searches on a real multi-node Ray cluster on this machine (a head and two worker nodes, each
its own `ray start`), run as separate search processes with --address, as on a cluster; and
GPU packing: --gpus-per-trial 0.5 on a node Ray is told has one GPU."""

from __future__ import annotations

import json

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


def test_trials_spread_over_the_worker_nodes(tmp_path):
    with LoopbackCluster(tmp_path / "cluster") as cluster:
        cluster.add_node("head", cpus=0)  # the head runs the driver's side only
        cluster.add_node("w1", cpus=1)
        cluster.add_node("w2", cpus=1)
        workers = {cluster.node_id("w1"), cluster.node_id("w2")}
        out = tmp_path / "run"
        df = _search(cluster, out, "--budget", "dry=2", "--n-trials", "4", "--max-concurrent", "2",
                     log=tmp_path / "search.log")  # fmt: skip
        assert cluster.raylet_pid("w1") and cluster.raylet_pid("w2")  # the cluster outlives it
    assert len(df) == 4 and set(df["status"]) == {"complete"}
    assert set(df["ray_node"]) == workers  # both workers ran trials, the head none
    assert (df["failures"] == 0).all()
    # the results land in the driver's --out, as for a local search
    for name in ("trials.parquet", "trials.csv", "pareto.csv", "study.db", "run.yaml"):
        assert (out / name).exists()


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
        cluster.add_node("head", cpus=4, gpus=1)  # Ray is told of one GPU; trials use the CPU
        out = tmp_path / "run"
        df = _search(cluster, out, "--budget", "dry=3", "--n-trials", "6", "--max-concurrent", "4",
                     "--gpus-per-trial", "0.5", "--device", "cpu",
                     log=tmp_path / "search.log")  # fmt: skip
    assert len(df) == 6 and set(df["status"]) == {"complete"}
    assert set(df["device"]) == {"cpu"}  # the device the options name
    assert set(df["cuda_visible_devices"]) == {"0"}  # each trial saw the one GPU Ray gave it
    # 4 CPUs would run 4 trials at once: the GPU allows 2 (half each), and 2 ran together
    assert _most_at_once(_windows(df)) == 2
