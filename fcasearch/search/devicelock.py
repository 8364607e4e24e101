"""A per-node, per-device lock that keeps latency measurements apart from training.

Trials that run side by side on one machine (Ray trials, or several local drivers of one study)
share its CPU cores and GPUs: a latency measurement timed while another trial trains on the same
device measures the other trial's load as much as the candidate. The lock makes them take turns:

* training holds it **shared**, one section at a time (a training step, a validation, the
  zero-cost proxies), so trainers run side by side as before;
* the timed runs of a latency measurement (a trial's, the reference models', the final
  re-measurement) hold it **exclusively**: they wait until no section is running and no section
  starts until they are done (preparing a model, e.g. an ONNX export, comes before and does not
  hold it: ``measure_cost(exclusive=...)``);
* **writer-preferring**: once a measurement asks, trainers finishing a section wait before their
  next one, so a measurement waits at most one section of each trainer and never starves behind
  trainers whose sections overlap.

It is made of two ``flock(2)`` files, ``<key>.gate`` and ``<key>.room``. A trainer passes the
gate (shared, released at once) and holds the room shared; a measurement holds the gate
exclusively (closing it to new trainers) and then the room exclusively (waiting for the sections
under way). The kernel drops a dead process's locks, so a killed trial never leaves one behind.

The key names the machine and the device: ``<hostname>-cpu`` for CPU trials (all of them share
the cores), ``<hostname>-gpu-<id>`` for a GPU, with the physical GPU behind ``cuda:N`` (a Ray
trial sees its GPU as ``cuda:0``: ``CUDA_VISIBLE_DEVICES`` names which one it is). The files live
in ``$FCASEARCH_LOCK_DIR``, else ``<temp dir>/fcasearch-locks-<uid>``, local to each node (point
``FCASEARCH_LOCK_DIR`` at a folder every user can write to for users to share a device's lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_DIR_ENV", "DeviceLock", "device_key", "lock_for"]

LOCK_DIR_ENV = "FCASEARCH_LOCK_DIR"


def device_key(device: str) -> str:
    """``<hostname>-cpu`` or ``<hostname>-gpu-<physical id>`` for ``device``."""
    host = socket.gethostname().split(".")[0] or "localhost"
    if not str(device).startswith("cuda"):
        return f"{host}-cpu"
    _, _, index = str(device).partition(":")
    n = int(index or 0)
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    visible = [v for v in visible if v]
    physical = visible[n] if n < len(visible) else str(n)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in physical)
    return f"{host}-gpu-{safe}"


def _lock_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"fcasearch-locks-{os.getuid()}"  # one per user
    return Path(os.environ.get(LOCK_DIR_ENV) or default)


class DeviceLock:
    """Shared sections for training, exclusive ones for measurement (module docstring).

    Args:
        key: the node and device (:func:`device_key`).
        folder: where the two lock files live (default: ``$FCASEARCH_LOCK_DIR`` or
            ``<temp dir>/fcasearch-locks-<uid>``).

    A lock object may be used by one thread at a time; processes each make their own (it is
    cheap: the files are opened per section).
    """

    def __init__(self, key: str, folder: str | Path | None = None) -> None:
        self.key = key
        self.folder = Path(folder) if folder is not None else _lock_dir()
        self.gate = self.folder / f"{key}.gate"
        self.room = self.folder / f"{key}.room"

    def _open(self, path: Path) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """One training section: waits while a measurement holds or awaits the device."""
        room = self._open(self.room)
        try:
            gate = self._open(self.gate)
            try:
                fcntl.flock(gate, fcntl.LOCK_SH)  # blocks while a measurement holds the gate
                fcntl.flock(room, fcntl.LOCK_SH)
            finally:
                os.close(gate)  # closing drops the gate at once
            yield
        finally:
            os.close(room)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """One measurement: no training section runs on the device until it is done."""
        gate = self._open(self.gate)
        try:
            fcntl.flock(gate, fcntl.LOCK_EX)  # new training sections wait from here on
            room = self._open(self.room)
            try:
                fcntl.flock(room, fcntl.LOCK_EX)  # the sections under way end
                yield
            finally:
                os.close(room)
        finally:
            os.close(gate)

    def __repr__(self) -> str:
        return f"DeviceLock({self.key!r}, folder={str(self.folder)!r})"


def lock_for(device: str, folder: str | Path | None = None) -> DeviceLock:
    """The lock of ``device`` on this node."""
    return DeviceLock(device_key(device), folder)
