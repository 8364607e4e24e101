"""Measurement: params and MACs (closed form and fvcore), latency, memory, energy, fingerprint.

Pure measurement, no training. ``measure_cost`` is the one call the search makes per candidate
(latency on a named runtime of :mod:`fcasearch.runtime`; ``measure_costs`` for several side by side);
``count_params``/``count_macs`` need no model (constraint checks); ``profile_grid`` backs
``fcasearch profile``.

Names load on first use, so ``from fcasearch.measure import count_macs`` (or importing
:mod:`fcasearch.measure.counting`) does not import torch; pynvml and fvcore load only inside the
functions that use them.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_EXPORTS = {
    "CostBreakdown": "counting",
    "cost_breakdown": "counting",
    "count_macs": "counting",
    "count_params": "counting",
    "CORE_OPERATORS": "flops",
    "FlopReport": "flops",
    "count_flops_fvcore": "flops",
    "count_macs_torch": "flops",
    "DEFAULT_CV_THRESHOLD": "latency",
    "LatencyStats": "latency",
    "cpu_threads": "latency",
    "robust_cv": "latency",
    "summarize_times": "latency",
    "time_callable": "latency",
    "time_interleaved": "latency",
    "StabilityPolicy": "stability",
    "measure_stable": "stability",
    "merge_attempts": "stability",
    "MemoryPeak": "memory",
    "peak_memory": "memory",
    "EnergyResult": "energy",
    "integrate_power": "energy",
    "measure_energy": "energy",
    "IDENTIFYING_FIELDS": "fingerprint",
    "fingerprint_id": "fingerprint",
    "hardware_fingerprint": "fingerprint",
    "METRIC_KEYS": "cost",
    "CostResult": "cost",
    "measure_cost": "cost",
    "measure_costs": "cost",
    "CudaGraphError": "graphs",
    "capture_cuda_graph": "graphs",
    "build_baseline": "baselines",
    "list_baselines": "baselines",
    "PROFILE_COLUMNS": "profile",
    "ProfileTarget": "profile",
    "profile_grid": "profile",
    "resolve_target": "profile",
    "write_profile": "profile",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fcasearch.measure' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fcasearch.measure.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
