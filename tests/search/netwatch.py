"""Watching TCP peers through /proc/net/tcp{,6}: proof that a run talks only to loopback."""

from __future__ import annotations

import ipaddress
import threading
import time


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
