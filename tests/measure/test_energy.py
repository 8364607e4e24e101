"""Energy from NVML: absence handled, and the arithmetic checked on a fake NVML module."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from fcasearch.measure.energy import integrate_power, measure_energy
from fcasearch.measure.nvml import nvml_reason


class FakeNVML:
    """Enough of ``pynvml`` for energy: a counter (mJ) and/or a power reading (mW)."""

    class NVMLError(Exception):
        pass

    class NVMLError_LibraryNotFound(NVMLError):
        pass

    class NVMLError_NotSupported(NVMLError):
        pass

    def __init__(self, energy_mj=None, power_mw=None, init_error=None):
        self.energy = list(energy_mj) if energy_mj is not None else None
        self.power_mw = power_mw
        self.init_error = init_error
        self.calls = {"init": 0, "shutdown": 0}

    def nvmlInit(self):
        if self.init_error is not None:
            raise self.init_error("NVML Shared Library Not Found")
        self.calls["init"] += 1

    def nvmlShutdown(self):
        self.calls["shutdown"] += 1

    def nvmlDeviceGetHandleByUUID(self, uuid):
        raise self.NVMLError_NotSupported("no such uuid")

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("gpu", index)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if self.energy is None:
            raise self.NVMLError_NotSupported("Not Supported")
        return self.energy.pop(0) if len(self.energy) > 1 else self.energy[0]

    def nvmlDeviceGetPowerUsage(self, handle):
        if self.power_mw is None:
            raise self.NVMLError_NotSupported("Not Supported")
        self.calls["power"] = self.calls.get("power", 0) + 1
        return self.power_mw() if callable(self.power_mw) else self.power_mw


def test_missing_nvml_is_reported_with_its_reason():
    fake = FakeNVML(init_error=FakeNVML.NVMLError_LibraryNotFound)
    runs = []
    res = measure_energy(lambda: runs.append(1), images_per_run=4, nvml=fake)
    assert not res.available and not runs
    assert math.isnan(res.energy_mj_per_image) and math.isnan(res.avg_power_w)
    assert (
        res.method
        == "unavailable: NVML not found (no NVIDIA driver): pynvml.NVMLError_LibraryNotFound"
    )


def test_real_pynvml_without_gpu_is_unavailable_not_an_error():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        res = measure_energy(lambda: None, images_per_run=1, min_seconds=0.0)
        assert not res.available and res.method.startswith("unavailable: ")
        assert "pynvml.NVMLError" in res.method
    else:  # a machine with a driver: energy must be measurable
        pynvml.nvmlShutdown()
        res = measure_energy(lambda: None, images_per_run=1, min_seconds=0.2)
        assert res.available and res.energy_mj > 0 and res.avg_power_w > 0  # an idle board draws


def test_energy_counter_arithmetic():
    fake = FakeNVML(energy_mj=[9_000.0, 10_000.0, 10_600.0])  # probe, start, end
    runs = []
    res = measure_energy(
        lambda: runs.append(1), images_per_run=2, min_seconds=0.0, min_runs=4, nvml=fake
    )
    assert res.available and len(runs) == res.runs == 4 and res.images == 8
    assert res.energy_mj == 600.0
    assert res.energy_mj_per_image == 75.0
    assert res.avg_power_w == pytest.approx(600.0 / res.seconds / 1000.0)
    assert "energy counter" in res.method
    assert fake.calls == {"init": 1, "shutdown": 1}


def test_power_sampling_fallback_integrates_constant_power():
    fake = FakeNVML(power_mw=50_000.0)  # 50 W, no energy counter
    res = measure_energy(
        lambda: sum(range(2000)),
        images_per_run=5,
        min_seconds=0.05,
        min_runs=3,
        sample_interval_s=0.005,
        nvml=fake,
    )
    assert res.available and res.runs >= 3 and res.images == 5 * res.runs
    assert res.avg_power_w == pytest.approx(50.0)
    assert res.energy_mj == pytest.approx(50.0 * res.seconds * 1000.0)
    assert res.energy_mj_per_image == pytest.approx(res.energy_mj / res.images)
    assert "power samples" in res.method


def test_power_sampling_follows_a_power_step():
    # 20 W for the first 40 ms of the window, then 80 W: only samples taken during the window
    # see the step (start and end readings alone would say 50 W on average)
    import time

    start: list[float] = []

    def power_mw() -> float:
        now = time.perf_counter()
        if not start:
            start.append(now)
        return 20_000.0 if now - start[0] < 0.04 else 80_000.0

    fake = FakeNVML(power_mw=power_mw)
    res = measure_energy(
        lambda: time.sleep(0.002),
        images_per_run=1,
        min_seconds=0.3,
        sample_interval_s=0.002,
        nvml=fake,
    )
    # trapezoids across the step err by 60 W x half the gap around it: rel=0.15 allows a
    # sampler held up for about 100 ms on a busy machine
    exact_mj = 20.0 * 40.0 + 80.0 * (res.seconds * 1000.0 - 40.0)  # W x ms = mJ
    assert res.available and fake.calls["power"] > 20 and res.seconds >= 0.3
    assert res.energy_mj == pytest.approx(exact_mj, rel=0.15)
    assert 60.0 < res.avg_power_w < 80.0  # not the 50 W of two readings


def test_neither_counter_nor_power_reading():
    res = measure_energy(lambda: None, images_per_run=1, min_seconds=0.0, nvml=FakeNVML())
    assert not res.available and "neither" in res.method


def test_trapezoid_integral():
    assert integrate_power([(1.0, 3000.0), (0.0, 1000.0)]) == 2000.0  # mW * s = mJ; order free
    assert integrate_power([(0.0, 5.0)]) == 0.0


def test_reason_names_the_exception():
    assert nvml_reason(FakeNVML.NVMLError_NotSupported("Not Supported")) == (
        "NVML error: pynvml.NVMLError_NotSupported: Not Supported"
    )


def test_bad_batch_is_refused():
    with pytest.raises(ValueError, match="images_per_run"):
        measure_energy(lambda: None, images_per_run=0, nvml=FakeNVML(energy_mj=[0.0]))


def test_importing_the_package_does_not_import_pynvml():
    # torch itself imports pynvml when it is installed, so only torch-free imports can be checked
    code = (
        "import sys, fcasearch, fcasearch.measure; "
        "from fcasearch.measure import count_macs, count_params; "
        "assert 'pynvml' not in sys.modules, 'pynvml imported'; "
        "assert 'torch' not in sys.modules, 'closed-form counting imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
