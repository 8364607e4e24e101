"""The Ray executor on a local 2-CPU Ray: same trials, same results, nothing beyond loopback."""

from __future__ import annotations

import ipaddress
import time

import optuna
import pandas as pd
import pytest
from netwatch import PeerWatch

from fcasearch.cli import main


def test_peer_watch_sees_a_connection():
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    with PeerWatch() as watch:
        cli = socket.create_connection(srv.getsockname())
        conn, _ = srv.accept()
        time.sleep(0.3)
        cli.close(), conn.close(), srv.close()
    assert ipaddress.ip_address("127.0.0.1") in watch.peers and not watch.outside()


@pytest.mark.slow
def test_ray_search_runs_the_same_trials_and_stays_on_loopback(tiny_space, search_args, tmp_path):
    import ray

    out = tmp_path / "run"
    args = search_args(
        tiny_space,
        out,
        "--n-trials",
        "4",
        "--objectives",
        "accuracy:max",
        "macs:min",
        "--no-measure",
        "--executor",
        "ray",
        "--max-concurrent",
        "2",
        "--cpus-per-trial",
        "1",
    )
    with PeerWatch() as watch:
        assert main(args) == 0
    assert not ray.is_initialized()  # the run shut down the Ray it started
    assert not watch.outside(), f"connections beyond loopback: {watch.outside()}"
    assert (
        (out / "ray" / "home" / "ray_bootstrap_config.yaml")
        .read_text()
        .strip()
        .endswith("type: local")
    )
    df = pd.read_parquet(out / "trials.parquet")
    assert len(df) == 4 and set(df["status"]) == {"complete"}
    assert df["accuracy"].between(0, 1).all() and df["arch_id"].str.len().eq(12).all()
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4
    assert sorted(t.user_attrs["arch_id"] for t in done) == sorted(df["arch_id"])
