"""The Ray executor on a local 2-CPU Ray: same trials, same results, nothing beyond loopback."""

from __future__ import annotations

import ipaddress
import threading
import time

import optuna
import pandas as pd
import pytest

from fcasearch.cli import main


def _hex_ip(text: str) -> ipaddress._BaseAddress:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    # /proc/net/tcp6 stores four little-endian 32-bit words
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    addr = ipaddress.IPv6Address(words)
    return addr.ipv4_mapped or addr


def tcp_sockets() -> list[tuple]:
    """(local ip, remote ip, state) of every TCP socket in this network namespace."""
    out = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(path).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, remote, state = f[1].split(":")[0], f[2].split(":")[0], f[3]
            out.append((_hex_ip(local), _hex_ip(remote), state))
    return out


class PeerWatch:
    """Polls the socket tables while a block runs; remembers every remote peer seen."""

    def __init__(self, period: float = 0.05) -> None:
        self.period, self.peers, self.local = period, set(), set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for local, remote, state in tcp_sockets():
                self.local.add(local)
                if state != "0A" and not remote.is_unspecified:  # 0A = LISTEN
                    self.peers.add(remote)
            time.sleep(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def outside(self) -> set:
        """Peers that are neither loopback nor an address of this machine."""
        return {p for p in self.peers if not p.is_loopback and p not in self.local}


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
