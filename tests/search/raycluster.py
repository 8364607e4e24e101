"""A real multi-node Ray cluster on this machine for tests: a head and worker nodes started with
``ray start`` (each its own raylet, CPU and GPU counts), searches run against it as separate
``python -m fcasearch`` processes (as a user runs them), and every process stopped by PID
(``ray stop`` would stop every Ray on the machine).

The nodes and the drivers share the test process's environment, so they agree on Ray's token
auth (tests/conftest.py sets it), and fcasearch's loopback settings (HOME with a local-provider
bootstrap file, usage stats off, a loopback report URL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ports import free_port

from fcasearch.search.ray_env import local_ray_env

ROOT = Path(__file__).resolve().parents[2]  # the checkout under test


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def pids_with(marker: str) -> list[int]:
    """Processes (not this one) whose command line holds ``marker``."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            if any(marker in part for part in cmdline(int(proc.name))):
                out.append(int(proc.name))
    return out


def children(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid:
                out.append(int(proc.name))
    return out


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class LoopbackCluster:
    """Nodes of one Ray cluster on this machine. Use as a context manager (stops every process
    of the cluster on exit)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, **local_ray_env(root)}
        # token auth on every node and driver, one token (local_ray_env's RAY_AUTH_TOKEN): a
        # driver joining by address turns it on only when RAY_AUTH_MODE says so
        self.env.setdefault("RAY_AUTH_MODE", "token")
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        self.temp_dir = self.env["RAY_TMPDIR"]
        self.port = free_port()
        self.nodes: dict[str, int] = {}  # name -> node manager port (in its raylet's cmdline)
        ray_cli = Path(sys.executable).with_name("ray")
        self._ray = str(ray_cli) if ray_cli.exists() else "ray"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add_node(self, name: str, cpus: int, gpus: int = 0) -> None:
        """Start a node (the first one is the head) with its own CPU and GPU counts.

        A port can still be taken between the check and Ray's bind (by a server another test
        starts): a start that fails on a port is cleaned up and tried again on new ports."""
        tries = 3
        for attempt in range(tries):
            port = free_port()
            cmd = [
                self._ray, "start", f"--num-cpus={cpus}", f"--num-gpus={gpus}",
                f"--temp-dir={self.temp_dir}", "--node-ip-address=127.0.0.1",
                "--disable-usage-stats", "--object-store-memory=100000000",
                f"--node-manager-port={port}", f"--object-manager-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--dashboard-agent-grpc-port={free_port()}",
                f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
            ]  # fmt: skip
            if self.nodes:
                cmd.append(f"--address={self.address}")
            else:
                cmd += ["--head", f"--port={self.port}", "--include-dashboard=false"]
            out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180)
            if not out.returncode:
                self.nodes[name] = port
                return
            text = out.stdout + out.stderr
            if attempt < tries - 1 and ("Address already in use" in text or "grpc server" in text):
                # what the failed start left: for a worker, its raylet (found by its port) and the
                # raylet's children; for the head, every process of the cluster (and a new port)
                if self.nodes:
                    raylets = pids_with(f"--node_manager_port={port}")
                    left = raylets + [c for r in raylets for c in children(r)]
                else:
                    left = pids_with(self.temp_dir)
                    self.port = free_port()
                for pid in left:
                    kill(pid)
                continue
            raise RuntimeError(f"ray start ({name}) failed:\n{text[-4000:]}")

    def raylet_pid(self, name: str) -> int:
        flag = f"--node_manager_port={self.nodes[name]}"
        found = [p for p in pids_with(flag) if Path(cmdline(p)[0]).name == "raylet"]
        if len(found) != 1:
            raise RuntimeError(f"node {name}: raylets {found}")
        return found[0]

    def node_id(self, name: str) -> str:
        for part in cmdline(self.raylet_pid(name)):
            if part.startswith("--node_id="):
                return part.split("=", 1)[1]
        raise RuntimeError(f"node {name}: no --node_id in its raylet's command line")

    def trial_workers(self, name: str) -> list[int]:
        """PIDs of the node's worker processes that run a Tune trial (an ``ImplicitFunc``
        actor: Ray names its process after the actor class)."""
        return [
            p
            for p in children(self.raylet_pid(name))
            if any("ImplicitFunc" in part for part in cmdline(p))
        ]

    def kill_node(self, name: str) -> None:
        """SIGKILL the node's raylet (as a machine that dies): its workers end with it."""
        kill(self.raylet_pid(name))

    def search(self, *args: str, log: Path) -> subprocess.Popen:
        """Start ``python -m fcasearch ARGS`` (``search ...``) beside this cluster; output to
        ``log``."""
        with open(log, "ab") as fh:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(
                [sys.executable, "-m", "fcasearch", *args],
                env=self.env,
                cwd=self.root,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        for _ in range(3):  # a dying raylet may still start a worker: sweep until none is left
            for pid in pids_with(self.temp_dir):
                kill(pid)
            time.sleep(0.5)
            if not pids_with(self.temp_dir):
                break

    def __enter__(self) -> LoopbackCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def rows(run: Path) -> list[dict]:
    """The run's trial log so far (``trials.jsonl``: one fsynced line per finished trial)."""
    path = run / "trials.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None = None):
    """Poll ``predicate`` until it returns something true; fail after ``timeout_s`` (or when
    ``proc`` has ended first)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the search ended (code {proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
