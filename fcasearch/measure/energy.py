"""Energy per image and average power of GPU inference, from NVML.

The workload is run back to back for at least ``min_seconds`` (NVML's counters update every few
tens of ms, so short windows are meaningless). Two methods, the first that the GPU supports:

* ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded, Volta and newer): the
  difference across the window;
* ``nvmlDeviceGetPowerUsage`` (mW) sampled in a background thread every ``sample_interval_s``,
  plus one sample at each end of the window, integrated with the trapezoid rule.

Both give the whole board's energy over the window, idle power included. Without NVML (no NVIDIA
driver, no nvidia-ml-py, a CPU device) the result is unavailable and says why.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fcasearch.measure.nvml import close_nvml, device_handle, open_nvml

__all__ = ["EnergyResult", "integrate_power", "measure_energy", "unavailable_energy"]


@dataclass(frozen=True)
class EnergyResult:
    """Energy of a run of inference batches.

    Attributes:
        available: whether energy was measured.
        energy_mj_per_image: mJ per image (NaN when unavailable).
        avg_power_w: mean board power over the window, W (NaN when unavailable).
        energy_mj: energy of the whole window, mJ.
        seconds: length of the window, s.
        runs: batches run in the window.
        images: images processed in the window.
        method: how it was measured, or ``unavailable: <reason>``.
    """

    available: bool
    energy_mj_per_image: float
    avg_power_w: float
    energy_mj: float
    seconds: float
    runs: int
    images: int
    method: str


def unavailable_energy(reason: str) -> EnergyResult:
    """An :class:`EnergyResult` that says energy could not be measured, and why."""
    nan = math.nan
    return EnergyResult(False, nan, nan, nan, 0.0, 0, 0, f"unavailable: {reason}")


def integrate_power(samples: list[tuple[float, float]]) -> float:
    """Trapezoid integral of ``(time s, power mW)`` samples, in mJ (samples need not be sorted)."""
    pts = sorted(samples)
    return sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in itertools.pairwise(pts))


def _sampler(
    read: Callable[[], float],
    interval: float,
    out: list[tuple[float, float]],
    stop: threading.Event,
) -> None:
    while not stop.wait(interval):
        out.append((time.perf_counter(), float(read())))


def _run_window(
    run_once: Callable[[], object], sync: Callable[[], object], min_runs: int, min_seconds: float
) -> int:
    runs = 0
    start = time.perf_counter()
    while runs < min_runs or time.perf_counter() - start < min_seconds:
        run_once()
        runs += 1
    sync()  # queued GPU work must finish inside the window
    return runs


def measure_energy(
    run_once: Callable[[], object],
    *,
    images_per_run: int,
    device_index: int = 0,
    uuid: str | None = None,
    sync: Callable[[], object] = lambda: None,
    min_seconds: float = 1.0,
    min_runs: int = 1,
    sample_interval_s: float = 0.01,
    nvml: Any = None,
) -> EnergyResult:
    """Run ``run_once`` back to back and measure the GPU's energy over that window.

    Args:
        run_once: one batch of inference (already warmed up).
        images_per_run: the batch size.
        device_index: NVML index of the GPU (used when ``uuid`` is not found).
        uuid: the GPU's UUID (``GPU-...``), preferred over the index.
        sync: waits for queued GPU work (``torch.cuda.synchronize``).
        min_seconds: shortest window, s.
        min_runs: fewest batches in the window.
        sample_interval_s: power sampling period of the fallback method, s.
        nvml: a ``pynvml``-like module object instead of the real ``pynvml`` (tests).

    Returns:
        An :class:`EnergyResult`; ``available`` is False (with the reason) when NVML cannot be used.
    """
    if images_per_run < 1:
        raise ValueError(f"images_per_run: {images_per_run!r} must be >= 1")
    mod, reason = open_nvml(nvml)
    if mod is None:
        return unavailable_energy(reason)
    try:
        try:
            handle = device_handle(mod, device_index, uuid)
        except mod.NVMLError as exc:
            return unavailable_energy(
                f"no NVML handle for GPU {uuid or device_index}: {type(exc).__name__}"
            )
        use_counter = True
        try:
            mod.nvmlDeviceGetTotalEnergyConsumption(handle)
        except mod.NVMLError:
            use_counter = False
        if use_counter:
            sync()
            t0 = time.perf_counter()
            e0 = mod.nvmlDeviceGetTotalEnergyConsumption(handle)  # mJ
            runs = _run_window(run_once, sync, min_runs, min_seconds)
            e1 = mod.nvmlDeviceGetTotalEnergyConsumption(handle)
            seconds = time.perf_counter() - t0
            energy = float(e1 - e0)
            method = "nvml total energy counter (mJ) delta over the window; whole board"
        else:

            def read() -> float:
                return float(mod.nvmlDeviceGetPowerUsage(handle))  # mW

            try:
                sync()
                samples = [(time.perf_counter(), float(read()))]
            except mod.NVMLError as exc:
                return unavailable_energy(
                    f"GPU supports neither the energy counter nor power readings: {type(exc).__name__}"
                )
            stop = threading.Event()
            thread = threading.Thread(
                target=_sampler, args=(read, sample_interval_s, samples, stop), daemon=True
            )
            thread.start()
            try:
                runs = _run_window(run_once, sync, min_runs, min_seconds)
            finally:
                stop.set()
                thread.join()
            samples.append((time.perf_counter(), float(read())))
            seconds = max(t for t, _ in samples) - min(t for t, _ in samples)
            energy = integrate_power(samples)
            method = f"nvml power samples every {sample_interval_s * 1000:g} ms, trapezoid integral; whole board"
    finally:
        close_nvml(mod)
    images = runs * images_per_run
    power = energy / seconds / 1000.0 if seconds > 0 else math.nan  # mJ/s -> W
    return EnergyResult(True, energy / images, power, energy, seconds, runs, images, method)
