"""The hardware fingerprint attached to every measurement, and its short stable id.

The fingerprint is a JSON-safe dict; fields that do not apply (GPU fields on a CPU measurement)
are ``None``. :func:`fingerprint_id` hashes only the fields that identify the hardware and its
software (processor, GPU model, driver, library versions, power limit, MIG mode, device type),
not the ones that merely name one physical machine (GPU UUID), volatile ones, nor measurement
settings: ``threads`` is recorded in the fingerprint and in each trial row's ``threads`` column
but is not part of the id, so one machine is one machine whether a measurement ran in a Ray
worker with 1 thread or in the driver with 2. Two identical nodes of a cluster share one id,
so a search spread over them forms one group.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from typing import Any

import torch

from fcasearch.cpuinfo import cpu_model
from fcasearch.measure.nvml import close_nvml, device_handle, open_nvml

__all__ = ["IDENTIFYING_FIELDS", "fingerprint_id", "hardware_fingerprint"]

IDENTIFYING_FIELDS = (
    "device",
    "cpu_model",
    "cpu_cores",
    "gpu_name",
    "driver",
    "cuda",
    "cudnn",
    "torch",
    "power_limit_w",
    "mig_mode",
)


def _affinity() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _cudnn_version() -> int | None:
    try:
        return torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except (RuntimeError, ValueError, OSError):  # a broken or missing cuDNN library
        return None


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _gpu_fields(device: torch.device, nvml: Any = None) -> dict[str, Any]:
    """GPU, driver and NVML fields for a CUDA device (NVML ones None, with a reason, if absent)."""
    index = _cuda_index(device)
    props = torch.cuda.get_device_properties(index)
    uuid = str(getattr(props, "uuid", "") or "")  # torch gives it without NVML's "GPU-" prefix
    if uuid and not uuid.startswith(("GPU-", "MIG-")):
        uuid = f"GPU-{uuid}"
    fields: dict[str, Any] = {
        "gpu_name": props.name,
        "gpu_uuid": uuid or None,
        "gpu_memory_mb": round(props.total_memory / 2**20),
        "gpu_capability": f"{props.major}.{props.minor}",
        "cuda": torch.version.cuda,
        "cudnn": _cudnn_version(),
        "driver": None,
        "power_limit_w": None,
        "mig_mode": None,
        "nvml": "",
    }
    mod, reason = open_nvml(nvml)
    if mod is None:
        fields["nvml"] = f"unavailable: {reason}"
        return fields
    try:
        handle = device_handle(mod, index, fields["gpu_uuid"])
        driver = mod.nvmlSystemGetDriverVersion()
        fields["driver"] = driver.decode() if isinstance(driver, bytes) else str(driver)
        try:
            milliwatts = mod.nvmlDeviceGetEnforcedPowerLimit(handle)
            fields["power_limit_w"] = milliwatts / 1000.0
        except mod.NVMLError:
            fields["power_limit_w"] = None
        try:
            current, _pending = mod.nvmlDeviceGetMigMode(handle)
            fields["mig_mode"] = "enabled" if current else "disabled"
        except mod.NVMLError:
            fields["mig_mode"] = "unsupported"
        fields["nvml"] = "ok"
    except mod.NVMLError as exc:
        fields["nvml"] = f"partial: {type(exc).__name__}: {exc}"
    finally:
        close_nvml(mod)
    return fields


def hardware_fingerprint(
    device: str | torch.device = "cpu", threads: int | None = None, *, nvml: Any = None
) -> dict[str, Any]:
    """Describe the hardware and software a measurement runs on.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        threads: CPU threads the measurement uses (``None``: torch's current intra-op count).
        nvml: a ``pynvml``-like module to use instead of importing ``pynvml`` (tests).

    Returns:
        A JSON-safe dict with ``device``, ``cpu_model``, ``cpu_cores`` (logical CPUs of the
        machine), ``cpu_affinity`` (those this process may use), ``threads``, ``gpu_name``,
        ``gpu_uuid``, ``driver``, ``cuda``, ``cudnn``, ``torch``, ``power_limit_w``, ``mig_mode``
        and a few descriptive extras; ``None`` where a field does not apply.
    """
    dev = torch.device(device)
    fp: dict[str, Any] = {
        "device": dev.type,
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_affinity": _affinity(),
        "threads": int(threads) if threads is not None else torch.get_num_threads(),
        "gpu_name": None,
        "gpu_uuid": None,
        "driver": None,
        "cuda": None,
        "cudnn": None,
        "torch": torch.__version__,
        "power_limit_w": None,
        "mig_mode": None,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device: {str(device)!r} asked for, but CUDA is not available to torch "
                f"{torch.__version__} here; use device='cpu'"
            )
        fp.update(_gpu_fields(dev, nvml))
    return fp


def fingerprint_id(fp: dict[str, Any]) -> str:
    """12 hex characters: SHA-256 of the identifying fields of a fingerprint (see module doc)."""
    key = {name: fp.get(name) for name in IDENTIFYING_FIELDS}
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
