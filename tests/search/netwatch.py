"""Watching TCP peers through /proc/net/tcp{,6}: proof that a run talks only to loopback.

Only the sockets of the processes under watch count: this process and its descendants (a Ray
that the run starts is among them), and processes whose command line holds one of ``markers``
(a ``ray start`` cluster's session folder: its daemons leave the test's process tree). Other
programs on a shared machine (another user's ``pip install``) are not the run's traffic.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path


def _hex_ip(text: str) -> ipaddress._BaseAddress:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    # /proc/net/tcp6 stores four little-endian 32-bit words
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    addr = ipaddress.IPv6Address(words)
    return addr.ipv4_mapped or addr


def tcp_sockets() -> list[tuple]:
    """(local ip, remote ip, state, inode) of every TCP socket in this network namespace."""
    out = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(path).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, remote, state = f[1].split(":")[0], f[2].split(":")[0], f[3]
            out.append((_hex_ip(local), _hex_ip(remote), state, f[9]))
    return out


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        out[int(proc.name)] = (ppid, cmd)
    return out


def watched_pids(markers: Sequence[str] = ()) -> set[int]:
    """This process, processes whose command line holds a marker, and their descendants."""
    procs = _processes()
    roots = {os.getpid()} | {p for p, (_, cmd) in procs.items() if any(m in cmd for m in markers)}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, ()))
    return seen


def socket_inodes(pids: set[int]) -> set[str]:
    """Inodes of the sockets those processes hold open."""
    out = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                out.add(target[8:-1])
    return out


class PeerWatch:
    """Polls the socket tables while a block runs; remembers every remote peer that a watched
    process talked to (see the module doc)."""

    def __init__(self, period: float = 0.05, markers: Sequence[str] = ()) -> None:
        self.period, self.peers, self.local = period, set(), set()
        self.markers = tuple(markers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            inodes = socket_inodes(watched_pids(self.markers))
            for local, remote, state, inode in tcp_sockets():
                self.local.add(local)
                if state != "0A" and not remote.is_unspecified and inode in inodes:  # 0A = LISTEN
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
