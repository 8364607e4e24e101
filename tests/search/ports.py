"""Loopback ports for servers the tests start (Ray nodes, PostgreSQL).

Binding port 0 and closing the socket hands out an *ephemeral* port, and the kernel hands the
same range to every outgoing connection on the machine. Between the test closing its socket and
the server binding the port (a second or more for ``ray start``), a connection made by another
process (the other xdist worker's Ray, say) may take it. CI lost a run that way: the GCS of a
test cluster could not bind its port.

So ports come from below the ephemeral range and above Ray's worker ports (10002-19999 by
default), where the kernel never assigns one on its own; each xdist worker draws from its own
slice, and a process never hands out the same port twice."""

from __future__ import annotations

import os
import random
import socket

RAY_WORKER_PORTS_END = 19999  # ray start's default --max-worker-port
_given: set[int] = set()
_rng = random.SystemRandom()  # tests may seed the global generator


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            lo, hi = (int(x) for x in fh.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def port_pool() -> range:
    """This process's slice of the ports that no one gets by chance."""
    lo, hi = _ephemeral_range()
    if lo > RAY_WORKER_PORTS_END + 1000:
        start, end = RAY_WORKER_PORTS_END + 1, lo  # [20000, 32768) with Linux's defaults
    else:  # an unusual ephemeral range: the ports above it
        start, end = max(hi + 1, RAY_WORKER_PORTS_END + 1), 65536
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    slices = 8
    width = (end - start) // slices
    first = start + (index % slices) * width
    return range(first, first + width)


def _bindable(port: int) -> bool:
    for host in ("127.0.0.1", "0.0.0.0"):  # Ray binds some servers on every interface
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A port that is free now, not handed out before by this process, and outside the range
    the kernel gives to outgoing connections."""
    pool = port_pool()
    for _ in range(200):
        port = _rng.randrange(pool.start, pool.stop)
        if port not in _given and _bindable(port):
            _given.add(port)
            return port
    raise RuntimeError(f"no free port in {pool.start}-{pool.stop - 1} after 200 tries")
