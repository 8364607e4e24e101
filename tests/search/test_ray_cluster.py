"""--address joins a Ray cluster that is already running (here: a head started by the test)."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from netwatch import PeerWatch
from raycluster import LoopbackCluster, pids_with

from fcasearch.cli import main


@pytest.mark.slow
def test_search_joins_an_existing_cluster_by_address(tiny_space, search_args, tmp_path, capsys):
    # the head: `ray start` by the cluster harness, on loopback, stopped by PID on exit (never
    # `ray stop`: it stops every Ray here)
    with LoopbackCluster(tmp_path / "head") as cluster:
        temp_dir = cluster.temp_dir
        with PeerWatch(markers=[temp_dir]) as watch:
            cluster.add_node("head", cpus=2)
            out = tmp_path / "run"
            args = search_args(tiny_space, out, "--n-trials", "2", "--objectives", "accuracy", "macs",
                               "--no-measure", "--executor", "ray", "--address", cluster.address)  # fmt: skip
            assert main(args) == 0
            # GPU trials on a cluster without GPUs: a clear error, not a search that waits forever
            # (the driver itself needs no GPU: on a cluster the workers train)
            gpu = search_args(tiny_space, tmp_path / "gpu", "--n-trials", "1", "--objectives", "macs",
                              "--no-measure", "--executor", "ray", "--address", cluster.address,
                              "--device", "cuda", "--gpus-per-trial", "1")  # fmt: skip
            assert main(gpu) == 2
            assert "gpus_per_trial: 1, but the Ray cluster at" in capsys.readouterr().err
        df = pd.read_parquet(out / "trials.parquet")
        assert len(df) == 2 and set(df["status"]) == {"complete"}
        assert pids_with(temp_dir), "the cluster must outlive the search that joined it"
        assert not watch.outside(), f"connections beyond loopback: {watch.outside()}"
    assert not pids_with(temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)
